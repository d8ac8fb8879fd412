"""From a semantic label map to clean objects: components, size filters, holes, touching-cell splitting.

:func:`connected_components` labels every connected region of every label at
once (connected-components-3d) and returns an instance map with per-instance
sizes. :func:`postprocess` applies per-label rules from a
:class:`PostprocessConfig` (the ``postprocess:`` block of a workflow YAML)::

    postprocess:
      default: {connectivity: 26}
      labels:
        5: {keep_largest: true, fill_holes: true}          # liver: one organ, no holes
        1: {min_size: 500 mm3}                              # drop specks below 0.5 mL
    # nuclei:
    postprocess:
      default: {min_size: 20 um2, fill_holes: true, split_touching: true, min_separation: 4 um}
    # nuclei as interior / boundary classes (workflow YAMLs name the labels):
    postprocess:
      interior: {min_size: 5 um2, connectivity: 4}
      boundary: {merge_into: interior}                      # each ring joins the interior it surrounds

Sizes and distances carry their unit (``mm3``, ``ml``, ``mm2``, ``um2``,
``um``, ``mm``; ``px`` counts pixels/voxels for images without a known spacing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from medseg.errors import ConfigError
from medseg.io.image import Image, LabelMap
from medseg.labelmap import (
    CONNECTIVITY,
    as_label_map,
    connectivity_for,
    face_neighbour_slices,
    fill_holes,
    label_components,
    label_runs,
    label_stats,
    length_unit,
)

_QUANTITY = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ]+?)([23]?)\s*")
_LENGTH_MM = {"mm": 1.0, "um": 1e-3, "µm": 1e-3, "cm": 10.0}
_VOLUME_ALIASES = {"ml": ("cm", 3)}
_Model = TypeVar("_Model", bound=BaseModel)


def _parse_quantity(text: str) -> tuple[float, str, int]:
    """``"500 mm3"`` -> ``(500.0, "mm", 3)``; ``"0.5 ml"`` -> ``(0.5, "cm", 3)``; ``"10 px"`` -> ``(10.0, "px", 1)``."""
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(f"expected a number and a unit such as '500 mm3', '30 um2' or '4 um', got {text!r}")
    value, unit, power = float(match[1]), match[2].lower(), int(match[3] or 1)
    if unit in _VOLUME_ALIASES and not match[3]:
        unit, power = _VOLUME_ALIASES[unit]
    if unit not in _LENGTH_MM and unit != "px":
        raise ValueError(f"unknown unit {match[2]!r} in {text!r} (use mm, um, cm, ml or px)")
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value, unit, power


def _check_size(text: str) -> str:
    _, unit, power = _parse_quantity(text)
    if unit != "px" and power == 1:
        raise ValueError(f"{text!r} is a length; a size needs an area or volume unit (mm2, um2, mm3, ml) or px")
    return text


def _check_length(text: str) -> str:
    _, _, power = _parse_quantity(text)
    if power != 1:
        raise ValueError(f"{text!r} is not a length (use mm, um or px)")
    return text


Size = Annotated[str, AfterValidator(_check_size)]
Length = Annotated[str, AfterValidator(_check_length)]


class LabelPostprocess(BaseModel):
    """Post-processing rules for one label.

    Attributes
    ----------
    min_size : str, optional
        Components smaller than this are removed: ``"500 mm3"``, ``"0.5 ml"``,
        ``"30 um2"``, or ``"10 px"`` (a pixel/voxel count).
    keep_largest : bool or int
        Keep only the largest component (``true``: organs that are one piece), or the N largest
        (``2``: both lungs of a label that holds the two).
    fill_holes : bool
        Fill background cavities enclosed by the label (voxels of other labels are kept); for the target of
        ``merge_into`` labels also the cavities its objects enclose once those pixels joined them (a nucleus
        ring around pale chromatin), each cavity pixel joining the object it reaches first.
    split_touching : bool
        Separate touching objects (cells, nuclei) by a distance-transform watershed.
    min_separation : str, optional
        With ``split_touching``: the smallest distance between two object
        centres (``"4 um"``); watershed seeds are distance-map peaks at least
        this far apart. Required when ``split_touching`` is set.
    connectivity : int, optional
        4 or 8 in 2D, 6, 18 or 26 in 3D; full connectivity (8/26) by default.
    merge_into : int, optional
        This label forms no objects of its own: its pixels join the objects of
        label ``merge_into`` (a name in a workflow YAML), each pixel the object
        it reaches first through this label's pixels (geodesic flooding from
        those objects, stepping to neighbours of the target label's
        connectivity, so an object stays one piece in its label's sense;
        ties go to the higher-numbered object); pixels that reach none become
        background. A boundary
        class that keeps touching nuclei apart then ends inside the nucleus it
        outlines. Combines with no other rule.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_size: Size | None = None
    keep_largest: bool | int = Field(False, ge=0)
    fill_holes: bool = False
    split_touching: bool = False
    min_separation: Length | None = None
    connectivity: Literal[4, 8, 6, 18, 26] | None = None
    merge_into: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> LabelPostprocess:
        if self.split_touching and self.min_separation is None:
            raise ValueError("split_touching needs min_separation (e.g. '4 um')")
        others = [k for k in self.model_fields_set - {"merge_into"} if getattr(self, k) != type(self).model_fields[k].default]
        if self.merge_into is not None and others:
            raise ValueError(f"merge_into combines with no other rule, got {sorted(others)}")
        return self


