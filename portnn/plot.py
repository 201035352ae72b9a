"""Training figures written to PNG with matplotlib (optional extra: ``pip install 'portnn[plot]'``).

- ``plot_history(solver, path)``: loss per iteration (with a moving average) and
  train / validation accuracy per epoch.
- ``plot_first_layer(model, path)``: the first layer's weights as a grid of small
  images (dense first layers: columns of W1 (Sequential: 0.W) reshaped to the input
  image; conv nets: the filters).
- ``plot_training(solver, path)``: both in one figure (what ``portnn train --plot`` writes).
"""

from __future__ import annotations

import math

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("portnn.plot needs matplotlib: pip install 'portnn[plot]'") from e
    matplotlib.use("Agg", force=False)  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _moving_average(values, window):
    v = np.asarray(values, dtype=np.float64)
    if v.size < window or window <= 1:
        return np.arange(v.size), v
    kernel = np.ones(window) / window
    return np.arange(window - 1, v.size), np.convolve(v, kernel, mode="valid")


def _draw_loss(ax, solver):
    loss = solver.loss_history
    ax.plot(np.arange(len(loss)), loss, ".", markersize=2, alpha=0.35, color="tab:blue", label="per iteration")
    if loss:
        x, avg = _moving_average(loss, max(1, solver.iterations_per_epoch))
        ax.plot(x, avg, "-", color="tab:blue", linewidth=1.5, label="moving average (1 epoch)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    if loss and min(loss) > 0:
        ax.set_yscale("log")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)


def _draw_accuracy(ax, solver):
    epochs = np.arange(len(solver.train_acc_history))
    ax.plot(epochs, solver.train_acc_history, "o-", label="train")
    ax.plot(epochs, solver.val_acc_history, "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy (best validation {solver.best_val_acc:.3f})")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)


def first_layer_name(model):
    """The first weight the model's input meets (W1; "0.W" in a Sequential)."""
    return model._weight_names()[0]


def first_layer_images(model):
    """The first layer's weights as a stack of images (K, H, W) or (K, H, W, 3) on the
    host, each scaled to [0, 1]."""
    w = model.backend.to_numpy(model.params[first_layer_name(model)]).astype(np.float64)
    if w.ndim == 4:  # conv filters (F, C, HH, WW)
        imgs = np.transpose(w, (0, 2, 3, 1))
    else:  # affine (D, H1): one image per hidden unit, shaped like the input
        image = tuple(model.input_shape) if len(model.input_shape) == 3 else None
        shape = getattr(model, "image_shape", None) or image or _guess_image_shape(w.shape[0])
        imgs = np.transpose(w).reshape((w.shape[1],) + shape)
        if len(shape) == 3:
            imgs = np.transpose(imgs, (0, 2, 3, 1))
    if imgs.ndim == 4 and imgs.shape[-1] == 1:
        imgs = imgs[..., 0]
    if imgs.ndim == 4 and imgs.shape[-1] != 3:
        imgs = imgs[..., 0]  # more than RGB channels: show the first
    lo = imgs.reshape(imgs.shape[0], -1).min(axis=1)
    hi = imgs.reshape(imgs.shape[0], -1).max(axis=1)
    scale = np.where(hi > lo, hi - lo, 1.0)
    extra = (1,) * (imgs.ndim - 1)
    return (imgs - lo.reshape((-1,) + extra)) / scale.reshape((-1,) + extra)


def _guess_image_shape(d):
    if d == 3 * 32 * 32:
        return (3, 32, 32)
    side = int(round(math.sqrt(d)))
    if side * side == d:
        return (side, side)
    return (1, d)


def _draw_grid(fig, spec, imgs, title, max_images=64):
    imgs = imgs[:max_images]
    n = imgs.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    sub = spec.subgridspec(rows, cols, wspace=0.05, hspace=0.05)
    for i in range(rows * cols):
        ax = fig.add_subplot(sub[i // cols, i % cols])
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            ax.imshow(imgs[i], cmap=None if imgs.ndim == 4 else "gray", interpolation="nearest")
        else:
            ax.axis("off")
        if i == 0:
            ax.set_title(title, loc="left", fontsize=10)


def _save(plt, fig, path):
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(solver, path):
    """Loss and accuracy curves of a trained Solver -> PNG at ``path``."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    _draw_loss(a, solver)
    _draw_accuracy(b, solver)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_first_layer(model, path, max_images=64):
    """Grid of first-layer weights (W1) -> PNG at ``path``."""
    plt = _pyplot()
    fig = plt.figure(figsize=(6, 6))
    spec = fig.add_gridspec(1, 1)[0]
    _draw_grid(fig, spec, first_layer_images(model), f"First-layer weights ({first_layer_name(model)}, {type(model).__name__})",
               max_images)
    return _save(plt, fig, path)


def plot_training(solver, path, max_images=36):
    """Loss, accuracy and first-layer weights in one figure -> PNG at ``path``."""
    plt = _pyplot()
    fig = plt.figure(figsize=(15, 4.6))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.2, 1.0, 0.8])
    _draw_loss(fig.add_subplot(gs[0]), solver)
    _draw_accuracy(fig.add_subplot(gs[1]), solver)
    _draw_grid(fig, gs[2], first_layer_images(solver.model), f"First-layer weights ({first_layer_name(solver.model)})", max_images)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    return _save(plt, fig, path)
