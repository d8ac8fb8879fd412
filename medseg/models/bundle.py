"""MONAI bundle import: a bundle directory becomes a medseg model card + network, without running its code.

A MONAI bundle (``configs/inference.json`` or ``.yaml``, ``configs/metadata.json``,
``models/model.pt``) describes its network and preprocessing as config entries
that MONAI would instantiate and ``eval``. medseg reads them as *data* instead:
the ``network_def`` (one of UNet, BasicUNet, SegResNet, DynUNet with literal
parameters), the preprocessing steps it knows how to reproduce (orientation,
spacing, intensity window or percentiles), the sliding-window inferer's ROI and
overlap, and the label names from ``metadata.json``. Anything it cannot
translate faithfully is refused with a :class:`~medseg.errors.ModelError`
rather than approximated. The weights load with ``weights_only=True``.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from medseg._files import read_json, read_yaml
from medseg.config import NETWORKS, format_validation_error
from medseg.errors import ModelError
from medseg.models.networks import build_network
from medseg.models.store import ModelCard, load_state_dict, load_weights_into, sha256_file

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
_WEIGHTS_NAMES = ("model.pt", "model.pth", "model.safetensors")
# preprocessing steps that only load the file, add the channel axis or change the container type
_NEUTRAL_STEPS = {
    "LoadImage",
    "LoadImaged",
    "EnsureChannelFirst",
    "EnsureChannelFirstd",
    "AddChanneld",
    "EnsureType",
    "EnsureTyped",
    "ToTensord",
    "ToTensor",
}


def is_bundle(folder: Path) -> bool:
    """True when ``folder`` looks like a MONAI bundle (has ``configs/inference.json|yaml``)."""
    return any((folder / "configs" / n).is_file() for n in _CONFIG_NAMES)


def _target_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1]


def _resolve(value: Any, raw: dict[str, Any], where: str, path: Path, seen: frozenset[str] = frozenset()) -> Any:
    """Replace ``@key`` references by the referenced raw value; refuse ``$`` expressions (code)."""
    if isinstance(value, str) and value.startswith("@"):
        if value in seen:
            raise ModelError(f"{where}: circular reference {value!r}", path)
        node: Any = raw
        for part in re.split(r"::|#", value[1:]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ModelError(f"{where}: unresolvable reference {value!r}", path)
        return _resolve(node, raw, where, path, seen | {value})
    if isinstance(value, str) and value.startswith("$"):
        raise ModelError(
            f"{where}: Python expression {value!r} is not imported (medseg never evaluates bundle code)", path
        )
    if isinstance(value, dict):
        return {k: _resolve(v, raw, f"{where}.{k}", path, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, raw, where, path, seen) for v in value]
    return value


def _entry(node: dict[str, Any], key: str, where: str, path: Path) -> Any:
    """``node[key]``; a :class:`ModelError` naming ``where`` when the bundle leaves it out."""
    if key not in node:
        raise ModelError(f"{where} has no {key!r} entry", path)
    return node[key]


def _number(value: Any, where: str, path: Path, cast: type[int | float] = float) -> Any:
    """``value`` as ``cast``; a :class:`ModelError` naming ``where`` when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{where} must be a number, got {reprlib.repr(value)}", path)
    return cast(value)


def _numbers(value: Any, where: str, path: Path, cast: type[int | float] = float) -> list[Any]:
    """``value``, a non-empty list of numbers, as a list of ``cast``."""
    if not isinstance(value, list) or not value:
        raise ModelError(f"{where} must be a list of numbers, got {reprlib.repr(value)}", path)
    return [_number(v, where, path, cast) for v in value]


def _read_config(folder: Path) -> tuple[dict[str, Any], Path]:
    for name in _CONFIG_NAMES:
        path = folder / "configs" / name
        if path.is_file():
            read = read_json if name.endswith(".json") else read_yaml
            return read(path, "bundle config", expect=dict, error=ModelError), path
    raise ModelError("not a MONAI bundle: configs/inference.json is missing", folder)


def _labels(folder: Path, n_out: int) -> dict[str, int]:
    names = {i: f"label_{i}" for i in range(n_out)}
    meta_path = folder / "configs" / "metadata.json"
    if meta_path.is_file():
        meta = read_json(meta_path, "bundle metadata", error=ModelError)
        try:
            channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
            names.update({int(k): re.sub(r"\W+", "_", str(v).strip()).lower() for k, v in channel_def.items()})
        except (AttributeError, KeyError, TypeError, ValueError):
            pass  # label names are optional; generic names are used
    names[0] = "background"
    return {names[i]: i for i in range(n_out)}


