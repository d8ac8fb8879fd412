"""Sliding-window prediction on the model's grid, mapped back exactly onto the input's grid.

The steps for one image (:func:`predict`):

1. :class:`medseg.preprocess.Preprocessor` on the compute device: reorientation,
   resampling to the model spacing, intensity preset (recorded, invertible);
2. MONAI ``sliding_window_inference`` with Gaussian blending (mixed precision
   on CUDA), optionally averaged over mirrored copies (test-time augmentation)
   and over the networks of a cross-validation ensemble;
3. softmax, then the *inverse* of the spatial preprocessing applied to the
   class probabilities, so interpolation happens on probabilities, not on
   label indices;
4. argmax -> a label :class:`~medseg.io.image.Image` on the input's exact grid
   (for background / interior / boundary models: objects wherever the
   background probability is below 1/2, separated along the ridges of the
   boundary probability, :func:`instance_scores`).

Steps 3 and 4 are fused for the label map (:meth:`Preprocessor.invert_labels`:
on the CPU only voxels at label boundaries are interpolated, giving the same
labels); the probabilities on the input grid (MONAI ``Compose.inverse`` of
every channel) are computed only when asked for.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from medseg.config import WorkflowConfig
from medseg.io.image import Image, LabelMap
from medseg.preprocess import Preprocessor, turns_patches
from medseg.windows import ImagePart, WindowCache, part_windows, window_step


class Prediction:
    """What one prediction produces, both on the input image's grid.

    Attributes
    ----------
    labels : LabelMap
        Label map (smallest fitting unsigned integer type), index = label index of the model.
    probabilities : Image
        Float32 class probabilities, trailing channel axis in label-index order;
        computed on first access (inverting every channel costs more than the labels).
    """

    def __init__(self, labels: LabelMap, probabilities: Callable[[], Image]) -> None:
        self.labels = labels
        self._probabilities = probabilities

    @functools.cached_property
    def probabilities(self) -> Image:
        """The class probabilities, inverted to the input grid on first access."""
        return self._probabilities()


def mirror_axes_sets(axes: list[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the empty one first): the mirrorings averaged by test-time augmentation."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@dataclass(frozen=True)
class View:
    """One copy of the image that test-time augmentation predicts: mirrored along the spatial axes ``flip``,
    then, when ``turned``, with spatial axes 0 and 1 swapped (with the mirrorings of both axes, the eight
    90-degree turns and mirror images of a plane)."""

    flip: tuple[int, ...] = ()
    turned: bool = False

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """The view of a batch ``(B, C, *spatial)``."""
        t = torch.flip(t, [a + 2 for a in self.flip]) if self.flip else t
        return t.transpose(2, 3) if self.turned else t

    def undo(self, t: torch.Tensor) -> torch.Tensor:
        """A prediction ``(B, C, *spatial)`` of the view, back in the image's frame."""
        t = t.transpose(2, 3) if self.turned else t
        return torch.flip(t, [a + 2 for a in self.flip]) if self.flip else t


def tta_views(mirror_axes: Sequence[int] = (), turns: bool = False) -> list[View]:
    """The views averaged by test-time augmentation (the image itself first): every mirroring along
    ``mirror_axes``, each also turned when ``turns``."""
    return [View(flip, turned) for turned in ((False, True) if turns else (False,))
            for flip in mirror_axes_sets(list(mirror_axes))]


