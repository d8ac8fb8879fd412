"""The network ``plans.json`` describes, built from ``dynamic-network-architectures`` and filled with checked weights.

Only the U-Net modules of ``dynamic_network_architectures.architectures.unet``
are imported (``PlainConvUNet``, ``ResidualEncoderUNet``); the class names in
``arch_kwargs`` that nnU-Net resolves with ``pydoc.locate`` (``conv_op``,
``norm_op``, ``dropout_op``, ``nonlin``) are looked up in an allowlist of
``torch.nn`` layers, never imported by name. Weights that do not fit the
network (a trainer that built its own architecture) are a
:class:`~medseg.errors.ModelError` naming the checkpoint and the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import ModelError
from medseg.models.nnunet.plans import Configuration

ARCHITECTURES = ("PlainConvUNet", "ResidualEncoderUNet")
_TORCH_LAYERS = {
    "Conv1d", "Conv2d", "Conv3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "GroupNorm", "LayerNorm", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "LeakyReLU", "ReLU",
    "PReLU", "ELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid", "Identity",
}  # fmt: skip
_TORCH_PREFIXES = ("torch.nn.", "torch.nn.modules.")


def _torch_layer(spec: Any, key: str, where: Path) -> type[nn.Module] | None:
    if spec is None:
        return None
    text = str(spec)
    name = text.rsplit(".", 1)[-1]
    if not text.startswith(_TORCH_PREFIXES) or name not in _TORCH_LAYERS:
        raise ModelError(f"arch_kwargs {key!r}: {text!r} is not a torch.nn layer medseg builds "
                         f"({', '.join(sorted(_TORCH_LAYERS))})", where)
    return getattr(nn, name)


def architecture_class(config: Configuration) -> type[nn.Module]:
    """The U-Net class named by ``architecture.network_class_name`` (its last dotted part)."""
    arch = config.architecture
    full = str(arch["network_class_name"])
    name = full.rsplit(".", 1)[-1]
    if name not in ARCHITECTURES:
        raise ModelError(f"configuration {config.name!r}: unknown architecture {full!r} (medseg builds "
                         f"{' and '.join(ARCHITECTURES)} from dynamic-network-architectures)", config.path)
    try:
        from dynamic_network_architectures.architectures import unet
    except ImportError as exc:  # a broken install, not user input
        raise ModelError(f"dynamic-network-architectures is not importable ({exc})") from exc
    return getattr(unet, name)


def build_network(config: Configuration, in_channels: int, num_classes: int, *, device: str = "meta") -> nn.Module:
    """The network of ``config`` without deep supervision, its parameters on ``device`` (``meta``: no memory)."""
    arch = config.architecture
    cls = architecture_class(config)
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", ()) or ():
        if key in kwargs:
            kwargs[key] = _torch_layer(kwargs[key], key, config.path)
    kwargs["deep_supervision"] = False
    try:
        with torch.device(device):
            return cls(input_channels=in_channels, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"configuration {config.name!r}: arch_kwargs do not build a {cls.__name__} "
                         f"({type(exc).__name__}: {detail})", config.path) from exc


def load_weights(network: nn.Module, state: dict[str, torch.Tensor], path: Path, trainer: str) -> nn.Module:
    """``network`` with ``state`` assigned (strictly); a mismatch names the checkpoint, the trainer and the keys."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if keys:
                detail.append(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise ModelError(
            f"the weights do not fit the network plans.json describes (trainer {trainer or '?'} may build its own "
            f"architecture, which medseg does not reproduce): {'; '.join(detail)}",
            path,
        )
    state = {k: v.to(own[k].dtype) if v.dtype != own[k].dtype and v.is_floating_point() else v
             for k, v in state.items()}  # fmt: skip
    network.load_state_dict(state, strict=True, assign=True)
    for name, buf in network.named_buffers():
        if buf.is_meta:
            raise ModelError(f"the network has a buffer {name} that the checkpoint does not fill", path)
    return network.eval()
