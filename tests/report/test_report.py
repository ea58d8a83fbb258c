"""The robustness report: built from a small real run of the synthetic demo corpus, checked
against the results table, for broken references, in a headless browser; and the statistics
functions on known cases."""

from __future__ import annotations

import contextlib
import html
import html.parser
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import tests.helpers.corpus as corpus_helpers  # noqa: F401 - registers the "tiny" model
from seradv import pipeline
from seradv.grid import run as robustness
from seradv.corpora.synthetic import SyntheticConfig, generate_synthetic_corpus
from seradv.errors import ParameterError, RunDirError
from seradv import stats
from seradv.report import build_report
from seradv.report.examples import clip_outliers

N_BOOT = 300


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """A small real run: the demo config on a two-language synthetic corpus, a tiny model,
    FGSM + BIM (torch, full test set) by ``pipeline.run`` (which ends with the report), then
    FGSM + DeepFool with ART on a seeded subset: two series that must never be pooled."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    data = generate_synthetic_corpus(root / "syn", SyntheticConfig(languages=("xa", "xb"), speakers_per_gender=3,
                                                                   utterances_per_emotion=1))
    cfg = pipeline.demo_config().replace(**{
        "data.data_dir": str(data), "augment.enabled": False, "train.model": "tiny", "train.epochs": 15,
        "n_jobs": 1, "attack.attacks": ["fgsm", "bim"], "attack.backend": "torch", "attack.limit": None})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_dir = pipeline.run(cfg, out=root / "run")
    robustness.run_grid(run_dir, attacks=["fgsm", "deepfool"], grid="quick", limit=10, backend="art", trust=False)
    return run_dir, printed.getvalue()


@pytest.fixture(scope="module")
def report(run) -> Path:
    from typer.testing import CliRunner

    from seradv.cli import app

    run_dir, _ = run
    out = run_dir.parent / "rep"
    res = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(out), "--examples", "2", "--boot", str(N_BOOT)])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and "report.html" in res.output
    return out


@pytest.fixture(scope="module")
def combined(run) -> Path:
    """Two runs in one report: a copy of the run, marked as the study's leaky split."""
    run_dir, _ = run
    other = run_dir.parent / "leaky-copy"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("report"))
    info = json.loads((other / "preprocessing.json").read_text())
    info.update(split="paper", leaky=True, leak_note="LEAKY: the study's split (test copy)")
    (other / "preprocessing.json").write_text(json.dumps(info))
    # another preparation record: the copied cells are stale there and are recomputed
    robustness.run_grid(other, attacks=["fgsm", "deepfool"], grid="quick", limit=10, backend="art", trust=False)
    out = run_dir.parent / "combined"
    path = build_report([run_dir, other], out, n_examples=0, n_boot=N_BOOT, embed_images=False)
    assert path == out / "report.html"
    return out


# ------------------------------------------------------------------------------ parsing helpers


def _md_unescape(text: str) -> str:
    """Markdown text back to plain text: backslash escapes, then HTML entities."""
    return html.unescape(re.sub(r"\\(.)", r"\1", text))


def _md_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
    return [_md_unescape(c.strip()) for c in cells]


def md_tables(text: str) -> list[tuple[dict, list[str], list[list[str]]]]:
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("<!-- table "):
            meta = json.loads(line[len("<!-- table "):-len(" -->")])
            header = _md_row(lines[i + 1])
            assert set(lines[i + 2].replace("|", "")) == {"-"}
            rows, j = [], i + 3
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(_md_row(lines[j]))
                j += 1
            out.append((meta, header, rows))
    return out


