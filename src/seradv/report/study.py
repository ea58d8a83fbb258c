"""The study's published figures that the report sets beside seradv's (SPEC.md).

Only figures the study printed; each table names its SPEC.md section. Keys: corpus recipe
name, then ``(attack, params label)`` as seradv labels the cell (``Cell.label``).
"""

from __future__ import annotations

__all__ = ["STUDY_DEFENCE", "study_defence_figure"]

#: SPEC.md, "Defence in the study's code: adversarial training" (ART AdversarialTrainer, FGSM
#: eps 1.25, ratio 0.6): accuracy on adversarial examples (All) of the retrained model.
STUDY_DEFENCE: dict[str, dict[tuple[str, str], float]] = {
    "emodb": {("clean", ""): .915, ("fgsm", "eps=0.25"): .155, ("fgsm", "eps=0.5"): .318,
              ("fgsm", "eps=0.75"): .633, ("fgsm", "eps=1"): .771, ("fgsm", "eps=1.25"): .785,
              ("bim", "eps=0.25"): .060, ("deepfool", "max_iter=5"): .062, ("jsma", "theta=1"): .025,
              ("cw_linf", "*"): .063, ("pixel", "th=10"): .563, ("boundary", "*"): .204},
    "emovo": {("clean", ""): .903, ("fgsm", "eps=0.25"): .060, ("fgsm", "eps=0.5"): .262,
              ("fgsm", "eps=0.75"): .840, ("fgsm", "eps=1"): .883, ("fgsm", "eps=1.25"): .889,
              ("bim", "eps=0.25"): .061, ("deepfool", "max_iter=5"): .055, ("jsma", "theta=1"): .035,
              ("cw_linf", "*"): .061, ("pixel", "th=10"): .317, ("boundary", "*"): .041},
    "ravdess": {("clean", ""): .920, ("fgsm", "eps=0.25"): .146, ("fgsm", "eps=0.5"): .392,
                ("fgsm", "eps=0.75"): .599, ("fgsm", "eps=1"): .657, ("fgsm", "eps=1.25"): .685,
                ("bim", "eps=0.25"): .058, ("deepfool", "max_iter=5"): .056, ("jsma", "theta=1"): .016,
                ("cw_linf", "*"): .063, ("pixel", "th=10"): .386, ("boundary", "*"): .032},
}


def study_defence_figure(corpus: str, attack: str, params: str) -> float | None:
    """The study's figure for ``attack`` at ``params`` (seradv's label, e.g. ``"eps=0.25"`` or
    ``"theta=1, gamma=1"``) on the defended model of ``corpus``, or ``None``. A study key
    matches when each of its ``name=value`` parts is among the label's parts."""
    table = STUDY_DEFENCE.get(corpus, {})
    if attack == "clean":
        return table.get(("clean", ""))
    parts = {p.strip() for p in str(params).split(",")}
    for (a, key), v in table.items():
        if a != attack:
            continue
        if key == "*" or {k.strip() for k in key.split(",")} <= parts:
            return v
    return None
