"""Data-parallel communicators: the collectives the Solver needs to train one
model in N processes (``mpiexec -n N ...``) as if it were one process with an
N-times larger batch.

    comm = portnn.distributed.create_communicator()      # "auto": MPI under mpiexec, else single
    solver = portnn.Solver(model, data, batch_size=32, comm=comm)   # 32 per rank, 32*N per step
    solver.train()

Every method below is COLLECTIVE unless it says otherwise: all ranks must call
it, in the same order, with arrays of the same names, shapes and dtypes (the
Solver guarantees this; see docs/distributed.md).

Communicator API
  rank, size, local_rank          this process, number of processes, rank within the node
  is_root                         rank == 0 (not collective)
  allreduce_mean(arrays)          -> the element-wise mean over ranks, same structure
  bcast(arrays, root=0)           -> root's arrays on every rank, same structure
  allreduce_scalars(values, op)   -> Python floats reduced with "sum" | "max" | "min"
  bcast_obj(obj, root=0)          -> root's (picklable, small) object
  gather_obj(obj, root=0)         -> list of every rank's object on root, None elsewhere
  run_on_root(fn)                 -> fn() computed on root only, result (or its exception) on all
  barrier()
  abort(code=1)                   end EVERY rank now (not collective: one rank calls it)
  stats                           {"allreduce_calls", "allreduce_bytes", "allreduce_seconds"}

``arrays`` is a dict name -> array (processed in SORTED name order, so every
rank lays out the same buffer) or a list/tuple (processed in its order). Arrays
may belong to any portnn backend; results are new arrays of the same backend,
device, dtype and shape (portnn never updates arrays in place). Per collective
call the arrays of one dtype are flattened into ONE contiguous buffer: one
Allreduce per dtype per step, not one per parameter.

Implementations: SingleProcessCommunicator (identity), MPICommunicator
(mpi4py; CuPy arrays are staged through host memory unless CUDA-aware MPI is
detected, after a stream synchronisation), NCCLCommunicator (cupyx.distributed
for the array collectives, MPI for objects and abort) and
ThreadFakeCommunicator (N threads in one process, for fast unit tests).

This module is host-side glue, not the compute path: it may use NumPy.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping

import numpy as np

from ._checks import dtype_str

__all__ = [
    "Communicator", "SingleProcessCommunicator", "MPICommunicator", "NCCLCommunicator",
    "ThreadFakeCommunicator", "CommAborted", "create_communicator", "launched_by_mpi",
    "shard_batch", "mark_all_ranks",
]


class CommAborted(RuntimeError):
    """Another rank aborted the job while this one waited in a collective."""


def mark_all_ranks(exc):
    """Tag an exception as raised identically on every rank (so the Solver
    re-raises it instead of aborting the job). Returns exc."""
    try:
        exc._portnn_all_ranks = True
    except AttributeError:  # pragma: no cover - exotic exception types
        pass
    return exc


def raised_on_all_ranks(exc) -> bool:
    return bool(getattr(exc, "_portnn_all_ranks", False))


# --------------------------------------------------------------------------- helpers
def launched_by_mpi() -> bool:
    """True when this process looks like one of several started by mpiexec/mpirun/srun
    (environment variables only; MPI is not initialised). Not collective."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"):
        try:
            if int(os.environ.get(var, "1")) > 1:
                return True
        except ValueError:
            pass
    return False


def shard_batch(perm: np.ndarray, step: int, batch_size: int, rank: int, size: int) -> np.ndarray:
    """Host indices of rank ``rank``'s part of global minibatch ``step``.

    The global batch is ``perm[step*G:(step+1)*G]`` with G = batch_size*size; rank r
    takes its r-th contiguous slice of ``batch_size`` samples. When the data set is
    smaller than one global batch the permutation is repeated so that every rank
    still gets exactly ``batch_size`` samples (equal lengths: no rank ever skips a
    collective the others make).
    """
    G = batch_size * size
    glob = perm[step * G : (step + 1) * G]
    if glob.shape[0] < G:
        glob = np.resize(perm, G)  # only when N < G (a single short epoch)
    return glob[rank * batch_size : (rank + 1) * batch_size]


