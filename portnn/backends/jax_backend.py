"""JAX arrays (CPU, or NVIDIA GPUs with jax[cuda12]) through jax.numpy, itself an
Array API namespace.

JAX arrays are immutable: portnn's compute path writes nothing in place
(docs/design.md, rule 7), so it runs on them unchanged, and under ``jax.jit``.
float64 and int64 exist in JAX only when ``jax_enable_x64`` is on; portnn never
flips that global for its users: asking this backend for float64 (or running its
int64 dropout generator) without it raises a BackendError that says how to enable it.
Device specs: "jax" (the default device, CPU here), "jax:cpu", "jax:gpu", "jax:gpu:1".
"""

import numpy as np

from ._base import Backend, BackendError

NAME = "jax"

X64_HINT = ("enable 64-bit types in JAX before creating any array: "
            "jax.config.update('jax_enable_x64', True), or set JAX_ENABLE_X64=1")


def x64_enabled() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def _pick_device(jax, spec):
    if spec is None:
        return jax.devices()[0]
    kind, _, index = str(spec).partition(":")
    if kind not in ("cpu", "gpu", "cuda", "tpu"):
        raise BackendError(f"jax: unknown device {spec!r}, expected cpu, gpu or gpu:N")
    kind = "gpu" if kind == "cuda" else kind
    try:
        devices = jax.devices(kind)
    except RuntimeError as e:  # no such platform in this jaxlib
        raise BackendError(f"jax: no {kind} device visible ({e}); for NVIDIA GPUs: "
                           f"pip install 'portnn[jax-cuda12]'") from None
    i = int(index) if index else 0
    if not 0 <= i < len(devices):
        raise BackendError(f"jax: device {kind}:{i} requested, {len(devices)} visible")
    return devices[i]


class JaxBackend(Backend):
    """A Backend whose 64-bit dtypes need jax_enable_x64 (checked, never switched on)."""

    def dtype(self, dtype="float32"):
        dt = super().dtype(dtype)
        if dt == self.xp.float64 and not x64_enabled():
            raise BackendError(f"jax: float64 requested but JAX runs in 32-bit mode; {X64_HINT}")
        return dt

    def compile(self, fn):
        """``jax.jit(fn)``: fn is traced on its first call (and again only when the
        structure, shapes or dtypes of its inputs change) and runs as one XLA program.
        A host read of a traced value inside fn (float(), int(), bool(), .item())
        raises jax.errors.ConcretizationTypeError while tracing."""
        import jax

        return jax.jit(fn)

    @property
    def index_dtype(self):
        # Labels and indices: int64 when JAX has it, else its int32 (JAX's own default).
        return "int64" if x64_enabled() else "int32"


def owns_namespace(xp) -> bool:
    """Whether ``xp`` is jax.numpy (asked before jax is known to be importable)."""
    return getattr(xp, "__name__", "") == "jax.numpy"


def primitives() -> dict:
    """JAX's versions of portnn._windows primitives (backends/jax_primitives.py)."""
    from .jax_primitives import PRIMITIVES

    return PRIMITIVES


def make(device=None) -> Backend:
    try:
        import jax
        import jax.numpy as xp
    except ImportError as e:
        raise BackendError("jax: not installed (pip install 'portnn[jax]')") from e
    dev = _pick_device(jax, device)
    return JaxBackend(NAME, xp, dev, np.asarray, lambda x: isinstance(x, jax.Array))
