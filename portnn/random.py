"""Counter-based random numbers that are bit-identical on every backend.

The Array API standard has no random module, and NumPy, CuPy and torch streams
differ. portnn therefore generates its device-side random numbers (dropout
masks, uniforms) with **Threefry-2x32** (Salmon et al., SC'11, "Parallel random
numbers: as easy as 1, 2, 3"; the Random123 library; also JAX's PRNG), written
in standard integer operations only:

* 32-bit words are held in **int64** arrays with values in [0, 2**32): torch on
  the CPU has no uint32 add or shift. Only ``+ ^ & | << >>`` are used, every sum
  is reduced with ``& 0xFFFFFFFF`` before it can matter, and every intermediate
  stays below 2**63 (int64 overflow is unspecified by the standard). JAX has
  int64 only with ``jax_enable_x64``: without it a draw raises a BackendError
  saying how to enable it (int32 words would silently give wrong bits).
* Outputs are produced from integers by exact operations (integer compare for
  masks; exact int -> float conversion and power-of-two scaling for uniforms),
  so the SAME seed gives the SAME bits/floats/masks on numpy, array_api_strict,
  torch and CuPy. Normals (libm log/cos) would not be bit-portable; seeded weight
  init therefore happens on the host (``host_generator``).

Streams: element ``k`` of a draw depends only on ``(seed, offset + k)``, so a
draw is prefix-stable (a longer draw starts with the shorter one) and
offset-stable (a draw at ``offset`` equals the tail of a draw from 0). Use
``fold_in(seed, step, layer)`` to give every dropout call its own seed.

Rounds. ``threefry2x32`` defaults to the reference 20 rounds (Random123's
``Threefry2x32``, the known-answer vectors, JAX). The bulk generators
(``random_bits``, ``uniform``, ``keep_mask``) default to ``ROUNDS = 13``:
Random123's documentation (threefry.h, r123::Threefry2x32_R) states "As of
September 2011, the authors know of no statistical flaws with ROUNDS=13 or more
for Threefry2x32" (the 20-round default is kept there as a safety margin). 13
rounds cost about 0.7x of 20 here (measured, numpy), and dropout masks do not need a
cryptographic margin. Pass ``rounds=20`` for the reference stream.

Cost. Each Threefry call yields two 32-bit words; ``random_bits``/``keep_mask``/
float32 ``uniform`` use both (element ``g = offset + k`` takes word ``g % 2`` of
counter ``g // 2``), float64 ``uniform`` uses both words for one 53-bit value.
A 13-round call is about 80 elementwise int64 operations over ``n/2`` elements
(one kernel each on a GPU; no chunking, so the launch count does not grow with n).

Public functions
----------------
threefry2x32(k0, k1, c0, c1, rounds=20)      device arrays -> (w0, w1)
threefry2x32_host(k0, k1, c0, c1, rounds=20) Python ints -> (w0, w1)
fold_in(seed, *data) -> int                  derived 63-bit seed (host)
device_key(seed, xp, device) -> DeviceKey    a seed as two 0-d int64 key words
fold_in_device(key, *data) -> DeviceKey      fold_in on the device (traceable)
random_bits(seed, n, xp, device, offset=0)   int64 (n,) words in [0, 2**32)
uniform(seed, shape, xp, device, dtype, offset=0)  floats in [0, 1)
keep_mask(seed, shape, p, xp, device, offset=0)    bool, True w.p. p
host_generator(seed) -> numpy.random.Generator      seeded host init
new_seed() -> int                                   fresh 63-bit seed

Device keys. Under a compiler's tracing (``Solver(compile=True)`` on JAX) a
seed that depends on the step must not be a Python int: it would be baked into
the compiled program. ``fold_in_device`` derives it on the device instead, as a
``DeviceKey`` of two 0-d int64 arrays holding exactly the key words of the host
``fold_in``'s seed (``device_key(fold_in(s, a, b)) == fold_in_device(
device_key(s), a, b)``, word for word); ``random_bits``, ``uniform`` and
``keep_mask`` accept one wherever they take a seed and give the same bits.
"""

from __future__ import annotations

import math
import numbers
import operator
import secrets
from typing import Any, NamedTuple

import numpy as np  # host side only: host_generator

from ._checks import check_int
from .backends import BackendError, namespace
from .backends.jax_backend import X64_HINT