def _backend_of(items):
    """The Backend of the first item that is a backend array (NumPy scalars, e.g.
    a reduced loss, are not arrays of any backend)."""
    from .backends import backend_of, get_backend

    for x in items:
        if not isinstance(x, np.generic):
            return backend_of(x)
    return get_backend("numpy")


def _ordered(arrays):
    """-> (names or None, list of arrays) in the canonical order."""
    if isinstance(arrays, Mapping):
        names = sorted(arrays)
        return names, [arrays[k] for k in names]
    if isinstance(arrays, (list, tuple)):
        return None, list(arrays)
    raise TypeError(f"arrays: expected a dict name -> array or a list of arrays, got {type(arrays).__name__}")


def _rebuild(names, items):
    return items if names is None else dict(zip(names, items))


def _dtype_groups(be, items):
    """Indices of ``items`` grouped by host dtype name, in first-seen order."""
    groups = {}
    for i, a in enumerate(items):
        groups.setdefault(_host_dtype_name(be, a), []).append(i)
    return groups


def _split_flat(xp, flat, group):
    """Cut a flat device buffer back into arrays shaped like ``group`` (in order)."""
    out, start = [], 0
    for a in group:
        n = int(np.prod(a.shape, dtype=np.int64)) if len(a.shape) else 1
        out.append(xp.reshape(flat[start : start + n], tuple(a.shape)))
        start += n
    return out


def _host_dtype_name(be, a):
    name = dtype_str(a.dtype)
    if name not in ("float64", "float32", "int64", "int32", "int8", "bool"):
        raise TypeError(f"unsupported dtype for a collective: {a.dtype!r}")
    return name


