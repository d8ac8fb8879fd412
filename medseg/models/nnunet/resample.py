"""nnU-Net's resampling, computed separably.

nnU-Net's default ``resample_data_or_seg_to_shape`` calls scikit-image's
``resize(mode="edge", anti_aliasing=False)`` per channel: SciPy's spline
``zoom`` with ``grid_mode=True`` (order 3 for images, with the B-spline
prefilter on a 12-voxel edge-padded copy; order 1 for logits), clipped to the
input's range. With an anisotropic spacing (max/min > 3, one coarse axis) it
resamples each slice in plane and the coarse axis by nearest neighbour
(``order_z=0``), clipping per slice.

An axis-aligned tensor-product spline is separable: zooming axis by axis
(prefilter along the axis, then 4 taps along it) gives the same values as the
3D zoom up to rounding (~1e-16 relative), at a fraction of its cost (4 taps
per axis instead of 64 per voxel). The taps are evaluated with torch
(multithreaded), in float64 like scikit-image, on the CPU or a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

ANISO_THRESHOLD = 3.0
_SPLINE_PAD = 12  # SciPy pads by 12 (mode "edge") before the prefilter for mode "nearest"


# ---- which resampling ---------------------------------------------------------------------------------------------
def _lowres_axes(spacing: list[float]) -> list[int]:
    top = max(spacing)
    return [i for i, s in enumerate(spacing) if top / s == 1]


def separate_z(force: bool | None, current: list[float], new: list[float],
               threshold: float = ANISO_THRESHOLD) -> tuple[bool, int | None]:
    """nnU-Net's ``determine_do_sep_z_and_axis``: whether to resample the coarse axis on its own, and which."""
    if force is not None:
        do, axes = bool(force), (_lowres_axes(current) if force else None)
    elif max(current) / min(current) > threshold:
        do, axes = True, _lowres_axes(current)
    elif max(new) / min(new) > threshold:
        do, axes = True, _lowres_axes(new)
    else:
        do, axes = False, None
    if axes is None or len(axes) != 1:
        return False, None
    return do, axes[0]


def compute_new_shape(old_shape: tuple[int, ...], old_spacing: list[float], new_spacing: list[float]) -> list[int]:
    """``int(round(old_spacing / new_spacing * old_shape))`` per axis (Python's round: half to even)."""
    return [int(round(i / j * k)) for i, j, k in zip(old_spacing, new_spacing, old_shape, strict=True)]