__all__ = [
    "ROUNDS",
    "threefry2x32",
    "threefry2x32_host",
    "fold_in",
    "DeviceKey",
    "device_key",
    "fold_in_device",
    "random_bits",
    "uniform",
    "keep_mask",
    "host_generator",
    "new_seed",
]

#: Rounds used by random_bits / uniform / keep_mask (see the module docstring).
ROUNDS = 13
#: Reference rounds of Threefry-2x32 (Random123 default, known-answer vectors).
REFERENCE_ROUNDS = 20

_M = 0xFFFFFFFF
_PARITY = 0x1BD11BDA  # Skein key-schedule parity constant, 32-bit
_ROT = (13, 15, 26, 6, 17, 29, 16, 24)  # Random123 R_32x2_*
_MAX_ROUNDS = 32  # Random123 unrolls Threefry-2x32 up to 32 rounds


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def _checked_int(v, name, lo, hi, expected):
    """v as a Python int with lo <= v < hi (hi None: no upper bound), else a
    TypeError / ValueError naming ``name`` and saying ``expected``."""
    return check_int(v, name, minimum=lo, maximum=None if hi is None else hi - 1, expected=expected)


def _word(v, name):
    return _checked_int(v, name, 0, _M + 1, "an int in [0, 2**32)")


def _u64(v, name):
    return _checked_int(v, name, 0, 2**64, "an int in [0, 2**64)")


def _rounds(rounds):
    return _checked_int(rounds, "rounds", 1, _MAX_ROUNDS + 1, f"an int in [1, {_MAX_ROUNDS}]")


def _count(n, name="n"):
    return _checked_int(n, name, 0, None, "a non-negative int")


def _shape(shape):
    if isinstance(shape, int) or hasattr(shape, "__index__"):
        shape = (shape,)
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape: expected an int or a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape: expected non-negative sizes, got {shape}")
    return shape


def _offset(offset):
    offset = _count(offset, "offset")
    if offset >= 2**63:
        raise ValueError(f"offset: expected an int in [0, 2**63), got {offset}")
    return offset


class DeviceKey(NamedTuple):
    """A seed held on the device: its low and high 32-bit words as 0-d int64
    arrays (values in [0, 2**32)), so that it can be a traced value."""

    k0: Any
    k1: Any


def _key(seed):
    """The key words (k0, k1) of a seed: Python ints, or 0-d arrays for a DeviceKey."""
    if isinstance(seed, DeviceKey):
        for name, w in (("seed.k0", seed.k0), ("seed.k1", seed.k1)):
            if isinstance(w, (bool, int)) or not hasattr(w, "dtype") or tuple(w.shape) != ():
                raise TypeError(f"{name}: expected a 0-d int64 array, got {w!r}")
            if w.dtype != namespace(w).int64:  # dtype only: no device read
                raise TypeError(f"{name}: expected a 0-d int64 array, got dtype {w.dtype}")
        return seed.k0, seed.k1
    seed = _u64(seed, "seed")
    return seed & _M, seed >> 32


# --------------------------------------------------------------------------
# Threefry-2x32
# --------------------------------------------------------------------------
def _schedule(k0, k1):
    return (k0, k1, k0 ^ k1 ^ _PARITY)


def _mix_rounds(x0, x1, ks, rounds, first=0):
    """Rounds ``first .. rounds-1`` of Threefry-2x32, in place on int64 arrays.

    On entry x1 is clean (in [0, 2**32)) and x0 may carry bits above 32 (x0 is
    never masked inside the loop: it only ever receives one add of a clean word
    per round or injection, so it stays below (2 + rounds + rounds // 4) * 2**32
    < 2**39, and only its low 32 bits ever matter: the xor into x1 is masked).
    Returns (x0, x1) with x0 still unmasked and x1 clean.
    """
    for i in range(first, rounds):
        r = _ROT[i % 8]
        x0 += x1
        # rotl(x1, r) ^ x0 == ((y ^ (y >> 32)) ^ x0) & M with y = x1 << r < 2**61:
        # y's low word is (x1 << r) & M (low r bits zero) and y >> 32 is x1 >> (32 - r).
        x1 <<= r
        t = x1 >> 32
        x1 ^= t
        del t
        x1 ^= x0
        if (i & 3) == 3:  # key injection s after every 4th round
            s = (i >> 2) + 1
            x0 += ks[s % 3]
            x1 += ks[(s + 1) % 3] + s
        x1 &= _M
    return x0, x1


