"""Validated workflow configs: one YAML per workflow (``configs/*.yaml``).

A workflow config says everything needed to train a segmentation model and to
apply it: the labels, 2D or 3D, the intensity preset of the modality, the
target spacing and orientation, the MONAI network and its parameters, the loss,
optimiser and schedule, the augmentations, patch size and sliding-window
settings, the device and mixed precision. It is validated on load (the network
is built on PyTorch's meta device, so parameters MONAI rejects fail there too);
every error names the bad key and, where there is a fixed choice, the allowed
values::

    from medseg.config import load_config
    cfg = load_config("configs/ct_organs.yaml")
    cfg.labels        # {'background': 0, 'liver': 1, ...}

The same schema is embedded in every model card (:mod:`medseg.models`), so a
model directory carries the exact recipe it was trained with.
"""

from __future__ import annotations

import inspect
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medseg._files import read_yaml
from medseg.errors import ConfigError

NETWORKS = ("UNet", "BasicUNet", "SegResNet", "DynUNet")
# Network arguments medseg derives from the workflow (dims, channels, labels); not settable in ``params``.
_DERIVED_NETWORK_ARGS = ("spatial_dims", "in_channels", "out_channels", "dimensions")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- intensity presets ---------------------------------------------------------------
class CTIntensity(_Strict):
    """CT: clip to an HU window, then scale it linearly to [0, 1], or z-score it with the dataset's foreground
    ``mean_hu`` / ``std_hu`` when given (nnU-Net's CT normalisation; :mod:`medseg.plan` fills both in)."""

    preset: Literal["ct"]
    window_hu: tuple[float, float] = (-200.0, 300.0)
    mean_hu: float | None = None
    std_hu: float | None = Field(None, gt=0)

    @field_validator("window_hu")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] >= v[1]:
            raise ValueError(f"window_hu must be [low, high] with low < high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _both_or_neither(self) -> CTIntensity:
        if (self.mean_hu is None) != (self.std_hu is None):
            raise ValueError("mean_hu and std_hu go together (a z-score), or neither (a [0, 1] window)")
        return self


class PercentileIntensity(_Strict):
    """X-ray radiographs and fluorescence microscopy: per-image percentile normalisation to [0, 1], clipped."""

    preset: Literal["xray", "fluorescence"]
    percentiles: tuple[float, float] = (0.5, 99.5)

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(v)}")
        return v


class RGBIntensity(_Strict):
    """Per-channel z-score over the image: ``rgb`` for RGB microscopy / H&E, ``zscore`` for any channels (MR);
    ``nonzero`` takes the statistics over the non-zero voxels only (skull-stripped or masked scans)."""

    preset: Literal["rgb", "zscore"]
    nonzero: bool = False


class WindowIntensity(_Strict):
    """A fixed linear window per channel: ``low`` -> 0, ``high`` -> 1 (clipped to [0, 1] when ``clip``).

    The per-image presets with their statistics frozen: tiled inference over a
    slide takes them from the whole slide's overview, so every tile is
    normalised alike (per-tile statistics leave seams).
    """

    preset: Literal["window"]
    low: list[float]
    high: list[float]
    clip: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> WindowIntensity:
        if len(self.low) != len(self.high) or not all(lo < hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"window needs one low < high per channel, got low {self.low}, high {self.high}")
        return self


IntensityConfig = Annotated[
    CTIntensity | PercentileIntensity | RGBIntensity | WindowIntensity, Field(discriminator="preset")
]


# ---- network, loss, optimisation -----------------------------------------------------------
class NetworkConfig(_Strict):
    """A MONAI network by class name with its constructor parameters (minus dims and channels)."""

    name: Literal["UNet", "BasicUNet", "SegResNet", "DynUNet"]
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_params(self) -> NetworkConfig:
        from monai.networks import nets

        allowed = [p for p in inspect.signature(getattr(nets, self.name).__init__).parameters if p != "self"]
        for key in self.params:
            if key in _DERIVED_NETWORK_ARGS:
                raise ValueError(f"params.{key} is set by medseg from dims, in_channels and labels; remove it")
            if key not in allowed:
                settable = ", ".join(p for p in allowed if p not in _DERIVED_NETWORK_ARGS)
                raise ValueError(f"params.{key} is not a parameter of monai {self.name}; allowed: {settable}")
        return self