# ---- one axis -----------------------------------------------------------------------------------------------------
def _source_coords(n_in: int, n_out: int) -> np.ndarray:
    """``(o + 0.5) * n_in / n_out - 0.5``: the input coordinate of each output sample (grid mode)."""
    zoom = n_in / n_out
    return (np.arange(n_out, dtype=np.float64) + 0.5) * zoom - 0.5


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    cc = np.clip(_source_coords(n_in, n_out), 0, n_in - 1)
    start = np.floor(cc).astype(np.int64)
    t = cc - start
    idx = np.stack([start, np.minimum(start + 1, n_in - 1)], axis=1)
    return idx, np.stack([1.0 - t, t], axis=1)


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the padded coefficients and cubic B-spline weights, 4 per output sample."""
    n_pad = n_in + 2 * _SPLINE_PAD
    cc = np.clip(_source_coords(n_in, n_out) + _SPLINE_PAD, 0, n_pad - 1)
    fl = np.floor(cc)
    t = cc - fl
    z = 1.0 - t
    w = np.stack([z * z * z / 6.0, (t * t * (t - 2.0) * 3.0 + 4.0) / 6.0,
                  (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0, t * t * t / 6.0], axis=1)  # fmt: skip
    start = fl.astype(np.int64) - 1
    idx = np.clip(start[:, None] + np.arange(4)[None, :], 0, n_pad - 1)
    return idx, w


def _apply_taps(x: torch.Tensor, axis: int, idx: np.ndarray, w: np.ndarray) -> torch.Tensor:
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    out = None
    for k in range(idx.shape[1]):
        sel = torch.index_select(x, axis, torch.from_numpy(np.ascontiguousarray(idx[:, k])).to(x.device))
        wk = torch.from_numpy(np.ascontiguousarray(w[:, k])).to(device=x.device, dtype=x.dtype).view(shape)
        term = sel.mul_(wk)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def _zoom_axis(x: torch.Tensor, axis: int, n_out: int, order: int) -> torch.Tensor:
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    if order == 0:
        cc = np.clip(_source_coords(n_in, n_out), 0, n_in - 1)
        idx = torch.from_numpy(np.floor(cc + 0.5).astype(np.int64)).to(x.device)
        return torch.index_select(x, axis, idx)
    if order == 1:
        idx, w = _linear_taps(n_in, n_out)
        return _apply_taps(x, axis, idx, w)
    if order == 3:
        arr = x.cpu().numpy() if x.device.type != "cpu" else x.numpy()
        pad = [(0, 0)] * arr.ndim
        pad[axis] = (_SPLINE_PAD, _SPLINE_PAD)
        coeffs = ndimage.spline_filter1d(np.pad(arr, pad, mode="edge"), order=3, axis=axis, mode="nearest",
                                         output=np.float64)
        idx, w = _cubic_taps(n_in, n_out)
        return _apply_taps(torch.from_numpy(coeffs).to(x.device), axis, idx, w)
    raise ValueError(f"resampling order {order} is not supported (0, 1 or 3)")


def resize(x: torch.Tensor, new_shape: list[int] | tuple[int, ...], order: int, *, clip: bool = True) -> torch.Tensor:
    """scikit-image ``resize(x, new_shape, order, mode="edge", anti_aliasing=False)`` on a float64 tensor.

    The axes that shrink most go first (the later ones then work on less data).
    """
    if tuple(x.shape) == tuple(new_shape):
        return x
    lo, hi = (x.min(), x.max()) if clip and order > 0 else (None, None)
    src = x
    axes = sorted(range(x.ndim), key=lambda a: new_shape[a] / x.shape[a])
    for axis in axes:
        x = _zoom_axis(x, axis, int(new_shape[axis]), order)
    if x is src:
        x = x.clone()
    if lo is not None:
        x = x.clamp_(lo, hi)
    return x


# ---- nnU-Net's resample_data_or_seg ---------------------------------------------------------------------------------
def _resize_seg(seg: torch.Tensor, new_shape: list[int], order: int) -> torch.Tensor:
    """batchgenerators' ``resize_segmentation``: per label indicator resized, argmax, ties to the nearest label."""
    if order == 0:
        return resize(seg, new_shape, 0, clip=False)
    labels = torch.unique(seg)
    if len(labels) == 1:
        return torch.full(tuple(new_shape), float(labels[0]), dtype=seg.dtype, device=seg.device)
    nearest = resize(seg, new_shape, 0, clip=False)
    best = None
    win = None
    nn_top = None
    for i, c in enumerate(labels):
        score = resize((seg == c).to(torch.float64), new_shape, order)
        is_nn = nearest == c
        if best is None:
            best, win = score, torch.zeros(tuple(new_shape), dtype=torch.int64, device=seg.device)
            nn_top = is_nn & (score > 0)
            continue
        better = score > best
        level = (score == best) & (score > 0)
        win = torch.where(better, torch.full_like(win, i), win)
        nn_top = torch.where(better, is_nn, nn_top | (level & is_nn))
        best = torch.where(better, score, best)
    assert win is not None and nn_top is not None
    out = labels[win]
    return torch.where(nn_top, nearest, out)


