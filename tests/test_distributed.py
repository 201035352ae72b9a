"""portnn.distributed without MPI: the collectives on the thread-based fake
communicator (N ranks as threads of this process) and the data-parallel Solver
on top of them. The same scenarios in real MPI processes: test_distributed_mpi.py."""

import os
import threading
import time

import numpy as np
import pytest

import portnn
from portnn.data import load_digits
from portnn.distributed import (
    CommAborted,
    SingleProcessCommunicator,
    ThreadFakeCommunicator,
    create_communicator,
    shard_batch,
)
from tests.helpers import to_np

run = ThreadFakeCommunicator.run


@pytest.fixture(scope="module")
def digits64():
    return load_digits(dtype="float64")


def fcn(dtype="float64", backend="numpy", **kw):
    return portnn.FullyConnectedNet([32, 16], input_dim=64, weight_scale=0.1, dtype=dtype, seed=3,
                                    backend=backend, **kw)


def solver(model, data, comm, **kw):
    kw.setdefault("update_rule", "sgd")
    kw.setdefault("optim_config", {"learning_rate": 1e-2})
    kw.setdefault("num_epochs", 2)
    kw.setdefault("verbose", False)
    return portnn.Solver(model, data, seed=7, comm=comm, **kw)


def state(s):
    return {k: to_np(v) for k, v in s.model.state_dict().items()}


# --------------------------------------------------------------------------- collectives
@pytest.mark.parametrize("size", [2, 3, 4])
def test_gradients_equal_to_rank_average_to_mean_rank(backend, size):
    def fn(comm):
        grads = {"W2": backend.asarray(np.full((3, 4), comm.rank), dtype="float32"),
                 "b": backend.asarray(np.full(4, comm.rank), dtype="float64"),
                 "W1": backend.asarray(np.full((2,), comm.rank), dtype="float32")}
        return comm.allreduce_mean(grads)

    for out in run(size, fn):
        assert list(out) == ["W1", "W2", "b"]  # sorted-name order
        for k, v in out.items():
            backend.check_array(v, k)
            np.testing.assert_array_equal(to_np(v), np.full(tuple(v.shape), (size - 1) / 2))
        assert to_np(out["b"]).dtype == np.float64 and to_np(out["W2"]).dtype == np.float32


def test_bcast_gather_scalars_and_run_on_root():
    def fn(comm):
        arrays = [np.full(3, float(comm.rank)), np.full((2, 2), 10.0 + comm.rank)]
        b = comm.bcast(arrays, root=1)
        got = {
            "bcast": [a.tolist() for a in b],
            "obj": comm.bcast_obj({"r": comm.rank}),
            "gather": comm.gather_obj(comm.rank),
            "all": comm.allgather_obj(comm.rank * 2),
            "sum": comm.allreduce_scalars([comm.rank, 1], "sum"),
            "max": comm.allreduce_scalars([comm.rank], "max"),
            "root": comm.run_on_root(lambda: "only on 0"),
        }
        with pytest.raises(FileNotFoundError, match="nope"):
            comm.run_on_root(lambda: (_ for _ in ()).throw(FileNotFoundError("nope")))
        comm.barrier()
        return got

    r0, r1, r2 = run(3, fn)
    assert r0["bcast"] == r2["bcast"] == [[1.0] * 3, [[11.0, 11.0], [11.0, 11.0]]]
    assert r2["obj"] == {"r": 0} and r0["gather"] == [0, 1, 2] and r1["gather"] is None
    assert r1["all"] == [0, 2, 4] and r2["sum"] == [3.0, 3.0] and r0["max"] == [2.0]
    assert r1["root"] == "only on 0"


