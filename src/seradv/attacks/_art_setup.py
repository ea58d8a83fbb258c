"""ART's per-user configuration file, created once and atomically before ART is imported.

ART 1.20 creates ``~/.art/config.json`` on its first import, with a check-then-create that
races: when two processes import ART for the first time at once (two ``seradv`` jobs started
together on a fresh machine, Ray workers), one of them can find the file created between its
two checks and fail with ``NameError: name '_config' is not defined`` inside ``art.config``.
:func:`ensure_art_config` writes the same default file ART would write, via a temporary file
and an atomic rename, so that ART always finds a complete file and never takes the racy branch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def art_config_folder(home: str | os.PathLike[str] | None = None) -> Path:
    """The folder ART 1.20 uses for its configuration (``art/config.py``'s rule).

    ``~/.art``, or ``/tmp/.art`` where the home folder is not writable.
    """
    base = Path(os.path.expanduser("~") if home is None else home)
    if not os.access(base, os.W_OK):
        base = Path("/tmp")
    return base / ".art"


def ensure_art_config(home: str | os.PathLike[str] | None = None) -> Path | None:
    """Create ART's default ``config.json`` if absent; return its path (``None`` if not writable).

    An existing file is left untouched. Where nothing can be written, ART's own fallback (a
    warning and an in-memory default) applies, as before.
    """
    folder = art_config_folder(home)
    path = folder / "config.json"
    if path.exists():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".config.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"ART_DATA_PATH": str(folder / "data")}, indent=4), encoding="utf8")
        os.replace(tmp, path)
    except OSError:
        return None
    return path
