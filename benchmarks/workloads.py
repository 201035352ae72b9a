"""The benchmark workloads W1-W5, each built for one implementation.

An implementation ("impl") is one of
  portnn-numpy   portnn on the numpy backend            (CPU)
  portnn-torch   portnn on the torch backend, CPU tensors
  torch          PyTorch native: torch.nn.functional + autograd (CPU)
  portnn-cupy    portnn on the cupy backend              (GPU, --gpu)
  torch-cuda     PyTorch native on CUDA                  (GPU, --gpu)

``build(key, impl)`` returns a zero-argument callable that runs ONE forward +
backward of the workload (everything a training step needs except the update)
and blocks until the device is done, so a wall-clock timer around it is honest
on a GPU as well. All workloads are float32 and start from the same host data
and weights for every implementation; ``check_value`` gives a number (the loss,
or a gradient sum) that must agree across implementations.

This module never imports numpy/torch/cupy at module level: run.py sets the
BLAS/OpenMP thread counts before the first import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REG = 1e-3  # L2 strength used by the model workloads (both libraries include the term)


@dataclass(frozen=True)
class Workload:
    key: str
    group: str        # what --only selects on: W1, W2, W3, W4, W5
    title: str
    kind: str         # fcn | conv | pool | cnn
    params: dict = field(default_factory=dict)
    target: float | None = None  # portnn / PyTorch median ratio to meet (portnn-numpy)

    def gemm_flops(self) -> int:
        """Floating-point operations of the workload's matrix products (2*m*n*k each)."""
        p = self.params
        if self.kind == "fcn":
            dims = [3072] + [100] * 4 + [10]
            n = p["N"]
            fwd = sum(2 * n * a * b for a, b in zip(dims[:-1], dims[1:]))
            dw = fwd
            # input gradients of every layer but the first (the network input's is not needed)
            dx = sum(2 * n * a * b for a, b in zip(dims[1:-1], dims[2:]))
            return fwd + dw + dx
        if self.kind == "conv":
            n, c, h, w = p["x"]
            f, _, kh, kw = p["w"]
            pad = p["pad"]
            ho, wo = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
            one = 2 * n * f * c * kh * kw * ho * wo
            return one if p.get("fwd_only") else 3 * one  # forward (, dw, dx)
        if self.kind == "pool":
            return 0
        if self.kind == "cnn":
            n = p["N"]
            conv = 2 * n * 32 * 3 * 7 * 7 * 32 * 32
            fc1 = 2 * n * (32 * 16 * 16) * 100
            fc2 = 2 * n * 100 * 10
            return 2 * conv + 3 * fc1 + 3 * fc2  # conv: fwd + dw (no input gradient)
        raise ValueError(self.kind)


# Targets: the "Speed II" issue's, portnn-numpy / PyTorch at 2 threads (at 1 thread every
# workload's target is 1.0: docs/benchmarks.md, "1 and 2 threads").
_W2 = {"x": (50, 3, 32, 32), "w": (32, 3, 7, 7), "pad": 3}
_W3 = {"x": (64, 64, 16, 16), "w": (64, 64, 3, 3), "pad": 1}
WORKLOADS = [
    Workload("W1", "W1", "FCN 3072-100x4-10, N=200, loss+grads", "fcn",
             {"N": 200, "normalization": None}, 0.9),
    Workload("W1bn", "W1", "FCN 3072-100x4-10 + batchnorm, N=200, loss+grads", "fcn",
             {"N": 200, "normalization": "batchnorm"}, 1.0),
    Workload("W2-fwd", "W2", "conv x(50,3,32,32) w(32,3,7,7) pad 3, forward", "conv",
             dict(_W2, fwd_only=True), 1.5),
    Workload("W2", "W2", "conv x(50,3,32,32) w(32,3,7,7) pad 3, fwd+bwd", "conv", _W2, 1.2),
    Workload("W3-fwd", "W3", "conv x(64,64,16,16) w(64,64,3,3) pad 1, forward", "conv",
             dict(_W3, fwd_only=True), 1.5),
    Workload("W3", "W3", "conv x(64,64,16,16) w(64,64,3,3) pad 1, fwd+bwd", "conv", _W3, 1.2),
    Workload("W4-2x2", "W4", "max pool 2x2 s2 on (50,32,32,32), fwd+bwd", "pool",
             {"x": (50, 32, 32, 32), "k": 2, "s": 2}, 1.0),
    Workload("W4-3x3", "W4", "max pool 3x3 s2 on (50,32,33,33), fwd+bwd", "pool",
             {"x": (50, 32, 33, 33), "k": 3, "s": 2}, 1.2),
    Workload("W5-50", "W5", "ThreeLayerConvNet train step (loss+grads), N=50", "cnn",
             {"N": 50}, 1.2),
    Workload("W5-256", "W5", "ThreeLayerConvNet train step (loss+grads), N=256", "cnn",
             {"N": 256}, 1.2),
]
BY_KEY = {w.key: w for w in WORKLOADS}
MEMORY_TARGET = ("W5-256", 2.0)  # peak memory of portnn <= 2x PyTorch's on this workload