def _preprocessing(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Workflow fields (orientation, spacing_mm, intensity) reproduced from the bundle's preprocessing list."""
    pre = raw.get("preprocessing")
    if pre is None:
        raise ModelError("the bundle has no 'preprocessing' entry", path)
    pre = _resolve(pre, raw, "preprocessing", path)
    steps = pre.get("transforms", []) if isinstance(pre, dict) else pre
    if not isinstance(steps, list):
        raise ModelError(f"preprocessing must be a list of transforms, got {reprlib.repr(steps)}", path)
    fields: dict[str, Any] = {}
    for i, step in enumerate(steps):
        name = _target_name(step.get("_target_", "")) if isinstance(step, dict) else repr(step)
        where = f"preprocessing[{i}] {name}"
        if name in _NEUTRAL_STEPS:
            continue
        if name in ("Orientationd", "Orientation"):
            fields["orientation"] = _entry(step, "axcodes", where, path)
        elif name in ("Spacingd", "Spacing"):
            fields["spacing_mm"] = _numbers(_entry(step, "pixdim", where, path), f"{where} pixdim", path)
            fields["resample"] = "spacing"  # MONAI's exact-pixdim grid, as the bundle was trained
        elif name in ("ScaleIntensityRanged", "ScaleIntensityRange") and (
            step.get("b_min", 0),
            step.get("b_max", 1),
        ) == (0, 1):
            if not step.get("clip", False):
                raise ModelError(f"{where} without clip is not reproduced by medseg's CT preset", path)
            window = [_number(_entry(step, k, where, path), f"{where} {k}", path) for k in ("a_min", "a_max")]
            fields["intensity"] = {"preset": "ct", "window_hu": window}
        elif name in ("ScaleIntensityRangePercentilesd", "ScaleIntensityRangePercentiles"):
            bounds = [_number(_entry(step, k, where, path), f"{where} {k}", path) for k in ("lower", "upper")]
            fields["intensity"] = {"preset": "xray", "percentiles": bounds}
        else:
            raise ModelError(f"preprocessing[{i}] {name} {step} cannot be reproduced by medseg; import refused", path)
    if "intensity" not in fields:
        raise ModelError("the bundle's preprocessing has no intensity step medseg can reproduce", path)
    return fields


def load_bundle(folder: Path) -> tuple[torch.nn.Module, ModelCard]:
    """Read a MONAI bundle directory into a network (weights loaded) and a medseg model card.

    Raises
    ------
    medseg.errors.ModelError
        For networks other than UNet/BasicUNet/SegResNet/DynUNet, preprocessing
        medseg cannot reproduce, code expressions where values are needed,
        pickled weights, or weights that do not fit the network.
    """
    from medseg import __version__

    raw, cfg_path = _read_config(folder)
    net_def = _resolve(_entry(raw, "network_def", "the bundle config", cfg_path), raw, "network_def", cfg_path)
    if not isinstance(net_def, dict) or _target_name(net_def.get("_target_")) not in NETWORKS:
        got = _target_name(net_def.get("_target_")) if isinstance(net_def, dict) else net_def
        raise ModelError(f"network_def {got!r} is not one of {', '.join(NETWORKS)}", cfg_path)
    params = {k: v for k, v in net_def.items() if not k.startswith("_")}
    dims = _number(params.pop("spatial_dims", params.pop("dimensions", 3)), "network_def spatial_dims", cfg_path, int)
    in_channels = _number(params.pop("in_channels", 1), "network_def in_channels", cfg_path, int)
    n_out = _number(_entry(params, "out_channels", "network_def", cfg_path), "network_def out_channels", cfg_path, int)
    params.pop("out_channels")
    inferer = _resolve(raw.get("inferer", {}), raw, "inferer", cfg_path)
    if not isinstance(inferer, dict):
        raise ModelError(f"inferer must be a mapping, got {reprlib.repr(inferer)}", cfg_path)
    roi = _entry(inferer, "roi_size", "inferer (sliding-window patch size)", cfg_path)
    patch_size = _numbers(roi if isinstance(roi, list) else [roi] * dims, "inferer roi_size", cfg_path, int)
    weights = next((folder / "models" / n for n in _WEIGHTS_NAMES if (folder / "models" / n).is_file()), None)
    if weights is None:
        raise ModelError(f"bundle weights missing: expected models/{' or models/'.join(_WEIGHTS_NAMES)}", folder)
    try:
        card = ModelCard(
            name=folder.name,
            dims=dims,
            labels=_labels(folder, n_out),
            in_channels=in_channels,
            patch_size=patch_size,
            network={"name": _target_name(net_def["_target_"]), "params": params},
            inference={  # MONAI SlidingWindowInferer defaults where the bundle leaves them out
                "overlap": _number(inferer.get("overlap", 0.25), "inferer overlap", cfg_path),
                "sw_batch_size": _number(inferer.get("sw_batch_size", 1), "inferer sw_batch_size", cfg_path, int),
                "blend": inferer.get("mode", "constant"),
                "fit_window": False,  # MONAI pads an image smaller than the window
            },
            medseg_version=__version__,
            weights_file=str(weights.relative_to(folder)),
            weights_sha256=sha256_file(weights),
            training={"how": "imported from a MONAI bundle", "bundle": str(folder.name)},
            **_preprocessing(raw, cfg_path),
        )
    except ValidationError as exc:
        raise ModelError(
            "bundle cannot be expressed as a medseg model: " + format_validation_error(exc, ModelCard), cfg_path
        ) from None
    network = build_network(card.config)
    load_weights_into(network, load_state_dict(weights), weights)
    card = card.model_copy(update={"n_parameters": sum(p.numel() for p in network.parameters())})
    return network, card
