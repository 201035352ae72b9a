"""No silent failures around training data and checkpoint files: non-finite data,
checkpoint locations checked up front, either path of a checkpoint, foreign files and
hand-edited manifests named by file and field (the "No silent failures" issue, points 6,
9 and 10; the kill -9 test of point 1 is tests/test_checkpoint_kill.py)."""

import re

import numpy as np
import pytest

import portnn
from tests.helpers import to_np

# -- Solver data and checkpoint locations (points 6 and 10) -------------------------------


@pytest.fixture(scope="module")
def digits():
    from portnn.data import load_digits

    return {k: v[:100] for k, v in load_digits().items()}


def test_solver_refuses_nonfinite_data(digits):
    model = portnn.FullyConnectedNet([8], input_dim=64, seed=0)
    bad = dict(digits, X_val=np.full_like(digits["X_val"], np.nan))
    with pytest.raises(ValueError, match=r"data\['X_val'\]: holds 6400 non-finite values \(NaN or inf\) of 6400"):
        portnn.Solver(model, bad)
    X = digits["X_train"].copy()
    X[3, 5] = np.inf
    with pytest.raises(ValueError, match=r"data\['X_train'\]: holds 1 non-finite values"):
        portnn.Solver(model, dict(digits, X_train=X))


def test_solver_checks_the_checkpoint_location_at_construction(digits, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    model = portnn.FullyConnectedNet([8], input_dim=64, seed=0)
    with pytest.raises(ValueError, match=r"checkpoint_name: cannot write .*afile/c_epoch_1.npz: .*afile is not a directory"):
        portnn.Solver(model, digits, checkpoint_name=str(tmp_path / "afile" / "c"))
    # a folder that does not exist yet is fine: it is created at the first save
    s = portnn.Solver(model, digits, checkpoint_name=str(tmp_path / "new" / "c"), num_epochs=1, verbose=False)
    s.train()
    assert (tmp_path / "new" / "c_epoch_1.npz").exists()


def test_save_into_a_file_parent_names_the_checkpoint(tmp_path):
    (tmp_path / "afile").write_text("x")
    model = portnn.FullyConnectedNet([4], input_dim=3, seed=0)
    with pytest.raises(ValueError, match=r"afile/m.npz: cannot write the checkpoint: .*afile is not a directory"):
        portnn.save(model, str(tmp_path / "afile" / "m.npz"))


def test_unwritable_folder_names_the_checkpoint_not_the_temporary(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def refusing_open(file, mode="r", *a, **kw):
        if "w" in mode and str(file).endswith(".tmp"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", refusing_open)
    model = portnn.FullyConnectedNet([4], input_dim=3, seed=0)
    path = str(tmp_path / "m.npz")
    with pytest.raises(OSError) as e:
        portnn.save(model, path)
    assert f"{path}: cannot write the checkpoint (Permission denied)" in str(e.value)
    assert ".tmp" not in str(e.value)


# -- checkpoint paths and hand-edited manifests (point 9) ---------------------------------


def _saved_solver(digits, path):
    model = portnn.FullyConnectedNet([8], input_dim=64, seed=0)
    solver = portnn.Solver(model, digits, num_epochs=1, verbose=False, seed=0).train()
    portnn.save(solver, path)
    return solver


def test_either_path_of_a_checkpoint_loads(digits, tmp_path):
    path = str(tmp_path / "run.npz")
    solver = _saved_solver(digits, path)
    for p in (path, path + ".json"):
        resumed = portnn.load(p, data=digits)
        assert resumed.loss_history == solver.loss_history
        assert np.array_equal(to_np(resumed.model.params["W1"]), to_np(solver.model.params["W1"]))


def test_foreign_npz_is_not_a_portnn_checkpoint(tmp_path):
    path = str(tmp_path / "plain.npz")
    np.savez(path, a=np.ones(3))
    with pytest.raises(ValueError, match=r"plain.npz: not a portnn checkpoint \(no manifest inside it"):
        portnn.load(path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text.npz: damaged or not a portnn checkpoint"):
        portnn.load(str(tmp_path / "text.npz"))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["meta"]["solver"].update(epoch="two"),
     r"manifest field solver.epoch: expected an integer >= 0, got 'two'"),
    (lambda m: m["meta"]["solver"].pop("batch_size"), r"manifest field solver: missing fields \['batch_size'\]"),
    (lambda m: m["meta"]["solver"].update(batch_size="x"),
     r"manifest field solver.batch_size: expected an integer >= 1, got 'x'"),
    (lambda m: m["meta"]["solver"].update(loss_history="abc"),
     r"manifest field solver.loss_history: expected a list, got 'abc'"),
    (lambda m: m["meta"]["model"].update(rng_step="x"), r"manifest field model.rng_step: expected an integer"),
    (lambda m: m["meta"]["solver"].update(optim_config={"learning_rate": -1}),
     r"manifest field solver.optim_config\['learning_rate'\]: expected"),
])
def test_hand_edited_manifest_names_file_and_field(digits, tmp_path, edit, match):
    from tests.checkpoint_helpers import rewrite_manifest

    path = str(tmp_path / "run.npz")
    _saved_solver(digits, path)
    rewrite_manifest(path, edit)
    with pytest.raises((TypeError, ValueError), match=re.escape(path) + ": " + match):
        portnn.load(path, data=digits)


def test_a_bad_override_is_the_callers_error_not_the_files(digits, tmp_path):
    path = str(tmp_path / "run.npz")
    _saved_solver(digits, path)
    with pytest.raises(ValueError, match=r"^num_epochs: expected an integer >= 0, got -1"):
        portnn.load(path, data=digits, num_epochs=-1)
