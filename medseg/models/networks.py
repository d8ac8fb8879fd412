"""Network factory: a workflow's ``network:`` section -> a MONAI ``nn.Module``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from monai.networks import nets

from medseg.errors import ConfigError

if TYPE_CHECKING:  # the config validates itself by building its network here, so only the type is imported
    from medseg.config import WorkflowConfig


def build_network(config: WorkflowConfig, *, device: str | torch.device | None = None) -> torch.nn.Module:
    """Instantiate the MONAI network named in ``config.network`` for the workflow's dims, channels and labels.

    Parameters
    ----------
    config : WorkflowConfig
        ``network.name`` is one of UNet, BasicUNet, SegResNet, DynUNet;
        ``network.params`` are passed to its constructor; ``spatial_dims``,
        ``in_channels`` and ``out_channels`` come from ``dims``,
        ``in_channels`` and the number of labels.
    device : str or torch.device, optional
        Where the parameters are created; ``"meta"`` allocates nothing (a
        cheap check that the parameters build). Default: torch's default device.

    Returns
    -------
    torch.nn.Module
        Maps ``(B, in_channels, *spatial)`` to ``(B, n_labels, *spatial)`` logits.

    Raises
    ------
    medseg.errors.ConfigError
        When MONAI rejects ``network.params`` (the message gives MONAI's reason).
    """
    name = config.network.name
    args = {"spatial_dims": config.dims, "in_channels": config.in_channels, "out_channels": config.n_labels}
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return getattr(nets, name)(**args, **config.network.params)
    except Exception as exc:  # MONAI constructors raise ValueError, TypeError, AssertionError, IndexError ...
        derived = ", ".join(f"{k}={v}" for k, v in args.items())
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"network.params rejected by monai {name} ({derived}): {reason}") from exc


def size_divisor(config: WorkflowConfig) -> list[int]:
    """Per spatial axis, the number every input size must be a multiple of: the network's total downsampling."""
    params, dims = config.network.params, config.dims
    name = config.network.name
    if name in ("UNet", "DynUNet"):
        strides = params.get("strides") or []
        total = [1] * dims
        for stride in strides:
            per_axis = list(stride) if isinstance(stride, list | tuple) else [stride] * dims
            total = [t * int(s) for t, s in zip(total, per_axis, strict=True)]
        return total
    if name == "BasicUNet":
        return [16] * dims  # four poolings
    return [2 ** (len(params.get("blocks_down", (1, 2, 2, 4))) - 1)] * dims  # SegResNet


def count_parameters(network: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
