"""One exception hierarchy for every error seradv reports to a user.

Messages name the offending value or file, say why it is wrong and how to fix it.
Catch :class:`SeradvError` to handle any of them.
"""

from __future__ import annotations

import numbers
from typing import Any


class SeradvError(Exception):
    """Base class of every error raised by seradv on purpose."""


class ParameterError(SeradvError, ValueError):
    """A function or attack argument is out of range or of the wrong kind."""


class ConfigError(SeradvError, ValueError):
    """A configuration file or value is invalid (unknown key, bad type, bad path)."""


class CorpusError(SeradvError):
    """A corpus folder is missing, empty, of another corpus, or unusable for the request."""


class AudioError(SeradvError):
    """An audio file or signal cannot be used (corrupt, empty, non-finite, too short)."""


class SplitError(SeradvError):
    """The requested train/validation/test split cannot be made from the data."""


class ModelError(SeradvError):
    """A model is missing, unknown, or does not fit the input/output contract."""


class RunDirError(SeradvError):
    """A run directory lacks what a stage needs (e.g. no trained model)."""


class AttackError(SeradvError):
    """An attack is unknown or cannot run with the given parameters."""


class EnvironmentFault(SeradvError):
    """The machine, not the input, failed: disk full, quota exceeded, no write permission,
    read-only file system, out of memory. The stage stops (nothing is skipped for it)."""


def check_int(name: str, value: Any, low: int, *, error: type[SeradvError] = ParameterError) -> int:
    """``int(value)`` for an integer (Python or numpy, not a bool) of at least ``low``; else
    ``error("<name>=<value> must be an integer >= <low>")``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise error(f"{name}={value!r} must be an integer >= {low}")
    return int(value)
