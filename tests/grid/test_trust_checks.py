"""Trust checks on results tables built by hand (each check can pass and can fire)."""

from __future__ import annotations

import json

import pandas as pd

from seradv.grid.checks import trust_checks


def _row(attack: str, params: dict, acc: float, linf: float, n: int = 64) -> dict:
    return {"attack": attack, "params": ", ".join(f"{k}={v}" for k, v in params.items()),
            "params_json": json.dumps(params), "group": "All", "n": n, "adv_accuracy": acc,
            "mean_linf": linf}


def _status(table: pd.DataFrame, check: str, attack: str) -> list[str]:
    return table[(table["check"] == check) & (table["attack"] == attack)]["status"].tolist()


def test_monotone_passes_and_fails():
    ok = pd.DataFrame([_row("bim", {"eps": e}, a, e) for e, a in ((0.25, 0.3), (0.5, 0.1), (1.0, 0.0))])
    assert _status(trust_checks(ok), "monotone", "bim") == ["pass"]
    bad = pd.DataFrame([_row("bim", {"eps": e}, a, e) for e, a in ((0.25, 0.1), (0.5, 0.3))])
    out = trust_checks(bad)
    assert _status(out, "monotone", "bim") == ["fail"]
    assert "0.25->0.5" in out["detail"].iloc[0]
    fgsm = pd.DataFrame([_row("fgsm", {"eps": e}, a, e) for e, a in ((0.25, 0.1), (1.25, 0.2))])
    assert _status(trust_checks(fgsm), "monotone", "fgsm") == ["warn"]  # one step may overshoot


def test_black_box_beating_a_white_box_linf_attack_at_a_larger_budget_is_flagged():
    rows = [_row("bim", {"eps": 1.25}, 0.30, 1.25), _row("boundary", {"delta": 0.01}, 0.05, 1.0)]
    out = trust_checks(pd.DataFrame(rows))
    assert _status(out, "black_vs_white", "boundary") == ["warn"]
    assert "gradient masking" in out[out["check"] == "black_vs_white"]["detail"].iloc[0]
    rows[0]["adv_accuracy"] = 0.0
    assert _status(trust_checks(pd.DataFrame(rows)), "black_vs_white", "boundary") == ["pass"]


def test_minimal_perturbation_attacks_are_not_comparables():
    """DeepFool's large Linf is an outcome, not a budget: no warning from it (EmoDB speaker split)."""
    rows = [_row("deepfool", {"max_iter": 5}, 0.31, 5.6), _row("bim", {"eps": 1.25}, 0.0, 1.25),
            _row("boundary", {"delta": 0.01}, 0.22, 2.58)]
    out = trust_checks(pd.DataFrame(rows))
    assert _status(out, "black_vs_white", "boundary") == []  # no Linf attack with a budget >= 2.58


def test_other_subset_sizes_are_not_compared():
    rows = [_row("bim", {"eps": 1.25}, 0.30, 1.25, n=64), _row("boundary", {"delta": 0.01}, 0.05, 1.0, n=16)]
    assert _status(trust_checks(pd.DataFrame(rows)), "black_vs_white", "boundary") == []


def test_an_empty_table_gives_no_checks():
    out = trust_checks(pd.DataFrame())
    assert out.empty and list(out.columns) == ["check", "attack", "corpus", "language", "group", "status", "detail"]


def test_monotone_never_mixes_robust_and_study_accuracy_or_other_settings():
    rows = [_row("bim", {"eps": 0.25, "max_iter": 10}, 0.5, 0.25), _row("bim", {"eps": 0.5, "max_iter": 10}, 0.8, 0.5)]
    rows[0]["robust_accuracy"], rows[1]["robust_accuracy"] = 0.5, float("nan")
    out = trust_checks(pd.DataFrame(rows))
    assert _status(out, "monotone", "bim") == ["fail"]  # 0.5 -> 0.8, both the study-style figure
    rows[1]["robust_accuracy"] = 0.4
    assert _status(trust_checks(pd.DataFrame(rows)), "monotone", "bim") == ["pass"]
    # another max_iter at the same eps is another series, not a rise
    other = _row("bim", {"eps": 0.5, "max_iter": 3}, 0.9, 0.5)
    other["robust_accuracy"] = 0.9
    assert _status(trust_checks(pd.DataFrame(rows + [other])), "monotone", "bim") == ["pass"]


def test_the_study_defence_table_is_flagged_as_masking():
    """SPEC.md's EmoDB table after FGSM adversarial training: FGSM accuracy rising with eps to
    .785 while BIM stays at .06 (study-style accuracies, n = the test set)."""
    fgsm = [(0.25, 0.155), (0.5, 0.318), (0.75, 0.633), (1.0, 0.771), (1.25, 0.785)]
    rows = [_row("fgsm", {"eps": e}, a, e, n=837) for e, a in fgsm] + [_row("bim", {"eps": 0.25}, 0.060, 0.25, n=837)]
    out = trust_checks(pd.DataFrame(rows))
    assert _status(out, "monotone", "fgsm") == ["warn"]
    single = out[out["check"] == "single_vs_iterative"]
    assert single["status"].tolist() == ["pass"]  # eps 0.25: .155 vs .060, a gap of .095
    rows.append(_row("bim", {"eps": 1.25}, 0.050, 1.25, n=837))
    single = trust_checks(pd.DataFrame(rows)).query("check == 'single_vs_iterative'")
    assert single["status"].tolist() == ["pass", "warn"]
    assert "0.785" in single["detail"].iloc[1] and "masking" in single["detail"].iloc[1]


def test_fgsm_is_only_compared_on_the_same_samples_and_eps():
    rows = [_row("fgsm", {"eps": 1.0}, 0.8, 1.0, n=64), _row("bim", {"eps": 1.0}, 0.0, 1.0, n=32),
            _row("pgd", {"eps": 0.5}, 0.0, 0.5, n=64)]
    assert _status(trust_checks(pd.DataFrame(rows)), "single_vs_iterative", "fgsm") == []
