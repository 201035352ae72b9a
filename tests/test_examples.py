"""Every script in examples/ runs as a user would run it, so an example can never rot.

Each example runs in a subprocess with tiny settings (``--quick``, ``--epochs``, small
splits) on numpy, and on torch where it applies; the test asserts exit status 0 and a
sanity figure parsed from what the script printed (an accuracy above a threshold, a
gradient-check error below 1e-7, a bit-exact resume). The subprocesses run with one
BLAS/OpenMP thread: on a small shared machine, thread pools fighting over two cores
cost far more than they gain on these tiny layers.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

# Every example runs on numpy. Those about backends, layers, training and checkpoints
# (01-04, 07-09) also run on torch when it is installed; 05 (data loading) and 06 (the
# GPU fallback) do not depend on the CPU backend.
BACKENDS = ["numpy", "torch"] if HAVE_TORCH else ["numpy"]


def _env():
    env = dict(os.environ)
    env.pop("PORTNN_BACKEND", None)  # the examples' own default (numpy) must hold
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def run_examples(*runs, cwd, expect_rc=0, timeout=180, stderr=False):
    """Run several examples at once (each is one thread; the machine has two cores) and
    return their stdouts in order, or (stdout, stderr) pairs with stderr=True. A run is
    (script, arg, ...); a wrong exit status fails the test showing both streams."""
    procs = []
    for script, *args in runs:
        procs.append((script, args, subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=cwd, env=_env())))
    outs = []
    try:
        for script, args, proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == expect_rc, (
                f"{script} {' '.join(args)} exited {proc.returncode}, expected {expect_rc}\n"
                f"--- stdout\n{out}\n--- stderr\n{err}"
            )
            outs.append((out, err) if stderr else out)
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outs


def run_on_backends(script, *args, cwd):
    """{backend: stdout} of ``script --backend B args`` for every backend in BACKENDS, run at once."""
    outs = run_examples(*[(script, "--backend", b, *args) for b in BACKENDS], cwd=cwd)
    return dict(zip(BACKENDS, outs))


def figure(pattern, out):
    """The number captured by ``pattern`` in the output (the test fails if it is absent)."""
    m = re.search(pattern, out, re.M)
    assert m, f"no match for {pattern!r} in:\n{out}"
    return float(m.group(1))


def test_torch_runs_are_included():
    if not HAVE_TORCH:
        pytest.skip("torch not installed: the examples below ran on numpy only")


# --------------------------------------------------------------------------- the folder itself

SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
TESTED = {"01_backends.py", "02_layers_by_hand.py", "03_fcn_digits.py", "04_cnn_digits.py",
          "05_cifar10.py", "06_gpu_cupy.py", "07_save_load_resume.py", "08_schedules_callbacks.py",
          "09_resnet.py"}


def test_every_example_is_tested_here_and_listed_in_the_docs():
    assert set(SCRIPTS) == TESTED, "add a test for each new example (and remove those of deleted ones)"
    readme, guide = (ROOT / "README.md").read_text(), (ROOT / "docs" / "guide.md").read_text()
    for script in SCRIPTS:
        assert f"examples/{script}" in readme and f"examples/{script}" in guide, script


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_shape(script):
    """A docstring saying what it shows, how to run it and what it prints; --backend; argparse; main guard."""
    source = (EXAMPLES / script).read_text()
    doc = ast.get_docstring(ast.parse(source))
    assert doc and "Run" in doc and "Expected output" in doc and f"python examples/{script}" in doc
    assert "argparse" in source and '"--backend"' in source
    assert 'if __name__ == "__main__":' in source


# --------------------------------------------------------------------------- each example


def test_01_backends(tmp_path):
    for backend, out in run_on_backends("01_backends.py", cwd=tmp_path).items():
        assert figure(r"round trip host -> backend -> host, max \|difference\|: (\S+)", out) == 0.0, backend
        m = re.search(r"^mistakes caught: (\d+) of (\d+)$", out, re.M)
        assert m and m.group(1) == m.group(2), out
        if HAVE_TORCH:  # there is another backend to mix with
            assert int(m.group(2)) >= 2, out


def test_02_layers_by_hand(tmp_path):
    for backend, out in run_on_backends("02_layers_by_hand.py", "--steps", "10", cwd=tmp_path).items():
        assert figure(r"^max relative error: (\S+)", out) < 1e-7, backend
        m = re.search(r"adam, 10 steps: loss ([\d.]+) -> ([\d.]+)", out)
        assert m and float(m.group(2)) < float(m.group(1)), out


def _table(out):
    """Rows of the markdown table: label -> (train, best val, test)."""
    rows = re.findall(r"^\| (.+?)\s+\|\s+([\d.]+) \|\s+([\d.]+) \|\s+([\d.]+) \|", out, re.M)
    return {label: tuple(float(v) for v in vals) for label, *vals in rows}


def test_03_fcn_digits(tmp_path):
    for backend, out in run_on_backends("03_fcn_digits.py", "--quick", cwd=tmp_path).items():
        table = _table(out)
        assert sorted(table) == sorted([
            "sgd, lr 0.1", "sgd_momentum, lr 0.05", "rmsprop, lr 0.001", "adam, lr 0.005",
            "adam + plain", "adam + batchnorm", "adam + layernorm", "adam + dropout 0.2"]), out
        for label, (train, val, test) in table.items():
            assert 0.5 < test <= 1.0 and 0.5 < val <= 1.0 and 0.0 <= train <= 1.0, (backend, label, out)
        assert table["adam + batchnorm"][2] > 0.9, out  # 2 epochs already reach ~0.98


def test_04_cnn_digits(tmp_path):
    for backend, out in run_on_backends("04_cnn_digits.py", "--quick", cwd=tmp_path).items():
        assert len(re.findall(r"^\(Epoch \d / 2\)", out, re.M)) == 3, out
        assert figure(r"^test acc ([\d.]+)", out) > 0.4, backend  # 2 epochs on 300 images: ~0.64 (chance 0.1)


def test_05_cifar10_skips_without_the_folder(tmp_path):
    (out,) = run_examples(("05_cifar10.py", "--data-dir", str(tmp_path / "nowhere")), cwd=tmp_path)
    assert "skipping this example" in out and "cifar-10-python.tar.gz" in out


def test_05_cifar10_fails_on_a_broken_folder(tmp_path):
    from tests.test_data import _write_cifar

    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, sizes=(10, 10, 10, 10, 10), n_test=10)
    (folder / "data_batch_3").write_bytes(b"not a pickle")  # a folder that exists is not skipped
    ((out, err),) = run_examples(("05_cifar10.py", "--data-dir", str(folder)), cwd=tmp_path,
                                 expect_rc=1, stderr=True)
    assert out == "" and err.startswith("cannot load CIFAR-10: ") and "data_batch_3" in err, err


def test_05_cifar10_on_tiny_fake_files(tmp_path):
    from tests.test_data import _write_cifar

    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, sizes=(10, 10, 10, 10, 10), n_test=10)  # the real format, random pixels
    common = ("--data-dir", str(folder), "--num-train", "40", "--num-val", "10", "--num-test", "10",
              "--epochs", "1")
    runs = [("05_cifar10.py", "--model", model, *common) for model in ("cnn", "fcn")]
    for out in run_examples(*runs, cwd=tmp_path):
        assert "X_train (40, 3, 32, 32) / X_val (10, 3, 32, 32) / X_test (10, 3, 32, 32)" in out
        assert 0.0 <= figure(r"^test acc ([\d.]+)", out) <= 1.0  # random labels: any accuracy will do


def test_06_gpu_cupy(tmp_path):
    (out,) = run_examples(("06_gpu_cupy.py", "--epochs", "2"), cwd=tmp_path)
    if "using cupy on GPU" in out:  # a machine with a GPU and CuPy
        assert "backend cupy)" in out
    else:
        assert re.search(r"^BackendError: cupy: ", out, re.M), out
        assert re.search(r"^available backends here: \['numpy'", out, re.M), out
        assert "falling back to numpy" in out and "backend numpy)" in out
    assert figure(r"^test acc ([\d.]+)", out) > 0.9


def test_07_save_load_resume(tmp_path):
    runs = [("07_save_load_resume.py", "--backend", b, "--epochs", "2", "--num-train", "300",
             "--out", str(tmp_path / b)) for b in BACKENDS]
    for backend, out in zip(BACKENDS, run_examples(*runs, cwd=tmp_path)):
        loaded = re.findall(r"^loaded on (\S+)\s*: (\d+)/(\d+) test predictions", out, re.M)
        assert set(BACKENDS) <= {name for name, _, _ in loaded}, out
        for name, same, total in loaded:  # float32 scores differ by ~1e-6 at most across backends
            assert int(same) >= int(total) - 1, (name, out)
        assert re.search(r"loss history identical \(\d+ values\): True; params max \|diff\| 0\.0e\+00", out), out
        assert (tmp_path / backend / "fcn_epoch_1.npz.json").is_file()


def test_08_schedules_callbacks(tmp_path):
    for backend, out in run_on_backends("08_schedules_callbacks.py", "--quick", cwd=tmp_path).items():
        stopped = figure(r"stopped after epoch (\d+) of 30", out)
        assert 2 <= stopped < 30, backend
        first, peak = (figure(p, out) for p in (r"first ([\d.e+-]+),", r"peak ([\d.e+-]+),"))
        assert first < peak == pytest.approx(5e-3)  # the warm-up ramps up to the base rate
        assert figure(r"^test acc ([\d.]+)", out) > 0.8


def test_09_resnet(tmp_path):
    for backend, out in run_on_backends("09_resnet.py", "--quick", cwd=tmp_path).items():
        assert "Residual(projection=True)" in out and "5.proj" in out, out  # model.summary()
        assert re.search(r"^parameters: [\d,]+ in 24 arrays \(7 regularised\); buffers: 336$", out, re.M), out
        assert len(re.findall(r"^\(Epoch [123] / 3\)", out, re.M)) == 3, out  # batchnorm: no epoch 0 line
        # 3 epochs on 600 images: ~0.89 val / 0.96 test (chance 0.1)
        assert figure(r"^val acc ([\d.]+)", out) > 0.7 and figure(r" test acc ([\d.]+)", out) > 0.7, backend


def test_09_resnet_cifar10(tmp_path):
    from tests.test_data import _write_cifar

    (out,) = run_examples(("09_resnet.py", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")),
                          cwd=tmp_path)
    assert "skipping this example" in out and "cifar-10-python.tar.gz" in out
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, sizes=(10, 10, 10, 10, 10), n_test=10)  # the real format, random pixels
    (out,) = run_examples(("09_resnet.py", "--dataset", "cifar10", "--data-dir", str(folder), "--num-train", "40",
                           "--num-val", "10", "--num-test", "10", "--epochs", "1", "--batch-size", "20"),
                          cwd=tmp_path)
    assert "X_train (40, 3, 32, 32)" in out and "(48, 16, 16)" in out, out  # stride 2 halves 32x32
    assert 0.0 <= figure(r" test acc ([\d.]+)", out) <= 1.0  # random labels: any accuracy will do
