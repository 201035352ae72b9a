"""portnn benchmarks: W1-W5 against PyTorch native, in one process, interleaved.

    python -m benchmarks                 # full CPU run, renders docs/benchmarks.{md,json,png}
    python -m benchmarks --quick         # < 1 minute, prints the table (no docs unless --docs)
    python -m benchmarks --only W2,W4    # some workloads (keys W1 W1bn W2 W3 W4-2x2 W4-3x3
                                         # W5-50 W5-256, or groups W1..W5)
    python -m benchmarks --gpu           # CuPy vs PyTorch CUDA (runs the cupy selftest first)
    python benchmarks/run.py ...         # the same

Method. Every implementation of a workload is built from the same host data, run
for warm-up, checked to compute the same number, then timed in ROUNDS: each round
calls every implementation once, in a fixed order, pausing ``--pause`` seconds
whenever the array library changes (OpenBLAS/OpenMP worker threads spin ~0.1 s
after a call and slow the next library's threads), and then making one untimed
"settle" call of the implementation right before its timed one, so that every
implementation is timed in the state of a training loop, right after its own
previous step (without it, whichever implementation follows a pause is timed
cold: in the fixed order, portnn on numpy always was, while PyTorch always
followed portnn on torch, whose call had just woken torch's thread pool; W4 2x2
moved from 0.45-0.7x cold-vs-cold to 1.1-1.7x cold-vs-warm). Reported: median and min-max
over the rounds, the ratio of medians to PyTorch, and the GEMM floor = the
workload's matrix-product FLOPs / the peak float32 GEMM rate measured at the
start of the same run (the faster of numpy and torch). Both libraries use the
same thread count (``--threads``, default: all CPUs available to the process).
Peak memory is measured per implementation in a fresh subprocess
(benchmarks/memory.py). Timing assertions never appear in the unit tests.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"  # noqa: A001

from benchmarks import workloads as W  # noqa: E402  (no numpy import at module level)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
REPORT_ENV = THREAD_ENV + ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NVIDIA_TF32_OVERRIDE", "CUPY_TF32")


# ----------------------------------------------------------------------------- threads


def _openblas_fns():
    """(get, set) of the OpenBLAS that numpy loaded, via ctypes; (None, None) if not found."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None, None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                try:
                    get = getattr(lib, f"{prefix}get_num_threads{suffix}")
                    set_ = getattr(lib, f"{prefix}set_num_threads{suffix}")
                except AttributeError:
                    continue
                return get, set_
    return None, None


def configure_threads(threads: int | None) -> dict:
    """Use ``threads`` BLAS/OpenMP threads in numpy, portnn's NumPy primitives and torch
    (None: leave as they are).

    Environment variables only work before the libraries load, so the running
    OpenBLAS is also set through its C API and torch through set_num_threads.
    Returns what the libraries report afterwards.
    """
    if threads:
        for var in THREAD_ENV:
            os.environ[var] = str(threads)
    import numpy  # noqa: F401  (loads OpenBLAS)

    get, set_ = _openblas_fns()
    if threads and set_ is not None:
        set_(int(threads))
    from portnn.backends import numpy_primitives  # portnn's threaded NumPy primitives

    if threads:
        numpy_primitives.set_num_threads(int(threads))
    info = {"requested": threads, "numpy_openblas": int(get()) if get is not None else None,
            "portnn_numpy": numpy_primitives.num_threads()}
    try:
        import torch
    except ImportError:
        info["torch"] = None
    else:
        if threads:
            torch.set_num_threads(int(threads))
        info["torch"] = torch.get_num_threads()
    return info


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- GEMM peak


