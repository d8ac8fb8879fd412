"""The planner: every data-dependent choice of a workflow config, derived from a dataset fingerprint.

Given a :class:`~medseg.plan.fingerprint.DatasetFingerprint`, the task's own
settings (a workflow YAML: label names, label source, modality,
post-processing, and any override) and a compute budget, :func:`plan_workflow`
returns a complete :class:`~medseg.config.WorkflowConfig` and one
:class:`Decision` per choice with its reason. The rules, in order:

1. **spacing**: the median spacing per axis; an axis coarser than
   :data:`ANISOTROPY` times the finest takes the 10th percentile of its
   spacings instead (nnU-Net's rule for thick slices), never finer than the
   other axes. Data without a pixel size is planned in input pixels (a
   coarser grid becomes ``spacing_px``).
2. **patch and network**: the largest patch the budget affords (CPU: at least
   :data:`MIN_STEPS` optimiser steps in the time budget at the measured
   throughput; GPU: the memory), shrunk from the median image shape along its
   physically longest axis (the whole median image when it costs at most
   :data:`WHOLE_IMAGE_SLACK` times that); square for 2D microscopy, whose
   patches are turned by 90 degrees in training. In 3D radiology the patch
   spans at most :data:`AXIAL_SHARE` of the median scan length along the
   body axis (inferior-superior), because scans differ in how much of the
   body they cover: random crops then show organs at every height of the
   patch and cut off by its ends, as a shorter scan shows them, instead of
   always between the same two scan ends. An axis pools (stride 2) only while its spacing is
   within 2x of the finest current spacing among the axes that can still
   pool and the bottleneck keeps
   :data:`MIN_BOTTLENECK` voxels; the patch is rounded to a multiple of each
   axis's total stride, so the network divides it by construction. The
   network batch-normalises when a step holds at least
   :data:`MIN_BATCH_NORM` patches (2D), else normalises each instance
   (nnU-Net's choice, made for small 3D batches). When the
   affordable patch sees less than :data:`MIN_COVERAGE` of the median image,
   the spacing is coarsened 2x (nnU-Net's low-resolution stage) while the
   smaller objects (5th percentile) stay at least :data:`MIN_OBJECT_VOXELS`
   voxels across.
3. **intensity** by modality: CT clipped at the foreground 0.5 / 99.5
   percentiles (widened to hold the soft-tissue window, :data:`SOFT_TISSUE_HU`,
   so organs of another contrast phase are not clipped) and z-scored with the
   foreground mean / std of the dataset; training enhances soft tissue by up
   to :data:`CONTRAST_ENHANCEMENT_HU` (another contrast phase); MR
   per-image z-score; radiographs and grey microscopy per-image percentiles;
   RGB per-channel z-score.
4. **sampling and augmentation** by dimensionality and modality: microscopy
   is mirrored along every axis; radiology only left-right, and only when no
   label name has a side and every label overlaps its own mirror image by at
   least :data:`MIN_MIRROR_DICE` (both lungs as one label, not a liver);
   zoom, rotation, contrast, gamma and noise take nnU-Net's magnitudes.
5. **schedule** fitted to the budget: the learning rate anneals over the time
   budget; validation every N epochs so it takes about a tenth of the time.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.plan.fingerprint import DatasetFingerprint

ANISOTROPY = 3.0
MIN_STEPS = {2: 3000, 3: 1200}  # optimiser steps a CPU budget must afford
MIN_BOTTLENECK = 4
MAX_POOLS = {2: 6, 3: 5}
MIN_COVERAGE = 0.5  # share of the median image a patch must see before the resolution is coarsened
MIN_OBJECT_VOXELS = 8.0
SOFT_TISSUE_HU = (-160.0, 240.0)  # the abdominal window (level 40, width 400): the CT clip window always holds it
CONTRAST_ENHANCEMENT_HU = 60.0  # CT: soft tissue brightened or darkened by up to this much (another contrast phase)
RADIOGRAPH_ELASTIC = 0.2  # 2D radiology: elastic displacement, in control-point spacings (a quarter of the patch)
MIN_MIRROR_DICE = 0.65  # radiology mirrors left-right only when every label overlaps its mirror image this much
BASE_CHANNELS = {"cpu": 16, "cuda": 32}
MAX_CHANNELS = 320
AXIAL_SHARE = 0.5  # 3D radiology: a patch spans at most this share of the median scan length (inferior-superior)
WHOLE_IMAGE_SLACK = 1.25  # a patch holding the whole median image may exceed the affordable voxels this much
USABLE_SHARE = 0.85  # of the budget: the rest is caching, validation and saving
PROBE_WARMUP, PROBE_STEPS = 2, 7  # untimed and timed optimiser steps of the throughput probe
PROBE_PATCH = {2: (192, 192), 3: (48, 48, 48)}  # about the size of a planned CPU patch: less timer jitter per step
MIN_BATCH_NORM = 4  # patches per step from which the network batch-normalises (fewer: instance normalisation)
_LATERAL = re.compile(r"(^|[_\W])(left|right|l|r|lt|rt)([_\W]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Decision:
    """One planned setting: ``key`` (a dotted config path), its value, why, and who set it."""

    key: str
    value: Any
    reason: str
    source: str = "planned"  # planned | workflow (the workflow YAML) | user (an override)


@dataclass
class Plan:
    """A complete workflow config and the decisions that made it."""

    config: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def workflow(self) -> Any:
        """The config validated as a :class:`~medseg.config.WorkflowConfig`."""
        from medseg.config import validate_config

        return validate_config(self.config)

    def table(self) -> list[tuple[str, str, str, str]]:
        """``(setting, value, set by, reason)`` rows, one per decision."""
        return [(d.key, _short(d.value), d.source, d.reason) for d in self.decisions]


def _short(value: Any) -> str:
    return str(value) if not isinstance(value, float) else f"{value:.4g}"


@dataclass(frozen=True)
class Budget:
    """What training may spend: minutes, the device, its measured throughput and (GPU) memory."""

    minutes: float
    device: str  # cpu | cuda
    voxels_per_second: float  # training throughput (forward + backward) of the base network, patch voxels x batch
    memory_gib: float | None = None

    def affordable_voxels(self, dims: int, batch: int) -> float:
        """Patch voxels per sample the budget affords."""
        if self.device == "cuda" and self.memory_gib:
            return self.memory_gib * 2**30 * 0.6 / (batch * _BYTES_PER_VOXEL[dims])
        step_s = self.minutes * 60 * USABLE_SHARE / MIN_STEPS[dims]
        return self.voxels_per_second * step_s / batch


_BYTES_PER_VOXEL = {2: 4 * 16 * 12, 3: 4 * 32 * 12}  # activations kept for backward per patch voxel, base network


def network_norm(batch: int) -> str:
    """The network's normalisation for ``batch`` patches per optimiser step.

    Batch statistics of 4 or more patches train faster and generalise better
    in the short budgets of a CPU: on the shared radiographs (2 training
    films, 10 CPU minutes, seed 0) the same planned UNet reached lung Dice
    0.969 on the third film with batch normalisation and 0.948 with instance
    normalisation. 3D batches of 2 keep instance normalisation: with them
    batch normalisation gave CT spleen Dice 0.81 in one run and 0.64 in
    another (instance normalisation 0.69-0.73).
    """
    return "batch" if batch >= MIN_BATCH_NORM else "instance"


def measure_throughput(dims: int, device: str, in_channels: int = 1, n_labels: int = 2, norm: str = "instance") -> float:
    """Training throughput of the base planned network on ``device``: patch voxels x batch per second.

    Times :data:`PROBE_STEPS` optimiser steps (after :data:`PROBE_WARMUP` untimed ones) of a MONAI UNet with
    the planner's base channels on a batch of two reference patches (:data:`PROBE_PATCH`) and takes the median
    step, so that one step slowed by another process does not shrink the plan; the step time grows about
    linearly with the patch voxels.
    """
    import torch
    from monai.networks.nets import UNet

    base = BASE_CHANNELS["cuda" if device == "cuda" else "cpu"]
    patch = PROBE_PATCH[dims]
    net = UNet(dims, in_channels, n_labels, channels=[base * 2**i for i in range(4)], strides=[2, 2, 2],
               num_res_units=2, norm=norm).to(device)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(2, in_channels, *patch, device=device)
    y = torch.randint(0, n_labels, (2, *patch), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return 2 * math.prod(patch) / median_step_seconds(step)


def median_step_seconds(step: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of :data:`PROBE_STEPS` calls of ``step`` after :data:`PROBE_WARMUP` untimed ones."""
    for _ in range(PROBE_WARMUP):
        step()
    seconds = []
    for _ in range(PROBE_STEPS):
        t0 = clock()
        step()
        seconds.append(clock() - t0)
    return float(np.median(seconds))


