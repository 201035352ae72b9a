"""Solver(compile=True): the training step (loss, gradients, update) as one jax.jit
program.

Tracing is the proof that no step hides a host read: a float(), int(), bool() or
.item() on a traced value anywhere in a layer, the loss, the regularisation or an
update rule raises jax.errors.ConcretizationTypeError while the step is traced, so
every model and rule that trains here is free of them (and the negative tests show
that such a read does fail). The compiled run must give the eager run's losses and
params (to float32 rounding), draw the same dropout masks (device-side fold-in,
bit-identical to the host's), compile a bounded number of times, and resume from
checkpoints.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax not installed (pip install 'portnn[jax]')")

import portnn  # noqa: E402
from portnn import random as prandom  # noqa: E402
from portnn.backends import BackendError, get_backend  # noqa: E402
from portnn.data import load_digits  # noqa: E402
from portnn.distributed import SingleProcessCommunicator  # noqa: E402
from portnn.schedules import CosineDecay  # noqa: E402
from portnn.solver import Solver  # noqa: E402

RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")
LEARNING_RATES = {"sgd": 5e-2, "sgd_momentum": 2e-2, "rmsprop": 1e-3, "adam": 1e-3}

# (normalization, dropout keep ratio) for FullyConnectedNet; "cnn" is ThreeLayerConvNet.
MODELS = {
    "fcn": (None, 1.0),
    "fcn-dropout": (None, 0.8),
    "fcn-batchnorm": ("batchnorm", 1.0),
    "fcn-batchnorm-dropout": ("batchnorm", 0.8),
    "fcn-layernorm": ("layernorm", 1.0),
    "fcn-layernorm-dropout": ("layernorm", 0.8),
    "cnn": None,
}

# Tolerances, float32 throughout. XLA fuses and reorders float32 arithmetic (and its
# matmuls may block differently), so the compiled step rounds differently from the eager
# ops: a few ulps (~1e-7 relative) per step, which training then carries along. Measured
# over these 20-step runs: loss histories agree to <= 1e-6 relative, except batchnorm
# with the adaptive rules (rmsprop, adam), measured <= 2e-5: the biases feeding a
# batchnorm have a true gradient of 0, so theirs is pure rounding noise, which rmsprop and
# adam normalise to full-size steps. Eager NumPy and eager JAX differ by the same amount
# there, so it is float32 and not the compiled step. Those biases are not compared.
LOSS_RTOL = 5e-6
LOSS_RTOL_BN_ADAPTIVE = 1e-4
PARAM_ATOL = 1e-5


def _data(flatten, n_train=200, n_val=50):
    d = load_digits(flatten=flatten)
    return {"X_train": d["X_train"][:n_train], "y_train": d["y_train"][:n_train],
            "X_val": d["X_val"][:n_val], "y_val": d["y_val"][:n_val]}


def _model(kind, backend="jax", seed=0):
    if kind == "cnn":
        return portnn.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=16,
                                        weight_scale=0.05, seed=seed, backend=backend)
    normalization, keep = MODELS[kind]
    return portnn.FullyConnectedNet([32, 32], input_dim=64, normalization=normalization,
                                    dropout_keep_ratio=keep, weight_scale=0.1, reg=1e-3, seed=seed,
                                    backend=backend)


class _Snapshots:
    """Callback: the model's params after every epoch (before restore_best)."""

    def __init__(self):
        self.params = []

    def on_epoch_end(self, solver):
        self.params.append({k: np.asarray(v) for k, v in solver.model.params.items()})


def _train(kind, compile, rule="adam", num_epochs=2, backend="jax", **kwargs):
    model = _model(kind, backend)
    snaps = _Snapshots()
    solver = Solver(model, _data(kind != "cnn"), update_rule=rule,
                    optim_config={"learning_rate": LEARNING_RATES[rule]}, lr_decay=0.9, batch_size=20,
                    num_epochs=num_epochs, verbose=False, seed=0, callbacks=[snaps], compile=compile,
                    **kwargs)
    solver.train()
    return solver, snaps.params


