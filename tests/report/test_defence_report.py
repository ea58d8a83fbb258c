"""The report's "Defended vs undefended" section: a defended tone model beside the undefended
one of the same corpus and split, the study's defence table beside ours."""

from __future__ import annotations

import pytest

from tests.helpers.corpus import make_tone_corpus, tone_config
from seradv import pipeline
from seradv.grid.run import run_grid
from seradv.report import build_report
from seradv.report.study import study_defence_figure

pytestmark = pytest.mark.usefixtures("one_thread")


def test_defended_beside_undefended(tmp_path):
    data = make_tone_corpus(tmp_path / "tones", n_per_gender=3, per=2)
    defended = {"defence": {"kind": "adversarial_training", "attack": "fgsm", "eps": 0.5, "ratio": 0.5}}
    runs = {"plain": tone_config(data, epochs=3), "at": tone_config(data, epochs=3).replace(**defended)}
    for name, cfg in runs.items():
        pipeline.prepare_run(cfg, tmp_path / name)
        pipeline.train_run(tmp_path / name)
        pipeline.evaluate_run(tmp_path / name)
        run_grid(tmp_path / name, attacks=["fgsm"], grid="quick", backend="torch", limit=6, seed=0)
    page = build_report([tmp_path / "plain", tmp_path / "at"], tmp_path / "report", n_examples=0, audio=False,
                        n_boot=20)
    text = page.with_suffix(".md").read_text()
    assert "## Defended vs undefended" in text
    section = text.split("## Defended vs undefended")[1].split("\n## ")[0]
    assert "at (adversarial training: fgsm, eps 0.5, ratio 0.5) against plain (undefended)" in section
    assert "fgsm eps=0.25" in section and "fgsm eps=1" in section and "clean (no attack)" in section
    assert "Trust checks" in section or "Every trust check passes" in section
    # a report of the undefended run alone has no such section
    alone = build_report(tmp_path / "plain", tmp_path / "r2", n_examples=0, audio=False, n_boot=20)
    assert "Defended vs undefended" not in alone.with_suffix(".md").read_text()


def test_study_defence_figures_match_labels():
    assert study_defence_figure("emodb", "fgsm", "eps=1.25") == 0.785
    assert study_defence_figure("emodb", "jsma", "theta=1, gamma=1") == 0.025
    assert study_defence_figure("emovo", "cw_linf", "default") == 0.061
    assert study_defence_figure("emodb", "clean", "") == 0.915
    assert study_defence_figure("emodb", "fgsm", "eps=0.3") is None
    assert study_defence_figure("tones", "fgsm", "eps=0.25") is None