# ---- the rules -------------------------------------------------------------------------------------------------


def target_spacing(fp: DatasetFingerprint) -> tuple[np.ndarray, str]:
    """Median spacing per axis, with nnU-Net's anisotropy rule for a coarse axis; and the reason."""
    spacings = fp.spacings()
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    others = np.delete(target, coarse)
    if target[coarse] > ANISOTROPY * others.min():
        lowered = max(float(np.percentile(spacings[:, coarse], 10)), float(others.max()))
        reason = (f"median spacing; axis {coarse} is {target[coarse] / others.min():.1f}x coarser than the finest "
                  f"(> {ANISOTROPY:g}x): its 10th percentile {lowered:.3g} mm")
        target[coarse] = lowered
        return target, reason
    return target, f"median spacing of {len(fp.cases)} cases"


def pools_per_axis(patch: np.ndarray, spacing: np.ndarray, dims: int) -> list[list[int]]:
    """Strides per level: an axis pools while it keeps the bottleneck and its spacing is within 2x of the finest
    among the axes that still can (a stack too thin to pool again does not stop the other axes pooling)."""
    size, sp = patch.astype(float).copy(), spacing.astype(float).copy()
    levels: list[list[int]] = []
    while len(levels) < MAX_POOLS[dims]:
        poolable = size / 2 >= MIN_BOTTLENECK
        if not poolable.any():
            break
        finest = sp[poolable].min()
        stride = [2 if poolable[a] and sp[a] <= 2 * finest + 1e-9 else 1 for a in range(dims)]
        levels.append(stride)
        size /= np.array(stride)
        sp *= np.array(stride)
    return levels


