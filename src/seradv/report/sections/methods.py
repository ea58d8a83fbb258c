"""Section "How the statistics were made": robust accuracy, units, intervals, tests, Holm."""

from __future__ import annotations

from seradv import stats
from seradv.report.render import Bullets, Heading
from seradv.report.sections import Section

__all__ = ["methods_section"]


def methods_section(n_boot: int, seed: int) -> Section:
    """``n_boot`` and ``seed``: those of the bootstrap and the permutation tests of this report."""
    return Section([
        Heading(2, "How the statistics were made"),
        Bullets([
            "Robust accuracy (the headline): a sample is robust when it was classified correctly before the "
            "attack, the attack ran on it, and it was classified correctly at every iterate the attack watched "
            "and at the end (seradv.grid.results.robust_flags, the AutoAttack convention). Samples the attack did "
            "not run on are counted as not robust. The study's 'accuracy on adversarial examples' counts a "
            "sample that was wrong before and moved onto the true class as correct; it is shown as a labelled "
            "secondary column only. Results of older runs without robust_accuracy get it from their per-sample "
            "files; where there is none it is 'unavailable', never replaced by the study's accuracy.",
            "The unit: segments of one utterance (and, in the paper split, its augmented copies) are not "
            "independent. Intervals of an accuracy resample speakers on a speaker split with at least "
            f"{stats.MIN_CLUSTERS} test speakers (an interval over new speakers); with fewer speakers, and on "
            "the paper split (speakers shared with training), they resample utterances (an interval over new "
            "utterances of these speakers). The 'CI resamples' column names the unit and the number of clusters.",
            f"Intervals: a percentile bootstrap over the clusters ({n_boot} resamples, seed {seed}), widened at each "
            "end to the Wilson score interval at the design-effect sample size (n / deff, deff from the cluster-robust "
            "variance, at least 1; Student t on clusters - 1 degrees of freedom) where that is wider: the bootstrap "
            "alone is too narrow with few clusters or near 0 and 1. When every sample is 0 (or 1) the exact "
            "Clopper-Pearson interval over the clusters is used (0 of C), so 0/n never gets [0, 0]. A proportion "
            "known only by its counts (no per-sample file) gets Clopper-Pearson over its samples.",
            "Clean versus attacked: the same samples twice, so paired: the drop (clean minus robust accuracy, "
            "the share of samples the attack broke) gets the same cluster interval, and an exact sign test over "
            "the same clusters gives its p-value.",
            "Male versus female, and corpus versus corpus, are comparisons of speakers: the gap's CI resamples "
            "the speakers of each group on their own (bootstrap widened to Newcombe's score interval) and its "
            "p-value comes from a two-sided permutation test that moves whole speakers between the groups "
            f"(exact enumeration up to 5000 arrangements). With fewer than {stats.MIN_GROUP_SPEAKERS} speakers "
            "in a group there is no CI and no test: the gap is shown as descriptive only (with 3 + 3 speakers "
            "the smallest possible p is 0.1). Compared are the robust accuracy and the success rate among "
            "clean-correct attacked samples, not the study's accuracy on adversarial examples.",
            "Several settings and corpora of one attack series are several tests: p (Holm) is adjusted "
            "with Holm-Bonferroni within each series; the sentences use the adjusted values.",
            "Rows of different series (backend art / torch, full test set / seeded subset, attack seed, "
            "early stop) are never averaged; each is reported on its own. The worst-case rows count a "
            "sample as robust only if no Linf attack at that eps fooled it.",
            "Where corpora of different runs are compared, the models differ too (one model per run): a gap "
            "is then a property of corpus and model together, not of the language alone.",
            "The time per cell is the attack's wall time on the machine and device of that run, for all of "
            "its samples (all languages of a run together).",
        ]),
    ])
