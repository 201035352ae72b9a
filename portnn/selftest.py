"""Self-test: every layer, sandwich layer, model step, update rule and the RNG on one
backend, compared with the same call on NumPy.

    portnn selftest --backend cupy             # float64 and float32, table + exit status
    python -m portnn.selftest --backend torch  # the same without the CLI wiring

Each check builds its inputs on the host (seeded NumPy), runs the same portnn
calls on NumPy and on the backend under test, copies every output back with
``Backend.to_numpy`` and reports the largest difference scaled by the size of
the NumPy result: ``err = max|backend - numpy| / max(1, max|numpy|)``. A check
passes when err <= 1e-9 (float64) or 1e-4 (float32: GPU GEMMs sum in another
order), when integer/boolean outputs (pool argmax routing, dropout masks, RNG
words) are identical, and when the output dtypes are the requested ones.

The table has one row per (check, dtype). ``main`` exits 0 when every row
passes, 1 when any fails and 2 when the backend cannot be used here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np  # host side: inputs and the comparison

from . import layer_utils as LU
from . import layers as L
from . import optim
from . import random as prandom
from ._checks import to_host
from .backends import BackendError, enable_64bit, get_backend

__all__ = ["run_selftest", "format_table", "main", "CHECKS", "TOLERANCES"]

TOLERANCES = {"float64": 1e-9, "float32": 1e-4}


def _rng(seed):
    return np.random.default_rng(seed)


def _rounded_relu(rng, shape):
    """Non-negative data with many exact ties (max-pool tie rule)."""
    return np.maximum(np.round(rng.standard_normal(shape) * 2.0), 0.0)


# Each check: f(B, dt) -> list of outputs (backend arrays, Python floats or None).
# B is a portnn Backend, dt "float64" / "float32". Inputs come from a fixed seed so
# the NumPy run and the backend run see the same numbers.


def _affine(B, dt):
    r = _rng(1)
    x, w, b = (B.asarray(a, dtype=dt) for a in (r.standard_normal((6, 3, 4)), r.standard_normal((12, 5)),
                                                 r.standard_normal(5)))
    out, cache = L.affine_forward(x, w, b)
    return [out, *L.affine_backward(B.asarray(r.standard_normal((6, 5)), dtype=dt), cache)]


def _relu(B, dt):
    r = _rng(2)
    x = B.asarray(r.standard_normal((7, 9)), dtype=dt)
    out, cache = L.relu_forward(x)
    return [out, L.relu_backward(B.asarray(r.standard_normal((7, 9)), dtype=dt), cache)]


def _losses(B, dt):
    r = _rng(3)
    x = B.asarray(r.standard_normal((10, 6)), dtype=dt)
    y = B.asarray(r.integers(0, 6, size=10))
    ls, dxs = L.softmax_loss(x, y)
    lv, dxv = L.svm_loss(x, y)
    return [ls, dxs, lv, dxv]


def _batchnorm(B, dt):
    r = _rng(4)
    x = B.asarray(r.standard_normal((16, 5)) * 3 + 1, dtype=dt)
    g, be = B.asarray(r.standard_normal(5), dtype=dt), B.asarray(r.standard_normal(5), dtype=dt)
    p = {"mode": "train"}
    out, cache = L.batchnorm_forward(x, g, be, p)
    grads = L.batchnorm_backward(B.asarray(r.standard_normal((16, 5)), dtype=dt), cache)
    p["mode"] = "test"
    out_t, cache_t = L.batchnorm_forward(x, g, be, p)
    grads_t = L.batchnorm_backward(B.asarray(r.standard_normal((16, 5)), dtype=dt), cache_t)
    return [out, *grads, p["running_mean"], p["running_var"], out_t, *grads_t]


def _layernorm(B, dt):
    r = _rng(5)
    x = B.asarray(r.standard_normal((8, 7)), dtype=dt)
    g, be = B.asarray(r.standard_normal(7), dtype=dt), B.asarray(r.standard_normal(7), dtype=dt)
    out, cache = L.layernorm_forward(x, g, be, {})
    return [out, *L.layernorm_backward(B.asarray(r.standard_normal((8, 7)), dtype=dt), cache)]


def _spatial_batchnorm(B, dt):
    r = _rng(6)
    x = B.asarray(r.standard_normal((4, 3, 5, 6)) * 2 - 1, dtype=dt)
    g, be = B.asarray(r.standard_normal(3), dtype=dt), B.asarray(r.standard_normal(3), dtype=dt)
    p = {"mode": "train"}
    out, cache = L.spatial_batchnorm_forward(x, g, be, p)
    grads = L.spatial_batchnorm_backward(B.asarray(r.standard_normal((4, 3, 5, 6)), dtype=dt), cache)
    return [out, *grads, p["running_mean"], p["running_var"]]


def _groupnorm(B, dt):
    r = _rng(7)
    x = B.asarray(r.standard_normal((3, 6, 4, 5)), dtype=dt)
    g = B.asarray(r.standard_normal((1, 6, 1, 1)), dtype=dt)
    be = B.asarray(r.standard_normal((1, 6, 1, 1)), dtype=dt)
    out, cache = L.spatial_groupnorm_forward(x, g, be, 2, {})
    return [out, *L.spatial_groupnorm_backward(B.asarray(r.standard_normal((3, 6, 4, 5)), dtype=dt), cache)]


def _dropout(B, dt):
    r = _rng(8)
    x = B.asarray(r.standard_normal((20, 30)), dtype=dt)
    out, cache = L.dropout_forward(x, {"p": 0.7, "mode": "train", "seed": 1234})
    dx = L.dropout_backward(B.asarray(r.standard_normal((20, 30)), dtype=dt), cache)
    test_out, _ = L.dropout_forward(x, {"p": 0.7, "mode": "test"})
    return [out, dx, test_out]


def _conv(stride, pad, xshape, wshape, max_col_bytes=None):
    def f(B, dt):
        r = _rng(9)
        x, w = B.asarray(r.standard_normal(xshape), dtype=dt), B.asarray(r.standard_normal(wshape), dtype=dt)
        b = B.asarray(r.standard_normal(wshape[0]), dtype=dt)
        param = {"stride": stride, "pad": pad}
        if max_col_bytes:
            param["max_col_bytes"] = max_col_bytes
        out, cache = L.conv_forward(x, w, b, param)
        dout = B.asarray(r.standard_normal(tuple(out.shape)), dtype=dt)
        return [out, *L.conv_backward(dout, cache)]
    return f


def _pool(k, s, shape):
    def f(B, dt):
        r = _rng(10)
        x = B.asarray(_rounded_relu(r, shape), dtype=dt)  # ties: the first-max rule matters
        out, cache = L.max_pool_forward(x, {"pool_height": k, "pool_width": k, "stride": s})
        dout = B.asarray(r.standard_normal(tuple(out.shape)), dtype=dt)
        return [out, L.max_pool_backward(dout, cache)]
    return f


def _sandwich(B, dt):
    r = _rng(11)
    x = B.asarray(r.standard_normal((2, 3, 8, 8)), dtype=dt)
    w, b = B.asarray(r.standard_normal((4, 3, 3, 3)), dtype=dt), B.asarray(r.standard_normal(4), dtype=dt)
    out, cache = LU.conv_relu_pool_forward(x, w, b, {"stride": 1, "pad": 1},
                                           {"pool_height": 2, "pool_width": 2, "stride": 2})
    g1 = LU.conv_relu_pool_backward(B.asarray(r.standard_normal(tuple(out.shape)), dtype=dt), cache)
    xa = B.asarray(r.standard_normal((5, 6)), dtype=dt)
    wa, ba = B.asarray(r.standard_normal((6, 4)), dtype=dt), B.asarray(r.standard_normal(4), dtype=dt)
    ga, bb = B.asarray(r.standard_normal(4), dtype=dt), B.asarray(r.standard_normal(4), dtype=dt)
    out2, cache2 = LU.affine_bn_relu_forward(xa, wa, ba, ga, bb, {"mode": "train"})
    g2 = LU.affine_bn_relu_backward(B.asarray(r.standard_normal((5, 4)), dtype=dt), cache2)
    return [out, *g1, out2, *g2]


def _model_step(kind):
    def f(B, dt):
        from .models import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet

        r = _rng(12)
        if kind == "fcn":
            model = FullyConnectedNet([12, 9], input_dim=20, num_classes=5, normalization="batchnorm",
                                      dropout_keep_ratio=0.8, reg=0.1, weight_scale=0.3, dtype=dt,
                                      seed=3, backend=B)
            X = r.standard_normal((8, 20))
        elif kind == "fcn-ln":
            model = FullyConnectedNet([10], input_dim=20, num_classes=5, normalization="layernorm",
                                      reg=0.05, weight_scale=0.3, dtype=dt, seed=4, backend=B)
            X = r.standard_normal((8, 20))
        elif kind == "twolayer":
            model = TwoLayerNet(input_dim=20, hidden_dim=11, num_classes=5, weight_scale=0.3, reg=0.1,
                                dtype=dt, backend=B)
            # TwoLayerNet takes no seed: give both runs the same (host-drawn) weights
            for k in sorted(model.params):
                shape = tuple(model.params[k].shape)
                model.params[k] = B.asarray(r.standard_normal(shape) * 0.3, dtype=dt)
            X = r.standard_normal((8, 20))
        else:
            model = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=7,
                                      num_classes=5, weight_scale=0.3, reg=0.1, dtype=dt, seed=5, backend=B)
            X = r.standard_normal((4, 3, 8, 8))
        y = r.integers(0, 5, size=X.shape[0])
        loss, grads = model.loss(B.asarray(X, dtype=dt), B.asarray(y))
        scores = model.loss(B.asarray(X, dtype=dt))
        return [loss, scores] + [grads[k] for k in sorted(grads)]
    return f


def _optimizer(name):
    def f(B, dt):
        r = _rng(13)
        rule = getattr(optim, name)
        w = B.asarray(r.standard_normal((4, 5)), dtype=dt)
        config = None
        outs = []
        for _ in range(3):
            dw = B.asarray(r.standard_normal((4, 5)), dtype=dt)
            w, config = rule(w, dw, config)
            outs.append(w)
        return outs
    return f


def _random(B, dt):
    xp = B.xp
    bits = prandom.random_bits(2024, 1001, xp, B.device, offset=7)
    u = prandom.uniform(99, (13, 11), xp, B.device, dtype=B.dtype(dt))
    mask = prandom.keep_mask(5, (17, 3), 0.3, xp, B.device)
    return [bits, u, mask]


CHECKS = {
    "affine": _affine,
    "relu": _relu,
    "softmax+svm loss": _losses,
    "batchnorm (train, test)": _batchnorm,
    "layernorm": _layernorm,
    "spatial batchnorm": _spatial_batchnorm,
    "spatial groupnorm": _groupnorm,
    "dropout (seeded)": _dropout,
    "conv 3x3 s1 p1": _conv(1, 1, (2, 3, 7, 6), (4, 3, 3, 3)),
    "conv 7x7 s1 p3": _conv(1, 3, (2, 3, 9, 9), (5, 3, 7, 7)),
    "conv 3x2 s2 p0": _conv(2, 0, (3, 2, 8, 7), (4, 2, 3, 2)),
    "conv chunked": _conv(1, 1, (5, 2, 6, 6), (3, 2, 3, 3), max_col_bytes=600),
    "max pool 2x2 s2": _pool(2, 2, (2, 3, 8, 10)),
    "max pool 3x3 s2": _pool(3, 2, (2, 3, 9, 11)),
    "max pool 3x3 s1": _pool(3, 1, (2, 2, 6, 7)),
    "conv-relu-pool, affine-bn-relu": _sandwich,
    "FullyConnectedNet bn+dropout step": _model_step("fcn"),
    "FullyConnectedNet layernorm step": _model_step("fcn-ln"),
    "TwoLayerNet step": _model_step("twolayer"),
    "ThreeLayerConvNet step": _model_step("cnn"),
    "sgd": _optimizer("sgd"),
    "sgd_momentum": _optimizer("sgd_momentum"),
    "rmsprop": _optimizer("rmsprop"),
    "adam": _optimizer("adam"),
    "random (threefry)": _random,
}


def _compare(outs, refs, B, dt):
    """(err, problem) between backend outputs and NumPy's; problem is a string or None."""
    if len(outs) != len(refs):
        return math.inf, f"{len(outs)} outputs, NumPy gave {len(refs)}"
    worst = 0.0
    for i, (o, r) in enumerate(zip(outs, refs)):
        if r is None or o is None:
            if (r is None) != (o is None):
                return math.inf, f"output {i}: None on one side only"
            continue
        if isinstance(r, float):
            a, h = np.asarray(float(o)), np.asarray(r)
        else:
            a, h = B.to_numpy(o), np.asarray(r)
            if h.dtype.kind == "f" and a.dtype != np.dtype(dt):
                return math.inf, f"output {i}: dtype {a.dtype}, expected {dt}"
        if a.shape != h.shape:
            return math.inf, f"output {i}: shape {a.shape}, NumPy {h.shape}"
        if h.dtype.kind in "biu":
            if not np.array_equal(a, h):
                return math.inf, f"output {i}: integer/boolean values differ"
            continue
        a64, h64 = a.astype(np.float64), h.astype(np.float64)
        if not np.array_equal(np.isnan(a64), np.isnan(h64)):
            return math.inf, f"output {i}: NaN pattern differs"
        diff = np.abs(np.nan_to_num(a64) - np.nan_to_num(h64))
        scale = max(1.0, float(np.max(np.abs(np.nan_to_num(h64)), initial=0.0)))
        worst = max(worst, float(np.max(diff, initial=0.0)) / scale)
    return worst, None


