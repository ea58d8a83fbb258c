"""The report's sections, one module each, in the report's order.

A section is a function from loaded data (:class:`seradv.report.data.RunData`, the tables of
:mod:`seradv.report.analysis`, the computed :mod:`seradv.report.examples`) to document blocks
(:mod:`seradv.report.render`). It writes nothing: a figure it shows is a :class:`Figure` request
that :func:`seradv.report.build.build_report` draws before rendering.

``runs`` (data, split, models), ``clean`` (clean performance), ``overview`` (all attacks at their
strongest setting), ``attacks`` (one section per attack), ``examples``, ``trust``, ``methods``
(how the statistics were made); ``gaps`` holds the male-female and corpus comparison tables and
sentences that ``clean`` and ``attacks`` share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Figure", "Section"]


@dataclass(frozen=True)
class Figure:
    """A figure a section shows: ``plot(*args, out / path, **kwargs)`` (a :mod:`seradv.report.plots`
    function) writes it at ``path``, relative to the report folder."""

    path: str
    plot: Callable[..., Path]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def draw(self, out: Path) -> Path:
        return self.plot(*self.args, out / self.path, **self.kwargs)


@dataclass
class Section:
    """The blocks of one section and the figures they show."""

    blocks: list
    figures: list[Figure] = field(default_factory=list)