def _counting_compile(monkeypatch, backend):
    """Count how often the compiled step's Python function runs, i.e. is traced."""
    calls = []
    original = backend.compile

    def compile(fn):
        def counted(*args):
            calls.append(1)
            return fn(*args)
        return original(counted)

    monkeypatch.setattr(backend, "compile", compile)
    return calls


# ---------------------------------------------------------------- compiled == eager
def _assert_same_run(kind, rule):
    eager, eager_params = _train(kind, False, rule)
    compiled, compiled_params = _train(kind, True, rule)
    assert len(compiled.loss_history) == len(eager.loss_history) == 20
    rtol = LOSS_RTOL_BN_ADAPTIVE if "batchnorm" in kind and rule in ("rmsprop", "adam") else LOSS_RTOL
    np.testing.assert_allclose(compiled.loss_history, eager.loss_history, rtol=rtol, atol=0)
    noise = {f"b{i}" for i in (1, 2)} if "batchnorm" in kind and rule in ("rmsprop", "adam") else set()
    for e, c in zip(eager_params, compiled_params):
        for k in e:
            if k not in noise:
                np.testing.assert_allclose(c[k], e[k], rtol=0, atol=PARAM_ATOL, err_msg=k)
    # Accuracies: at most one of the 200 / 50 samples may flip on a near-tie of two scores.
    np.testing.assert_allclose(compiled.train_acc_history, eager.train_acc_history, rtol=0, atol=1.01 / 200)
    np.testing.assert_allclose(compiled.val_acc_history, eager.val_acc_history, rtol=0, atol=1.01 / 50)
    # The model holds concrete arrays again, optimizer state included.
    assert all(isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer)
               for v in list(compiled.model.params.values()) + list(compiled.model.buffers().values()))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_compiled_run_matches_eager_adam(kind):
    _assert_same_run(kind, "adam")


@pytest.mark.parametrize("kind", ["fcn-dropout", "fcn-batchnorm-dropout", "cnn"])
@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "rmsprop"])
def test_compiled_run_matches_eager_rules(kind, rule):
    _assert_same_run(kind, rule)


def test_optimizer_state_reaches_the_host():
    """Defaults set by a rule on first use and Adam's step count are host Python
    numbers after compiled steps, as after eager ones; the state arrays are concrete."""
    eager, _ = _train("fcn-dropout", False, "adam", num_epochs=1)
    compiled, _ = _train("fcn-dropout", True, "adam", num_epochs=1)
    for name, config in compiled.optim_configs.items():
        ref = eager.optim_configs[name]
        assert sorted(config) == sorted(ref)
        assert config["t"] == ref["t"] == 10 and isinstance(config["t"], int)
        for k in ("learning_rate", "beta1", "beta2", "epsilon"):
            assert config[k] == ref[k] and isinstance(config[k], float)
        for k in ("m", "v"):
            assert isinstance(config[k], jax.Array) and config[k].dtype == jax.numpy.float32


# ---------------------------------------------------------------- compilations
@pytest.mark.parametrize("rule", RULES)
def test_compiles_a_bounded_number_of_times(monkeypatch, rule):
    """One trace per input structure: the first step creates the optimizer state, the
    batchnorm statistics and the rule's defaults, later steps only change values.
    lr_decay (between epochs) and a schedule (every step) change an input, never the
    program."""
    calls = _counting_compile(monkeypatch, get_backend("jax"))
    model = _model("fcn-batchnorm-dropout")
    solver = Solver(model, _data(True), update_rule=rule, optim_config={"learning_rate": 1e-3},
                    lr_decay=0.5, lr_schedule=CosineDecay(total_iterations=60), batch_size=20, num_epochs=1,
                    verbose=False, seed=0, compile=True)
    solver.train()
    after_one = len(calls)
    assert 1 <= after_one <= 3
    rates = {solver.current_learning_rate()}
    solver.num_epochs = 3
    solver.train()
    rates.add(solver.current_learning_rate())
    assert len(rates) == 2  # the rate did change...
    assert len(calls) == after_one  # ...and 20 more steps traced nothing
    assert solver._compiled.traces == after_one