def turns_at_test_time(config: WorkflowConfig) -> bool:
    """Whether test-time augmentation also swaps spatial axes 0 and 1: the model was trained on patches turned by
    90 degrees (:func:`medseg.preprocess.turns_patches`) and its network divides both axes alike."""
    from medseg.models.networks import size_divisor

    if not turns_patches(config):
        return False
    divisor = size_divisor(config)
    return divisor[0] == divisor[1]


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[None]:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def sliding_window_probabilities(
    network: torch.nn.Module | Sequence[torch.nn.Module],
    x: torch.Tensor,
    config: WorkflowConfig,
    *,
    mirror_axes: list[int] | None = None,
    turns: bool = False,
    amp: bool = True,
) -> torch.Tensor:
    """Class probabilities ``(1, n_labels, *spatial)`` for a preprocessed batch ``x`` of one image.

    Parameters
    ----------
    network : torch.nn.Module or sequence of them
        In eval mode, on ``x``'s device; for an ensemble (cross-validation folds of one config) the
        softmax outputs of every network are averaged, as nnU-Net averages its folds.
    x : torch.Tensor
        ``(1, channels, *spatial)`` on the model's grid.
    mirror_axes : list of int, optional
        Spatial axes to mirror for test-time augmentation; the softmax outputs
        of every mirrored copy (flipped back) are averaged.
    turns : bool
        Also average the copies with spatial axes 0 and 1 swapped (:func:`turns_at_test_time`).
    """
    inf = config.inference
    x = x.as_tensor() if isinstance(x, MetaTensor) else x  # plain tensors: MetaTensor bookkeeping per patch is slow
    networks = list(network) if isinstance(network, Sequence) else [network]
    total = None
    views = tta_views(mirror_axes or [], turns)
    with torch.inference_mode(), _autocast(x.device, amp and config.amp):
        for net, view in itertools.product(networks, views):
            xin = view.apply(x)
            logits = sliding_window_inference(
                xin,
                roi_size=window_size(config, tuple(xin.shape[2:])),
                sw_batch_size=inf.sw_batch_size,
                predictor=net,
                overlap=inf.overlap,
                mode=inf.blend,
            )
            probs = view.undo(torch.softmax(logits.float(), dim=1))
            total = probs if total is None else total.add_(probs)
        runs = len(networks) * len(views)
        return total if runs == 1 else total.div_(runs)


# ---- the whole image's sliding windows, for one part of it (the geometry: medseg.windows) --------------------


def part_probabilities(
    network: torch.nn.Module | Sequence[torch.nn.Module],
    x: torch.Tensor,
    config: WorkflowConfig,
    part: ImagePart,
    *,
    mirror_axes: list[int] | None = None,
    turns: bool = False,
    amp: bool = True,
) -> torch.Tensor:
    """Class probabilities ``(1, n_labels, *region)`` of ``part.region``, as :func:`sliding_window_probabilities`
    of the whole image gives them there (the same windows, Gaussian blending, test-time views and networks).

    ``x`` is the preprocessed piece ``(1, channels, *piece)`` at ``part.origin``. Windows found in
    ``part.cache`` are not run again.
    """
    from monai.data.utils import compute_importance_map

    inf = config.inference
    x = x.as_tensor() if isinstance(x, MetaTensor) else x
    networks = list(network) if isinstance(network, Sequence) else [network]
    roi = window_size(config, part.shape)
    steps = [window_step(config, r, n) for n, r in zip(part.shape, roi, strict=True)]
    weight = compute_importance_map(tuple(roi), mode=inf.blend, sigma_scale=0.125, device=x.device)
    region_shape = [hi - lo for lo, hi in part.region]
    cache = part.cache if part.cache is not None else WindowCache(max_bytes=0)
    total = torch.zeros((1, config.n_labels, *region_shape), device=x.device)
    views = tta_views(mirror_axes or [], turns)
    with torch.inference_mode(), _autocast(x.device, amp and config.amp):
        for (k, net), view in itertools.product(enumerate(networks), views):
            # a turned view's windows are the image's own (its window and steps are the same along both axes)
            axes = [part_windows(n, r, s, lo, hi, a in view.flip)
                    for a, (n, r, s, (lo, hi)) in enumerate(zip(part.shape, roi, steps, part.region, strict=True))]
            windows = [(k, view, starts) for starts in itertools.product(*axes)]
            logits = {w: cache.entries[w] for w in windows if w in cache.entries}
            cache.reused += len(logits)
            todo = [w for w in windows if w not in logits]
            for i in range(0, len(todo), inf.sw_batch_size):
                batch = todo[i: i + inf.sw_batch_size]
                patches = torch.stack([x[(0, slice(None), *(slice(s - o, s - o + r) for s, o, r in
                                                         zip(w[2], part.origin, roi, strict=True)))] for w in batch])
                out = view.undo(net(view.apply(patches)).float())
                logits.update(zip(batch, out, strict=True))
            cache.computed += len(todo)
            blended = torch.zeros((config.n_labels, *region_shape), device=x.device)
            weights = torch.zeros(region_shape, device=x.device)
            for w in windows:
                inside = tuple(slice(max(s, lo) - s, min(s + r, hi) - s) for s, r, (lo, hi) in
                               zip(w[2], roi, part.region, strict=True))
                there = tuple(slice(max(s, lo) - lo, min(s + r, hi) - lo) for s, r, (lo, hi) in
                              zip(w[2], roi, part.region, strict=True))
                blended[(slice(None), *there)].addcmul_(weight[inside], logits[w][(slice(None), *inside)])
                weights[there] += weight[inside]
                box = tuple((s, s + r) for s, r in zip(w[2], roi, strict=True))
                if part.needed_later is not None and part.needed_later(box):
                    if w not in cache.entries:
                        cache.keep(w, logits[w].clone())  # a tensor of its own, not a view of the batch
                else:
                    cache.drop(w)
            total[0] += torch.softmax(blended / weights, dim=0)
    runs = len(networks) * len(views)
    return total if runs == 1 else total.div_(runs)


