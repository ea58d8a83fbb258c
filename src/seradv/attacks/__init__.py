"""Adversarial attacks on SER models in the standardized log-Mel feature space.

One module per family, each registering its attacks in :data:`ATTACKS` on import:

=============  ===========  ======  =====================================  ========
name           kind         norm    module                                 in study
=============  ===========  ======  =====================================  ========
fgsm           white-box    linf    :mod:`seradv.attacks.gradient`         yes
bim            white-box    linf    :mod:`seradv.attacks.gradient`         yes
pgd            white-box    linf    :mod:`seradv.attacks.gradient`         no
pgd_l2         white-box    l2      :mod:`seradv.attacks.gradient`         no
deepfool       white-box    l2      :mod:`seradv.attacks.deepfool`         yes
jsma           white-box    l0      :mod:`seradv.attacks.jsma`             yes
cw_l2          white-box    l2      :mod:`seradv.attacks.carlini`          yes
cw_linf        white-box    linf    :mod:`seradv.attacks.carlini`          yes
pixel          black-box    l0      :mod:`seradv.attacks.pixel`            yes
boundary       black-box    l2      :mod:`seradv.attacks.boundary`         yes
hopskipjump    black-box    l2      :mod:`seradv.attacks.hopskipjump`      no
square         black-box    linf    :mod:`seradv.attacks.square`           no
=============  ===========  ======  =====================================  ========

Use::

    from seradv.attacks import run_attack, get_attack, ThreatModel
    spec = get_attack("bim")
    for params in spec.grid("paper"):
        res = run_attack("bim", model, x, y, params, clip=ThreatModel.study("emodb"))

The reference backend is ART 1.20.1 (the study's toolbox); FGSM/BIM/PGD also have a fast
``backend="torch"``. Black-box attacks only ever see a predict function.

Measured speed with ART (study CNN-LSTM, batch 16, 2 threads, idle 2-core CPU; details and
caveats in each module): FGSM 53 samples/s (torch 66), BIM 10 iterations 6.7 (torch 10.4),
DeepFool 5 iterations 8.0, C&W L2 study settings 0.066, JSMA (theta 1, gamma 0.01) 0.056,
Pixel (th 1, 20 generations) 0.028, Boundary study settings 1.5 (ART stops early).
"""

from __future__ import annotations

# Each family module registers its attacks on import (registry order = import order).
from seradv.attacks import boundary as boundary
from seradv.attacks import carlini as carlini
from seradv.attacks import deepfool as deepfool
from seradv.attacks import gradient as gradient
from seradv.attacks import hopskipjump as hopskipjump
from seradv.attacks import jsma as jsma
from seradv.attacks import pixel as pixel
from seradv.attacks import square as square
from seradv.attacks.base import (
    ATTACKS,
    STUDY_CLIPS,
    AttackContext,
    AttackResult,
    AttackSpec,
    ParamSpec,
    QueryCounter,
    ThreatModel,
    get_attack,
    list_attacks,
    register_attack,
    run_attack,
    validate_params,
)
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

#: The study's eight attacks, in SPEC.md order.
STUDY_ATTACKS: tuple[str, ...] = (
    "fgsm", "bim", "deepfool", "jsma", "cw_l2", "cw_linf", "pixel", "boundary",
)

__all__ = [
    "ATTACKS",
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