def _divisible(patch: np.ndarray, levels: list[list[int]]) -> np.ndarray:
    total = np.prod(np.array(levels), axis=0) if levels else np.ones(len(patch), int)
    return (np.ceil(patch / total) * total).astype(int)


def fit_patch(median_shape: np.ndarray, spacing: np.ndarray, max_voxels: float, dims: int, *,
              square: bool = False) -> tuple[np.ndarray, list[list[int]]]:
    """The largest patch (at most ``median_shape``, at most ``max_voxels``) and its pooling; divisible by the
    network's total stride per axis.

    The whole of ``median_shape`` is taken when it costs at most :data:`WHOLE_IMAGE_SLACK` times ``max_voxels``: a
    patch that sees the whole image trains on what inference sees, which is worth a few fewer steps. With
    ``square`` (2D images without sides, whose patches are turned by 90 degrees) both axes keep one length, at
    most the shorter side.
    """
    patch = np.full(dims, float(median_shape.min())) if square else median_shape.astype(float).copy()
    floor = 2.0 ** 2 * MIN_BOTTLENECK  # no axis below 16 voxels unless the image is smaller
    if np.prod(patch) <= WHOLE_IMAGE_SLACK * max_voxels:
        max_voxels = float(np.prod(patch))  # the whole image (its largest square)
    while np.prod(patch) > max_voxels:
        extent = patch * spacing
        extent[patch <= floor] = -1  # shrink the physically longest axis that can still shrink
        axis = int(np.argmax(extent))
        if extent[axis] < 0:
            break
        shrunk = max(floor, math.floor(patch[axis] * 0.9))
        if square:
            patch[:] = shrunk
        else:
            patch[axis] = shrunk
    patch = np.maximum(np.round(patch), 1)
    levels = pools_per_axis(patch, spacing, dims)
    return _divisible(patch, levels), levels


def _lateral(labels: Mapping[str, int]) -> list[str]:
    return [n for n in labels if _LATERAL.search(n)]


def _modality_kind(modality: str, channels: int, dims: int) -> str:
    code = modality.upper()
    if code == "CT":
        return "ct"
    if code in ("MR", "MRI"):
        return "mr"
    if code in ("CR", "DX", "DR", "XR", "MG", "RG", "XRAY", "X-RAY"):
        return "xray"
    if code in ("FLUORESCENCE", "FL"):
        return "fluorescence"
    if code in ("SM", "HE", "H&E", "RGB") or channels == 3:
        return "rgb"
    return "xray" if dims == 2 else "mr"