def window_size(config: WorkflowConfig, shape: tuple[int, ...]) -> list[int]:
    """The sliding window: the patch, except along axes where the image is smaller, where it is the image's size
    rounded up to what the network divides (so a 14-slice scan is not padded to a 32-slice patch the network
    never saw padded that far in training); the patch everywhere when ``inference.fit_window`` is off."""
    from medseg.models.networks import size_divisor

    if not config.inference.fit_window:
        return list(config.patch_size)
    divisor = size_divisor(config)
    return [min(p, math.ceil(n / d) * d) for p, n, d in zip(config.patch_size, shape, divisor, strict=True)]


def object_first_scores(probs: torch.Tensor) -> torch.Tensor:
    """Scores ``(3, *spatial)`` of background / interior / boundary probabilities whose argmax is background where
    its probability is at least 1/2, else the likelier of interior and boundary.

    A plain argmax over three classes calls a pixel background at ``(0.4, 0.3, 0.3)``, though it lies on an
    object with probability 0.6, and so shrinks every object; adding ``min(interior, boundary)`` to both object
    classes makes the likelier one score ``1 - P(background)``.
    """
    shared = torch.minimum(probs[1], probs[2])
    return torch.stack([probs[0], probs[1] + shared, probs[2] + shared])


BOUNDARY_SMOOTHING_PX = 1.0
"""Gaussian sigma (model-grid pixels) applied to the boundary probability before it separates objects: one-pixel
dips in a ring (a pale nucleus' chromatin) then open no pass of their own."""


def instance_scores(probs: torch.Tensor, dynamics: float | None, *, fill_holes: bool = True) -> torch.Tensor:
    """Scores ``(3, *spatial)`` whose argmax gives background / interior / boundary classes that post-processing
    (interiors as objects, each boundary ring joining its interior) turns into the model's objects.

    Objects are the pixels whose background probability is below 1/2 (:func:`object_first_scores`); with
    ``dynamics`` they are, with the cavities they enclose when ``fill_holes`` (a pale nucleus' centre, which the
    flooding must cross), separated by :func:`medseg.postprocess.boundary_watershed` on the boundary probability,
    smoothed by :data:`BOUNDARY_SMOOTHING_PX`, and the scores are those objects' classes as training targets
    encode them (:func:`medseg.labelmap.interior_boundary_classes`): an interior that the network left in pieces
    is one object, two objects with a ridge between them stay two.
    """
    if dynamics is None:
        return object_first_scores(probs)
    from scipy.ndimage import gaussian_filter

    from medseg.labelmap import fill_holes as fill_holes_of
    from medseg.labelmap import interior_boundary_classes
    from medseg.postprocess import boundary_watershed

    p = probs.float().cpu().numpy()
    objects = fill_holes_of(p[0] < 0.5) if fill_holes else p[0] < 0.5
    ridges = gaussian_filter(p[2], BOUNDARY_SMOOTHING_PX)
    classes = interior_boundary_classes(boundary_watershed(objects, ridges, dynamics))
    one_hot = np.stack([classes == k for k in range(3)]).astype(np.float32)
    return torch.from_numpy(one_hot).to(device=probs.device, dtype=probs.dtype)


