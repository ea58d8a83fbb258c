"""Trust checks on a grid's results: each check names the fault it would reveal.

Monotonicity in the budget, budgets actually used, an unbounded attack that must win, a single
step that must not be far weaker than iterating, and black-box attacks that must not beat
white-box ones (gradient masking): :func:`trust_checks`.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pandas as pd
import torch

from seradv.attacks import ATTACKS, run_attack
from seradv.evaluation import predict_logits
from seradv.grid.results import budget_attacks, budget_tol, robust_flags
from seradv.prepare import SplitData

__all__ = ["trust_checks", "MONOTONE"]

#: Gradient attacks whose accuracy must not rise with the budget: attack -> its budget parameter
#: (a leading ``-``: the budget grows as the value falls, e.g. a lower SNR is a larger perturbation).
MONOTONE = {"fgsm": "eps", "bim": "eps", "pgd": "eps", "pgd_l2": "eps", "apgd_ce": "eps", "apgd_dlr": "eps",
            "pgd_linf_wave": "eps_dbfs", "pgd_snr_wave": "-snr_db"}

#: Iterative L-inf attacks FGSM is compared with at the same eps (``single_vs_iterative``).
ITERATIVE_LINF = ("bim", "pgd", "apgd_ce", "apgd_dlr")

#: FGSM robust accuracy this far above an iterative attack's at the same eps is flagged.
SINGLE_STEP_GAP = 0.25


def _metric(rows: pd.DataFrame) -> pd.Series:
    """Robust accuracy where every row has it (results of this version), else the study-style
    accuracy for all rows (tables built by hand or by older versions): never a mix."""
    if "robust_accuracy" in rows and rows["robust_accuracy"].notna().all():
        return rows["robust_accuracy"]
    if "adv_accuracy" in rows:
        return rows["adv_accuracy"]
    return pd.Series(np.nan, index=rows.index)


def _setting(pj: str, budget: str = "eps") -> str:
    """``params_json`` without the budget parameter: the settings one monotone series must share."""
    d = json.loads(pj) if isinstance(pj, str) and pj else {}
    d.pop(budget, None)
    return json.dumps(d, sort_keys=True)


def _budget_value(pj: str, budget: str) -> float | None:
    """The budget parameter's value in ``params_json`` (``None`` when absent)."""
    v = (json.loads(pj) if isinstance(pj, str) and pj else {}).get(budget)
    return None if v is None else float(v)


def _where(r) -> dict:
    return {"corpus": getattr(r, "corpus", ""), "language": getattr(r, "language", ""),
            "group": getattr(r, "group", "All")}