def test_single_process_and_auto_outside_mpi_are_identity():
    c = create_communicator("auto")
    if not any(os.environ.get(v, "1") != "1" for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        assert isinstance(c, SingleProcessCommunicator)
    assert (c.rank, c.size) == (0, 1)
    a = {"x": np.arange(3.0)}
    assert c.allreduce_mean(a)["x"] is a["x"] and c.gather_obj(5) == [5]
    with pytest.raises(ValueError, match="name: expected"):
        create_communicator("gloo")


def test_shard_batch_equal_lengths_cover_the_global_batch():
    perm = np.random.default_rng(0).permutation(101)
    for size, bs in ((2, 10), (3, 7), (4, 30)):
        steps = max(101 // (bs * size), 1)
        for k in range(steps):
            parts = [shard_batch(perm, k, bs, r, size) for r in range(size)]
            assert all(p.shape == (bs,) for p in parts)
            glob = np.concatenate(parts)
            if bs * size <= 101:
                np.testing.assert_array_equal(glob, perm[k * bs * size:(k + 1) * bs * size])


# --------------------------------------------------------------------------- Solver
def test_comm_single_process_is_bit_identical_to_no_comm(digits64):
    kw = dict(update_rule="adam", batch_size=50, num_epochs=2)
    m = dict(normalization="batchnorm", dropout_keep_ratio=0.8)
    a = solver(fcn(**m), digits64, None, **kw).train()
    b = solver(fcn(**m), digits64, SingleProcessCommunicator(), **kw).train()
    assert a.loss_history == b.loss_history and a.val_acc_history == b.val_acc_history
    for k, v in state(a).items():
        np.testing.assert_array_equal(state(b)[k], v)


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_two_ranks_half_batch_equal_one_process_full_batch(digits64, rule):
    ref = solver(fcn(), digits64, None, update_rule=rule, batch_size=40).train()
    for s in run(2, lambda c: solver(fcn(), digits64, c, update_rule=rule, batch_size=20).train()):
        diff = max(float(np.max(np.abs(to_np(s.model.params[k]) - to_np(v)))) for k, v in ref.model.params.items())
        print(f"\n{rule} rank {s.comm.rank}: max abs param diff {diff:.3g}")
        assert diff < 1e-10
        np.testing.assert_allclose(s.loss_history, ref.loss_history, rtol=0, atol=1e-10)
        assert s.val_acc_history == ref.val_acc_history and s.iteration == ref.iteration


def test_params_identical_on_all_ranks_with_dropout_and_batchnorm(backend):
    d = {k: v[:300] for k, v in load_digits().items()}
    m = dict(normalization="batchnorm", dropout_keep_ratio=0.7, dtype="float32", backend=backend)
    masks = {}

    def fn(c):
        s = solver(fcn(**m), d, c, update_rule="adam", batch_size=16)
        masks[c.rank] = s.model._dropout_seed(1)
        return s.train()

    sols = run(2, fn)
    assert masks[0] != masks[1]  # each rank draws its own dropout masks
    s0, s1 = (state(s) for s in sols)
    for k in s0:
        np.testing.assert_array_equal(s0[k], s1[k])
    assert sols[0].loss_history == sols[1].loss_history


@pytest.mark.parametrize("n,bs,size", [(101, 10, 2), (101, 10, 3), (5, 4, 3)])
def test_uneven_dataset_does_not_deadlock(digits64, n, bs, size):
    data = {"X_train": digits64["X_train"][:n], "y_train": digits64["y_train"][:n],
            "X_val": digits64["X_val"][:7], "y_val": digits64["y_val"][:7]}
    sols = run(size, lambda c: solver(fcn(), data, c, batch_size=bs, num_epochs=3).train(), timeout=30)
    assert {s.iteration for s in sols} == {3 * max(n // (bs * size), 1)}


def test_exception_on_rank_1_ends_the_others_quickly(digits64):
    class Boom:
        def on_iteration(self, s):
            if s.comm.rank == 1 and s.iteration == 3:
                raise RuntimeError("boom on rank 1")

    seen = {}

    def fn(c):
        try:
            return solver(fcn(), digits64, c, batch_size=20, num_epochs=100, callbacks=[Boom()]).train()
        except BaseException as e:
            seen[c.rank] = (type(e), time.perf_counter())
            raise

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="boom on rank 1"):
        run(2, fn, timeout=60)
    assert seen[0][0] is CommAborted and seen[1][0] is RuntimeError
    assert seen[0][1] - t0 < 5


def test_resume_equals_uninterrupted_run_and_only_rank_0_writes(digits64, tmp_path, monkeypatch):
    data = {k: v[:300] for k, v in digits64.items()}

    def make(c, epochs, prefix=None):
        m = fcn(normalization="batchnorm", dropout_keep_ratio=0.8)
        return solver(m, data, c, update_rule="adam", optim_config={"learning_rate": 3e-3}, lr_decay=0.9,
                      batch_size=16, num_epochs=epochs, checkpoint_name=prefix)

    full = run(2, lambda c: make(c, 4).train())
    writers = []
    real_write = portnn.Solver.write_checkpoint
    monkeypatch.setattr(portnn.Solver, "write_checkpoint",
                        lambda self, path: (writers.append(threading.current_thread().name), real_write(self, path)))
    run(2, lambda c: make(c, 2, str(tmp_path / "ck")).train())
    assert writers == ["rank0", "rank0"]
    resumed = run(2, lambda c: portnn.load(str(tmp_path / "ck_epoch_2.npz"), data=data, comm=c, num_epochs=4,
                                           verbose=False).train())
    for f, r in zip(full, resumed):
        assert r.loss_history == f.loss_history and r.val_acc_history == f.val_acc_history
        for k, v in state(f).items():
            np.testing.assert_array_equal(state(r)[k], v)


def test_start_broadcasts_rank_0_state(digits64):
    """Ranks built with different seeds train from rank 0's params, optimizer state and seed."""
    def fn(c):
        m = portnn.FullyConnectedNet([8], input_dim=64, weight_scale=0.1, dtype="float64", seed=c.rank,
                                     backend="numpy")
        s = portnn.Solver(m, digits64, update_rule="sgd_momentum", batch_size=20, num_epochs=1, verbose=False,
                          seed=100 + c.rank, comm=c)
        if c.rank == 0:
            s.optim_configs["W1"]["velocity"] = np.ones((64, 8))
        return s.train()

    a, b = run(2, fn)
    assert a.seed == b.seed == 100
    for k, v in state(a).items():
        np.testing.assert_array_equal(state(b)[k], v)
    np.testing.assert_array_equal(a.optim_configs["W1"]["velocity"], b.optim_configs["W1"]["velocity"])


def test_start_broadcasts_skip_policy_and_skipped_iterations(digits64):
    """The broadcast is the TrainingState: rank 1, built with on_nonfinite="raise" and
    a stale skip record, takes rank 0's "skip" and its record, so both ranks skip the
    same (averaged, non-finite) step instead of rank 1 raising alone."""
    from tests.test_divergence import poison

    data = {k: v[:200] for k, v in digits64.items()}
    ref = solver(poison(fcn(), {3: "grad"}), data, None, update_rule="adam", batch_size=40,
                 on_nonfinite="skip").train()

    def fn(c):
        s = solver(poison(fcn(), {3: "grad"}), data, c, update_rule="adam", batch_size=20,
                   on_nonfinite="skip" if c.rank == 0 else "raise")
        if c.rank == 1:
            s.skipped_iterations = [99]
        return s.train()

    a, b = run(2, fn, timeout=60)
    assert a.on_nonfinite == b.on_nonfinite == "skip"
    assert a.skipped_iterations == b.skipped_iterations == ref.skipped_iterations == [3]
    for k, v in state(a).items():
        np.testing.assert_array_equal(state(b)[k], v)
        np.testing.assert_allclose(v, state(ref)[k], rtol=0, atol=1e-10)


def test_resume_of_a_skipping_run_on_two_ranks(digits64, tmp_path):
    """A data-parallel checkpoint keeps on_nonfinite and skipped_iterations, and the
    resumed ranks continue exactly as the uninterrupted run."""
    from tests.test_divergence import poison

    data = {k: v[:200] for k, v in digits64.items()}

    def make(c, prefix=None):
        return solver(poison(fcn(normalization="batchnorm"), {2: "grad", 7: "loss"}), data, c, update_rule="adam",
                      batch_size=20, num_epochs=3, on_nonfinite="skip", checkpoint_name=prefix)

    full = run(2, lambda c: make(c, str(tmp_path / "ck")).train())

    def resume(c):
        s = portnn.load(str(tmp_path / "ck_epoch_1.npz"), data=data, comm=c)
        assert (s.on_nonfinite, s.skipped_iterations) == ("skip", [2])
        poison(s.model, {2: "grad", 7: "loss"})
        return s.train()

    for f, r in zip(full, run(2, resume)):
        assert r.skipped_iterations == f.skipped_iterations == [2, 7]
        assert r.loss_history == f.loss_history and r.val_acc_history == f.val_acc_history
        for k, v in state(f).items():
            np.testing.assert_array_equal(state(r)[k], v)


def test_batchnorm_statistics_are_averaged(digits64):
    def fn(c):
        s = solver(fcn(normalization="batchnorm"), digits64, c, batch_size=20, num_epochs=1)
        s.train()
        return s

    a, b = run(2, fn)
    for k in ("bn1.running_mean", "bn2.running_var"):
        np.testing.assert_array_equal(to_np(a.model.buffers()[k]), to_np(b.model.buffers()[k]))


def test_ranks_that_disagree_raise_instead_of_hanging(digits64):
    def fn(c):
        data = digits64 if c.rank == 0 else {**digits64, "X_train": digits64["X_train"][:100],
                                             "y_train": digits64["y_train"][:100]}
        return solver(fcn(), data, c, batch_size=20).train()

    with pytest.raises(ValueError, match="rank 1 disagrees with rank 0 on train samples"):
        run(2, fn, timeout=30)


def test_stop_training_on_one_rank_stops_all(digits64):
    class Stop:
        def on_iteration(self, s):
            if s.comm.rank == 1 and s.iteration == 4:
                s.stop_training = True

    sols = run(2, lambda c: solver(fcn(), digits64, c, batch_size=20, callbacks=[Stop()]).train(), timeout=30)
    assert [s.iteration for s in sols] == [4, 4]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_is_raised_on_every_rank(digits64):
    def fn(c):
        s = solver(fcn(), digits64, c, batch_size=20, optim_config={"learning_rate": 1e30}, print_every=5)
        with pytest.raises(portnn.DivergenceError) as e:
            s.train()
        return e.value.iteration

    its = run(2, fn, timeout=30)
    assert its[0] == its[1]


def test_only_rank_0_prints(digits64, capsys):
    run(2, lambda c: solver(fcn(), {k: v[:200] for k, v in digits64.items()}, c, batch_size=20, num_epochs=1,
                            verbose=True).train())
    out = capsys.readouterr().out
    assert out.count("(Epoch 1 / 1)") == 1