class LossConfig(_Strict):
    """Training loss: Dice + cross-entropy by default (softmax over the labels)."""

    name: Literal["dice_ce", "dice", "ce", "dice_focal"] = "dice_ce"
    lambda_dice: float = Field(1.0, ge=0)
    lambda_ce: float = Field(1.0, ge=0)


class OptimizerConfig(_Strict):
    """Optimiser and learning-rate schedule (per epoch)."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_epochs: int = Field(0, ge=0)
    anneal_over: Literal["epochs", "budget"] = Field(
        "epochs",
        description="what the schedule's progress counts: the share of max_epochs run (reproducible), or the larger "
        "of that and the share of the time budget used (max_minutes), so a run cut by its budget still anneals",
    )


class AugmentConfig(_Strict):
    """Random augmentations applied to training patches (on the GPU when CUDA is present).

    Axes are array axes after reorientation to the config's ``orientation``
    (for ``RAS``: 0 = left-right, 1 = posterior-anterior, 2 = inferior-superior).
    Never mirror across an axis that separates lateral labels (left/right kidney).
    """

    prob: float = Field(0.2, ge=0, le=1, description="probability of each spatial/intensity augmentation")
    flip_axes: list[int] = Field(default_factory=list)
    rotate90: bool = Field(False, description="random 90-degree turns in 2D (square patches only)")
    rotate_deg: float = Field(0.0, ge=0, le=180)
    elastic: float = Field(
        0.0, ge=0, le=0.25, description="smooth random deformation (2D): control points a quarter of the patch apart, "
        "each moved by N(0, s) times that distance, so organs change shape and relative size; 0 turns it off",
    )
    scale_range: float = Field(0.0, ge=0, lt=1, description="zoom by a factor in [1 - s, 1 + s]")
    intensity_scale: float = Field(0.1, ge=0)
    intensity_shift: float = Field(0.1, ge=0)
    noise_std: float = Field(0.0, ge=0)
    gamma: tuple[float, float] | None = None
    enhance_hu: float = Field(
        0.0, ge=0, le=200, description="CT contrast-phase change: soft tissue brightened by U(-e, e) HU, fat and air "
        "left as they are (medseg.preprocess.RandContrastEnhancementd); needs the ct intensity preset; 0 turns it off",
    )
    hed_jitter: float = Field(
        0.0, ge=0, lt=1, description="H&E stain jitter (RGB workflows): each stain's amount scaled by U(1 - s, 1 + s) "
        "and shifted by U(-s, s) OD, before the intensity preset (Tellez et al. 2018); 0 turns it off",
    )


class TrainConfig(_Strict):
    """Training-loop settings."""

    max_epochs: int = Field(100, ge=1)
    batch_size: int = Field(2, ge=1, description="patches per optimiser step")
    samples_per_image: int = Field(4, ge=1, description="random patches drawn from each cached case per epoch "
                                   "(an epoch is n_cases * samples_per_image / batch_size steps)")
    pos_fraction: float = Field(0.67, ge=0, le=1, description="share of patches centred on foreground")
    val_every: int = Field(5, ge=1, description="validate every N epochs")
    early_stop_patience: int | None = Field(10, ge=1, description="validations without improvement before stopping")
    max_minutes: float | None = Field(None, gt=0)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="held out when dataset.json has no validation/fold")
    fold: int | None = Field(None, ge=0, description="validate on entries whose 'fold' equals this")


class InferenceConfig(_Strict):
    """Sliding-window inference settings."""

    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1)
    blend: Literal["gaussian", "constant"] = "gaussian"
    tta: bool = Field(False, description="average predictions mirrored along augment.flip_axes and, for models "
                      "trained with 90-degree turns of square patches (augment.rotate90), turned as well")
    fit_window: bool = Field(True, description="along axes where the image is smaller than the patch, shrink the "
                             "window to the image (rounded up to what the network divides) instead of padding "
                             "the image to the patch; imported MONAI bundles pad, as MONAI does")
    boundary_dynamics: float | None = Field(
        0.3, gt=0, le=1, description="background/interior/boundary models (label_source instances): objects are "
        "the pixels whose background probability is below 1/2, separated along the ridges of the boundary "
        "probability (smoothed over one pixel of the model grid) that rise at least this much above the bottom "
        "of the shallower side (medseg.postprocess.boundary_watershed); null: every 4-connected interior is an object",
    )


# ---- the workflow ------------------------------------------------------------------------
class WorkflowConfig(_Strict):
    """One segmentation workflow: everything needed to train a model and to apply it."""

    name: str
    dims: Literal[2, 3]
    labels: dict[str, int]
    label_source: Literal["semantic", "instances", "binary"] = Field(
        "semantic",
        description="how training label maps encode the classes: label indices (semantic); one integer per object "
        "(instances -> background 0, interior 1, boundary 2); any non-zero value is class 1 (binary, e.g. 0/255 masks)",
    )
    in_channels: int = Field(1, ge=1)
    intensity: IntensityConfig
    spacing_mm: list[float] | None = Field(None, description="target voxel spacing; None keeps the input's")
    spacing_px: list[float] | None = Field(
        None, description="target spacing in input pixels, for data without a pixel size (PNG/JPEG radiographs): "
        "the model sees one pixel per spacing_px input pixels whatever an image states; excludes spacing_mm",
    )
    resample: Literal["extent", "spacing"] = Field(
        "extent",
        description="extent: resize to the grid covering the same extent at about spacing_mm (nnU-Net's rule, fast "
        "separable interpolation); spacing: exactly spacing_mm from the first voxel (MONAI Spacing, as MONAI bundles do)",
    )
    orientation: str | None = Field(None, description="target axis codes (3D), e.g. RAS; None keeps the input's")
    patch_size: list[int]
    network: NetworkConfig
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on the CPU)")
    postprocess: dict[str, Any] | None = Field(
        None, description="per-label rules of medseg.postprocess keyed by label name, plus 'default'"
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, int]) -> dict[str, int]:
        indices = sorted(v.values())
        if indices != list(range(len(indices))):
            raise ValueError(f"label indices must be 0..N-1 without gaps, got {indices}")
        if v.get("background") != 0:
            raise ValueError("label 0 must be named 'background'")
        return v

    @field_validator("orientation")
    @classmethod
    def _orientation(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.upper()
        if len(v) != 3 or any(sum(c in pair for c in v) != 1 for pair in ("LR", "AP", "SI")):
            raise ValueError(f"orientation must be 3 axis codes, one of L/R, A/P, S/I each (e.g. RAS), got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowConfig:
        nd = self.dims
        if len(self.patch_size) != nd or min(self.patch_size) < 1:
            raise ValueError(f"patch_size needs {nd} positive sizes for dims={nd}, got {self.patch_size}")
        for key in ("spacing_mm", "spacing_px"):
            value = getattr(self, key)
            if value is not None and (len(value) != nd or min(value) <= 0):
                raise ValueError(f"{key} needs {nd} positive values for dims={nd}, got {value}")
        if self.spacing_mm is not None and self.spacing_px is not None:
            raise ValueError("give spacing_mm (physical) or spacing_px (input pixels), not both")
        if self.orientation is not None and nd != 3:
            raise ValueError("orientation applies to 3D workflows only; remove it for dims=2")
        if any(not 0 <= a < nd for a in self.augment.flip_axes):
            raise ValueError(f"augment.flip_axes must be spatial axes 0..{nd - 1}, got {self.augment.flip_axes}")
        if self.inference.tta and not self.augment.flip_axes:
            raise ValueError("inference.tta mirrors along augment.flip_axes, which is empty")
        if self.intensity.preset == "rgb" and self.in_channels != 3:
            raise ValueError("intensity preset 'rgb' needs in_channels: 3")
        if self.intensity.preset == "window" and len(self.intensity.low) != self.in_channels:
            raise ValueError(f"intensity window needs {self.in_channels} low/high values (one per channel)")
        if self.augment.elastic and nd != 2:
            raise ValueError("augment.elastic deforms 2D patches only; set it to 0 for dims=3")
        if self.augment.enhance_hu and not isinstance(self.intensity, CTIntensity):
            raise ValueError("augment.enhance_hu changes CT contrast in HU and needs the ct intensity preset")
        if self.augment.hed_jitter and self.in_channels != 3:
            raise ValueError("augment.hed_jitter perturbs H&E stains and needs RGB input (in_channels: 3)")
        if self.label_source == "instances" and self.label_names != ["background", "interior", "boundary"]:
            raise ValueError("label_source 'instances' needs labels {background: 0, interior: 1, boundary: 2}")
        if self.label_source == "binary" and self.n_labels != 2:
            raise ValueError("label_source 'binary' needs exactly two labels (background and one class)")
        if self.postprocess is not None:
            _validate_postprocess(self.postprocess, self.labels)
        _validate_network_builds(self)
        return self

    @property
    def target_spacing(self) -> list[float] | None:
        """What the model grid resamples to: ``spacing_mm``, or ``spacing_px`` on images taken as 1-unit pixels."""
        return self.spacing_mm or self.spacing_px

    @property
    def n_labels(self) -> int:
        """Number of output classes, background included."""
        return len(self.labels)

    @property
    def label_names(self) -> list[str]:
        """Label names ordered by index (``label_names[i]`` is the name of index ``i``)."""
        return sorted(self.labels, key=self.labels.__getitem__)


def _validate_postprocess(section: dict[str, Any], labels: dict[str, int]) -> None:
    """Check the ``postprocess:`` section (rules keyed by label name, plus ``default``) with :mod:`medseg.postprocess`."""
    from medseg.postprocess import PostprocessConfig

    try:
        PostprocessConfig.from_label_names(section, labels)
    except ConfigError as exc:
        raise ValueError(f"postprocess: {exc.reason}") from None


def _validate_network_builds(config: WorkflowConfig) -> None:
    """Build the network on the meta device (no memory, milliseconds) so bad ``network.params`` fail on load."""
    from medseg.models.networks import build_network

    try:
        build_network(config, device="meta")
    except ConfigError as exc:
        raise ValueError(exc.reason) from None


# ---- loading --------------------------------------------------------------------------------
def _describe(err: dict[str, Any]) -> str:
    loc_parts = list(err["loc"])
    if loc_parts[:1] == ["intensity"] and len(loc_parts) > 2:
        del loc_parts[1]  # the discriminator tag pydantic inserts for the preset union
    loc = ".".join(str(p) for p in loc_parts)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] not in ("missing", "value_error") and not isinstance(err.get("input"), dict | list | None):
        msg += f" (got {err['input']!r})"
    return f"{loc}: {msg}" if loc else msg


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at ``loc`` (for messages about unknown keys)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(exc: ValidationError, schema: type[BaseModel]) -> str:
    """One line naming every bad key of ``exc`` and, for unknown keys, the allowed ones."""
    parts = []
    for err in exc.errors():
        text = _describe(err)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, tuple(err["loc"]))
            if allowed:
                text += f"; allowed: {', '.join(allowed)}"
        parts.append(text)
    return "; ".join(parts)


def validate_config(data: dict[str, Any], source: str | os.PathLike[str] | None = None) -> WorkflowConfig:
    """Validate a config mapping; raises :class:`ConfigError` naming every bad key.

    Parameters
    ----------
    data : dict
        The parsed YAML mapping.
    source : path-like, optional
        File the mapping came from, named in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a workflow config is a mapping of keys, got {type(data).__name__}", source)
    try:
        return WorkflowConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid config: " + format_validation_error(exc, WorkflowConfig), source) from None


def load_config(path: str | os.PathLike[str]) -> WorkflowConfig:
    """Read and validate a workflow YAML file.

    Raises
    ------
    medseg.errors.ConfigError
        When the file is missing, is not YAML, or fails validation.
    """
    return validate_config(read_yaml(path, "config", expect=dict), path)


def config_to_dict(config: WorkflowConfig) -> dict[str, Any]:
    """A JSON/YAML-ready plain mapping of ``config`` that :func:`validate_config` reads back identically."""
    return config.model_dump(mode="json")


def as_config(config: WorkflowConfig | str | os.PathLike[str] | dict[str, Any]) -> WorkflowConfig:
    """Accept a validated config, a mapping, or a YAML path."""
    if isinstance(config, WorkflowConfig):
        return config
    if isinstance(config, dict):
        return validate_config(config)
    return load_config(config)
