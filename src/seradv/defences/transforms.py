"""Input-transformation defences in the waveform domain, each with the forward an adaptive attacker uses.

A transformation ``t`` maps waveforms ``[shape=(n, n_samples)]`` float in ``[-1, 1]`` to
waveforms of the same shape, float32 in ``[-1, 1]`` (every output is clipped to the box). Each
one has two faces:

* ``t(x, rng)``: the *real* transformation, in numpy / scipy / libsndfile, the one the defended
  classifier (:class:`DefendedModel`) applies before the model. ``rng`` (``numpy.random.Generator``)
  drives the random ones.
* ``t.torch_forward(x, gen)``: what the attacker differentiates through. Where an exact
  differentiable torch version of the transformation exists it is that version (``differentiable
  = True``: equal to the numpy path up to float rounding); otherwise it is BPDA (Athalye et al.
  2018, "Obfuscated gradients give a false sense of security", https://arxiv.org/abs/1802.00420):
  the forward pass is the real numpy transformation, the backward pass is the identity
  (:func:`bpda`). Random transformations (``random = True``) draw their randomness from ``gen``
  on every call, so that averaging gradients over calls is EOT (Athalye et al. 2018,
  "Synthesizing robust adversarial examples", https://arxiv.org/abs/1707.07397), see
  :mod:`seradv.attacks.waveform.adaptive`.

=================  =====  ======  ==========================================================
name               diff.  random  what (defaults)
=================  =====  ======  ==========================================================
resample           BPDA   no      down to ``target_rate`` (8 kHz) and back, polyphase
                                  (``scipy.signal.resample_poly``, Kaiser window, both ways)
quantize           BPDA   no      ``bits`` (16 or 8) uniform: ``clip(round(x * 2**(b-1)),
                                  -2**(b-1), 2**(b-1) - 1) / 2**(b-1)``; 16 bits is
                                  :func:`seradv.attacks.waveform.realize.quantize_pcm16`
lowpass            exact  no      Butterworth (``order`` 8, ``cutoff_hz`` 4000) applied forward
                                  and backward, ``scipy.signal.sosfiltfilt``; its torch version
                                  is the same linear map (odd extension, the steady-state
                                  initial conditions, FFT convolution with the impulse response)
noise              exact  yes     ``x + sigma * N(0, 1)`` with ``sigma = rms(x) * 10**(-snr_db/20)``
                                  per waveform (``snr_db`` 30): the SNR of the added noise
                                  is ``snr_db`` in expectation
vorbis / mp3       BPDA   no      encoded and decoded by libsndfile (OGG/Vorbis, MPEG layer III)
                                  at ``quality`` (libsndfile's compression level in [0, 1],
                                  0 = best quality; default 0.5), the decoded length is checked
=================  =====  ======  ==========================================================

Lossy codecs need a libsndfile built with them: :func:`codec_available` says whether it is;
building ``vorbis`` or ``mp3`` without raises a :class:`~seradv.errors.ConfigError` naming the
missing format (``soundfile.available_formats()``). Opus is left out: libsndfile's Opus at
16 kHz does not return the input's length and alignment.

Users add a transformation with :func:`register_transform` (a factory taking the sample rate and
keyword parameters); :func:`build_transform` builds one by name.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import scipy.signal
import soundfile as sf
import torch
from torch import nn

from seradv.errors import ConfigError, ParameterError, check_int

__all__ = [
    "TRANSFORMS",
    "Chain",
    "Codec",
    "DefendedModel",
    "GaussianNoise",
    "LowPass",
    "Quantize",
    "Resample",
    "WaveTransform",
    "bpda",
    "build_transform",
    "codec_available",
    "register_transform",
]


# ----------------------------------------------------------------------------- helpers


def _waveforms(x: np.ndarray) -> np.ndarray:
    """``x`` as float64 ``[shape=(n, n_samples)]``, checked finite and inside ``[-1, 1]``."""
    y = np.asarray(x, np.float64)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise ParameterError(f"waveforms must have shape (n, n_samples) with n >= 1, got {y.shape}")
    if not np.isfinite(y).all() or np.abs(y).max() > 1.0:
        raise ParameterError("waveforms must be finite and inside [-1, 1]")
    return y


def _box(y: np.ndarray) -> np.ndarray:
    return np.clip(y, -1.0, 1.0).astype(np.float32)


class _BPDA(torch.autograd.Function):
    """Forward: ``fn`` on the numpy copy of the input; backward: the identity."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
        y = fn(x.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(y), dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def bpda(x: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """``fn(x)`` in the forward pass, the identity in the backward pass (BPDA, Athalye et al. 2018).

    Parameters
    ----------
    x : Tensor ``[shape=(n, n_samples)]``
    fn : numpy ``(n, n_samples) -> (n, n_samples)``, the real transformation

    Returns
    -------
    Tensor ``[shape=(n, n_samples)]`` of ``x``'s dtype and device; ``d out / d x`` is taken as ``I``.
    """
    return _BPDA.apply(x, fn)


def _seed_from(gen: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen).item())


# ----------------------------------------------------------------------------- base class


class WaveTransform:
    """A waveform transformation: the real one (``__call__``) and the attacker's (``torch_forward``).

    Subclasses set ``name``, ``differentiable`` and ``random`` and implement :meth:`apply`
    (numpy, float64 in, any float out; the base class validates and clips); differentiable ones
    also implement :meth:`_torch`, the exact torch version.
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    random: ClassVar[bool] = False

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _torch(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The real transformation of ``x [shape=(n, n_samples)]`` -> float32 ``[shape=(n, n_samples)]`` in ``[-1, 1]``.

        ``rng`` drives a random transformation (a fresh unseeded one when ``None``).
        """
        y = _waveforms(x)
        out = np.asarray(self.apply(y, rng if rng is not None else np.random.default_rng()))
        if out.shape != y.shape:
            raise ParameterError(f"{self.name}: output of shape {out.shape} for input {y.shape}")
        return _box(out)

    def torch_forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """The attacker's forward ``[shape=(n, n_samples)]``: exact torch version, else BPDA of the real one.

        ``gen`` (a CPU ``torch.Generator``) drives the randomness; each call is a new draw.
        """
        if x.ndim != 2:
            raise ParameterError(f"waveforms must have shape (n, n_samples), got {tuple(x.shape)}")
        if self.differentiable:
            return self._torch(x, gen).clamp(-1.0, 1.0)
        if self.random:
            seed = _seed_from(gen)
            return bpda(x, lambda a: self(a, np.random.default_rng(seed)))
        return bpda(x, self)

    def describe(self) -> str:
        """``name(param=value, ...)``, for tables."""
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "sample_rate")
        return f"{self.name}({params})"


