"""Progress output, callbacks and early stopping, schedules, predict and plots."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest

import portnn
from portnn import schedules
from portnn.data import load_digits
from tests.helpers import to_np


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return {k: v[:200] for k, v in d.items()}


def make_solver(data, backend=None, **kw):
    model = portnn.FullyConnectedNet([20], input_dim=64, weight_scale=0.1, seed=0, backend=backend)
    args = dict(update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=50, num_epochs=2, seed=0)
    args.update(kw)
    return portnn.Solver(model, data, **args)


def test_verbose_false_prints_nothing(digits, capsys):
    make_solver(digits, verbose=False).train()
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_log_lines_when_not_a_terminal(digits, capsys):
    make_solver(digits, verbose=True, print_every=2).train()
    out, err = capsys.readouterr()
    assert re.search(r"^\(Iteration 2 / 8\) loss: [\d.]+$", out, re.M)
    assert len(re.findall(r"^\(Epoch \d / 2\)", out, re.M)) == 3
    assert err == ""


def test_progress_bar_on_a_terminal(digits, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    import portnn.solver as solver_module
    monkeypatch.setattr(solver_module, "_stderr_is_terminal", lambda: True)
    make_solver(digits, verbose=True, print_every=2).train()
    out, err = capsys.readouterr()
    assert "epoch 1/2" in err and "4/4" in err and "loss=" in err and "ex_per_s=" in err
    assert "(Iteration" not in out  # the bar replaces the per-iteration lines


def test_callbacks_and_early_stop(digits):
    seen = []

    class StopAfterFive:
        def on_iteration(self, solver):
            seen.append(solver.iteration)
            if solver.iteration == 5:
                solver.stop_training = True

        def on_epoch_end(self, solver):
            seen.append(("epoch", solver.epoch))

    solver = make_solver(digits, verbose=False, num_epochs=10, callbacks=[StopAfterFive()])
    solver.train()
    assert seen == [1, 2, 3, 4, ("epoch", 1), 5]
    assert solver.iteration == 5 and solver.epoch == 1 and len(solver.loss_history) == 5


def test_schedule_factors_and_roundtrip():
    s = schedules.LinearWarmup(4, then=schedules.CosineDecay(10, final_factor=0.1))
    assert [s.factor(i, 0) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s.factor(4, 0) == 1.0 and s.factor(14, 0) == pytest.approx(0.1) and s.factor(99, 9) == pytest.approx(0.1)
    assert s.factor(9, 0) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    step = schedules.StepDecay(2, 0.5)
    assert [step.factor(0, e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    for sch in (s, step, schedules.Constant()):
        back = schedules.from_dict(sch.to_dict())
        assert back.to_dict() == sch.to_dict()
    with pytest.raises(ValueError, match="unknown kind"):
        schedules.from_dict({"kind": "exp"})
    with pytest.raises(ValueError, match="gamma"):
        schedules.StepDecay(1, 0.0)


def test_solver_applies_schedule(digits):
    seen = []

    class Spy:
        def on_iteration(self, solver):
            seen.append(solver.optim_configs["W1"]["learning_rate"])

    sch = schedules.LinearWarmup(2, then=schedules.StepDecay(1, 0.5))
    make_solver(digits, verbose=False, lr_decay=1.0, lr_schedule=sch, callbacks=[Spy()]).train()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4])
    with pytest.raises(ValueError, match="lr_schedule: needs optim_config"):
        portnn.Solver(portnn.TwoLayerNet(input_dim=64), digits, lr_schedule=sch)


def test_predict_matches_scores_with_one_transfer(backend, digits):
    model = portnn.FullyConnectedNet([20], input_dim=64, weight_scale=0.1, seed=0, backend=backend)
    X = digits["X_val"]
    pred = model.predict(X, batch_size=7)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.int64 and pred.shape == (200,)
    scores = to_np(model.loss(backend.asarray(X, dtype="float32")))
    np.testing.assert_array_equal(pred, scores.argmax(axis=1))
    calls = []
    original = backend._host_copy
    backend._host_copy = lambda x: calls.append(1) or original(x)
    try:
        model.predict(X, batch_size=7)
    finally:
        backend._host_copy = original
    assert len(calls) <= 1  # numpy's to_numpy needs no copy at all
    assert model.predict(X[:0]).shape == (0,)


def test_plots_are_written(digits, tmp_path):
    pytest.importorskip("matplotlib")
    from portnn import plot
    solver = make_solver(digits, verbose=False).train()
    for fn, name in ((plot.plot_history, "h.png"), (plot.plot_training, "t.png")):
        path = tmp_path / name
        fn(solver, str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cnn = portnn.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=6, filter_size=3, hidden_dim=10, seed=0)
    path = tmp_path / "w.png"
    plot.plot_first_layer(cnn, str(path))
    assert path.stat().st_size > 1000
    imgs = plot.first_layer_images(solver.model)
    assert imgs.shape == (20, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1


def test_cli_plot_save_eval_and_resume(tmp_path):
    pytest.importorskip("matplotlib")
    run = lambda *a: subprocess.run([sys.executable, "-m", "portnn", *a], capture_output=True, text=True,
                                    check=True, timeout=300).stdout
    png, model, ck = tmp_path / "c.png", tmp_path / "m.npz", tmp_path / "ck"
    out = run("train", "--model", "cnn", "--epochs", "2", "--plot", str(png), "--save", str(model),
              "--checkpoint", str(ck), "--schedule", "cosine", "--warmup", "5")
    assert png.read_bytes()[:4] == b"\x89PNG"
    test_acc = re.search(r"test acc ([\d.]+)", out).group(1)
    ev = run("eval", str(model))
    assert f"test acc {test_acc}" in ev
    out2 = run("train", "--resume", f"{ck}_epoch_2.npz", "--epochs", "3")
    assert "resuming" in out2 and "(Epoch 3 / 3)" in out2


def test_first_layer_images_of_a_sequential():
    """--plot draws the first weight the input meets: "0.W" in a Sequential (it used to
    read params["W1"], a KeyError for any Sequential)."""
    from portnn import plot
    from portnn.blocks import Affine, Conv, ReLU

    conv = portnn.Sequential([Conv(5, 3), ReLU(), Affine(10)], input_dim=(1, 8, 8), seed=0)
    assert plot.first_layer_name(conv) == "0.W"
    assert plot.first_layer_images(conv).shape == (5, 3, 3)
    dense = portnn.Sequential([Affine(7), ReLU(), Affine(10)], input_dim=(1, 8, 8), seed=0)
    imgs = plot.first_layer_images(dense)
    assert imgs.shape == (7, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1
