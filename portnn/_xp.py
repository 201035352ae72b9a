"""The few neural-network primitives the Array API standard lacks, written once in
standard operations (no scatter, no as_strided, no einsum).

Every function takes arrays and infers their namespace; creation calls pass
dtype= and device= explicitly so results stay on the inputs' device.
"""

from __future__ import annotations

import array_api_compat as aac

from .backends import namespace


def one_hot(y, num_classes: int, dtype):
    """Integer labels y (N,) -> (N, num_classes) array of 0/1 in ``dtype``.

    Built by comparison with an arange (strict mode forbids integer-array
    __setitem__, so ``out[arange(N), y] = 1`` is not portable).
    """
    xp = namespace(y)
    classes = xp.arange(num_classes, dtype=y.dtype, device=aac.device(y))
    return xp.astype(y[:, None] == classes[None, :], dtype)