class _HTMLTables(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list = []
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for k in ("src", "href"):
            if k in a:
                self.refs.append((tag, a[k]))
        if tag == "table":
            self.tables.append([json.loads(a["data-meta"]) if "data-meta" in a else {}, None, []])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if t[1] is None:
                t[1] = self._row
            else:
                t[2].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_parse(text: str) -> _HTMLTables:
    p = _HTMLTables()
    p.feed(text)
    return p


def _series_of_cells(run_dir: Path) -> dict[str, str]:
    """Series label of every cell, rebuilt here from the cell files (independently of the report)."""
    out = {}
    for f in (run_dir / "attacks" / "cells").glob("*.json"):
        c = json.loads(f.read_text())
        if c["subset"] == "all":
            subset = "full test set"
        else:
            subset = f"seeded subset of {json.loads((run_dir / 'attacks' / 'subsets' / (c['subset'] + '.json')).read_text())['limit']}"
        out[c["cell_id"]] = (f"{c['backend']} backend, {subset}, seed {c['seed']}"
                             + (", early stop" if c["facts"].get("early_stop") else ""))
    return out


def _source(label: str) -> tuple[str, str]:
    m = re.fullmatch(r"(.+) \((\w+)\)", label)
    assert m, label
    return m.group(1), m.group(2)


def _first_number(cell: str) -> str:
    return cell.split(" ")[0]


# ------------------------------------------------------------------------------ the report


def test_run_ends_with_the_report_and_prints_its_path(run):
    run_dir, printed = run
    path = run_dir / "report" / "report.html"
    assert path.exists() and (run_dir / "report" / "report.md").exists()
    assert f"report: {path.resolve()}" in printed


def test_split_is_stated_first_and_tables_match_the_results(run, report):
    run_dir, _ = run
    md = (report / "report.md").read_text()
    assert md.index("speaker-independent") < md.index("## Clean performance")
    res = pd.read_csv(run_dir / "attacks" / "results.csv")
    res = res[res["attack"] != "worst_case"]
    series = _series_of_cells(run_dir)
    res["series"] = res["cell_id"].map(series)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    tables = md_tables(md)
    kinds = [m["kind"] for m, _, _ in tables]
    assert {"runs", "clean", "clean_gender", "confusion", "attack", "attack_ci", "gender_gap", "corpus_gap",
            "strongest"} <= set(kinds)
    # one study-layout table per attack x series: FGSM twice (torch full set, ART subset), never pooled
    attack_tables = [(m["attack"], m["series"]) for m, _, _ in tables
                     if m["kind"] == "attack" and m["attack"] != "worst_case"]
    # the worst case (its own rows, checked in test_robustness) has its tables too, never the cells' series
    assert any(m["kind"] == "attack" and m["attack"] == "worst_case" for m, _, _ in tables)
    assert sorted(attack_tables) == sorted(set(zip(res["attack"], res["series"])))
    assert sum(a == "fgsm" for a, _ in attack_tables) == 2
    checked = 0
    for meta, header, rows in tables:
        if meta.get("attack") == "worst_case":
            continue
        if meta["kind"] == "clean":
            for r in rows:
                corpus, lang = _source(r[0])
                m = metrics[(metrics.corpus == corpus) & (metrics.language == lang) & (metrics.group == r[1])].iloc[0]
                assert int(r[2]) == m["n"]
                assert _first_number(r[3]) == f"{m['accuracy']:.3f}" and r[4] == f"{m['uar']:.3f}"
                assert r[5] == f"{m['macro_f1']:.3f}"
                checked += 1
        if meta["kind"] == "attack":
            part = res[(res.attack == meta["attack"]) & (res.series == meta["series"])]
            assert [r[0] for r in rows[:2]] == ["n (samples)", "clean (same samples)"]
            for r in rows:
                for k, col in enumerate(header[1:], start=1):
                    if col.startswith("time"):
                        if r[0] not in ("clean (same samples)", "n (samples)"):
                            t = part[part.params == r[0]]["seconds"].iloc[0]
                            assert r[k] == f"{t:.3g}"
                        continue
                    for marker, key, fmt in ((" robust accuracy ", "robust_accuracy", "{:.3f}"),
                                             (" accuracy on adversarial examples, as the study ", "adv_accuracy",
                                              "{:.3f}"),
                                             (" mean |δ| ", "mean_abs_delta", "{:.4g}")):
                        if marker in col:
                            source = col.split(marker)[0]
                            break
                    else:
                        raise AssertionError(col)
                    corpus, lang = _source(source)
                    sel = part[(part.corpus == corpus) & (part.language == lang)]
                    if r[0] in ("clean (same samples)", "n (samples)"):
                        if key != "robust_accuracy":
                            assert r[k] == "–"
                            continue
                        col_, f_ = ("clean_accuracy", "{:.3f}") if r[0].startswith("clean") else ("n", "{:d}")
                        vals = [f_.format(sel[sel.group == g][col_].iloc[0]) for g in ("All", "Male", "Female")]
                    else:
                        s = sel[sel.params == r[0]]
                        vals = [fmt.format(s[s.group == g][key].iloc[0]) for g in ("All", "Male", "Female")]
                    assert r[k] == " / ".join(vals), (meta, r[0], col)
                    checked += 1
        if meta["kind"] == "attack_ci":
            part = res[(res.attack == meta["attack"]) & (res.series == meta["series"])]
            col = {c: i for i, c in enumerate(header)}
            for r in rows:
                corpus, lang = _source(r[1])
                x = part[(part.params == r[0]) & (part.corpus == corpus) & (part.language == lang) & (part.group == r[2])]
                assert len(x) == 1 and int(r[3]) == x["n"].iloc[0]
                assert _first_number(r[col["clean accuracy [95% CI]"]]) == f"{x['clean_accuracy'].iloc[0]:.3f}"
                for name, key in (("robust accuracy [95% CI]", "robust_accuracy"),
                                  ("accuracy on adversarial examples, as the study [95% CI]", "adv_accuracy")):
                    cell, v = r[col[name]], x[key].iloc[0]
                    assert _first_number(cell) == f"{v:.3f}"
                    lo, hi = map(float, re.findall(r"\[(.+), (.+)\]", cell)[0])
                    assert lo <= v + 1e-9 and v <= hi + 1e-9 and hi > lo
                assert re.fullmatch(r"(speakers|utterances|segments) \(\d+\)", r[col["CI resamples"]])
                checked += 1
        if meta["kind"] == "gender_gap":
            part = res[(res.attack == meta["attack"]) & (res.series == meta["series"])]
            for r in rows:
                corpus, lang = _source(r[1])
                x = part[(part.params == r[0]) & (part.corpus == corpus) & (part.language == lang)].set_index("group")
                assert r[4] == f"{x.loc['Male', 'robust_accuracy']:.3f}"
                assert r[5] == f"{x.loc['Female', 'robust_accuracy']:.3f}"
                gap = float(_first_number(r[6]))
                assert gap == pytest.approx(x.loc["Male", "robust_accuracy"] - x.loc["Female", "robust_accuracy"], abs=1e-3)
                # one test speaker per gender: no CI, no test, the gap marked descriptive
                assert r[2] == "1/1" and r[6].endswith("(descriptive)") and r[7] == "–"
                checked += 1
        if meta["kind"] == "corpus_gap":
            part = res[(res.attack == meta["attack"]) & (res.series == meta["series"]) & (res.group == "All")]
            for r in rows:
                a, b = r[1].split(" − ")
                for label, cell in ((a, r[4]), (b, r[5])):
                    corpus, lang = _source(label)
                    x = part[(part.params == r[0]) & (part.corpus == corpus) & (part.language == lang)]
                    assert cell == f"{x['robust_accuracy'].iloc[0]:.3f}"
                assert r[9] == "same model"  # both languages come from one run
                checked += 1
    assert checked > 50
    # a sentence per attack series on the gender gap; with one speaker per gender no claim is made
    assert md.count("no inferential male-female claim") >= len(attack_tables)
    assert "significant at 5 % in" not in md.split("## How the statistics")[0].replace("no inferential", "")
    assert "Fisher" not in md and "exact sign test over the" in md
    assert md.count("accuracy on adversarial examples, as the study") >= len(attack_tables)
    # no raw HTML in the Markdown but the table comments
    assert not re.findall(r"<(?!!-- table )[A-Za-z/!]", md)


def test_html_has_the_same_tables_and_no_broken_references(report):
    md = (report / "report.md").read_text()
    page = (report / "report.html").read_text()
    parsed = html_parse(page)
    assert [(m, h, r) for m, h, r in parsed.tables if m] == md_tables(md)
    assert not re.search(r"(https?:)?//[a-z]", re.sub(r'data:[^"]+', "", page)), "no network references"
    images = [v for t, v in parsed.refs if t == "img"]
    audios = [v for t, v in parsed.refs if t == "audio"]
    assert len(images) >= 8 and all(v.startswith("data:image/png;base64,") for v in images)
    assert len(audios) == 5  # original + (adversarial, clipped) x 2 attacks
    for t, v in parsed.refs:
        if v.startswith("#"):
            assert v[1:] in parsed.ids, v
        elif not v.startswith("data:"):
            assert (report / v).is_file(), v
    for v in audios:
        info = sf.info(str(report / v))
        assert info.samplerate == 16000 and 2.8 < info.duration < 3.2
        y, _ = sf.read(str(report / v))
        assert np.abs(y).max() > 0.01
    # Markdown: every linked figure and audio file exists
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert any(v.startswith("figures/") for v in links) and any(v.startswith("audio/") for v in links)
    for v in links:
        assert (report / v).is_file(), v
        if v.endswith(".png"):
            assert (report / v).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "stats" / "attacks.csv").exists()