def _decoded(probs: torch.Tensor, config: WorkflowConfig) -> torch.Tensor:
    """The scores whose argmax is the label map: the probabilities, or for an interior/boundary model
    :func:`instance_scores` (cavities filled as the workflow's interior rule fills them; without one, as
    :data:`medseg.workflows.case.INSTANCE_AWARE_RULES` do)."""
    if config.label_source != "instances":
        return probs
    interior = (config.postprocess or {}).get("interior")
    fill = True if interior is None else bool(interior.get("fill_holes", False))
    return instance_scores(probs, config.inference.boundary_dynamics, fill_holes=fill)


def _label_dtype(n_labels: int) -> np.dtype:
    return np.dtype(np.uint8 if n_labels <= 256 else np.uint16)


def predict(
    network: torch.nn.Module | Sequence[torch.nn.Module],
    config: WorkflowConfig,
    image: Image,
    *,
    device: torch.device,
    tta: bool | None = None,
    part: ImagePart | None = None,
) -> Prediction:
    """Segment ``image`` with ``network``; labels and probabilities on ``image``'s exact grid.

    Parameters
    ----------
    network : torch.nn.Module or sequence of them
        The model's network, already on ``device`` and in eval mode, or the networks of
        an ensemble (see :func:`sliding_window_probabilities`).
    config : WorkflowConfig
        The model's workflow (grid, intensity preset, patch size, sliding window).
    image : Image
        Any image medseg reads; it is not modified.
    device : torch.device
        Where preprocessing and inference run.
    tta : bool, optional
        Mirroring test-time augmentation; ``None`` uses ``config.inference.tta``.
    part : ImagePart, optional
        ``image`` is a piece of a larger image (a tile's window, :func:`medseg.windows.part_extent`) and the labels of
        ``part.region`` are wanted, as segmenting the whole image gives them (:func:`part_probabilities`);
        the result is on the region's grid. Only for models that do not resample or reorient.
    """
    use_tta = config.inference.tta if tta is None else tta
    mirror = config.augment.flip_axes if use_tta else []
    turns = use_tta and turns_at_test_time(config)
    prep = Preprocessor(config)
    x = prep(image, device)
    if part is not None:
        return _predict_part(network, config, image, x, part, mirror, turns)
    probs = sliding_window_probabilities(network, x[None], config, mirror_axes=mirror, turns=turns)[0]
    scores = _decoded(probs, config)
    labels = prep.invert_labels(scores, like=x).cpu().numpy().astype(_label_dtype(config.n_labels), copy=False)
    if labels.shape != image.shape:  # the inverse is exact by construction; guard against a MONAI regression
        raise RuntimeError(f"inverse preprocessing gave shape {labels.shape}, expected {image.shape}")
    return _prediction(image, labels, lambda: prep.invert(probs, like=x).float().cpu().numpy(), config)


def _prediction(grid: Image, labels: np.ndarray, probabilities: Callable[[], np.ndarray],
                config: WorkflowConfig) -> Prediction:
    """Labels on ``grid`` with the model's label names, and the channel-first ``probabilities`` computed on
    first access."""
    meta = {**grid.meta, "label_names": dict(config.labels), "segmentation_model": config.name}

    def channel_last() -> Image:
        return grid.with_array(np.moveaxis(probabilities(), 0, -1), intensity_unit="", meta=meta, channel_axis=True)

    names = {i: n for n, i in config.labels.items() if i}
    return Prediction(labels=grid.with_labels(labels, names, meta=meta), probabilities=channel_last)


def _predict_part(
    network: torch.nn.Module | Sequence[torch.nn.Module],
    config: WorkflowConfig,
    image: Image,
    x: MetaTensor,
    part: ImagePart,
    mirror: list[int],
    turns: bool,
) -> Prediction:
    """:func:`predict` of ``part.region`` of the whole image, from ``image``, the piece at ``part.origin``."""
    from medseg.preprocess import first_argmax

    if tuple(x.shape[1:]) != image.shape:
        raise ValueError(f"model {config.name!r} resamples its input: a part cannot be predicted on its own")
    probs = part_probabilities(network, x[None], config, part, mirror_axes=mirror, turns=turns)[0]
    scores = _decoded(probs, config)
    labels = first_argmax(scores).cpu().numpy().astype(_label_dtype(config.n_labels), copy=False)
    region = image.crop([lo - o for (lo, _), o in zip(part.region, part.origin, strict=True)],
                        [hi - o for (_, hi), o in zip(part.region, part.origin, strict=True)])
    return _prediction(region, labels, lambda: probs.float().cpu().numpy(), config)
