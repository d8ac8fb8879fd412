"""An nnU-Net v2 results folder on disk: ``dataset.json``, ``plans.json``, its configurations, labels and folds.

What nnU-Net's ``PlansManager``, ``ConfigurationManager`` and ``LabelManager``
derive from these files, written from their documented semantics:

* a configuration may ``inherits_from`` another (its keys override the parent's);
* plans written before nnU-Net 2.3 describe the U-Net with ``UNet_class_name``,
  ``UNet_base_num_features`` ... instead of ``architecture``: it is rebuilt as
  nnU-Net does (features doubling up to ``unet_max_num_features``, instance
  norm, LeakyReLU, ``conv_bias`` on);
* labels: ``{"background": 0, "liver": 1, ...}``; a label given as a list of
  several values makes the model region-based (sigmoid per region, written in
  ``regions_class_order``); ``"ignore"`` names the ignore label, which the
  network never predicts.

Every problem is a :class:`~medseg.errors.ModelError` naming the file.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg._files import read_json
from medseg.errors import ModelError

CHECKPOINT_NAMES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
_FOLD_DIR = re.compile(r"^fold_(\d+|all)$")
_OLD_ARCH_KEYS = ("UNet_class_name", "UNet_base_num_features", "n_conv_per_stage_encoder", "n_conv_per_stage_decoder",
                  "num_pool_per_axis", "pool_op_kernel_sizes", "conv_kernel_sizes", "unet_max_num_features")  # fmt: skip


# ---- labels -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelScheme:
    """nnU-Net's label manager, as data.

    Attributes
    ----------
    names : dict of str to int or tuple
        ``dataset.json`` ``labels`` (regions as tuples).
    regions_class_order : tuple of int or None
        The value written for each region (region-based models).
    has_regions : bool
    ignore_label : int or None
    all_labels : tuple of int
        Every label value, sorted (ignore left out).
    regions : tuple of tuple of int, or None
        The foreground regions in ``dataset.json`` order.
    """

    names: dict[str, Any]
    regions_class_order: tuple[int, ...] | None
    has_regions: bool
    ignore_label: int | None
    all_labels: tuple[int, ...]
    regions: tuple[tuple[int, ...], ...] | None

    @property
    def foreground_labels(self) -> list[int]:
        """Every label value but 0."""
        return [v for v in self.all_labels if v != 0]

    @property
    def num_heads(self) -> int:
        """Output channels of the network: one per region, or one per label (background included)."""
        return len(self.regions) if self.has_regions else len(self.all_labels)

    @property
    def output_names(self) -> dict[int, str]:
        """Foreground value -> name of the label map medseg writes.

        Label-based: the ``dataset.json`` names. Region-based: value
        ``regions_class_order[i]`` is named after region ``i`` (the innermost
        region written last wins a voxel, as nnU-Net writes them).
        """
        if not self.has_regions:
            out = {}
            for name, value in self.names.items():
                if name == "ignore":
                    continue
                values = value if isinstance(value, tuple) else (value,)
                if len(values) == 1 and int(values[0]) != 0:
                    out[int(values[0])] = str(name)
            return dict(sorted(out.items()))
        region_names = [n for n, v in self.names.items() if n != "ignore" and not _is_background(v)]
        assert self.regions_class_order is not None
        return {int(c): str(n) for n, c in zip(region_names, self.regions_class_order, strict=True)}

    @property
    def label_dtype(self) -> str:
        """``uint8`` when fewer than 255 foreground labels, else ``uint16`` (nnU-Net's export rule)."""
        return "uint8" if len(self.foreground_labels) < 255 else "uint16"


def _is_background(value: Any) -> bool:
    if isinstance(value, tuple):
        return len(set(value)) == 1 and int(value[0]) == 0
    return int(value) == 0


def parse_labels(dataset: dict[str, Any], path: Path) -> LabelScheme:
    """The :class:`LabelScheme` of a ``dataset.json`` (already parsed)."""
    raw = dataset.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise ModelError("dataset.json has no 'labels' mapping (name -> value)", path)
    names: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, list | tuple):
            if not value or not all(_is_int(v) for v in value):
                raise ModelError(f"label {name!r}: a region must be a list of integer label values, got {value!r}", path)
            names[str(name)] = tuple(int(v) for v in value)
        elif _is_int(value):
            names[str(name)] = int(value)
        else:
            raise ModelError(f"label {name!r}: value must be an integer or a list of integers, got {value!r}", path)
    if "background" not in names or isinstance(names["background"], tuple) or names["background"] != 0:
        raise ModelError("dataset.json labels must declare 'background': 0", path)
    ignore = names.get("ignore")
    if ignore is not None and isinstance(ignore, tuple):
        raise ModelError("the ignore label must be one integer, not a region", path)
    has_regions = any(isinstance(v, tuple) and len(v) > 1 for v in names.values())
    all_values = sorted({int(x) for n, v in names.items() if n != "ignore"
                         for x in (v if isinstance(v, tuple) else (v,))})  # fmt: skip
    if ignore is not None and ignore != max(all_values) + 1:
        raise ModelError(f"the ignore label ({ignore}) must be the highest label value + 1 ({max(all_values) + 1})",
                         path)
    regions = None
    order = dataset.get("regions_class_order")
    if has_regions:
        regions = tuple(v if isinstance(v, tuple) else (v,) for n, v in names.items()
                        if n != "ignore" and not _is_background(v))  # fmt: skip
        if not isinstance(order, list) or not all(_is_int(v) for v in order):
            raise ModelError("a region-based dataset.json needs 'regions_class_order' (a list of label values)", path)
        if len(order) != len(regions):
            raise ModelError(f"regions_class_order has {len(order)} entries for {len(regions)} regions", path)
    return LabelScheme(
        names=names,
        regions_class_order=tuple(int(v) for v in order) if has_regions and order is not None else None,
        has_regions=has_regions,
        ignore_label=ignore,
        all_labels=tuple(all_values),
        regions=regions,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- configurations ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Configuration:
    """One resolved configuration of ``plans.json`` (``3d_fullres``, ``2d``, ``3d_lowres``, ...)."""

    name: str
    data: dict[str, Any]
    path: Path
    converted_from_old_format: bool = False

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise ModelError(f"configuration {self.name!r} has no {key!r}", self.path)
        return self.data[key]

    @property
    def patch_size(self) -> list[int]:
        """The network's patch size (2 or 3 entries)."""
        return [int(v) for v in self._get("patch_size")]

    @property
    def spacing(self) -> list[float]:
        """Target spacing in nnU-Net axis order (after ``transpose_forward``)."""
        return [float(v) for v in self._get("spacing")]

    @property
    def normalization_schemes(self) -> list[str]:
        """One normalisation class name per input channel."""
        return [str(v) for v in self._get("normalization_schemes")]

    @property
    def use_mask_for_norm(self) -> list[bool]:
        """Per channel: normalise inside the nonzero mask only."""
        return [bool(v) for v in self._get("use_mask_for_norm")]

    @property
    def architecture(self) -> dict[str, Any]:
        """``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``."""
        arch = self._get("architecture")
        if not isinstance(arch, dict) or "network_class_name" not in arch or "arch_kwargs" not in arch:
            raise ModelError(f"configuration {self.name!r}: 'architecture' needs network_class_name and arch_kwargs",
                             self.path)
        return arch

    def resampling(self, which: str) -> tuple[str, dict[str, Any]]:
        """``(function name, kwargs)`` of ``resampling_fn_{data,probabilities,seg}``."""
        name = str(self._get(f"resampling_fn_{which}"))
        kwargs = self.data.get(f"resampling_fn_{which}_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ModelError(f"configuration {self.name!r}: resampling_fn_{which}_kwargs must be a mapping", self.path)
        return name, dict(kwargs)

    @property
    def previous_stage(self) -> str | None:
        """The configuration whose prediction feeds this one (cascade), or None."""
        value = self.data.get("previous_stage")
        return str(value) if value else None

    @property
    def is_2d(self) -> bool:
        """A 2D network (applied slice by slice to 3D data)."""
        return len(self.patch_size) == 2


def _convert_old_architecture(config: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The ``architecture`` entry nnU-Net >= 2.3 rebuilds from a pre-2.3 configuration."""
    missing = [k for k in _OLD_ARCH_KEYS if k not in config and k != "num_pool_per_axis"]
    if missing:
        raise ModelError(f"configuration {name!r} has neither 'architecture' nor the pre-2.3 U-Net keys "
                         f"(missing {', '.join(missing)}): a plans format medseg does not know", path)
    unet = str(config["UNet_class_name"])
    if unet not in ("PlainConvUNet", "ResidualEncoderUNet"):
        raise ModelError(f"configuration {name!r}: unknown architecture {unet!r} in pre-2.3 plans "
                         "(PlainConvUNet and ResidualEncoderUNet can be rebuilt)", path)
    n_stages = len(config["n_conv_per_stage_encoder"])
    dim = len(config["patch_size"])
    conv = "torch.nn.modules.conv.Conv2d" if dim == 2 else "torch.nn.modules.conv.Conv3d"
    norm = ("torch.nn.modules.instancenorm.InstanceNorm2d" if dim == 2
            else "torch.nn.modules.instancenorm.InstanceNorm3d")  # fmt: skip
    blocks = "n_conv_per_stage" if unet == "PlainConvUNet" else "n_blocks_per_stage"
    base, cap = int(config["UNet_base_num_features"]), int(config["unet_max_num_features"])
    arch = {
        "network_class_name": f"dynamic_network_architectures.architectures.unet.{unet}",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [min(base * 2**i, cap) for i in range(n_stages)],
            "conv_op": conv,
            "kernel_sizes": copy.deepcopy(config["conv_kernel_sizes"]),
            "strides": copy.deepcopy(config["pool_op_kernel_sizes"]),
            blocks: copy.deepcopy(config["n_conv_per_stage_encoder"]),
            "n_conv_per_stage_decoder": copy.deepcopy(config["n_conv_per_stage_decoder"]),
            "conv_bias": True,
            "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    out = {k: v for k, v in config.items() if k not in _OLD_ARCH_KEYS}
    out["architecture"] = arch
    return out


@dataclass
class Plans:
    """``plans.json``: the dataset-wide entries and the configurations."""

    raw: dict[str, Any]
    path: Path
    _cache: dict[str, Configuration] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: Path) -> Plans:
        """Read and check ``plans.json``."""
        raw = read_json(path, "nnU-Net plans", expect=dict, error=ModelError)
        if not isinstance(raw.get("configurations"), dict) or not raw["configurations"]:
            raise ModelError("plans.json has no 'configurations'", path)
        plans = cls(raw, path)
        for key in ("transpose_forward", "transpose_backward"):
            value = raw.get(key)
            if not isinstance(value, list) or sorted(value) != [0, 1, 2]:
                raise ModelError(f"plans.json {key!r} must be a permutation of [0, 1, 2], got {value!r}", path)
        return plans

    @property
    def dataset_name(self) -> str:
        return str(self.raw.get("dataset_name", ""))

    @property
    def plans_name(self) -> str:
        return str(self.raw.get("plans_name", ""))

    @property
    def transpose_forward(self) -> list[int]:
        return [int(v) for v in self.raw["transpose_forward"]]

    @property
    def transpose_backward(self) -> list[int]:
        return [int(v) for v in self.raw["transpose_backward"]]

    @property
    def reader_name(self) -> str:
        """``image_reader_writer`` (default ``SimpleITKIO``)."""
        return str(self.raw.get("image_reader_writer") or "SimpleITKIO")

    @property
    def label_manager(self) -> str:
        return str(self.raw.get("label_manager") or "LabelManager")

    def intensity_properties(self, channel: int) -> dict[str, float] | None:
        """``foreground_intensity_properties_per_channel[str(channel)]`` (older plans: ``..._by_modality``)."""
        props = self.raw.get("foreground_intensity_properties_per_channel")
        if props is None:
            props = self.raw.get("foreground_intensity_properties_by_modality")
        if not isinstance(props, dict):
            return None
        value = props.get(str(channel))
        return value if isinstance(value, dict) else None

    @property
    def configuration_names(self) -> list[str]:
        return list(self.raw["configurations"])

    def configuration(self, name: str) -> Configuration:
        """The configuration ``name`` with ``inherits_from`` resolved and old plans converted."""
        if name not in self._cache:
            data = self._resolve(name, ())
            old = "architecture" not in data
            if old:
                data = _convert_old_architecture(data, name, self.path)
            self._cache[name] = Configuration(name, data, self.path, converted_from_old_format=old)
        return self._cache[name]

    def _resolve(self, name: str, visited: tuple[str, ...]) -> dict[str, Any]:
        configs = self.raw["configurations"]
        if name not in configs:
            raise ModelError(f"configuration {name!r} is not in plans.json (it has {', '.join(configs)})", self.path)
        config = configs[name]
        if not isinstance(config, dict):
            raise ModelError(f"configuration {name!r} must be a mapping", self.path)
        config = copy.deepcopy(config)
        parent = config.get("inherits_from")
        if parent:
            if parent in visited or parent == name:
                raise ModelError(f"configuration {name!r}: circular inherits_from ({' -> '.join((*visited, name))})",
                                 self.path)
            base = self._resolve(str(parent), (*visited, name))
            base.update(config)
            config = base
        return config


# ---- the folder -------------------------------------------------------------------------------------------------
@dataclass
class ResultsFolder:
    """``RESULTS/DatasetNNN_Name/Trainer__Plans__configuration``: what a prediction needs from it.

    Attributes
    ----------
    path : Path
    dataset : dict
        ``dataset.json``.
    plans : Plans
    labels : LabelScheme
    channel_names : list of str
        ``channel_names`` (older datasets: ``modality``) in channel order.
    trainer_name, plans_name, configuration_name : str
        From the folder name ``Trainer__Plans__configuration`` ("" when it has another form).
    """

    path: Path
    dataset: dict[str, Any]
    plans: Plans
    labels: LabelScheme
    channel_names: list[str]
    trainer_name: str = ""
    plans_name: str = ""
    configuration_name: str = ""

    @classmethod
    def read(cls, path: str | Path) -> ResultsFolder:
        """Read the folder's ``dataset.json`` and ``plans.json``."""
        p = Path(path)
        if not p.is_dir():
            raise ModelError("no such nnU-Net results folder", p)
        missing = [n for n in ("dataset.json", "plans.json") if not (p / n).is_file()]
        if missing:
            raise ModelError(f"not an nnU-Net results folder: {' and '.join(missing)} missing "
                             "(expected RESULTS/DatasetNNN_Name/Trainer__Plans__configuration)", p)
        dataset = read_json(p / "dataset.json", "nnU-Net dataset.json", expect=dict, error=ModelError)
        plans = Plans.read(p / "plans.json")
        labels = parse_labels(dataset, p / "dataset.json")
        channels = dataset.get("channel_names", dataset.get("modality"))
        if not isinstance(channels, dict) or not channels:
            raise ModelError("dataset.json has no 'channel_names' (channel index -> name)", p / "dataset.json")
        try:
            order = sorted(channels, key=int)
        except ValueError:
            raise ModelError("dataset.json channel_names keys must be channel indices 0, 1, ...",
                             p / "dataset.json") from None
        parts = p.name.split("__")
        trainer, plans_name, config = (parts if len(parts) == 3 else ("", "", ""))
        return cls(p, dataset, plans, labels, [str(channels[k]) for k in order], trainer, plans_name, config)

    @property
    def file_ending(self) -> str:
        return str(self.dataset.get("file_ending", ""))

    def fold_dirs(self) -> dict[str, Path]:
        """``{"0": fold_0, ..., "all": fold_all}`` of the folders present."""
        found = {}
        for child in sorted(self.path.iterdir()):
            match = _FOLD_DIR.match(child.name)
            if match and child.is_dir():
                found[match.group(1)] = child
        return found

    def checkpoints(self, folds: list[str] | None, checkpoint: str) -> dict[str, Path]:
        """``fold -> checkpoint file`` for ``folds`` (None: every numbered fold with that checkpoint, as nnU-Net).

        Raises
        ------
        ModelError
            A fold that does not exist, a missing checkpoint file, or no fold at all.
        """
        if checkpoint not in CHECKPOINT_NAMES:
            raise ModelError(f"unknown checkpoint {checkpoint!r} (final or best)", self.path)
        filename = CHECKPOINT_NAMES[checkpoint]
        present = self.fold_dirs()
        if folds is None:
            chosen = {f: d / filename for f, d in present.items() if f != "all" and (d / filename).is_file()}
            if not chosen and "all" in present and (present["all"] / filename).is_file():
                chosen = {"all": present["all"] / filename}
            if not chosen:
                have = ", ".join(f"fold_{f}" for f in present) or "no fold_* folders"
                raise ModelError(f"no {filename} in any fold folder ({have})", self.path)
            return chosen
        chosen = {}
        for fold in folds:
            if fold not in present:
                have = ", ".join(f"fold_{f}" for f in present) or "none"
                raise ModelError(f"fold {fold} does not exist (folds present: {have})", self.path / f"fold_{fold}")
            file = present[fold] / filename
            if not file.is_file():
                raise ModelError(f"{filename} is missing", file)
            chosen[fold] = file
        return chosen
