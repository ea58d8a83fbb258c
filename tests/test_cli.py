"""The command line: one-line errors (no tracebacks), options checked before anything is written,
``--version``, ``attack --list`` without a run directory, progress lines and full-width tables
outside a terminal. Fast: nothing is trained; the pipeline stages are replaced where needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from seradv import cli, pipeline, progress
from seradv.config import RunConfig, load_config, save_config

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


def assert_one_line_error(res, *needles: str, code: int = 2) -> str:
    """Exit code 2, exactly one ``error: ...`` line on stderr naming every needle, no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture()
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A folder with only a config.yaml: enough for the checks that come before any work."""
    d = tmp_path / "run"
    d.mkdir()
    save_config(RunConfig(name="run"), d / "config.yaml")
    return d


# ------------------------------------------------------------------------------ defect 1: configs


@pytest.mark.parametrize(
    "content, needles",
    [
        (b"name: x\ntrain:\n  epochs: 3\n  bad: [\n", ["c.yaml, line 5, column 1", "not valid YAML"]),
        (b"name: x\ntrain: {epochs: 3\n", ["c.yaml, line 3", "expected ',' or '}'", "began on line 2"]),
        (b"name: x\ntrain:\n\tepochs: 3\n", ["c.yaml, line 3", "not valid YAML", "check the indentation"]),
        (b"name: caf\xe9\n", ["c.yaml, line 1", "not UTF-8", "save the file with UTF-8"]),
        (b"augment: {pitch_steps: [a, 1]}\n", ["c.yaml", "augment.pitch_steps[0] must be a number, got 'a'"]),
        (b"train: {threads: -2}\n", ["c.yaml", "train.threads=-2 must be a positive integer"]),
        (b"train: {device: gpu}\n", ["c.yaml", "train.device='gpu' is not a device; use cpu, cuda"]),
        (b"attack: {seed: -1}\n", ["c.yaml", "attack.seed=-1 must be an integer >= 0"]),
        (b"trian: {epochs: 3}\n", ["c.yaml", "unknown config key(s) trian", "known: name, data"]),
    ],
)
@pytest.mark.parametrize("verb", ["run", "prepare"])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, content, needles, verb):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    args = ["run", "-c", cfg, "-o", tmp_path / "r"] if verb == "run" else ["prepare", "synthetic", "-c", cfg, "-o", tmp_path / "r"]
    assert_one_line_error(invoke(*args), *needles)
    assert not (tmp_path / "r").exists()


def test_missing_config_file_is_one_line(tmp_path):
    assert_one_line_error(invoke("run", "-c", tmp_path / "nope.yaml"), "nope.yaml does not exist", "--config")
    assert_one_line_error(invoke("run", "-c", tmp_path), "is a folder, not a file")


def test_attack_seed_and_numbers_are_checked(run_dir):
    assert_one_line_error(invoke("attack", run_dir, "--seed", "-1"), "--seed -1 must be an integer >= 0")
    assert_one_line_error(invoke("attack", run_dir, "--limit", "0"), "--limit 0 must be a positive")
    assert_one_line_error(invoke("attack", run_dir, "--per-speaker", "0"), "--per-speaker 0 must be a positive")
    assert_one_line_error(invoke("attack", run_dir, "--limit", "8", "--per-speaker", "4"), "not both")
    assert_one_line_error(invoke("attack", run_dir, "--batch-size", "0"), "--batch-size 0 must be a positive integer")
    assert_one_line_error(invoke("attack", run_dir, "--grid", "big"), "--grid 'big' must be one of 'paper', 'quick', 'standard'")
    assert_one_line_error(invoke("attack", run_dir, "--attacks", " , "), "names no attack", "seradv attack --list")
    assert_one_line_error(invoke("report", run_dir, "--seed", "-3"), "--seed -3 must be an integer >= 0")
    assert_one_line_error(invoke("report", run_dir, "--boot", "0"), "--boot 0 must be a positive")


@pytest.mark.parametrize("verb", ["evaluate", "attack"])
def test_cuda_without_cuda_is_one_line(run_dir, no_cuda, verb):
    assert_one_line_error(invoke(verb, run_dir, "--device", "cuda"),
                          "--device cuda: CUDA is not available on this machine; use --device cpu")
    assert_one_line_error(invoke(verb, run_dir, "--device", "cuda:1"), "CUDA is not available")
    assert_one_line_error(invoke(verb, run_dir, "--device", "gpu"),
                          "--device 'gpu' is not a device; use cpu, cuda, cuda:N")


def test_auto_device_resolves(no_cuda):
    assert cli._resolve_device("auto") == "cpu"
    assert cli._resolve_device("cpu") == "cpu"


def test_demo_run_checks_devices_before_any_work(tmp_path, no_cuda, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("prepare must not start")

    monkeypatch.setattr(pipeline, "prepare_run", boom)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("attack: {device: cuda}\n")
    assert_one_line_error(invoke("run", "-c", cfg, "-o", tmp_path / "r"), "CUDA is not available")
    cfg.write_text("attack: {attacks: [fgsm, nosuch]}\n")
    assert_one_line_error(invoke("run", "-c", cfg, "-o", tmp_path / "r"), "nosuch")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------ bad paths


def test_missing_run_dir_is_one_line(tmp_path):
    missing = tmp_path / "nope"
    for verb in ("train", "evaluate", "attack", "report"):
        assert_one_line_error(invoke(verb, missing), f"run directory {missing} does not exist",
                              f"seradv prepare CORPUS -o {missing}")
    assert_one_line_error(invoke("train", tmp_path), "no config.yaml")


def test_missing_data_dir_is_one_line(tmp_path):
    assert_one_line_error(invoke("manifest", "emodb", "-d", tmp_path / "nope", "-o", tmp_path / "m.csv"),
                          "does not exist")
    assert_one_line_error(invoke("prepare", "emodb", "-d", tmp_path / "nope", "-o", tmp_path / "r"),
                          "does not exist")
    assert not (tmp_path / "r").exists()


def test_output_paths_of_the_wrong_kind_are_one_line(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert_one_line_error(invoke("manifest", "synthetic", "-o", tmp_path), "is a folder; give a CSV file name")
    assert_one_line_error(invoke("prepare", "synthetic", "-o", tmp_path / "f.txt"), "is a file; give a folder")


def test_installed_script_prints_one_line_errors(tmp_path):
    exe = Path(sys.executable).with_name("seradv")
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"augment: {pitch_steps: [a, 1]}\n")
    proc = subprocess.run([str(exe), "run", "-c", str(bad)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "40"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "augment.pitch_steps[0]" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ------------------------------------------------------------------------------ defect 2: train options


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--threads", "-2"], "--threads -2 must be a positive integer"),
        (["--epochs", "0"], "--epochs 0 must be a positive integer"),
    ],
)
def test_train_rejects_bad_options_before_saving(run_dir, no_cuda, args, needle):
    before = (run_dir / "config.yaml").read_bytes()
    assert_one_line_error(invoke("train", run_dir, *args), needle)
    assert (run_dir / "config.yaml").read_bytes() == before
    assert load_config(run_dir / "config.yaml").train.device == "cpu"


def test_train_names_a_bad_device_saved_earlier(run_dir, no_cuda):
    save_config(RunConfig(name="run").replace(**{"train.device": "cuda"}), run_dir / "config.yaml")
    line = assert_one_line_error(invoke("train", run_dir), "config.yaml: train.device='cuda'", "--device cpu")
    assert "CUDA is not available" in line


# ------------------------------------------------------------------------------ defect 3: attack --list


def test_attack_list_needs_no_run_dir_and_shows_grids():
    from seradv.attacks import ATTACKS

    res = invoke("attack", "--list")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for spec in ATTACKS.values():
        assert f"{spec.name}: {spec.title}" in out
        for p in spec.params:
            assert f"  {p.name} = {p.default!r}" in out
    assert out.count("quick grid (") == len(ATTACKS)
    assert out.count("paper grid (") == sum("paper" in s.grid_names for s in ATTACKS.values())
    assert out.count("standard grid (3 parameter sets)") == 2  # the waveform attacks
    assert "pgd_snr_wave: SNR-PGD on the waveform" in out and "[white-box, l2, on the waveform]" in out
    assert "backends: art, torch (default torch)" in out
    assert "\n    eps=0.25\n    eps=0.5\n" in out  # FGSM's paper grid, one set per line
    assert "theta=1, gamma=0.02" in out  # JSMA's quick grid


def test_attack_list_of_chosen_attacks_and_unknown_names():
    res = invoke("attack", "--list", "--attacks", "fgsm")
    assert res.exit_code == 0 and res.stdout.startswith("fgsm:") and "bim:" not in res.stdout
    assert_one_line_error(invoke("attack", "--list", "--attacks", "fgsm,nosuch"), "nosuch")
    assert_one_line_error(invoke("attack"), "needs RUN_DIR", "--list")


def test_attack_params_option_is_passed_to_run_grid(run_dir, monkeypatch):
    import seradv.grid.run as robustness

    seen = {}

    def fake_run_grid(run_dir, **kw):
        seen.update(kw)
        return pd.DataFrame()

    monkeypatch.setattr(robustness, "run_grid", fake_run_grid)
    monkeypatch.setattr(cli, "_run_grid_takes", lambda name: True)
    res = invoke("attack", run_dir, "--attacks", "fgsm", "--params", "eps=0.3")
    assert res.exit_code == 0, res.output
    assert seen["params"] == "eps=0.3" and seen["attacks"] == ["fgsm"] and seen["device"] == "cpu"
    seen.clear()
    res = invoke("attack", run_dir, "--attacks", "fgsm", "--device", "auto")
    assert res.exit_code == 0 and "params" not in seen and seen["device"] in ("cpu", "cuda")
    monkeypatch.setattr(cli, "_run_grid_takes", lambda name: False)
    assert_one_line_error(invoke("attack", run_dir, "--params", "eps=0.3"), "--params is not supported")


# ------------------------------------------------------------------------------ defect 4: --version


def test_version():
    from importlib.metadata import version

    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"seradv {version('seradv')}"
    import seradv

    assert seradv.__version__ == version("seradv")


# ------------------------------------------------------------------------------ defect 5: progress


def test_line_progress_prints_at_a_sane_rate(capsys, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with progress.LineProgress(interval_s=10) as prog:
        task = prog.add_task("features", total=535, status="")
        for _ in range(535):
            clock[0] += 0.125  # 67 s in all: a line every 10 s (80 files), then the last one
            prog.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["features: 80/535 (10 s)", "features: 160/535 (20 s)"]
    assert lines[-1] == "features: 535/535 done in 1 min 07 s"
    assert len(lines) == 7


def test_progress_is_plain_lines_outside_a_terminal(capsys):
    assert not progress.progress_enabled()  # pytest's stderr is no terminal
    assert isinstance(progress.make_progress(), progress.LineProgress)
    assert list(progress.track(range(3), "reading")) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines() == ["reading: 3/3 done in 0.0 s"]
    with progress.make_progress() as prog:  # the training loop's use: status with each epoch
        t = prog.add_task("training", total=4, completed=1, status="")
        prog.update(t, advance=1, status="loss 1.0")
    assert capsys.readouterr().err.splitlines() == ["training: 2/4 done in 0.0 s loss 1.0"]  # stopped early


def test_bars_on_a_terminal_unless_switched_off(monkeypatch):
    from rich.progress import Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    progress.set_progress(True)
    try:
        assert isinstance(progress.make_progress(), Progress)
        progress.set_progress(False)  # SERADV_PROGRESS=0
        assert isinstance(progress.make_progress(), progress.LineProgress)
    finally:
        progress.set_progress(os.environ.get("SERADV_PROGRESS", "1") != "0")


def test_demo_run_prints_each_stage_to_stderr(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(pipeline, "prepare_run", lambda cfg, d: calls.append("prepare"))
    monkeypatch.setattr(pipeline, "train_run", lambda d: calls.append("train"))
    monkeypatch.setattr(pipeline, "evaluate_run", lambda d: calls.append("evaluate"))
    monkeypatch.setattr(pipeline, "run_grid", lambda d, **kw: calls.append("attack"))
    monkeypatch.setattr(pipeline, "build_report", lambda d: (calls.append("report"), d / "report.html")[1])
    pipeline.run(pipeline.demo_config(), out=tmp_path / "demo")
    assert calls == ["prepare", "train", "evaluate", "attack", "report"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"[1/5] prepare synthetic into {tmp_path / 'demo'} ..."
    assert err[1].startswith(f"[1/5] prepare synthetic into {tmp_path / 'demo'} done in ")
    assert [ln.split(" ")[0] for ln in err] == ["[1/5]", "[1/5]", "[2/5]", "[2/5]", "[3/5]", "[3/5]",
                                                "[4/5]", "[4/5]", "[5/5]", "[5/5]"]
    assert err[6] == "[4/5] attack (quick grid) ..." and err[-1].startswith("[5/5] report done in")


def test_stage_reports_a_failure(capsys):
    with pytest.raises(ValueError):
        with progress.stage("train", 2, 5):
            raise ValueError("x")
    assert capsys.readouterr().err.splitlines()[-1].startswith("[2/5] train stopped after ")


# ------------------------------------------------------------------------------ defect 6: width


def test_tables_and_long_lines_are_not_cut_outside_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    df = pd.DataFrame([{f"a_rather_long_column_name_{i}": 0.123456 * i for i in range(12)}])
    import io

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    c = cli._console()
    c.print(cli._table(df, "wide"))
    lines = buf.getvalue().splitlines()
    assert any(all(f"a_rather_long_column_name_{i}" in ln for i in range(12)) for ln in lines)
    assert "…" not in buf.getvalue()
    res = invoke("attack", "--list", "--attacks", "pgd_l2")
    from seradv.attacks import get_attack

    assert f"  notes: {get_attack('pgd_l2').notes}" in res.stdout.splitlines()


def test_error_messages_keep_brackets_and_stay_on_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {emotions: [joy]}\n")
    line = assert_one_line_error(invoke("run", "-c", cfg), "data.emotions=['joy']")
    assert len(line) > 80


# ------------------------------------------------------------------------------ --help


@pytest.mark.parametrize("verb", ["manifest", "prepare", "train", "evaluate", "attack", "report", "run"])
def test_every_command_has_help(verb):
    res = invoke(verb, "--help")
    assert res.exit_code == 0 and "Usage" in res.stdout


def test_file_system_errors_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")
    for args in (["manifest", "synthetic", "-o", tmp_path / "f.txt" / "m.csv"],
                 ["prepare", "synthetic", "-o", tmp_path / "f.txt" / "run"],
                 ["run", "-o", tmp_path / "f.txt" / "run"]):
        assert_one_line_error(invoke(*args), f"{tmp_path / 'f.txt'} is a file, not a folder")

    def disk_full(cfg, out=None):
        raise OSError(28, "No space left on device", str(tmp_path / "r" / "x.npy"))

    monkeypatch.setattr(pipeline, "run", disk_full)
    assert_one_line_error(invoke("run", "-o", tmp_path / "r"), f"No space left on device: {tmp_path / 'r' / 'x.npy'}")


def test_interrupt_says_how_to_resume(tmp_path, monkeypatch):
    def interrupted(cfg, out=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    res = invoke("run", "-o", tmp_path / "r")
    assert res.exit_code == 130 and "interrupted" in res.stderr and "run the same command again" in res.stderr
    assert "Traceback" not in res.output


def test_log_lines_in_a_pipe_are_plain_and_not_padded(tmp_path):
    """Outside a terminal, -v log records are plain lines (not padded to the wide log console)."""
    exe = Path(sys.executable).with_name("seradv")
    proc = subprocess.run([str(exe), "-v", "manifest", "synthetic", "--data-dir", str(tmp_path / "syn"),
                           "-o", str(tmp_path / "m.csv")],
                          capture_output=True, text=True, env={**os.environ, "SERADV_PROGRESS": "0"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert any(ln.startswith("INFO ") for ln in lines), proc.stderr
    assert max(len(ln) for ln in lines) < 500
    assert all(ln == ln.rstrip() for ln in lines)
