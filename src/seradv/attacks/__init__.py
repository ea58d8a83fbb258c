"""Adversarial attacks on SER models in the standardized log-Mel feature space.

One module per attack (or family), each registering its attacks in :data:`ATTACKS` on import:

=============  ===========  ======  =====================================  ========
name           kind         norm    module                                 in study
=============  ===========  ======  =====================================  ========
fgsm           white-box    linf    :mod:`seradv.attacks.gradient`         yes
bim            white-box    linf    :mod:`seradv.attacks.gradient`         yes
pgd            white-box    linf    :mod:`seradv.attacks.gradient`         no
pgd_l2         white-box    l2      :mod:`seradv.attacks.gradient`         no
deepfool       white-box    l2      :mod:`seradv.attacks.deepfool`         yes
jsma           white-box    l0      :mod:`seradv.attacks.jsma`             yes
cw_l2          white-box    l2      :mod:`seradv.attacks.cw_l2`            yes
cw_linf        white-box    linf    :mod:`seradv.attacks.cw_linf`          yes
pixel          black-box    l0      :mod:`seradv.attacks.pixel`            yes
boundary       black-box    l2      :mod:`seradv.attacks.boundary`         yes
hopskipjump    black-box    l2      :mod:`seradv.attacks.hopskipjump`      no
square         black-box    linf    :mod:`seradv.attacks.square`           no
apgd_ce        white-box    linf    :mod:`seradv.attacks.apgd`             no
apgd_dlr       white-box    linf    :mod:`seradv.attacks.apgd`             no
pgd_linf_wave  white-box    linf    :mod:`seradv.attacks.waveform.specs`   no
pgd_snr_wave   white-box    l2      :mod:`seradv.attacks.waveform.specs`   no
=============  ===========  ======  =====================================  ========

The last two perturb the 16 kHz waveform (``input="waveform"``), not the log-Mel matrix: they
run through the grid (:func:`seradv.attacks.waveform.cell.waveform_attack_cell`), not
:func:`run_attack`.

The rooms below the attacks: :mod:`~seradv.attacks.threat` (the clip box),
:mod:`~seradv.attacks.context` (what a runner gets, counters, the held state),
:mod:`~seradv.attacks.spec` (parameter schemas, specs, the registry),
:mod:`~seradv.attacks.run` (:func:`run_attack`), :mod:`~seradv.attacks.metrics` (perturbation
norms, predictions), and the shared helpers ``_torch`` (torch), ``_art`` (ART adapters) and
``_starts`` (starting points of the decision-based attacks).

Use::

    from seradv.attacks import run_attack, get_attack, ThreatModel
    spec = get_attack("bim")
    for params in spec.grid("paper"):
        res = run_attack("bim", model, x, y, params, clip=ThreatModel.study("emodb"))

The reference backend is ART 1.20.1 (the study's toolbox); most attacks also have a fast batched
``backend="torch"``. Black-box attacks only ever see a predict function.
"""

from __future__ import annotations

from seradv.attacks._art_setup import ensure_art_config

# Before the first ``import art``: ART's own creation of its config file races between processes.
ensure_art_config()

# Each module registers its attacks on import (registry order = import order; deepfool before
# cw_l2 and cw_linf keeps the order of ATTACKS as it was when the C&W module imported deepfool).
from seradv.attacks import boundary as boundary
from seradv.attacks import deepfool as deepfool  # isort: skip
from seradv.attacks import cw_l2 as cw_l2  # isort: skip
from seradv.attacks import cw_linf as cw_linf  # isort: skip
from seradv.attacks import gradient as gradient
from seradv.attacks import hopskipjump as hopskipjump
from seradv.attacks import jsma as jsma
from seradv.attacks import pixel as pixel
from seradv.attacks import square as square
from seradv.attacks import apgd as apgd  # isort: skip
from seradv.attacks.waveform import specs as _waveform_specs  # isort: skip  (input="waveform")
from seradv.attacks.context import AttackContext, AttackResult, QueryCounter
from seradv.attacks.metrics import (
    accuracy,
    l0_norm,
    l2_norm,
    linf_norm,
    mean_abs_perturbation,
    perturbation_norms,
    predict,
    predict_proba,
)
from seradv.attacks.run import run_attack
from seradv.attacks.spec import (
    ATTACKS,
    GRID_NAMES,
    INPUTS,
    STUDY_ATTACKS,
    AttackSpec,
    ParamSpec,
    get_attack,
    list_attacks,
    register_attack,
    validate_params,
)
from seradv.attacks.threat import STUDY_CLIPS, ThreatModel

__all__ = [
    "ATTACKS",
    "GRID_NAMES",
    "INPUTS",
    "STUDY_ATTACKS",
    "STUDY_CLIPS",
    "AttackContext",
    "AttackResult",
    "AttackSpec",
    "ParamSpec",
    "QueryCounter",
    "ThreatModel",
    "accuracy",
    "get_attack",
    "l0_norm",
    "l2_norm",
    "linf_norm",
    "list_attacks",
    "mean_abs_perturbation",
    "perturbation_norms",
    "predict",
    "predict_proba",
    "register_attack",
    "run_attack",
    "validate_params",
]