def threefry2x32(k0, k1, c0, c1, rounds=REFERENCE_ROUNDS):
    """Threefry-2x32 block function (Random123 ``threefry2x32_R``) on device arrays.

    k0, k1 : key words, Python ints in [0, 2**32) or int64 arrays (broadcastable)
    c0, c1 : counter words, int64 arrays with values in [0, 2**32) (one of them
             may be a Python int); the shapes broadcast together
    rounds : 1..32 (20 = Random123's default and its known-answer vectors)
    returns (w0, w1): two new int64 arrays of the broadcast shape, values in
             [0, 2**32), on the device of the inputs. Inputs are not modified.

    Only add, xor, and, or and shifts are used, with every intermediate below
    2**63, so the result is bit-identical on numpy, array_api_strict, torch, CuPy.
    """
    rounds = _rounds(rounds)
    arrays = [a for a in (k0, k1, c0, c1) if not isinstance(a, int)]
    if not arrays:
        raise TypeError("threefry2x32: at least one of c0, c1 must be an array (use threefry2x32_host for ints)")
    xp = namespace(*arrays)
    for name, a in (("k0", k0), ("k1", k1), ("c0", c0), ("c1", c1)):
        if isinstance(a, int):
            _word(a, name)
        elif a.dtype != xp.int64:
            raise TypeError(f"{name}: expected an int64 array (32-bit words in [0, 2**32)), got dtype {a.dtype}")
    ks2 = k0 ^ k1 ^ _PARITY
    ks = (k0, k1, ks2)
    # Fresh, full-shape arrays (never aliases of the inputs) to update in place.
    zero = arrays[0] * 0
    for a in arrays[1:]:
        zero = zero + a * 0
    x0 = zero + c0
    x0 += k0
    x1 = zero + c1
    x1 += k1
    x1 &= _M
    x0, x1 = _mix_rounds(x0, x1, ks, rounds)
    x0 &= _M
    return x0, x1


def threefry2x32_host(k0, k1, c0, c1, rounds=REFERENCE_ROUNDS):
    """Threefry-2x32 on plain Python ints (reference, seed derivation).

    k0, k1, c0, c1 : ints in [0, 2**32); rounds : 1..32
    returns (w0, w1) : ints in [0, 2**32)
    """
    rounds = _rounds(rounds)
    k0, k1, c0, c1 = (_word(v, n) for v, n in ((k0, "k0"), (k1, "k1"), (c0, "c0"), (c1, "c1")))
    ks = _schedule(k0, k1)
    x0 = (c0 + k0) & _M
    x1 = (c1 + k1) & _M
    for i in range(rounds):
        r = _ROT[i % 8]
        x0 = (x0 + x1) & _M
        x1 = (((x1 << r) & _M) | (x1 >> (32 - r))) ^ x0
        if (i & 3) == 3:
            s = (i >> 2) + 1
            x0 = (x0 + ks[s % 3]) & _M
            x1 = (x1 + ks[(s + 1) % 3] + s) & _M
    return x0, x1


# --------------------------------------------------------------------------
# Seeds (host)
# --------------------------------------------------------------------------
def fold_in(seed, *data):
    """A new seed derived deterministically from ``seed`` and integers ``data``.

    seed : int in [0, 2**64);  data : ints in [0, 2**64) (e.g. step, layer index)
    returns an int in [0, 2**63) (fits int64, JSON, torch.manual_seed), or
    ``seed`` itself when no data is given. Pure Python (no device work):
    ``fold_in(fold_in(s, a), b) == fold_in(s, a, b)``. Each datum is one
    20-round Threefry-2x32 call keyed by the running seed with the datum as
    counter.
    """
    s = _u64(seed, "seed")
    for j, d in enumerate(data):
        d = _u64(d, f"data[{j}]")
        w0, w1 = threefry2x32_host(s & _M, s >> 32, d & _M, d >> 32, REFERENCE_ROUNDS)
        s = ((w1 << 32) | w0) & (2**63 - 1)
    return s


def device_key(seed, xp, device=None):
    """``seed`` (int in [0, 2**64)) as a DeviceKey of 0-d int64 arrays on ``device``."""
    k0, k1 = _key(seed)
    _check_int64(xp, device)
    return DeviceKey(*(xp.asarray(w, dtype=xp.int64, device=device) for w in (k0, k1)))


