"""portnn.random: Threefry known answers, bit-identical streams on every backend,
prefix/offset stability, statistics, seeds, errors."""

import math

import numpy as np
import pytest

from portnn.backends import get_backend
from portnn.random import (
    REFERENCE_ROUNDS,
    ROUNDS,
    fold_in,
    host_generator,
    keep_mask,
    new_seed,
    random_bits,
    threefry2x32,
    threefry2x32_host,
    uniform,
)
from tests.helpers import assert_on_backend

M = 0xFFFFFFFF
SEED = 0x5EED_1234_ABCD_0042
BIG_OFFSET = 2**33 + 7

# Random123 kat_vectors, threefry2x32 20 rounds: (ctr0, ctr1), (key0, key1) -> (out0, out1)
KAT = [
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
]


def _np():
    return get_backend("numpy")


def _ref_bits(seed, n, offset=0, rounds=ROUNDS):
    """Oracle: element g = offset + k is word g % 2 of the host Threefry at counter g // 2."""
    out = []
    for g in range(offset, offset + n):
        c = g // 2
        w = threefry2x32_host(seed & M, seed >> 32, c & M, c >> 32, rounds)
        out.append(w[g % 2])
    return np.array(out, dtype=np.int64)


# ---------------------------------------------------------------- Threefry
@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_threefry_host_known_answers(ctr, key, expected):
    assert threefry2x32_host(key[0], key[1], ctr[0], ctr[1]) == expected
    assert threefry2x32_host(key[0], key[1], ctr[0], ctr[1], rounds=20) == expected


def test_threefry_known_answers_on_backend(backend):
    xp, dev = backend.xp, backend.device
    c0, c1, k0, k1 = (backend.asarray(np.array(col, dtype=np.int64))
                      for col in zip(*[(c[0], c[1], k[0], k[1]) for c, k, _ in KAT]))
    before = [backend.to_numpy(a).copy() for a in (c0, c1, k0, k1)]
    w0, w1 = threefry2x32(k0, k1, c0, c1)
    for w in (w0, w1):
        assert_on_backend(w, backend)
        assert w.dtype == xp.int64 and tuple(w.shape) == (3,)
    np.testing.assert_array_equal(backend.to_numpy(w0), [e[0] for _, _, e in KAT])
    np.testing.assert_array_equal(backend.to_numpy(w1), [e[1] for _, _, e in KAT])
    for a, b in zip((c0, c1, k0, k1), before):  # inputs untouched (in-place ops on copies only)
        np.testing.assert_array_equal(backend.to_numpy(a), b)
    # Python-int keys and a Python-int counter word
    for (ctr, key, expected) in KAT:
        cc0 = xp.asarray([ctr[0]], dtype=xp.int64, device=dev)
        w0, w1 = threefry2x32(key[0], key[1], cc0, ctr[1])
        assert (int(backend.to_numpy(w0)[0]), int(backend.to_numpy(w1)[0])) == expected


@pytest.mark.parametrize("rounds", [1, 3, 4, 5, 8, 12, 13, 16, 20, 32])
def test_threefry_device_matches_host_all_rounds(rounds):
    rng = np.random.default_rng(rounds)
    cols = rng.integers(0, 2**32, size=(4, 16), dtype=np.int64)
    cols[:, :2] = [[0, M], [0, M], [0, M], [0, M]]
    be = _np()
    w0, w1 = threefry2x32(*(be.asarray(c) for c in cols[[2, 3, 0, 1]]), rounds=rounds)
    ref = [threefry2x32_host(int(k0), int(k1), int(c0), int(c1), rounds) for c0, c1, k0, k1 in cols.T]
    np.testing.assert_array_equal(np.stack([w0, w1], axis=1), np.array(ref, dtype=np.int64))


def test_bits_match_host_oracle_across_counter_high_word():
    # counters crossing 2**32 take the general (array high word) path
    for offset in (0, 1, 2**33 - 5, BIG_OFFSET):
        for rounds in (1, 2, 4, ROUNDS, REFERENCE_ROUNDS):
            got = random_bits(SEED, 11, _np().xp, "cpu", offset=offset, rounds=rounds)
            np.testing.assert_array_equal(got, _ref_bits(SEED, 11, offset, rounds))


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("offset", [0, 1, BIG_OFFSET])
def test_streams_bit_identical_to_numpy(backend, offset):
    xp, dev = backend.xp, backend.device
    npx = _np().xp
    n = 1001
    bits = random_bits(SEED, n, xp, dev, offset=offset)
    assert_on_backend(bits, backend)
    assert bits.dtype == xp.int64 and tuple(bits.shape) == (n,)
    ref = random_bits(SEED, n, npx, "cpu", offset=offset)
    np.testing.assert_array_equal(backend.to_numpy(bits), ref)
    assert ref.min() >= 0 and ref.max() <= M

    for dt in ("float32", "float64"):
        u = uniform(SEED, (7, 11, 13), xp, dev, getattr(xp, dt), offset=offset)
        assert_on_backend(u, backend)
        assert u.dtype == getattr(xp, dt) and tuple(u.shape) == (7, 11, 13)
        u_np = backend.to_numpy(u)
        ref_u = uniform(SEED, (7, 11, 13), npx, "cpu", getattr(npx, dt), offset=offset)
        assert u_np.dtype == np.dtype(dt)
        np.testing.assert_array_equal(u_np, ref_u)
        assert u_np.min() >= 0.0 and u_np.max() < 1.0

    for p in (0.1, 0.5, 0.9):
        mk = keep_mask(SEED, (13, 77), p, xp, dev, offset=offset)
        assert_on_backend(mk, backend)
        assert mk.dtype == xp.bool and tuple(mk.shape) == (13, 77)
        np.testing.assert_array_equal(backend.to_numpy(mk), keep_mask(SEED, (13, 77), p, npx, "cpu", offset=offset))


