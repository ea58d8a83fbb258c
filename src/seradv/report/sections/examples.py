"""Section "Examples: spectrograms and audio": describes the examples that
:func:`seradv.report.examples.compute_examples` computed and wrote."""

from __future__ import annotations

from seradv.report.examples import RunExamples, WaveExample
from seradv.report.format import khz
from seradv.report.render import AudioSet, Heading, Image, Para, Table, slug
from seradv.report.sections import Section

__all__ = ["examples_section"]

_INTRO = (
    "Each example is one test segment, attacked by a few attacks at their strongest setting. The "
    "spectrograms are the standardized log-Mel features the model sees (time x Mel band); original "
    "and adversarial share one colour scale, the difference is shown on a scale of the same width "
    "and magnified. The audio is a Griffin-Lim rendering (un-standardize, undo dB, invert the Mel "
    "filter bank, estimate the phase): it sounds rough even for the original, so compare the "
    "renderings with each other, not with the recording. The 'outliers clipped' version limits "
    "|δ| to its 99th percentile. Perturbations are stored as float16, so x + δ is reproduced to "
    "about three significant digits.")


def examples_section(examples: list[RunExamples], waves: list[WaveExample] | None = None) -> Section:
    """``examples``: one per run; ``[]`` when none were asked for or there are no attack results;
    ``waves``: the waveform attacks' audio, one per run that has any."""
    blocks: list = [Heading(2, "Examples: spectrograms and audio")]
    if not examples and not waves:
        blocks.append(Para("No examples (none asked for, or no attack results)."))
        return Section(blocks)
    if examples:
        blocks.append(Para(_INTRO))
    for ex in examples:
        blocks += _run_blocks(ex)
    for w in waves or []:
        blocks += _wave_blocks(w)
    return Section(blocks)


def _wave_blocks(w: WaveExample) -> list:
    if w.note:
        return [Para(w.note, kind="note")]
    f = w.facts
    who = ", ".join(f"{k} {f[k]}" for k in ("utterance", "speaker", "gender", "emotion") if k in f)
    return [Heading(3, f"{w.run}: attacks on the waveform, segment {w.segment} ({who})",
                    anchor=f"wave-examples-{slug(w.run)}"),
            Table(["attack", "predicted on the written file", "SNR (dB)", "STOI"], w.rows,
                  caption=f"The files below are what the attacker delivers (16-bit PCM), classified through the "
                          f"normal feature pipeline; true emotion {f.get('emotion', '?')}",
                  meta={"kind": "wave_example", "run": w.run, "segment": int(w.segment)}),
            AudioSet(f"Listen: segment {w.segment}, original and attacked waveforms", w.audio,
                     caption="Original and adversarial at their real level; each difference amplified by the "
                             "gain its label states (it is inaudible at its real level when the SNR is high).")]


def _run_blocks(ex: RunExamples) -> list:
    if ex.note:
        return [Para(ex.note, kind="note")]
    sid, f = ex.segment, ex.facts
    blocks: list = [Heading(3, f"{ex.run}: segment {sid} ({f['utterance']}, {f['corpus']} ({f['language']}), "
                               f"speaker {f['speaker']}, true emotion {f['emotion']})",
                            anchor=f"examples-{slug(ex.run)}")]
    for s in ex.spectrograms:
        blocks.append(Image(s.path, f"Segment {sid} ({f['emotion']}): original, {s.attack} ({s.params}, "
                                    f"{s.series}) and their difference; mean |δ| {s.mean_abs_delta:.4g}, "
                                    f"max |δ| {s.max_abs_delta:.3g}."))
    if ex.predicted is not None:
        rows = [[label, pred] for label, pred in zip(ex.labels, ex.predicted)]
        blocks.append(Table(["version", "predicted (re-run of the model)"], rows,
                            caption=f"What the model predicts for each version of segment {sid} "
                                    f"(true: {f['emotion']})",
                            meta={"kind": "example_predictions", "run": ex.run, "segment": int(sid)}))
    if ex.audio is not None:
        blocks.append(AudioSet(f"Listen: segment {sid}", ex.audio,
                               caption=f"Griffin-Lim renderings at {khz(ex.sample_rate)}, one common gain for "
                                       f"all versions."))
    return blocks
