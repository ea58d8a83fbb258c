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
"""

from __future__ import annotations

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

# Registration happens on import; order = registry order.
from seradv.attacks import gradient as gradient  # noqa: E402  (fgsm, bim, pgd, pgd_l2)
from seradv.attacks import deepfool as deepfool  # noqa: E402
from seradv.attacks import jsma as jsma  # noqa: E402
from seradv.attacks import carlini as carlini  # noqa: E402  (cw_l2, cw_linf)
from seradv.attacks import pixel as pixel  # noqa: E402
from seradv.attacks import boundary as boundary  # noqa: E402
from seradv.attacks import hopskipjump as hopskipjump  # noqa: E402
from seradv.attacks import square as square  # noqa: E402
from seradv.attacks.metrics import (  # noqa: E402
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