def test_outputs_are_defined_by_the_bits():
    npx = _np().xp
    bits = random_bits(SEED, 1000, npx, "cpu", offset=5)
    u32 = uniform(SEED, (1000,), npx, "cpu", npx.float32, offset=5)
    np.testing.assert_array_equal(u32, ((bits >> 8).astype(np.float32) * np.float32(2.0**-24)))
    for p in (0.0, 1e-9, 0.3, 0.5, 1 - 1e-12, 1.0):
        mk = keep_mask(SEED, (1000,), p, npx, "cpu", offset=5)
        np.testing.assert_array_equal(mk, bits < round(p * 2**32))
    # float64: 53 bits from both words of counter offset + k
    u64 = uniform(SEED, 6, npx, "cpu", npx.float64, offset=3)
    ref = []
    for c in range(3, 9):
        w0, w1 = threefry2x32_host(SEED & M, SEED >> 32, c & M, c >> 32, ROUNDS)
        ref.append(((w0 >> 5) * 2**26 + (w1 >> 6)) * 2.0**-53)
    np.testing.assert_array_equal(u64, ref)


def test_prefix_and_offset_stability(backend):
    xp, dev, to = backend.xp, backend.device, backend.to_numpy
    long = to(random_bits(SEED, 300, xp, dev, offset=BIG_OFFSET - 100))
    np.testing.assert_array_equal(to(random_bits(SEED, 50, xp, dev, offset=BIG_OFFSET - 100)), long[:50])
    for off in (1, 2, 37, 100, 101):
        np.testing.assert_array_equal(to(random_bits(SEED, 120, xp, dev, offset=BIG_OFFSET - 100 + off)),
                                      long[off:off + 120])
    for dt in (xp.float32, xp.float64):
        ul = to(uniform(SEED, 200, xp, dev, dt))
        np.testing.assert_array_equal(to(uniform(SEED, (3, 5), xp, dev, dt, offset=33)), ul[33:48].reshape(3, 5))
    ml = to(keep_mask(SEED, 200, 0.5, xp, dev))
    np.testing.assert_array_equal(to(keep_mask(SEED, (9, 7), 0.5, xp, dev, offset=41)), ml[41:104].reshape(9, 7))


def test_edge_sizes_and_trivial_p(backend):
    xp, dev, to = backend.xp, backend.device, backend.to_numpy
    for n, off in ((0, 0), (0, 1), (1, 0), (1, 1), (2, 1)):
        b = random_bits(SEED, n, xp, dev, offset=off)
        assert tuple(b.shape) == (n,)
        np.testing.assert_array_equal(to(b), _ref_bits(SEED, n, off))
    assert tuple(uniform(SEED, (0, 3), xp, dev, xp.float32).shape) == (0, 3)
    assert tuple(uniform(SEED, (), xp, dev, xp.float64).shape) == ()
    ones = keep_mask(SEED, (4, 5), 1.0, xp, dev)
    zeros = keep_mask(SEED, (4, 5), 0, xp, dev)
    for mk in (ones, zeros):
        assert_on_backend(mk, backend)
        assert mk.dtype == xp.bool
    assert to(ones).all() and not to(zeros).any()


# ---------------------------------------------------------------- statistics
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_rate(backend, p):
    n = 100_000
    mk = backend.to_numpy(keep_mask(fold_in(SEED, 1), (100, 1000), p, backend.xp, backend.device))
    assert abs(mk.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_chi_square_16_bins(backend, dtype):
    n = 100_000
    u = backend.to_numpy(uniform(fold_in(SEED, 2), n, backend.xp, backend.device, getattr(backend.xp, dtype)))
    counts = np.bincount((u * 16).astype(np.int64), minlength=16)
    chi2 = float(((counts - n / 16) ** 2 / (n / 16)).sum())
    assert chi2 < 45.0, chi2  # 15 dof: P(chi2 > 45) ~ 7e-5
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)