# ----------------------------------------------------------------------------- the transformations


@dataclass(eq=False)
class Resample(WaveTransform):
    """Down to ``target_rate`` and back to ``sample_rate`` with ``scipy.signal.resample_poly`` (BPDA)."""

    sample_rate: int = 16000
    target_rate: int = 8000
    name: ClassVar[str] = "resample"

    def __post_init__(self) -> None:
        if not (0 < int(self.target_rate) < int(self.sample_rate)):
            raise ConfigError(f"resample: target_rate={self.target_rate} must be in "
                              f"(0, sample_rate={self.sample_rate})")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = math.gcd(int(self.sample_rate), int(self.target_rate))
        up, down = int(self.target_rate) // g, int(self.sample_rate) // g
        low = scipy.signal.resample_poly(x, up, down, axis=1)
        back = scipy.signal.resample_poly(low, down, up, axis=1)
        n = x.shape[1]
        if back.shape[1] < n:
            back = np.pad(back, ((0, 0), (0, n - back.shape[1])))
        return back[:, :n]


@dataclass(eq=False)
class Quantize(WaveTransform):
    """Uniform ``bits``-bit quantization ``clip(round(x * 2**(b-1)), -2**(b-1), 2**(b-1) - 1) / 2**(b-1)`` (BPDA)."""

    sample_rate: int = 16000
    bits: int = 8
    name: ClassVar[str] = "quantize"

    def __post_init__(self) -> None:
        self.bits = check_int("quantize: bits", self.bits, 2, error=ConfigError)
        if self.bits > 24:
            raise ConfigError(f"quantize: bits={self.bits} must be at most 24")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = float(2 ** (self.bits - 1))
        return np.clip(np.round(x * scale), -scale, scale - 1.0) / scale


