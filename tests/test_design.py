"""docs/design.md made executable: the package's import layering, the compute path's
independence from array libraries, short functions, and no citations of documents
outside the repository."""

import ast
import pathlib
import re

import portnn

ROOT = pathlib.Path(portnn.__file__).parent

# Level of each module (docs/design.md, "The layers of the package"): a module may
# import only modules of a LOWER level (or its own package's siblings of the same
# level where the table groups them). Function-level imports count too: a lazy
# import is still a dependency.
LEVELS = {
    "backends": 0,
    "_checks": 1,
    "checkpoint_file": 2,
    "random": 2, "_windows": 2,
    "layers": 3, "optim": 3, "schedules": 3,
    "layer_utils": 4, "blocks": 4, "data": 4,
    "models": 5, "distributed": 5, "training_state": 5, "arch": 5,
    "solver": 6,
    "io": 7, "gradient_check": 7, "plot": 7, "selftest": 7,
    "cli": 8, "__main__": 9, "__init__": 10,
}

# random is not listed: its host generators use NumPy by design (seeded init on the host);
# its device-side generator takes the namespace of the arrays it is given.
COMPUTE_PATH = ("_windows", "layers", "layer_utils", "blocks", "optim", "models", "solver", "training_state", "schedules", "arch")


def _top(module_path: pathlib.Path) -> str:
    rel = module_path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: pathlib.Path):
    """(lineno, top-level portnn module imported, external top-level package) for every import."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(ROOT).parts[:-1]  # package of this module, relative to portnn
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "portnn":
                    yield node.lineno, parts[1] if len(parts) > 1 else "__init__", None
                else:
                    yield node.lineno, None, parts[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "portnn":
                    names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                    for n in names:
                        yield node.lineno, n, None
                else:
                    yield node.lineno, None, parts[0]
                continue
            base = list(pkg[: len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
            target = base + (node.module.split(".") if node.module else [])
            if target:
                yield node.lineno, target[0], None
            else:  # "from . import x" at the package root
                for a in node.names:
                    yield node.lineno, a.name, None


def _modules():
    return [p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts]


def test_every_module_has_a_level():
    missing = sorted({_top(p) for p in _modules()} - set(LEVELS))
    assert missing == [], f"add these modules to LEVELS and to docs/design.md: {missing}"


def test_imports_point_downwards():
    bad = []
    for path in _modules():
        me = _top(path)
        for lineno, target, _ in _imports(path):
            if target is None or target == me:
                continue
            if target not in LEVELS:
                continue  # e.g. "from . import numpy_backend" inside backends
            if LEVELS[target] >= LEVELS[me] and not (me == "__init__"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{lineno} ({me}, level {LEVELS[me]}) imports "
                           f"{target} (level {LEVELS[target]})")
    assert bad == [], "\n".join(bad)


def test_compute_path_imports_no_array_library():
    bad = []
    for path in _modules():
        if _top(path) not in COMPUTE_PATH:
            continue
        for lineno, _, ext in _imports(path):
            if ext in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
                bad.append(f"{path.relative_to(ROOT.parent)}:{lineno} imports {ext}")
    assert bad == [], "\n".join(bad)


def test_functions_are_short():
    """No function body longer than 60 lines (its docstring not counted) unless a
    comment on its first lines says why ("# long: <reason>")."""
    long = []
    for path in _modules():
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                    body = body[1:] or body
                n = node.end_lineno - body[0].lineno + 1
                head = "\n".join(lines[node.lineno - 1: body[0].lineno + 1])
                if n > 60 and "# long:" not in head:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert long == [], "\n".join(long)


def test_no_citations_of_documents_outside_the_repo():
    pattern = re.compile(r"\b(DESIGN(\.md)?\s+rule|NOTES\s*§|NOTES\.md|shared/)")
    repo = ROOT.parent
    files = _modules() + [p for d in ("tests", "benchmarks", "examples") for p in (repo / d).rglob("*.py")]
    bad = [f"{p.relative_to(repo)}" for p in files if "__pycache__" not in p.parts and p.name != "test_design.py"
           and pattern.search(p.read_text())]
    assert bad == []