# --------------------------------------------------------------------------- base class
class Communicator:
    """Base class: the array collectives are written once here on top of four
    host-buffer primitives that subclasses provide (``_allreduce_sum_host``,
    ``_bcast_host``, ``bcast_obj``, ``gather_obj``) plus ``barrier``/``abort``."""

    name = "base"
    rank = 0
    size = 1
    local_rank = 0

    def __init__(self):
        self.stats = {"allreduce_calls": 0, "allreduce_bytes": 0, "allreduce_seconds": 0.0}

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # -- array collectives ----------------------------------------------------
    def allreduce_mean(self, arrays, backend=None):
        """Element-wise mean over ranks. arrays: dict name -> array (sorted-name
        order) or list, all of one backend (``backend``, found from the arrays
        when None); shapes/dtypes must match on every rank. Returns the same
        structure with new arrays (same backend, device, dtype, shape)."""
        names, items = _ordered(arrays)
        if self.size == 1 or not items:
            return _rebuild(names, items)
        t0 = time.perf_counter()
        be = backend if backend is not None else _backend_of(items)
        out = list(items)
        for _, idx in _dtype_groups(be, items).items():
            group = [items[i] for i in idx]
            for i, a in zip(idx, self._allreduce_group(be, group)):
                out[i] = a
        self.stats["allreduce_calls"] += 1
        self.stats["allreduce_seconds"] += time.perf_counter() - t0
        return _rebuild(names, out)

    def bcast(self, arrays, root=0, backend=None):
        """Root's arrays on every rank (same names/shapes/dtypes required)."""
        names, items = _ordered(arrays)
        if self.size == 1 or not items:
            return _rebuild(names, items)
        be = backend if backend is not None else _backend_of(items)
        out = list(items)
        for _, idx in _dtype_groups(be, items).items():
            group = [items[i] for i in idx]
            host = self._pack_host(be, group)
            host = self._bcast_host(host, root)
            for i, a in zip(idx, self._unpack_host(be, host, group)):
                out[i] = a
        return _rebuild(names, out)

    def _allreduce_group(self, be, group):
        host = self._pack_host(be, group)
        self.stats["allreduce_bytes"] += host.nbytes
        host = self._allreduce_sum_host(host)
        host /= self.size
        return self._unpack_host(be, host, group)

    @staticmethod
    def _pack_host(be, group):
        """One contiguous host buffer holding every array of ``group`` (one dtype)."""
        parts = [np.ravel(be.to_numpy(a)) for a in group]
        return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0], copy=True)

    @staticmethod
    def _unpack_host(be, host, group):
        out, start = [], 0
        for a in group:
            n = int(np.prod(a.shape, dtype=np.int64)) if len(a.shape) else 1
            piece = host[start : start + n].reshape(tuple(a.shape))
            start += n
            out.append(be.asarray(piece, dtype=a.dtype))
        return out

    # -- scalar / object collectives -------------------------------------------
    def allreduce_scalars(self, values, op="sum"):
        """Reduce a list of Python numbers over ranks ("sum" | "max" | "min") -> list of floats."""
        if op not in ("sum", "max", "min"):
            raise ValueError(f"op: expected 'sum', 'max' or 'min', got {op!r}")
        local = [float(v) for v in values]
        if self.size == 1:
            return local
        every = self.gather_obj(local)
        if self.is_root:
            if op == "sum":
                res = [float(sum(col)) for col in zip(*every)]
            else:
                res = [float((max if op == "max" else min)(col)) for col in zip(*every)]
        else:
            res = None
        return self.bcast_obj(res)

    def allgather_obj(self, obj):
        """Every rank's object, as a list indexed by rank, on every rank."""
        return self.bcast_obj(self.gather_obj(obj))

    def run_on_root(self, fn):
        """Call fn() on rank 0 only and return its result on every rank. If fn
        raises, every rank raises (rank 0 the original exception, the others the
        same type with the same message), marked as raised on all ranks, so no
        rank is left waiting for a collective the others skip."""
        result = error = None
        if self.is_root:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - forwarded, then re-raised
                error = e
        payload = None
        if self.is_root:
            payload = ("err", type(error), str(error)) if error is not None else ("ok", result)
        if self.size > 1:
            payload = self.bcast_obj(payload)
        if payload[0] == "ok":
            return payload[1]
        if error is not None:
            raise mark_all_ranks(error)
        exc_type, msg = payload[1], payload[2]
        try:
            exc = exc_type(msg)
        except Exception:  # noqa: BLE001 - a type that wants other arguments
            exc = RuntimeError(f"rank 0: {exc_type.__name__}: {msg}")
        raise mark_all_ranks(exc)

    # -- primitives ----------------------------------------------------------------
    def _allreduce_sum_host(self, buf: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _bcast_host(self, buf: np.ndarray, root: int) -> np.ndarray:
        raise NotImplementedError

    def bcast_obj(self, obj, root=0):
        raise NotImplementedError

    def gather_obj(self, obj, root=0):
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def abort(self, code=1):
        raise NotImplementedError

    def abort_on_error(self, exc, code=1):
        """Print ``exc`` with this rank's number to stderr, then end every rank."""
        sys.stderr.write(f"portnn: rank {self.rank}/{self.size} failed, aborting all ranks:\n")
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stderr.flush()
        self.abort(code)


# --------------------------------------------------------------------------- single process
class SingleProcessCommunicator(Communicator):
    """One process: every collective is the identity."""

    name = "single"

    def _allreduce_sum_host(self, buf):
        return buf

    def _bcast_host(self, buf, root):
        return buf

    def bcast_obj(self, obj, root=0):
        return obj

    def gather_obj(self, obj, root=0):
        return [obj]

    def barrier(self):
        pass

    def abort(self, code=1):
        raise SystemExit(code)


# --------------------------------------------------------------------------- MPI
def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "portnn.distributed: MPI needs mpi4py and an MPI library: pip install 'portnn[mpi]' "
            f"(mpi4py + the mpich wheels), then run under mpiexec -n N ({e})"
        ) from None
    return MPI


def _cuda_aware_mpi(MPI) -> bool:
    """Best-effort detection of a CUDA-aware MPI (PORTNN_MPI_CUDA_AWARE=0/1 overrides)."""
    env = os.environ.get("PORTNN_MPI_CUDA_AWARE")
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes")
    try:  # MPIX_Query_cuda_support: Open MPI >= 4 and MPICH >= 4 built with CUDA
        import ctypes

        fn = getattr(ctypes.CDLL(None), "MPIX_Query_cuda_support", None)
        if fn is None:
            return False
        fn.restype = ctypes.c_int
        return bool(fn())
    except Exception:  # noqa: BLE001 - no symbol, no libc: not CUDA-aware
        return False


