"""Training of the study (SPEC.md): Adam, cross-entropy, early stopping, reduce-on-plateau.

* early stopping on validation loss, patience 10, best weights restored (Keras defaults:
  ``min_delta=0``);
* ``ReduceLROnPlateau(factor=0.1, patience=6, min_delta=1e-4)`` on validation loss;
* a checkpoint of the whole training state is written atomically after every epoch, so an
  interrupted training resumes at the next epoch with the same result.
"""

from __future__ import annotations

import io
from collections.abc import Callable
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from seradv.allocator import reuse_freed_memory
from seradv.fileio import atomic_write_bytes
from seradv.config import TrainConfig
from seradv.errors import ParameterError
from seradv.precision import grad_scaler, with_precision
from seradv.progress import make_progress

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "fit", "set_seed", "select_device", "resolve_hyperparameters"]


@dataclass
class TrainResult:
    history: pd.DataFrame
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    seconds: float


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ParameterError(f"device={name!r} is not a torch device (cpu, cuda, cuda:0, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={name!r} asked for but CUDA is not available; use --device cpu")
    return dev


def resolve_hyperparameters(cfg: TrainConfig, corpus_defaults: dict) -> dict:
    """The training hyperparameters: config values, else the study's values for the corpus."""
    out = {}
    for key in ("dropout", "lstm_dropout", "lr", "batch_size"):
        val = getattr(cfg, key)
        out[key] = corpus_defaults[key] if val is None else val
    return out


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[np.ndarray]:
    order = torch.randperm(n, generator=gen).numpy() if gen is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (at its precision: an
    :class:`~seradv.precision.AutocastModel` returns float32 logits) on ``x``, ``y``."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct = 0.0, 0
    with torch.inference_mode():
        for idx in _batches(len(y), batch, None):
            xb = torch.from_numpy(x[idx]).to(device)
            yb = torch.from_numpy(y[idx]).to(device)
            out = model(xb)
            total += float(loss_fn(out, yb))
            correct += int((out.argmax(1) == yb).sum())
    return total / len(y), correct / len(y)


