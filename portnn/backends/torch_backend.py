"""PyTorch tensors (CPU or CUDA) through array-api-compat."""

from ._base import Backend, BackendError

NAME = "torch"


def make(device=None) -> Backend:
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError as e:
        raise BackendError("torch: not installed (pip install 'portnn[torch]')") from e
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("torch: device 'cuda' requested but no CUDA device is visible")

    def host_copy(x):
        return x.detach().cpu().numpy()

    return Backend(NAME, xp, dev, host_copy, lambda x: isinstance(x, torch.Tensor))
