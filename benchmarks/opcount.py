"""Operations per step: a GPU cost model measured on the CPU.

    python -m benchmarks.opcount                       # every row, as a text table
    python -m benchmarks.opcount --only W1,W5-50       # some rows (keys, or groups W1..W5)
    python -m benchmarks.opcount --markdown            # the table as markdown
    python -m benchmarks.opcount --markdown --write-docs   # ... and into docs/benchmarks.md
    python -m benchmarks.opcount --sites W5-50,W1-dropout  # which portnn function issued what

On a GPU (CuPy, torch CUDA) every array operation that computes something is at
least one kernel launch, and a launch costs the host ~5-10 us whatever the array
size; on small workloads that, not the arithmetic, sets the step time. This
module counts those operations without a GPU: it runs one call of each
benchmark workload's timed function (``benchmarks.workloads.build(key, impl)``,
after one warm-up call) on the torch backend (CPU tensors) under a
``TorchDispatchMode`` that records every aten operation, for portnn
(``portnn-torch``) and for native PyTorch (``torch``), and classifies each one:

view      no kernel: the op's schema says its result aliases its input and it
          writes nothing (``OpOverload.is_view``: slice, select, view, permute,
          transpose, t, expand, unsqueeze, as_strided, alias, detach, ...),
          plus ``_unsafe_view`` (a view whose schema does not say so) and the
          in-place metadata ops (t_, transpose_, as_strided_, squeeze_,
          unsqueeze_, detach_). In-place ops that write (add_, copy_: their
          schema marks the alias as written, ``_schema.is_mutable``) compute.
          "slices" are the ``aten.slice`` views.
alloc     no kernel: ``empty*`` / ``new_empty*`` (an allocation, no fill).
noop      no kernel: ``copy_`` of a tensor onto exactly itself (same storage,
          offset, sizes, strides, dtype), which torch returns from at once: the
          write-back of ``x[s] += v``. (CuPy may run a copy kernel for it.)
host      no kernel: profiler markers (``_record_function_*``) and, for the
          torch.optim rows, ops on the step counters (CPU tensors on a CUDA run
          unless capturable / fused) and the 0-d CPU scalars they meet.
compute   everything else: one kernel launch or more on a GPU (elementwise,
          reductions, matmul, fills such as zeros / ones_like / scalar_tensor,
          copies, ``_to_copy``); ``lift_fresh`` too, although its schema says
          view: it follows ``torch.asarray(python scalar, device=...)``, a host
          -> device copy on a GPU (array-api-compat does that for a Python
          scalar operand of maximum, ...). ``_local_scalar_dense`` (a device ->
          host read, a synchronisation) is counted here and also reported as
          "host reads".

One aten op is taken as one launch. That is a lower bound: a cuDNN convolution,
a cuBLAS GEMM with split-K, a cross-entropy or a max-pool backward (zero fill +
kernel) can be several kernels, and ``stack`` of k strided slices is k copy
kernels on torch CUDA when the result has more than 4 dimensions (im2col's
does) and on CuPy when the slices average more than 2 MiB (one kernel below).
Views are free on the device but not on the host (a torch view costs ~1-2 us
of dispatch). Counts on torch may differ slightly from portnn-cupy's: a Python
scalar in ``where`` becomes a ``scalar_tensor`` on torch, a plain kernel
argument on CuPy.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from dataclasses import dataclass

if __package__ in (None, ""):  # `python benchmarks/opcount.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"  # noqa: A001

from benchmarks import workloads as W  # noqa: E402  (no numpy/torch at module level)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs", "benchmarks.md")
PORTNN_DIR = os.path.join(REPO, "portnn") + os.sep
BEGIN, END = "<!-- opcount:begin -->", "<!-- opcount:end -->"
SECTION = "## Operations per step (a GPU cost model)"
LAUNCH_US = 8.0  # host cost of one kernel launch (CUDA runtime + library dispatch), a round figure

# Metadata-only ops whose schema does not mark them as views.
_METADATA = {"_unsafe_view", "t_", "transpose_", "as_strided_", "squeeze_", "unsqueeze_", "detach_",
             "swapaxes_", "swapdims_", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"}
_PROFILER = {"_record_function_enter", "_record_function_enter_new", "_record_function_exit"}
_ALLOC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
KINDS = ("compute", "view", "alloc", "noop", "host")


# ----------------------------------------------------------------------------- the counter


@dataclass
class Op:
    name: str        # aten overload packet without "aten.", e.g. "add", "slice", "copy_"
    kind: str        # one of KINDS
    site: str | None = None   # innermost portnn function on the Python stack, "portnn/x.py:fn"
    caller: str | None = None  # the portnn function that called it (next portnn frame out)
    via: str | None = None    # a library function between portnn and torch (array-api-extra), if any
    extra: int = 0   # stack/cat: number of inputs


def _tensors(args, kwargs):
    import torch

    out = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _same_view(a, b) -> bool:
    """torch's copy_ returns without work when src and dst are views of the same data."""
    try:
        return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
                and a.storage_offset() == b.storage_offset() and a.shape == b.shape
                and a.stride() == b.stride() and a.dtype == b.dtype)
    except (RuntimeError, NotImplementedError):
        return False


