"""The robustness report: the study's tables, plots, listenable examples and honest statistics.

``seradv report RUN_DIR [RUN_DIR ...]`` (or :func:`build_report`) writes ``report.html``
(self-contained) and ``report.md`` with the same tables, plus ``figures/``, ``audio/`` and
``stats/`` beside them. Modules:

* :mod:`seradv.report.data`: read a run directory (never writes into it);
* :mod:`seradv.stats`: CIs and tests over speakers / utterances (cluster bootstrap,
  Wilson, Clopper-Pearson, speaker permutation, sign test), Holm;
* :mod:`seradv.report.analysis`: the numbers of every table;
* :mod:`seradv.report.examples`: the examples to look at and listen to (spectrograms, the
  model's predictions, Griffin-Lim audio), computed and written before rendering;
* :mod:`seradv.report.format`: how numbers, intervals and names are written;
* :mod:`seradv.report.sections`: one module per section, data to document blocks;
* :mod:`seradv.report.plots`: matplotlib figures;
* :mod:`seradv.report.render`: Markdown and HTML from one document model;
* :mod:`seradv.report.build`: :func:`build_report` (load, compute, assemble, render, write).
"""

from __future__ import annotations

from seradv.report.build import build_report

__all__ = ["build_report"]
