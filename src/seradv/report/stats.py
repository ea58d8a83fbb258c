"""The report's statistics: :mod:`seradv.stats` (CIs and tests over speakers / utterances).

The functions live one floor down, in :mod:`seradv.stats`, so that the evaluation stage
(pooled speaker-fold metrics with speaker-cluster CIs) uses the same cluster bootstrap as
the report; this module keeps ``from seradv.report import stats`` working.
"""

from seradv.stats import *  # noqa: F401,F403 - the report's name for seradv.stats
from seradv.stats import __all__  # noqa: F401
