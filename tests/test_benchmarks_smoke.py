"""A tiny run of the benchmark harness: structure of the JSON and the rendered
report only. No timing is asserted (speed lives in benchmarks/, see docs/design.md, "Tests"),
and the thread counts are left as they are (--threads 0)."""

import json
import os

import pytest

from benchmarks import run as bench
from benchmarks import workloads as W


def test_workload_selection_and_flops():
    assert [w.key for w in W.select("W4")] == ["W4-2x2", "W4-3x3"]
    assert [w.key for w in W.select("W1bn,W5-50")] == ["W1bn", "W5-50"]
    with pytest.raises(SystemExit):
        W.select("W9")
    # conv fwd+bwd = 3 GEMMs of 2*N*F*C*kh*kw*H'*W'
    assert W.BY_KEY["W2"].gemm_flops() == 3 * 2 * 50 * 32 * 3 * 7 * 7 * 32 * 32
    assert W.BY_KEY["W4-2x2"].gemm_flops() == 0


def test_gpu_mode_fails_clearly_without_cupy(capsys):
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy is installed")
    except Exception:
        pass
    assert bench.main(["--gpu", "--no-docs"]) == 2
    assert "cannot run on the GPU" in capsys.readouterr().err


def test_smoke_run_json_and_docs(tmp_path):
    out = tmp_path / "res.json"
    impls = "portnn-numpy,portnn-torch,torch"
    try:
        import torch  # noqa: F401
    except ImportError:
        impls = "portnn-numpy"
    status = bench.main(["--only", "W4-2x2", "--impls", impls, "--threads", "0", "--repeats", "2",
                         "--warmup", "1", "--pause", "0", "--gemm-n", "64", "--memory-only", "W4-2x2",
                         "--json", str(out), "--no-docs"])
    assert status == 0
    res = json.loads(out.read_text())
    assert set(res) >= {"meta", "gemm", "workloads", "memory", "memory_target"}
    meta = res["meta"]
    assert meta["threads"]["requested"] is None  # left alone
    assert "numpy_openblas" in meta["threads"] and "torch" in meta["threads"]
    assert meta["impls"] == impls.split(",")
    assert res["gemm"]["peak_gflops"] > 0
    (e,) = res["workloads"]
    assert e["key"] == "W4-2x2" and e["target"] == 1.0 and e["rounds"] == 2
    assert e["agree"] in (True, None) and not e["errors"]
    for impl in meta["impls"]:
        t = e["times"][impl]
        assert t["min_ms"] <= t["median_ms"] <= t["max_ms"] and len(t["samples_ms"]) == 2
    if "torch" in meta["impls"]:
        assert e["ratios"]["torch"]["vs_reference"] == pytest.approx(1.0)
        assert isinstance(e["target_met"], bool)
    mem = res["memory"]["W4-2x2"]
    for impl in meta["impls"]:
        assert "step_peak_mib" in mem[impl], mem[impl]

    # rendering: markdown between markers (kept on re-render), JSON and (with matplotlib) a PNG
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text("# Title\n\nhand-written\n\n<!-- results:start -->old<!-- results:end -->\ntail\n")
    bench.render_docs(res, str(docs), log=lambda *a: None)
    md = (docs / "benchmarks.md").read_text()
    assert md.startswith("# Title") and "hand-written" in md and md.rstrip().endswith("tail")
    assert "old" not in md and "W4-2x2" in md and "| workload |" in md
    assert json.loads((docs / "benchmarks.json").read_text())["workloads"][0]["key"] == "W4-2x2"
    if os.environ.get("MPLBACKEND", "") != "none":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return
        assert (docs / "benchmarks.png").stat().st_size > 1000


def test_threads_table_puts_both_runs_side_by_side(tmp_path):
    from benchmarks import threads_table as tt

    def res(threads, numpy_ms, torch_ms):
        return {"meta": {"date": "d", "cpu": "cpu", "threads": {"numpy_openblas": threads, "portnn_numpy": threads,
                                                                 "torch": threads}},
                "workloads": [{"key": "W1", "title": "fcn", "target": 0.9,
                               "times": {"portnn-numpy": {"median_ms": numpy_ms}, "torch": {"median_ms": torch_ms}},
                               "ratios": {"portnn-numpy": {"vs_reference": numpy_ms / torch_ms}}}]}

    text = tt.table(res(1, 9.0, 10.0), res(2, 5.0, 5.0))
    row = [line for line in text.splitlines() if line.startswith("| W1")][0]
    assert row == "| W1: fcn | 9.00 | 10.00 | **0.90** | yes | 5.00 | 5.00 | **1.00** | <= 0.9 | **no** |"
    page = tmp_path / "b.md"
    page.write_text("# page\n")
    tt.write_docs("first", str(page))
    tt.write_docs("second", str(page))
    assert page.read_text().count(tt.BEGIN) == 1 and "second" in page.read_text() and "first" not in page.read_text()