def test_combined_report_labels_runs_and_says_models_differ(combined):
    md = (combined / "report.md").read_text()
    assert md.index("LEAKY") < md.index("## Clean performance")
    assert "synthetic (xa) [run]" in md and "synthetic (xa) [leaky-copy]" in md
    assert "the models differ too" in md
    gaps = [r for m, _, rows in md_tables(md) if m["kind"] == "corpus_gap" for r in rows]
    assert any(r[9] == "different models" for r in gaps) and any(r[9] == "same model" for r in gaps)
    parsed = html_parse((combined / "report.html").read_text())
    imgs = [v for t, v in parsed.refs if t == "img"]
    assert imgs and all((combined / v).is_file() for v in imgs)  # linked, not embedded


def test_old_results_without_robust_accuracy(run, tmp_path):
    """Rows written before robust accuracy existed: it comes from the per-sample files, never the
    study's accuracy in its place; a cell whose per-sample file is gone is left out, and said so."""
    run_dir, _ = run
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("report", "adv"))
    cells = sorted((old / "attacks" / "cells").glob("*.json"))
    for f in cells:
        c = json.loads(f.read_text())
        for r in c["rows"]:
            for k in ("robust_accuracy", "n_clean_correct", "n_not_attacked"):
                r.pop(k, None)
        f.write_text(json.dumps(c))
        path = old / "attacks" / "cells" / f"{c['cell_id']}.samples.csv"
        pd.read_csv(path).drop(columns=["attacked", "fooled_any", "robust"], errors="ignore").to_csv(path, index=False)
    gone = json.loads(cells[0].read_text())["cell_id"]
    (old / "attacks" / "cells" / f"{gone}.samples.csv").unlink()
    build_report(old, tmp_path / "rep", n_examples=0, n_boot=100)
    st = pd.read_csv(tmp_path / "rep" / "stats" / "attacks.csv")
    have = st[st["attack"] != "worst_case"]
    assert len(have) and (have["robust_from"] == "per-sample file").all()
    assert (have["robust_accuracy"] <= have["adv_accuracy"] + 1e-12).all()
    assert (have["robust_accuracy"] <= have["clean_accuracy"] + 1e-12).all()
    assert gone not in set(st["cell_id"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert gone in md and "left out" in md


def test_report_errors_are_clear(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(RunDirError, match="not a prepared run directory"):
        build_report(tmp_path)


# ------------------------------------------------------------------------------ statistics


def test_names_from_data_are_escaped():
    from seradv.report.render import Heading, Para, Table, to_html, to_markdown

    evil = '<img src=x onerror=alert(1)> [x](javascript:alert(1)) --> *a*'
    blocks = [Heading(2, evil), Para(evil), Table(["speaker"], [[evil]], caption=evil, meta={"source": evil})]
    md = to_markdown(blocks)
    assert "<img" not in md and md.count("-->") == 1  # only the comment's end
    shown = "\n".join(line for line in md.splitlines() if not line.startswith("<!-- table "))
    assert not re.search(r"(?<!\\)\]\(", shown)  # no link: every "]" before "(" is escaped
    meta, header, rows = md_tables(md)[0]
    assert meta == {"source": evil} and rows == [[evil]]
    page = to_html(blocks, title=evil, root=Path("."))
    assert "<img" not in page and html_parse(page).tables[0][2] == [[evil]]


def test_bootstrap_ci_known_cases():
    ones = stats.bootstrap_ci(np.ones(40))
    assert (ones.value, ones.lo, ones.hi) == (1.0, 1.0, 1.0)
    half = stats.bootstrap_ci(np.tile([0, 1], 50), n_boot=4000)
    assert half.value == 0.5
    # the normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598]
    assert half.lo == pytest.approx(0.402, abs=0.02) and half.hi == pytest.approx(0.598, abs=0.02)
    assert stats.bootstrap_ci(np.tile([0, 1], 50), seed=3) == stats.bootstrap_ci(np.tile([0, 1], 50), seed=3)
    # a proportion known by its counts: the exact interval (never [0, 0] for 0/n)
    assert (stats.proportion_ci(30, 100).lo, stats.proportion_ci(30, 100).hi) == pytest.approx(stats.clopper_pearson(30, 100))
    assert stats.proportion_ci(0, 64).hi == pytest.approx(1 - 0.025 ** (1 / 64))
    assert stats.bootstrap_ci([]).fmt() == "n/a"
    assert half.fmt() == f"0.500 [{half.lo:.3f}, {half.hi:.3f}]"
    with pytest.raises(ParameterError, match="n_boot"):
        stats.bootstrap_ci([1, 0], n_boot=0)
    with pytest.raises(ParameterError, match="level"):
        stats.bootstrap_ci([1, 0], level=1.5)


def test_gap_between_identical_groups_is_zero():
    x = np.tile([1, 1, 0, 1, 0], 30)
    gap = stats.gap_ci(x, x)
    assert gap.value == 0.0 and gap.lo < 0 < gap.hi
    assert gap.lo == pytest.approx(-gap.hi, abs=0.03)
    assert stats.fisher_exact_gap(x, x) == 1.0
    assert stats.permutation_gap(x, x, n_perm=500) == 1.0
    paired = stats.paired_diff_ci(x, x)
    assert (paired.value, paired.lo, paired.hi) == (0.0, 0.0, 0.0)
    assert stats.mcnemar_exact(x, x) == 1.0


def test_tests_on_known_tables():
    # McNemar: 10 discordant pairs all one way -> p = 2 * 0.5 ** 10
    before, after = np.r_[np.ones(10), np.ones(5), np.zeros(5)], np.r_[np.zeros(10), np.ones(5), np.zeros(5)]
    assert stats.mcnemar_exact(before, after) == pytest.approx(2 * 0.5**10)
    # Fisher's tea tasting: [[3, 1], [1, 3]] -> two-sided p = 34/70
    a, b = np.r_[np.ones(3), np.zeros(1)], np.r_[np.ones(1), np.zeros(3)]
    assert stats.fisher_exact_gap(a, b) == pytest.approx(34 / 70)
    # clearly different groups: small p from both tests, gap CI away from 0
    hi, lo = np.r_[np.ones(45), np.zeros(5)], np.r_[np.ones(10), np.zeros(40)]
    assert stats.fisher_exact_gap(hi, lo) < 1e-6 and stats.permutation_gap(hi, lo, n_perm=2000) < 0.001
    g = stats.gap_ci(hi, lo)
    assert g.value == pytest.approx(0.7) and g.lo > 0.5
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    with pytest.raises(ParameterError, match="same length"):
        stats.mcnemar_exact([1, 0], [1])


def test_clip_outliers_limits_the_extremes():
    d = np.zeros(1000, np.float32)
    d[:990] = np.linspace(-0.1, 0.1, 990)
    d[990:] = 50.0
    c, limit = clip_outliers(d)
    assert limit < 1 and np.abs(c).max() == pytest.approx(limit) and np.array_equal(c[:900], d[:900])
    sparse = np.zeros(1000, np.float32)
    sparse[:3] = [1.0, -2.0, 5.0]
    c, limit = clip_outliers(sparse)
    assert 0 < limit <= 5.0 and np.count_nonzero(c) == 3


# ------------------------------------------------------------------------------ the summary


def _section(md: str, heading: str) -> str:
    """The Markdown of one level-2 section, up to the next."""
    start = md.index(f"## {heading}\n")
    nxt = md.find("\n## ", start + 3)
    return md[start:] if nxt < 0 else md[start:nxt]


def test_summary_comes_first_with_its_figure_and_sentences(report, combined):
    for folder in (report, combined):
        md = (folder / "report.md").read_text()
        headings = [line for line in md.splitlines() if line.startswith("## ")]
        assert headings[0] == "## Summary", headings[:3]
        assert md.index("## Summary") < md.index("Made by seradv")  # before everything but the title
        summary = _section(md, "Summary")
        assert "](figures/summary.png)" in summary and (folder / "figures" / "summary.png").stat().st_size > 0
        assert "- Which attacks hurt most: at their strongest settings, " in summary
        assert "- Male versus female" in summary
        assert "<!-- table" not in summary  # no table in the summary: its numbers are in stats/summary.csv
        assert (folder / "stats" / "summary.csv").exists()
        page = (folder / "report.html").read_text()
        assert page.index('<h2 id="summary">') < page.index("<nav>")  # the contents come after the summary
    combined_md = (combined / "report.md").read_text()
    assert "Leaky (paper split) versus speaker-independent: clean accuracy" in _section(combined_md, "Summary")
    # two runs of one corpus: no language comparison between them
    assert "one corpus (" in _section(combined_md, "Summary") and "so no language comparison" in combined_md


def test_summary_refuses_a_gender_claim_with_fewer_than_three_speakers():
    from seradv.report.analysis import speaker_gap
    from seradv.report.sections.summary import summary_sentences

    chosen = pd.DataFrame([{"attack": "fgsm", "series": "s", "run": "r", "source": "c (xa)", "cell_id": "fgsm-1",
                            "params": "eps=1", "params_json": "{}", "corpus": "c", "language": "xa", "n": 40,
                            "robust_accuracy": 0.2, "robust_lo": 0.1, "robust_hi": 0.3, "clean_accuracy": 0.5}])
    rng = np.random.default_rng(0)

    def gaps(n_spk: int) -> pd.DataFrame:
        spk_m, spk_f = np.repeat([f"m{i}" for i in range(n_spk)], 8), np.repeat([f"f{i}" for i in range(n_spk)], 8)
        g = speaker_gap(rng.random(len(spk_m)) < 0.7, spk_m, rng.random(len(spk_f)) < 0.2, spk_f,
                        labels=("male", "female"), n_boot=200, n_perm=200)
        return pd.DataFrame([{"run": "r", "cell_id": "fgsm-1", "source": "c (xa)", "attack": "fgsm", "series": "s",
                              "p_holm": g["p_perm"], **g}])

    refused = summary_sentences([], chosen, gaps(2), pd.DataFrame(), pd.DataFrame())
    gender = next(t for t in refused if t.startswith("Male versus female"))
    assert f"no inferential claim: fewer than {stats.MIN_GROUP_SPEAKERS} speakers per gender" in gender
    tested = next(t for t in summary_sentences([], chosen, gaps(4), pd.DataFrame(), pd.DataFrame())
                  if t.startswith("Male versus female"))
    assert "no inferential claim" not in tested and "tested comparison" in tested


def test_perturbation_profiles_equal_a_direct_numpy_computation(run, report):
    run_dir, _ = run
    prof = pd.read_csv(report / "stats" / "perturbation_profiles.csv")
    assert not prof.empty and {"band", "time"} == set(prof["axis"])
    chosen = pd.read_csv(report / "stats" / "summary.csv")
    checked = 0
    for (attack, source, gender), part in prof.groupby(["attack", "source", "gender"]):
        cell = chosen.loc[(chosen["attack"] == attack) & (chosen["source"] == source), "cell_id"].iloc[0]
        samples = pd.read_csv(run_dir / "attacks" / "cells" / f"{cell}.samples.csv")
        delta = np.load(run_dir / "attacks" / "adv" / f"{cell}.npy")
        corpus, language = _source(source)
        sel = ((samples["corpus"] == corpus) & (samples["language"] == language) & (samples["gender"] == gender)
               & samples["attacked"].astype(bool)).to_numpy()
        band = np.abs(delta[sel].astype(np.float64)).mean(axis=(0, 1))
        frame = np.abs(delta[sel].astype(np.float64)).mean(axis=(0, 2))
        got_b = part[part["axis"] == "band"].sort_values("index")["mean_abs_delta"].to_numpy()
        got_t = part[part["axis"] == "time"].sort_values("index")["mean_abs_delta"].to_numpy()
        np.testing.assert_allclose(got_b, band, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got_t, frame, rtol=1e-9, atol=1e-12)
        assert int(part["n"].iloc[0]) == int(sel.sum())
        # the report's table: the mean of each quarter of the bands
        rows = [r for meta, cols, rs in md_tables((report / "report.md").read_text())
                if meta.get("kind") == "perturbation_bands" for r in rs]
        row = next(r for r in rows if r[:3] == [attack, source, {"m": "male", "f": "female"}[gender]])
        q1 = np.array_split(band, 4)[0].mean()
        assert row[4] == f"{q1:.4g}"
        checked += 1
    assert checked >= 2
    assert (report / "figures").glob("perturbation-*.png")


def test_training_details_table_reads_model_json(run, report):
    run_dir, _ = run
    meta = json.loads((run_dir / "model.json").read_text())
    [(m, cols, rows)] = [t for t in md_tables((report / "report.md").read_text()) if t[0].get("kind") == "training"]
    facts = {r[0]: r[1] for r in rows}
    assert cols[1] == run_dir.name
    assert facts["epochs run"] == str(meta["epochs_run"])
    assert facts["best epoch (kept)"] == str(meta["best_epoch"])
    assert facts["stopped early"] == ("yes" if meta["stopped_early"] else "no")
    assert facts["training segments"] == str(meta["n_train"])
    assert facts["validation segments"] == str(meta["n_val"])
    assert "seeded subset of 10" in facts["attacked samples"] and "full test set" in facts["attacked samples"]
    assert facts["defence (training)"] == "none"
    if meta.get("peak_memory_mib") is not None:  # Linux: the training's resident peak, reset at its start
        assert meta["peak_memory_mib"] > 50
        assert facts["peak memory, training (MiB)"] == f"{meta['peak_memory_mib']:,.0f}"


def test_defence_labels():
    from seradv.report.analysis import defence_label

    assert defence_label(None) == defence_label({"kind": "none"}) == "none"  # also models from before defences
    assert defence_label({"kind": "adversarial_training", "attack": "fgsm", "eps": 1.25, "ratio": 0.6,
                          "steps": 10}) == "adversarial training: fgsm, eps 1.25, ratio 0.6"
    assert defence_label({"kind": "adversarial_training", "attack": "pgd", "eps": 0.5, "ratio": 1.0,
                          "steps": 7}).endswith("ratio 1, 7 steps")


def test_strongest_setting_is_the_same_in_the_own_and_the_combined_report(run, report, combined):
    run_dir, _ = run
    own = pd.read_csv(report / "stats" / "strongest.csv")
    both = pd.read_csv(combined / "stats" / "strongest.csv")
    both = both[both["run"] == run_dir.name]
    key = ["attack", "series", "corpus", "language"]  # the source label gains "[run]" in the combined report
    merged = own.merge(both, on=key, suffixes=("_own", "_both"))
    assert len(merged) == len(own) > 0
    assert (merged["params_own"] == merged["params_both"]).all()


# ------------------------------------------------------------------------------ a real browser


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the headless-browser test needs the Debian packages chromium and chromium-driver "
                    "(`make browser` installs them where apt-get is available); chromium or chromedriver "
                    "is not on PATH")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("the headless-browser test needs selenium (pip install -e '.[test]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--window-size=1280,1600", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_report_renders_in_headless_chromium(report, combined, tmp_path):
    from matplotlib.image import imread

    driver = _browser()
    try:
        for folder in (report, combined):
            driver.get((folder / "report.html").resolve().as_uri())
            assert driver.execute_script("return document.readyState") == "complete"
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            assert images and all(done and width > 0 for done, width in images), images
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
            # the summary fits the page: no horizontal overflow of the page or of a block in the summary
            overflow = driver.execute_script("""
                const h = document.getElementById('summary');
                const out = [];
                if (document.documentElement.scrollWidth > window.innerWidth) out.push('page');
                for (let e = h.nextElementSibling; e && e.tagName !== 'H2' && e.tagName !== 'NAV';
                     e = e.nextElementSibling)
                  if (e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > window.innerWidth)
                    out.push(e.tagName);
                return out;""")
            assert overflow == [], overflow
            shot = tmp_path / f"{folder.name}.png"
            assert driver.save_screenshot(str(shot))
            px = imread(str(shot))[..., :3]
            assert px.std() > 0.05, "blank screenshot"
            assert (px < 0.9).any(axis=-1).mean() > 0.01, "screenshot has (almost) nothing drawn"
        # the audio players can load their files (Chromium decodes the wav headers)
        driver.get((report / "report.html").resolve().as_uri())
        states = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const els = Array.from(document.querySelectorAll('audio'));
            els.forEach(a => { a.preload = 'metadata'; a.load(); });
            const t0 = Date.now();
            (function poll() {
              if (els.every(a => a.readyState >= 1 || a.error) || Date.now() - t0 > 10000)
                done(els.map(a => [a.readyState, a.error ? a.error.code : 0, a.duration]));
              else setTimeout(poll, 100);
            })();""")
        assert states and all(r >= 1 and err == 0 and 2.8 < dur < 3.2 for r, err, dur in states), states
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