def _host(x):
    return x if x is None or isinstance(x, float) else to_host(x, "reference")


def run_selftest(backend_name, dtypes=("float64", "float32"), checks=None):
    """Run the checks on ``backend_name`` and on NumPy; one result row per (check, dtype).

    Returns a list of dicts: check, dtype, backend, err (scaled max error, see the
    module docstring), tol, passed (bool), error (None or what went wrong), seconds.
    Raises BackendError when the backend cannot be used here.
    """
    B = get_backend(backend_name)
    ref = get_backend("numpy")
    names = list(CHECKS) if checks is None else list(checks)
    rows = []
    for dt in dtypes:
        tol = TOLERANCES[dt]
        for name in names:
            fn = CHECKS[name]
            t0 = time.perf_counter()
            err, problem = math.inf, None
            try:
                refs = [_host(o) for o in fn(ref, dt)]
                outs = fn(B, dt)
                err, problem = _compare(outs, refs, B, dt)
            except Exception as e:  # a crash on the backend is a failure, reported with its reason
                problem = f"{type(e).__name__}: {e}"
            passed = problem is None and err <= tol
            if problem is None and not passed:
                problem = f"error {err:.2e} > tolerance {tol:.0e}"
            rows.append({"check": name, "dtype": dt, "backend": B.name, "device": str(B.device),
                         "err": err, "tol": tol, "passed": passed, "error": problem,
                         "seconds": round(time.perf_counter() - t0, 4)})
    return rows