def trust_checks(
    results: pd.DataFrame,
    *,
    model: torch.nn.Module | None = None,
    data: SplitData | None = None,
    clip: tuple[float, float] | None = None,
    device: str = "cpu",
    tolerance: float = 0.02,
    n_unbounded: int = 32,
    samples: Callable[[str], pd.DataFrame | None] | None = None,
) -> pd.DataFrame:
    """Checks that a careful reviewer would run; each row says pass / warn / fail, why, and for
    which corpus, language and group (All).

    * ``monotone``: robust accuracy must not rise with the declared budget (``eps``; the waveform
      attacks' ``eps_dbfs``, and ``snr_db`` falling, :data:`MONOTONE`) by more than
      ``tolerance`` (FGSM: warn, a single step can overshoot; BIM/PGD: fail, a sign of gradient
      masking or a bug).
    * ``budget_used``: FGSM / BIM whose per-sample Linf stays far below the declared eps
      (under a tenth of it for more than 5 % of the clean-correct samples) are taking steps
      along zero gradients: masked or broken gradients (fail). PGD is not checked: its random
      start alone reaches about eps.
    * ``unbounded``: BIM (PGD without a random start) with eps as wide as the clip box must
      leave robust accuracy <= 0.05 on the first ``n_unbounded`` samples; otherwise gradients
      are masked or broken (fail).
    * ``single_vs_iterative``: at the same eps (same samples), FGSM's robust accuracy more than
      :data:`SINGLE_STEP_GAP` above the best iterative L-inf attack's (BIM, PGD, APGD): the
      signature of a model that learned to defeat one step (FGSM adversarial training, label
      leaking, gradient masking: the study's defence table, FGSM .785 vs BIM .06 on EmoDB),
      not of robustness (warn).
    * ``black_vs_white``: per sample, a black-box attack that fools a sample at Linf ``d``
      while every white-box attack with a declared Linf budget ``>= d`` on the same samples
      left it robust; more than ``max(1, tolerance * n)`` such samples suggest gradient
      masking (warn). Without per-sample files (``samples``: ``cell_id -> DataFrame``) the
      comparison is made on the cells' accuracies, against declared budgets ``>=`` the
      black-box cell's mean Linf. Minimal-perturbation attacks (DeepFool, JSMA, C&W) are not
      comparables: their Linf is an outcome, not a budget.
    """
    rows = []
    cols = ["check", "attack", "corpus", "language", "group", "status", "detail"]
    if results.empty or not {"attack", "params_json", "n"} <= set(results.columns):
        return pd.DataFrame(rows, columns=cols)
    res = results[results["attack"] != "worst_case"]
    allr = res[res["group"] == "All"] if "group" in res else res
    allr = allr.assign(eps_=allr["params_json"].map(lambda s: json.loads(s).get("eps")),
                       setting_=allr["params_json"].map(_setting))
    keys = [k for k in ("corpus", "language", "backend", "early_stop", "precision", "n", "seed", "subset", "setting_") if k in allr]
    for attack, key in MONOTONE.items():
        part = allr[allr["attack"] == attack]
        if len(part) < 2:
            continue
        name, sign = (key[1:], -1.0) if key.startswith("-") else (key, 1.0)
        part = part.assign(budget_=part["params_json"].map(lambda s: _budget_value(s, name)),
                           setting_=part["params_json"].map(lambda s: _setting(s, name)))
        for _, p in part.groupby(keys, dropna=False):
            p = p.drop_duplicates("budget_", keep="last")
            if len(p) < 2:
                continue
            p = p.assign(metric_=_metric(p), order_=sign * p["budget_"]).sort_values("order_", kind="stable")
            acc = p["metric_"].to_numpy()
            if np.isnan(acc).any():
                rows.append({"check": "monotone", "attack": attack, **_where(p.iloc[0]), "status": "warn",
                             "detail": f"robust accuracy unavailable for some {name}: not checked"})
                continue
            rises = [(p["budget_"].iloc[i], p["budget_"].iloc[i + 1], acc[i], acc[i + 1])
                     for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + tolerance]
            status = "pass" if not rises else ("warn" if attack == "fgsm" else "fail")
            grows = f"{name}" if sign > 0 else f"falling {name}"
            detail = (f"robust accuracy never rises with {grows}" if not rises else
                      "; ".join(f"{name} {a:g}->{b:g}: {x:.3f}->{y:.3f}" for a, b, x, y in rises)
                      + (" (FGSM's single step can overshoot; iterative attacks should not)"
                         if attack == "fgsm" else " (possible gradient masking or implementation fault)"))
            rows.append({"check": "monotone", "attack": attack, **_where(p.iloc[0]), "status": status, "detail": detail})
    # budget_used: zero gradients leave FGSM/BIM far inside their ball (PGD's random start alone
    # reaches ~eps, so it cannot show there; the unbounded check covers it)
    allr = allr.assign(metric_=_metric(allr))
    for r in allr[allr["attack"].isin(["fgsm", "bim"])].itertuples():
        if getattr(r, "early_stop", False) or r.eps_ is None or not np.isfinite(r.eps_):
            continue
        f = samples(r.cell_id) if samples is not None else None
        if f is not None:
            ok = (f["pred_clean"] == f["label"]).to_numpy()
            linf = f["linf"].to_numpy()[ok]
            if not linf.size:
                continue
            share = float(np.mean(linf < r.eps_ / 10))
            bad = share > 0.05
            detail = (f"{r.attack} ({r.params}): {share:.1%} of {linf.size} clean-correct samples moved less than "
                      f"eps/10 (median Linf {np.median(linf):.3g} of eps {r.eps_:g})")
        else:
            bad = r.mean_linf < r.eps_ / 2
            detail = f"{r.attack} ({r.params}): mean Linf {r.mean_linf:.3g} of eps {r.eps_:g}"
        rows.append({"check": "budget_used", "attack": r.attack, **_where(r), "status": "fail" if bad else "pass",
                     "detail": detail + (" - steps along zero gradients: masked or broken gradients" if bad else "")})
    if model is not None and data is not None and clip is not None:
        k = min(n_unbounded, len(data))
        lo, hi = clip
        width = float(hi - lo)
        res_u = run_attack("bim", model, data.x[:k], data.y[:k],
                           {"eps": width, "eps_step": width / 20, "max_iter": 50},
                           clip=clip, backend="torch" if _has_backend("bim", "torch") else "art", seed=0, device=device)
        pred = predict_logits(model, res_u.x_adv, device=device).argmax(1)
        fooled = pred != data.y[:k]
        if res_u.fooled_any is not None:
            fooled |= res_u.fooled_any
        clean_ok = predict_logits(model, data.x[:k], device=device).argmax(1) == data.y[:k]
        acc = float(np.mean(clean_ok & ~fooled))
        meta = data.meta.iloc[0]
        rows.append({"check": "unbounded", "attack": "bim", "corpus": meta.get("corpus", ""),
                     "language": meta.get("language", ""), "group": "All",
                     "status": "pass" if acc <= 0.05 else "fail",
                     "detail": f"BIM (no random start) eps={width:g} (the whole clip box), 50 steps, {k} samples: "
                               f"robust accuracy {acc:.3f}"
                               + ("" if acc <= 0.05 else " > 0.05: gradients may be masked or broken")})
    rows += _single_vs_iterative(allr)
    white = allr[(allr["attack"].map(_kind) == "white-box") & allr["attack"].isin(list(budget_attacks()))
                 & allr["eps_"].notna()]
    black = allr[allr["attack"].map(_kind) == "black-box"]
    for r in black.itertuples():
        comp = white[white["n"] == r.n]
        for k2 in ("corpus", "language"):
            if k2 in comp:
                comp = comp[comp[k2] == getattr(r, k2)]
        fb = samples(r.cell_id) if samples is not None else None
        fws = {c: samples(c) for c in comp["cell_id"]} if samples is not None else {}
        if fb is not None and fws and all(f is not None for f in fws.values()):
            fb = fb.sort_values("segment_id").reset_index(drop=True)
            fws = {c: f.sort_values("segment_id").reset_index(drop=True) for c, f in fws.items()}
            fws = {c: f for c, f in fws.items() if f["segment_id"].tolist() == fb["segment_id"].tolist()}
            if not fws:
                continue
            ok = (fb["pred_clean"] == fb["label"]).to_numpy()
            b_att = fb["attacked"].astype(bool).to_numpy() if "attacked" in fb else np.ones(len(fb), bool)
            b_fooled = ok & b_att & ~robust_flags(fb)  # never-attacked samples were not fooled
            d = fb["linf"].to_numpy()
            covered = np.zeros(len(fb), bool)
            white_robust = np.ones(len(fb), bool)
            eps_of = dict(zip(comp["cell_id"], comp["eps_"]))
            for c, f in fws.items():
                inside = eps_of[c] + budget_tol(eps_of[c]) >= d
                covered |= inside
                white_robust &= ~inside | robust_flags(f)
            beats = b_fooled & covered & white_robust
            m = int(beats.sum())
            bad = m > max(1, tolerance * len(fb))
            detail = (f"{r.attack} ({r.params}) fooled {m} of {int((b_fooled & covered).sum())} samples at a Linf "
                      f"where every white-box attack with that budget ({', '.join(sorted(set(comp['attack'])))}) "
                      f"left them robust" + (f"; {int((~b_att).sum())} not attacked" if (~b_att).any() else ""))
        else:
            comparable = comp[comp["eps_"] >= r.mean_linf]
            if comparable.empty:
                continue
            best = comparable["metric_"].min()
            bad = r.metric_ < best - tolerance
            detail = (f"{r.attack} ({r.params}) robust accuracy {r.metric_:.3f} at mean Linf {r.mean_linf:.3g}; "
                      f"best white-box Linf attack with a budget >= that Linf: {best:.3f}")
        rows.append({"check": "black_vs_white", "attack": r.attack, **_where(r),
                     "status": "warn" if bad else "pass",
                     "detail": detail + (" - black-box beats white-box: possible gradient masking" if bad else "")})
    return pd.DataFrame(rows, columns=cols)


