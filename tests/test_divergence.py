"""Non-finite losses and gradients: the Solver stops with a clear error (or skips
the step), names the iteration and the last good checkpoint, and keeps best params."""

import numpy as np
import pytest

import portnn
from portnn.data import load_digits
from tests.helpers import to_np


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return {k: v[:200] for k, v in d.items()}


def poison(model, bad_at, what="grad"):
    """Make ``model``'s forward-backward (what the Solver calls) return a NaN gradient
    (what="grad") or an infinite loss ("loss") at the training steps ``bad_at``
    (1-based; a dict step -> what mixes both). Steps are counted by the model's
    rng_step, which the Solver advances once per step and checkpoints carry, so a
    resumed run is poisoned at the same steps. Scoring calls (y None) are left alone."""
    real = model._forward_backward
    bad = bad_at if isinstance(bad_at, dict) else {step: what for step in bad_at}

    def forward_backward(X, y):
        out = real(X, y)
        kind = bad.get(model.rng_step + 1) if y is not None else None
        if kind is None:
            return out
        loss, grads = out
        if kind == "grad":
            return loss, dict(grads, W2=grads["W2"] * float("nan"))
        return loss * float("inf"), grads

    model._forward_backward = forward_backward
    return model


def poisoned_solver(data, backend=None, bad_at=(), what="grad", **kw):
    """A Solver whose model returns a NaN gradient (or loss) at the given steps."""
    model = poison(portnn.FullyConnectedNet([16], input_dim=64, weight_scale=0.1, seed=0, backend=backend),
                   bad_at, what)
    args = dict(update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=50, num_epochs=3,
                verbose=False, seed=0)
    args.update(kw)
    return portnn.Solver(model, data, **args)


@pytest.mark.parametrize("what", ["grad", "loss"])
def test_raise_names_iteration_and_checkpoint(backend, digits, tmp_path, what):
    solver = poisoned_solver(digits, backend, bad_at={6}, what=what, checkpoint_name=str(tmp_path / "ck"))
    with pytest.raises(portnn.DivergenceError, match=f"non-finite {what}.*at iteration 6 .*epoch 2.*ck_epoch_1.npz") as e:
        solver.train()
    assert e.value.iteration == 6 and e.value.last_checkpoint.endswith("ck_epoch_1.npz")
    # best params are the epoch-1 snapshot, finite and untouched
    good = portnn.load(str(tmp_path / "ck_epoch_1.npz"), backend="numpy")
    for k, v in solver.best_params.items():
        np.testing.assert_array_equal(to_np(v), to_np(good.params[k]))
    assert all(np.isfinite(to_np(v)).all() for v in solver.best_params.values())


def test_raise_without_checkpoint_says_so(digits):
    with pytest.raises(portnn.DivergenceError, match="no checkpoint written yet"):
        poisoned_solver(digits, bad_at={2}).train()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverging_learning_rate_is_caught(digits):
    model = portnn.FullyConnectedNet([50, 50], input_dim=64, weight_scale=1.0, seed=0)
    solver = portnn.Solver(model, digits, update_rule="sgd", optim_config={"learning_rate": 1e6},
                           batch_size=50, num_epochs=5, verbose=False, seed=0)
    with pytest.raises(portnn.DivergenceError, match="training diverged"):
        solver.train()


def test_skip_policy_leaves_params_and_state_unchanged(backend, digits):
    seen = {}

    class Snap:
        def on_iteration(self, solver):
            seen[solver.iteration] = ({k: to_np(v).copy() for k, v in solver.model.params.items()},
                                      solver.optim_configs["W1"]["t"])

    solver = poisoned_solver(digits, backend, bad_at={3, 7}, on_nonfinite="skip", callbacks=[Snap()])
    solver.train()
    assert solver.skipped_iterations == [3, 7]
    for k in seen[2][0]:
        np.testing.assert_array_equal(seen[3][0][k], seen[2][0][k])
    assert seen[3][1] == seen[2][1] == 2 and seen[4][1] == 3  # Adam's step count skips too
    assert np.isfinite(solver.loss_history[2])  # step 3's loss was fine; only its gradient was NaN
    assert all(np.isfinite(to_np(v)).all() for v in solver.model.params.values())
    assert len(solver.loss_history) == 12


def test_bad_policy_name(digits):
    with pytest.raises(ValueError, match="on_nonfinite: expected 'raise' or 'skip'"):
        poisoned_solver(digits, on_nonfinite="ignore")
