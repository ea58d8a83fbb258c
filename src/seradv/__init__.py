"""seradv: adversarial robustness of speech emotion recognition.

Data flows one way: corpus table -> segments -> features -> model -> attacks -> results -> report.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("seradv")
    """The installed version (package metadata, i.e. ``pyproject.toml``)."""
except _PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
