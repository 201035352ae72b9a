"""Peak memory of one workload on one implementation, measured in a fresh process.

    python -m benchmarks.memory KEY IMPL [THREADS]     -> one JSON line on stdout

CPU: the resident set size (RSS) is read after imports, data and weights are set
up (``base``); two steps then run and the peak RSS (VmHWM, the kernel's high-water
mark) is read. ``step_peak`` = peak - base is the extra memory a training step
needs at its peak (activations, caches, gradients, temporaries, allocator slack).
GPU (unverified, no GPU on the development machines): torch.cuda.max_memory_allocated
for torch-cuda and the CuPy memory pool's size for portnn-cupy, both above the
allocation before the steps.
"""

from __future__ import annotations

import gc
import json
import os
import sys


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak(step):
    gc.collect()
    base = _status_kb("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    step()
    step()
    peak = _status_kb("VmHWM")
    return {"base_mib": base / 1024, "peak_mib": peak / 1024, "step_peak_mib": (peak - base) / 1024,
            "method": "RSS high-water mark above the set-up state (2 steps, fresh process)"}


def _gpu_peak(impl, step):
    if impl == "torch-cuda":
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        step()
        peak = torch.cuda.max_memory_allocated()
        method = "torch.cuda.max_memory_allocated above the set-up state"
    else:
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        step()
        step()
        peak = pool.total_bytes()  # the pool keeps every block it ever needed at once
        method = "CuPy memory pool size above the set-up state"
    mib = 2.0 ** 20
    return {"base_mib": base / mib, "peak_mib": peak / mib, "step_peak_mib": (peak - base) / mib,
            "method": method}


def measure(key: str, impl: str) -> dict:
    from .workloads import build

    step, _ = build(key, impl)
    if impl in ("portnn-cupy", "torch-cuda"):
        return _gpu_peak(impl, step)
    return _cpu_peak(step)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    key, impl = argv[0], argv[1]
    threads = int(argv[2]) if len(argv) > 2 and argv[2] not in ("", "0") else None
    if threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in impl and threads:
        import torch

        torch.set_num_threads(threads)
    print(json.dumps(measure(key, impl)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