def _intensity(kind: str, fp: DatasetFingerprint) -> tuple[dict[str, Any], str]:
    if kind == "ct":
        fg = fp.foreground_intensities()[:, 0]
        if fg.size == 0:
            raise ConfigError("no labelled voxels in any training case: the CT normalisation has no statistics",
                              fp.source)
        p_lo, p_hi = np.percentile(fg, [0.5, 99.5])
        lo, hi = min(float(p_lo), SOFT_TISSUE_HU[0]), max(float(p_hi), SOFT_TISSUE_HU[1])
        clipped = np.clip(fg, p_lo, p_hi)
        widened = (lo, hi) != (p_lo, p_hi)
        return ({"preset": "ct", "window_hu": [round(lo, 1), round(hi, 1)],
                 "mean_hu": round(float(clipped.mean()), 2), "std_hu": round(max(float(clipped.std()), 1e-3), 2)},
                (f"CT: the foreground 0.5/99.5 percentiles ({p_lo:.0f}, {p_hi:.0f} HU) of {fg.size} sampled voxels"
                 + (f", widened to the soft-tissue window ({SOFT_TISSUE_HU[0]:g}, {SOFT_TISSUE_HU[1]:g} HU) so "
                    "contrast-enhanced organs are not clipped" if widened else "")
                 + "; z-scored with the clipped foreground's mean/std"))
    if kind == "mr":
        return {"preset": "zscore"}, "MR: per-image z-score"
    if kind == "rgb":
        return {"preset": "rgb"}, "RGB: per-channel z-score over the image"
    if kind == "fluorescence":
        return {"preset": "fluorescence", "percentiles": [1.0, 99.8]}, "grey microscopy: per-image percentiles"
    return {"preset": "xray", "percentiles": [0.5, 99.5]}, "radiograph: per-image percentiles"


def _turned(kind: str, dims: int) -> bool:
    """Whether training turns patches by 90 degrees: 2D microscopy, which has no sides (its patches are square)."""
    return kind in ("rgb", "fluorescence") and dims == 2


def _augment(kind: str, dims: int, channels: int, symmetry: float, lateral: list[str]) -> tuple[dict[str, Any], str]:
    if kind in ("rgb", "fluorescence"):
        aug: dict[str, Any] = {"prob": 0.3, "flip_axes": list(range(dims)), "rotate90": _turned(kind, dims),
                               "scale_range": 0.1}
        if kind == "rgb" and channels == 3:
            aug.update(intensity_scale=0.0, intensity_shift=0.0, hed_jitter=0.05)
            why = "microscopy has no sides: mirroring along every axis, 90-degree turns, H&E stain jitter"
        else:
            aug.update(intensity_scale=0.2, intensity_shift=0.1, noise_std=0.02)
            why = "microscopy has no sides: mirroring along every axis, 90-degree turns, intensity jitter"
        if lateral:
            aug["flip_axes"] = [a for a in aug["flip_axes"] if a != 0]
            why += f"; no left-right mirroring: labels {lateral} have sides"
        return aug, why
    aug = {"prob": 0.3, "rotate_deg": 15.0, "scale_range": 0.3, "intensity_scale": 0.25, "intensity_shift": 0.1,
           "noise_std": 0.02, "gamma": [0.7, 1.5]}
    magnitudes = "nnU-Net's magnitudes otherwise (zoom 0.7-1.3, rotations to 15 degrees, contrast, gamma and noise)"
    if dims == 2:
        aug["elastic"] = RADIOGRAPH_ELASTIC
        magnitudes += (f", and smooth deformations ({RADIOGRAPH_ELASTIC:g} of a quarter patch) so organs vary in shape and "
                       "relative size as between patients (an enlarged heart)")
    if lateral:
        return aug, f"radiology: no mirroring, labels {lateral} have sides; {magnitudes}"
    if symmetry >= MIN_MIRROR_DICE:
        aug["flip_axes"] = [0]
        return aug, (f"radiology: left-right mirroring only, every label is its own mirror image (overlap "
                     f"{symmetry:.2f} >= {MIN_MIRROR_DICE:g}); {magnitudes}")
    return aug, (f"radiology: no mirroring, a label lies on one side (mirror overlap {symmetry:.2f} < "
                 f"{MIN_MIRROR_DICE:g}); {magnitudes}")


def _check_budget(minutes: float) -> None:
    if not minutes > 0:
        raise ConfigError(f"the training budget must be a positive number of minutes, got {minutes:g}", "--minutes")


