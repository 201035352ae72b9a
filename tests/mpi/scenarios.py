"""Data-parallel scenarios run under ``mpiexec -n 2 python -m mpi4py scenarios.py NAME OUT``
by tests/test_distributed_mpi.py. Rank 0 writes what it measured to the JSON file OUT;
any failed check raises (and ``python -m mpi4py`` turns that into MPI_Abort)."""

import json
import os
import sys
import time

import numpy as np

import portnn
from portnn.data import load_digits
from portnn.distributed import MPICommunicator

comm = MPICommunicator()


def digits(n=None, dtype="float64"):
    d = load_digits(dtype=dtype)
    if n is not None:
        d = {k: v[:n] for k, v in d.items()}
    return d


def fcn(dtype="float64", **kw):
    return portnn.FullyConnectedNet([32, 16], input_dim=64, weight_scale=0.1, dtype=dtype, seed=3,
                                    backend="numpy", **kw)


def solver(model, data, c, **kw):
    kw.setdefault("update_rule", "sgd")
    kw.setdefault("optim_config", {"learning_rate": 1e-2})
    kw.setdefault("num_epochs", 2)
    return portnn.Solver(model, data, verbose=False, seed=7, comm=c, **kw)


def maxdiff(a, b):
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def scenario_grads():
    """(a) every rank's gradient = its rank -> after allreduce-mean, (size-1)/2 everywhere."""
    grads = {"W1": np.full((5, 3), float(comm.rank)), "b1": np.full(3, float(comm.rank), dtype=np.float32),
             "W0": np.full((2, 2), float(comm.rank))}
    out = comm.allreduce_mean(grads)
    want = (comm.size - 1) / 2
    for k, v in out.items():
        assert v.dtype == grads[k].dtype and v.shape == grads[k].shape, k
        assert np.all(v == want), (k, v)
    return {"mean": want, "size": comm.size}


def scenario_equivalence():
    """(b) 2 ranks x batch B/2 == 1 process x batch B (float64, no BN/dropout), SGD and Adam."""
    data = digits()
    result = {}
    for rule in ("sgd", "adam"):
        dist = solver(fcn(), data, comm, update_rule=rule, batch_size=20).train()
        ref = solver(fcn(), data, None, update_rule=rule, batch_size=40).train() if comm.is_root else None
        if comm.is_root:
            d = maxdiff(ref.model.params, dist.model.params)
            dl = float(np.max(np.abs(np.array(ref.loss_history) - np.array(dist.loss_history))))
            assert d < 1e-10, (rule, d)
            assert dl < 1e-10, (rule, dl)
            assert ref.val_acc_history == dist.val_acc_history
            assert dist.iteration == ref.iteration == 2 * (1197 // 40)
            result[rule] = {"max_abs_param_diff": d, "max_abs_loss_diff": dl, "steps": dist.iteration}
    return result


def scenario_identical():
    """(c) params (and BN statistics) bit-identical on all ranks after N steps, with dropout + BN."""
    data = digits(400, "float32")
    s = solver(fcn("float32", normalization="batchnorm", dropout_keep_ratio=0.8), data, comm,
               update_rule="adam", batch_size=16, num_epochs=2).train()
    host = {k: np.asarray(v) for k, v in s.model.state_dict().items()}
    every = comm.allgather_obj({k: v.tobytes() for k, v in host.items()})
    assert all(e == every[0] for e in every), "params differ between ranks"
    return {"steps": s.iteration, "arrays": len(host)}


def scenario_uneven():
    """(d) 101 samples, 10 per rank (20 per step) and 7 samples < one global batch: no deadlock."""
    out = {}
    for n, bs in ((101, 10), (7, 5)):
        d = digits()
        data = {"X_train": d["X_train"][:n], "y_train": d["y_train"][:n], "X_val": d["X_val"][:9],
                "y_val": d["y_val"][:9]}
        s = solver(fcn(), data, comm, batch_size=bs, num_epochs=3).train()
        its = comm.allgather_obj(s.iteration)
        assert len(set(its)) == 1, its
        out[f"n={n},bs={bs}"] = its[0]
    return out


def scenario_abort():
    """(f) rank 1 raises inside training; rank 0 must be ended by MPI_Abort, not hang."""

    class Boom:
        def on_iteration(self, s):
            if comm.rank == 1 and s.iteration == 3:
                raise RuntimeError("boom on rank 1")

    solver(fcn(), digits(), comm, batch_size=20, num_epochs=50, callbacks=[Boom()]).train()
    return {"error": "not reached"}


def scenario_resume():
    """(e) resume under MPI == an uninterrupted MPI run; only rank 0 writes checkpoints."""
    tmp = os.environ["PORTNN_TEST_TMP"]

    def make(epochs, prefix=None):
        m = fcn("float64", normalization="batchnorm", dropout_keep_ratio=0.8)
        return solver(m, digits(300), comm, update_rule="adam", optim_config={"learning_rate": 3e-3},
                      lr_decay=0.9, batch_size=16, num_epochs=epochs, checkpoint_name=prefix)

    full = make(4).train()
    make(2, os.path.join(tmp, "ck")).train()
    written = sorted(p for p in os.listdir(tmp) if p.endswith(".npz"))
    assert written == ["ck_epoch_1.npz", "ck_epoch_2.npz"], written
    resumed = portnn.load(os.path.join(tmp, "ck_epoch_2.npz"), data=digits(300), comm=comm, num_epochs=4, verbose=False)
    resumed.train()
    assert resumed.loss_history == full.loss_history
    assert resumed.val_acc_history == full.val_acc_history
    d = maxdiff({k: np.asarray(v) for k, v in full.model.state_dict().items()},
                {k: np.asarray(v) for k, v in resumed.model.state_dict().items()})
    assert d == 0.0, d
    return {"max_abs_diff": d, "steps": resumed.iteration}


if __name__ == "__main__":
    name, out = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    result = globals()[f"scenario_{name}"]()
    comm.barrier()
    if comm.is_root:
        result["seconds"] = time.perf_counter() - t0
        with open(out, "w") as f:
            json.dump(result, f)
