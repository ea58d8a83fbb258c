"""Configuration as frozen dataclasses, loaded from and saved to YAML.

A :class:`RunConfig` describes a whole run (corpus, preprocessing, features, split, training)
and is saved as ``config.yaml`` beside every result. Unknown keys and bad values are reported
with the dotted key that is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from seradv.errors import ConfigError, check_int
from seradv.fileio import atomic_write_text
from seradv.vocab import EMOTIONS

__all__ = [
    "AudioConfig",
    "AugmentConfig",
    "FeatureConfig",
    "SplitConfig",
    "SPLIT_KINDS",
    "PRECISION_NAMES",
    "TrainConfig",
    "AttackConfig",
    "DataConfig",
    "RunConfig",
    "load_config",
    "save_config",
    "config_hash",
    "default_cache_dir",
]


@dataclass(frozen=True)
class AudioConfig:
    """Loading, trimming and segmentation (SPEC.md steps 1-3)."""

    sample_rate: int = 16000
    trim_top_db: float = 30.0
    trim_frame_length: int = 512
    trim_hop_length: int = 64
    segment_s: float = 3.0
    min_remainder_s: float | None = 0.0
    """A final remainder shorter than this is dropped. ``0`` (default): every non-empty
    remainder is kept, as the study's code does (SPEC.md step 3, its ``int(0.9)`` threshold);
    ``None``: the shortest trimmed utterance of the corpus, the rule the study's text states."""

    def validate(self) -> None:
        _positive("audio.sample_rate", self.sample_rate)
        _positive("audio.trim_top_db", self.trim_top_db)
        _positive("audio.trim_frame_length", self.trim_frame_length)
        _positive("audio.trim_hop_length", self.trim_hop_length)
        _positive("audio.segment_s", self.segment_s)
        if self.min_remainder_s is not None and self.min_remainder_s < 0:
            raise ConfigError(f"audio.min_remainder_s={self.min_remainder_s} must be >= 0 or null")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_s * self.sample_rate))


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation (SPEC.md step 4): pitch shifts (semitones) and time-stretch rates."""

    pitch_steps: tuple[float, ...] = (-3.0, -1.5, 1.5, 3.0)
    stretch_rates: tuple[float, ...] = (0.75, 0.9, 1.1, 1.25)
    enabled: bool = True

    def validate(self) -> None:
        for s in self.pitch_steps:
            _finite("augment.pitch_steps", s)
        for r in self.stretch_rates:
            _positive("augment.stretch_rates", r)

    def variants(self) -> list[str]:
        """Names of the copies of each utterance: ``orig``, ``pitch+1.5``, ``stretch0.9``..."""
        out = ["orig"]
        if self.enabled:
            out += [f"pitch{s:+g}" for s in self.pitch_steps]
            out += [f"stretch{r:g}" for r in self.stretch_rates]
        return out


@dataclass(frozen=True)
class FeatureConfig:
    """Log-Mel features (SPEC.md step 5): 128 Mel bands, n_fft 368, hop 184 -> 261 x 128."""

    n_mels: int = 128
    n_fft: int = 368
    hop_length: int = 184
    top_db: float | None = 80.0
    db_reference: str = "min"
    """The study converts the power Mel spectrogram with ``amplitude_to_db(ref=np.min)``."""

    def validate(self) -> None:
        _positive("features.n_mels", self.n_mels)
        _positive("features.n_fft", self.n_fft)
        _positive("features.hop_length", self.hop_length)
        if self.top_db is not None:
            _positive("features.top_db", self.top_db)
        if self.db_reference not in ("min", "max"):
            raise ConfigError(f"features.db_reference={self.db_reference!r} must be 'min' or 'max'")


SPLIT_KINDS = ("speaker", "paper", "speaker_cv")
"""The split kinds: single speaker hold-out (default), the study's leaky split, speaker-fold CV."""