def resample_data_or_seg(data: np.ndarray | torch.Tensor, new_shape: list[int], *, is_seg: bool = False,
                         axis: int | None = None, order: int = 3, do_separate_z: bool = False, order_z: int = 0,
                         device: torch.device | None = None) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg`` of ``(c, x, y, z)`` ``data``; returns ``data.dtype`` like nnU-Net."""
    dtype_out = data.dtype if isinstance(data, np.ndarray) else _numpy_dtype(data.dtype)
    shape = tuple(data.shape[1:])
    new_shape = [int(v) for v in new_shape]
    if shape == tuple(new_shape):
        return data if isinstance(data, np.ndarray) else data.cpu().numpy()
    t = torch.as_tensor(data)
    if device is not None:
        t = t.to(device)
    t = t.to(torch.float64)
    out = np.zeros((t.shape[0], *new_shape), dtype=dtype_out)
    fn = _resize_seg if is_seg else resize
    for c in range(t.shape[0]):
        if do_separate_z:
            assert axis is not None
            in_plane = [new_shape[a] for a in range(3) if a != axis]
            slices = []
            for s in range(shape[axis]):
                sl = t[c].select(axis, s)
                slices.append(fn(sl, in_plane, order))
            here = torch.stack(slices, dim=axis)
            if shape[axis] != new_shape[axis]:
                # nnU-Net: map_coordinates(order=order_z, mode="nearest") along the coarse axis only
                if order_z != 0 and is_seg:
                    raise ValueError("order_z > 0 for segmentations is not supported")
                here = _zoom_axis(here, axis, new_shape[axis], order_z) if order_z in (0, 1, 3) else here
            out[c] = here.cpu().numpy()
        else:
            out[c] = fn(t[c], new_shape, order).cpu().numpy()
    return out


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def resample_to_shape(data: np.ndarray | torch.Tensor, new_shape: list[int], current_spacing: list[float],
                      new_spacing: list[float], fn_name: str, kwargs: dict[str, Any],
                      device: torch.device | None = None) -> np.ndarray:
    """One of nnU-Net's resampling functions by name, with the plans' kwargs."""
    if fn_name == "resample_data_or_seg_to_shape":
        do, axis = separate_z(kwargs.get("force_separate_z"), list(current_spacing), list(new_spacing),
                              float(kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)))
        return resample_data_or_seg(data, new_shape, is_seg=bool(kwargs.get("is_seg", False)), axis=axis,
                                    order=int(kwargs.get("order", 3)), do_separate_z=do,
                                    order_z=int(kwargs.get("order_z", 0)), device=device)
    if fn_name == "resample_torch_fornnunet":
        return resample_torch(data, new_shape, current_spacing, new_spacing, kwargs, device)
    raise ValueError(fn_name)


SUPPORTED_RESAMPLING = ("resample_data_or_seg_to_shape", "resample_torch_fornnunet")


# ---- nnU-Net's torch resampling (plans of the ResEnc planners with torch resampling) ------------------------------
def _interp(t: torch.Tensor, new_shape: list[int], mode: str) -> torch.Tensor:
    if list(t.shape[1:]) == list(new_shape):
        return t
    torch_mode = {"linear": "trilinear" if t.ndim == 4 else "bilinear"}.get(mode, mode)
    return torch.nn.functional.interpolate(t[None].float(), tuple(new_shape), mode=torch_mode, antialias=False)[0]


def _interp_seg(t: torch.Tensor, new_shape: list[int], mode: str) -> torch.Tensor:
    if list(t.shape[1:]) == list(new_shape):
        return t
    values = torch.unique(t)
    result_dtype = torch.int8 if max(values) < 127 else torch.int16
    result = torch.zeros((t.shape[0], *new_shape), dtype=result_dtype, device=t.device)
    scores = torch.empty((len(values), t.shape[0], *new_shape), dtype=torch.float16, device=t.device)
    done = torch.zeros_like(result, dtype=torch.bool)
    torch_mode = {"linear": "trilinear" if t.ndim == 4 else "bilinear"}.get(mode, mode)
    for i, u in enumerate(values):
        scores[i] = torch.nn.functional.interpolate((t[None] == u).float() * 1000, tuple(new_shape), mode=torch_mode,
                                                    antialias=False)[0]
        mask = scores[i] > 700
        result[mask] = u.item()
        done |= mask
    if not torch.all(done):
        result[~done] = values[scores[:, ~done].argmax(0)].to(result_dtype)
    return result


def resample_torch(data: np.ndarray | torch.Tensor, new_shape: list[int], current_spacing: list[float],
                   new_spacing: list[float], kwargs: dict[str, Any], device: torch.device | None = None) -> np.ndarray:
    """nnU-Net's ``resample_torch_fornnunet`` (trilinear ``F.interpolate``; nearest-exact along a coarse axis)."""
    is_seg = bool(kwargs.get("is_seg", False))
    mode = str(kwargs.get("mode", "linear"))
    aniso_mode = str(kwargs.get("aniso_axis_mode", "nearest-exact"))
    t = torch.as_tensor(data)
    if device is not None:
        t = t.to(device)
    new_shape = [int(v) for v in new_shape]
    do, axis = separate_z(kwargs.get("force_separate_z"), list(current_spacing), list(new_spacing),
                          float(kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)))
    fn = _interp_seg if is_seg else _interp
    if do:
        assert axis is not None
        others = [a for a in range(3) if a != axis]
        moved = t.movedim(axis + 1, 1)  # (c, axis, o0, o1)
        c, n = moved.shape[:2]
        flat = moved.reshape(c * n, *moved.shape[2:])
        flat = fn(flat, [new_shape[a] for a in others], mode)
        moved = flat.reshape(c, n, *flat.shape[1:]).movedim(1, axis + 1)
        result = fn(moved, new_shape, aniso_mode)
    else:
        result = fn(t, new_shape, mode)
    return result.cpu().numpy()


__all__ = ["SUPPORTED_RESAMPLING", "compute_new_shape", "resample_data_or_seg", "resample_to_shape", "resize",
           "separate_z"]