@lru_cache(maxsize=16)
def _lowpass_kernels(order: int, cutoff: float, rate: int, n_ext: int) -> tuple[np.ndarray, np.ndarray]:
    """Impulse response ``h`` and unit zero-input response ``r`` (from ``sosfilt_zi``) over ``n_ext`` samples."""
    sos = scipy.signal.butter(order, cutoff, btype="low", fs=rate, output="sos")
    delta = np.zeros(n_ext)
    delta[0] = 1.0
    h = scipy.signal.sosfilt(sos, delta)
    r, _ = scipy.signal.sosfilt(sos, np.zeros(n_ext), zi=scipy.signal.sosfilt_zi(sos))
    return h, r


@dataclass(eq=False)
class LowPass(WaveTransform):
    """Zero-phase Butterworth low-pass, ``scipy.signal.sosfiltfilt`` (exact torch version).

    ``sosfiltfilt`` is linear in ``x``: odd extension by ``padlen = 3 * (2 * sections + 1)``
    samples at each end (fewer zeros, as scipy counts), a causal pass started from the
    steady-state conditions ``sosfilt_zi * first sample``, the same pass on the time-reversed
    result, and the extension cut off. The torch version does exactly this, with each causal
    pass written as ``conv(x, h) + x[0] * r`` (``h`` the impulse response, ``r`` the response to
    the unit initial conditions, both computed by scipy), the convolution by FFT in float64.
    """

    sample_rate: int = 16000
    cutoff_hz: float = 4000.0
    order: int = 8
    name: ClassVar[str] = "lowpass"
    differentiable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (0 < float(self.cutoff_hz) < self.sample_rate / 2):
            raise ConfigError(f"lowpass: cutoff_hz={self.cutoff_hz} must be in (0, {self.sample_rate / 2})")
        self.order = check_int("lowpass: order", self.order, 1, error=ConfigError)
        if self.order > 16:
            raise ConfigError(f"lowpass: order={self.order} must be at most 16")

    @property
    def sos(self) -> np.ndarray:
        """Second-order sections ``[shape=(sections, 6)]``."""
        return scipy.signal.butter(self.order, float(self.cutoff_hz), btype="low", fs=self.sample_rate, output="sos")

    @property
    def padlen(self) -> int:
        """scipy's default odd-extension length for these sections."""
        sos = self.sos
        ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        return 3 * ntaps

    def _check_length(self, n: int) -> None:
        if n <= self.padlen:
            raise ParameterError(f"lowpass: waveforms of {n} samples, need more than {self.padlen}")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self._check_length(x.shape[1])
        return scipy.signal.sosfiltfilt(self.sos, x, axis=1)

    def _torch(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        n = x.shape[1]
        self._check_length(n)
        p = self.padlen
        xd = x.to(torch.float64)
        left = 2.0 * xd[:, :1] - xd[:, 1:p + 1].flip(1)
        right = 2.0 * xd[:, -1:] - xd[:, n - p - 1:n - 1].flip(1)
        ext = torch.cat([left, xd, right], dim=1)
        m = ext.shape[1]
        h_np, r_np = _lowpass_kernels(self.order, float(self.cutoff_hz), int(self.sample_rate), m)
        h = torch.as_tensor(h_np, dtype=torch.float64, device=x.device)
        r = torch.as_tensor(r_np, dtype=torch.float64, device=x.device)
        size = 1 << (2 * m - 1).bit_length()  # a power of two >= 2m - 1: no wrap-around, a fast FFT
        hf = torch.fft.rfft(h, size)

        def causal(s: torch.Tensor) -> torch.Tensor:
            zs = torch.fft.irfft(torch.fft.rfft(s, size) * hf, size)[:, :m]
            return zs + s[:, :1] * r

        y = causal(ext)
        y = causal(y.flip(1)).flip(1)
        return y[:, p:p + n].to(x.dtype)


@dataclass(eq=False)
class GaussianNoise(WaveTransform):
    """``x + sigma * N(0, 1)``, ``sigma = rms(x) * 10**(-snr_db / 20)`` per waveform (random, exact torch version).

    An all-silent waveform gets no noise (``sigma = 0``). The torch version differentiates
    through ``sigma`` too (it depends on ``x``); its noise is drawn from the torch generator.
    """

    sample_rate: int = 16000
    snr_db: float = 30.0
    name: ClassVar[str] = "noise"
    differentiable: ClassVar[bool] = True
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.snr_db)):
            raise ConfigError(f"noise: snr_db={self.snr_db} must be finite")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = np.sqrt(np.mean(x * x, axis=1, keepdims=True)) * 10.0 ** (-float(self.snr_db) / 20.0)
        return x + sigma * rng.standard_normal(x.shape)

    def _torch(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        rms = torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-30)  # eps: a finite gradient at silence
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return x + rms * 10.0 ** (-float(self.snr_db) / 20.0) * noise


