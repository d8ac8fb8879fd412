"""Network factory: a workflow's ``network:`` section -> a MONAI ``nn.Module``."""

from __future__ import annotations

import torch
from monai.networks import nets

from medseg.config import WorkflowConfig


def build_network(config: WorkflowConfig) -> torch.nn.Module:
    """Instantiate the MONAI network named in ``config.network`` for the workflow's dims, channels and labels.

    Parameters
    ----------
    config : WorkflowConfig
        ``network.name`` is one of UNet, BasicUNet, SegResNet, DynUNet;
        ``network.params`` are passed to its constructor; ``spatial_dims``,
        ``in_channels`` and ``out_channels`` come from ``dims``,
        ``in_channels`` and the number of labels.

    Returns
    -------
    torch.nn.Module
        Maps ``(B, in_channels, *spatial)`` to ``(B, n_labels, *spatial)`` logits.
    """
    cls = getattr(nets, config.network.name)
    return cls(
        spatial_dims=config.dims,
        in_channels=config.in_channels,
        out_channels=config.n_labels,
        **config.network.params,
    )


def count_parameters(network: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