@dataclass(frozen=True)
class SplitConfig:
    """How segments are split into train / validation / test.

    ``kind="speaker"`` (default): whole speakers held out for test and validation, both
    genders in each; augmentation on training utterances only; standardization fitted on
    training data. ``kind="paper"``: the study's stratified random 80/20 split over augmented
    segments (seed 1938), standardization on the whole corpus: leaky, for comparison only.
    ``kind="speaker_cv"``: speaker-fold cross-validation, ``folds`` folds (``None``: the
    corpus recipe's ``cv_folds``), each holding out whole speakers of both genders for test,
    validation from ``val_size`` of the training speakers' own utterances; every speaker is
    tested exactly once (:func:`seradv.splits.speaker_folds`).
    """

    kind: str = "speaker"
    seed: int = 1938
    test_size: float = 0.2
    val_size: float = 0.2
    test_speakers: tuple[str, ...] | None = None
    val_speakers: tuple[str, ...] | None = None
    folds: int | None = None
    """Number of folds of ``kind="speaker_cv"`` (``None``: the corpus recipe's default)."""

    def validate(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"split.kind={self.kind!r} must be one of {', '.join(map(repr, SPLIT_KINDS))}")
        _seed("split.seed", self.seed)
        if self.folds is not None:
            check_int("split.folds", self.folds, 2, error=ConfigError)
            if self.kind != "speaker_cv":
                raise ConfigError(f"split.folds={self.folds} needs split.kind 'speaker_cv' (got {self.kind!r})")
        for name in ("test_size", "val_size"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ConfigError(f"split.{name}={v} must be between 0 and 1 (exclusive)")

    @property
    def leaky(self) -> bool:
        return self.kind == "paper"


PRECISION_NAMES = ("fp32", "bf16", "fp16")
"""The precisions of ``train.precision`` and ``attack.precision`` (:mod:`seradv.precision`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training (SPEC.md): Adam, early stopping and reduce-on-plateau on validation loss.

    ``None`` for ``dropout``, ``lstm_dropout``, ``lr`` and ``batch_size`` means the study's
    value for the corpus.
    """

    model: str = "cnn_lstm"
    epochs: int = 100
    batch_size: int | None = None
    lr: float | None = None
    dropout: float | None = None
    lstm_dropout: float | None = None
    patience: int = 10
    lr_patience: int = 6
    lr_factor: float = 0.1
    min_delta: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    precision: str = "fp32"
    """Of the model's forward passes in training and in the clean evaluation: ``fp32`` (the
    study's), ``bf16`` or ``fp16`` (:mod:`seradv.precision`)."""

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        if self.batch_size is not None:
            _positive("train.batch_size", self.batch_size)
        if self.lr is not None:
            _positive("train.lr", self.lr)
        for name in ("dropout", "lstm_dropout"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise ConfigError(f"train.{name}={v} must be in [0, 1)")
        if self.patience < 1 or self.lr_patience < 1:
            raise ConfigError("train.patience and train.lr_patience must be >= 1")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"train.lr_factor={self.lr_factor} must be in (0, 1)")
        if not self.min_delta >= 0:
            raise ConfigError(f"train.min_delta={self.min_delta} must be >= 0")
        if not self.model.strip():
            raise ConfigError("train.model must name a registered model, e.g. 'cnn_lstm'")
        _seed("train.seed", self.seed)
        _check_device("train.device", self.device)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads={self.threads} must be a positive integer (or null: torch's default)")
        _check_precision("train.precision", self.precision)


@dataclass(frozen=True)
class DefenceConfig:
    """How the model is defended while it trains (:mod:`seradv.defences`).

    ``kind: none`` is the study's plain training. ``kind: adversarial_training`` replaces
    ``ceil(ratio * batch)`` rows of every batch by ``attack`` examples of the current model
    (L-inf ``eps`` in standardized units): the study's defence is ``attack: fgsm, eps: 1.25,
    ratio: 0.6`` with ``train.batch_size: 128, train.epochs: 30`` (SPEC.md); ``attack: pgd`` is
    Madry et al.'s, ``steps`` steps of ``step_size`` (``null``: ``2.5 * eps / steps``) from a
    random start.
    """

    kind: str = "none"
    attack: str = "fgsm"
    eps: float = 1.25
    ratio: float = 0.6
    steps: int = 10
    step_size: float | None = None

    def validate(self) -> None:
        if not self.kind.strip():
            raise ConfigError("defence.kind must name a defence: 'none' or 'adversarial_training'")
        if self.attack not in ("fgsm", "pgd"):
            raise ConfigError(f"defence.attack={self.attack!r} must be 'fgsm' or 'pgd'")
        _positive("defence.eps", self.eps)
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"defence.ratio={self.ratio} must be in (0, 1]")
        _positive("defence.steps", self.steps)
        if self.step_size is not None:
            _positive("defence.step_size", self.step_size)


@dataclass(frozen=True)
class AttackConfig:
    """The attack stage of ``seradv run`` (``seradv attack`` takes the same as options)."""

    enabled: bool = True
    grid: str = "quick"
    attacks: tuple[str, ...] | None = None
    """``None``: the study's eight attacks."""
    limit: int | None = None
    per_speaker: int | None = None
    """Instead of ``limit``: this many seeded segments of every test speaker."""
    seed: int = 0
    backend: str | None = None
    batch_size: int = 64
    device: str = "cpu"
    executor: str = "local"
    """``local`` (cells one after another) or ``ray`` (each cell a Ray task)."""
    executor_address: str | None = None
    """With ``executor: ray``: the cluster to join (``auto``, ``ray://host:port``); ``None``: a
    local Ray instance."""
    precision: str = "fp32"
    """Of the model's forward passes in the torch attack backends: ``fp32`` (the study's),
    ``bf16`` or ``fp16`` (:mod:`seradv.precision`; ART backends need ``fp32``)."""

    def validate(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"attack.executor={self.executor!r} must be 'local' or 'ray'")
        if self.executor_address is not None and self.executor != "ray":
            raise ConfigError("attack.executor_address needs attack.executor: ray")
        if self.grid not in ("paper", "quick", "standard"):  # seradv.attacks.GRID_NAMES
            raise ConfigError(f"attack.grid={self.grid!r} must be 'paper', 'quick' or 'standard'")
        if self.limit is not None:
            _positive("attack.limit", self.limit)
        if self.per_speaker is not None:
            _positive("attack.per_speaker", self.per_speaker)
            if self.limit is not None:
                raise ConfigError("attack.limit and attack.per_speaker exclude each other: set one to null")
        _positive("attack.batch_size", self.batch_size)
        _seed("attack.seed", self.seed)
        _check_device("attack.device", self.device)
        if self.attacks is not None:
            if not self.attacks or not all(a.strip() for a in self.attacks):
                raise ConfigError(f"attack.attacks={list(self.attacks)!r} must list attack names "
                                  "(or be null: the study's eight); see `seradv attack --list`")
        if self.backend is not None and not self.backend.strip():
            raise ConfigError("attack.backend must be 'art', 'torch' or null (each attack's default)")
        _check_precision("attack.precision", self.precision)
        if self.precision != "fp32" and self.backend not in ("torch", None):
            raise ConfigError(f"attack.precision={self.precision!r} needs attack.backend torch (or null), "
                              f"not {self.backend!r}: ART runs the model in float32")


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, where, and which emotions."""

    corpus: str = "synthetic"
    data_dir: str | None = None
    emotions: tuple[str, ...] | None = None
    """``None``: the study's five classes for the corpus."""
    max_per_class: int | None = None
    """Keep at most this many utterances per speaker and emotion, for quick runs."""

    def validate(self) -> None:
        if not self.corpus:
            raise ConfigError("data.corpus must name a corpus")
        if self.data_dir is not None:
            _check_path("data.data_dir", self.data_dir)
        if self.max_per_class is not None:
            _positive("data.max_per_class", self.max_per_class)
        if self.emotions is not None:
            unknown = [e for e in self.emotions if e not in EMOTIONS]
            if unknown or not self.emotions:
                raise ConfigError(
                    f"data.emotions={list(self.emotions)!r}: "
                    + (f"unknown emotion {unknown[0]!r}; " if unknown else "empty; ")
                    + f"use names from {', '.join(EMOTIONS)} (or null: the study's classes)"
                )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as ``config.yaml`` in the run directory."""

    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    cache_dir: str | None = None
    n_jobs: int = 2

    def validate(self) -> "RunConfig":
        if not self.name or any(c in self.name for c in "/\\") or self.name in (".", ".."):
            raise ConfigError(f"name={self.name!r} must be a plain folder name")
        _check_types(self, "")
        for sub in (self.data, self.audio, self.augment, self.features, self.split, self.train, self.defence,
                    self.attack):
            sub.validate()
        if self.cache_dir is not None:
            _check_path("cache_dir", self.cache_dir)
        if self.n_jobs < 1:
            raise ConfigError(f"n_jobs={self.n_jobs} must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with top-level or dotted-key changes, e.g. ``replace(**{"split.kind": "paper"})``."""
        d = self.to_dict()
        for key, value in changes.items():
            node = d
            parts = key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            node[parts[-1]] = value
        return from_dict(d)


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a nested mapping (e.g. parsed YAML)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}")
    return _build(RunConfig, d, prefix="").validate()


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted((str(k) for k in d if k not in known))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(prefix + k for k in known)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        f = known[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{name} must be a mapping, got {value!r}")
            kwargs[name] = _build(type(default), value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, default, str(f.type))
    return cls(**kwargs)


def _coerce(key: str, value: Any, default: Any, type_str: str) -> Any:
    if value is None:
        if "None" in type_str:
            return None
        raise ConfigError(f"{key} must not be null")
    if "tuple" in type_str:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item_type = type_str.split("tuple[", 1)[1].split(",", 1)[0].strip()
        return tuple(_coerce(f"{key}[{i}]", v, None, item_type) for i, v in enumerate(value))
    if "bool" in type_str:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if "int" in type_str and "float" not in type_str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if "float" in type_str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if "str" in type_str:
        if not isinstance(value, str):
            hint = ("; put it in quotes (YAML reads an unquoted 03 as the number 3)"
                    if isinstance(value, (int, float)) and not isinstance(value, bool) else "")
            raise ConfigError(f"{key} must be a string, got {value!r}{hint}")
        return value
    return value


def _check_types(obj: Any, prefix: str) -> None:
    """Every field of a (nested) config dataclass has its declared type (configs built in Python)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_types(value, f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default):  # type: ignore[misc]
            raise ConfigError(f"{prefix}{f.name} must be a mapping, got {value!r}")
        else:
            _coerce(f"{prefix}{f.name}", value, None, str(f.type))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file; every key is optional (defaults as the dataclasses)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}; pass a YAML file (every key optional)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config file {path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "save the file with UTF-8 encoding"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}{_yaml_where(exc)}: not valid YAML: {_yaml_problem(exc)}; "
                          "check the indentation, brackets and quotes there") from None
    if data is None:
        data = {}
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(exc)
    problem, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    if problem is not None and context is not None and context.line != problem.line:
        text += f" (the construct began on line {context.line + 1})"
    return " ".join(text.split())


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (atomically)."""
    return atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_hash(*parts: Any, n: int = 12) -> str:
    """Short stable hash of JSON-serialisable parts (dataclasses allowed)."""
    plain = [_to_plain(dataclasses.asdict(p)) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def default_cache_dir() -> Path:
    """``$SERADV_CACHE_DIR`` or ``~/.cache/seradv``."""
    env = os.environ.get("SERADV_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seradv"


def _positive(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}={value!r} must be a positive number")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite positive number")


def _finite(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} values must be finite numbers, got {value!r}")


def _seed(key: str, value: int) -> None:
    check_int(key, value, 0, error=ConfigError)


_DEVICE = re.compile(r"(cpu|auto|mps|cuda(:\d+)?)")


def _check_device(key: str, value: str) -> None:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not a device; use cpu, cuda, cuda:N (N = GPU index) or auto")


def _check_precision(key: str, value: str) -> None:
    if not isinstance(value, str) or value not in PRECISION_NAMES:
        raise ConfigError(f"{key}={value!r} must be one of {', '.join(PRECISION_NAMES)}")


def _check_path(key: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty path string, got {value!r}")
    if "\x00" in value:
        raise ConfigError(f"{key} contains a NUL byte")
