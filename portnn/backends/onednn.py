"""oneDNN's direct convolution for the numpy backend (optional extra ``portnn[onednn]``).

Why: on the CPU the convolution's floor is not NumPy's. With im2col the forward is one
OpenBLAS sgemm on a skinny shape, and that product ALONE takes longer than PyTorch's
whole convolution (oneDNN's JIT direct kernels on a blocked layout): W2 (7x7, 3 -> 32)
GEMM 4.4-8.9 ms against PyTorch's 2.2-4.2 ms for all of it, W3 (3x3, 64 -> 64) 9.4-18 ms
against 5.1-10.4 ms (docs/benchmarks.md). So this module calls oneDNN itself, the
library PyTorch uses, through its C API (ctypes; no compiler, no Python bindings
needed): the ``onednn-cpu-gomp`` wheel ships libdnnl.so.3 built with GNU OpenMP and
nothing else. Registered as the numpy primitive "conv2d" (docs/design.md, rule 2) when
the library loads; the portable im2col + GEMM code in portnn.layers.conv stays the
reference, and tests/test_onednn.py compares the two on every call shape the layers use.

What it does, per call shape (cached): primitive descriptors for the forward
(training), backward data and backward weights with the layouts left to oneDNN
("any"), and reorder primitives between NumPy's arrays (their strides, views
included) and the blocked layouts oneDNN picked, exactly as PyTorch's CPU conv2d does.

Scope: float32, groups 1, no dilation, stride >= 1, symmetric zero padding, N >= 1.
Anything else (float64, an empty batch) is answered by ``applies`` = False and runs on
the portable path. Threads: oneDNN runs on libgomp's pool with portnn's thread count
(``numpy_primitives.num_threads()``: PORTNN_NUM_THREADS, else the BLAS setting).

Opt out: PORTNN_ONEDNN=0. Another libdnnl (v3 C API): PORTNN_ONEDNN_LIB=/path/libdnnl.so.3.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["load", "Conv2d", "conv2d", "library_path", "version", "OneDNNError", "PLANS"]

_vp = ctypes.c_void_p
_Dims = ctypes.c_int64 * 12


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _vp)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p)]


# The C API's constants (oneDNN v3 dnnl_types.h / dnnl_common_types.h).
_F32, _TAG_ANY, _CPU, _IN_ORDER = 3, 1, 1, 1
_FORWARD_TRAINING, _CONV_DIRECT = 64, 1
_Q_SRC, _Q_DIFF_SRC, _Q_WEIGHTS, _Q_DIFF_WEIGHTS, _Q_DST, _Q_DIFF_DST = 129, 130, 131, 132, 133, 134
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_BIAS = 1, 17, 33, 41
_ARG_DIFF_SRC, _ARG_DIFF_DST, _ARG_DIFF_WEIGHTS, _ARG_DIFF_BIAS = 129, 145, 161, 169
_STATUS = {1: "out of memory", 2: "invalid arguments", 3: "unimplemented", 5: "runtime error"}

_SIGNATURES = {
    "dnnl_version": ([], ctypes.POINTER(_Version)),
    "dnnl_engine_create": ([ctypes.POINTER(_vp), ctypes.c_int, ctypes.c_size_t], ctypes.c_int),
    "dnnl_stream_create": ([ctypes.POINTER(_vp), _vp, ctypes.c_uint], ctypes.c_int),
    "dnnl_stream_wait": ([_vp], ctypes.c_int),
    "dnnl_memory_desc_create_with_strides": (
        [ctypes.POINTER(_vp), ctypes.c_int, _Dims, ctypes.c_int, _Dims], ctypes.c_int),
    "dnnl_memory_desc_create_with_tag": (
        [ctypes.POINTER(_vp), ctypes.c_int, _Dims, ctypes.c_int, ctypes.c_int], ctypes.c_int),
    "dnnl_memory_desc_equal": ([_vp, _vp], ctypes.c_int),
    "dnnl_memory_desc_get_size": ([_vp], ctypes.c_size_t),
    "dnnl_memory_create": ([ctypes.POINTER(_vp), _vp, _vp, _vp], ctypes.c_int),
    "dnnl_memory_set_data_handle": ([_vp, _vp], ctypes.c_int),
    "dnnl_primitive_desc_query_md": ([_vp, ctypes.c_int, ctypes.c_int], _vp),
    "dnnl_primitive_create": ([ctypes.POINTER(_vp), _vp], ctypes.c_int),
    "dnnl_primitive_execute": ([_vp, _vp, ctypes.c_int, _vp], ctypes.c_int),
    "dnnl_primitive_destroy": ([_vp], ctypes.c_int),
    "dnnl_primitive_desc_destroy": ([_vp], ctypes.c_int),
    "dnnl_memory_destroy": ([_vp], ctypes.c_int),
    "dnnl_memory_desc_destroy": ([_vp], ctypes.c_int),
    "dnnl_reorder_primitive_desc_create": ([ctypes.POINTER(_vp), _vp, _vp, _vp, _vp, _vp], ctypes.c_int),
    "dnnl_convolution_forward_primitive_desc_create": (
        [ctypes.POINTER(_vp), _vp, ctypes.c_int, ctypes.c_int, _vp, _vp, _vp, _vp,
         _Dims, _Dims, _Dims, _Dims, _vp], ctypes.c_int),
    "dnnl_convolution_backward_data_primitive_desc_create": (
        [ctypes.POINTER(_vp), _vp, ctypes.c_int, _vp, _vp, _vp, _Dims, _Dims, _Dims, _Dims, _vp, _vp],
        ctypes.c_int),
    "dnnl_convolution_backward_weights_primitive_desc_create": (
        [ctypes.POINTER(_vp), _vp, ctypes.c_int, _vp, _vp, _vp, _vp, _Dims, _Dims, _Dims, _Dims, _vp, _vp],
        ctypes.c_int),
}


class OneDNNError(RuntimeError):
    """A oneDNN call failed (the message names the call and the status)."""


def _candidates():
    explicit = os.environ.get("PORTNN_ONEDNN_LIB")
    if explicit:
        return [explicit]
    # The wheels install the library into the environment's lib/ (their data files).
    found = [os.path.join(sys.prefix, "lib", name) for name in ("libdnnl.so.3", "libdnnl.so")]
    system = ctypes.util.find_library("dnnl")
    return found + ([system] if system else [])


_state: dict = {}
_lock = threading.Lock()


def load():
    """The loaded library wrapper, or None (not installed, opted out, or not a v3 oneDNN)."""
    with _lock:
        if "api" not in _state:
            _state["api"] = _load_api()
        return _state["api"]


def _load_api():
    if os.environ.get("PORTNN_ONEDNN", "") == "0":
        return None
    for path in _candidates():
        if not os.path.exists(path) and os.sep in path:
            continue
        # libgomp's worker threads spin after every parallel region unless told not to,
        # and on a machine with as many cores as threads they then starve the OpenBLAS
        # threads of the next matrix product (measured: a W3 conv followed by a GEMM took
        # 33 ms spinning, 19 ms passive, against 13.4 ms for the two apart). Only a default:
        # an explicit OMP_WAIT_POLICY wins, and it is read once, when libgomp loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        v = lib.dnnl_version().contents
        if v.major != 3:
            continue
        return _Api(lib, path, (v.major, v.minor, v.patch))
    return None


def library_path():
    """Path of the loaded libdnnl, or None."""
    api = load()
    return None if api is None else api.path


def version():
    """(major, minor, patch) of the loaded oneDNN, or None."""
    api = load()
    return None if api is None else api.version


class _Api:
    """The library, its CPU engine, one stream per thread and libgomp's thread knob."""

    def __init__(self, lib, path, version):
        self.lib, self.path, self.version = lib, path, version
        self.engine = _vp()
        self.check(lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU, 0), "dnnl_engine_create")
        self._local = threading.local()
        try:  # the libgomp libdnnl links (same soname: the same loaded library)
            self._omp_set = ctypes.CDLL("libgomp.so.1").omp_set_num_threads
        except (OSError, AttributeError):
            self._omp_set = None

    @staticmethod
    def check(status, what):
        if status != 0:
            raise OneDNNError(f"oneDNN {what} failed: {_STATUS.get(status, status)}")

    def stream(self):
        """This thread's stream (a oneDNN stream is not for concurrent use), with its
        OpenMP thread count set to portnn's (per thread: an OpenMP ICV)."""
        s = getattr(self._local, "stream", None)
        if s is None:
            s = _vp()
            self.check(self.lib.dnnl_stream_create(ctypes.byref(s), self.engine, _IN_ORDER), "dnnl_stream_create")
            self._local.stream = s
        if self._omp_set is not None:
            from .numpy_primitives import num_threads

            n = num_threads()
            if getattr(self._local, "threads", None) != n:
                self._omp_set(n)
                self._local.threads = n
        return s

    def md(self, shape, strides=None, owner=None):
        """A float32 memory descriptor: explicit strides (in elements), or "any";
        recorded in ``owner`` (a list) for _destroy."""
        m = _vp()
        dims = _Dims(*shape)
        if strides is None:
            st = self.lib.dnnl_memory_desc_create_with_tag(ctypes.byref(m), len(shape), dims, _F32, _TAG_ANY)
        else:
            st = self.lib.dnnl_memory_desc_create_with_strides(ctypes.byref(m), len(shape), dims, _F32,
                                                               _Dims(*strides))
        self.check(st, "memory descriptor")
        if owner is not None:
            owner.append(("memory_desc", m))
        return m

    def memory(self, md, owner):
        h = _vp()
        self.check(self.lib.dnnl_memory_create(ctypes.byref(h), md, self.engine, None), "dnnl_memory_create")
        owner.append(("memory", h))
        return h

    def primitive(self, pd, owner):
        p = _vp()
        self.check(self.lib.dnnl_primitive_create(ctypes.byref(p), pd), "dnnl_primitive_create")
        owner.append(("primitive", p))
        return p

    def reorder(self, src_md, dst_md, owner):
        pd = _vp()
        self.check(self.lib.dnnl_reorder_primitive_desc_create(ctypes.byref(pd), src_md, self.engine, dst_md,
                                                               self.engine, None), "reorder")
        owner.append(("primitive_desc", pd))
        return self.primitive(pd, owner)

    def destroy(self, owned):
        """Free what md/memory/primitive/reorder recorded (primitives first)."""
        order = ("primitive", "memory", "primitive_desc", "memory_desc")
        for kind in order:
            for k, h in owned:
                if k == kind:
                    getattr(self.lib, f"dnnl_{kind}_destroy")(h)
        owned.clear()

    def execute(self, prim, stream, args):
        arr = (_ExecArg * len(args))(*[_ExecArg(k, m) for k, m in args])
        self.check(self.lib.dnnl_primitive_execute(prim, stream, len(args), arr), "execute")


