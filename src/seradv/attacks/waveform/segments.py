"""The audio of a prepared run's segments: what a waveform attack perturbs.

``segments.csv`` (and :func:`seradv.prepare.load_subset`'s ``meta``) names each segment by
``utterance``, ``variant`` and ``seg_index``; its waveform is cut as ``seradv prepare`` cut it
(:func:`seradv.audio.read_audio` of the manifest's path, :func:`seradv.segments.resample` to
the run's rate, :func:`seradv.segments.trim`, :func:`seradv.segments.apply_variant`,
:func:`seradv.segments.segment` with the run's recorded ``min_remainder_samples``) and picked by
``seg_index``. Its log-Mel is then the prepared feature matrix up to float rounding
(``tests/attacks/test_waveform.py`` checks it through :class:`~seradv.frontend.FrontEnd`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seradv.audio import read_audio
from seradv.errors import RunDirError
from seradv.rundir import MANIFEST, load_run_config, read_preprocessing
from seradv.segments import apply_variant, resample, segment, trim

__all__ = ["segment_waveforms"]


def _min_remainder(run_dir: Path) -> int:
    info = read_preprocessing(run_dir)
    if info.min_remainder_samples is not None:
        return int(info.min_remainder_samples)
    cfg = load_run_config(run_dir)
    if cfg.audio.min_remainder_s is not None:
        return int(round(cfg.audio.min_remainder_s * cfg.audio.sample_rate))
    raise RunDirError(f"{run_dir / 'preprocessing.json'} records no min_remainder_samples; run "
                      f"`seradv prepare` again with this run's config to record it")


def segment_waveforms(run_dir: str | Path, meta: pd.DataFrame) -> np.ndarray:
    """Waveforms ``[shape=(len(meta), segment_samples)]`` float32 of the segments ``meta`` names
    (columns ``utterance``, ``variant``, ``seg_index``), in ``meta``'s order."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    audio = cfg.audio
    min_remainder = _min_remainder(run_dir)
    manifest = pd.read_csv(run_dir / MANIFEST, dtype=str)
    paths = dict(zip(manifest["utterance"], manifest["path"]))
    cut: dict[tuple[str, str], list[np.ndarray]] = {}
    out = []
    for utt, variant, k in zip(meta["utterance"].astype(str), meta["variant"].astype(str), meta["seg_index"]):
        if (utt, variant) not in cut:
            if utt not in paths:
                raise RunDirError(f"{run_dir / MANIFEST} has no utterance {utt!r}")
            y, sr = read_audio(paths[utt])
            y = trim(resample(y, sr, audio.sample_rate), audio, where=paths[utt])
            cut[(utt, variant)] = segment(apply_variant(y, audio.sample_rate, variant), audio,
                                          min_remainder=min_remainder)
        segs = cut[(utt, variant)]
        if not 0 <= int(k) < len(segs):
            raise RunDirError(f"{utt} ({variant}) has {len(segs)} segments now, segments.csv names segment {k}: "
                              f"the audio changed since `seradv prepare`")
        out.append(segs[int(k)])
    return np.stack(out).astype(np.float32)
