"""Training the ThreeLayerConvNet on the bundled digits.

conv 3x3 (16 filters, padding keeps 8x8) - relu - 2x2 max pool - affine (100) - relu
- affine (10) - softmax, on the 8x8 digit images given as (N, 1, 8, 8). The Solver
prints one line per epoch; at the end the model predicts the test images with
``model.predict`` (scores computed in batches on the backend, labels back on the
host as NumPy). ``--plot curves.png`` also draws the loss, the accuracies and the
learned filters (needs ``pip install 'portnn[plot]'``).

Run:

    python examples/04_cnn_digits.py                    # numpy, 5 epochs, a few seconds
    python examples/04_cnn_digits.py --backend torch    # slower on CPU than numpy
    python examples/04_cnn_digits.py --quick            # 2 epochs on 300 images (smoke test)
    python examples/04_cnn_digits.py --plot cnn.png

Expected output (numpy, defaults; the last number on each epoch line is seconds):

    ThreeLayerConvNet on digits: X_train (1197, 1, 8, 8), backend numpy, float32
    params: W1 (16, 1, 3, 3), b1 (16,), W2 (256, 100), b2 (100,), W3 (100, 10), b3 (10,)
    (Epoch 0 / 5) train acc: 0.0835; val_acc: 0.0967; 0.2s
    (Epoch 1 / 5) loss: 1.7419; train acc: 0.8212; val_acc: 0.8067; 0.6s
    (Epoch 2 / 5) loss: 0.5150; train acc: 0.8688; val_acc: 0.8400; 0.9s
    (Epoch 3 / 5) loss: 0.2989; train acc: 0.9432; val_acc: 0.9100; 1.2s
    (Epoch 4 / 5) loss: 0.1832; train acc: 0.9632; val_acc: 0.9433; 1.4s
    (Epoch 5 / 5) loss: 0.1438; train acc: 0.9733; val_acc: 0.9533; 1.7s
    first 12 test labels:      [6, 3, 2, 3, 3, 9, 3, 7, 5, 4, 4, 8]
    first 12 test predictions: [6, 3, 2, 3, 3, 9, 3, 7, 5, 8, 4, 8]
    test acc 0.980 (best val acc 0.953, 5 epochs, 1.7s)
"""

import argparse
import time

import portnn
from portnn.data import load_digits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", help="numpy | torch | array_api_strict | cupy[:N]")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--quick", action="store_true", help="2 epochs on 300 training images (smoke test)")
    ap.add_argument("--num-filters", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", metavar="PNG", default=None, help="write training curves and filters here")
    args = ap.parse_args(argv)
    portnn.backends.enable_64bit(args.backend)  # a program may: JAX needs it for float64 / dropout
    if args.quick:
        args.epochs, args.num_train = 2, 300

    data = load_digits(dtype=args.dtype, flatten=False)   # images (N, 1, 8, 8) for a conv net
    if args.num_train is not None:
        data["X_train"], data["y_train"] = data["X_train"][:args.num_train], data["y_train"][:args.num_train]

    model = portnn.ThreeLayerConvNet(
        input_dim=(1, 8, 8), num_filters=args.num_filters, filter_size=3, hidden_dim=100,
        num_classes=10, weight_scale=0.05, reg=1e-4, dtype=args.dtype, seed=args.seed,
        backend=args.backend,
    )
    print(f"ThreeLayerConvNet on digits: X_train {data['X_train'].shape}, "
          f"backend {model.backend.name}, {args.dtype}")
    print("params:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in model.params.items()))

    solver = portnn.Solver(
        model, data, update_rule="adam", optim_config={"learning_rate": 5e-3}, lr_decay=0.95,
        batch_size=50, num_epochs=args.epochs, num_train_samples=None, seed=args.seed,
        print_every=10**9,  # epoch lines only
        verbose=True,
    )
    t0 = time.perf_counter()
    solver.train()  # afterwards the model holds the weights of the best validation epoch
    seconds = time.perf_counter() - t0

    pred = model.predict(data["X_test"], batch_size=100)  # NumPy int64 labels
    test_acc = float((pred == data["y_test"]).mean())
    print("first 12 test labels:     ", data["y_test"][:12].tolist())
    print("first 12 test predictions:", pred[:12].tolist())
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    print(f"test acc {test_acc:.3f} (best val acc {solver.best_val_acc:.3f}, {epochs}, {seconds:.1f}s)")

    if args.plot:
        from portnn.plot import plot_training

        try:
            plot_training(solver, args.plot)
            print(f"wrote {args.plot}")
        except ImportError as e:  # matplotlib is an optional extra
            print(f"no plot: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
