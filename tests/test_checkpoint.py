"""Save / load (npz + JSON manifest, pickle off), cross-backend loading, atomic
writes and exact resume, including a SIGKILLed CLI run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import portnn
from portnn import schedules
from portnn.data import load_digits
from portnn.io import load_arrays
from portnn.training_state import PROGRESS, SETTINGS, TrainingState
from tests.checkpoint_helpers import read_manifest, rewrite_manifest
from tests.helpers import assert_on_backend, to_np
from tests.test_divergence import poison


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return {k: v[:200] for k, v in d.items()}


def trained_model(backend, digits, **kw):
    model = portnn.FullyConnectedNet([16, 12], input_dim=64, normalization="batchnorm", dropout_keep_ratio=0.8,
                                     weight_scale=0.1, seed=0, backend=backend, **kw)
    portnn.Solver(model, digits, update_rule="adam", batch_size=50, num_epochs=1, verbose=False, seed=0).train()
    return model


def test_model_roundtrip_across_backends(backend, digits, tmp_path):
    """Saved on ``backend``, loaded on numpy; saved on numpy, loaded on ``backend``."""
    model = trained_model(backend, digits)
    path = str(tmp_path / "m.npz")
    portnn.save(model, path)
    on_numpy = portnn.load(path, backend="numpy")
    assert type(on_numpy) is portnn.FullyConnectedNet and on_numpy.backend.name == "numpy"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(on_numpy.state_dict()[k]), to_np(v))
    assert on_numpy.rng_step == model.rng_step
    portnn.save(on_numpy, path)
    back = portnn.load(path, backend=backend)
    for k, v in back.state_dict().items():
        assert_on_backend(v, backend)
        np.testing.assert_array_equal(to_np(v), to_np(model.state_dict()[k]))
    X = digits["X_val"]
    np.testing.assert_array_equal(back.predict(X), on_numpy.predict(X))


def test_cnn_roundtrip(tmp_path):
    m = portnn.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=10, seed=2)
    portnn.save(m, str(tmp_path / "c.npz"))
    m2 = portnn.load(str(tmp_path / "c.npz"), backend="torch" if "torch" in portnn.available_backends() else None)
    assert m2.config == m.config
    for k in m.params:
        np.testing.assert_array_equal(to_np(m2.params[k]), m.params[k])


def test_files_are_npz_and_json_without_pickle(digits, tmp_path):
    model = trained_model("numpy", digits)
    path = str(tmp_path / "m.npz")
    portnn.save(model, path)
    manifest = read_manifest(path)  # inside the .npz: one file, one atomic rename
    assert manifest["format"] == "portnn-checkpoint" and manifest["version"] == 3
    assert manifest["meta"]["model"]["class"] == "FullyConnectedNet"
    assert json.loads(open(path + ".json").read()) == manifest  # the informational copy
    with np.load(path, allow_pickle=False) as z:  # loads with pickle off
        assert "model.W1" in z.files and "model.bn1.running_var" in z.files


def test_atomic_write_keeps_the_old_file_on_a_crash(digits, tmp_path, monkeypatch):
    model = trained_model("numpy", digits)
    path = str(tmp_path / "m.npz")
    portnn.save(model, path)
    before = open(path, "rb").read()

    def exploding_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        portnn.save(model, path)
    assert open(path, "rb").read() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_load_state_dict_validates_before_changing(backend, digits):
    model = trained_model(backend, digits)
    before = {k: to_np(v).copy() for k, v in model.state_dict().items()}
    good = {k: to_np(v) for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({k: v for k, v in good.items() if k != "W2"})
    with pytest.raises(ValueError, match=r"state\['W1'\]: expected shape \(64, 16\)"):
        model.load_state_dict(dict(good, W1=np.zeros((3, 3))))
    with pytest.raises(ValueError, match=r"bn1.running_mean: expected shape \(16,\)"):
        model.load_state_dict(dict(good, **{"bn1.running_mean": np.zeros(5)}))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])


def _solver(data, epochs, prefix=None, schedule=None):
    model = portnn.FullyConnectedNet([20], input_dim=64, normalization="batchnorm", dropout_keep_ratio=0.8,
                                     weight_scale=0.1, seed=1)
    return portnn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 3e-3}, lr_decay=0.9,
                         batch_size=32, num_epochs=epochs, checkpoint_name=prefix, verbose=False, seed=5,
                         lr_schedule=schedule)


@pytest.mark.parametrize("schedule", [None, schedules.LinearWarmup(5, then=schedules.CosineDecay(20, 0.1))],
                         ids=["lr_decay", "warmup+cosine"])
@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resume_is_bit_identical(digits, tmp_path, schedule, stop_after):
    full = _solver(digits, 4, schedule=schedule).train()
    _solver(digits, stop_after, prefix=str(tmp_path / "ck"), schedule=schedule).train()
    resumed = portnn.load(str(tmp_path / f"ck_epoch_{stop_after}.npz"), data=digits, num_epochs=4)
    assert resumed.epoch == stop_after
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.val_acc_history == full.val_acc_history
    assert resumed.train_acc_history == full.train_acc_history
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v)
    assert resumed.optim_configs["W1"]["t"] == full.optim_configs["W1"]["t"]
    np.testing.assert_array_equal(resumed.optim_configs["W1"]["m"], full.optim_configs["W1"]["m"])


def test_resume_on_another_backend(digits, tmp_path):
    if "torch" not in portnn.available_backends():
        pytest.skip("torch not installed")
    _solver(digits, 1, prefix=str(tmp_path / "ck")).train()
    resumed = portnn.load(str(tmp_path / "ck_epoch_1.npz"), backend="torch", data=digits, num_epochs=2)
    resumed.train()
    assert resumed.model.backend.name == "torch" and len(resumed.loss_history) == 2 * 6


def _final_arrays(prefix, epoch):
    arrays, meta = load_arrays(f"{prefix}_epoch_{epoch}.npz")
    return arrays, meta["solver"]["loss_history"]


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    args = [sys.executable, "-m", "portnn", "train", "--epochs", "8", "--quiet", "--batch-size", "10",
            "--hidden-dims", "200", "200", "--dropout", "0.2", "--normalization", "batchnorm"]
    ref = str(tmp_path / "ref")
    subprocess.run(args + ["--checkpoint", ref], check=True, capture_output=True, timeout=300)
    run = str(tmp_path / "run")
    proc = subprocess.Popen(args + ["--checkpoint", run], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(run + "_epoch_2.npz.json") and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(int(p.split("_epoch_")[1].split(".")[0]) for p in os.listdir(tmp_path)
                  if p.startswith("run_epoch_") and p.endswith(".npz"))
    assert done and done[-1] < 8, "the run was not interrupted"
    out = subprocess.run([sys.executable, "-m", "portnn", "train", "--resume", f"{run}_epoch_{done[-1]}.npz",
                          "--quiet"], check=True, capture_output=True, text=True, timeout=300).stdout
    assert "test acc" in out
    a, la = _final_arrays(ref, 8)
    b, lb = _final_arrays(run, 8)
    assert la == lb
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --------------------------------------------------------------------------- the training state
def _skip_solver(backend, data, prefix=None, bad_at=None):
    model = portnn.FullyConnectedNet([16, 12], input_dim=64, normalization="batchnorm", dropout_keep_ratio=0.8,
                                     weight_scale=0.1, seed=0, backend=backend)
    poison(model, bad_at)
    return portnn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 3e-3}, lr_decay=0.9,
                         batch_size=50, num_epochs=3, checkpoint_name=prefix, verbose=False, seed=4,
                         on_nonfinite="skip")


def test_skipping_run_resumes_exactly(backend, digits, tmp_path):
    """ACCEPTANCE: an on_nonfinite="skip" run that skips steps before and after its
    epoch-1 checkpoint, resumed from that checkpoint, is the uninterrupted run."""
    bad_at = {2: "grad", 6: "loss", 11: "grad"}  # 4 steps per epoch: one in epoch 1, two after
    full = _skip_solver(backend, digits, prefix=str(tmp_path / "ck"), bad_at=bad_at).train()
    assert full.skipped_iterations == [2, 6, 11]
    resumed = portnn.load(str(tmp_path / "ck_epoch_1.npz"), backend=backend, data=digits, verbose=False)
    assert resumed.on_nonfinite == "skip" and resumed.skipped_iterations == [2] and resumed.epoch == 1
    poison(resumed.model, bad_at)
    resumed.train()  # under "raise" this would stop at step 6
    assert resumed.skipped_iterations == full.skipped_iterations
    assert resumed.loss_history == full.loss_history and resumed.loss_history[5] == float("inf")
    assert resumed.train_acc_history == full.train_acc_history
    assert resumed.val_acc_history == full.val_acc_history and resumed.best_val_acc == full.best_val_acc
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(to_np(resumed.model.state_dict()[k]), to_np(v))
    for k, v in full.optim_configs["W1"].items():
        np.testing.assert_array_equal(to_np(resumed.optim_configs["W1"][k]), to_np(v))


def test_checkpoint_carries_every_field(digits, tmp_path):
    """Every setting and every piece of progress in training_state survives save + load;
    overrides passed to load win over the saved settings."""
    model = portnn.FullyConnectedNet([12], input_dim=64, normalization="batchnorm", seed=0)
    schedule = schedules.LinearWarmup(3, then=schedules.StepDecay(1, 0.5))
    solver = portnn.Solver(model, digits, update_rule="rmsprop", optim_config={"learning_rate": 2e-3},
                           lr_decay=0.8, lr_schedule=schedule, batch_size=40, num_epochs=2, num_train_samples=60,
                           num_val_samples=30, print_every=3, verbose=False, seed=11, on_nonfinite="skip",
                           checkpoint_name=str(tmp_path / "ck"), metadata={"note": "x"}).train()
    solver.skipped_iterations = [4]  # as if step 4 had been skipped
    portnn.save(solver, str(tmp_path / "s.npz"))
    loaded = portnn.load(str(tmp_path / "s.npz"), data=digits)
    saved, got = solver.state(), loaded.state()
    assert set(got.meta) == set(SETTINGS + PROGRESS)
    assert got.meta == saved.meta and sorted(got.arrays) == sorted(saved.arrays)
    assert loaded.lr_schedule.to_dict() == schedule.to_dict() and loaded.model.rng_step == model.rng_step
    assert loaded.last_checkpoint == str(tmp_path / "s.npz")
    over = portnn.load(str(tmp_path / "s.npz"), data=digits, num_epochs=20, verbose=True, on_nonfinite="raise")
    assert (over.num_epochs, over.verbose, over.on_nonfinite) == (20, True, "raise")
    assert over.skipped_iterations == [4] and over.print_every == 3


def test_state_onto_another_solver(backend, digits):
    """Solver.state() / load_state(): the same definition, without a file."""
    a = _skip_solver(backend, digits, bad_at={3: "grad"})
    a.num_epochs = 1
    a.train()
    b = portnn.Solver(portnn.FullyConnectedNet([16, 12], input_dim=64, normalization="batchnorm",
                                               dropout_keep_ratio=0.8, seed=9, backend=backend), digits,
                      update_rule="adam", verbose=False)
    b.load_state(a.state())
    assert (b.on_nonfinite, b.skipped_iterations, b.seed, b.batch_size, b.epoch) == ("skip", [3], 4, 50, 1)
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(to_np(b.model.state_dict()[k]), to_np(v))
    with pytest.raises(ValueError, match=r"training state: missing fields \['on_nonfinite'\]"):
        TrainingState({}, {k: v for k, v in a.state().meta.items() if k != "on_nonfinite"})


def _write_v1(solver, path):
    """A checkpoint in the version-1 layout, written by hand as portnn 0.1's io did:
    same array names, no on_nonfinite / skipped_iterations / rng_step in "solver"."""
    h = to_np
    arrays = {f"model.{k}": h(v) for k, v in solver.model.state_dict().items()}
    scalars = {}
    for p, config in solver.optim_configs.items():
        scalars[p] = {k: v for k, v in config.items() if not hasattr(v, "shape")}
        arrays.update({f"optim.{p}.{k}": h(v) for k, v in config.items() if hasattr(v, "shape")})
    arrays.update({f"best.{k}": h(v) for k, v in solver.best_params.items()})
    arrays.update({f"best_buffers.{k}": h(v) for k, v in solver.best_buffers.items()})
    s = solver
    meta = {"kind": "solver",
            "model": {"class": type(s.model).__name__, "config": s.model.config, "rng_step": s.model.rng_step},
            "solver": {"epoch": s.epoch, "iteration": s.iteration, "update_rule": s.update_rule_name,
                       "optim_config": s.optim_config, "optim_scalars": scalars, "lr_decay": s.lr_decay,
                       "lr_schedule": None if s.lr_schedule is None else s.lr_schedule.to_dict(),
                       "batch_size": s.batch_size, "num_epochs": s.num_epochs,
                       "num_train_samples": s.num_train_samples, "num_val_samples": s.num_val_samples,
                       "print_every": s.print_every, "verbose": s.verbose, "seed": s.seed,
                       "checkpoint_name": s.checkpoint_name, "loss_history": s.loss_history,
                       "train_acc_history": s.train_acc_history, "val_acc_history": s.val_acc_history,
                       "best_val_acc": s.best_val_acc, "metadata": s.metadata}}
    np.savez(path, **arrays)
    manifest = {"format": "portnn-checkpoint", "version": 1, "meta": meta,
                "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in arrays.items()}}
    with open(path + ".json", "w") as f:
        json.dump(manifest, f)


def test_version_1_checkpoint_loads_and_resumes(digits, tmp_path):
    full = _solver(digits, 4).train()
    path = str(tmp_path / "v1.npz")
    _write_v1(_solver(digits, 2).train(), path)
    resumed = portnn.load(path, data=digits, num_epochs=4)
    assert (resumed.on_nonfinite, resumed.skipped_iterations, resumed.epoch) == ("raise", [], 2)
    assert resumed.model.rng_step == 2 * 6
    resumed.train()
    assert resumed.loss_history == full.loss_history and resumed.val_acc_history == full.val_acc_history
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v)


@pytest.mark.parametrize("version", [0, 4, "3", None])
def test_unknown_version_is_refused(digits, tmp_path, version):
    path = str(tmp_path / "s.npz")
    portnn.save(_solver(digits, 1).train(), path)
    rewrite_manifest(path, lambda m: dict(m, version=version))
    with pytest.raises(ValueError, match=rf"format version {version!r}, this portnn reads versions 1, 2, 3"):
        portnn.load(path, data=digits)