def classify(func, args=(), kwargs=None, host_ids=frozenset()) -> str:
    """The kind (see the module docstring) of one aten op call; ``host_ids``: ids of
    tensors that live on the host even on a GPU run (torch.optim's step counters)."""
    kwargs = kwargs or {}
    name = func.overloadpacket.__name__
    if name in _PROFILER:  # torch.profiler.record_function markers (torch.optim): host only
        return "host"
    if host_ids:
        ts = _tensors(args, kwargs)
        if any(id(t) in host_ids for t in ts) and all(id(t) in host_ids or t.ndim == 0 for t in ts):
            return "host"
        if name == "lift_fresh" and all(t.ndim == 0 for t in ts):
            return "host"  # torch.optim's torch.tensor(1.0, device="cpu") for the step counters
    if name == "lift_fresh":  # torch.asarray(python scalar, device=...): a host -> device copy on a GPU
        return "compute"
    if func.is_view or name in _METADATA:
        return "view"
    if name in _ALLOC:
        return "alloc"
    if name == "copy_" and len(args) >= 2 and _same_view(args[0], args[1]):
        return "noop"
    return "compute"


def _label(code, root, prefix):
    return f"{prefix}{os.path.relpath(code.co_filename, root)}:{code.co_name}"


def _site(frame, torch_dir):
    """(innermost portnn function, its portnn caller, library function in between)
    on the Python stack above ``frame``. The library function is the innermost frame
    outside torch, portnn and array-api-compat (whose wrappers are thin), e.g.
    array-api-extra's one_hot."""
    found, via, f = [], None, frame
    while f is not None and len(found) < 2:
        fn = f.f_code.co_filename
        if fn.startswith(PORTNN_DIR):
            label = _label(f.f_code, PORTNN_DIR, "portnn/")
            if not found or found[-1] != label:
                found.append(label)
        elif not found and via is None and not fn.startswith(torch_dir) and "array_api_compat" not in fn:
            parts = fn.split(os.sep)
            lib = next((i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")), None)
            via = _label(f.f_code, os.sep.join(parts[:lib + 1]), "") if lib is not None else fn
        f = f.f_back
    return tuple(found + [None, None])[:2] + (via,)


def make_counter(attribute=False, host_ids=frozenset()):
    """A TorchDispatchMode whose ``.ops`` lists the aten ops run inside it."""
    import sys as _sys

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    torch_dir = os.path.dirname(torch.__file__) + os.sep

    class OpCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[Op] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.overloadpacket.__name__
            op = Op(name, classify(func, args, kwargs, host_ids))
            if name in ("stack", "cat") and args:
                op.extra = len(args[0])
            if attribute:
                op.site, op.caller, op.via = _site(_sys._getframe(1), torch_dir)
            self.ops.append(op)
            return func(*args, **kwargs)

    return OpCounter()


def count(fn, warmup=1, attribute=False, host_ids=frozenset()):
    """The ops of one call of ``fn()`` after ``warmup`` unrecorded calls."""
    for _ in range(warmup):
        fn()
    counter = make_counter(attribute, host_ids)
    with counter:
        fn()
    return counter.ops


@dataclass
class Summary:
    ops: list

    def n(self, kind):
        return sum(1 for o in self.ops if o.kind == kind)

    @property
    def compute(self):
        return self.n("compute")

    @property
    def views(self):
        return self.n("view")

    @property
    def slices(self):
        return sum(1 for o in self.ops if o.kind == "view" and o.name == "slice")

    @property
    def host_reads(self):
        return sum(1 for o in self.ops if o.name == "_local_scalar_dense" and o.kind == "compute")

    def top(self, k=3, kind="compute"):
        return collections.Counter(o.name for o in self.ops if o.kind == kind).most_common(k)

    def by_site(self, kind="compute", k=10, with_caller=False):
        def key(o):
            label = o.site + (f" via {o.via}" if o.via else "")
            return f"{label} <- {o.caller}" if with_caller else label
        return collections.Counter(key(o) for o in self.ops if o.kind == kind).most_common(k)

    def as_dict(self):
        return {"compute": self.compute, "views": self.views, "slices": self.slices,
                "alloc": self.n("alloc"), "noop": self.n("noop"), "host": self.n("host"),
                "host_reads": self.host_reads, "top_compute": self.top(5)}


# ----------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Row:
    key: str
    group: str
    title: str
    workload: str | None  # a benchmarks.workloads key whose timed function is counted as is
    part: str = "step"    # step | fwd | dropout | adam


ROWS = [
    Row("W1", "W1", "FCN 3072-100x4-10, N=200, loss+grads", "W1"),
    Row("W1bn", "W1", "W1 + batchnorm", "W1bn"),
    Row("W1-dropout", "W1", "FCN 3072-100x2-10 + dropout 0.5 (seeded), N=200, loss+grads", None, "dropout"),
    Row("adam-W1", "W1", "Adam update of W1's 10 params", None, "adam"),
    Row("W2-fwd", "W2", "conv 7x7 3->32, x(50,3,32,32), forward only", "W2", "fwd"),
    Row("W2", "W2", "conv 7x7 3->32, fwd+bwd", "W2"),
    Row("W3-fwd", "W3", "conv 3x3 64->64, x(64,64,16,16), forward only", "W3", "fwd"),
    Row("W3", "W3", "conv 3x3 64->64, fwd+bwd", "W3"),
    Row("W4-2x2", "W4", "max pool 2x2 s2 (50,32,32,32), fwd+bwd", "W4-2x2"),
    Row("W4-3x3", "W4", "max pool 3x3 s2 (50,32,33,33), fwd+bwd", "W4-3x3"),
    Row("W5-50", "W5", "ThreeLayerConvNet step (loss+grads), N=50", "W5-50"),
    Row("W5-256", "W5", "ThreeLayerConvNet step (loss+grads), N=256", "W5-256"),
]
BY_KEY = {r.key: r for r in ROWS}
IMPLS = ("portnn-torch", "torch")


def select(only: str | None):
    """Rows named by ``--only`` (comma-separated keys or groups W1..W5; an exact key wins)."""
    if not only:
        return list(ROWS)
    out = []
    for tok in (t.strip() for t in only.split(",") if t.strip()):
        hits = [BY_KEY[tok]] if tok in BY_KEY else [
            r for r in ROWS if r.key.lower() == tok.lower() or r.group.lower() == tok.lower()]
        if not hits:
            raise SystemExit(f"--only: unknown row {tok!r}; known: {', '.join(BY_KEY)} (or a group W1..W5)")
        out += [r for r in hits if r not in out]
    return out


def _conv_fwd(wl, impl):
    import numpy as np

    host = W._host_data(wl)
    if impl == "portnn-torch":
        from portnn import layers as L
        from portnn.backends import get_backend

        be = get_backend("torch")
        x, w, b = (be.asarray(host[k], dtype="float32") for k in ("x", "w", "b"))
        param = {"stride": 1, "pad": wl.params["pad"]}
        return lambda: L.conv_forward(x, w, b, param)
    import torch
    import torch.nn.functional as F

    x, w, b = (torch.tensor(np.ascontiguousarray(host[k]), requires_grad=True) for k in ("x", "w", "b"))
    return lambda: F.conv2d(x, w, b, stride=1, padding=wl.params["pad"])


def _dropout_step(impl):
    """FullyConnectedNet([100, 100], dropout_keep_ratio=0.5, seed=0) loss+grads, N=200."""
    import numpy as np

    import portnn

    host = W._host_data(W.BY_KEY["W1"])

    def model(backend):
        return portnn.FullyConnectedNet([100, 100], input_dim=3072, num_classes=10, dropout_keep_ratio=0.5,
                                        reg=W.REG, weight_scale=5e-2, dtype="float32", seed=0, backend=backend)

    if impl == "portnn-torch":
        m = model("torch")
        X, y = m.backend.asarray(host["X"], dtype="float32"), m.backend.asarray(host["y"])
        return lambda: m.loss(X, y)[0]
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    ref = model("numpy")
    params = {k: torch.tensor(np.ascontiguousarray(v), requires_grad=True) for k, v in ref.params.items()}
    X, y = torch.tensor(host["X"]), torch.tensor(host["y"])
    plist = list(params.values())
    weights = [params[k] for k in params if k.startswith("W")]

    def step():
        h = X
        for i in (1, 2):
            h = F.dropout(F.relu(F.linear(h, params[f"W{i}"].T, params[f"b{i}"])), 0.5, training=True)
        scores = F.linear(h, params["W3"].T, params["b3"])
        loss = F.cross_entropy(scores, y) + 0.5 * W.REG * sum(torch.sum(w * w) for w in weights)
        torch.autograd.grad(loss, plist)
        return float(loss.detach())
    return step


def _adam_step(impl, foreach=False, fused=False):
    """One Adam update of W1's params (fn, host_ids): portnn.optim.adam per param, or
    torch.optim.Adam(foreach=..., fused=...).step(); grads from one W1 step."""
    import numpy as np

    wl = W.BY_KEY["W1"]
    host = W._host_data(wl)
    if impl == "portnn-torch":
        from portnn import optim

        m = W._portnn_model(wl, "torch")
        X, y = m.backend.asarray(host["X"], dtype="float32"), m.backend.asarray(host["y"])
        _, grads = m.loss(X, y)
        params = dict(m.params)
        configs = {k: {"learning_rate": 1e-3} for k in params}

        def update():
            for k in params:
                params[k], configs[k] = optim.adam(params[k], grads[k], configs[k])
        return update, frozenset()
    import torch

    ref = W._portnn_model(wl, "numpy")
    plist = [torch.tensor(np.ascontiguousarray(v), requires_grad=True) for v in ref.params.values()]
    rng = np.random.default_rng(0)
    for p in plist:
        p.grad = torch.tensor(rng.standard_normal(tuple(p.shape), dtype=np.float32))
    opt = torch.optim.Adam(plist, lr=1e-3, foreach=foreach, fused=fused)
    opt.step()  # creates the state (and the step counters) before anything is counted
    host_ids = frozenset() if fused else frozenset(id(opt.state[p]["step"]) for p in plist)
    return opt.step, host_ids


def build(row: Row, impl: str):
    """(fn, host_ids): the function whose one call is counted for ``row`` on ``impl``."""
    if row.part == "dropout":
        return _dropout_step(impl), frozenset()
    if row.part == "adam":
        return _adam_step(impl)
    if row.part == "fwd":
        return _conv_fwd(W.BY_KEY[row.workload], impl), frozenset()
    fn, _check = W.build(row.workload, impl)
    return fn, frozenset()


def measure(rows, attribute=False, log=None):
    """{row key: {impl: Summary}}."""
    res = {}
    for row in rows:
        res[row.key] = {}
        for impl in IMPLS:
            fn, host_ids = build(row, impl)
            res[row.key][impl] = Summary(count(fn, attribute=attribute and impl == "portnn-torch",
                                               host_ids=host_ids))
        if log:
            p, t = res[row.key]["portnn-torch"], res[row.key]["torch"]
            log(f"{row.key:10s} portnn {p.compute:4d} computing + {p.views:4d} views ({p.slices} slices)   "
                f"PyTorch {t.compute:4d} computing + {t.views:3d} views")
    return res


def adam_variants():
    """Computing ops of torch.optim.Adam's step on W1's params, per implementation."""
    out = {}
    for label, kw in (("foreach=False", {}), ("foreach=True", {"foreach": True}), ("fused=True", {"fused": True})):
        try:
            fn, host_ids = _adam_step("torch", **kw)
            out[label] = Summary(count(fn, host_ids=host_ids))
        except (RuntimeError, ValueError) as e:  # fused needs a torch that supports it on this device
            out[label] = f"{type(e).__name__}: {e}"
    return out


# ----------------------------------------------------------------------------- output


def _ms(n):
    return n * LAUNCH_US / 1000.0


def _ratio(a, b):
    return f"{a / b:.1f}" if b else "-"


def _top(s: Summary):
    return ", ".join(f"{n} {c}" for n, c in s.top(3))


HEAD = ["workload", "portnn computing ops", "portnn views (slices)", "PyTorch computing ops", "PyTorch views",
        "portnn / PyTorch (computing)", f"launch estimate ms at {LAUNCH_US:g} us: portnn / PyTorch",
        "what dominates portnn (computing)"]


def table_markdown(res) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for key, per in res.items():
        p, t = per["portnn-torch"], per["torch"]
        lines.append("| " + " | ".join([
            f"{key}: {BY_KEY[key].title}", str(p.compute), f"{p.views} ({p.slices})", str(t.compute), str(t.views),
            _ratio(p.compute, t.compute), f"{_ms(p.compute):.2f} / {_ms(t.compute):.2f}", _top(p)]) + " |")
    return "\n".join(lines)


def table_text(res) -> str:
    lines = [f"{'row':10s} {'portnn':>7s} {'views':>6s} {'slices':>6s} {'PyTorch':>7s} {'views':>6s} "
             f"{'ratio':>5s} {'est ms':>13s}  top portnn ops"]
    for key, per in res.items():
        p, t = per["portnn-torch"], per["torch"]
        lines.append(f"{key:10s} {p.compute:7d} {p.views:6d} {p.slices:6d} {t.compute:7d} {t.views:6d} "
                     f"{_ratio(p.compute, t.compute):>5s} {_ms(p.compute):6.2f}/{_ms(t.compute):6.2f}  {_top(p)}")
    return "\n".join(lines)


def notes_markdown(res, variants=None) -> str:
    """The paragraph under the table (in the docs' marker block)."""
    import torch

    parts = []
    reads = {k: (v["portnn-torch"].host_reads, v["torch"].host_reads) for k, v in res.items()}
    model_rows = [k for k in ("W1", "W5-50") if k in reads]
    if model_rows:
        parts.append("Device -> host reads (synchronisations) per step, counted among the computing ops: "
                     + "; ".join(f"{k} portnn {reads[k][0]}, PyTorch {reads[k][1]}" for k in model_rows)
                     + " (portnn's: the label range check of `model.loss`, its min and max read separately, "
                       "2; torch's own label check inside `F.one_hot`, which array-api-extra's `one_hot` calls, "
                       "2, on the CPU only: CUDA skips it and CuPy takes another path; `float(loss)`, 1. The "
                       "Solver's step runs the unchecked `_forward_backward` and reads losses once per report).")
    if "W1-dropout" in res:
        parts.append("W1-dropout's PyTorch count is torch's CPU dropout (bernoulli_ + div_ + mul forward, mul "
                     "backward, per layer); on CUDA `F.dropout` is the fused `native_dropout`, 2 kernels per "
                     "layer, fwd + bwd.")
    if variants:
        txt = []
        for label, s in variants.items():
            txt.append(f"{label} {s.compute}" if isinstance(s, Summary) else f"{label}: not run ({s})")
        parts.append("torch.optim.Adam on the same 10 params, computing ops per step: " + ", ".join(txt)
                     + " (foreach's `_foreach_*` ops are one multi-tensor launch each on CUDA for up to "
                       "a few dozen tensors; the step counters stay on the host unless capturable/fused).")
    ups = {k: sum(1 for o in v["portnn-torch"].ops if o.kind == "compute" and o.name in ("lift_fresh", "scalar_tensor"))
           for k, v in res.items()}
    if any(ups.values()):
        parts.append("Torch-only among portnn's computing ops: Python scalars made device tensors (`lift_fresh` "
                     "after array-api-compat's `torch.asarray(0.0, device=...)` in `maximum(x, 0.0)`, "
                     "`scalar_tensor` in `where`): "
                     + ", ".join(f"{k} {n}" for k, n in ups.items() if n)
                     + "; CuPy passes them to the kernel as arguments.")
    noops = {k: v["portnn-torch"].n("noop") for k, v in res.items()}
    if any(noops.values()):
        parts.append("Not counted: no-op self-copies, the write-back of `x[s] += v` (col2im, pool gradients), which "
                     "torch skips and CuPy may run as a copy kernel (unverified): "
                     + ", ".join(f"{k} {n}" for k, n in noops.items() if n) + ".")
    return "\n\n".join([
        "`python -m benchmarks.opcount --markdown --write-docs` (torch " + torch.__version__.split("+")[0]
        + ", CPU tensors; under a minute) counts, for one call of each workload's timed function after a "
          "warm-up call (the same `benchmarks.workloads.build(key, impl)` the timings use; the `-fwd`, "
          "`W1-dropout` and `adam-W1` rows are built in `benchmarks/opcount.py`), every aten operation torch "
          "dispatches, through a `TorchDispatchMode`, for portnn on the torch backend and for native "
          "PyTorch. An op whose schema says its result aliases its input (`OpOverload.is_view`: slice, "
          "view, permute, expand, t, select, detach, ...) is a view: no kernel. Everything else except "
          "`empty` allocations and no-op self-copies is a computing op: at least one kernel launch on "
          "a GPU, so `computing ops x " + f"{LAUNCH_US:g}" + " us` estimates the launch overhead, a floor on the "
          "step time of small workloads on a GPU whatever its speed (one aten op can be several kernels: "
          "cuDNN, cross-entropy; and `stack` of k strided slices, as im2col does, is k copies on torch "
          "CUDA for 5-D results and on CuPy above 2 MiB per slice). The measured GPU times to put "
          "beside the estimate: `python -m benchmarks --gpu` (portnn-cupy against torch-cuda; "
          "docs/benchmarks_gpu.md), e.g. W5-50: estimate "
          + (f"{_ms(res['W5-50']['portnn-torch'].compute):.2f} ms portnn, "
             f"{_ms(res['W5-50']['torch'].compute):.2f} ms PyTorch"
             if "W5-50" in res else "see the W5-50 row")
          + " of launches alone. `--sites W5-50` lists which portnn functions issue the operations.",
    ] + parts)


def docs_block(res, variants=None) -> str:
    return "\n".join([BEGIN, "", table_markdown(res), "", notes_markdown(res, variants), "", END])


def write_docs(block: str, path: str = DOCS) -> str:
    """Replace the marker block of ``path`` (or append the section with it)."""
    with open(path) as f:
        text = f.read()
    s, e = text.find(BEGIN), text.find(END)
    if s >= 0 and e > s:
        text = text[:s] + block + text[e + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
    return path


def sites_text(key, s: Summary, k=10) -> str:
    lines = [f"{key}: {s.compute} computing ops by the portnn function that issued them (innermost portnn frame)"]
    for site, n in s.by_site(k=k):
        names = collections.Counter(o.name for o in s.ops if o.kind == "compute"
                                    and o.site + (f" via {o.via}" if o.via else "") == site)
        lines.append(f"  {n:5d}  {site}   [{', '.join(f'{a} {b}' for a, b in names.most_common(6))}]")
    lines.append("  ... with the calling portnn function:")
    for site, n in s.by_site(k=k, with_caller=True):
        lines.append(f"  {n:5d}  {site}")
    v = collections.Counter(o.site for o in s.ops if o.kind == "view").most_common(3)
    lines.append("  views: " + ", ".join(f"{site} {n}" for site, n in v))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.opcount", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help=f"comma-separated rows or groups ({', '.join(BY_KEY)})")
    p.add_argument("--markdown", action="store_true", help="print the markdown table and notes")
    p.add_argument("--write-docs", action="store_true",
                   help=f"replace the {BEGIN} ... {END} block of docs/benchmarks.md (all rows unless --only)")
    p.add_argument("--sites", default=None, help="rows whose portnn ops to attribute to portnn functions")
    p.add_argument("--top", type=int, default=10, help="with --sites: functions to list")
    args = p.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("python -m benchmarks.opcount: needs torch (pip install torch)", file=sys.stderr)
        return 2
    rows = select(args.only)
    res = measure(rows, log=None if args.markdown else print)
    variants = adam_variants() if "adam-W1" in res else None
    if args.markdown:
        print(table_markdown(res))
        print()
        print(notes_markdown(res, variants))
    else:
        print()
        print(table_text(res))
    if args.write_docs:
        print(f"\nwrote {write_docs(docs_block(res, variants))}")
    if args.sites:
        for row in select(args.sites):
            fn, host_ids = build(row, "portnn-torch")
            print()
            print(sites_text(row.key, Summary(count(fn, attribute=True, host_ids=host_ids)), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
