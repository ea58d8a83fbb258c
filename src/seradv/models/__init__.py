"""Models and their registry.

Any ``torch.nn.Module`` that maps features ``[shape=(batch, 261, 128)]`` to logits
``[shape=(batch, n_classes)]`` can be used. Register a builder to use it by name::

    from seradv.models import register_model
    register_model("mynet", lambda n_classes, **hp: MyNet(n_classes))

The builder receives ``n_classes`` and the training hyperparameters ``dropout`` and
``lstm_dropout`` as keyword arguments (it may ignore them). Registered: ``cnn_lstm`` (the
study's, :class:`CNNLSTM`) and ``small_cnn`` (:class:`SmallCNN`, a second architecture on the
same features, for transferability).

Optional *chunked-model protocol* (a speed-up, never required): a model that processes the
time axis in independent chunks before a sequence head (the study's "time distributed" CNN)
may expose ``chunk_frames`` (int), ``encode_chunks(chunks [m, chunk_frames, n_mels]) ->
[m, F]`` and ``decode_chunks(feats [b, n_chunks, F]) -> logits`` with ``forward(x) ==
decode_chunks(encode_chunks(chunks of x))``. ``F`` is the model's choice: the more per-chunk
work ``encode_chunks`` does, the less each query repeats (:class:`CNNLSTM` returns the LSTM's
input projections, not the raw CNN features). Optionally, ``encode_chunks_local(chunks,
col_lo, col_hi, base) -> [m, F]`` equals ``encode_chunks(chunks)`` for chunks that differ from
the chunks ``base`` was encoded from only in Mel columns ``col_lo..col_hi``; the Pixel attack
then passes each changed chunk's column range (:meth:`CNNLSTM.encode_chunks_local` re-runs its
CNN on a crop around them). Black-box attacks whose queries change only a
few cells (the Pixel attack) then re-encode only the chunks those cells fall in; the outputs
are the same up to float round-off. :class:`CNNLSTM` implements it; see :func:`chunked`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from seradv.errors import ModelError
from seradv.models.cnn_lstm import CNNLSTM, count_parameters
from seradv.models.small_cnn import SmallCNN

__all__ = ["CNNLSTM", "SmallCNN", "count_parameters", "MODELS", "register_model", "build_model", "check_model", "chunked"]

ModelBuilder = Callable[..., nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str, builder: ModelBuilder, *, overwrite: bool = False) -> ModelBuilder:
    """Register ``builder(n_classes, dropout=..., lstm_dropout=...) -> nn.Module``."""
    if name in MODELS and not overwrite:
        raise ModelError(f"a model named {name!r} is already registered")
    MODELS[name] = builder
    return builder


def build_model(name: str, n_classes: int, **hyper: float) -> nn.Module:
    """Instantiate the registered model ``name``."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    model = MODELS[name](n_classes, **hyper)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model builder {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def chunked(model: nn.Module) -> bool:
    """Whether ``model`` implements the chunked-model protocol (module docstring)."""
    return (isinstance(getattr(model, "chunk_frames", None), int)
            and callable(getattr(model, "encode_chunks", None))
            and callable(getattr(model, "decode_chunks", None)))


def check_model(model: nn.Module, n_classes: int, input_shape: tuple[int, int] = (261, 128)) -> None:
    """Check the input/output contract with a dummy batch; raise :class:`ModelError` if broken."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model {type(model).__name__} fails on input of shape (batch, {input_shape[0]}, "
            f"{input_shape[1]}): {exc}"
        ) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, n_classes):
        raise ModelError(
            f"model {type(model).__name__} returns shape {tuple(out.shape)} for a batch of 2; "
            f"expected (2, {n_classes}) logits"
        )


register_model(
    "cnn_lstm",
    lambda n_classes, dropout=0.3, lstm_dropout=0.2, **_: CNNLSTM(
        n_classes, dropout=dropout, lstm_dropout=lstm_dropout
    ),
)
register_model("small_cnn", lambda n_classes, dropout=0.3, **_: SmallCNN(n_classes, dropout=dropout))
"""A second architecture (:mod:`seradv.models.small_cnn`): conv blocks, global average pool, linear."""
