"""Waveform attacks: the attacker controls the 16 kHz waveform, not the log-Mel matrix.

Attacks run on a :class:`~seradv.frontend.WaveformModel` (waveform -> the model's logits,
differentiable). Every adversarial waveform stays in ``[-1, 1]``; realizability (the 16-bit
WAV written, read back and classified through the numpy feature pipeline) is
:mod:`seradv.attacks.waveform.realize`; SNR and segmental SNR are
:mod:`seradv.attacks.waveform.metrics`; one universal perturbation per model (learned on training
segments, evaluated on test segments' written files) is :mod:`seradv.attacks.waveform.universal`,
and its transfer to other models :mod:`seradv.grid.transfer`.
"""

from __future__ import annotations

from seradv.attacks.waveform.metrics import segmental_snr_db, snr_db
from seradv.attacks.waveform.pgd import WaveformAttackResult, dbfs_to_amplitude, pgd_linf_waveform, pgd_snr_waveform

__all__ = [
    "WaveformAttackResult",
    "dbfs_to_amplitude",
    "pgd_linf_waveform",
    "pgd_snr_waveform",
    "segmental_snr_db",
    "snr_db",
]