CODECS = {"vorbis": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}
"""Lossy codec name -> (libsndfile format, subtype)."""


def codec_available(codec: str) -> bool:
    """Whether this machine's libsndfile writes ``codec`` (``soundfile.available_formats()`` / subtypes)."""
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    fmt, sub = CODECS[codec]
    return fmt in sf.available_formats() and sub in sf.available_subtypes(fmt)


@dataclass(eq=False)
class Codec(WaveTransform):
    """Encode and decode with libsndfile's lossy ``codec`` (``vorbis``, ``mp3``) at ``quality`` (BPDA)."""

    sample_rate: int = 16000
    codec: str = "vorbis"
    quality: float = 0.5
    name: ClassVar[str] = "codec"

    def __post_init__(self) -> None:
        if not codec_available(self.codec):
            fmt, sub = CODECS[self.codec]
            raise ConfigError(f"{self.codec}: this libsndfile ({sf.__libsndfile_version__}) cannot write "
                              f"{fmt}/{sub}; see soundfile.available_formats()")
        if not 0.0 <= float(self.quality) <= 1.0:
            raise ConfigError(f"{self.codec}: quality={self.quality} must be in [0, 1] (0 = best)")

    def _round_trip(self, y: np.ndarray) -> np.ndarray:
        fmt, sub = CODECS[self.codec]
        buf = io.BytesIO()
        try:
            sf.write(buf, y.astype(np.float32), int(self.sample_rate), format=fmt, subtype=sub,
                     compression_level=float(self.quality))
            buf.seek(0)
            out, sr = sf.read(buf, dtype="float32")
        except sf.LibsndfileError as e:  # e.g. libsndfile 1.2's MP3 refuses compression level 1.0
            raise ParameterError(f"{self.codec}: libsndfile cannot encode at quality={self.quality} "
                                 f"at {self.sample_rate} Hz; try a lower quality") from None
        if sr != self.sample_rate or out.shape != y.shape:
            raise ParameterError(f"{self.codec}: decoded {out.shape} at {sr} Hz from {y.shape} "
                                 f"at {self.sample_rate} Hz")
        return out

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack([self._round_trip(row) for row in x])

    def describe(self) -> str:
        return f"{self.codec}(quality={self.quality})"


