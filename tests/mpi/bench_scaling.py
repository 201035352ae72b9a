"""1-vs-N-rank throughput of the data-parallel Solver step (not a test).

    OMP_NUM_THREADS=1 python tests/mpi/bench_scaling.py                  # 1 process
    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py tests/mpi/bench_scaling.py

For each model: steps/s and samples/s of Solver steps (forward, backward, allreduce,
update; no evaluation), with the per-rank batch fixed (weak scaling: a step of N
ranks sees N times the samples), the seconds spent inside allreduce_mean (packing,
host staging, MPI, unpacking) and its share of the step. Rank 0 prints one JSON line
per model.
"""

import json
import os
import sys
import time

import numpy as np

import portnn
from portnn.distributed import create_communicator

comm = create_communicator("auto")
CONFIGS = [
    # name, input dim, hidden dims, per-rank batch, steps
    ("fcn-digits-100x100", 64, [100, 100], 50, 300),
    ("fcn-3072-512x512", 3072, [512, 512], 64, 60),
    ("fcn-3072-1024x1024", 3072, [1024, 1024], 64, 40),
]


def bench(name, dim, hidden, bs, steps):
    rng = np.random.default_rng(0)
    n = bs * comm.size * (steps + 5)
    data = {"X_train": rng.standard_normal((n, dim)).astype(np.float32), "y_train": rng.integers(0, 10, n),
            "X_val": rng.standard_normal((10, dim)).astype(np.float32), "y_val": rng.integers(0, 10, 10)}
    model = portnn.FullyConnectedNet(hidden, input_dim=dim, weight_scale=1e-2, seed=0, backend="numpy")
    c = comm if comm.size > 1 else None
    s = portnn.Solver(model, data, update_rule="adam", batch_size=bs, verbose=False, seed=0, comm=c)
    if c is not None:
        s._sync_from_root()
    perm = np.arange(n)
    from portnn.distributed import shard_batch

    def step(k):
        idx = perm[k * bs:(k + 1) * bs] if c is None else shard_batch(perm, k, bs, comm.rank, comm.size)
        s._step(idx)

    for k in range(5):  # warm-up
        step(k)
    if c is not None:
        c.barrier()
        c.stats.update(allreduce_calls=0, allreduce_bytes=0, allreduce_seconds=0.0)
    t0 = time.perf_counter()
    for k in range(5, steps + 5):
        step(k)
    s._flush_losses()
    elapsed = time.perf_counter() - t0
    comm_s = c.stats["allreduce_seconds"] if c is not None else 0.0
    nparams = sum(int(np.prod(v.shape)) for v in model.params.values())
    r = {"model": name, "ranks": comm.size, "params": nparams, "grad_MB": round(nparams * 4 / 1e6, 3),
         "per_rank_batch": bs, "steps_per_s": round(steps / elapsed, 2),
         "samples_per_s": round(steps * bs * comm.size / elapsed, 1),
         "ms_per_step": round(1e3 * elapsed / steps, 3),
         "allreduce_ms_per_step": round(1e3 * comm_s / steps, 3),
         "comm_share": round(comm_s / elapsed, 3),
         "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if c is not None:  # the slowest rank's view, and the bare MPI Allreduce of one gradient buffer
        r["comm_share_max_rank"] = round(max(c.allgather_obj(comm_s / elapsed)), 3)
        from mpi4py import MPI

        buf = np.ones(nparams, dtype=np.float32)
        c.barrier()
        t1 = time.perf_counter()
        for _ in range(20):
            c.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        raw = (time.perf_counter() - t1) / 20
        r["bare_mpi_allreduce_ms"] = round(1e3 * raw, 3)
        r["bare_mpi_GB_per_s_busbw"] = round(2 * (comm.size - 1) / comm.size * buf.nbytes / raw / 1e9, 2)
    if comm.is_root:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    only = sys.argv[1:]
    for cfg in CONFIGS:
        if not only or cfg[0] in only:
            bench(*cfg)
