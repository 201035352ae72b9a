"""Saving a model and loading it on another backend; resuming a Solver checkpoint exactly.

1. Train a FullyConnectedNet (batchnorm + dropout) briefly, ``portnn.save`` it,
   and ``portnn.load`` it on every backend available here. A file holds host
   NumPy arrays (an .npz read with pickle off, plus a JSON manifest), so where it
   was saved does not matter. The loaded models' test predictions are compared
   with the original's.
2. Train a Solver for ``--epochs`` epochs with ``checkpoint_name=...`` (a
   checkpoint after every epoch), then load the checkpoint written halfway and
   train it to the end: the resumed run's loss history and final weights equal
   the uninterrupted run's bit for bit (params, batchnorm statistics, Adam state,
   learning rate, epoch counter, dropout and minibatch RNG positions are all in
   the checkpoint).

Run:

    python examples/07_save_load_resume.py                  # files in a temporary folder
    python examples/07_save_load_resume.py --backend torch
    python examples/07_save_load_resume.py --out runs/      # keep the files

Expected output (numpy; one "loaded on" line per backend installed here):

    saved /tmp/tmpqkb6y6lw/model.npz (+ .json): FullyConnectedNet, 10 params, 4 buffers, trained on numpy
    loaded on numpy           : 300/300 test predictions equal the original's, max |score diff| 0.0e+00
    loaded on torch           : 300/300 test predictions equal the original's, max |score diff| 1.2e-06
    loaded on array_api_strict: 300/300 test predictions equal the original's, max |score diff| 0.0e+00
    uninterrupted run: 4 epochs, 92 iterations; checkpoints fcn_epoch_1.npz ... fcn_epoch_4.npz
    resumed from fcn_epoch_2.npz (epoch 2, iteration 46) and trained to epoch 4
    resumed == uninterrupted: loss history identical (92 values): True; params max |diff| 0.0e+00

(float32 sums run in a different order on torch, hence scores within ~1e-6 and the
same predictions.) The exit status is 1 if the resumed run differs.
"""

import argparse
import os
import tempfile

import numpy as np

import portnn
from portnn.data import load_digits


def make_model(backend, seed):
    return portnn.FullyConnectedNet([64, 64], input_dim=64, normalization="batchnorm",
                                    dropout_keep_ratio=0.9, weight_scale=0.1, reg=1e-4,
                                    seed=seed, backend=backend)


def solver_kwargs(epochs, seed, checkpoint_name):
    return dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, lr_decay=0.9,
                batch_size=50, num_epochs=epochs, seed=seed, checkpoint_name=checkpoint_name,
                verbose=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the checkpointed run (>= 2)")
    ap.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--out", default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the run is resumed halfway)")

    data = load_digits()
    if args.num_train:
        data["X_train"], data["y_train"] = data["X_train"][:args.num_train], data["y_train"][:args.num_train]
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory()
        out = tmp.name
    else:
        out = args.out
        os.makedirs(out, exist_ok=True)

    # ---- 1. a model saved on one backend, loaded on every other one
    model = make_model(args.backend, args.seed)
    portnn.Solver(model, data, **solver_kwargs(2, args.seed, None)).train()
    path = os.path.join(out, "model.npz")
    portnn.save(model, path)  # model.npz + model.npz.json, written atomically
    print(f"saved {path} (+ .json): {type(model).__name__}, {len(model.params)} params, "
          f"{len(model.buffers())} buffers, trained on {model.backend.name}")
    be = model.backend
    ref_scores = be.to_numpy(model.loss(be.asarray(data["X_test"], dtype=model.dtype)))
    ref_labels = model.predict(data["X_test"])
    for name in portnn.available_backends():
        loaded = portnn.load(path, backend=name)   # the same architecture, rebuilt from the manifest
        scores = loaded.backend.to_numpy(loaded.loss(loaded.backend.asarray(data["X_test"], dtype=loaded.dtype)))
        same = int((loaded.predict(data["X_test"]) == ref_labels).sum())
        print(f"loaded on {name:<16}: {same}/{len(ref_labels)} test predictions equal the original's, "
              f"max |score diff| {float(np.max(np.abs(scores - ref_scores))):.1e}")

    # ---- 2. an exact resume from a Solver checkpoint
    prefix = os.path.join(out, "fcn")
    full = portnn.Solver(make_model(args.backend, args.seed), data,
                         **solver_kwargs(args.epochs, args.seed, prefix))
    full.train()  # writes fcn_epoch_1.npz ... fcn_epoch_E.npz (+ .json)
    print(f"uninterrupted run: {full.epoch} epochs, {full.iteration} iterations; "
          f"checkpoints fcn_epoch_1.npz ... fcn_epoch_{full.epoch}.npz")

    # As if the process had died after epoch `half`: load that checkpoint and go on.
    # data must be the same arrays; keyword arguments override saved settings
    # (verbose is not saved: it defaults to True, so say False here).
    half = args.epochs // 2
    resumed = portnn.load(f"{prefix}_epoch_{half}.npz", backend=args.backend, data=data,
                          checkpoint_name=None, verbose=False)
    print(f"resumed from fcn_epoch_{half}.npz (epoch {resumed.epoch}, iteration {resumed.iteration}) "
          f"and trained to epoch {resumed.num_epochs}")
    resumed.train()

    same_history = resumed.loss_history == full.loss_history
    fb, rb = full.model.backend, resumed.model.backend
    diff = max(float(np.max(np.abs(fb.to_numpy(full.model.params[k]) - rb.to_numpy(resumed.model.params[k]))))
               for k in full.model.params)
    print(f"resumed == uninterrupted: loss history identical ({len(full.loss_history)} values): "
          f"{same_history}; params max |diff| {diff:.1e}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if same_history and diff == 0.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
