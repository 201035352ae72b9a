"""benchmarks/opcount.py, the GPU cost model: the counter classifies a known
sequence of torch operations exactly, and the command prints a W1 row. No
counts of portnn's workloads are asserted (they change with the code)."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from benchmarks import opcount  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kinds(ops):
    return [(o.name, o.kind) for o in ops]


def test_counts_a_known_sequence_exactly():
    x = torch.ones((4, 5))

    def fn():
        a = x + 1  # one kernel
        b = x.T  # a view (permute)
        c = x[1:]  # a view (slice)
        return a, b, c

    ops = opcount.count(fn)
    s = opcount.Summary(ops)
    assert (s.compute, s.views, s.slices) == (1, 2, 1)
    assert _kinds(ops) == [("add", "compute"), ("permute", "view"), ("slice", "view")]


def test_in_place_writes_allocations_and_reads():
    x = torch.zeros((4, 5))

    def fn():
        y = torch.empty((3,))  # allocation, no kernel
        x[1:] += 1  # slice, add_ (a write: computes), slice, copy_ onto itself (torch skips it)
        x[:2] = torch.ones((2, 5))  # ones, slice, copy_ (a real copy)
        return y, float(x.sum())  # sum, and a device -> host read

    ops = opcount.count(fn, warmup=0)
    assert _kinds(ops) == [("empty", "alloc"), ("slice", "view"), ("add_", "compute"), ("slice", "view"),
                           ("copy_", "noop"), ("ones", "compute"), ("slice", "view"), ("copy_", "compute"),
                           ("sum", "compute"), ("_local_scalar_dense", "compute")]
    s = opcount.Summary(ops)
    assert (s.compute, s.views, s.slices, s.host_reads) == (5, 3, 3, 1)


def test_attribution_names_the_portnn_function():
    from portnn import layers as L

    x = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)
    ops = opcount.count(lambda: L.relu_forward(x), attribute=True)
    assert {o.site for o in ops if o.kind == "compute"} == {"portnn/layers/dense.py:relu_forward"}


def test_rows_and_selection():
    assert [r.key for r in opcount.select("W1")] == ["W1"]  # an exact key wins over its group
    assert [r.key for r in opcount.select("W4")] == ["W4-2x2", "W4-3x3"]
    with pytest.raises(SystemExit):
        opcount.select("W9")


def test_docs_block_replaced_or_appended(tmp_path):
    page = tmp_path / "b.md"
    page.write_text("# page\n\ntext\n")
    opcount.write_docs(f"{opcount.BEGIN}\none\n{opcount.END}", str(page))
    assert page.read_text().count(opcount.SECTION) == 1
    opcount.write_docs(f"{opcount.BEGIN}\ntwo\n{opcount.END}", str(page))
    text = page.read_text()
    assert "two" in text and "one" not in text and text.count(opcount.BEGIN) == 1 and text.startswith("# page")


def test_command_prints_a_w1_row():
    out = subprocess.run([sys.executable, "-m", "benchmarks.opcount", "--only", "W1", "--markdown"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| W1:")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == len(opcount.HEAD) and int(cells[1]) > 0 and int(cells[3]) > 0
