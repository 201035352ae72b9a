"""Bad command lines: one argparse-style error line (exit 2) before any training; divergence is one
line (exit 1); --debug / PORTNN_DEBUG=1 show the traceback; flags that cannot apply are refused;
checkpoint prefixes are not mixed between runs (docs/errors.md, "Command line")."""

import os
import re
import subprocess
import sys

import pytest

from portnn.cli import _build_parser, main
from portnn.solver import DivergenceError


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv("PORTNN_DEBUG", raising=False)


def usage_error(capsys, *argv):
    """Run the command line in-process: it must exit 2 with the usage line and ONE error line,
    before any training."""
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out, err = capsys.readouterr()
    assert ei.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: portnn "), err
    assert "(Epoch" not in out and "test acc" not in out
    return lines[1]


def quick_run(capsys, *argv):
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-1"], "argument --epochs: expected an integer >= 1, got -1"),
    (["--epochs", "abc"], "argument --epochs: expected an integer >= 1, got 'abc'"),
    (["--lr", "-1"], "argument --lr: expected a finite learning rate >= 0, got -1"),
    (["--lr", "nan"], "argument --lr: expected a finite learning rate >= 0, got nan"),
    (["--dropout", "1.0"], "argument --dropout: expected a drop probability in [0, 1), got 1.0"),
    (["--dropout", "-0.5"], "argument --dropout: expected a drop probability in [0, 1), got -0.5"),
    (["--hidden-dims", "0"], "argument --hidden-dims: expected an integer >= 1, got 0"),
    (["--hidden-dims", "10", "-2"], "argument --hidden-dims: expected an integer >= 1, got -2"),
    (["--schedule", "step", "--step-gamma", "-1"], "argument --step-gamma: expected a factor in (0, 1], got -1"),
    (["--warmup", "-5"], "argument --warmup: expected an integer >= 0, got -5"),
    (["--seed", "-3"], "argument --seed: expected an integer >= 0, got -3"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--reg", "inf"], "argument --reg: expected a finite strength >= 0, got inf"),
    (["--weight-scale", "0"], "argument --weight-scale: expected a positive finite std, got 0"),
])
def test_bad_value_is_one_usage_line(capsys, argv, message):
    assert usage_error(capsys, "train", *argv) == f"portnn train: error: {message}"


@pytest.mark.parametrize("argv, message", [
    (["--num-train", "5"], "--num-train: applies to --dataset cifar10 only, not --dataset digits"),
    (["--data-dir", "."], "--data-dir: applies to --dataset cifar10 only, not --dataset digits"),
    (["--model", "cnn", "--hidden-dims", "7"], "--hidden-dims: applies to --model fcn only, not --model cnn"),
    (["--model", "cnn", "--dropout", "0.5"], "--dropout: applies to --model fcn only, not --model cnn"),
    (["--num-filters", "8"], "--num-filters: applies to --model cnn only, not --model fcn"),
    (["--step-gamma", "0.3"], "--step-gamma: applies to --schedule step only, not --schedule none"),
    (["--quiet", "--print-every", "5"], "--print-every: has no effect with --quiet"),
    (["--overwrite"], "--overwrite: applies with --checkpoint PREFIX only"),
    (["--dataset", "cifar10"], "--dataset: cifar10 needs --data-dir DIR"),
])
def test_flag_that_cannot_apply_is_refused(capsys, argv, message):
    assert f"error: argument {message}" in usage_error(capsys, "train", *argv)


def test_eval_refuses_cifar_sizes_on_digits(capsys):
    line = usage_error(capsys, "eval", "model.npz", "--num-test", "5")
    assert line == "portnn eval: error: argument --num-test: applies to --dataset cifar10 only, not --dataset digits"