class PostprocessConfig(BaseModel):
    """Per-label post-processing: ``default`` rules, overridden for the label values in ``labels``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: LabelPostprocess = LabelPostprocess()
    labels: dict[int, LabelPostprocess] = {}

    @model_validator(mode="after")
    def _merges_resolve(self) -> PostprocessConfig:
        if self.default.merge_into is not None:
            raise ValueError("merge_into is a rule for one label, not the default")
        for value, rule in self.labels.items():
            target = rule.merge_into
            if target is not None and (target == value or self.for_label(target).merge_into is not None):
                raise ValueError(f"label {value} merges into {target}, which merges itself; merge into an object label")
        return self

    @property
    def merged(self) -> dict[int, int]:
        """``{label: target}`` of the labels whose pixels join another label's objects (``merge_into``)."""
        return {v: r.merge_into for v, r in self.labels.items() if r.merge_into is not None}

    @classmethod
    def from_label_names(cls, section: Mapping[str, Any], label_values: Mapping[str, int]) -> PostprocessConfig:
        """Build from a workflow's ``postprocess:`` section keyed by label name (``default`` for the rest).

        Raises
        ------
        medseg.errors.ConfigError
            A name that is not in ``label_values``, or invalid rules.

        Examples
        --------
        >>> cfg = PostprocessConfig.from_label_names({"liver": {"keep_largest": True}}, {"background": 0, "liver": 5})
        >>> cfg.for_label(5).keep_largest
        True
        """
        unknown = sorted(set(section) - set(label_values) - {"default"})
        if unknown:
            raise ConfigError(f"postprocess rules name unknown labels {unknown}; known: {sorted(label_values)}")
        rules = {
            label_values[name]: _validated(LabelPostprocess, _target_value(rule, label_values, name), name)
            for name, rule in section.items()
            if name != "default"
        }
        default = _target_value(section.get("default", {}), label_values, "default")
        return _validated(cls, {"default": default, "labels": rules})

    def for_label(self, value: int) -> LabelPostprocess:
        """The rules that apply to label ``value``."""
        return self.labels.get(int(value), self.default)


