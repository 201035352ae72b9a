"""The layer API by hand: a two-layer net's forward and backward pass, checked
against numerical gradients, then a few update steps.

Every layer is a pair of functions: ``*_forward(inputs) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients of the inputs, in argument order``. The
cache holds what the backward pass needs (the inputs, masks, statistics); you
pass it back untouched. Here a two-layer net

    X -> affine -> relu -> affine -> softmax loss

is written with those functions, its analytic gradients are compared with
central differences (``portnn.gradient_check``) in float64, and the same
gradients drive a few Adam steps from ``portnn.optim``.

Run:

    python examples/02_layers_by_hand.py                  # numpy
    python examples/02_layers_by_hand.py --backend torch
    python examples/02_layers_by_hand.py --steps 50       # more update steps

Expected output (numpy; other backends print the same up to the last digit or two
of the errors, all far below 1e-7):

    backend numpy, float64, X (6, 8), 5 classes, hidden 10
    scores (6, 5), loss 1.9633
    cache of affine_relu_forward: affine (x, w) with shapes [(6, 8), (8, 10)] and relu input (6, 10)
    relative error of each gradient (analytic vs numerical):
      dW1  3.2e-09
      db1  1.4e-10
      dW2  1.1e-09
      db2  4.5e-11
      dX   1.9e-09
    max relative error: 3.2e-09 (< 1e-07: OK)
    the same check in float32 would be dominated by rounding: max error 1.0e+00
    adam, 20 steps: loss 1.9633 -> 0.1667

The error is the largest over elements of |a - n| / (|a| + |n|): an element whose
gradient is tiny limits it, so up to ~1e-7 is normal for a correct layer with other
data (--seed); a wrong backward pass gives 1e-2 or more. The exit status is 1 when
the check fails.
"""

import argparse

import numpy as np

import portnn
from portnn import optim
from portnn.gradient_check import eval_numerical_gradient, rel_error
from portnn.layer_utils import affine_relu_backward, affine_relu_forward
from portnn.layers import affine_backward, affine_forward, softmax_loss


def forward_backward(X, y, p):
    """Loss and gradients of the two-layer net; p holds W1, b1, W2, b2."""
    h, cache1 = affine_relu_forward(X, p["W1"], p["b1"])          # (N, H)
    scores, cache2 = affine_forward(h, p["W2"], p["b2"])          # (N, C)
    loss, dscores = softmax_loss(scores, y)                       # loss: Python float
    dh, dW2, db2 = affine_backward(dscores, cache2)               # gradients, in argument order
    dX, dW1, db1 = affine_relu_backward(dh, cache1)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "X": dX}, scores, cache1


def gradient_errors(be, dtype, host):
    """Relative error of every analytic gradient against central differences."""
    X = be.asarray(host["X"], dtype=dtype)
    y = be.asarray(host["y"])  # integer labels stay int64
    p = {k: be.asarray(host[k], dtype=dtype) for k in ("W1", "b1", "W2", "b2")}
    _, grads, _, _ = forward_backward(X, y, p)
    errors = {}
    for name in ("W1", "b1", "W2", "b2", "X"):
        target = X if name == "X" else p[name]

        # f gets the perturbed array as its argument and uses it (on JAX, whose
        # arrays are immutable, the perturbed array is a new one).
        def f(a, name=name):
            if name == "X":
                return forward_backward(a, y, p)[0]
            return forward_backward(X, y, dict(p, **{name: a}))[0]

        numeric = eval_numerical_gradient(f, target, h=1e-5)
        errors[name] = rel_error(grads[name], numeric)
    return errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--steps", type=int, default=20, help="Adam steps at the end")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random host data")
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout

    be = portnn.get_backend(args.backend)
    N, D, H, C = 6, 8, 10, 5
    rng = np.random.default_rng(args.seed)
    # Host data first (NumPy), then one asarray per array: the same numbers on every backend.
    host = {
        "X": rng.standard_normal((N, D)),
        "y": rng.integers(0, C, size=N),
        "W1": 0.5 * rng.standard_normal((D, H)), "b1": 0.1 * rng.standard_normal(H),
        "W2": 0.5 * rng.standard_normal((H, C)), "b2": 0.1 * rng.standard_normal(C),
    }
    print(f"backend {be.name}, float64, X {(N, D)}, {C} classes, hidden {H}")

    # 1. One forward pass; look at what comes back.
    X = be.asarray(host["X"], dtype="float64")
    y = be.asarray(host["y"])
    p = {k: be.asarray(host[k], dtype="float64") for k in ("W1", "b1", "W2", "b2")}
    loss0, grads, scores, cache1 = forward_backward(X, y, p)
    print(f"scores {tuple(scores.shape)}, loss {loss0:.4f}")
    # The cache is opaque: pass it back to the matching backward. Here it is
    # (affine cache (x, w), relu cache (its input)).
    fc_cache, relu_cache = cache1
    print("cache of affine_relu_forward: affine (x, w) with shapes",
          [tuple(a.shape) for a in fc_cache], "and relu input", tuple(relu_cache.shape))

    # 2. Gradient check in float64: central differences need the precision.
    errors = gradient_errors(be, "float64", host)
    print("relative error of each gradient (analytic vs numerical):")
    for name, err in errors.items():
        print(f"  d{name:<3} {err:.1e}")
    worst = max(errors.values())
    verdict = "OK" if worst < 1e-7 else "TOO LARGE: a backward pass is wrong"
    print(f"max relative error: {worst:.1e} (< 1e-07: {verdict})")
    worst32 = max(gradient_errors(be, "float32", host).values())
    print(f"the same check in float32 would be dominated by rounding: max error {worst32:.1e}")

    # 3. Update rules take (w, dw, config) and return (next_w, config); the config
    #    dict carries the optimizer state (Adam's m, v, t) between steps.
    configs = {k: {"learning_rate": 5e-2} for k in p}
    loss = loss0
    for _ in range(args.steps):
        loss, grads, _, _ = forward_backward(X, y, p)
        for k in p:
            p[k], configs[k] = optim.adam(p[k], grads[k], configs[k])
    loss = forward_backward(X, y, p)[0]
    print(f"adam, {args.steps} steps: loss {loss0:.4f} -> {loss:.4f}")
    return 0 if worst < 1e-7 else 1


if __name__ == "__main__":
    raise SystemExit(main())