def gemm_peak(mode: str, n: int, repeats: int) -> dict:
    """Best float32 n x n x n GEMM rate (GFLOP/s) of each library in this run."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    rates = {}

    def best(fn, sync=lambda: None):
        fn()
        sync()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return flops / min(ts) / 1e9

    if mode == "cpu":
        rates["numpy"] = best(lambda: a @ b)
        time.sleep(0.15)
        try:
            import torch
        except ImportError:
            pass
        else:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            rates["torch"] = best(lambda: ta @ tb)
    else:
        import cupy
        import torch

        ca, cb = cupy.asarray(a), cupy.asarray(b)
        rates["cupy"] = best(lambda: ca @ cb, W.sync_for("portnn-cupy"))
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        rates["torch-cuda"] = best(lambda: ta @ tb, torch.cuda.synchronize)
    peak_impl = max(rates, key=rates.get)
    return {"n": n, "gflops": rates, "peak_gflops": rates[peak_impl], "peak_library": peak_impl}


# ----------------------------------------------------------------------------- timing


def _round_order(impls):
    return list(impls)


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_busy_s():
    """Seconds of non-idle CPU time on the whole machine (all CPUs), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v[:8]) - v[3] - v[4]) / _HZ  # minus idle and iowait


def _minor_faults():
    """Page faults (minor: fresh or reclaimed pages) of this process so far, or None."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class LoadMeter:
    """Fraction of the machine's CPUs used by OTHER processes during an interval.

    /proc/stat busy time minus this process's own CPU time, over wall time x CPUs.
    The shared benchmark machines are sometimes fully loaded by other jobs; such
    rounds are discarded (see time_workload)."""

    def __init__(self):
        self.ncpu = os.cpu_count() or 1

    def start(self):
        t = os.times()
        return (time.perf_counter(), _cpu_busy_s(), t.user + t.system)

    def stop(self, s):
        wall0, busy0, own0 = s
        busy1 = _cpu_busy_s()
        if busy0 is None or busy1 is None:
            return None
        t = os.times()
        wall = time.perf_counter() - wall0
        foreign = (busy1 - busy0) - (t.user + t.system - own0)
        return max(0.0, foreign / max(wall * self.ncpu, 1e-9))


def time_workload(key: str, impls, *, warmup: int, repeats: int | None, budget_s: float,
                  min_rounds: int, max_rounds: int, pause: float, max_load: float = 0.25,
                  settle: int = 1, log=print) -> dict:
    """Build, check and time one workload on every implementation (interleaved rounds)."""
    steps, checks, errors, est = {}, {}, {}, {}
    prev = None

    def lib_pause(prev, cur):
        if prev is not None and W.library_of(prev) != W.library_of(cur) and pause > 0:
            time.sleep(pause)

    for impl in impls:
        try:
            steps[impl], check = W.build(key, impl)
            lib_pause(prev, impl)
            t0 = time.perf_counter()
            checks[impl] = check()  # also the first warm-up call
            est[impl] = time.perf_counter() - t0
            prev = impl
        except Exception as e:  # a missing library or a failing impl must not stop the run
            errors[impl] = f"{type(e).__name__}: {e}"
            log(f"  {key}: {impl} failed: {errors[impl]}")
    live = [i for i in impls if i in steps]

    # further warm-up rounds, also estimating the cost of one round
    for _ in range(max(0, warmup - 1)):
        for impl in live:
            lib_pause(prev, impl)
            t0 = time.perf_counter()
            steps[impl]()
            est[impl] = time.perf_counter() - t0
            prev = impl
    switches = sum(1 for a, b in zip(live, live[1:] + live[:1]) if W.library_of(a) != W.library_of(b))
    round_s = (1 + settle) * sum(est.values()) + switches * pause
    if repeats:
        rounds = repeats
    else:
        rounds = int(max(min_rounds, min(max_rounds, budget_s // max(round_s, 1e-9))))

    samples = {i: [] for i in live}
    faults = {i: 0 for i in live}  # page faults during each implementation's timed steps
    loads = []
    meter = LoadMeter()
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            m = meter.start()
            for impl in _round_order(live):
                lib_pause(prev, impl)
                for _ in range(settle):  # untimed: timed right after its own previous step
                    steps[impl]()
                f0 = _minor_faults()
                t0 = time.perf_counter()
                steps[impl]()
                samples[impl].append((time.perf_counter() - t0) * 1e3)
                if f0 is not None:
                    faults[impl] += _minor_faults() - f0
                prev = impl
            loads.append(meter.stop(m))
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    if live and pause > 0:
        time.sleep(pause)
    del steps
    gc.collect()

    # Rounds during which other processes used more than max_load of the CPUs are
    # dropped, as long as at least half of the rounds (and 3) remain.
    clean = [k for k, ld in enumerate(loads) if ld is None or ld <= max_load]
    if len(clean) < max(3, (rounds + 1) // 2):
        clean = list(range(rounds))
    times = {}
    for impl, s in samples.items():
        kept = [s[k] for k in clean]
        times[impl] = {"median_ms": statistics.median(kept), "min_ms": min(kept), "max_ms": max(kept),
                       "samples_ms": [round(v, 4) for v in s],
                       # fresh pages the kernel had to map per step (4 KiB pages -> MiB)
                       "fault_mib_per_step": faults[impl] * 4 / 1024 / max(1, rounds)}
    vals = [v for v in checks.values() if v is not None]
    agree = None
    if len(vals) > 1:
        ref = max(abs(v) for v in vals) or 1.0
        agree = all(abs(v - vals[0]) <= 2e-3 * ref for v in vals)
    return {"times": times, "check": checks, "agree": agree, "rounds": rounds, "rounds_used": len(clean),
            "foreign_load": [None if ld is None else round(ld, 3) for ld in loads], "errors": errors}


# ----------------------------------------------------------------------------- memory


def memory_subprocess(key: str, impl: str, threads, timeout=300) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks.memory", key, impl, str(threads or 0)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- run


def _versions(mode):
    out = {"python": platform.python_version()}
    for mod in ("numpy", "array_api_compat", "torch", "portnn") + (("cupy",) if mode == "gpu" else ()):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed
            out[mod] = None
    # The numpy backend's convolution: oneDNN's when the optional extra is installed
    # (portnn/backends/onednn.py), else the portable im2col + OpenBLAS GEMM.
    from portnn.backends import onednn

    v = onednn.version()
    out["onednn (numpy conv)"] = ".".join(map(str, v)) if v else "not installed: im2col + GEMM"
    return out


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_check() -> str | None:
    """None if CuPy and a CUDA device are usable, else the reason."""
    try:
        import cupy
    except Exception as e:
        return (f"cupy is not importable ({type(e).__name__}: {e}). Install the wheel matching "
                f"your CUDA driver: pip install 'portnn[cuda12]' (or cuda13)")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"cupy is installed but no CUDA device is usable ({type(e).__name__}: {e})"
    if n < 1:
        return "cupy is installed but no CUDA device is visible"
    try:
        import torch
    except ImportError:
        return "PyTorch (with CUDA) is not installed: it is the reference of the GPU benchmark"
    if not torch.cuda.is_available():
        return "the installed PyTorch has no CUDA support (torch.cuda.is_available() is False)"
    return None


def run(args, log=print) -> dict:
    mode = "gpu" if args.gpu else "cpu"
    threads = args.threads if args.threads is not None else _default_threads()
    threads = threads or None  # 0 = leave the libraries' own setting
    if mode == "gpu":
        os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")  # full FP32 GEMMs in both libraries
        os.environ.pop("CUPY_TF32", None)
    thread_info = configure_threads(threads)
    impls = list(W.GPU_IMPLS if mode == "gpu" else W.CPU_IMPLS)
    if args.impls:
        impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    reference = W.REFERENCE[mode]
    if mode == "cpu":
        try:
            import torch  # noqa: F401
        except ImportError:
            log("PyTorch is not installed: timing portnn(numpy) only (pip install 'portnn[torch]')")
            impls = [i for i in impls if W.library_of(i) == "numpy"]
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")

    quick = args.quick
    sel = W.select(args.only)
    log(f"portnn benchmarks ({mode}{', quick' if quick else ''}): {', '.join(w.key for w in sel)}; "
        f"impls {', '.join(impls)}; threads numpy/OpenBLAS {thread_info['numpy_openblas']}, "
        f"portnn numpy primitives {thread_info['portnn_numpy']}, torch {thread_info['torch']}")

    gemm_n = args.gemm_n or ((1024 if quick else 2048) if mode == "cpu" else 4096)
    gemm = gemm_peak(mode, gemm_n, 3 if quick else 5) if not args.no_gemm else None
    if gemm:
        log(f"GEMM float32 {gemm_n}^3: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm["gflops"].items()))

    results = []
    for wl in sel:
        t0 = time.perf_counter()
        r = time_workload(
            wl.key, impls, warmup=args.warmup if args.warmup is not None else (1 if quick else 3),
            repeats=args.repeats, budget_s=1.2 if quick else 12.0,
            min_rounds=3 if quick else 9, max_rounds=7 if quick else 41, pause=args.pause,
            max_load=args.max_load, settle=args.settle, log=log)
        flops = wl.gemm_flops()
        floor_ms = flops / (gemm["peak_gflops"] * 1e9) * 1e3 if (gemm and flops) else None
        ratios = {}
        ref_med = r["times"].get(reference, {}).get("median_ms")
        for impl, t in r["times"].items():
            ratios[impl] = {
                "vs_reference": (t["median_ms"] / ref_med) if ref_med else None,
                "vs_floor": (t["median_ms"] / floor_ms) if floor_ms else None,
            }
        main_impl = impls[0]
        main_ratio = ratios.get(main_impl, {}).get("vs_reference")
        entry = {
            "key": wl.key, "group": wl.group, "title": wl.title, "target": wl.target,
            "gemm_flops": flops, "floor_ms": floor_ms, **r, "ratios": ratios,
            "target_impl": main_impl,
            "target_met": (main_ratio <= wl.target) if (main_ratio is not None and wl.target) else None,
        }
        results.append(entry)
        loads = [v for v in r["foreign_load"] if v is not None]
        load_txt = f", other load {statistics.median(loads):.0%}" if loads else ""
        log(_row_text(entry, impls, reference) + f"   [{r['rounds_used']}/{r['rounds']} rounds{load_txt}, "
            f"{time.perf_counter() - t0:.1f} s]")

    memory = {}
    mem_keys = [] if args.no_memory else [w.key for w in sel if (not quick or w.key == W.MEMORY_TARGET[0])]
    if args.memory_only:
        mem_keys = [k for k in mem_keys if k in args.memory_only.split(",")]
    for key in mem_keys:
        memory[key] = {}
        for impl in impls:
            if mode == "gpu":
                from benchmarks.memory import measure

                try:
                    memory[key][impl] = measure(key, impl)
                except Exception as e:
                    memory[key][impl] = {"error": f"{type(e).__name__}: {e}"}
            else:
                memory[key][impl] = memory_subprocess(key, impl, threads)
        log(f"memory {key}: " + ", ".join(
            f"{i} {m['step_peak_mib']:.0f} MiB" if "step_peak_mib" in m else f"{i} {m.get('error')}"
            for i, m in memory[key].items()))

    mem_target = None
    mk, mlimit = W.MEMORY_TARGET
    if mk in memory and reference in memory[mk] and impls[0] in memory[mk]:
        a, b = memory[mk][impls[0]].get("step_peak_mib"), memory[mk][reference].get("step_peak_mib")
        if a is not None and b:
            mem_target = {"workload": mk, "impl": impls[0], "ratio": a / b, "target": mlimit,
                          "met": a / b <= mlimit}

    env = {k: os.environ[k] for k in REPORT_ENV if k in os.environ}
    return {
        "meta": {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "mode": mode, "quick": quick, "command": " ".join(["python -m benchmarks"] + list(args.argv)),
            "host": platform.node(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "threads": thread_info, "env": env, "pause_s": args.pause, "settle": args.settle, "max_load": args.max_load, "versions": _versions(mode),
            "reference": reference, "impls": impls,
        },
        "gemm": gemm,
        "workloads": results,
        "memory": memory,
        "memory_target": mem_target,
    }


# ----------------------------------------------------------------------------- text output


def _fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def _row_text(e, impls, reference):
    parts = [f"{e['key']:8s}"]
    for impl in impls:
        t = e["times"].get(impl)
        parts.append(f"{impl} {t['median_ms']:8.2f} ms" if t else f"{impl} {'failed':>8s}")
    r = e["ratios"].get(impls[0], {}).get("vs_reference")
    if r is not None:
        parts.append(f"ratio {r:.2f} (target {e['target']})")
    if e["floor_ms"]:
        parts.append(f"floor {e['floor_ms']:.2f} ms")
    if e["agree"] is False:
        parts.append("RESULTS DISAGREE")
    return "  ".join(parts)


def table_markdown(res: dict) -> str:
    impls = res["meta"]["impls"]
    ref = res["meta"]["reference"]
    label = {"portnn-numpy": "portnn(numpy)", "portnn-torch": "portnn(torch)", "torch": "PyTorch",
             "portnn-cupy": "portnn(cupy)", "torch-cuda": "PyTorch CUDA"}
    head = ["workload"] + [f"{label.get(i, i)} ms" for i in impls]
    head += [f"{label.get(i, i)} / {label.get(ref, ref)}" for i in impls if i != ref]
    head += ["GEMM floor ms"] + [f"{label.get(i, i)} / floor" for i in impls]
    head += ["target", "met", "rounds (other load)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in res["workloads"]:
        row = [f"{e['key']}: {e['title']}"]
        for i in impls:
            t = e["times"].get(i)
            row.append(f"**{t['median_ms']:.2f}** ({t['min_ms']:.2f}-{t['max_ms']:.2f})" if t else "failed")
        for i in impls:
            if i != ref:
                row.append(_fmt(e["ratios"].get(i, {}).get("vs_reference")))
        row.append(_fmt(e["floor_ms"]))
        for i in impls:
            row.append(_fmt(e["ratios"].get(i, {}).get("vs_floor"), 1))
        row.append(f"<= {e['target']}" if e["target"] else "-")
        row.append({True: "yes", False: "**no**", None: "-"}[e["target_met"]])
        loads = [v for v in e.get("foreign_load", []) if v is not None]
        row.append(f"{e.get('rounds_used', e['rounds'])}/{e['rounds']}"
                   + (f" ({statistics.median(loads):.0%})" if loads else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def memory_markdown(res: dict) -> str:
    if not res["memory"]:
        return "(memory not measured in this run)"
    impls = res["meta"]["impls"]
    lines = ["| workload | " + " | ".join(f"{i} step peak MiB (peak RSS MiB)" for i in impls) + " |",
             "|" + "---|" * (len(impls) + 1)]
    for key, per in res["memory"].items():
        row = [key]
        for i in impls:
            m = per.get(i, {})
            row.append(f"{m['step_peak_mib']:.0f} ({m['peak_mib']:.0f})" if "step_peak_mib" in m
                       else str(m.get("error", "-")))
        lines.append("| " + " | ".join(row) + " |")
    mt = res.get("memory_target")
    if mt:
        lines.append("")
        lines.append(f"Memory target: {mt['impl']} / {res['meta']['reference']} step peak on {mt['workload']} = "
                     f"**{mt['ratio']:.2f}** (target <= {mt['target']}): {'met' if mt['met'] else '**missed**'}.")
    return "\n".join(lines)


def faults_markdown(res: dict) -> str:
    """Page faults per timed step: memory the kernel had to map afresh (system time)."""
    impls = res["meta"]["impls"]
    lines = ["Fresh pages mapped per timed step (minor page faults x 4 KiB, MiB; all implementations share "
             "one process and its allocator):", "",
             "| workload | " + " | ".join(impls) + " |", "|" + "---|" * (len(impls) + 1)]
    for e in res["workloads"]:
        row = [e["key"]]
        for i in impls:
            v = e["times"].get(i, {}).get("fault_mib_per_step")
            row.append("-" if v is None else f"{v:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def meta_markdown(res: dict) -> str:
    m = res["meta"]
    g = res["gemm"]
    th = m["threads"]
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items()) or "none set"
    lines = [
        f"- Command: `{m['command']}`, {m['date']}, host CPU: {m['cpu']} ({m['cpu_count']} CPUs)",
        f"- Threads: requested {th['requested']}; numpy/OpenBLAS reports {th['numpy_openblas']}, "
        f"portnn's NumPy primitives use {th.get('portnn_numpy', '-')}, torch reports {th['torch']}. "
        f"Environment: {env}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Rounds: interleaved, {m['pause_s']} s pause on every library switch, then "
        f"{m.get('settle', 0)} untimed call(s) of the implementation right before its timed one; times are medians "
        "(min-max) over the rounds, in ms; ratios are ratios of medians. Rounds during which other "
        f"processes used more than {m.get('max_load', 0.25):.0%} of the CPUs are dropped when enough remain "
        "(column 'rounds': used/run, and the median CPU share other processes took).",
    ]
    if g:
        lines.append(f"- GEMM peak float32 {g['n']}^3: " + ", ".join(
            f"{k} {v:.0f} GFLOP/s" for k, v in g["gflops"].items())
            + f"; floor = matrix-product FLOPs / {g['peak_gflops']:.0f} GFLOP/s")
    bad = [e["key"] for e in res["workloads"] if e["agree"] is False]
    lines.append("- Cross-check: every implementation computed the same loss / gradient norms"
                 + (f" EXCEPT {bad}" if bad else "") + ".")
    return "\n".join(lines)


def render_docs(res: dict, outdir: str, stem: str = "benchmarks", log=print):
    os.makedirs(outdir, exist_ok=True)
    jpath = os.path.join(outdir, stem + ".json")
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1)
    png = os.path.join(outdir, stem + ".png")
    try:
        plot_png(res, png)
    except Exception as e:  # matplotlib is optional
        log(f"(no chart: {type(e).__name__}: {e})")
        png = None
    block = ["<!-- results:start (generated by python -m benchmarks; edits here are overwritten) -->",
             meta_markdown(res), "", table_markdown(res), "", "Peak memory (fresh subprocess per implementation):",
             "", memory_markdown(res), "", faults_markdown(res), ""]
    if png:
        block += [f"![portnn / PyTorch per workload]({os.path.basename(png)})", ""]
    block.append("<!-- results:end -->")
    block = "\n".join(block)
    mpath = os.path.join(outdir, stem + ".md")
    if os.path.exists(mpath):
        text = open(mpath).read()
        s, e = text.find("<!-- results:start"), text.find("<!-- results:end -->")
        if s >= 0 and e > s:
            text = text[:s] + block + text[e + len("<!-- results:end -->"):]
        else:
            text = text.rstrip() + "\n\n## Results\n\n" + block + "\n"
    else:
        text = f"# portnn benchmarks ({res['meta']['mode'].upper()})\n\n## Results\n\n" + block + "\n"
    with open(mpath, "w") as f:
        f.write(text)
    log(f"wrote {mpath}, {jpath}" + (f", {png}" if png else ""))


def plot_png(res: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = res["meta"]["impls"]
    ref = res["meta"]["reference"]
    wls = res["workloads"]
    keys = [e["key"] for e in wls]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / (len(impls) + 1)
    for j, impl in enumerate(impls):
        xs = [i + j * width for i in range(len(wls))]
        med = [e["times"].get(impl, {}).get("median_ms", 0) for e in wls]
        lo = [m - e["times"].get(impl, {}).get("min_ms", m) for m, e in zip(med, wls)]
        hi = [e["times"].get(impl, {}).get("max_ms", m) - m for m, e in zip(med, wls)]
        ax1.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=impl)
    ax1.bar([i + len(impls) * width for i in range(len(wls))], [e["floor_ms"] or 0 for e in wls], width,
            label="GEMM floor", color="lightgrey")
    ax1.set_yscale("log")
    ax1.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))], keys, rotation=30)
    ax1.set_ylabel("ms (median, min-max)")
    ax1.set_title("time per forward+backward")
    ax1.legend(fontsize=8)
    others = [i for i in impls if i != ref]
    w2 = 0.8 / max(1, len(others))
    for j, impl in enumerate(others):
        xs = [i + j * w2 for i in range(len(wls))]
        ax2.bar(xs, [e["ratios"].get(impl, {}).get("vs_reference") or 0 for e in wls], w2, label=f"{impl} / {ref}")
    for i, e in enumerate(wls):
        if e["target"]:
            ax2.plot([i - w2 / 2, i + 0.8 - w2 / 2], [e["target"]] * 2, "k--", lw=1)
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set_xticks([i + 0.4 - w2 / 2 for i in range(len(wls))], keys, rotation=30)
    ax2.set_ylabel(f"ratio of medians to {ref}")
    ax2.set_title("portnn / PyTorch (dashed: target)")
    ax2.legend(fontsize=8)
    th = res["meta"]["threads"]
    fig.suptitle(f"{res['meta']['cpu']}, threads numpy {th['numpy_openblas']} / torch {th['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few rounds, 1024^3 GEMM peak, memory of W5-256 only (< 1 min)")
    p.add_argument("--only", default=None, help="comma-separated workloads or groups, e.g. W2 or W1bn,W5-50")
    p.add_argument("--gpu", action="store_true", help="CuPy vs PyTorch CUDA (runs `portnn selftest --backend cupy` first)")
    p.add_argument("--no-selftest", action="store_true", help="with --gpu: skip the selftest")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP threads for BOTH libraries (default: all CPUs of this process; 0 = leave as is)")
    p.add_argument("--repeats", type=int, default=None, help="fixed number of timed rounds (default: by time budget)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up calls per implementation, the result cross-check included (default 3, quick 1)")
    p.add_argument("--pause", type=float, default=0.15, help="seconds to pause when the array library changes")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed calls of an implementation right before each timed call (default 1; 0 = time it "
                        "straight after the pause)")
    p.add_argument("--max-load", type=float, default=0.25,
                   help="drop rounds during which other processes used more than this fraction of the "
                        "CPUs (if at least half of the rounds remain)")
    p.add_argument("--impls", default=None, help="override the implementations (comma-separated)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM peak (no floor column)")
    p.add_argument("--gemm-n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results JSON to this path")
    p.add_argument("--docs", default=None,
                   help="render DIR/benchmarks.md (+ .json, .png); default: docs/ for a full run of all "
                        "workloads, nothing for --quick / --only")
    p.add_argument("--no-docs", action="store_true", help="never render docs")
    p.add_argument("--stem", default=None,
                   help="file name stem of the rendered docs (default benchmarks, benchmarks_gpu with --gpu)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    status = 0
    if args.gpu:
        reason = _gpu_check()
        if reason:
            print(f"python -m benchmarks --gpu: cannot run on the GPU: {reason}", file=sys.stderr)
            return 2
        if not args.no_selftest:
            from portnn.selftest import format_table, run_selftest

            print("selftest: portnn on cupy against numpy (float64, float32)")
            rows = run_selftest("cupy")
            print(format_table(rows))
            if not all(r["passed"] for r in rows):
                print("selftest FAILED on cupy; timing anyway", file=sys.stderr)
                status = 1
    t0 = time.perf_counter()
    res = run(args)
    res["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    print()
    print(table_markdown(res))
    print()
    print(memory_markdown(res))
    print(f"\n({res['meta']['wall_s']} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    docs = args.docs
    if docs is None and not (args.quick or args.only or args.no_docs or args.impls):
        docs = os.path.join(REPO, "docs")
    if docs and not args.no_docs:
        render_docs(res, docs, args.stem or ("benchmarks_gpu" if args.gpu else "benchmarks"))
    bad = [e["key"] for e in res["workloads"] if e["agree"] is False or e["errors"]]
    if bad:
        print(f"problems (disagreeing results or failed implementations): {bad}", file=sys.stderr)
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