def _target_value(rule: Any, label_values: Mapping[str, int], where: str) -> Any:
    """``rule`` with a ``merge_into`` label name replaced by its value."""
    if not isinstance(rule, Mapping) or not isinstance(rule.get("merge_into"), str):
        return rule
    name = rule["merge_into"]
    if name not in label_values or label_values[name] == 0:
        raise ConfigError(f"postprocess rules of {where} merge into {name!r}, which is not a foreground label; "
                          f"known: {sorted(n for n, v in label_values.items() if v)}")
    return {**rule, "merge_into": label_values[name]}


def _validated(model: type[_Model], data: Any, where: str = "") -> _Model:
    """``model.model_validate(data)`` with errors turned into a one-line :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in (where, *first["loc"]) if p != "")
        raise ConfigError(
            f"invalid post-processing rules at {loc}: {first['msg'].removeprefix('Value error, ')}"
        ) from exc


@dataclass
class PostprocessResult:
    """The outputs of post-processing.

    Attributes
    ----------
    semantic : LabelMap
        The cleaned label map (one value per class), on the input's grid.
    instances : LabelMap
        uint32 instance map on the same grid: 0 background, 1..n objects.
    classes : pandas.DataFrame
        One row per instance: ``instance``, ``label`` (its class value),
        ``voxel_count`` and its size (``volume_mm3``, ``area_mm2``, ``area_um2``
        or ``*_px`` when the spacing is unknown).
    """

    semantic: LabelMap
    instances: LabelMap
    classes: pd.DataFrame

    @property
    def n_instances(self) -> int:
        """Number of objects."""
        return len(self.classes)


def _classes_frame(instance: np.ndarray, label: np.ndarray, count: np.ndarray, grid: Image) -> pd.DataFrame:
    """The instance -> class table, with each instance's size in the grid's unit."""
    unit = length_unit(grid)
    scale = 1000.0 if unit == "um" else 1.0
    size_col = f"volume_{unit}3" if grid.ndim == 3 else f"area_{unit}2"
    return pd.DataFrame(
        {
            "instance": instance.astype(np.uint32),
            "label": label,
            "voxel_count": count.astype(np.int64),
            size_col: count * (grid.voxel_volume_mm3 * scale**grid.ndim),
        }
    )


def connected_components(labels: Image, connectivity: int | None = None) -> PostprocessResult:
    """Label the connected components of every label at once; sizes per instance.

    Parameters
    ----------
    labels : Image
        Integer label map (several labels are separated independently: two
        touching regions of different labels are different instances).
    connectivity : int, optional
        4/8 (2D) or 6/18/26 (3D); 8/26 by default.

    Returns
    -------
    PostprocessResult
        ``semantic`` is ``labels`` itself; instances are numbered in memory order.

    Examples
    --------
    >>> res = connected_components(Image(np.array([[1, 0, 1], [0, 0, 2]], np.uint8)), connectivity=4)
    >>> res.classes[["instance", "label", "voxel_count"]].values.tolist()
    [[1, 1, 1], [2, 1, 1], [3, 2, 1]]
    """
    labels = as_label_map(labels)
    conn = connectivity_for(connectivity, labels.ndim, labels.source)
    instances, n = label_components(labels.array, conn)
    # a run of one label along a row is connected, so it lies inside one component
    runs = label_runs(labels.array)
    run_instance = runs.gather(instances)
    count = np.bincount(run_instance, weights=runs.length, minlength=n + 1)[1:]
    label = np.zeros(n + 1, labels.array.dtype)
    label[run_instance] = runs.value
    classes = _classes_frame(np.arange(1, n + 1), label[1:], count, labels)
    return PostprocessResult(labels, labels.with_labels(instances, {}), classes)


def size_mm(text: str, grid: Image) -> float:
    """A size (``"500 mm3"``, ``"30 um2"``, ``"10 px"``) in the grid's physical unit, mm^ndim.

    Raises
    ------
    medseg.errors.ConfigError
        A unit that does not fit the grid's dimensionality, or a physical size on a grid without known spacing.
    """
    value, unit, power = _parse_quantity(text)
    if unit == "px":
        return value * grid.voxel_volume_mm3
    if power != grid.ndim:
        raise ConfigError(
            f"size {text!r} does not fit a {grid.ndim}D image (use {'mm3/ml' if grid.ndim == 3 else 'mm2/um2'})",
            grid.source,
        )
    _require_spacing(text, grid)
    return value * _LENGTH_MM[unit] ** power


def length_voxels(text: str, grid: Image) -> np.ndarray:
    """A distance (``"4 um"``, ``"2 mm"``, ``"5 px"``) as a number of voxels along each axis of ``grid``."""
    value, unit, _ = _parse_quantity(text)
    if unit == "px":
        return np.full(grid.ndim, value)
    _require_spacing(text, grid)
    return value * _LENGTH_MM[unit] / np.array(grid.spacing)


def _require_spacing(text: str, grid: Image) -> None:
    if not grid.spacing_known:
        raise ConfigError(f"{text!r} is physical but the image has no known pixel spacing; give it in px", grid.source)


def ellipsoid_offsets(radius: np.ndarray) -> np.ndarray:
    """``(k, ndim)`` integer offsets of the voxels within an ellipsoid of ``radius`` voxels per axis (centre included)."""
    half = np.floor(radius).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    inside = sum((g / max(r, 1e-9)) ** 2 for g, r in zip(grids, radius, strict=True)) <= 1.0
    return np.stack([g[inside] for g in grids], axis=1)


def _footprint_maxima(distance: np.ndarray, mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose value is the maximum of ``distance`` over ``offsets`` around them (0 beyond the edge).

    Equals ``distance == scipy.ndimage.maximum_filter(distance, footprint, mode="constant")``
    inside ``mask``, but the full footprint is only read at the voxels that are
    maxima of its part within one voxel (a necessary condition), so a wide
    3D footprint costs a gather per candidate instead of a pass per footprint voxel.
    """
    from scipy import ndimage

    near = offsets[np.abs(offsets).max(axis=1) <= 1]
    small = np.zeros((3,) * distance.ndim, bool)
    small[tuple((near + 1).T)] = True
    candidates = np.flatnonzero(mask & (distance == ndimage.maximum_filter(distance, footprint=small, mode="constant")))
    half = np.abs(offsets).max(axis=0)
    padded = np.pad(distance, [(h, h) for h in half])
    strides = np.cumprod((1, *padded.shape[::-1][:-1]))[::-1]  # C-order element strides of the padded array
    flat_offsets = offsets @ strides
    centre = np.ravel_multi_index(tuple(np.array(np.unravel_index(candidates, distance.shape)) + half[:, None]), padded.shape)
    padded = padded.ravel()
    keep = np.empty(candidates.size, bool)
    step = max(1, (1 << 22) // len(offsets))
    for start in range(0, candidates.size, step):
        around = padded[centre[start : start + step, None] + flat_offsets[None, :]]
        keep[start : start + step] = padded[centre[start : start + step]] >= around.max(axis=1)
    peaks = np.zeros(distance.shape, bool)
    peaks.flat[candidates[keep]] = True
    return peaks


def _padded_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask with one voxel of background around it (clipped to the array)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    return tuple(box)


def split_touching(
    mask: np.ndarray, grid: Image, min_separation: str, *, components: np.ndarray | None = None
) -> np.ndarray:
    """Distance-transform watershed of ``mask``: one object per distance peak, peaks ``min_separation`` apart.

    The distance to the background (``edt``, multi-threaded and anisotropic)
    is flooded from its peaks by scikit-image's ``watershed``. A seed is a
    maximum of the distance within an ellipsoid of radius ``min_separation``
    (``"4 um"``, ``"3 mm"``, ``"5 px"``) that also rises at least half a voxel
    above the saddle to any higher peak (scikit-image ``h_maxima``), so
    pixelated outlines do not split one object in two.

    Parameters
    ----------
    mask : ndarray of bool
        The objects, on ``grid``.
    grid : Image
        Gives the voxel spacing.
    min_separation : str
        Smallest distance between two object centres.
    components : ndarray, optional
        ``mask``'s connected components, when already at hand: a component
        without a seed stays one object.

    Returns
    -------
    ndarray of uint32
        Objects numbered from 1 (0 outside ``mask``; numbers may skip values).
    """
    import edt
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    offsets = ellipsoid_offsets(length_voxels(min_separation, grid))
    out = np.zeros(mask.shape, np.uint32)
    if not mask.any():
        return out
    box = _padded_box(mask)  # what lies beyond changes nothing
    mask = mask[box]
    components = label_components(mask, CONNECTIVITY[mask.ndim][-1])[0] if components is None else components[box]
    distance = edt.edt(mask, anisotropy=grid.spacing, black_border=False)
    if not np.isfinite(distance).all():  # no background anywhere (the mask fills the image): from the image's edge
        distance = edt.edt(mask, anisotropy=grid.spacing, black_border=True)
    peaks = _footprint_maxima(distance, mask, offsets)
    peaks &= h_maxima(distance, 0.5 * min(grid.spacing)).astype(bool)
    seeds, _ = label_components(peaks, CONNECTIVITY[mask.ndim][-1])  # plateaus -> one seed
    split = watershed(-distance, seeds, mask=mask).astype(np.uint32)
    unseeded = mask & (split == 0)
    if unseeded.any():
        split[unseeded] = components[unseeded].astype(np.uint32) + split.max()
    out[box] = split
    return out


def boundary_watershed(objects: np.ndarray, boundary: np.ndarray, dynamics: float) -> np.ndarray:
    """The objects of a mask, separated along the ridges of a boundary map that are high enough.

    Every watershed basin of ``boundary`` within ``objects`` (flooded from its
    regional minima, face-connected) is a candidate object; going up the passes
    between touching basins from the lowest, a basin joins its neighbour when
    its lowest point lies less than ``dynamics`` below the pass (the basin's
    dynamics, Grimaud 1992: the criterion of scikit-image's ``h_minima``, without
    its reconstruction over the whole array). A pale nucleus whose boundary probability
    wavers inside it stays one object; two nuclei with a clear ridge between
    them stay two.

    Parameters
    ----------
    objects : ndarray of bool
        Where objects are.
    boundary : ndarray of float
        Elevation on the same grid, e.g. a boundary probability (0-1).
    dynamics : float
        Smallest depth, in ``boundary``'s units, of a basin that stays an object of its own.

    Returns
    -------
    ndarray of uint32
        Objects numbered from 1 (0 outside ``objects``; numbers may skip values).
    """
    from scipy import ndimage
    from skimage.morphology import local_minima
    from skimage.segmentation import watershed

    elevation = np.where(objects, boundary, np.inf)
    seeds, n = label_components(local_minima(elevation, connectivity=1, allow_borders=True) & objects,
                                CONNECTIVITY[objects.ndim][0])
    basins = watershed(elevation, seeds, mask=objects).astype(np.uint32)
    if n < 2:
        return basins
    first, second, passes = [], [], []
    for lo, hi in face_neighbour_slices(basins.ndim):  # face neighbours in two basins; the pass is the higher one
        a, b = basins[lo], basins[hi]
        cross = (a != b) & (a > 0) & (b > 0)
        first.append(np.minimum(a[cross], b[cross]))
        second.append(np.maximum(a[cross], b[cross]))
        passes.append(np.maximum(elevation[lo][cross], elevation[hi][cross]))
    first, second, passes = np.concatenate(first), np.concatenate(second), np.concatenate(passes)
    order = np.lexsort((passes, second, first))  # the lowest pass of each pair first
    pair = first[order].astype(np.int64) * (n + 1) + second[order]
    lowest = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    first, second, passes = first[order][lowest], second[order][lowest], passes[order][lowest]
    depth = np.r_[np.inf, ndimage.minimum(elevation, basins, np.arange(1, n + 1))]  # each basin's lowest point
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(passes, kind="stable").tolist():
        a, b = root(int(first[k])), root(int(second[k]))
        if a != b and passes[k] - max(depth[a], depth[b]) < dynamics:
            keep, joins = (a, b) if depth[a] <= depth[b] else (b, a)
            parent[joins] = keep
    while not np.array_equal(parent, parent[parent]):  # every basin points at its object's deepest basin
        parent = parent[parent]
    return parent.astype(np.uint32)[basins]


def postprocess(labels: Image, config: PostprocessConfig | Mapping[str, Any] | None = None) -> PostprocessResult:
    """Clean a semantic label map and separate it into instances, following per-label rules.

    For each label, in this order: fill holes, label components, drop
    components below ``min_size``, keep the largest, split touching objects.
    Labels without rules just get their connected components. Last, the
    pixels of ``merge_into`` labels join the objects they touch (see
    :class:`LabelPostprocess`).

    Parameters
    ----------
    labels : Image
        Integer label map (e.g. a model's output).
    config : PostprocessConfig or mapping, optional
        The rules; a mapping is validated as a :class:`PostprocessConfig`.

    Returns
    -------
    PostprocessResult
        Cleaned semantic map (input dtype), uint32 instance map, instance -> class table.

    Raises
    ------
    medseg.errors.ConfigError
        Invalid rules, or a unit that does not fit the image.
    medseg.errors.LabelError
        Invalid label map.
    """
    import fastremap

    cfg = config if isinstance(config, PostprocessConfig) else _validated(PostprocessConfig, config or {})
    labels = as_label_map(labels)
    semantic = labels.array.copy(order="K")  # keeps the memory order: every pass below runs along memory
    # np.zeros maps zeroed pages lazily (zeros_like would write them all); same memory order as semantic
    instances = np.zeros(semantic.shape, np.uint32, order="F" if semantic.flags.f_contiguous else "C")
    next_id = 1
    stats = label_stats(semantic)
    merged = cfg.merged
    for value, low, high in zip(stats.key.tolist(), stats.bbox_min, stats.bbox_max, strict=True):
        if value in merged:
            continue
        box = tuple(slice(a, b + 1) for a, b in zip(low.tolist(), high.tolist(), strict=True))
        rule = cfg.for_label(value)
        conn = connectivity_for(rule.connectivity, labels.ndim, labels.source)
        crop = semantic[box]
        mask = crop == value
        if rule.fill_holes:
            holes = fill_holes(mask)
            holes &= crop == 0
            np.copyto(crop, value, where=holes)
            mask |= holes
        components, n = label_components(mask, conn)
        local = components
        if rule.min_size is not None or rule.keep_largest:
            sizes = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:] * labels.voxel_volume_mm3
            keep = np.ones(n, bool)
            if rule.min_size is not None:
                keep &= sizes >= size_mm(rule.min_size, labels)
            if rule.keep_largest and keep.any():
                largest = np.argsort(-np.where(keep, sizes, -1.0), kind="stable")[: int(rule.keep_largest)]
                keep &= np.isin(np.arange(n), largest)
            if not keep.all():
                kept = np.concatenate([[False], keep])[components]
                crop[mask & ~kept] = 0
                mask &= kept
                local = np.where(kept, components, 0).astype(np.uint32)
        if not mask.any():
            continue
        if rule.split_touching:
            local = split_touching(mask, labels, rule.min_separation, components=components)
        if local is not components:  # cc3d numbers components 1..n in memory order already
            local, _ = fastremap.renumber(local, preserve_zero=True)  # 1..m, background stays 0
        if next_id == 1 and local.shape == instances.shape and local.dtype == np.uint32:
            instances = local  # a label spanning the whole grid: its numbering is the instance map (0 outside it)
        else:
            np.add(local, np.uint32(next_id - 1), out=instances[box], where=mask, casting="unsafe")
        next_id += int(local.max())
    for value, target in merged.items():
        _merge_into(semantic, instances, value, target,
                    connectivity_for(cfg.for_label(target).connectivity, labels.ndim, labels.source))
    for target in sorted(set(merged.values())):
        if cfg.for_label(target).fill_holes:
            _fill_object_holes(semantic, instances, target,
                               connectivity_for(cfg.for_label(target).connectivity, labels.ndim, labels.source))
    return _result(labels.with_labels(semantic), labels.with_labels(instances, {}))


