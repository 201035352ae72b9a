"""Backends: choosing one, moving data to it and back, and what mixing two does.

portnn keeps your data on the host as NumPy arrays; a Backend (an array library
plus a device) turns them into arrays of its own with ``asarray`` and back with
``to_numpy``. Layers work out the backend from their inputs, so CuPy arrays in
give CuPy arrays out. Mixing arrays of two backends (or two devices) in one
call is refused with a message that says how to fix it.

Run (from the repository root, after ``pip install -e .``):

    python examples/01_backends.py                        # numpy
    python examples/01_backends.py --backend torch        # pip install 'portnn[torch]'
    python examples/01_backends.py --backend array_api_strict:device1
    python examples/01_backends.py --backend cupy         # NVIDIA GPU, see 06_gpu_cupy.py

A backend that cannot be used here (not installed, no GPU) is reported with the
reason, and the script exits with status 1.

Expected output (numpy; the last lines depend on what is installed):

    available here: ['numpy', 'torch', 'array_api_strict']
    chosen backend: numpy on device cpu (namespace array_api_compat.numpy)
    on the backend: numpy.ndarray float32 shape (2, 3)
    relu on the backend gives: numpy.ndarray
    round trip host -> backend -> host, max |difference|: 0.0
    default backend inside use_backend('numpy'): numpy
    mistake 1, arrays of two backends in one layer call:
      TypeError: arrays of different backends in one call: ['array_api_strict._array_object.Array', 'numpy.ndarray']; move them to one backend with Backend.asarray / Backend.to_numpy
    mistake 2, numpy.asarray(<array_api_strict array>), instead of going through the host:
      TypeError: numpy.asarray: got an array of another backend (...); convert it to NumPy on the host first with that backend's to_numpy()
    mistake 3, host NumPy data straight into model.loss on array_api_strict:
      TypeError: X: expected an array of the 'array_api_strict' backend (...), got numpy.ndarray; move host data with backend.asarray(...) (the Solver does this for you)
    mistake 4, arrays of one library on two devices:
      ValueError: arrays on different devices in one call: array_api_strict.Device('CPU_DEVICE') and array_api_strict.Device('device1'); move them to one device first
    after moving w and b through the host, affine_forward gives: numpy.ndarray float32 shape (2, 2)
    mistakes caught: 4 of 4
"""

import argparse

import numpy as np

import portnn
from portnn.layers import affine_forward, relu_forward


def describe(a):
    """'numpy.ndarray float32 shape (2, 3)' for an array of any backend."""
    kind = f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"
    return f"{kind} {str(a.dtype).rsplit('.', 1)[-1]} shape {tuple(a.shape)}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numpy",
                   help="numpy | torch | array_api_strict | cupy, optionally name:device (default numpy)")
    args = p.parse_args(argv)

    available = portnn.available_backends()
    print("available here:", available)

    # 1. Choose a backend. An unknown or unusable one raises BackendError saying why.
    try:
        be = portnn.get_backend(args.backend)
    except portnn.BackendError as e:
        print(f"cannot use {args.backend!r}: {e}")
        return 1
    print(f"chosen backend: {be.name} on device {be.device} (namespace {be.xp.__name__})")

    # 2. Host data -> backend. asarray always copies, so the library never writes
    #    into your NumPy array.
    host = np.arange(-3, 3, dtype=np.float64).reshape(2, 3) / 4
    x = be.asarray(host, dtype="float32")
    print("on the backend:", describe(x))

    # 3. Any layer runs on it and returns arrays of the same backend and device.
    out, _cache = relu_forward(x)
    print("relu on the backend gives:", describe(out).split()[0])

    # 4. Backend -> host: an explicit copy (for CuPy, a device-to-host transfer).
    back = be.to_numpy(out)
    expected = np.maximum(host, 0).astype(np.float32)
    print("round trip host -> backend -> host, max |difference|:", float(np.max(np.abs(back - expected))))

    # 5. The default backend: set_backend / use_backend, or $PORTNN_BACKEND.
    #    Models created without backend= use it.
    with portnn.use_backend(args.backend):
        model = portnn.FullyConnectedNet([4], input_dim=3, num_classes=2, seed=0)
    print(f"default backend inside use_backend({args.backend!r}): {model.backend.name}")

    # 6. Mixing backends is an error, never a silent copy. Mix with another library,
    #    preferably not numpy: NumPy arrays ARE host data, which asarray accepts.
    others = [n for n in ("array_api_strict", "torch", "numpy") if n in available and n != be.name]
    if not others:
        print("only one backend is installed here: nothing to mix "
              "(pip install array-api-strict or 'portnn[torch]' to see the errors)")
        print("mistakes caught: 0 of 0")
        return 0
    other = portnn.get_backend(others[0])
    w = other.asarray(np.ones((3, 2)), dtype="float32")
    b = other.asarray(np.zeros(2), dtype="float32")
    mistakes = [("arrays of two backends in one layer call", lambda: affine_forward(x, w, b))]
    if other.name != "numpy":
        mistakes.append((f"{be.name}.asarray(<{other.name} array>), instead of going through the host",
                         lambda: be.asarray(w)))
    # Host NumPy data straight into a model's loss (only the Solver and predict() move
    # host data for you). On numpy that is no mistake, so show it on the other backend.
    target = model if be.name != "numpy" else portnn.FullyConnectedNet(
        [4], input_dim=3, num_classes=2, seed=0, backend=other)
    if target.backend.name != "numpy":
        mistakes.append((f"host NumPy data straight into model.loss on {target.backend.name}",
                         lambda: target.loss(np.ones((2, 3), np.float32))))
    # Same library, two devices (like cupy:0 and cupy:1, or torch cpu and cuda). The
    # strict backend has a fake second device to show it without a GPU.
    if "array_api_strict" in available:
        s0 = portnn.get_backend("array_api_strict")
        s1 = portnn.get_backend("array_api_strict:device1")
        mistakes.append(("arrays of one library on two devices",
                         lambda: affine_forward(s0.asarray(host, dtype="float32"),
                                                s1.asarray(np.ones((3, 2)), dtype="float32"),
                                                s1.asarray(np.zeros(2), dtype="float32"))))
    caught = 0
    for i, (what, call) in enumerate(mistakes, 1):
        print(f"mistake {i}, {what}:")
        try:
            call()
            print("  (no error)")
        except (TypeError, ValueError) as e:
            caught += 1
            print(f"  {type(e).__name__}: {e}")
    # The fix: to_numpy on the array's own backend, then asarray on the target one.
    w_here = be.asarray(other.to_numpy(w))
    b_here = be.asarray(other.to_numpy(b))
    print("after moving w and b through the host, affine_forward gives:",
          describe(affine_forward(x, w_here, b_here)[0]))
    print(f"mistakes caught: {caught} of {len(mistakes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
