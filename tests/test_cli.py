"""The command-line entry point, run as a user would."""

import re
import subprocess
import sys

import pytest


def run_cli(*args, check=True):
    return subprocess.run([sys.executable, "-m", "portnn", *args], capture_output=True, text=True,
                          check=check, timeout=300)


def test_help_lists_options():
    out = run_cli("train", "--help").stdout
    for opt in ("--backend", "--hidden-dims", "--normalization", "--dropout", "--update-rule",
                "--lr", "--epochs", "--batch-size", "--seed", "--model", "--dataset", "--data-dir"):
        assert opt in out


def test_train_fcn_prints_epochs_and_test_accuracy():
    out = run_cli("train", "--epochs", "3", "--normalization", "batchnorm", "--dropout", "0.1").stdout
    assert len(re.findall(r"^\(Epoch \d / 3\) loss: [\d.]+; train acc: [\d.]+; val_acc: [\d.]+", out, re.M)) == 3
    test_acc = float(re.search(r"test acc ([\d.]+)", out).group(1))
    assert test_acc > 0.85


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_train_same_result_on_other_backends(backend):
    pytest.importorskip(backend)
    args = ("train", "--epochs", "2", "--quiet", "--dtype", "float64")
    ref = run_cli(*args).stdout
    got = run_cli(*args, "--backend", backend).stdout
    pick = lambda s: re.search(r"best val acc ([\d.]+)\s+test acc ([\d.]+)", s).groups()
    assert pick(got) == pick(ref)


def test_train_cnn_on_digits():
    out = run_cli("train", "--model", "cnn", "--epochs", "2", "--quiet").stdout
    assert float(re.search(r"test acc ([\d.]+)", out).group(1)) > 0.8


def test_unavailable_backend_message():
    res = run_cli("train", "--backend", "nosuch", check=False)
    assert res.returncode == 2 and "unknown backend 'nosuch'" in res.stderr and "Traceback" not in res.stderr


def test_readme_first_command_output():
    out = run_cli("train", "--epochs", "1").stdout.splitlines()
    assert re.fullmatch(r"portnn: fcn on digits \(1197 train / 300 val / 300 test\), backend \w+ \(\w+\), float32",
                        out[0]), out[0]
    assert re.fullmatch(r"best val acc [\d.]+  test acc [\d.]+  \([\d.]+s training, 23 iterations\)", out[-1])


def test_cifar_needs_data_dir(tmp_path):
    res = run_cli("train", "--dataset", "cifar10", check=False)
    assert res.returncode == 2 and "--data-dir" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path), check=False)
    assert res.returncode != 0 and "data_batch_1" in res.stderr


def test_train_on_local_cifar10_files(tmp_path):
    from tests.test_data import _write_cifar
    _write_cifar(tmp_path, sizes=(20, 20, 20, 20, 20), n_test=10)
    for model, size in (("cnn", ("--num-filters", "4")), ("fcn", ("--hidden-dims", "10"))):
        out = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", model,
                      "--num-train", "80", "--num-val", "20", "--num-test", "10", "--epochs", "1", *size).stdout
        assert "cifar10 (80 train / 20 val / 10 test)" in out
        assert re.search(r"test acc [\d.]+", out)