def _fill_object_holes(semantic: np.ndarray, instances: np.ndarray, target: int, connectivity: int) -> None:
    """Background cavities enclosed by ``target``'s objects become ``target``, in place, each pixel numbered as the
    object it reaches first (:func:`_flood`)."""
    mask = semantic == target
    holes = fill_holes(mask)
    holes &= semantic == 0
    if not holes.any():
        return
    grown = _flood(np.where(mask, instances, 0), holes, connectivity)
    holes &= grown > 0  # a pocket walled off by another label's pixels stays background
    semantic[holes] = target
    instances[holes] = grown[holes]


def _merge_into(semantic: np.ndarray, instances: np.ndarray, value: int, target: int, connectivity: int) -> None:
    """Give the pixels of ``value`` to the ``target`` objects they reach first through ``value`` pixels, in place: in
    ``semantic`` reached pixels become ``target`` and the rest 0, in ``instances`` they take the object's number.

    Flooding steps to ``connectivity`` neighbours (the target label's own, so every object stays one piece in the
    sense its label defines); a pixel reached in the same step from two objects joins the higher-numbered one.
    """
    joining = semantic == value
    if not joining.any():
        return
    markers = np.where(semantic == target, instances, 0)
    grown = _flood(markers, joining & (markers == 0), connectivity)
    reached = joining & (grown > 0)
    semantic[joining] = 0
    semantic[reached] = target
    instances[joining] = grown[joining]