CPU_IMPLS = ("portnn-numpy", "portnn-torch", "torch")
# Optional (needs jax; --impls portnn-numpy,portnn-jax,portnn-jax-jit,torch): portnn on
# jax eager, and each workload as ONE jax.jit program (for W1/W5 what
# Solver(compile=True) runs, minus the update).
JAX_IMPLS = ("portnn-jax", "portnn-jax-jit")
GPU_IMPLS = ("portnn-cupy", "torch-cuda")
REFERENCE = {"cpu": "torch", "gpu": "torch-cuda"}


def select(only: str | None):
    """Workloads named by ``--only`` (comma-separated keys or groups; None = all)."""
    if not only:
        return list(WORKLOADS)
    out = []
    for tok in (t.strip() for t in only.split(",") if t.strip()):
        if tok in BY_KEY:
            hits = [BY_KEY[tok]]
        else:
            hits = [w for w in WORKLOADS if w.group.lower() == tok.lower() or w.key.lower() == tok.lower()]
        if not hits:
            raise SystemExit(f"--only: unknown workload {tok!r}; known: "
                             f"{', '.join(w.key for w in WORKLOADS)} (or a group W1..W5)")
        out += [w for w in hits if w not in out]
    return out


def library_of(impl: str) -> str:
    """The array library doing the work (used to pause between libraries)."""
    return {"portnn-numpy": "numpy", "portnn-torch": "torch", "torch": "torch",
            "portnn-cupy": "cupy", "torch-cuda": "torch-cuda", "portnn-jax": "jax",
            "portnn-jax-jit": "jax"}[impl]


# ----------------------------------------------------------------------------- data


def _host_data(wl: Workload):
    """Host float32 arrays every implementation starts from (seeded)."""
    import numpy as np

    rng = np.random.default_rng(1234)
    p = wl.params
    if wl.kind == "fcn":
        return {"X": rng.standard_normal((p["N"], 3072), dtype=np.float32),
                "y": rng.integers(0, 10, size=p["N"]).astype(np.int64)}
    if wl.kind == "conv":
        n, c, h, w = p["x"]
        f, _, kh, kw = p["w"]
        ho, wo = h + 2 * p["pad"] - kh + 1, w + 2 * p["pad"] - kw + 1
        return {"x": rng.standard_normal(p["x"], dtype=np.float32),
                "w": (rng.standard_normal(p["w"], dtype=np.float32) * 0.1).astype(np.float32),
                "b": rng.standard_normal((f,), dtype=np.float32),
                "dout": rng.standard_normal((n, f, ho, wo), dtype=np.float32)}
    if wl.kind == "pool":
        n, c, h, w = p["x"]
        k, s = p["k"], p["s"]
        ho, wo = 1 + (h - k) // s, 1 + (w - k) // s
        return {"x": rng.standard_normal(p["x"], dtype=np.float32),
                "dout": rng.standard_normal((n, c, ho, wo), dtype=np.float32)}
    if wl.kind == "cnn":
        return {"X": rng.standard_normal((p["N"], 3, 32, 32), dtype=np.float32),
                "y": rng.integers(0, 10, size=p["N"]).astype(np.int64)}
    raise ValueError(wl.kind)


def _portnn_model(wl: Workload, backend):
    import portnn

    if wl.kind == "fcn":
        return portnn.FullyConnectedNet([100] * 4, input_dim=3072, num_classes=10,
                                        normalization=wl.params["normalization"], reg=REG,
                                        weight_scale=5e-2, dtype="float32", seed=0, backend=backend)
    return portnn.ThreeLayerConvNet(reg=REG, weight_scale=1e-2, dtype="float32", seed=0,
                                    backend=backend)


# ----------------------------------------------------------------------------- portnn