def format_table(rows) -> str:
    """The rows as a fixed-width text table plus a summary line."""
    lines = [f"{'check':36s} {'dtype':8s} {'max err':>9s} {'tol':>7s}  result"]
    for r in rows:
        err = "-" if not math.isfinite(r["err"]) else f"{r['err']:.1e}"
        res = "pass" if r["passed"] else f"FAIL  {r['error']}"
        lines.append(f"{r['check']:36s} {r['dtype']:8s} {err:>9s} {r['tol']:>7.0e}  {res}")
    failed = sum(not r["passed"] for r in rows)
    be = f"{rows[0]['backend']} ({rows[0]['device']})" if rows else "?"
    lines.append(f"{len(rows) - failed}/{len(rows)} passed on {be} against numpy"
                 + (f"; {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(
        prog="portnn selftest",
        description="Run every portnn layer, model step, update rule and the RNG on one backend "
                    "and compare with NumPy (float64 and float32). Exit status 0 = all pass, "
                    "1 = a check failed, 2 = the backend cannot be used here.")
    p.add_argument("--backend", default=None,
                   help="numpy | torch | cupy | array_api_strict, optionally name:device "
                        "(default: $PORTNN_BACKEND or numpy)")
    p.add_argument("--dtype", dest="dtypes", action="append", choices=list(TOLERANCES), default=None,
                   help="dtype to test; repeat for both (default: float64 and float32)")
    p.add_argument("--json", default=None, help="also write the result rows to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true", help="print failing rows and the summary only")
    return p


def main(argv=None) -> int:
    """Entry point of ``portnn selftest`` (argv: the options after "selftest")."""
    args = build_parser().parse_args(argv)
    name = args.backend or os.environ.get("PORTNN_BACKEND") or "numpy"
    enable_64bit(name)  # JAX: the float64 rows and the int64 generator need it
    dtypes = tuple(dict.fromkeys(args.dtypes)) if args.dtypes else ("float64", "float32")
    if name.split(":")[0] in ("cupy", "torch"):
        os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")  # full FP32 GEMMs on NVIDIA GPUs
    try:
        rows = run_selftest(name, dtypes)
    except BackendError as e:
        print(f"portnn selftest: {e}", file=sys.stderr)
        return 2
    lines = format_table(rows).splitlines()
    if args.quiet:
        bad = [line for line, r in zip(lines[1:-1], rows) if not r["passed"]]
        lines = ([lines[0]] + bad if bad else []) + [lines[-1]]
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
