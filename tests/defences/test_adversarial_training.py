"""Adversarial training (the study's FGSM defence, and PGD): batches, budget, ratio, pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from seradv import pipeline
from seradv.config import DefenceConfig, RunConfig
from seradv.defences import AdversarialTraining, build_defence, register_defence
from seradv.errors import ConfigError
from tests.helpers.corpus import make_tone_corpus, tone_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(trained, b: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(trained["x"][:b]), torch.from_numpy(trained["y"][:b])


def test_rows_follow_arts_ceil_rule() -> None:
    at = AdversarialTraining("fgsm", 1.25, 0.6, (-5.0, 7.0))
    assert [at.n_adversarial(b) for b in (1, 5, 10, 128, 7)] == [1, 3, 6, 77, 5]
    rows = at.rows(128, torch.Generator().manual_seed(0))
    assert len(rows) == 77 and len(set(rows.tolist())) == 77 and rows.max() < 128
    assert torch.equal(AdversarialTraining("fgsm", 1.0, 1.0, (-5.0, 7.0)).rows(9, torch.Generator()), torch.arange(9))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_batches_respect_budget_ratio_and_clip(trained, attack) -> None:
    model = trained["model"]
    lo, hi = trained["clip"].as_tuple()
    at = AdversarialTraining.from_config(DefenceConfig(kind="adversarial_training", attack=attack, eps=0.5,
                                                       ratio=0.6, steps=5), (lo, hi))
    x, y = _batch(trained)
    model.train()
    bn_before = model.bn.running_mean.clone()
    out = at(model, x, y, torch.Generator().manual_seed(1))
    assert model.training  # back in train mode
    assert torch.equal(model.bn.running_mean, bn_before)  # crafted in eval mode: no BN update
    assert all(p.requires_grad for p in model.parameters())
    changed = (out != x).flatten(1).any(1)
    assert int(changed.sum()) == 6  # ceil(0.6 * 10) rows replaced, the others untouched
    delta = (out - x)[changed]
    assert float(delta.abs().max()) <= 0.5 + 1e-6
    assert float(out.min()) >= lo and float(out.max()) <= hi
    if attack == "fgsm":  # one full signed step wherever the clip box allows it
        assert float((delta.abs() > 0.5 - 1e-6).float().mean()) > 0.9
    model.eval()
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert ce(model(out[changed]), y[changed]) > ce(model(x[changed]), y[changed])
    again = at(model.train(), x, y, torch.Generator().manual_seed(1))
    model.eval()
    assert torch.equal(again, out)  # the same generator state, the same batch


def test_pgd_raises_the_loss_more_than_fgsm(trained) -> None:
    model = trained["model"]
    clip = trained["clip"].as_tuple()
    x, y = _batch(trained, 16)
    gen = torch.Generator().manual_seed(0)
    fgsm = AdversarialTraining("fgsm", 0.3, 1.0, clip, 1, 0.3).craft(model, x, y, gen)
    pgd = AdversarialTraining.from_config(DefenceConfig(kind="adversarial_training", attack="pgd", eps=0.3,
                                                        ratio=1.0, steps=10), clip).craft(model, x, y, gen)
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert ce(model(pgd), y) > ce(model(fgsm), y)


def test_config_errors_are_specific() -> None:
    for changes, msg in (({"defence.ratio": 0.0}, "defence.ratio=0.0 must be in"),
                         ({"defence.attack": "bim"}, "defence.attack='bim'"),
                         ({"defence.eps": -1.0}, "defence.eps=-1.0")):
        with pytest.raises(ConfigError, match=msg):
            RunConfig().replace(**changes)
    with pytest.raises(ConfigError, match="not a registered defence; known: none, adversarial_training"):
        build_defence(DefenceConfig(kind="smoothing"), (-5.0, 7.0))
    with pytest.raises(ConfigError, match="already registered"):
        register_defence("none", lambda cfg, clip: None)
    assert build_defence(DefenceConfig(), (-5.0, 7.0)) is None


def test_a_defended_training_is_saved_keyed_and_resumable(tmp_path) -> None:
    data = make_tone_corpus(tmp_path / "tones", n_per_gender=3, per=2)
    defended = {"defence.kind": "adversarial_training", "defence.eps": 0.5}
    pipeline.prepare_run(tone_config(data, epochs=2), tmp_path / "plain")
    pipeline.train_run(tmp_path / "plain")
    pipeline.prepare_run(tone_config(data, epochs=2).replace(**defended), tmp_path / "at")
    meta = pipeline.train_run(tmp_path / "at")
    assert meta["defence"]["kind"] == "adversarial_training" and meta["defence"]["ratio"] == 0.6
    assert json.loads((tmp_path / "at" / "model.json").read_text())["defence"]["eps"] == 0.5
    plain = (tmp_path / "plain" / "model.safetensors").read_bytes()
    assert (tmp_path / "at" / "model.safetensors").read_bytes() != plain  # same seed, other updates
    # interrupted after one epoch and resumed: the same training, the same weights
    pipeline.prepare_run(tone_config(data, epochs=2).replace(**defended), tmp_path / "resumed")
    pipeline.train_run(tmp_path / "resumed", train_overrides={"epochs": 1})
    pipeline.train_run(tmp_path / "resumed", train_overrides={"epochs": 2})
    a = pipeline.load_model(tmp_path / "at").state_dict()
    b = pipeline.load_model(tmp_path / "resumed").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    np.testing.assert_allclose(
        np.loadtxt(tmp_path / "at" / "history.csv", delimiter=",", skiprows=1, usecols=3),
        np.loadtxt(tmp_path / "resumed" / "history.csv", delimiter=",", skiprows=1, usecols=3), rtol=1e-6)
