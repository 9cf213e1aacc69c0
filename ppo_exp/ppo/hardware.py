"""Where the models run and in which precision: `model.device` and `model.dtype`.

Precision policy (mixed precision, as torch.amp does it):
- weights that train (full fine-tuning, LoRA adapters, value heads) stay float32, so AdamW's
  moments and the small updates they make are not rounded away;
- frozen weights (the reference copy, a LoRA base, the reward model) are stored in
  `model.dtype`, which halves their memory in bf16/fp16;
- forward passes run under `torch.autocast(dtype)` when `model.dtype` is not float32, so
  matmuls use the fast low-precision kernels whatever the weights are stored in.
With `model.dtype=float32` nothing is autocast and the computation is exactly the plain one.
"""

from __future__ import annotations

import contextlib

import torch

from ppo_exp.config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str, *, cuda_available: bool | None = None) -> torch.device:
    """`model.device` -> a torch device; "auto" is CUDA when available, else the CPU.

    Args:
        name: "auto", "cpu", "cuda" or "cuda:N".
        cuda_available: override of `torch.cuda.is_available()` (for tests).

    Raises:
        ConfigError: unknown name, or CUDA requested where there is none.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name == "auto":
        return torch.device("cuda" if cuda else "cpu")
    accepted = "auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError("model.device", name, accepted) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("model.device", name, accepted)
    if device.type == "cuda":
        if not cuda:
            raise ConfigError("model.device", name, "auto or cpu: CUDA is not available here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                "model.device", name, f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return device


def dtype_runs(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `device` runs what a transformer needs in `dtype`: a matmul and a softmax."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_bf16_supported()
    try:
        x = torch.ones(2, 4, dtype=dtype, device=device)
        torch.nn.functional.linear(x, x).log_softmax(-1).sum().item()
    except (RuntimeError, NotImplementedError):
        return False
    return True


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`model.dtype` -> the compute dtype; "auto" is bf16 on a GPU that has it, else float32.

    Raises:
        ConfigError: unknown name, or a dtype this device cannot run.
    """
    if name == "auto":
        if device.type == "cuda" and dtype_runs(torch.bfloat16, device):
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ConfigError("model.dtype", name, "auto, " + ", ".join(DTYPES))
    dtype = DTYPES[name]
    if not dtype_runs(dtype, device):
        supported = [n for n, d in DTYPES.items() if dtype_runs(d, device)]
        raise ConfigError(
            "model.dtype", name, f"auto or one this {device.type} runs: {', '.join(supported)}"
        )
    return dtype


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The forward-pass context: autocast to `dtype`, or nothing at all for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
