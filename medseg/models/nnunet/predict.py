"""nnU-Net's prediction of a preprocessed case, and its export back to the cropped, transposed input.

Sliding window as ``nnUNetPredictor``: the data is padded (constant 0, the
larger half after) to at least the patch size; tiles start at
``round(i * (size - patch) / (n - 1))`` with ``n = ceil((size - patch) /
(patch * step)) + 1``; each tile's logits (averaged over every mirroring of
the checkpoint's ``inference_allowed_mirroring_axes``) are weighted by a
Gaussian (sigma = patch / 8, scaled to a maximum of 10, zeros replaced by the
smallest nonzero value) and accumulated in float16, as nnU-Net accumulates;
2D configurations run slice by slice. Folds are averaged as logits.

Export (nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``):
logits resampled to the cropped shape (order 1, separate z for anisotropic
spacing), argmax (or sigmoid > 0.5 per region, written in
``regions_class_order``), pasted into the uncropped shape, transposed back.

On CUDA the network runs under fp16 autocast and the accumulation stays on
the device; the CPU path runs tiles in float32.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from medseg.models.nnunet.plans import LabelScheme


@functools.lru_cache(maxsize=4)
def _gaussian_numpy(tile: tuple[int, ...]) -> np.ndarray:
    tmp = np.zeros(tile)
    tmp[tuple(i // 2 for i in tile)] = 1
    g = gaussian_filter(tmp, [i / 8 for i in tile], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    return g


def gaussian_importance(tile: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian(tile, sigma_scale=1/8, value_scaling_factor=10)`` in ``dtype``."""
    g = torch.from_numpy(_gaussian_numpy(tuple(int(t) for t in tile))).to(device=device, dtype=dtype)
    zero = g == 0
    if bool(zero.any()):
        g[zero] = torch.min(g[~zero])
    return g


def sliding_window_steps(image_size: Sequence[int], tile: Sequence[int], step: float) -> list[list[int]]:
    """nnU-Net's ``compute_steps_for_sliding_window``."""
    target = [t * step for t in tile]
    num = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, tile, strict=True)]
    steps = []
    for dim in range(len(tile)):
        max_step = image_size[dim] - tile[dim]
        actual = max_step / (num[dim] - 1) if num[dim] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(num[dim])])
    return steps


