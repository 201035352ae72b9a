"""The backend fixture every layer/model/optimizer test runs on.

Parametrised over numpy, array_api_strict (default device AND the fake "device1",
which behaves like a GPU: mixing devices or converting to NumPy implicitly
raises), torch (CPU), jax (CPU: immutable arrays) and cupy. A backend that cannot run here is reported as
SKIPPED with the reason (e.g. "cupy: no GPU visible"), never silently dropped.
Narrow the set with PORTNN_TEST_BACKENDS=numpy,torch.
"""

import os

import numpy as np
import pytest

from portnn.backends import BackendError, get_backend

BACKEND_SPECS = ["numpy", "array_api_strict", "array_api_strict:device1", "torch", "jax", "cupy"]

# float64 runs on JAX only with 64-bit types enabled, a process-wide switch that must be
# set before any JAX array exists. The tests set it (the gradient checks need float64);
# portnn itself never does: on a 32-bit JAX a float64 request raises a BackendError
# saying how to enable it (tests/test_jax.py checks that in a fresh process).
try:
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # jax is an optional extra; its leg is reported as skipped
    pass


def _reason_unavailable(spec):
    try:
        get_backend(spec)
    except BackendError as e:
        return str(e).split(". Available here")[0]
    wanted = os.environ.get("PORTNN_TEST_BACKENDS")
    if wanted and spec.split(":")[0] not in wanted.split(",") and spec not in wanted.split(","):
        return f"{spec}: not in PORTNN_TEST_BACKENDS={wanted}"
    return None


def _params():
    out = []
    for spec in BACKEND_SPECS:
        reason = _reason_unavailable(spec)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if spec.startswith("cupy"):
            marks.append(pytest.mark.gpu)
        out.append(pytest.param(spec, marks=marks, id=spec.replace(":", "-")))
    return out


@pytest.fixture(params=_params())
def backend(request):
    """A portnn Backend (library + device) to run the test on."""
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (cupy)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    # TF32 would make float32 GPU matmuls disagree with NumPy at 1e-3.
    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")


def pytest_terminal_summary(terminalreporter):
    """Print how many tests ran per backend, so every leg's coverage is visible."""
    counts = {}
    for status in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(status, []):
            nodeid = getattr(rep, "nodeid", "")
            for spec in BACKEND_SPECS:
                tag = "[" + spec.replace(":", "-")
                if tag + "]" in nodeid or tag + "-" in nodeid:
                    if spec == "array_api_strict" and "array_api_strict-device1" in nodeid:
                        continue
                    counts.setdefault(spec, {}).setdefault(status, 0)
                    counts[spec][status] += 1
    if counts:
        terminalreporter.section("tests per backend")
        for spec in BACKEND_SPECS:
            c = counts.get(spec, {})
            line = ", ".join(f"{v} {k}" for k, v in sorted(c.items())) or "none"
            terminalreporter.write_line(f"{spec:28s} {line}")
        skipped_reasons = set()
        for rep in terminalreporter.stats.get("skipped", []):
            if "cupy" in getattr(rep, "nodeid", "") and isinstance(rep.longrepr, tuple):
                skipped_reasons.add(rep.longrepr[2])
        for r in sorted(skipped_reasons):
            terminalreporter.write_line(f"  cupy skipped because: {r}")


# Hypothesis profiles: "ci" (default) keeps the property tests to a few seconds;
# HYPOTHESIS_PROFILE=deep runs many more examples locally.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("deep", max_examples=1000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; its tests skip without it
    pass
