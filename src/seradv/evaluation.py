"""Prediction and clean evaluation: the one batched :func:`predict_logits` and :func:`softmax`
every stage uses, and metrics per corpus (= language) and gender: accuracy, UAR, macro-F1, confusion;
:func:`pooled_metrics` adds speaker-cluster CIs (:func:`seradv.stats.cluster_ci`) to metrics of
test sets pooled over speaker folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score
from torch import nn

from seradv import stats
from seradv.precision import with_precision

__all__ = ["predict_logits", "softmax", "group_metrics", "pooled_metrics", "GROUPS"]

GROUPS: dict[str, str | None] = {"All": None, "Male": "m", "Female": "f"}


def predict_logits(
    model: nn.Module, x: np.ndarray, *, batch_size: int = 128, device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Logits ``[shape=(n, n_classes)]`` float32 of ``x [shape=(n, 261, 128)]`` (eval mode, no
    grad), the model's forward passes at ``precision`` (:mod:`seradv.precision`)."""
    model.eval()
    model.to(device)
    net = with_precision(model, precision, device)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(net(torch.as_tensor(x[i : i + batch_size], device=device)).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``[shape=(n, n_classes)]`` of logits ``z``, shifted by each row's maximum."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def group_metrics(
    y_true: np.ndarray,
    logits: np.ndarray,
    meta: pd.DataFrame,
    classes: list[str],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Metrics for All / Male / Female within each corpus x language of ``meta``.

    Returns a tidy table (corpus, language, group, n, accuracy, uar, macro_f1, loss,
    mean_confidence) and the confusion matrices keyed ``"<corpus>/<language>/<group>"``
    (rows: true class, columns: predicted, in ``classes`` order).
    """
    y_pred = logits.argmax(1)
    prob = softmax(logits.astype(np.float64))
    nll = -np.log(np.clip(prob[np.arange(len(y_true)), y_true], 1e-12, None))
    labels = np.arange(len(classes))
    rows, confusions = [], {}
    for (corpus, language), cidx in meta.groupby(["corpus", "language"], sort=True).groups.items():
        cmask = meta.index.isin(cidx)
        for group, g in GROUPS.items():
            mask = cmask & ((meta["gender"] == g).to_numpy() if g else True)
            n = int(np.sum(mask))
            if n == 0:
                continue
            yt, yp = y_true[mask], y_pred[mask]
            rows.append({
                "corpus": corpus, "language": language, "group": group, "n": n,
                "accuracy": float(np.mean(yt == yp)),
                "uar": float(balanced_accuracy_score(yt, yp)) if len(np.unique(yt)) > 0 else float("nan"),
                "macro_f1": float(f1_score(yt, yp, labels=labels, average="macro", zero_division=0)),
                "loss": float(nll[mask].mean()),
                "mean_confidence": float(prob[mask].max(1).mean()),
            })
            confusions[f"{corpus}/{language}/{group}"] = confusion_matrix(yt, yp, labels=labels)
    return pd.DataFrame(rows), confusions


def recall_mean(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted average recall (UAR) over the classes present in ``y_true [shape=(n,)]``:
    ``balanced_accuracy_score`` of scikit-learn without its warnings; ``nan`` for no samples."""
    classes = np.unique(y_true)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def pooled_metrics(
    y_true: np.ndarray,
    logits: np.ndarray,
    meta: pd.DataFrame,
    classes: list[str],
    *,
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`group_metrics` of a test set pooled over folds (every speaker once), with a
    speaker-cluster 95 % CI of each accuracy and UAR.

    ``y_true [shape=(n,)]``, ``logits [shape=(n, n_classes)]`` and ``meta`` (n rows, with
    ``speaker``) are the folds' test sets concatenated. Adds ``n_speakers``, ``acc_lo``,
    ``acc_hi`` (:func:`seradv.stats.cluster_ci` over the speakers: the cluster bootstrap
    widened to the Wilson interval at the design-effect n), ``uar_lo``, ``uar_hi``
    (:func:`seradv.stats.cluster_stat_ci`: percentile bootstrap over the speakers, none with
    fewer than 5) and ``ci_method`` (the accuracy's).
    """
    table, confusions = group_metrics(y_true, logits, meta, classes)
    correct = logits.argmax(1) == y_true
    meta = meta.reset_index(drop=True)
    pred = logits.argmax(1)
    extra = {"n_speakers": [], "acc_lo": [], "acc_hi": [], "uar_lo": [], "uar_hi": [], "ci_method": []}
    for r in table.itertuples():
        mask = ((meta["corpus"] == r.corpus) & (meta["language"] == r.language)).to_numpy()
        if GROUPS[r.group] is not None:
            mask = mask & (meta["gender"] == GROUPS[r.group]).to_numpy()
        spk = meta.loc[mask, "speaker"].astype(str).to_numpy()
        ci = stats.cluster_ci(correct[mask], spk, n_boot=n_boot, seed=seed, unit="speaker")
        extra["n_speakers"].append(len(set(spk)))
        extra["acc_lo"].append(ci.lo)
        extra["acc_hi"].append(ci.hi)
        yt, yp = y_true[mask], pred[mask]
        uar = stats.cluster_stat_ci(lambda i: recall_mean(yt[i], yp[i]), spk, n_boot=n_boot, seed=seed,
                                    unit="speaker")
        extra["uar_lo"].append(uar.lo)
        extra["uar_hi"].append(uar.hi)
        extra["ci_method"].append(ci.method)
    table.insert(table.columns.get_loc("n") + 1, "n_speakers", extra["n_speakers"])
    acc = table.columns.get_loc("accuracy") + 1
    table.insert(acc, "acc_lo", extra["acc_lo"])
    table.insert(acc + 1, "acc_hi", extra["acc_hi"])
    uar = table.columns.get_loc("uar") + 1
    table.insert(uar, "uar_lo", extra["uar_lo"])
    table.insert(uar + 1, "uar_hi", extra["uar_hi"])
    table["ci_method"] = extra["ci_method"]
    return table, confusions
