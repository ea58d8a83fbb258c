"""The source-filter voice: speakers, sentences and the synthesis of one utterance (numpy/scipy)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from seradv.corpora.synthetic.config import GENERATOR_VERSION, SyntheticConfig, UtteranceSpec
from seradv.corpora.synthetic.languages import BAND_NAMES, BANDS, CONSONANTS, LANGS, NEUTRAL_F, VOWELS
from seradv.corpora.synthetic.profiles import PROFILE_CLIP, PROFILE_KEYS, PROFILE_SD, PROFILES, SYNTHETIC_EMOTIONS, VARIATION
from seradv.vocab import EMOTIONS

_LANG_IDS = {"xa": 1, "xb": 2, "xc": 3}
_GENDER_IDS = {"m": 1, "f": 2}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, GENERATOR_VERSION, *keys]))


@dataclass(frozen=True)
class _Speaker:
    f0_hz: float
    formant_scale: float
    rate: float
    jitter: float
    breath: float
    oq: float
    loudness_db: float
    noise_db: float
    expressiveness: float
    mic_tilt: float
    emotion_offsets: dict


def _make_speaker(seed: int, lang: str, gender: str, number: int) -> _Speaker:
    rng = _rng(seed, 11, _LANG_IDS[lang], _GENDER_IDS[gender], number)
    if gender == "m":
        f0 = float(np.exp(rng.uniform(np.log(95.0), np.log(138.0))))
        fscale = rng.uniform(0.94, 1.04)
    else:
        f0 = float(np.exp(rng.uniform(np.log(180.0), np.log(232.0))))
        fscale = rng.uniform(1.12, 1.22)
    offsets = {}
    for emo in SYNTHETIC_EMOTIONS:
        r = _rng(seed, 12, _LANG_IDS[lang], _GENDER_IDS[gender], number, EMOTIONS.index(emo))
        # this speaker's idiosyncratic way of expressing the emotion
        offsets[emo] = {k: 0.6 * VARIATION * PROFILE_SD[k] * float(r.standard_normal())
                        for k in PROFILE_KEYS}
    return _Speaker(
        f0_hz=f0,
        formant_scale=float(fscale),
        rate=float(rng.uniform(0.88, 1.12)),
        jitter=float(rng.uniform(0.004, 0.012)),
        breath=float(rng.uniform(0.0, 0.08)),
        oq=float(rng.uniform(-0.06, 0.06)),
        loudness_db=float(rng.uniform(-2.0, 2.0)),
        noise_db=float(rng.uniform(-64.0, -58.0)),
        expressiveness=float(np.clip(1.0 + 0.25 * VARIATION * rng.standard_normal(), 0.5, 1.5)),
        mic_tilt=float(rng.uniform(-0.15, 0.15)),
        emotion_offsets=offsets,
    )


def _make_sentence(seed: int, lang: str, text: int, target_s: float) -> list[list[dict]]:
    """Phrases (lists) of syllables (dicts: onset, vowel, coda, stressed, long) of a sentence."""
    spec = LANGS[lang]
    rng = _rng(seed, 21, _LANG_IDS[lang], text)
    ow = np.asarray(spec.onset_weights, float) / np.sum(spec.onset_weights)
    cw = np.asarray(spec.coda_weights, float) / np.sum(spec.coda_weights)
    words: list[list[dict]] = []
    total = 0.35  # leading/trailing silence
    while total < target_s or not words:
        n = int(rng.choice(spec.word_sizes))
        if spec.stress == "penult":
            stress = max(n - 2, 0)
        elif spec.stress == "initial":
            stress = 0
        else:
            stress = int(rng.integers(n))
        word = []
        for s in range(n):
            stressed = s == stress
            onset = str(spec.onsets[rng.choice(len(ow), p=ow)]).split()
            coda = str(spec.codas[rng.choice(len(cw), p=cw)]).split()
            if spec.stress_timed and not stressed and len(onset) > 1:
                onset = onset[:1]
            if spec.stress_timed and not stressed and rng.random() < 0.5:
                coda = []
            pool = spec.stressed_vowels if stressed else spec.unstressed_vowels
            vowel = str(pool[rng.integers(len(pool))])
            long = bool(rng.random() < spec.long_prob)
            syl = {"onset": onset, "vowel": vowel, "coda": coda, "stressed": stressed, "long": long}
            word.append(syl)
            vdur = spec.long_vowel_s if long else (
                spec.stressed_vowel_s if stressed else spec.vowel_s)
            total += vdur + spec.cons_s * (len(onset) + len(coda))
        words.append(word)
        total += 0.02
    # split into 1-3 phrases at word boundaries
    n_phr = int(np.clip(round(total / 1.3), 1, 3))
    n_phr = min(n_phr, len(words))
    cuts = []
    if n_phr > 1:
        cuts = sorted(rng.choice(np.arange(1, len(words)), size=n_phr - 1, replace=False))
    bounds = [0, *[int(c) for c in cuts], len(words)]
    return [[syl for w in words[a:b] for syl in w] for a, b in itertools.pairwise(bounds)]


def _emotion_params(emotion: str, speaker: _Speaker, rng: np.random.Generator) -> dict[str, float]:
    base, prof = PROFILES["neutral"], PROFILES[emotion]
    # how strongly this utterance expresses the emotion
    strength = float(np.clip(1.0 + 0.3 * VARIATION * rng.standard_normal(), 0.3, 1.8))
    intensity = speaker.expressiveness * strength
    out = {}
    for k in PROFILE_KEYS:
        v = base[k] + intensity * (prof[k] - base[k]) + speaker.emotion_offsets[emotion][k]
        v += VARIATION * PROFILE_SD[k] * float(rng.standard_normal())
        if k in PROFILE_CLIP:
            v = float(np.clip(v, *PROFILE_CLIP[k]))
        out[k] = v
    return out


def synthesize_utterance(spec: UtteranceSpec, config: SyntheticConfig) -> np.ndarray:
    """Synthesise one utterance of the corpus.

    Parameters
    ----------
    spec : UtteranceSpec
        Language, speaker, emotion and index of the utterance.
    config : SyntheticConfig
        Seed, sample rate and duration range.

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float64]
        The waveform in [-1, 1], exactly as it is quantised into the file.
    """
    sr = config.sample_rate
    seed = config.seed
    lang = LANGS[spec.language]
    spk = _make_speaker(seed, spec.language, spec.gender, spec.speaker_number)
    rng = _rng(seed, 31, _LANG_IDS[spec.language], _GENDER_IDS[spec.gender],
               spec.speaker_number, EMOTIONS.index(spec.emotion), spec.index)
    emo = _emotion_params(spec.emotion, spk, rng)

    # text: one of a few sentences per language, shared by speakers and emotions
    text = int(rng.integers(12))
    t_rng = _rng(seed, 22, _LANG_IDS[spec.language], text)
    target = float(t_rng.uniform(config.min_duration_s,
                                 max(config.min_duration_s, config.max_duration_s * 0.92)))
    phrases = _make_sentence(seed, spec.language, text, target)

    # --- segments -------------------------------------------------------------------
    tempo = spk.rate * emo["tempo"] * float(np.exp(0.04 * rng.standard_normal()))
    seg_f, seg_av, seg_ah, seg_band, seg_namp, seg_dur, seg_gain = [], [], [], [], [], [], []
    vowels: list[tuple[int, bool, int, int]] = []  # (segment index, stressed, phrase, long)
    phrase_spans: list[tuple[int, int]] = []  # first/last segment index of each phrase

    def add(f, av, ah, band, namp, dur, gain=1.0):
        seg_f.append(f)
        seg_av.append(av)
        seg_ah.append(ah)
        seg_band.append(band)
        seg_namp.append(namp)
        seg_dur.append(max(dur, 0.012))
        seg_gain.append(gain)

    def jit(d: float) -> float:
        return d * float(np.exp(lang.duration_sd * rng.standard_normal())) / tempo

    add(NEUTRAL_F, 0.0, 0.0, None, 0.0, float(rng.uniform(0.08, 0.2)))
    for p, syls in enumerate(phrases):
        start = len(seg_f)
        # stress timing: the more unstressed syllables a foot has, the shorter each of them
        foot = np.cumsum([syl["stressed"] for syl in syls])
        foot_unstressed = np.bincount(foot, weights=[not syl["stressed"] for syl in syls])
        for s_i, syl in enumerate(syls):
            final = s_i == len(syls) - 1
            stretch = 1.45 if final else 1.0  # phrase-final lengthening
            comp = 1.0
            if lang.stress_timed and not syl["stressed"]:
                comp = 1.0 / (1.0 + 0.18 * max(foot_unstressed[foot[s_i]] - 1.0, 0.0))
            gain = 1.0 if syl["stressed"] else lang.unstressed_gain
            vf = VOWELS[syl["vowel"]]
            for c in syl["onset"]:
                _add_consonant(add, c, jit(lang.cons_s * comp), gain)
            vdur = lang.long_vowel_s if syl["long"] else (
                lang.stressed_vowel_s if syl["stressed"] else lang.vowel_s)
            vowels.append((len(seg_f), syl["stressed"], p, int(syl["long"])))
            add(vf, 1.0, 0.0, None, 0.0, jit(vdur * comp * stretch), gain)
            for c in syl["coda"]:
                _add_consonant(add, c, jit(lang.cons_s * comp * (1.2 if final else 1.0)), gain)
        phrase_spans.append((start, len(seg_f) - 1))
        if p < len(phrases) - 1:
            add(NEUTRAL_F, 0.0, 0.0, None, 0.0, float(rng.uniform(0.12, 0.3)) / tempo ** 0.5)
    add(NEUTRAL_F, 0.0, 0.0, None, 0.0, float(rng.uniform(0.1, 0.25)))

    dur = np.asarray(seg_dur)
    total = float(dur.sum())
    if total > config.max_duration_s:  # compress to fit
        dur *= config.max_duration_s / total
    elif total < config.min_duration_s:  # pad with silence at both ends
        extra = config.min_duration_s - total
        dur[0] += extra / 2
        dur[-1] += extra / 2
    bounds = np.round(np.concatenate([[0.0], np.cumsum(dur)]) * sr).astype(np.int64)
    n_min = int(np.ceil(config.min_duration_s * sr - 1e-6))
    n_max = max(int(np.floor(config.max_duration_s * sr + 1e-6)), n_min)
    bounds[-1] = max(int(np.clip(bounds[-1], n_min, n_max)), int(bounds[-2]))
    lengths = np.diff(bounds)
    n = int(bounds[-1])
    t = np.arange(n) / sr
    seg_idx = np.repeat(np.arange(len(lengths)), lengths)

    # --- amplitude tracks -----------------------------------------------------------
    gain = np.asarray(seg_gain)
    av = np.asarray(seg_av)[seg_idx] * gain[seg_idx]
    # syllable envelope: vowels swell and decay
    pos = (np.arange(n) - bounds[:-1][seg_idx]) / np.maximum(lengths[seg_idx], 1)
    is_v = np.zeros(len(lengths), bool)
    is_v[[v[0] for v in vowels]] = True
    av = av * np.where(is_v[seg_idx], 0.8 + 0.2 * np.sin(np.pi * pos), 1.0)
    # phrase amplitude declination
    for a, b in phrase_spans:
        s0, s1 = bounds[a], bounds[b + 1]
        av[s0:s1] *= np.linspace(1.0, 0.72, s1 - s0)
    attack = max(int(emo["attack"] * 1e-3 * sr), 1)
    av = ndimage.uniform_filter1d(av, attack, mode="constant")
    av = ndimage.uniform_filter1d(av, max(int(0.006 * sr), 1), mode="constant")
    ah_cons = ndimage.uniform_filter1d(np.asarray(seg_ah)[seg_idx] * gain[seg_idx],
                                       max(int(0.01 * sr), 1), mode="constant")

    # --- F0 contour (5 ms frames) ---------------------------------------------------
    hop = 0.005
    tf = np.arange(int(np.ceil(n / sr / hop)) + 2) * hop
    contour = np.zeros_like(tf)
    rng_acc = rng.uniform(0.7, 1.3, size=len(vowels))
    centers = (bounds[:-1] + lengths / 2) / sr
    for a, b in phrase_spans:
        ps, pe = bounds[a] / sr, bounds[b + 1] / sr
        m = (tf >= ps) & (tf < pe + 0.05)
        contour[m] += 1.0 - 1.6 * (tf[m] - ps)  # declination, ~-1.6 st/s
        ramp = np.clip((tf - (pe - 0.22)) / 0.22, 0.0, 1.0) * m
        contour += emo["final"] * ramp
    for k, (si, stressed, p, _) in enumerate(vowels):
        if not stressed:
            continue
        c = centers[si] + emo["peak"]
        w = 0.07 / tempo
        h = lang.accent_st * rng_acc[k]
        contour += h * np.exp(-0.5 * ((tf - c) / w) ** 2)
        if lang.accent_kind == "drop":  # pitch accent: high then a fall below the line
            contour -= 0.6 * h * np.exp(-0.5 * ((tf - c - 2.2 * w) / (1.2 * w)) ** 2)
    micro = ndimage.uniform_filter1d(rng.standard_normal(len(tf)), 12, mode="nearest")
    micro *= 0.35 / max(float(np.std(micro)), 1e-9)
    tremor = emo["tremor"] * np.sin(2 * np.pi * rng.uniform(5.0, 7.0) * tf + rng.uniform(0, 6.3))
    st = emo["f0"] + emo["range"] * contour + micro + tremor

    # creak over the last ~150 ms of each phrase (F0 drops, periods alternate in amplitude)
    creak_f = np.zeros_like(tf)
    for a, b in phrase_spans:
        pe = bounds[b + 1] / sr
        strength = float(np.clip(emo["creak"] * rng.uniform(0.6, 1.4), 0.0, 1.0))
        creak_f += strength * np.clip((tf - (pe - 0.2)) / 0.08, 0, 1) * (tf < pe + 0.05)
    creak_f = np.clip(creak_f, 0.0, 1.0)
    f0f = spk.f0_hz * 2.0 ** (st / 12.0) * (1.0 - 0.45 * creak_f)
    f0f = np.clip(f0f, 40.0, 0.1 * sr)
    f0 = np.interp(t, tf, f0f)
    creak = np.interp(t, tf, creak_f)

    # --- glottal source ---------------------------------------------------------------
    jitter_sd = spk.jitter + emo["jitter"] + 0.08 * creak
    phase0 = np.cumsum(f0) / sr
    per0 = phase0.astype(np.int64)
    jit_noise = rng.standard_normal(int(per0[-1]) + 2)
    f0j = f0 * (1.0 + np.clip(jitter_sd * jit_noise[per0], -0.5, 0.5))
    phase = np.cumsum(f0j) / sr
    period = phase.astype(np.int64)
    frac = phase - period
    oq = float(np.clip(emo["oq"] + spk.oq, 0.3, 0.9))
    tp, tn = 0.62 * oq, 0.38 * oq
    flow = np.where(frac < tp, 0.5 * (1.0 - np.cos(np.pi * frac / tp)),
                    np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    shimmer = 1.0 + (0.03 + 0.6 * jitter_sd.mean()) * rng.standard_normal(int(period[-1]) + 2)
    amp_p = shimmer[period] * (1.0 - 0.55 * creak * (period % 2))
    voiced = np.diff(flow * amp_p, prepend=0.0)
    vmask = av > 0.5
    voiced /= max(float(np.sqrt(np.mean(voiced[vmask] ** 2))) if vmask.any() else 1.0, 1e-9)
    breath = float(np.clip(emo["breath"] + spk.breath, 0.0, 0.6))
    asp = rng.standard_normal(n)
    asp = signal.lfilter([1.0, -0.9], [1.0], asp)  # tilt the noise up (aspiration is hissy)
    asp /= max(float(np.std(asp)), 1e-9)
    source = av * (1.0 - 0.4 * creak) * voiced
    source += (breath * av * (0.4 + flow) + ah_cons) * asp

    # --- formant filter (time-varying cascade, 8 ms blocks) -------------------------
    fscale = spk.formant_scale
    emo_f = np.array([emo["f1"], emo["f2"], 0.5 * (1.0 + emo["f2"]), 1.0])
    block = max(round(0.008 * sr), 1)
    starts = np.arange(0, n, block)
    # formant tracks smoothed over 35 ms (coarticulation), taken at the block centres
    Fb = _boxcar_at(starts + block / 2.0, bounds, np.asarray(seg_f, float), 0.035 * sr)
    Fb = np.minimum(Fb * (fscale * emo_f), 0.45 * sr)
    Bb = np.array([80.0, 100.0, 150.0, 220.0]) * (1.0 + 0.8 * breath)
    r = np.exp(-np.pi * Bb / sr)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * Fb / sr)
    a2 = np.broadcast_to(r * r, a1.shape)
    # the four resonators as one 8th-order all-pole filter per block (unity gain at DC)
    gain_dc = np.prod(1.0 + a1 + a2, axis=1)
    den = np.ones((len(starts), 1))
    for k in range(4):
        nxt = np.zeros((len(starts), den.shape[1] + 2))
        nxt[:, :-2] += den
        nxt[:, 1:-1] += den * a1[:, k, None]
        nxt[:, 2:] += den * a2[:, k, None]
        den = nxt
    y = np.empty(n)
    zi = np.zeros(8)
    for i, s0 in enumerate(starts):
        seg = slice(s0, s0 + block)
        y[seg], zi = signal.lfilter(gain_dc[i:i + 1], den[i], source[seg], zi=zi)
    y /= max(float(np.sqrt(np.mean(y[vmask] ** 2))) if vmask.any() else float(np.std(y)), 1e-9)

    # --- frication and bursts --------------------------------------------------------
    band_of = np.array([(BAND_NAMES.index(b) if b is not None else -1) for b in seg_band])
    namp = 0.6 * np.asarray(seg_namp) * gain
    noise = rng.standard_normal(n)
    pad = int(0.02 * sr)
    for bi, name in enumerate(BAND_NAMES):
        env = np.where(band_of == bi, namp, 0.0)[seg_idx]
        if not env.any():
            continue
        lo, hi = BANDS[name]
        hi = min(hi * fscale ** 0.5, 0.45 * sr)
        lo = min(lo * fscale ** 0.5, 0.6 * hi)
        env = ndimage.uniform_filter1d(env, max(int(0.005 * sr), 1), mode="constant")
        nz = np.flatnonzero(env)
        a, b = max(int(nz[0]) - pad, 0), min(int(nz[-1]) + pad, n)
        sos, norm = _bandpass(round(lo), round(hi), sr)
        y[a:b] += env[a:b] * signal.sosfilt(sos, noise[a:b]) * norm

    # --- spectral tilt, microphone, level and room noise ------------------------------
    alpha = float(np.clip(emo["tilt"] + spk.mic_tilt, -0.85, 0.9))
    y = signal.lfilter([1.0, -alpha], [1.0], y)
    y /= max(float(np.sqrt(np.mean(y[vmask] ** 2))) if vmask.any() else float(np.std(y)), 1e-9)
    level_db = -23.0 + spk.loudness_db + emo["energy"] + 1.5 * float(rng.standard_normal())
    y *= 10.0 ** (level_db / 20.0)
    room = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n)) * 0.3  # rumble
    room += rng.standard_normal(n)  # hiss
    room /= max(float(np.std(room)), 1e-9)
    y += room * 10.0 ** ((spk.noise_db + 2.0 * float(rng.standard_normal())) / 20.0)
    peak = float(np.max(np.abs(y)))
    if peak > 0.95:
        y *= 0.95 / peak
    return np.round(y * 32767.0) / 32767.0


def _boxcar_at(x: np.ndarray, bounds: np.ndarray, values: np.ndarray, width: float) -> np.ndarray:
    """Moving average over ``width`` samples, at points ``x``, of a piecewise-constant track.

    Segment ``i`` holds ``values[i]`` on samples ``bounds[i]:bounds[i+1]``; the first and last
    values extend beyond the ends. Computed from the exact running integral, so the cost
    depends on the number of points, not of samples.
    """
    values = np.asarray(values, float).reshape(len(bounds) - 1, -1)
    cum = np.concatenate([np.zeros((1, values.shape[1])),
                          np.cumsum(values * np.diff(bounds)[:, None], axis=0)])

    def integral(p: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(bounds, p, side="right") - 1, 0, len(values) - 1)
        return cum[i] + (p - bounds[i])[:, None] * values[i]

    return (integral(x + width / 2.0) - integral(x - width / 2.0)) / width


@functools.lru_cache(maxsize=512)
def _bandpass(lo: int, hi: int, sr: int) -> tuple[np.ndarray, float]:
    """Band-pass ``sos`` and the factor that gives white noise unit variance through it."""
    sos = signal.butter(2, [lo, hi], btype="band", fs=sr, output="sos")
    impulse = np.zeros(4096)
    impulse[0] = 1.0
    h = signal.sosfilt(sos, impulse)
    return sos, 1.0 / max(float(np.sqrt(np.sum(h * h))), 1e-9)


def _add_consonant(add, c: str, dur: float, gain: float) -> None:
    kind, loci, av, ah, band, namp = CONSONANTS[c]
    if kind == "stop":  # closure then burst (+ aspiration for voiceless stops)
        add(loci, av, 0.0, None, 0.0, 0.65 * dur, gain)
        add(loci, av, ah, band, namp, 0.35 * dur, gain)
    else:
        add(loci, av, ah, band, namp, dur, gain)