# ---------------------------------------------------------------- no hidden host reads
_READS = {
    "float": lambda v: float(v),
    "int": lambda v: int(v),
    "bool": lambda v: bool(v > 0),
    "item": lambda v: v.item(),
}


@pytest.mark.parametrize("read", sorted(_READS))
def test_a_host_read_in_a_layer_fails_the_trace(monkeypatch, read):
    """The proof works: a layer that reads a value on the host cannot be compiled."""
    import portnn.layers.losses as losses

    original = losses.softmax_loss_device

    def reading_loss(scores, y):
        loss, dscores = original(scores, y)
        _READS[read](loss)
        return loss, dscores

    monkeypatch.setattr(losses, "softmax_loss_device", reading_loss)
    model = _model("fcn-batchnorm-dropout")
    before = dict(model.params)
    solver = Solver(model, _data(True), batch_size=20, num_epochs=1, verbose=False, seed=0, compile=True)
    with pytest.raises(jax.errors.ConcretizationTypeError):
        solver.train()
    # The failed trace (after batchnorm stored traced running statistics) left the model
    # as it was: its own params, no traced value anywhere.
    assert all(model.params[k] is before[k] for k in before)
    assert not any(isinstance(v, jax.core.Tracer) for v in model.buffers().values())
    assert model._trace is None
    assert solver.iteration == 0 and solver.loss_history == []


def test_a_host_read_in_an_update_rule_fails_the_trace():
    def reading_sgd(w, dw, config):
        xp = get_backend("jax").xp
        if float(xp.sum(dw)) > 1e9:  # a hidden device sync
            raise AssertionError
        return portnn.optim.sgd(w, dw, config)

    solver = Solver(_model("fcn"), _data(True), update_rule=reading_sgd, batch_size=20, num_epochs=1,
                    verbose=False, seed=0, compile=True)
    with pytest.raises(jax.errors.ConcretizationTypeError):
        solver.train()
    eager = Solver(_model("fcn"), _data(True), update_rule=reading_sgd, batch_size=20, num_epochs=1,
                   verbose=False, seed=0)
    eager.train()  # the same rule is fine eagerly: only the compiled step needs it pure


# ---------------------------------------------------------------- refused settings
def test_compile_needs_a_backend_that_compiles():
    msg = (r"numpy: cannot compile a training step; compile=True needs the jax backend "
           r"\(pip install 'portnn\[jax\]'\)")
    with pytest.raises(BackendError, match=msg):
        Solver(_model("fcn", backend="numpy"), _data(True), compile=True, verbose=False)
    with pytest.raises(BackendError, match=msg):
        get_backend("numpy").compile(lambda x: x)


def test_compile_refuses_skip_and_comm():
    with pytest.raises(ValueError, match=r"on_nonfinite: 'skip' decides at every step on the host .* "
                                         r"use on_nonfinite='raise' \(the default, checked at each report\) "
                                         r"with compile=True"):
        Solver(_model("fcn"), _data(True), compile=True, on_nonfinite="skip", verbose=False)
    with pytest.raises(ValueError, match=r"compile: compile=True does not support data-parallel"):
        Solver(_model("fcn"), _data(True), compile=True, comm=SingleProcessCommunicator(), verbose=False)
    with pytest.raises(TypeError, match=r"compile: expected True or False, got 1"):
        Solver(_model("fcn"), _data(True), compile=1, verbose=False)
    # A state whose settings say "skip" cannot be loaded into a compiled solver either.
    skipper = Solver(_model("fcn"), _data(True), on_nonfinite="skip", verbose=False, num_epochs=0)
    compiled = Solver(_model("fcn"), _data(True), compile=True, verbose=False)
    with pytest.raises(ValueError, match=r"on_nonfinite: 'skip'"):
        compiled.load_state(skipper.state())
    assert compiled.on_nonfinite == "raise"


def test_divergence_is_reported_from_a_compiled_run():
    solver = Solver(_model("fcn"), _data(True), optim_config={"learning_rate": 1e30}, batch_size=20,
                    num_epochs=1, verbose=False, seed=0, compile=True)
    with pytest.raises(portnn.solver.DivergenceError, match="non-finite"):
        solver.train()