def fold_in_device(key, *data):
    """``fold_in`` on the device, for seeds that depend on traced values.

    key : DeviceKey (``device_key(seed)``); data : ints in [0, 2**63) or 0-d int64
    arrays (e.g. a traced step count), at least one array among key and data.
    returns a DeviceKey whose words are those of ``fold_in(seed, *data)``
    (bit-identical: the same 20-round Threefry call per datum).
    """
    k0, k1 = _key(key)
    for j, d in enumerate(data):
        if isinstance(d, numbers.Integral) or not hasattr(d, "dtype"):
            d = _checked_int(d, f"data[{j}]", 0, 2**63, "an int in [0, 2**63)")
        w0, w1 = threefry2x32(k0, k1, d & _M, d >> 32, REFERENCE_ROUNDS)
        # The host keeps the new seed below 2**63: its high word loses bit 31.
        k0, k1 = w0, w1 & 0x7FFFFFFF
    xp = namespace(k0, k1)
    # NumPy turns 0-d arithmetic into scalars: keep the words 0-d arrays.
    return DeviceKey(xp.asarray(k0), xp.asarray(k1))


def new_seed():
    """A fresh random seed (int in [0, 2**63)) from the OS entropy pool, for
    unseeded dropout: draws stay reproducible if the caller records it."""
    return secrets.randbits(63)


def host_generator(seed=None):
    """``numpy.random.Generator`` (PCG64) for seeded work on the HOST (weight init,
    minibatch order): bit-identical on every backend once sent with
    ``Backend.asarray``. seed : int >= 0, or None for fresh OS entropy."""
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0, expected="a non-negative int or None")
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# Bulk generators (device)
# --------------------------------------------------------------------------
def _counter_words(seed, start, m, xp, device, rounds):
    """Threefry words for counters ``start .. start+m-1`` (int64 (m,) each).

    When every counter shares its high word (start >> 32), the counter's high
    word is a host constant and round 0 is folded into the arange start.
    """
    k0, k1 = _key(seed)
    _check_int64(xp, device)
    ks = _schedule(k0, k1)
    hi = start >> 32
    if m > 0 and ((start + m - 1) >> 32) == hi:
        lo = start & _M
        x1c = (hi + k1) & _M  # scalar x1 after key insertion
        # round 0 with a scalar x1: x0 = c0 + k0 + x1c ; x1 = rotl(x1c, R0) ^ x0
        if isinstance(k0, int):
            base = lo + k0 + x1c
            x0 = xp.arange(base, base + m, dtype=xp.int64, device=device)
        else:  # a DeviceKey: arange needs host bounds, the key part is added on the device
            x0 = xp.arange(lo, lo + m, dtype=xp.int64, device=device) + (k0 + x1c)
        r = _ROT[0]
        x1 = x0 ^ (((x1c << r) & _M) | (x1c >> (32 - r)))
        x1 &= _M
        first = 1
        if rounds == 1:  # no injection happens after round 0
            x0 &= _M
            return x0, x1
    else:
        i = xp.arange(start, start + m, dtype=xp.int64, device=device)
        x0 = i & _M
        x0 += k0
        x1 = i >> 32
        del i
        x1 += k1
        x1 &= _M
        first = 0
    x0, x1 = _mix_rounds(x0, x1, ks, rounds, first)
    x0 &= _M
    return x0, x1


_INT64_OK = set()  # namespaces whose int64 arrays were seen to be int64


def _check_int64(xp, device):
    """BackendError unless ``xp`` really creates int64 arrays (JAX without
    jax_enable_x64 silently gives int32, and the 32-bit words would overflow).
    Probed once per namespace with an empty array (no data moves)."""
    if xp in _INT64_OK:
        return
    got = xp.zeros((0,), dtype=xp.int64, device=device).dtype
    if got != xp.int64:
        raise BackendError(
            f"portnn.random: the Threefry generator (dropout masks) needs int64 arrays, but "
            f"{getattr(xp, '__name__', xp)} gives {got} (JAX in 32-bit mode); {X64_HINT}")
    _INT64_OK.add(xp)


def _interleave(a, b, xp, start, n):
    """(a0, b0, a1, b1, ...)[start:start + n] for 1-D a, b of equal length."""
    out = xp.reshape(xp.stack((a, b), axis=1), (-1,))
    return out[start:start + n]


