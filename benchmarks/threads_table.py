"""The 1-thread and 2-thread runs side by side (docs/benchmarks.md, "1 and 2 threads").

    python -m benchmarks                                        # docs/benchmarks.json (all CPUs: 2 here)
    python -m benchmarks --threads 1 --stem benchmarks-1thread  # docs/benchmarks-1thread.json
    python -m benchmarks.threads_table                          # this table, between its markers

Reads the two JSON results the runs wrote and puts one table with both thread counts
between ``<!-- threads:begin -->`` and ``<!-- threads:end -->`` in docs/benchmarks.md
(appending a section with the markers if there is none). The 1-thread target is 1.0
for every workload (the issue "Speed II"); the multi-thread targets are the workloads'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BEGIN, END = "<!-- threads:begin -->", "<!-- threads:end -->"
ONE_THREAD_TARGET = 1.0


def _rows(res):
    out = {}
    for e in res["workloads"]:
        t = e["times"]
        ratio = e["ratios"].get("portnn-numpy", {}).get("vs_reference")
        out[e["key"]] = (e, t.get("portnn-numpy", {}).get("median_ms"), t.get("torch", {}).get("median_ms"), ratio)
    return out


def _threads(res):
    th = res["meta"]["threads"]
    return th.get("numpy_openblas"), th.get("portnn_numpy"), th.get("torch")


def _cell(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def _met(ratio, target):
    if ratio is None or target is None:
        return "-"
    return "yes" if ratio <= target else "**no**"


def table(one: dict, many: dict) -> str:
    r1, rn = _rows(one), _rows(many)
    n_blas, n_portnn, n_torch = _threads(many)
    head = ["workload", "numpy ms (1)", "PyTorch ms (1)", "ratio (1)", "met <= 1.0",
            f"numpy ms ({n_blas})", f"PyTorch ms ({n_torch})", f"ratio ({n_blas})", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, (e, pn, pt, ratio) in rn.items():
        _, pn1, pt1, ratio1 = r1.get(key, (None, None, None, None))
        lines.append("| " + " | ".join([
            f"{key}: {e['title']}", _cell(pn1), _cell(pt1), f"**{_cell(ratio1)}**", _met(ratio1, ONE_THREAD_TARGET),
            _cell(pn), _cell(pt), f"**{_cell(ratio)}**", f"<= {e['target']}", _met(ratio, e["target"]),
        ]) + " |")
    meta = [f"- Runs: {one['meta']['date']} (1 thread) and {many['meta']['date']} ({n_blas} threads), "
            f"host CPU {many['meta']['cpu']}; medians of interleaved rounds, ratio = portnn(numpy) / PyTorch.",
            f"- Threads in the multi-thread run: OpenBLAS {n_blas}, portnn's numpy primitives {n_portnn}, "
            f"torch {n_torch}; 1-thread run: {', '.join(map(str, _threads(one)))}."]
    return "\n".join(meta + ["", *lines])


def write_docs(text: str, path: str) -> None:
    doc = open(path).read()
    block = f"{BEGIN}\n{text}\n{END}"
    s, e = doc.find(BEGIN), doc.find(END)
    if s >= 0 and e > s:
        doc = doc[:s] + block + doc[e + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## 1 and 2 threads\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.threads_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--one", default="docs/benchmarks-1thread.json", help="the 1-thread run's JSON")
    p.add_argument("--many", default="docs/benchmarks.json", help="the all-CPUs run's JSON")
    p.add_argument("--docs", default="docs/benchmarks.md", help="the page to write the table into")
    p.add_argument("--print", action="store_true", help="print the table instead of writing the page")
    args = p.parse_args(argv)
    for path in (args.one, args.many):
        if not os.path.exists(path):
            print(f"python -m benchmarks.threads_table: {path} is missing (run the benchmarks first)", file=sys.stderr)
            return 2
    with open(args.one) as f1, open(args.many) as fn:
        text = table(json.load(f1), json.load(fn))
    if args.print:
        print(text)
    else:
        write_docs(text, args.docs)
        print(f"wrote the 1- and {_threads(json.load(open(args.many)))[0]}-thread table into {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