def _flood(markers: np.ndarray, free: np.ndarray, connectivity: int) -> np.ndarray:
    """``markers`` grown into the ``free`` pixels breadth first (geodesic distance in steps to ``connectivity``
    neighbours); each step takes the highest neighbouring number. Visits only the front, not the whole grid."""
    from scipy.ndimage import generate_binary_structure

    grown = np.pad(markers, 1)  # a border that is never free: no step leaves the grid
    order = "F" if grown.flags.f_contiguous and not grown.flags.c_contiguous else "C"  # np.pad keeps Fortran order
    open_ = np.asarray(np.pad(free, 1), order=order).ravel(order="K")
    flat = grown.ravel(order="K")  # views in memory order: element strides give the neighbours
    rank = CONNECTIVITY[markers.ndim].index(connectivity) + 1
    steps = np.argwhere(generate_binary_structure(markers.ndim, rank)) - 1
    steps = steps[steps.any(axis=1)] @ (np.array(grown.strides) // grown.itemsize)
    front = np.flatnonzero(open_)
    while front.size:
        best = flat[front[:, None] + steps].max(axis=1)
        front, best = front[best > 0], best[best > 0]
        flat[front] = best
        open_[front] = False
        after = (front[:, None] + steps).ravel()
        front = np.unique(after[open_[after]])
    return grown[(slice(1, -1),) * markers.ndim]


def _result(semantic: Image, instances: Image) -> PostprocessResult:
    """Bundle maps with their instance -> class table (one pass over the instance map)."""
    runs = label_runs(instances.array)
    n = int(runs.value.max()) if runs.value.size else 0
    count = np.bincount(runs.value, weights=runs.length, minlength=n + 1)[1:]
    label = np.zeros(n + 1, semantic.array.dtype)
    label[runs.value] = runs.gather(semantic.array)
    return PostprocessResult(semantic, instances, _classes_frame(np.arange(1, n + 1), label[1:], count, semantic))