def random_bits(seed, n, xp, device=None, offset=0, rounds=ROUNDS):
    """n uniformly random 32-bit words on ``device``.

    seed : int in [0, 2**64); n : int >= 0; xp : Array API namespace;
    device : device of xp (None = xp's default); offset : int in [0, 2**63)
    returns an int64 array (n,) with values in [0, 2**32).
    Element k depends only on (seed, offset + k, rounds): element g = offset + k
    is word g % 2 of the Threefry-2x32 output for counter g // 2 (key = seed's
    low / high 32 bits, counter = (c & 0xFFFFFFFF, c >> 32)).
    """
    n, offset, rounds = _count(n), _offset(offset), _rounds(rounds)
    start = offset // 2
    m = (offset + n + 1) // 2 - start
    w0, w1 = _counter_words(seed, start, m, xp, device, rounds)
    return _interleave(w0, w1, xp, offset % 2, n)


def uniform(seed, shape, xp, device=None, dtype=None, offset=0, rounds=ROUNDS):
    """Uniform floats in [0, 1) on ``device``, bit-identical on every backend.

    seed : int in [0, 2**64); shape : int or tuple; xp : Array API namespace;
    dtype : xp.float32 or xp.float64, or "float32"/"float64" (None = float32); offset : int in [0, 2**63)
    returns an array of ``shape`` and ``dtype``.
    float32: (word >> 8) * 2**-24 with word = random_bits(seed, n, offset=offset)
      (24 random bits, exact); element k depends on (seed, offset + k).
    float64: ((w0 >> 5) * 2**26 + (w1 >> 6)) * 2**-53 from both words of the
      counter c = offset + k (53 random bits, exact). Not the same stream as the
      float32 one; use different seeds (fold_in) for independent draws.
    """
    shape = _shape(shape)
    offset, rounds = _offset(offset), _rounds(rounds)
    if dtype is None:
        dtype = xp.float32
    elif isinstance(dtype, str):
        dtype = getattr(xp, dtype, dtype)
    if dtype not in (xp.float32, xp.float64):
        raise TypeError(f"dtype: expected float32 or float64 of the given namespace, got {dtype!r}")
    n = math.prod(shape)
    if dtype == xp.float64:
        w0, w1 = _counter_words(seed, offset, n, xp, device, rounds)
        w0 >>= 5
        w0 <<= 26
        w1 >>= 6
        w0 |= w1
        del w1
        out = xp.astype(w0, xp.float64)
        out *= 2.0**-53
    else:
        start = offset // 2
        m = (offset + n + 1) // 2 - start
        w0, w1 = _counter_words(seed, start, m, xp, device, rounds)
        w0 >>= 8
        w1 >>= 8
        f0 = xp.astype(w0, xp.float32)
        del w0
        f1 = xp.astype(w1, xp.float32)
        del w1
        out = _interleave(f0, f1, xp, offset % 2, n)
        out = out * 2.0**-24
    return xp.reshape(out, shape)


def keep_mask(seed, shape, p, xp, device=None, offset=0, rounds=ROUNDS):
    """Boolean mask, True with probability ``p``, bit-identical on every backend.

    seed : int in [0, 2**64); shape : int or tuple; p : float in [0, 1]
    (probability of KEEPING, as in inverted dropout); xp : Array API namespace;
    offset : int in [0, 2**63)
    returns a bool array of ``shape`` on ``device``:
    mask.flat[k] = random_bits(seed, n, offset=offset)[k] < round(p * 2**32)
    (a pure integer comparison: no float rounding differs between backends).
    p == 1 gives all True (no random work), p == 0 all False.
    """
    shape = _shape(shape)
    offset, rounds = _offset(offset), _rounds(rounds)
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"p: expected a float in [0, 1], got {p!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a keep probability in [0, 1], got {p}")
    _key(seed)
    thresh = round(p * 2**32)
    if thresh >= 2**32:
        return xp.ones(shape, dtype=xp.bool, device=device)
    if thresh <= 0:
        return xp.zeros(shape, dtype=xp.bool, device=device)
    n = math.prod(shape)
    start = offset // 2
    m = (offset + n + 1) // 2 - start
    w0, w1 = _counter_words(seed, start, m, xp, device, rounds)
    b0 = w0 < thresh
    del w0
    b1 = w1 < thresh
    del w1
    return xp.reshape(_interleave(b0, b1, xp, offset % 2, n), shape)
