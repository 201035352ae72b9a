"""Backend-registered primitives (docs/design.md, rule 2) against the portable reference.

The call shapes are not a hand-made list: the conv and pool layers are run on NumPy
over the layer tests' own configurations (both gradient algorithms, blocked and
one-block columns, every pool geometry, an empty batch) with the primitives recorded,
and every recorded call is replayed on the backend under test through its registered
version and through ``.reference``, in float64 and float32.
"""

import functools

import numpy as np
import pytest

import portnn._windows as windows
from portnn.backends import get_backend, primitives_of
from portnn.layers import conv_backward, conv_forward, max_pool_backward, max_pool_forward
from tests.helpers import to_np, tolerance
from tests.test_conv import LAYER_CASES
from tests.test_pool import CONFIGS as POOL_CASES

REGISTRABLE = ("im2col", "col2im_add", "window_max_grad")


def _run_layers(rng):
    """Every conv/pool configuration of the layer tests, forward and backward, on NumPy."""
    for xs, ws, stride, pad in LAYER_CASES + [((0, 2, 5, 5), (3, 2, 3, 3), 1, 1)]:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[0])
        algorithms = ["columns"] + (["correlation"] if stride == 1 and pad < min(ws[2:]) else [])
        for algorithm in algorithms:
            for max_bytes in (2**30, 64 * ws[1] * ws[2] * ws[3]):  # one block; one image per block
                param = {"stride": stride, "pad": pad, "grad_algorithm": algorithm, "max_col_bytes": max_bytes}
                out, cache = conv_forward(x, w, b, param)
                conv_backward(rng.standard_normal(out.shape), cache)
    for xs, ph, pw, s in POOL_CASES:
        out, cache = max_pool_forward(np.round(rng.standard_normal(xs)), {"pool_height": ph, "pool_width": pw, "stride": s})
        max_pool_backward(rng.standard_normal(out.shape), cache)


@functools.lru_cache(maxsize=1)
def recorded_calls():
    """[(primitive name, host args)] of every distinct call the layers made above."""
    calls, seen = [], set()

    def recording(xp):
        def wrap(name, fn):
            def record(*args):
                key = (name,) + tuple(a.shape if hasattr(a, "shape") else a for a in args)
                if key not in seen:
                    seen.add(key)
                    calls.append((name, tuple(np.array(a) if hasattr(a, "shape") else a for a in args)))
                return fn(*args)
            return record
        return {name: wrap(name, getattr(windows, name).reference) for name in REGISTRABLE}

    saved = windows.primitives_of
    windows.primitives_of = recording
    try:
        _run_layers(np.random.default_rng(0))
    finally:
        windows.primitives_of = saved
    return calls


def test_the_layers_call_every_registrable_primitive():
    names = {name for name, _ in recorded_calls()}
    assert names == set(REGISTRABLE)
    assert len(recorded_calls()) > 40  # the layer configurations give many distinct shapes


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_registered_primitives_match_the_reference(backend, dtype):
    table = primitives_of(backend.xp)
    if not table:
        pytest.skip(f"{backend.name} registers no primitives (it runs the portable ones)")
    assert set(table) <= set(REGISTRABLE)
    for name, host_args in recorded_calls():
        if name not in table:
            continue
        # The reference runs on NumPy (the same portable code, without this backend's
        # per-op cost), on the same values in the same dtype.
        host = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in host_args]
        args = [backend.xp.asarray(a, device=backend.device) if isinstance(a, np.ndarray) else a for a in host]
        got = getattr(windows, name)(*args)
        want = getattr(windows, name).reference(*host)
        shapes = [getattr(a, "shape", a) for a in host_args]
        assert to_np(got).dtype == want.dtype, (name, shapes)
        assert tuple(got.shape) == want.shape, (name, shapes)
        np.testing.assert_allclose(to_np(got), want, **tolerance(dtype), err_msg=f"{name} {shapes}")


def test_numpy_runs_the_portable_primitives():
    assert primitives_of(get_backend("numpy").xp) == {}
    for name in REGISTRABLE:
        assert getattr(windows, name).reference.__module__ == "portnn._windows"


def test_dispatch_uses_a_registered_primitive(monkeypatch):
    """A registered function really replaces the portable one (and only for its namespace)."""
    xp = get_backend("numpy").xp
    calls = []

    def fake(xt, *args):
        calls.append(args)
        return windows.im2col.reference(xt, *args)

    monkeypatch.setattr(windows, "primitives_of", lambda ns: {"im2col": fake} if ns is xp else {})
    xt = np.zeros((1, 1, 4, 4))
    windows.im2col(xt, 2, 2, 1, 3, 3)
    assert calls == [(2, 2, 1, 3, 3)]