def plan_workflow(
    fp: DatasetFingerprint,
    workflow: Mapping[str, Any] | None = None,
    *,
    minutes: float = 10.0,
    device: str = "cpu",
    throughput: float | None = None,
    memory_gib: float | None = None,
    user_keys: frozenset[str] = frozenset(),
) -> Plan:
    """Plan a complete workflow config for ``fp`` (see the module docstring for the rules).

    Parameters
    ----------
    fp : DatasetFingerprint
        The training cases.
    workflow : mapping, optional
        The task's settings (``name``, ``labels``, ``label_source``, ``modality``, ``postprocess``) and overrides
        of any planned key (top-level config keys; nested sections replace the planned ones key by key).
    minutes : float
        The training budget, minutes.
    device : {"cpu", "cuda"}
    throughput : float, optional
        Training voxels per second of the base network (:func:`measure_throughput` when not given).
    memory_gib : float, optional
        GPU memory for the patch and batch (queried from the device when not given).
    user_keys : frozenset of str
        Keys of ``workflow`` the user set on the command line rather than in the YAML (shown as "user").
    """
    workflow = dict(workflow or {})
    dims, channels = fp.dims, fp.channels
    plan = Plan(config={})
    _check_budget(minutes)

    def decide(key: str, value: Any, reason: str) -> None:
        plan.config[key] = value
        plan.decisions.append(Decision(key, value, reason))

    labels = workflow.get("labels") or fp.label_names or _labels_from(fp)
    labels_from = ("the workflow's labels" if "labels" in workflow else
                   "the labels of dataset.json" if fp.label_names else "label values found")
    label_source = workflow.get("label_source", "semantic")
    kind = _modality_kind(str(workflow.get("modality") or fp.modality), channels, dims)
    decide("name", workflow.get("name", fp.source.parent.name or "planned"), "the workflow's name")
    decide("dims", dims, f"{dims}D images")
    decide("labels", dict(labels), labels_from)
    decide("label_source", label_source, "how the stored label maps encode classes")
    decide("in_channels", channels, f"{channels} channel(s) in every case")

    # 1. spacing and orientation (data without a pixel size is planned in input pixels)
    spacing, reason = target_spacing(fp) if fp.spacing_known else (np.ones(dims), "pixel size unknown in some case")
    if dims == 3:
        decide("orientation", "RAS", "one axis order for every case (array axis 0 runs left to right)")

    # 2. patch, network, batch: coarsen the spacing while the affordable patch sees too little of the image
    dev = "cuda" if device == "cuda" else "cpu"
    batch = (4 if dims == 2 else 2) if dev == "cpu" else (12 if dims == 2 else 2)
    norm = network_norm(batch)
    if throughput is None and dev == "cpu":
        throughput = measure_throughput(dims, dev, channels, len(labels), norm)
    if dev == "cuda" and memory_gib is None:
        import torch

        memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    budget = Budget(minutes, dev, float(throughput or 0.0), memory_gib)
    max_voxels = budget.affordable_voxels(dims, batch)
    objects = fp.object_sizes()
    small_mm = float(np.percentile(objects, 5)) if objects.size else math.inf
    coarsened = 0
    axial = dims == 3 and kind in ("ct", "mr")
    while True:
        median_shape = np.maximum(np.round(fp.median_extent_mm() / spacing), 1)
        reach = median_shape.copy()  # the most of the median image a patch may span
        if axial:
            reach[2] = max(1.0, math.ceil(median_shape[2] * AXIAL_SHARE))
        patch, levels = fit_patch(reach, spacing, max_voxels, dims, square=_turned(kind, dims))
        coverage = float(np.prod(np.minimum(patch, reach)) / np.prod(reach))
        finer = spacing <= 2 * spacing.min() + 1e-9
        next_spacing = np.where(finer, spacing * 2, spacing)
        small_voxels = (small_mm / np.prod(next_spacing)) ** (1 / dims)
        if coverage >= MIN_COVERAGE or small_voxels < MIN_OBJECT_VOXELS or coarsened >= 3:
            break
        spacing, coarsened = next_spacing, coarsened + 1
    why = reason if not coarsened else (
        f"{reason}, coarsened {2 ** coarsened}x so a patch sees {coverage:.0%} of what it may span of the median image "
        f"(the smallest objects stay >= {MIN_OBJECT_VOXELS:g} voxels across)")
    if fp.spacing_known:
        decide("spacing_mm", [float(f"{s:.4g}") for s in spacing], why)
    elif coarsened:
        decide("spacing_px", [float(f"{s:.4g}") for s in spacing], f"{why}; in input pixels")
    else:
        decide("spacing_mm", None, f"{why}: the images keep their pixels")
    if coverage < MIN_COVERAGE:
        plan.warnings.append(f"the patch sees only {coverage:.0%} of what it may span of the median image at this budget")
    where = (f"{budget.memory_gib:.0f} GiB of GPU memory" if dev == "cuda"
             else f"{MIN_STEPS[dims]} steps of batch {batch} in {minutes:g} min at {budget.voxels_per_second / 1e6:.2f} "
                  "Mvoxel/s measured")
    decide("patch_size", patch.astype(int).tolist(),
           f"median image {median_shape.astype(int).tolist()} voxels"
           + (f", along the body axis at most {AXIAL_SHARE:.0%} of it ({int(reach[2])} slices: scans differ in "
              "coverage, so organs must be seen cut off by the patch's ends)" if axial else "")
           + f"; at most {max_voxels:,.0f} per patch ({where}); divisible by each axis's total stride")
    if not levels:
        raise ConfigError(f"the images are too small to pool even once (median shape {median_shape.astype(int).tolist()})",
                          fp.source)
    base = BASE_CHANNELS[dev]
    chans = [min(base * 2**i, MAX_CHANNELS) for i in range(len(levels) + 1)]
    strides = [s if len(set(s)) > 1 else s[0] for s in levels]
    decide("network", {"name": "UNet", "params": {"channels": chans, "strides": strides, "num_res_units": 2,
                                                  "norm": norm}},
           f"{len(levels)} poolings: an axis pools while within 2x of the finest spacing and >= {MIN_BOTTLENECK} "
           f"voxels remain; {norm} normalisation ({batch} patches per step"
           f"{'' if norm == 'batch' else f', fewer than {MIN_BATCH_NORM}'})")

    # 3. intensity
    intensity, why = _intensity(kind, fp)
    decide("intensity", intensity, why)

    # 4. sampling and augmentation
    fractions = fp.label_fractions()
    rarest = min((f for v, f in fractions.items() if v), default=1.0)
    n_cases = len(fp.cases)
    steps_per_epoch = 25
    decide("loss", {"name": "dice_ce"}, "Dice + cross-entropy")
    augment, why = _augment(kind, dims, channels, fp.mirror_symmetry(), _lateral(labels))
    if kind == "ct":
        augment["enhance_hu"] = CONTRAST_ENHANCEMENT_HU
        why += (f"; soft tissue enhanced by up to +-{CONTRAST_ENHANCEMENT_HU:g} HU, fat and air unchanged, as between "
                "contrast phases")
    if augment.get("rotate90") and len(set(patch.tolist())) > 1:
        augment["rotate90"] = False  # a turned non-square patch would not stack with the others of its batch
        why += f"; no 90-degree turns of the non-square patch {patch.astype(int).tolist()} (mirroring stays)"
    decide("augment", augment, why)
    per_step_s = batch * float(np.prod(patch)) / budget.voxels_per_second if budget.voxels_per_second else None
    epoch_s = per_step_s * steps_per_epoch if per_step_s else None
    val_voxels = float(np.sum(np.prod(fp.shapes() * fp.spacings() / spacing, axis=1)))
    val_s = val_voxels / budget.voxels_per_second * 3 / (1 - 0.25) ** dims if budget.voxels_per_second else None
    val_every = max(1, math.ceil(val_s / (0.1 * epoch_s))) if val_s and epoch_s else 10
    max_epochs = max(1, math.ceil(minutes * 60 / epoch_s * 4)) if epoch_s else 1000  # the budget ends the run
    if epoch_s and epoch_s > minutes * 60 * USABLE_SHARE:
        plan.warnings.append(f"one epoch ({steps_per_epoch} steps) takes about {epoch_s / 60:.1f} min, more than the "
                             f"{minutes:g}-minute budget: training will stop after its first epoch")
    decide("train", {"max_epochs": max_epochs, "max_minutes": minutes, "batch_size": batch,
                     "samples_per_image": max(1, math.ceil(steps_per_epoch * batch / n_cases)),
                     "pos_fraction": 0.67 if rarest < 0.01 else 0.33, "val_every": val_every,
                     "early_stop_patience": None},
           f"batch {batch}; {steps_per_epoch} steps per epoch; foreground-centred patches "
           f"{'67' if rarest < 0.01 else '33'} % (rarest label {rarest:.2%} of voxels); validation every {val_every} "
           "epochs (about a tenth of the time); no early stop: the budget ends the run")
    decide("optimizer", {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "poly",
                         "anneal_over": "budget"}, f"the learning rate anneals to zero over the {minutes:g}-minute budget")
    overlap = 0.5 if dev == "cuda" else 0.25
    decide("inference", {"overlap": overlap, "sw_batch_size": batch,
                         "tta": bool(augment.get("flip_axes")) and (dims == 2 or dev == "cuda")},
           "test-time mirroring along the mirrored axes where it is cheap (2D or GPU)"
           + (", and the 90-degree turns of the turned square patches" if augment.get("rotate90") else "")
           if augment.get("flip_axes") else "no mirroring, so no test-time mirroring")
    decide("device", device if device in ("cpu", "cuda") else "auto", "the planning device")

    # the workflow's own settings and overrides win, key by key; rules for labels this dataset lacks are dropped
    rules = workflow.get("postprocess")
    if isinstance(rules, Mapping) and "labels" not in workflow:
        dropped = sorted(set(rules) - set(labels) - {"default"})
        if dropped:
            workflow["postprocess"] = {k: v for k, v in rules.items() if k not in dropped}
            plan.warnings.append(f"the workflow's post-processing rules for {dropped} do not apply: the dataset has "
                                 "no such labels")
    for key, value in workflow.items():
        if key == "modality":
            continue
        source = "user" if key in user_keys else "workflow"
        if isinstance(value, Mapping) and isinstance(plan.config.get(key), Mapping):
            merged = {**plan.config[key], **value}
            plan.config[key] = merged
        else:
            plan.config[key] = value
        plan.decisions = [d for d in plan.decisions if d.key != key]
        plan.decisions.append(Decision(key, plan.config[key], f"set by the {source}", source))
    return plan