def _build_portnn(wl: Workload, backend_spec: str, sync):
    from portnn import layers as L
    from portnn.backends import get_backend

    be = get_backend(backend_spec)
    host = _host_data(wl)
    if wl.kind in ("fcn", "cnn"):
        model = _portnn_model(wl, be)
        X, y = be.asarray(host["X"], dtype="float32"), be.asarray(host["y"])

        def step():
            loss, grads = model.loss(X, y)  # float(loss): the one device->host read
            return loss
        return step, lambda: step()

    if wl.kind == "conv":
        x, w, b, dout = (be.asarray(host[k], dtype="float32") for k in ("x", "w", "b", "dout"))
        param = {"stride": 1, "pad": wl.params["pad"]}

        if wl.params.get("fwd_only"):
            def forward():
                out, _ = L.conv_forward(x, w, b, param)  # the training forward: columns kept for a backward
                sync(out)
                return out
            return forward, lambda: float((be.to_numpy(forward()).astype("float64") ** 2).sum())

        def step():
            out, cache = L.conv_forward(x, w, b, param)
            grads = L.conv_backward(dout, cache)
            sync(out, grads)
            return out, grads
        return step, lambda: float((be.to_numpy(step()[1][1]).astype("float64") ** 2).sum())

    if wl.kind == "pool":
        x, dout = be.asarray(host["x"], dtype="float32"), be.asarray(host["dout"], dtype="float32")
        k, s = wl.params["k"], wl.params["s"]
        param = {"pool_height": k, "pool_width": k, "stride": s}

        def step():
            out, cache = L.max_pool_forward(x, param)
            dx = L.max_pool_backward(dout, cache)
            sync(out, dx)
            return out, dx
        return step, lambda: float((be.to_numpy(step()[1]).astype("float64") ** 2).sum())
    raise ValueError(wl.kind)


# ----------------------------------------------------------------------------- torch


def _build_torch(wl: Workload, device: str, sync):
    import numpy as np
    import torch
    import torch.nn.functional as F

    host = _host_data(wl)

    def t(a, grad=False):
        return torch.tensor(np.ascontiguousarray(a), device=device, requires_grad=grad)

    if wl.kind in ("fcn", "cnn"):
        # The same initial weights as portnn's seeded model (drawn on the host).
        ref = _portnn_model(wl, "numpy")
        params = {k: t(v, grad=True) for k, v in ref.params.items()}
        X, y = t(host["X"]), t(host["y"])
        weights = [params[k] for k in params if k.startswith("W")]
        names = list(params)
        plist = [params[k] for k in names]

        if wl.kind == "fcn":
            bn = wl.params["normalization"] == "batchnorm"
            running = [(torch.zeros(100, device=device), torch.zeros(100, device=device))
                       for _ in range(4)]

            def forward():
                h = X
                for i in range(1, 5):
                    h = F.linear(h, params[f"W{i}"].T, params[f"b{i}"])
                    if bn:
                        rm, rv = running[i - 1]
                        # portnn's momentum 0.9 keeps 90% of the running value = torch's 0.1
                        h = F.batch_norm(h, rm, rv, params[f"gamma{i}"], params[f"beta{i}"],
                                         training=True, momentum=0.1, eps=1e-5)
                    h = F.relu(h)
                return F.linear(h, params["W5"].T, params["b5"])
        else:
            def forward():
                h = F.conv2d(X, params["W1"], params["b1"], stride=1, padding=3)
                h = F.max_pool2d(F.relu(h), 2, 2)
                h = F.relu(F.linear(h.reshape(h.shape[0], -1), params["W2"].T, params["b2"]))
                return F.linear(h, params["W3"].T, params["b3"])

        def step():
            scores = forward()
            loss = F.cross_entropy(scores, y)
            loss = loss + 0.5 * REG * sum(torch.sum(w * w) for w in weights)
            grads = torch.autograd.grad(loss, plist)
            return float(loss.detach()), grads  # the same one device->host read as portnn
        return step, lambda: step()[0]

    if wl.kind == "conv":
        x, w, b = t(host["x"], True), t(host["w"], True), t(host["b"], True)
        dout = t(host["dout"])
        pad = wl.params["pad"]

        if wl.params.get("fwd_only"):
            def forward():
                out = F.conv2d(x, w, b, stride=1, padding=pad)  # autograd records it, as in training
                sync()
                return out
            return forward, lambda: float((forward().detach().double() ** 2).sum().cpu())

        def step():
            out = F.conv2d(x, w, b, stride=1, padding=pad)
            grads = torch.autograd.grad(out, (x, w, b), dout)
            sync()
            return out, grads
        return step, lambda: float((step()[1][1].detach().double() ** 2).sum().cpu())

    if wl.kind == "pool":
        x, dout = t(host["x"], True), t(host["dout"])
        k, s = wl.params["k"], wl.params["s"]

        def step():
            out = F.max_pool2d(x, k, s)
            (dx,) = torch.autograd.grad(out, (x,), dout)
            sync()
            return out, dx
        return step, lambda: float((step()[1].detach().double() ** 2).sum().cpu())
    raise ValueError(wl.kind)