@pytest.mark.parametrize("rounds", [ROUNDS, REFERENCE_ROUNDS])
def test_bit_balance_and_pair_correlation(rounds):
    """Each of the 32 bit positions is fair, and neighbours (the two words of one
    counter, and consecutive counters) are uncorrelated."""
    n = 200_000
    b = random_bits(SEED, n, _np().xp, "cpu", rounds=rounds)
    bitmeans = ((b[:, None] >> np.arange(32)) & 1).mean(axis=0)
    assert np.abs(bitmeans - 0.5).max() < 5 * math.sqrt(0.25 / n)
    u = b / 2.0**32
    for lag in (1, 2):
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) < 5 / math.sqrt(n), (lag, r)
    # sequential seeds (the fold_in-free worst case) still give unrelated streams
    b2 = random_bits(SEED + 1, n, _np().xp, "cpu", rounds=rounds)
    assert abs(np.corrcoef(u, b2 / 2.0**32)[0, 1]) < 5 / math.sqrt(n)
    assert np.mean(b == b2) < 1e-3


def test_different_seeds_differ(backend):
    xp, dev, to = backend.xp, backend.device, backend.to_numpy
    base = to(random_bits(SEED, 64, xp, dev))
    for other in (SEED + 1, SEED ^ (1 << 40), 0, 2**64 - 1):
        assert np.mean(to(random_bits(other, 64, xp, dev)) == base) < 0.1
    assert not np.array_equal(to(keep_mask(1, 256, 0.5, xp, dev)), to(keep_mask(2, 256, 0.5, xp, dev)))
    assert not np.array_equal(to(uniform(1, 8, xp, dev, xp.float64)), to(uniform(2, 8, xp, dev, xp.float64)))
    # same seed, same call -> same result
    np.testing.assert_array_equal(to(keep_mask(7, (5, 5), 0.3, xp, dev)), to(keep_mask(7, (5, 5), 0.3, xp, dev)))


# ---------------------------------------------------------------- seeds (host)
def test_fold_in():
    a = fold_in(SEED, 3)
    assert a == fold_in(SEED, 3)
    assert isinstance(a, int) and 0 <= a < 2**63
    derived = {fold_in(SEED, i) for i in range(1000)}
    assert len(derived) == 1000 and SEED not in derived
    assert fold_in(SEED, 1, 2) == fold_in(fold_in(SEED, 1), 2)
    assert fold_in(SEED, 1, 2) != fold_in(SEED, 2, 1)
    assert fold_in(SEED, 5) != fold_in(SEED + 1, 5)
    assert fold_in(SEED, 2**40) != fold_in(SEED, 0)
    assert fold_in(SEED) == SEED
    assert fold_in(0, 0) == fold_in(0, 0) != 0
    assert fold_in(np.int64(11), np.int32(4)) == fold_in(11, 4)


def test_new_seed_and_host_generator():
    s, t = new_seed(), new_seed()
    assert isinstance(s, int) and 0 <= s < 2**63 and s != t
    np.testing.assert_array_equal(host_generator(3).standard_normal(5), np.random.default_rng(3).standard_normal(5))
    assert isinstance(host_generator(None), np.random.Generator)
    assert host_generator(new_seed()).random() < 1.0


# ---------------------------------------------------------------- errors
def test_bad_arguments():
    npx = _np().xp
    with pytest.raises(ValueError, match="seed"):
        random_bits(-1, 4, npx, "cpu")
    with pytest.raises(ValueError, match="seed"):
        keep_mask(2**64, 4, 0.5, npx, "cpu")
    with pytest.raises(TypeError, match="seed"):
        uniform(1.5, 4, npx, "cpu", npx.float32)
    with pytest.raises(ValueError, match="p"):
        keep_mask(1, 4, 1.5, npx, "cpu")
    with pytest.raises(ValueError, match="p"):
        keep_mask(1, 4, -0.1, npx, "cpu")
    with pytest.raises(TypeError, match="dtype"):
        uniform(1, 4, npx, "cpu", npx.int64)
    with pytest.raises(ValueError, match="rounds"):
        random_bits(1, 4, npx, "cpu", rounds=0)
    with pytest.raises(ValueError, match="offset"):
        random_bits(1, 4, npx, "cpu", offset=-1)
    with pytest.raises(ValueError, match="n"):
        random_bits(1, -1, npx, "cpu")
    with pytest.raises(ValueError, match="shape"):
        uniform(1, (2, -1), npx, "cpu", npx.float32)
    with pytest.raises(ValueError, match="k0"):
        threefry2x32_host(2**32, 0, 0, 0)
    with pytest.raises(TypeError, match="c0"):
        threefry2x32(0, 0, np.zeros(3, dtype=np.int32), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="data"):
        fold_in(1, -3)
    with pytest.raises(ValueError, match="seed"):
        host_generator(-2)