def pad_to_patch(data: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``acvl_utils.pad_nd_image(data, patch, "constant", value 0)``: the padded data and the slicer undoing it."""
    spatial = data.shape[-len(patch):]
    lead = data.ndim - len(patch)
    pads = []
    slicer = [slice(None)] * lead
    for size, p in zip(spatial, patch, strict=True):
        diff = max(0, int(p) - int(size))
        below, above = diff // 2, diff // 2 + diff % 2
        pads.append((below, above))
        slicer.append(slice(below, below + int(size)))
    if any(b or a for b, a in pads):
        flat = [v for b, a in reversed(pads) for v in (b, a)]
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0)
    return data, tuple(slicer)


def tile_slicers(image_size: Sequence[int], patch: Sequence[int], step: float) -> list[tuple[slice | int, ...]]:
    """Per tile: the index into ``(channels, *image_size)``, in nnU-Net's order."""
    slicers: list[tuple[slice | int, ...]] = []
    if len(patch) < len(image_size):
        steps = sliding_window_steps(image_size[1:], patch, step)
        for d in range(image_size[0]):
            for sx in steps[0]:
                for sy in steps[1]:
                    slicers.append((slice(None), d, slice(sx, sx + patch[0]), slice(sy, sy + patch[1])))
    else:
        steps = sliding_window_steps(image_size, patch, step)
        for sx in steps[0]:
            for sy in steps[1]:
                for sz in steps[2]:
                    slicers.append((slice(None), slice(sx, sx + patch[0]), slice(sy, sy + patch[1]),
                                    slice(sz, sz + patch[2])))
    return slicers


def mirror_combinations(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """The flips nnU-Net adds to the unflipped prediction, in its order (spatial axes + 2)."""
    if not axes:
        return []
    dims = [a + 2 for a in axes]
    return [c for i in range(len(dims)) for c in itertools.combinations(dims, i + 1)]


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def predict_tile(network: torch.nn.Module, x: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
    """nnU-Net's ``_internal_maybe_mirror_and_predict``: logits of ``x`` averaged with its mirrored copies."""
    prediction = network(x)
    if flips:
        for dims in flips:
            prediction += torch.flip(network(torch.flip(x, dims)), dims)
        prediction /= len(flips) + 1
    return prediction


def predict_tiles(network: torch.nn.Module, tiles: list[torch.Tensor], flips: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """:func:`predict_tile` of several tiles, their mirrored copies run as one batch.

    The network normalises per sample (instance norm), so a batch gives each
    sample's logits as alone (to float rounding); they are summed in nnU-Net's
    order.
    """
    batch = []
    for x in tiles:
        batch.append(x)
        batch.extend(torch.flip(x, dims) for dims in flips)
    out = network(torch.cat(batch))
    n = 1 + len(flips)
    results = []
    for t in range(len(tiles)):
        prediction = out[t * n:t * n + 1]
        if flips:
            prediction = prediction.clone()
            for i, dims in enumerate(flips):
                prediction += torch.flip(out[t * n + 1 + i:t * n + 2 + i], dims)
            prediction /= n
        results.append(prediction)
    return results


def _batched(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@torch.inference_mode()
def sliding_window_logits(network: torch.nn.Module, data: torch.Tensor, patch: Sequence[int], num_heads: int, *,
                          step: float = 0.5, mirror_axes: Sequence[int] | None = None,
                          device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Float16 logits ``(num_heads, *data.shape[1:])`` of one preprocessed case, on ``device``.

    ``data`` is ``(channels, a0, a1, a2)``; a 2D ``patch`` runs the network
    slice by slice along ``a0``. Up to ``batch_size`` network inputs (tiles
    and their mirrored copies) run as one batch; a tile's mirrors are never
    split. On CUDA an out-of-memory batch is retried one tile at a time.
    """
    patch = [int(p) for p in patch]
    with _autocast(device):
        padded, unpad = pad_to_patch(data, patch)
        padded = padded.to(device)
        slicers = tile_slicers(tuple(padded.shape[1:]), patch, step)
        logits = torch.zeros((num_heads, *padded.shape[1:]), dtype=torch.half, device=device)
        weights = torch.zeros(padded.shape[1:], dtype=torch.half, device=device)
        gaussian = gaussian_importance(patch, device)
        flips = mirror_combinations(mirror_axes)
        per_batch = max(1, batch_size // (1 + len(flips)))
        for group in _batched(slicers, per_batch):
            tiles = [padded[sl][None].contiguous() for sl in group]
            try:
                preds = predict_tiles(network, tiles, flips) if len(tiles) > 1 or flips else [network(tiles[0])]
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                preds = [predict_tile(network, x, flips) for x in tiles]
            for sl, pred in zip(group, preds, strict=True):
                pred = pred[0]
                pred *= gaussian
                logits[sl] += pred
                weights[sl[1:]] += gaussian
        torch.div(logits, weights, out=logits)
        if bool(torch.isinf(logits).any()):
            raise RuntimeError("infinite logits in the sliding-window average")
        return logits[(slice(None), *unpad[1:])]


def logits_to_labels(logits: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """nnU-Net's ``convert_logits_to_segmentation``: argmax, or per region sigmoid > 0.5 in ``regions_class_order``."""
    if labels.has_regions:
        assert labels.regions_class_order is not None
        probs = torch.sigmoid(logits.float())
        seg = torch.zeros(logits.shape[1:], dtype=torch.int16, device=logits.device)
        for i, c in enumerate(labels.regions_class_order):
            seg[probs[i] > 0.5] = c
        return seg
    return torch.argmax(logits, dim=0)


def logits_to_probabilities(logits: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """Softmax over the heads (sigmoid per region), float32."""
    if labels.has_regions:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=0)
