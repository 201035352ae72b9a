"""Long-run check: 2,000 training iterations of a small FCN and a small CNN on the
bundled digits, sampling memory as they go, and a second seeded run of each that
must match the first exactly.

    python benchmarks/longrun.py [--iterations 2000] [--json out.json]

Memory is sampled every 50 iterations as (a) tracemalloc's current traced size
(NumPy reports its buffers to tracemalloc) and (b) the process RSS. The slope is a
least-squares fit over the second half of the run (after warm-up), in bytes per
iteration: a leak of one float32 100x100 array per step would show as ~40,000 B/it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import portnn  # noqa: E402
from portnn.data import load_digits  # noqa: E402


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler:
    def __init__(self, every=50):
        self.every, self.rows = every, []

    def on_iteration(self, solver):
        if solver.iteration % self.every == 0:
            self.rows.append((solver.iteration, tracemalloc.get_traced_memory()[0], rss_bytes()))


def slope(rows, col):
    half = rows[len(rows) // 2:]
    x = np.array([r[0] for r in half], dtype=np.float64)
    y = np.array([r[col] for r in half], dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0])


def run(kind, iterations, seed=0, sample=True):
    cnn = kind == "cnn"
    data = load_digits(flatten=not cnn)
    if cnn:
        model = portnn.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=16, filter_size=3, hidden_dim=64,
                                         weight_scale=0.05, seed=seed)
    else:
        model = portnn.FullyConnectedNet([100, 100], input_dim=64, normalization="batchnorm",
                                         dropout_keep_ratio=0.9, weight_scale=0.1, seed=seed)
    batch = 50
    per_epoch = data["X_train"].shape[0] // batch
    epochs = -(-iterations // per_epoch)
    sampler = Sampler()

    class StopAt:
        def on_iteration(self, solver):
            if solver.iteration >= iterations:
                solver.stop_training = True

    solver = portnn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                           batch_size=batch, num_epochs=epochs, verbose=False, seed=seed,
                           num_train_samples=200, callbacks=[sampler, StopAt()] if sample else [StopAt()])
    t0 = time.perf_counter()
    solver.train()
    return solver, sampler.rows, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = {}
    for kind in ("fcn", "cnn"):
        tracemalloc.start()
        solver, rows, secs = run(kind, args.iterations)
        tracemalloc.stop()
        again, _, _ = run(kind, args.iterations, sample=False)
        identical = again.loss_history == solver.loss_history and all(
            np.array_equal(again.model.params[k], v) for k, v in solver.model.params.items())
        res = {
            "iterations": solver.iteration,
            "seconds": round(secs, 2),
            "traced_start_MiB": round(rows[0][1] / 2**20, 3),
            "traced_end_MiB": round(rows[-1][1] / 2**20, 3),
            "traced_slope_B_per_it": round(slope(rows, 1), 2),
            "rss_start_MiB": round(rows[0][2] / 2**20, 1),
            "rss_end_MiB": round(rows[-1][2] / 2**20, 1),
            "rss_slope_B_per_it": round(slope(rows, 2), 2),
            "seeded_reruns_identical": bool(identical),
            "final_loss": solver.loss_history[-1],
        }
        results[kind] = res
        print(kind, json.dumps(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    ok = all(r["seeded_reruns_identical"] and abs(r["traced_slope_B_per_it"]) < 1000 for r in results.values())
    print("OK" if ok else "FAILED: memory grows or reruns differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