def fit(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    *,
    lr: float,
    batch_size: int,
    state_path: Path | None = None,
    resume_key: str = "",
    batch_transform: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place; the best validation-loss weights are loaded at the end.

    ``cfg.precision`` (:mod:`seradv.precision`): the forward passes of training and validation
    run under autocast at that precision (``fp32``: none), the loss and the weights stay
    float32; ``fp16`` scales the loss (its scale is not part of the checkpoint: a resumed fp16
    training starts from the initial scale).

    Parameters
    ----------
    x_train, x_val : np.ndarray [shape=(n, 261, 128), dtype=float32]
    y_train, y_val : np.ndarray [shape=(n,), dtype=int64]
    state_path : Path, optional
        Where the per-epoch checkpoint is kept; if it exists, training resumes from it.
    resume_key : str
        What the checkpoint must have been saved by (e.g. a hash of the data, model and
        training settings): a checkpoint with another key is not resumed, training starts
        from scratch (with a warning).
    batch_transform : callable, optional
        ``batch_transform(model, xb, yb, gen) -> xb'``: the batch the update is taken on (a
        defence, e.g. :class:`seradv.defences.AdversarialTraining`); it draws its randomness
        from ``gen``, the training's generator, whose state the checkpoint keeps.
    """
    if len(y_train) == 0 or len(y_val) == 0:
        raise ParameterError("training and validation sets must not be empty")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    set_seed(cfg.seed)
    model.to(device)
    net = with_precision(model, cfg.precision, device)  # the model itself for fp32
    scaler = grad_scaler(cfg.precision, device)  # enabled for fp16 only
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)  # Keras' epsilon
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience,
        threshold=cfg.min_delta, threshold_mode="abs",
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict] = []
    best_loss, best_epoch, best_state, wait, start_epoch = math.inf, 0, None, 0, 1
    elapsed0 = 0.0
    st = _read_state(state_path, device) if state_path is not None else None
    if st is not None and st.get("resume_key", "") != resume_key:
        log.warning("%s was saved by another training (data, model or settings changed); "
                    "training starts from scratch", state_path)
        st = None
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        best_state = st["best_model"]
        best_loss, best_epoch, wait = st["best_loss"], st["best_epoch"], st["wait"]
        start_epoch = st["epoch"] + 1
        history = [dict(zip(st["history_keys"], row)) for row in st["history"].tolist()]
        elapsed0 = float(st["elapsed"])
        log.info("resuming training at epoch %d (best so far: epoch %d)", start_epoch, best_epoch)
    t0 = time.perf_counter()
    stopped_early = wait >= cfg.patience
    epoch = start_epoch - 1
    with make_progress() as prog, reuse_freed_memory():
        task = prog.add_task("training", total=cfg.epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, cfg.epochs + 1):
            if stopped_early:
                break
            net.train()
            tl, tc, tn = 0.0, 0, 0
            for idx in _batches(len(y_train), batch_size, gen):
                xb = torch.from_numpy(x_train[idx]).to(device)
                yb = torch.from_numpy(y_train[idx]).to(device)
                if batch_transform is not None:
                    xb = batch_transform(net, xb, yb, gen)
                opt.zero_grad(set_to_none=True)
                out = net(xb)  # float32 logits: the loss is float32 at every precision
                loss = loss_fn(out, yb)
                if scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                tl += loss.item() * len(idx)
                tc += int((out.argmax(1) == yb).sum())
                tn += len(idx)
            vl, va = _evaluate(net, x_val, y_val, max(batch_size, 64), device)
            lr_now = opt.param_groups[0]["lr"]
            history.append({"epoch": epoch, "loss": tl / tn, "accuracy": tc / tn, "val_loss": vl,
                            "val_accuracy": va, "lr": lr_now,
                            "seconds": elapsed0 + time.perf_counter() - t0})
            sched.step(vl)
            if vl < best_loss:
                best_loss, best_epoch, wait = vl, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                wait += 1
            stopped_early = wait >= cfg.patience
            prog.update(task, advance=1, status=f"loss {tl / tn:.3f} val_loss {vl:.3f} val_acc {va:.3f}")
            log.info("epoch %d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.1e",
                     epoch, tl / tn, tc / tn, vl, va, lr_now)
            if state_path is not None:
                _save_state(state_path, model, opt, sched, gen, best_state, best_loss, best_epoch,
                            wait, epoch, history, elapsed0 + time.perf_counter() - t0, resume_key)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist = pd.DataFrame(history)
    return TrainResult(history=hist, best_epoch=best_epoch, epochs_run=len(hist),
                       stopped_early=stopped_early, seconds=elapsed0 + time.perf_counter() - t0)


_STATE_KEYS = ("model", "optimizer", "scheduler", "generator", "torch_rng", "best_model", "best_loss",
               "best_epoch", "wait", "epoch", "history_keys", "history", "elapsed")


def _read_state(path: Path, device: torch.device) -> dict | None:
    """The resumable training state at ``path``; ``None`` (train from scratch, with a warning)
    if it is absent or damaged (e.g. truncated): it is derived and rewritten after each epoch."""
    if not path.exists():
        return None
    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on a damaged file
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        log.warning("%s is damaged (%s); training starts from scratch", path, why)
        return None
    if not isinstance(st, dict) or any(k not in st for k in _STATE_KEYS):
        log.warning("%s is incomplete; training starts from scratch", path)
        return None
    return st


def _save_state(path, model, opt, sched, gen, best_state, best_loss, best_epoch, wait, epoch, history, elapsed,
                resume_key=""):
    keys = list(history[0].keys())
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "best_model": best_state,
        "best_loss": best_loss,
        "best_epoch": best_epoch,
        "wait": wait,
        "epoch": epoch,
        "history_keys": keys,
        "history": torch.tensor([[float(h[k]) for k in keys] for h in history], dtype=torch.float64),
        "elapsed": elapsed,
        "resume_key": resume_key,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