def _single_vs_iterative(allr: pd.DataFrame) -> list[dict]:
    """The ``single_vs_iterative`` rows: FGSM against the iterative L-inf attacks, eps by eps."""
    out = []
    keys = [k for k in ("corpus", "language", "n", "seed", "subset") if k in allr]
    fgsm = allr[allr["attack"] == "fgsm"].sort_values("eps_", kind="stable")
    iters = allr[allr["attack"].isin(ITERATIVE_LINF)]
    for r in fgsm.itertuples():
        comp = iters[np.isclose(iters["eps_"].astype(float), float(r.eps_))] if r.eps_ is not None else iters.iloc[:0]
        for k in keys:
            comp = comp[comp[k] == getattr(r, k)]
        if comp.empty or not np.isfinite(r.metric_):
            continue
        best = comp.loc[comp["metric_"].idxmin()]
        gap = float(r.metric_ - best["metric_"])
        bad = gap > SINGLE_STEP_GAP
        detail = (f"eps {r.eps_:g}: FGSM robust accuracy {r.metric_:.3f}, {best['attack']} {best['metric_']:.3f} "
                  f"(n = {r.n})")
        if bad:
            detail += (" - one step far weaker than iterating: a model that learned to defeat FGSM "
                       "(masking), not robustness; judge it by the iterative attacks")
        out.append({"check": "single_vs_iterative", "attack": "fgsm", **_where(r),
                    "status": "warn" if bad else "pass", "detail": detail})
    return out


def _kind(name: str) -> str:
    return ATTACKS[name].kind if name in ATTACKS else "other"


def _has_backend(name: str, backend: str) -> bool:
    return name in ATTACKS and backend in ATTACKS[name].backends
