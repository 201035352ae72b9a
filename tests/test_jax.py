"""The JAX backend's own contract: device specs, the 64-bit switch portnn never flips,
tracers in namespace(), host round trips. (Every other test runs on the jax leg too.)"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax not installed (pip install 'portnn[jax]')")

from portnn.backends import BackendError, backend_of, get_backend, namespace  # noqa: E402


def test_jax_backend_round_trip():
    be = get_backend("jax")
    assert be.name == "jax" and be.device == jax.devices()[0]
    host = np.arange(6.0).reshape(2, 3)
    x = be.asarray(host, dtype="float64")
    assert isinstance(x, jax.Array) and x.dtype == be.xp.float64
    assert backend_of(x) == be
    back = be.to_numpy(x * 2)
    assert isinstance(back, np.ndarray) and np.array_equal(back, host * 2)
    assert get_backend("jax:cpu") == be


def test_unknown_or_missing_jax_device():
    with pytest.raises(BackendError, match=r"jax: unknown device 'tpx'"):
        get_backend("jax:tpx")
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(BackendError, match=r"jax: no gpu device visible .*portnn\[jax-cuda12\]"):
            get_backend("jax:gpu")


def test_namespace_accepts_tracers_beside_concrete_arrays():
    be = get_backend("jax")
    w = be.asarray(np.ones((3, 2)), dtype="float32")

    @jax.jit
    def f(x):
        xp = namespace(x, w)  # x traced (no device), w concrete
        return xp.sum(x @ w)

    assert float(f(be.asarray(np.ones((4, 3)), dtype="float32"))) == 24.0


def test_float64_without_x64_is_a_clear_error():
    # JAX's 64-bit switch is process-wide and the test suite turns it on, so ask a fresh process.
    code = textwrap.dedent("""
        import numpy as np, portnn
        from portnn.backends import BackendError, get_backend
        be = get_backend("jax")
        assert be.asarray(np.ones(2, dtype=np.float32)).dtype == be.xp.float32
        assert be.asarray(np.arange(3)).dtype == be.xp.int32   # JAX's own integers in 32-bit mode
        for make in (lambda: be.asarray(np.ones(2)), lambda: be.dtype("float64"),
                     lambda: portnn.FullyConnectedNet([4], input_dim=3, dtype="float64", backend="jax")):
            try:
                make()
            except BackendError as e:
                print("refused:", e)
            else:
                raise SystemExit("float64 was not refused")
        import jax
        assert not jax.config.jax_enable_x64  # portnn did not flip it
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"JAX_ENABLE_X64": "0", "PATH": "", **_pythonpath()})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "jax: float64 requested but JAX runs in 32-bit mode" in line
        assert "jax.config.update('jax_enable_x64', True)" in line and "JAX_ENABLE_X64=1" in line


def _pythonpath():
    import os

    return {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "HOME": os.environ.get("HOME", "/tmp")}


def test_cli_train_on_jax_eager_and_compiled_matches_numpy(capsys):
    from portnn.cli import main

    results = {}
    for args in (["--backend", "numpy"], ["--backend", "jax"], ["--backend", "jax", "--compile"]):
        assert main(["train", "--epochs", "3", "--quiet", *args]) == 0
        results[" ".join(args)] = capsys.readouterr().out.strip().splitlines()[-1].split("(")[0]
    # "best val acc 0.9xxx  test acc 0.9xxx": the same accuracies to the digit everywhere
    assert len(set(results.values())) == 1, results


def test_selftest_passes_on_jax():
    from portnn.selftest import run_selftest

    rows = run_selftest("jax")
    failed = [(r["check"], r["dtype"], r["error"]) for r in rows if not r["passed"]]
    assert rows and failed == []