def _labels_from(fp: DatasetFingerprint) -> dict[str, int]:
    values = sorted({v for c in fp.cases for v in c.label_voxels})
    return {"background": 0, **{f"label_{v}": v for v in values if v}}


_REQUIRED = ("name", "dims", "labels", "intensity", "patch_size", "network")


def read_workflow(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bool]:
    """A workflow YAML and whether it is a complete config (every required key given) or a task to plan for.

    Raises
    ------
    medseg.errors.ConfigError
        Unreadable YAML, or a key that is neither a config key nor ``modality``.
    """
    from medseg._files import read_yaml
    from medseg.config import WorkflowConfig

    data = read_yaml(path, "config", expect=dict)
    if all(k in data for k in _REQUIRED) and "modality" not in data:
        return data, True  # validated as a config by medseg.config, which names any bad key
    unknown = sorted(set(data) - set(WorkflowConfig.model_fields) - {"modality"})
    if unknown:
        raise ConfigError(f"unknown workflow keys {unknown}; known: modality, {', '.join(WorkflowConfig.model_fields)}",
                          path)
    return data, False


def plan_dataset(
    dataset_json: str | os.PathLike[str],
    workflow: Mapping[str, Any] | None = None,
    *,
    minutes: float = 10.0,
    device: str = "cpu",
    **options: Any,
) -> Plan:
    """:func:`~medseg.plan.fingerprint.fingerprint_dataset` then :func:`plan_workflow`."""
    from medseg.plan.fingerprint import fingerprint_dataset

    _check_budget(minutes)  # before the fingerprint, which reads every case
    workflow = dict(workflow or {})
    fp = fingerprint_dataset(dataset_json, label_source=workflow.get("label_source", "semantic"),
                             labels=workflow.get("labels"))
    return plan_workflow(fp, workflow, minutes=minutes, device=device, **options)


def workflow_for(
    path: str | os.PathLike[str], dataset_json: str | os.PathLike[str], *, minutes: float, device: str = "cpu",
    **options: Any,
) -> tuple[dict[str, Any], Plan | None]:
    """The complete config of a workflow YAML for ``dataset_json``: a complete config as it is (and no plan), a task
    YAML planned (:func:`plan_dataset`) -- what ``medseg train CONFIG`` trains."""
    data, complete = read_workflow(path)
    if complete:
        return data, None
    plan = plan_dataset(dataset_json, data, minutes=minutes, device=device, **options)
    return plan.config, plan
