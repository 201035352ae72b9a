"""Solver: overfitting, seeded reproducibility, cross-backend loss curves, host
traffic, checkpoints and argument errors."""

import json

import numpy as np
import pytest

from portnn import Solver
from portnn.data import load_digits
from portnn.io import load_arrays
from portnn.models import FullyConnectedNet


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def small_data(digits, n=50):
    return {"X_train": digits["X_train"][:n], "y_train": digits["y_train"][:n],
            "X_val": digits["X_val"][:n], "y_val": digits["y_val"][:n]}


def test_overfits_50_samples(backend, digits):
    model = FullyConnectedNet([50], input_dim=64, weight_scale=0.1, seed=0, backend=backend)
    solver = Solver(model, small_data(digits), update_rule="adam", optim_config={"learning_rate": 1e-2},
                    batch_size=25, num_epochs=30, num_train_samples=None, verbose=False, seed=0)
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert solver.loss_history[-1] < 0.05
    assert len(solver.loss_history) == 60 and all(isinstance(v, float) for v in solver.loss_history)


def run(backend, digits, seed=0, **kw):
    model = FullyConnectedNet([20], input_dim=64, weight_scale=0.1, dtype="float64", seed=seed,
                              backend=backend, dropout_keep_ratio=0.8, normalization="batchnorm")
    solver = Solver(model, small_data(digits, 200), update_rule="sgd_momentum",
                    optim_config={"learning_rate": 0.05}, batch_size=20, num_epochs=2,
                    verbose=False, seed=seed, **kw)
    return solver.train()


def test_seeded_run_reproduces_exactly(digits):
    a, b = run("numpy", digits), run("numpy", digits)
    assert a.loss_history == b.loss_history
    assert a.val_acc_history == b.val_acc_history
    c = run("numpy", digits, seed=1)
    assert c.loss_history != a.loss_history


def test_loss_curve_same_on_every_backend(backend, digits):
    ref, got = run("numpy", digits), run(backend, digits)
    np.testing.assert_allclose(got.loss_history, ref.loss_history, rtol=1e-9)
    assert got.val_acc_history == ref.val_acc_history


def test_losses_reach_host_once_per_report(digits):
    from portnn.backends import get_backend
    be = get_backend("array_api_strict")  # numpy's to_numpy is a no-op, strict's is a real copy
    calls = []
    model = FullyConnectedNet([20], input_dim=64, seed=0, backend=be)
    solver = Solver(model, small_data(digits, 200), batch_size=20, num_epochs=2, verbose=False, seed=0)
    original = be._host_copy
    be._host_copy = lambda x: calls.append(x.shape) or original(x)
    try:
        solver.train()
    finally:
        be._host_copy = original
    # one stacked transfer of 10 losses per epoch (not one per step), and one
    # transfer of predicted labels per accuracy check (train + val, at start and
    # after each epoch), never one per batch
    loss_reads = [c for c in calls if c == (10, 2)]  # (loss, gradient-sum health check) per step
    assert loss_reads == [(10, 2), (10, 2)]
    assert len(calls) == 2 + 2 * 3


def test_lr_decay_and_best_params(digits):
    model = FullyConnectedNet([20], input_dim=64, seed=0)
    solver = Solver(model, small_data(digits, 100), update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.5, batch_size=50, num_epochs=3, verbose=False, seed=0)
    solver.train()
    assert solver.optim_configs["W1"]["learning_rate"] == pytest.approx(1e-3 * 0.5 ** 3)
    best_epoch = int(np.argmax(solver.val_acc_history))
    assert solver.best_val_acc == solver.val_acc_history[best_epoch]
    for k, v in solver.best_params.items():
        assert model.params[k] is v


def test_checkpoint_files_without_pickle(tmp_path, digits):
    model = FullyConnectedNet([20], input_dim=64, seed=0, normalization="batchnorm")
    prefix = str(tmp_path / "ck")
    solver = Solver(model, small_data(digits, 100), update_rule="adam", batch_size=50, num_epochs=2,
                    verbose=False, seed=0, checkpoint_name=prefix)
    solver.train()
    arrays, meta = load_arrays(prefix + "_epoch_2.npz")
    sm = meta["solver"]
    assert sm["epoch"] == 2 and sm["iteration"] == 4 and sm["update_rule"] == "adam"
    assert len(sm["loss_history"]) == 4
    assert {"model.W1", "model.bn1.running_mean", "optim.W1.m", "optim.W1.v", "best.W1"} <= set(arrays)
    assert sm["optim_scalars"]["W1"]["t"] == 4
    assert sm["on_nonfinite"] == "raise" and sm["skipped_iterations"] == [] and sm["rng_step"] == 4
    assert solver.last_checkpoint == prefix + "_epoch_2.npz"
    manifest = json.loads((tmp_path / "ck_epoch_2.npz.json").read_text())
    assert manifest["format"] == "portnn-checkpoint"
    assert not list(tmp_path.glob("*.tmp"))


def test_solver_argument_errors(digits):
    model = FullyConnectedNet([10], input_dim=64, seed=0)
    data = small_data(digits)
    with pytest.raises(ValueError, match="update_rule: unknown update rule 'sgdd'"):
        Solver(model, data, update_rule="sgdd")
    with pytest.raises(ValueError, match="data: missing key 'X_val'"):
        Solver(model, {k: v for k, v in data.items() if k != "X_val"})
    bad = dict(data, y_train=data["y_train"] + 10)
    with pytest.raises(ValueError, match=r"data\['y_train'\]: labels must lie in \[0, 10\)"):
        Solver(model, bad)
    with pytest.raises(TypeError, match=r"data\['y_train'\]: expected integer labels"):
        Solver(model, dict(data, y_train=data["y_train"].astype(float)))
    with pytest.raises(ValueError, match="batch_size"):
        Solver(model, data, batch_size=0)
    with pytest.raises(ValueError, match="learning_rate"):
        Solver(model, data, optim_config={"learning_rate": -1.0})