class Chain(WaveTransform):
    """Transformations applied in order (``steps``); random if any step is, differentiable if all are.

    The attacker's forward chains the steps' own forwards (exact where a step has one, BPDA for
    the others), so one chain can mix both; the numpy path chains the real ones with one ``rng``.
    """

    name: ClassVar[str] = "chain"

    def __init__(self, steps: list[WaveTransform]) -> None:
        if not steps or not all(isinstance(t, WaveTransform) for t in steps):
            raise ConfigError("chain: steps must be a non-empty list of transformations")
        self.steps = list(steps)
        self.random = any(t.random for t in self.steps)  # type: ignore[misc]
        self.differentiable = all(t.differentiable for t in self.steps)  # type: ignore[misc]

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.steps:
            x = t(x, rng).astype(np.float64)
        return x

    def torch_forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for t in self.steps:
            x = t.torch_forward(x, gen)
        return x

    def describe(self) -> str:
        return " -> ".join(t.describe() for t in self.steps)


def _chain(sample_rate: int, steps: list[tuple[str, dict[str, Any]]]) -> Chain:
    return Chain([build_transform(n, sample_rate=sample_rate, **dict(p)) for n, p in steps])


# ----------------------------------------------------------------------------- registry

Factory = Callable[..., WaveTransform]

TRANSFORMS: dict[str, Factory] = {}
"""Transformation name -> ``factory(sample_rate=..., **params)``."""


def register_transform(name: str, factory: Factory) -> None:
    """Register ``factory(sample_rate=..., **params) -> WaveTransform`` under ``name``."""
    if not name or name in TRANSFORMS:
        raise ConfigError(f"transform {name!r} is empty or already registered")
    TRANSFORMS[name] = factory


def build_transform(name: str, *, sample_rate: int = 16000, **params: Any) -> WaveTransform:
    """The registered transformation ``name`` at ``sample_rate`` with ``params`` (see the module table)."""
    if name not in TRANSFORMS:
        raise ConfigError(f"transform {name!r} is not registered; known: {', '.join(TRANSFORMS)}")
    try:
        return TRANSFORMS[name](sample_rate=int(sample_rate), **params)
    except TypeError as e:
        raise ConfigError(f"transform {name!r}: bad parameters {params}: {e}") from None


register_transform("resample", Resample)
register_transform("quantize", Quantize)
register_transform("lowpass", LowPass)
register_transform("noise", GaussianNoise)
register_transform("vorbis", lambda sample_rate, **p: Codec(sample_rate, "vorbis", **p))
register_transform("mp3", lambda sample_rate, **p: Codec(sample_rate, "mp3", **p))
register_transform("chain", _chain)


# ----------------------------------------------------------------------------- the defended classifier


class DefendedModel(nn.Module):
    """``model(transform(y))``: a :class:`~seradv.frontend.WaveformModel` behind an input transformation.

    ``forward`` is the attacker's view (``transform.torch_forward``: exact or BPDA, a new draw
    of the randomness on every call from the module's seeded generator); :meth:`predict` is the
    defence as deployed (the real numpy transformation, then the model).

    Parameters
    ----------
    transform : WaveTransform
    model : nn.Module
        Waveforms ``[shape=(b, n_samples)]`` -> logits (a ``WaveformModel``).
    seed : int
        Seed of the attacker-view generator.
    """

    def __init__(self, transform: WaveTransform, model: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.transform = transform
        self.model = model
        self.gen = torch.Generator().manual_seed(int(seed))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform.torch_forward(y, self.gen))

    def predict(self, x: np.ndarray, *, seed: int = 0, batch_size: int = 32) -> np.ndarray:
        """Top class ``[shape=(n,)]`` int64 of waveforms ``x [shape=(n, n_samples)]`` through the real transformation.

        ``seed`` seeds the numpy generator of a random transformation (one draw per waveform).
        """
        rng = np.random.default_rng(int(seed))
        z = self.transform(x, rng)
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
        was = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.inference_mode():
                for i in range(0, z.shape[0], int(batch_size)):
                    out.append(self.model(torch.as_tensor(z[i:i + batch_size], device=device)).argmax(1).cpu())
        finally:
            self.model.train(was)
        return torch.cat(out).numpy().astype(np.int64)