def _strides(a):
    return tuple(s // a.itemsize for s in a.strides)


def _usable(a):
    """Strides oneDNN can describe: non-negative multiples of the item size."""
    return all(s >= 0 and s % a.itemsize == 0 for s in a.strides)


class _Plan:
    """One oneDNN primitive for fixed shapes and strides, with the reorders between the
    callers' arrays and the layouts it chose, and the buffers of those layouts.

    ``slots``: (exec arg, query, plain shape, plain strides, "in" | "out"). A slot whose
    chosen layout is the plain one is passed straight through; otherwise an input is
    reordered into a buffer before the primitive and an output out of one after it.
    The buffers live with the plan (allocated once: a fresh allocation above glibc's
    32 MiB mmap threshold costs a page fault per 4 KiB on every call), and Conv2d keeps
    at most PLANS plans. Runs are serialised per plan: its buffers and memory objects are
    shared, and a primitive with library-managed scratchpad is not for concurrent use."""

    def __init__(self, api, pd, slots, owned):
        self.api, self.lock, self.owned, self.released = api, threading.Lock(), owned, False
        owned.append(("primitive_desc", pd))
        self.prim = api.primitive(pd, owned)
        self.user, self.before, self.after, self.args, self.keep = {}, [], [], [], []
        for arg, query, shape, strides, role in slots:
            plain = api.md(shape, strides, owned)
            user = api.memory(plain, owned)
            self.user[arg] = user
            chosen = plain if query is None else api.lib.dnnl_primitive_desc_query_md(pd, query, 0)
            if query is None or api.lib.dnnl_memory_desc_equal(chosen, plain):
                self.args.append((arg, user))
                continue
            buf = np.empty(api.lib.dnnl_memory_desc_get_size(chosen) // 4 + 1, dtype=np.float32)
            inner = api.memory(chosen, owned)
            api.check(api.lib.dnnl_memory_set_data_handle(inner, buf.ctypes.data), "set handle")
            self.keep.append(buf)
            self.args.append((arg, inner))
            if role == "in":
                self.before.append((api.reorder(plain, chosen, owned), [(_ARG_SRC, user), (_ARG_DST, inner)]))
            else:
                self.after.append((api.reorder(chosen, plain, owned), [(_ARG_SRC, inner), (_ARG_DST, user)]))

    def run(self, arrays: dict) -> bool:
        """Execute on ``arrays`` (exec arg -> ndarray of the planned shape and strides);
        False (nothing run) if the plan was released meanwhile."""
        api = self.api
        stream = api.stream()
        with self.lock:
            if self.released:
                return False
            for arg, a in arrays.items():
                api.check(api.lib.dnnl_memory_set_data_handle(self.user[arg], a.ctypes.data), "set handle")
            for prim, args in self.before:
                api.execute(prim, stream, args)
            api.execute(self.prim, stream, self.args)
            for prim, args in self.after:
                api.execute(prim, stream, args)
            api.check(api.lib.dnnl_stream_wait(stream), "dnnl_stream_wait")
        return True

    def release(self):
        """Free the oneDNN objects and the buffers (waits for a run in progress)."""
        with self.lock:
            self.released = True
            self.api.destroy(self.owned)
            self.keep.clear()


#: Plans Conv2d keeps (least recently used dropped): a training run needs three per
#: conv layer and batch shape (forward, backward weights, backward data).
PLANS = 48


class Conv2d:
    """The "conv2d" primitive: forward, and both backward passes, of portnn's conv layer
    (cross-correlation, zero padding, as torch's conv2d) on oneDNN. Shapes as in
    portnn.layers.conv_forward; results agree with the portable path to rounding."""

    def __init__(self, api):
        self.api = api
        self._plans: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def applies(self, x, w) -> bool:
        """Whether this kernel computes conv_forward(x, w, ...) (float32, N >= 1)."""
        return x.dtype == np.float32 and w.dtype == np.float32 and x.shape[0] > 0

    # -- plans ---------------------------------------------------------------------

    def _geometry(self, stride, pad):
        return _Dims(stride, stride), _Dims(0, 0), _Dims(pad, pad), _Dims(pad, pad)

    def _forward_pd(self, xs, ws, os_, stride, pad, owned):
        api = self.api
        pd = _vp()
        api.check(api.lib.dnnl_convolution_forward_primitive_desc_create(
            ctypes.byref(pd), api.engine, _FORWARD_TRAINING, _CONV_DIRECT, api.md(xs, None, owned),
            api.md(ws, None, owned), api.md((ws[0],), (1,), owned), api.md(os_, None, owned),
            *self._geometry(stride, pad), None), "convolution forward")
        return pd

    def _hint(self, xs, ws, os_, stride, pad, owned):
        """The forward descriptor a backward descriptor is created against (owned by the plan)."""
        hint = self._forward_pd(xs, ws, os_, stride, pad, owned)
        owned.append(("primitive_desc", hint))
        return hint

    def _run(self, key, make, arrays):
        """Run the plan for ``key`` (built by ``make(owned)`` on first use) on ``arrays``."""
        while True:
            with self._lock:
                plan = self._plans.get(key)
                if plan is None:
                    owned: list = []
                    try:
                        plan = make(owned)
                    except BaseException:
                        self.api.destroy(owned)
                        raise
                    self._plans[key] = plan
                    while len(self._plans) > PLANS:
                        self._plans.popitem(last=False)[1].release()
                self._plans.move_to_end(key)
            if plan.run(arrays):
                return
            # released by another thread between the lookup and the run: build it again

    # -- the three passes --------------------------------------------------------------

    def forward(self, x, w, b, stride, pad):
        """out (N, F, H', W') float32, C-contiguous, = conv(x, w) + b."""
        x, w = (a if _usable(a) else np.ascontiguousarray(a) for a in (x, w))
        b = np.ascontiguousarray(b)  # (F,): the primitive is made for a dense bias
        N, _, H, W = x.shape
        F, _, HH, WW = w.shape
        out = np.empty((N, F, 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride),
                       dtype=np.float32)

        def make(owned):
            pd = self._forward_pd(x.shape, w.shape, out.shape, stride, pad, owned)
            return _Plan(self.api, pd, [
                (_ARG_SRC, _Q_SRC, x.shape, _strides(x), "in"),
                (_ARG_WEIGHTS, _Q_WEIGHTS, w.shape, _strides(w), "in"),
                (_ARG_BIAS, None, b.shape, (1,), "in"),
                (_ARG_DST, _Q_DST, out.shape, _strides(out), "out")], owned)

        key = ("fwd", x.shape, _strides(x), w.shape, _strides(w), stride, pad)
        self._run(key, make, {_ARG_SRC: x, _ARG_WEIGHTS: w, _ARG_BIAS: b, _ARG_DST: out})
        return out

    def backward(self, dout, x, w, stride, pad, need_dx=True):
        """(dx or None, dw, db) of forward(x, w, b, stride, pad) for upstream gradient dout."""
        dout, x, w = (a if _usable(a) else np.ascontiguousarray(a) for a in (dout, x, w))
        api, geo = self.api, self._geometry(stride, pad)
        dw = np.empty(w.shape, dtype=np.float32)
        db = np.empty((w.shape[0],), dtype=np.float32)

        def make_weights(owned):
            pd, hint = _vp(), self._hint(x.shape, w.shape, dout.shape, stride, pad, owned)
            api.check(api.lib.dnnl_convolution_backward_weights_primitive_desc_create(
                ctypes.byref(pd), api.engine, _CONV_DIRECT, api.md(x.shape, None, owned),
                api.md(w.shape, None, owned), api.md(db.shape, (1,), owned), api.md(dout.shape, None, owned),
                *geo, hint, None), "convolution backward weights")
            return _Plan(api, pd, [
                (_ARG_SRC, _Q_SRC, x.shape, _strides(x), "in"),
                (_ARG_DIFF_DST, _Q_DIFF_DST, dout.shape, _strides(dout), "in"),
                (_ARG_DIFF_WEIGHTS, _Q_DIFF_WEIGHTS, dw.shape, _strides(dw), "out"),
                (_ARG_DIFF_BIAS, None, db.shape, (1,), "out")], owned)

        shapes = (x.shape, w.shape, dout.shape, stride, pad)
        self._run(("bwd_w", _strides(x), _strides(w), _strides(dout)) + shapes, make_weights,
                  {_ARG_SRC: x, _ARG_DIFF_DST: dout, _ARG_DIFF_WEIGHTS: dw, _ARG_DIFF_BIAS: db})
        if not need_dx:
            return None, dw, db
        dx = np.empty(x.shape, dtype=np.float32)

        def make_data(owned):
            pd, hint = _vp(), self._hint(x.shape, w.shape, dout.shape, stride, pad, owned)
            api.check(api.lib.dnnl_convolution_backward_data_primitive_desc_create(
                ctypes.byref(pd), api.engine, _CONV_DIRECT, api.md(x.shape, None, owned),
                api.md(w.shape, None, owned), api.md(dout.shape, None, owned), *geo, hint, None),
                "convolution backward data")
            return _Plan(api, pd, [
                (_ARG_DIFF_DST, _Q_DIFF_DST, dout.shape, _strides(dout), "in"),
                (_ARG_WEIGHTS, _Q_WEIGHTS, w.shape, _strides(w), "in"),
                (_ARG_DIFF_SRC, _Q_DIFF_SRC, dx.shape, _strides(dx), "out")], owned)

        self._run(("bwd_d", _strides(w), _strides(dout)) + shapes, make_data,
                  {_ARG_DIFF_DST: dout, _ARG_WEIGHTS: w, _ARG_DIFF_SRC: dx})
        return dx, dw, db


_conv: dict = {}


def conv2d():
    """The shared Conv2d kernel, or None when oneDNN is not available."""
    if "k" not in _conv:
        api = load()
        _conv["k"] = None if api is None else Conv2d(api)
    return _conv["k"]