# ---------------------------------------------------------------- checkpoints
def test_compiled_run_resumes_from_a_checkpoint(tmp_path):
    kind, rule = "fcn-batchnorm-dropout", "adam"
    whole, _ = _train(kind, True, rule, num_epochs=2)
    first, _ = _train(kind, True, rule, num_epochs=1, checkpoint_name=str(tmp_path / "run"))
    path = str(tmp_path / "run_epoch_1.npz")
    resumed = portnn.load(path, backend="jax", data=_data(True), compile=True, num_epochs=2)
    assert resumed.compile and resumed.iteration == 10
    resumed.train()
    # The resumed run compiles the same program for the same inputs: bit for bit.
    assert resumed.loss_history == whole.loss_history
    assert resumed.val_acc_history == whole.val_acc_history
    for k, v in whole.model.params.items():
        np.testing.assert_array_equal(np.asarray(resumed.model.params[k]), np.asarray(v), err_msg=k)
    # compile is a way of computing, not a setting of the run: the file resumes eagerly too.
    eager = portnn.load(path, backend="jax", data=_data(True), num_epochs=2)
    assert not eager.compile


# ---------------------------------------------------------------- device-side keys
SEED = 0x5EED_1234_ABCD_0042


def _words(key):
    return int(key.k0), int(key.k1)


@pytest.mark.parametrize("spec", ["numpy", "jax"])
def test_device_fold_in_equals_host_fold_in(spec):
    be = get_backend(spec)
    xp = be.xp
    for seed in (0, 1, SEED, 2**64 - 1):
        for data in ((0,), (7, 3), (2**40 + 5, 1, 2), (2**63 - 1,)):
            host = prandom.fold_in(seed, *data)
            step = xp.asarray(data[0], dtype=xp.int64)
            key = prandom.fold_in_device(prandom.device_key(seed, xp, be.device), step, *data[1:])
            assert _words(key) == (host & 0xFFFFFFFF, host >> 32)
            assert _words(prandom.device_key(host, xp, be.device)) == _words(key)


@pytest.mark.parametrize("spec", ["numpy", "jax"])
@pytest.mark.parametrize("offset", [0, 3, 2**33 - 5, 2**33 + 4])
def test_masks_from_a_device_key_equal_masks_from_the_host_seed(spec, offset):
    be = get_backend(spec)
    xp = be.xp
    host = prandom.fold_in(SEED, 12, 2)
    key = prandom.fold_in_device(prandom.device_key(SEED, xp, be.device), xp.asarray(12, dtype=xp.int64), 2)
    for p in (0.8, 0.5):
        np.testing.assert_array_equal(be.to_numpy(prandom.keep_mask(key, (13, 7), p, xp, be.device, offset)),
                                      prandom.keep_mask(host, (13, 7), p, np, "cpu", offset))
    np.testing.assert_array_equal(be.to_numpy(prandom.random_bits(key, 21, xp, be.device, offset)),
                                  prandom.random_bits(host, 21, np, "cpu", offset))


def test_masks_under_jit_equal_eager_masks():
    be = get_backend("jax")
    xp = be.xp

    @jax.jit
    def mask(step):
        key = prandom.fold_in_device(prandom.device_key(SEED, xp, be.device), step, 3)
        return prandom.keep_mask(key, (16, 32), 0.8, xp, None)

    for step in (0, 1, 2**35):
        eager = prandom.keep_mask(prandom.fold_in(SEED, step, 3), (16, 32), 0.8, xp, be.device)
        np.testing.assert_array_equal(np.asarray(mask(xp.asarray(step, dtype=xp.int64))), np.asarray(eager))


