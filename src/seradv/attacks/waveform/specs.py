"""Registry entries of the waveform attacks (``input="waveform"``): schemas and grids.

=============  ==========  ======  ==============================================
name           kind        norm    budget
=============  ==========  ======  ==============================================
pgd_linf_wave  white-box   linf    ``max |delta| <= 10 ** (eps_dbfs / 20)``
pgd_snr_wave   white-box   l2      ``SNR = 20 log10(||x|| / ||delta||) >= snr_db``
=============  ==========  ======  ==============================================

Grids: ``quick`` (one short setting) and ``standard`` (L-inf -60 / -50 / -40 dBFS; SNR 40 /
30 / 20 dB; 50 steps of a tenth of the budget). No ``paper`` grid: the study attacked only the
log-Mel matrix, so ``--grid paper`` skips these attacks. Their backend ``"torch"`` is the
waveform attack function of :mod:`seradv.attacks.waveform.pgd`; a cell runs through
:func:`seradv.attacks.waveform.cell.waveform_attack_cell` (the grid does this), not through
:func:`~seradv.attacks.run.run_attack`, which refuses them with a one-line error.
"""

from __future__ import annotations

from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack
from seradv.attacks.waveform.pgd import pgd_linf_waveform, pgd_snr_waveform

__all__ = ["PGD_LINF_WAVE", "PGD_SNR_WAVE"]

_COMMON = (
    ParamSpec("step_frac", float, 0.1, low=0.0, high=1.0, low_open=True,
              doc="step size as a fraction of the budget"),
    ParamSpec("max_iter", int, 50, low=1, doc="iterations"),
    ParamSpec("random_start", bool, True, doc="start at a seeded uniform point of the budget ball"),
)

PGD_LINF_WAVE = register_attack(AttackSpec(
    name="pgd_linf_wave", family="waveform", kind="white-box", norm="linf",
    title="PGD on the waveform, L-inf budget in dBFS (Madry et al. 2018)",
    params=(ParamSpec("eps_dbfs", float, -50.0, low=-120.0, high=0.0,
                      doc="L-inf budget on the samples in dB relative to full scale"),) + _COMMON,
    paper_grid=(),
    quick_grid=({"eps_dbfs": -40.0, "step_frac": 0.25, "max_iter": 10},),
    standard_grid=tuple({"eps_dbfs": d, "step_frac": 0.1, "max_iter": 50} for d in (-60.0, -50.0, -40.0)),
    backends={"torch": pgd_linf_waveform}, default_backend="torch", input="waveform",
    notes="attacks the 16 kHz waveform; robust accuracy is measured on the written 16-bit WAVs",
))

PGD_SNR_WAVE = register_attack(AttackSpec(
    name="pgd_snr_wave", family="waveform", kind="white-box", norm="l2",
    title="SNR-PGD on the waveform, per-segment SNR budget (Armory; Madry et al. 2018)",
    params=(ParamSpec("snr_db", float, 30.0, low=-20.0, high=100.0,
                      doc="minimum signal-to-noise ratio of each segment in dB"),) + _COMMON,
    paper_grid=(),
    quick_grid=({"snr_db": 30.0, "step_frac": 0.25, "max_iter": 10},),
    standard_grid=tuple({"snr_db": s, "step_frac": 0.1, "max_iter": 50} for s in (40.0, 30.0, 20.0)),
    backends={"torch": pgd_snr_waveform}, default_backend="torch", input="waveform",
    notes="attacks the 16 kHz waveform; robust accuracy is measured on the written 16-bit WAVs",
))
