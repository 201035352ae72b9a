"""portnn.selftest: passes on the CPU backends, and catches a layer that is wrong
on one backend only."""

import numpy as np
import pytest

import portnn.layers
from portnn import selftest
from portnn.backends import get_backend


def _available(name):
    try:
        get_backend(name)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("name", ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not _available("torch"), reason="torch not installed"))])
def test_selftest_passes(name):
    rows = selftest.run_selftest(name)
    assert {r["dtype"] for r in rows} == {"float64", "float32"}
    assert len(rows) == 2 * len(selftest.CHECKS)
    bad = [(r["check"], r["dtype"], r["error"]) for r in rows if not r["passed"]]
    assert not bad, bad
    for r in rows:
        assert r["err"] <= r["tol"]


def test_main_exit_status_and_table(capsys):
    assert selftest.main(["--backend", "numpy", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "max pool 3x3 s2" in out and "passed on numpy" in out


def test_unknown_backend_exits_2(capsys):
    assert selftest.main(["--backend", "no_such_backend"]) == 2
    assert "unknown backend" in capsys.readouterr().err


@pytest.mark.skipif(not _available("torch"), reason="torch not installed")
def test_detects_a_layer_broken_on_one_backend(monkeypatch, capsys):
    real = portnn.layers.relu_forward

    def broken(x):  # wrong on torch only, right on numpy (the reference)
        out, cache = real(x)
        if not isinstance(out, np.ndarray):
            out = out + 1e-3
        return out, cache

    monkeypatch.setattr(portnn.layers, "relu_forward", broken)
    rows = selftest.run_selftest("torch", dtypes=("float64",), checks=["relu", "affine"])
    by = {r["check"]: r for r in rows}
    assert not by["relu"]["passed"] and by["relu"]["err"] > 1e-4
    assert by["affine"]["passed"]
    assert selftest.main(["--backend", "torch", "--dtype", "float64", "-q"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_detects_a_crash_and_a_dtype_change(monkeypatch):
    real = portnn.layers.affine_forward

    def upcasts(x, w, b):
        out, cache = real(x, w, b)
        if isinstance(out, np.ndarray):
            return out, cache
        xp = get_backend("array_api_strict").xp
        return xp.astype(out, xp.float64), cache

    monkeypatch.setattr(portnn.layers, "affine_forward", upcasts)
    rows = selftest.run_selftest("array_api_strict", dtypes=("float32",), checks=["affine"])
    assert not rows[0]["passed"] and "dtype" in rows[0]["error"]

    def crashes(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(portnn.layers, "relu_forward", crashes)
    rows = selftest.run_selftest("numpy", dtypes=("float64",), checks=["relu"])
    assert not rows[0]["passed"] and "boom" in rows[0]["error"]
