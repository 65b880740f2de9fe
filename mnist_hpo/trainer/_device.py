"""Where training runs, and the per-device choices that go with it (bf16 on CUDA, channels_last)."""

from __future__ import annotations

import contextlib

import torch

from mnist_hpo.errors import UserError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is the user's error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return resolved


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 on CUDA; fp32 on the CPU, where bf16 is slower on most machines."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def memory_format(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