# ----------------------------------------------------------------------------- entry


def _build_portnn_jit(wl: Workload):
    """The workload's portnn code as one compiled JAX program: a model's loss+grads
    (what Solver(compile=True) runs, minus the update), or a layer's forward+backward."""
    from portnn import layers as L
    from portnn.backends import enable_64bit, get_backend

    enable_64bit("jax")  # a program may: the traced dropout step counter is int64
    be = get_backend("jax")
    host = _host_data(wl)
    if wl.kind in ("conv", "pool"):
        if wl.kind == "conv":
            param = {"stride": 1, "pad": wl.params["pad"]}
            names = ("x", "w", "b", "dout")

            def layer(x, w, b, dout):
                out, cache = L.conv_forward(x, w, b, param)
                if wl.params.get("fwd_only"):
                    return out, (out, out)
                return out, L.conv_backward(dout, cache)
        else:
            param = {"pool_height": wl.params["k"], "pool_width": wl.params["k"], "stride": wl.params["s"]}
            names = ("x", "dout")

            def layer(x, dout):
                out, cache = L.max_pool_forward(x, param)
                return out, (L.max_pool_backward(dout, cache),)
        compiled_layer = be.compile(layer)
        args = [be.asarray(host[k], dtype="float32") for k in names]
        sync = sync_for("portnn-jax")

        def run():
            out, grads = compiled_layer(*args)
            sync(out, grads)
            return out, grads
        last = 1 if wl.kind == "conv" else 0  # dw for conv, dx for pool (as the eager rows)
        return run, lambda: float((be.to_numpy(run()[1][last]).astype("float64") ** 2).sum())

    model = _portnn_model(wl, be)
    X, y = be.asarray(host["X"], dtype="float32"), be.asarray(host["y"])
    step0 = be.xp.asarray(0, dtype=be.xp.int64)

    def loss_and_grads(params, buffers, X, y):
        with model._traced_state(params, buffers, step0) as m:
            return m._forward_backward(X, y)

    compiled = be.compile(loss_and_grads)

    def step():
        loss, grads = compiled(model.params, model.buffers(), X, y)
        return float(loss)  # the one device->host read, as model.loss does
    return step, lambda: step()


def sync_for(impl: str):
    """A function ``sync(*results)`` that waits until the device of ``impl`` is done
    (and JAX, which dispatches asynchronously even on the CPU, has computed results)."""
    if impl == "portnn-cupy":
        import cupy

        return lambda *results: cupy.cuda.get_current_stream().synchronize()
    if impl == "torch-cuda":
        import torch

        return lambda *results: torch.cuda.synchronize()
    if impl == "portnn-jax":
        import jax

        return lambda *results: jax.block_until_ready(results)
    return lambda *results: None


def build(key: str, impl: str):
    """(step, check_value) for workload ``key`` on implementation ``impl``.

    step() runs one forward+backward and returns when the device is idle;
    check_value() runs it once more and returns a float to compare across impls.
    """
    wl = BY_KEY[key]
    sync = sync_for(impl)
    if impl == "portnn-numpy":
        fn, check = _build_portnn(wl, "numpy", sync)
    elif impl == "portnn-torch":
        fn, check = _build_portnn(wl, "torch", sync)
    elif impl == "portnn-cupy":
        fn, check = _build_portnn(wl, "cupy", sync)
    elif impl == "portnn-jax":
        from portnn.backends import enable_64bit

        enable_64bit("jax")
        fn, check = _build_portnn(wl, "jax", sync)
    elif impl == "portnn-jax-jit":
        fn, check = _build_portnn_jit(wl)
    elif impl == "torch":
        fn, check = _build_torch(wl, "cpu", sync)
    elif impl == "torch-cuda":
        fn, check = _build_torch(wl, "cuda", sync)
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    if impl in ("portnn-cupy", "torch-cuda") and wl.kind in ("fcn", "cnn"):
        # model steps end in float(loss), which already synchronises; be explicit anyway
        inner = fn

        def fn():
            r = inner()
            sync()
            return r
    return fn, check