@pytest.mark.parametrize("seed,stream", [(7, 0), (7, 3), (None, 0)])
def test_traced_model_derives_the_hosts_dropout_seeds(seed, stream):
    """Inside a trace the model's per-layer keys come from the traced step: equal to
    the host's fold_in(seed, rng_step, layer[, stream]) when seeded, and still new at
    every step when unseeded (one fresh seed per model, folded with the step)."""
    model = _model("fcn-dropout")
    model.seed, model.rng_stream = seed, stream
    xp = model.backend.xp

    @jax.jit
    def keys(step):
        with model._traced_state(model.params, {}, step):
            return [model._dropout_seed(layer) for layer in (1, 2)]

    for step in (0, 1, 41):
        got = [_words(k) for k in keys(xp.asarray(step, dtype=xp.int64))]
        if seed is None:
            assert got != [_words(k) for k in keys(xp.asarray(step + 1, dtype=xp.int64))]
            continue
        model.rng_step = step
        host = [model._dropout_seed(layer) for layer in (1, 2)]
        assert got == [(h & 0xFFFFFFFF, h >> 32) for h in host]
    assert model._trace is None


def test_bad_device_keys():
    xp = get_backend("numpy").xp
    with pytest.raises(TypeError, match=r"seed.k0: expected a 0-d int64 array"):
        prandom.keep_mask(prandom.DeviceKey(xp.zeros(2, dtype=xp.int64), xp.asarray(0)), 4, 0.5, xp)
    with pytest.raises(TypeError, match=r"seed.k1: expected a 0-d int64 array, got dtype int32"):
        prandom.keep_mask(prandom.DeviceKey(xp.asarray(0), xp.asarray(0, dtype=xp.int32)), 4, 0.5, xp)


# ---------------------------------------------------------------- update rules on traced scalars
@pytest.mark.parametrize("spec", ["numpy", "jax"])
@pytest.mark.parametrize("rule", RULES)
def test_rules_take_array_learning_rate_and_step_count(spec, rule):
    """learning_rate as a 0-d array of w's dtype and t as a 0-d integer array give the
    Python-number results (float32 kept; Adam's corrections rounded once to float32)."""
    be = get_backend(spec)
    xp = be.xp
    rng = np.random.default_rng(0)
    w, dw = (be.asarray(rng.standard_normal((5, 4)), dtype="float32") for _ in range(2))
    numbers = {"learning_rate": 1e-2, **({"t": 3} if rule == "adam" else {})}
    arrays = {"learning_rate": xp.asarray(1e-2, dtype=xp.float32),
              **({"t": xp.asarray(3, dtype=xp.int64)} if rule == "adam" else {})}
    fn = portnn.optim.UPDATE_RULES[rule]
    ref, _ = fn(w, dw, dict(numbers))
    out, config = fn(w, dw, dict(arrays))
    assert out.dtype == xp.float32
    np.testing.assert_allclose(be.to_numpy(out), be.to_numpy(ref), rtol=1e-6, atol=0)
    if rule == "adam":
        assert int(config["t"]) == 4
    with pytest.raises(TypeError, match=r"config\['learning_rate'\]: expected a number or a 0-d array of "
                                        r"dtype float32"):
        fn(w, dw, {"learning_rate": xp.asarray(1e-2, dtype=xp.float64)})
    with pytest.raises(ValueError, match=r"config\['learning_rate'\]"):
        fn(w, dw, {"learning_rate": xp.ones(2, dtype=xp.float32)})


def test_adam_step_count_array_checked():
    xp = get_backend("numpy").xp
    w = xp.ones(3, dtype=xp.float32)
    with pytest.raises(TypeError, match=r"config\['t'\]: expected an integer step count or a 0-d integer array"):
        portnn.optim.adam(w, w, {"t": xp.asarray(1.0, dtype=xp.float32)})


# ---------------------------------------------------------------- 32-bit JAX
def test_dropout_on_32_bit_jax_is_a_clear_error():
    code = textwrap.dedent("""
        import numpy as np, portnn
        from portnn import random as prandom
        from portnn.backends import BackendError, get_backend
        be = get_backend("jax")
        for make in (lambda: prandom.keep_mask(123, (4, 4), 0.5, be.xp, be.device),
                     lambda: prandom.device_key(123, be.xp, be.device)):
            try:
                make()
            except BackendError as e:
                print("refused:", e)
            else:
                raise SystemExit("int64 work on 32-bit JAX was not refused")
    """)
    env = {"JAX_ENABLE_X64": "0", "PATH": "", "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "portnn.random: the Threefry generator (dropout masks) needs int64 arrays" in line
        assert "jax.config.update('jax_enable_x64', True)" in line
