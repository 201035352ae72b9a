"""The same training script on an NVIDIA GPU with CuPy, and what happens without one.

Nothing in a portnn script changes for the GPU except the backend name:
``backend="cupy"`` (first GPU) or ``"cupy:1"`` (second GPU). The model's
parameters and the optimizer state live on the GPU; the Solver copies each
minibatch from the host, and reads the losses back once per report. PyTorch
tensors on the GPU work the same way with ``--backend torch:cuda``.

What to install (pick the CuPy wheel that matches the CUDA major version of your
driver, shown top right by ``nvidia-smi``):

    pip install 'portnn[cuda12]'     # CuPy for CUDA 12.x
    pip install 'portnn[cuda13]'     # CuPy for CUDA 13.x

Which GPU: ``--gpu N`` (the script then asks for "cupy:N"), or restrict what the
process sees with ``CUDA_VISIBLE_DEVICES=1 python examples/06_gpu_cupy.py``
(that GPU is then number 0).

Without a usable GPU, asking for cupy raises ``portnn.BackendError`` saying why
(CuPy not installed, no driver, no device visible, device index out of range).
This script prints that message and the backends that do work here, then trains
on numpy instead with a note (exit status 0); ``--no-fallback`` makes it stop
with status 1 instead.

Run:

    python examples/06_gpu_cupy.py                 # cupy on GPU 0, numpy if there is none
    python examples/06_gpu_cupy.py --gpu 1
    python examples/06_gpu_cupy.py --backend torch:cuda
    python examples/06_gpu_cupy.py --backend numpy --epochs 3

Expected output on a machine without a GPU (or without CuPy):

    asked for backend 'cupy'
    BackendError: cupy: not installed or not importable (ModuleNotFoundError: No module named 'cupy'); pip install 'portnn[cuda12]' or 'portnn[cuda13]'. Available here: ['numpy', 'torch', 'array_api_strict']
    available backends here: ['numpy', 'torch', 'array_api_strict']
    NOTE: no GPU backend, falling back to numpy on the CPU; the numbers below are CPU numbers.
    training on numpy (cpu), float32: FullyConnectedNet [100, 100] with batchnorm on digits
    (Epoch 0 / 5) train acc: 0.1462; val_acc: 0.1500; 0.3s
    (Epoch 1 / 5) loss: 0.8019; train acc: 0.9632; val_acc: 0.9233; 0.6s
    (Epoch 2 / 5) loss: 0.1537; train acc: 0.9916; val_acc: 0.9633; 0.8s
    (Epoch 3 / 5) loss: 0.0773; train acc: 0.9983; val_acc: 0.9833; 1.3s
    (Epoch 4 / 5) loss: 0.0504; train acc: 0.9992; val_acc: 0.9767; 1.9s
    (Epoch 5 / 5) loss: 0.0440; train acc: 1.0000; val_acc: 0.9767; 2.0s
    test acc 0.983 (best val acc 0.983, 5 epochs, 2.0s, backend numpy)

With CuPy installed but no usable driver the BackendError reads, for example,
``cupy: no GPU visible (CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver
version is insufficient for CUDA runtime version)``. With a GPU the second line says
which device is used: ``using cupy on GPU 0: <device name> (<free> GiB free of <total>)``,
and the last line ends with ``backend cupy)``.
"""

import argparse
import time

import portnn
from portnn.data import load_digits


def describe_gpu(be):
    """One line about the device of a GPU backend (imports cupy / torch only here)."""
    try:
        return _describe_gpu(be)
    except Exception:  # the description is cosmetic: never let it stop the example
        return f"using {be.name} on {be.device}"


def _describe_gpu(be):
    if be.name == "cupy":
        import cupy

        index = be.device.id
        props = cupy.cuda.runtime.getDeviceProperties(index)
        with be.device:
            free, total = cupy.cuda.runtime.memGetInfo()
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"using cupy on GPU {index}: {name} ({free / 2**30:.1f} GiB free of {total / 2**30:.1f})"
    if be.name == "torch" and getattr(be.device, "type", "cpu") == "cuda":
        import torch

        return f"using torch on {be.device}: {torch.cuda.get_device_name(be.device)}"
    return f"using {be.name} on {be.device}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cupy",
                    help="default cupy (this example is about the GPU); also cupy:N, torch:cuda, numpy ...")
    ap.add_argument("--gpu", type=int, default=None, help="GPU index: --gpu 1 means --backend cupy:1")
    ap.add_argument("--no-fallback", action="store_true", help="exit with status 1 instead of using numpy")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    name = args.backend
    if args.gpu is not None:
        name = f"{name.split(':')[0]}:{args.gpu}"
    print(f"asked for backend {name!r}")
    try:
        backend = portnn.get_backend(name)
        print(describe_gpu(backend))
    except portnn.BackendError as e:
        print(f"BackendError: {e}")
        print("available backends here:", portnn.available_backends())
        if args.no_fallback:
            return 1
        print("NOTE: no GPU backend, falling back to numpy on the CPU; the numbers below are CPU numbers.")
        backend = portnn.get_backend("numpy")

    # From here on the script is the same on every backend.
    data = load_digits(dtype=args.dtype)
    model = portnn.FullyConnectedNet([100, 100], input_dim=64, normalization="batchnorm",
                                     weight_scale=0.1, reg=1e-4, dtype=args.dtype, seed=args.seed,
                                     backend=backend)
    print(f"training on {backend.name} ({backend.device}), {args.dtype}: "
          f"FullyConnectedNet [100, 100] with batchnorm on digits")
    solver = portnn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 5e-3},
                           lr_decay=0.95, batch_size=50, num_epochs=args.epochs, num_train_samples=None,
                           seed=args.seed, print_every=10**9, verbose=True)
    t0 = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - t0  # includes the GPU's one-off kernel compilation on first use
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    print(f"test acc {test_acc:.3f} (best val acc {solver.best_val_acc:.3f}, {args.epochs} epoch{'s' * (args.epochs != 1)}, "
          f"{seconds:.1f}s, backend {backend.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
