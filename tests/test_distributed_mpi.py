"""Data-parallel training in real MPI processes: each test runs one scenario of
tests/mpi/scenarios.py under ``mpiexec -n 2 python -m mpi4py`` with a timeout.

Needs mpi4py and an mpiexec (``pip install 'portnn[mpi]'``, part of the test
extra); skipped with the reason when either is missing. The measured numbers
(e.g. the equivalence test's max abs difference) are printed: ``pytest -s -k mpi``.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "mpi", "scenarios.py")
NPROCS = 2


def _mpiexec():
    # The venv's bin first: CI need not activate it for the mpich wheel's mpiexec to be found.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return shutil.which("mpiexec", path=path) or shutil.which("mpirun", path=path)


def _skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'portnn[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec/mpirun found next to the interpreter or on PATH (pip install mpich)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _launcher():
    exe = _mpiexec()
    cmd = [exe, "-n", str(NPROCS)]
    env = dict(os.environ)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    if "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout + version.stderr:
        cmd += ["--oversubscribe"]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return cmd, env


def run_scenario(name, tmp_path, timeout=180, check=True):
    cmd, env = _launcher()
    out = tmp_path / f"{name}.json"
    env["PORTNN_TEST_TMP"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + [sys.executable, "-m", "mpi4py", SCRIPT, name, str(out)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    elapsed = time.perf_counter() - t0
    if check:
        assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        result = json.loads(out.read_text())
        print(f"\nmpi {name}: {result}")
        return result
    return proc, elapsed


def test_mpi_gradients_average_to_mean_rank(tmp_path):
    assert run_scenario("grads", tmp_path)["mean"] == (NPROCS - 1) / 2


def test_mpi_two_ranks_half_batch_equal_one_process_full_batch(tmp_path):
    r = run_scenario("equivalence", tmp_path)
    for rule in ("sgd", "adam"):
        assert r[rule]["max_abs_param_diff"] < 1e-10
        assert r[rule]["max_abs_loss_diff"] < 1e-10


def test_mpi_params_identical_on_all_ranks(tmp_path):
    assert run_scenario("identical", tmp_path)["steps"] > 0


def test_mpi_uneven_dataset_does_not_deadlock(tmp_path):
    r = run_scenario("uneven", tmp_path, timeout=120)
    assert r == {"n=101,bs=10": 3 * (101 // 20), "n=7,bs=5": 3, "seconds": r["seconds"]}


def test_mpi_exception_on_rank_1_ends_rank_0(tmp_path):
    proc, elapsed = run_scenario("abort", tmp_path, timeout=60, check=False)
    assert proc.returncode != 0
    assert "boom on rank 1" in proc.stderr
    assert not (tmp_path / "abort.json").exists()
    print(f"\nmpi abort: the job ended {elapsed:.1f}s after launch (rc {proc.returncode})")
    assert elapsed < 30


def test_mpi_resume_equals_uninterrupted_run(tmp_path):
    r = run_scenario("resume", tmp_path)
    assert r["max_abs_diff"] == 0.0


def test_mpi_cli_trains_and_only_rank_0_prints(tmp_path):
    cmd, env = _launcher()
    proc = subprocess.run(cmd + [sys.executable, "-m", "portnn", "train", "--epochs", "2", "--print-every", "5",
                                 "--checkpoint", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("portnn: fcn on digits") == 1 and "2 processes (mpi)" in out
    assert out.count("(Epoch 2 / 2)") == 1 and out.count("test acc") == 1
    assert (tmp_path / "run_epoch_2.npz").exists()
    resumed = subprocess.run(cmd + [sys.executable, "-m", "portnn", "train", "--resume",
                                    str(tmp_path / "run_epoch_2.npz"), "--epochs", "3", "--quiet"],
                             capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("test acc") == 1 and (tmp_path / "run_epoch_3.npz").exists()
    missing = subprocess.run(cmd + [sys.executable, "-m", "portnn", "train", "--resume", str(tmp_path / "no.npz")],
                             capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert missing.returncode != 0 and missing.stderr.count("not a checkpoint written by 'portnn train'") == 1
