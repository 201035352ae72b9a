"""Functional layers: each ``*_forward`` returns ``(out, cache)`` and each
``*_backward(dout, cache)`` returns the gradients of the forward's array inputs.
They infer the backend from their arguments: pass CuPy arrays, get CuPy arrays."""

from .conv import conv_backward, conv_forward
from .dense import affine_backward, affine_forward, relu_backward, relu_forward
from .dropout import dropout_backward, dropout_forward
from .losses import softmax_loss, svm_loss
from .normalization import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from .pool import avg_pool_backward, avg_pool_forward, max_pool_backward, max_pool_forward

__all__ = [
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "softmax_loss", "svm_loss",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "layernorm_forward", "layernorm_backward",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "spatial_groupnorm_forward", "spatial_groupnorm_backward",
    "dropout_forward", "dropout_backward",
    "conv_forward", "conv_backward", "max_pool_forward", "max_pool_backward",
    "avg_pool_forward", "avg_pool_backward",
]