class MPICommunicator(Communicator):
    """mpi4py over ``MPI.COMM_WORLD`` (or the given communicator).

    NumPy buffers go to MPI directly. Other backends' arrays are staged through
    host memory with ``Backend.to_numpy`` (a synchronous copy). CuPy arrays go to
    MPI as device buffers instead when a CUDA-aware MPI is detected (or
    PORTNN_MPI_CUDA_AWARE=1), after synchronising the current CUDA stream.
    """

    name = "mpi"

    def __init__(self, mpi_comm=None):
        super().__init__()
        MPI = _import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        try:
            node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()
        except Exception:  # noqa: BLE001 - Split_type missing: assume one node
            self.local_rank, self.local_size = self.rank, self.size
        self.cuda_aware = _cuda_aware_mpi(MPI)

    def _allreduce_sum_host(self, buf):
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def _bcast_host(self, buf, root):
        self.comm.Bcast(buf, root=root)
        return buf

    def _allreduce_group(self, be, group):
        if not (self.cuda_aware and be.name == "cupy"):
            return super()._allreduce_group(be, group)
        xp = be.xp
        flat = xp.concat([xp.reshape(a, (-1,)) for a in group])
        self.stats["allreduce_bytes"] += int(flat.nbytes)
        import cupy

        cupy.cuda.get_current_stream().synchronize()  # MPI does not know CUDA streams
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        return _split_flat(xp, flat / self.size, group)

    def allreduce_scalars(self, values, op="sum"):
        if op not in ("sum", "max", "min"):
            raise ValueError(f"op: expected 'sum', 'max' or 'min', got {op!r}")
        buf = np.asarray([float(v) for v in values], dtype=np.float64)
        if self.size > 1 and buf.size:
            mop = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=mop)
        return [float(v) for v in buf]

    def bcast_obj(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def gather_obj(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


# --------------------------------------------------------------------------- NCCL
class NCCLCommunicator(MPICommunicator):
    """NCCL (``cupyx.distributed``) for the array collectives of CuPy arrays, one
    GPU per process; MPI (mpi4py) for rank discovery, objects, barrier and abort.
    Selects GPU ``local_rank % device_count`` unless ``device`` is given."""

    name = "nccl"

    def __init__(self, mpi_comm=None, device=None):
        super().__init__(mpi_comm)
        try:
            import cupy
            import cupyx.distributed
        except ImportError as e:
            raise ImportError(f"portnn.distributed: NCCL needs cupy with NCCL support ({e})") from None
        self.cupy = cupy
        n_gpus = cupy.cuda.runtime.getDeviceCount()
        self.device = self.local_rank % n_gpus if device is None else int(device)
        cupy.cuda.Device(self.device).use()
        self.nccl = cupyx.distributed.init_process_group(self.size, self.rank, backend="nccl", use_mpi=True)

    def _allreduce_group(self, be, group):
        if be.name != "cupy":
            return Communicator._allreduce_group(self, be, group)  # host staging over MPI
        xp = be.xp
        flat = xp.concat([xp.reshape(a, (-1,)) for a in group])
        self.stats["allreduce_bytes"] += int(flat.nbytes)
        out = self.cupy.empty_like(flat)
        self.nccl.all_reduce(flat, out, op="sum")
        return _split_flat(xp, out / self.size, group)

    def bcast(self, arrays, root=0, backend=None):
        names, items = _ordered(arrays)
        be = backend if backend is not None else (_backend_of(items) if items else None)
        if self.size == 1 or not items or be.name != "cupy":
            return super().bcast(arrays, root, be)
        out = []
        for a in items:
            b = self.cupy.array(a, copy=True)
            self.nccl.broadcast(b, root=root)
            out.append(b)
        return _rebuild(names, out)


# --------------------------------------------------------------------------- thread fake
class _Shared:
    def __init__(self, size, timeout):
        self.size = size
        self.timeout = timeout
        self.barrier = threading.Barrier(size)
        self.slots = [None] * size
        self.aborted = None


class ThreadFakeCommunicator(Communicator):
    """``size`` ranks as threads of one process, for unit tests without MPI.

    Collectives are implemented with a shared ``threading.Barrier`` and one slot
    per rank; sums are taken in rank order, so results are deterministic. A
    collective that waits more than ``timeout`` seconds, or any call after
    ``abort()``, raises CommAborted instead of hanging.

        results = ThreadFakeCommunicator.run(2, lambda comm: train(comm))
    """

    name = "threads"

    def __init__(self, rank, shared):
        super().__init__()
        self.rank, self.size, self.local_rank = rank, shared.size, rank
        self._s = shared

    @classmethod
    def create(cls, size, timeout=60.0):
        """``size`` communicators sharing one fake world (rank i at index i)."""
        shared = _Shared(size, timeout)
        return [cls(r, shared) for r in range(size)]

    @classmethod
    def run(cls, size, fn, timeout=60.0):
        """Run fn(comm) on ``size`` threads; returns the list of results by rank.
        If any rank raises, that exception is re-raised here (the lowest rank's
        non-CommAborted exception first)."""
        comms = cls.create(size, timeout)
        results, errors = [None] * size, [None] * size

        def target(c):
            try:
                results[c.rank] = fn(c)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors[c.rank] = e
                c.abort_quietly()

        threads = [threading.Thread(target=target, args=(c,), name=f"rank{c.rank}") for c in comms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout * 4)
        if any(t.is_alive() for t in threads):
            raise TimeoutError(f"ThreadFakeCommunicator.run: ranks still running after {timeout * 4}s")
        real = [e for e in errors if e is not None and not isinstance(e, CommAborted)]
        if real or any(errors):
            raise (real or [e for e in errors if e is not None])[0]
        return results

    def _wait(self):
        s = self._s
        if s.aborted is not None:
            raise CommAborted(f"rank {self.rank}: job aborted by rank {s.aborted}")
        try:
            s.barrier.wait(s.timeout)
        except threading.BrokenBarrierError:
            who = s.aborted if s.aborted is not None else "timeout"
            raise CommAborted(f"rank {self.rank}: job aborted (by rank {who}) during a collective") from None

    def _exchange(self, value):
        """Everyone deposits ``value``; returns the list of all ranks' values."""
        self._wait()  # slots are free (previous exchange fully read)
        self._s.slots[self.rank] = value
        self._wait()  # every slot written
        every = list(self._s.slots)
        self._wait()  # every rank has read
        return every

    def _allreduce_sum_host(self, buf):
        every = self._exchange(buf)
        total = every[0].copy()
        for b in every[1:]:
            total += b
        return total

    def _bcast_host(self, buf, root):
        return self._exchange(buf)[root].copy()

    def bcast_obj(self, obj, root=0):
        return self._exchange(obj)[root]

    def gather_obj(self, obj, root=0):
        every = self._exchange(obj)
        return every if self.rank == root else None

    def barrier(self):
        self._wait()

    def abort_quietly(self):
        if self._s.aborted is None:
            self._s.aborted = self.rank
        self._s.barrier.abort()

    def abort(self, code=1):
        """Break every pending and future collective of the fake world, then raise
        CommAborted in this thread (threads cannot be killed)."""
        self.abort_quietly()
        raise CommAborted(f"rank {self.rank} aborted the job (code {code})")

    def abort_on_error(self, exc, code=1):
        # In threads the failing rank keeps its own exception: break the others' waits.
        self.abort_quietly()


# --------------------------------------------------------------------------- factory
def create_communicator(name="auto", **kwargs):
    """A communicator by name.

    "auto": MPI when this process was started by mpiexec/mpirun with more than
    one process (see launched_by_mpi), otherwise single-process. "mpi", "nccl",
    "single" (or "none") force one. kwargs go to the class (mpi_comm=..., device=...).
    """
    if name in (None, "none", "single"):
        return SingleProcessCommunicator()
    if name == "auto":
        return MPICommunicator(**kwargs) if launched_by_mpi() else SingleProcessCommunicator()
    if name == "mpi":
        return MPICommunicator(**kwargs)
    if name == "nccl":
        return NCCLCommunicator(**kwargs)
    raise ValueError(f"name: expected 'auto', 'mpi', 'nccl' or 'single', got {name!r}")