def test_output_paths_are_checked_before_training(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    line = usage_error(capsys, "train", "--plot", str(afile / "x.png"))
    assert line.startswith("portnn train: error: argument --plot: cannot write") and "is not a directory" in line
    line = usage_error(capsys, "train", "--save", str(tmp_path))
    assert line.endswith(f"argument --save: cannot write {tmp_path}: it is a directory")
    line = usage_error(capsys, "train", "--checkpoint", str(afile / "sub" / "run"))
    assert "argument --checkpoint: cannot write" in line and "is not a directory" in line


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_save_into_proc_is_refused_before_training(capsys):
    line = usage_error(capsys, "train", "--save", "/proc/x.npz")
    assert line.startswith("portnn train: error: argument --save: cannot write /proc/x.npz: cannot create files in /proc")


def test_missing_output_folder_is_created(capsys, tmp_path):
    out = quick_run(capsys, "--save", str(tmp_path / "new" / "deeper" / "m.npz"))
    assert (tmp_path / "new" / "deeper" / "m.npz").exists() and "wrote" in out


def test_divergence_is_one_line_exit_1(capsys):
    assert main(["train", "--update-rule", "sgd", "--lr", "1e6", "--epochs", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(r"portnn train: error: training diverged: non-finite \w+ \(.*\) at iteration \d+ .*"
                        r"try a smaller --lr \(this run: 1e\+06\)", err[0]), err


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # --debug leaves NumPy's warnings on
def test_debug_shows_the_traceback(capsys, monkeypatch):
    from portnn.backends import BackendError

    with pytest.raises(BackendError):
        main(["train", "--debug", "--backend", "nosuch"])
    with pytest.raises(BackendError):
        main(["--debug", "train", "--backend", "nosuch"])
    assert "unknown backend 'nosuch'" in usage_error(capsys, "train", "--backend", "nosuch")
    monkeypatch.setenv("PORTNN_DEBUG", "1")
    with pytest.raises(DivergenceError):
        main(["train", "--update-rule", "sgd", "--lr", "1e6", "--epochs", "2", "--quiet"])


def test_debug_traceback_from_a_real_process():
    cmd = [sys.executable, "-m", "portnn", "train", "--backend", "nosuch"]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "PORTNN_DEBUG"})
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, PORTNN_DEBUG="1"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "BackendError" in debug.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert re.fullmatch(r"portnn \S+\n", capsys.readouterr().out)


def test_help_names_each_default_once():
    for command in ("train", "eval"):
        sub = _build_parser()._subparsers._group_actions[0].choices[command]
        text = sub.format_help()
        assert "(default: None)" not in text
        for entry in re.split(r"\n(?=  -)", text):
            assert entry.count("default") <= 1, entry


def test_existing_checkpoints_of_another_run_are_refused(capsys, tmp_path):
    prefix = str(tmp_path / "runs" / "cnn")
    quick_run(capsys, "--model", "cnn", "--checkpoint", prefix)
    line = usage_error(capsys, "train", "--checkpoint", prefix, "--epochs", "2")
    assert f"argument --checkpoint: {prefix} already holds checkpoints of another run" in line
    assert "--overwrite" in line and f"--resume {prefix}_epoch_1.npz" in line
    # resuming that run under its own prefix keeps working
    assert main(["train", "--resume", f"{prefix}_epoch_1.npz", "--checkpoint", prefix, "--epochs", "2",
                 "--quiet"]) == 0
    assert os.path.exists(f"{prefix}_epoch_2.npz") and "test acc" in capsys.readouterr().out
    assert "--overwrite: this run continues" in usage_error(
        capsys, "train", "--resume", f"{prefix}_epoch_2.npz", "--epochs", "3", "--overwrite")
    # --overwrite deletes the other run's checkpoints first
    quick_run(capsys, "--checkpoint", prefix, "--overwrite")
    assert sorted(os.listdir(tmp_path / "runs")) == ["cnn_epoch_1.npz", "cnn_epoch_1.npz.json"]
    assert "FullyConnectedNet" in (tmp_path / "runs" / "cnn_epoch_1.npz.json").read_text()


def test_resume_refuses_flags_that_differ_from_the_checkpoint(capsys, tmp_path):
    prefix = str(tmp_path / "cnn")
    quick_run(capsys, "--model", "cnn", "--checkpoint", prefix)
    ck = f"{prefix}_epoch_1.npz"
    line = usage_error(capsys, "train", "--resume", ck, "--model", "fcn", "--hidden-dims", "7")
    assert "argument --resume:" in line
    assert "--model fcn (checkpoint: cnn), --hidden-dims 7 (checkpoint: 100 100)" in line
    line = usage_error(capsys, "train", "--resume", ck, "--dtype", "float64")
    assert "--dtype float64 (checkpoint: float32)" in line
    line = usage_error(capsys, "train", "--resume", ck, "--epochs", "1")
    assert "argument --epochs:" in line and "already at epoch 1" in line
    # the same values as the checkpoint are fine, and the .json manifest names the checkpoint too
    assert main(["train", "--resume", ck + ".json", "--model", "cnn", "--dtype", "float32", "--epochs", "2",
                 "--quiet"]) == 0
    assert os.path.exists(f"{prefix}_epoch_2.npz")


def test_eval_accepts_the_json_manifest(capsys, tmp_path):
    path = str(tmp_path / "m.npz")
    quick_run(capsys, "--save", path)
    assert main(["eval", path + ".json"]) == 0
    assert f"from {path} on digits" in capsys.readouterr().out
    line = usage_error(capsys, "eval", str(tmp_path / "nope.npz"))
    assert line.startswith("portnn eval: error: argument checkpoint:") and "no such checkpoint file" in line
