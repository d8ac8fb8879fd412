""":class:`NnUNetSegmenter`: an nnU-Net v2 results folder as a medseg :class:`~medseg.segmenters.Segmenter`.

>>> import medseg
>>> seg = medseg.load_segmenter("RESULTS/Dataset001_CT/nnUNetTrainer__nnUNetPlans__3d_fullres", folds="0,1")  # doctest: +SKIP
>>> labels = seg.segment(medseg.load("scan_dicom/"))   # LabelMap on the scan's grid, dataset.json names  # doctest: +SKIP

The prediction is nnU-Net's (see :mod:`medseg.models.nnunet`), computed
without importing nnunetv2: the labels equal ``nnUNetv2_predict``'s for the
same folder and inputs (the tests check it on real nnU-Net folders).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ModelError
from medseg.io.image import Image, LabelMap
from medseg.models.folds import parse_folds
from medseg.models.nnunet.checkpoint import load_checkpoint, strip_prefixes
from medseg.models.nnunet.network import build_network, load_weights
from medseg.models.nnunet.plans import CHECKPOINT_NAMES, Configuration, ResultsFolder
from medseg.models.nnunet.predict import logits_to_labels, logits_to_probabilities, sliding_window_logits
from medseg.models.nnunet.preprocess import (
    CaseProperties,
    check_normalization,
    check_resampling,
    preprocess,
    target_spacing_for_export,
)
from medseg.models.nnunet.reader import READERS, reader_mapping, spatial_dims_of_reader
from medseg.models.nnunet.resample import resample_to_shape


@dataclass
class _Fold:
    name: str
    checkpoint: Path
    network: torch.nn.Module


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in ("auto", None, ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r} (auto, cpu or cuda)") from exc


class NnUNetSegmenter:
    """A trained nnU-Net v2 configuration (one or more folds) that segments medseg Images.

    Use :func:`load_nnunet` (or :func:`medseg.load_segmenter`) to create one.

    Attributes
    ----------
    folder : ResultsFolder
        The results folder (dataset.json, plans, labels).
    configuration : Configuration
        The resolved configuration the checkpoints were trained with.
    folds : list of str
        The folds whose logits are averaged.
    step_size : float
        Sliding-window step as a fraction of the patch (nnU-Net's default 0.5).
    mirror_axes : tuple of int or None
        Mirroring used at inference (the checkpoint's ``inference_allowed_mirroring_axes``, None when off).
    previous : NnUNetSegmenter or None
        The ``3d_lowres`` stage feeding a ``3d_cascade_fullres`` configuration.
    """

    postprocess = None

    def __init__(self, folder: ResultsFolder, configuration: Configuration, folds: list[_Fold], *,
                 trainer: str, mirror_axes: tuple[int, ...] | None, step_size: float, mirroring: bool,
                 checkpoint: str, device: torch.device, previous: NnUNetSegmenter | None = None,
                 batch_size: int = 8) -> None:
        self.folder = folder
        self.configuration = configuration
        self._folds = folds
        self.trainer = trainer
        self.allowed_mirror_axes = mirror_axes
        self.mirroring = mirroring
        self.step_size = step_size
        self.checkpoint = checkpoint
        self.device = device
        self.previous = previous
        self.batch_size = batch_size
        self._fingerprint: str | None = None

    # ---- the Segmenter protocol ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``DatasetNNN_Name configuration``."""
        dataset = self.folder.plans.dataset_name or self.folder.path.parent.name
        return f"{dataset} {self.configuration.name}"

    @property
    def label_names(self) -> dict[int, str]:
        """Foreground value -> name from ``dataset.json`` (regions: named after their region)."""
        return self.folder.labels.output_names

    @property
    def spatial_dims(self) -> int:
        """2 for 2D datasets (pictures, 2D NIfTI), else 3 (a ``2d`` configuration of a 3D dataset is 3)."""
        by_reader = spatial_dims_of_reader(self.folder.plans.reader_name)
        if by_reader is not None:
            return by_reader
        median = self.folder.plans.raw.get("original_median_shape_after_transp")
        if isinstance(median, list) and len(median) == 3 and int(median[0]) == 1 and self.configuration.is_2d:
            return 2
        return 3

    @property
    def in_channels(self) -> int:
        """``len(dataset.json channel_names)``."""
        return len(self.folder.channel_names)

    @property
    def folds(self) -> list[str]:
        return [f.name for f in self._folds]

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        return self.allowed_mirror_axes if self.mirroring else None

    def fingerprint(self) -> str:
        """16 hex digits over dataset.json, plans.json, the checkpoints' bytes and the inference settings."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name in ("dataset.json", "plans.json"):
                h.update((self.folder.path / name).read_bytes())
            for fold in self._folds:
                with open(fold.checkpoint, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
            settings = {"configuration": self.configuration.name, "folds": self.folds, "step": self.step_size,
                        "mirror": self.mirror_axes, "checkpoint": self.checkpoint,
                        "previous": self.previous.fingerprint() if self.previous else None}  # fmt: skip
            h.update(json.dumps(settings, sort_keys=True).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def segment(self, image: Image, *, tta: bool | None = None) -> LabelMap:
        """The label map of ``image`` on its exact grid, with ``dataset.json``'s label names.

        ``tta`` overrides the loader's mirroring for this call (``--tta/--no-tta``).
        """
        seg, mapping = self._predict(image, tta=tta, probabilities=False)
        labels = self.folder.labels
        array = mapping.backward(seg).astype(np.dtype(labels.label_dtype), copy=False)
        meta = {**image.meta, "segmentation_model": self.name}
        return image.with_labels(array, self.label_names, meta=meta)

    def probabilities(self, image: Image, *, tta: bool | None = None) -> Image:
        """Float32 probabilities on ``image``'s grid, trailing channel axis (label-based: one per label value)."""
        if self.folder.labels.has_regions:
            raise ModelError(f"{self.name} is region-based: its probabilities are per region, not per label value")
        probs, mapping = self._predict(image, tta=tta, probabilities=True)
        channels = [mapping.backward(probs[c]) for c in range(probs.shape[0])]
        return image.with_array(np.stack(channels, axis=-1), intensity_unit="", channel_axis=True)

    # ---- the steps -------------------------------------------------------------------------------------------
    def check_image(self, image: Image) -> None:
        """Refuse an image with the wrong channel count or dimensionality, naming the file."""
        want = self.in_channels
        if image.n_channels != want:
            names = ", ".join(self.folder.channel_names)
            raise ModelError(f"the model takes {want} channel(s) (dataset.json channel_names: {names}); the image has "
                             f"{image.n_channels}", image.source)
        if self.spatial_dims == 2 and image.ndim != 2:
            raise ModelError(f"{self.name} segments 2D images; the image is {image.ndim}D", image.source)

    def _predict(self, image: Image, *, tta: bool | None, probabilities: bool) -> tuple[np.ndarray, Any]:
        self.check_image(image)
        plans, config, labels = self.folder.plans, self.configuration, self.folder.labels
        mapping = reader_mapping(plans.reader_name, image)
        data = mapping.forward(image.array, image.channel_axis)
        prev = None
        if self.previous is not None:
            prev_labels = self.previous.segment(image, tta=tta)
            prev = mapping.forward_labels(prev_labels.array)
        data, seg, props = preprocess(data, list(mapping.spacing), plans, config, prev_seg=prev)
        if seg is not None:
            onehot = np.stack([seg[0] == lb for lb in labels.foreground_labels]).astype(data.dtype)
            data = np.vstack((data, onehot))
        x = torch.from_numpy(np.ascontiguousarray(data)).to(dtype=torch.float32)
        use_mirror = self.mirroring if tta is None else bool(tta)
        axes = self.allowed_mirror_axes if use_mirror else None
        logits = self._ensemble(x, axes)
        return self._export(logits, props, probabilities), mapping

    @torch.inference_mode()
    def _ensemble(self, x: torch.Tensor, axes: tuple[int, ...] | None) -> torch.Tensor:
        total = None
        heads = self.folder.labels.num_heads
        for fold in self._folds:
            logits = sliding_window_logits(fold.network, x, self.configuration.patch_size, heads,
                                           step=self.step_size, mirror_axes=axes, device=self.device,
                                           batch_size=self.batch_size)
            total = logits if total is None else total.add_(logits)
        assert total is not None
        if len(self._folds) > 1:
            total /= len(self._folds)
        return total

    @torch.inference_mode()
    def _export(self, logits: torch.Tensor, props: CaseProperties, probabilities: bool) -> np.ndarray:
        plans, config, labels = self.folder.plans, self.configuration, self.folder.labels
        current, target = target_spacing_for_export(plans, config, props)
        fn, kwargs = config.resampling("probabilities")
        half = logits if logits.dtype == torch.float16 else logits.half()
        resampled = resample_to_shape(half, list(props.shape_after_cropping), current, target, fn, kwargs,
                                      device=logits.device)
        tensor = torch.from_numpy(resampled).to(logits.device)
        sl = tuple(slice(lo, hi) for lo, hi in props.bbox)
        if probabilities:
            probs = logits_to_probabilities(tensor, labels).cpu().numpy()
            out = np.zeros((probs.shape[0], *props.shape_before_cropping), dtype=np.float32)
            if not labels.has_regions:
                out[0] = 1
            out[(slice(None), *sl)] = probs
            return out.transpose([0, *[i + 1 for i in plans.transpose_backward]])
        seg = logits_to_labels(tensor, labels).cpu().numpy()
        out = np.zeros(props.shape_before_cropping, dtype=np.dtype(labels.label_dtype))
        out[sl] = seg
        return out.transpose(plans.transpose_backward)

    def __repr__(self) -> str:
        return (f"NnUNetSegmenter({self.name!r}, folds={self.folds}, mirror_axes={self.mirror_axes}, "
                f"step_size={self.step_size}, device={self.device})")


def _read_fold(folder: ResultsFolder, fold: str, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    ck = load_checkpoint(path)
    return ck, strip_prefixes(ck["network_weights"])


def _configuration_name(folder: ResultsFolder, checkpoint: dict[str, Any], path: Path) -> str:
    init = checkpoint.get("init_args")
    name = init.get("configuration") if isinstance(init, dict) else None
    name = str(name) if name else folder.configuration_name
    if not name:
        raise ModelError("cannot tell the configuration: the checkpoint's init_args name none and the folder is not "
                         "named Trainer__Plans__configuration", path)
    return name


def load_nnunet(spec: str | os.PathLike[str], *, folds: Any = None, checkpoint: str = "final",
                step_size: float = 0.5, mirroring: bool = True, device: str | torch.device = "auto",
                batch_size: int = 8, _stage: str | None = None) -> NnUNetSegmenter:
    """Load an nnU-Net v2 results folder.

    Parameters
    ----------
    spec : path-like
        ``RESULTS/DatasetNNN_Name/Trainer__Plans__configuration``.
    folds : str, int or list, optional
        ``"0,1"``, ``[0, 1]``, ``"all"``; default every ``fold_N`` with the checkpoint (as nnU-Net).
    checkpoint : str
        ``"final"`` (``checkpoint_final.pth``) or ``"best"`` (``checkpoint_best.pth``).
    step_size : float
        Sliding-window step, a fraction of the patch size in (0, 1].
    mirroring : bool
        Test-time mirroring over the checkpoint's allowed axes (nnU-Net's default: on).
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    batch_size : int
        Network inputs per forward pass: a tile's mirrored copies (and several
        tiles) run as one batch, several times faster on the CPU than nnU-Net's
        one at a time. The network normalises per sample, so the logits are
        the same to float rounding (~1e-6); ``1`` runs them one at a time as
        nnU-Net does, bit for bit.

    Raises
    ------
    medseg.errors.ModelError
        Missing plans/dataset/checkpoints, an unknown fold or architecture,
        weights that do not fit the network, a checkpoint that would run code
        when unpickled or is in an unknown format; each names the file.
    """
    folder = ResultsFolder.read(spec)
    if checkpoint not in CHECKPOINT_NAMES:
        raise ModelError(f"checkpoint must be final or best, got {checkpoint!r}", folder.path)
    try:
        step = float(step_size)
    except (TypeError, ValueError):
        raise ModelError(f"step size must be a number in (0, 1], got {step_size!r}") from None
    if not 0 < step <= 1:
        raise ModelError(f"step size must be in (0, 1], got {step_size!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ModelError(f"batch size must be a positive integer, got {batch_size!r}")
    if folder.plans.reader_name not in READERS:
        raise ModelError(f"image reader {folder.plans.reader_name!r} is not supported (medseg reproduces "
                         f"{', '.join(READERS)})", folder.path / "plans.json")
    if folder.plans.label_manager != "LabelManager":
        raise ModelError(f"label manager {folder.plans.label_manager!r} is not supported (LabelManager)",
                         folder.path / "plans.json")
    files = folder.checkpoints(parse_folds(folds), checkpoint)
    dev = _resolve_device(device)
    loaded = {f: _read_fold(folder, f, p) for f, p in files.items()}
    first_name, (first, _) = next(iter(loaded.items()))
    config_name = _stage or _configuration_name(folder, first, files[first_name])
    config = folder.plans.configuration(config_name)
    check_normalization(config)
    check_resampling(config)
    trainer = str(first.get("trainer_name") or folder.trainer_name)
    axes = first.get("inference_allowed_mirroring_axes")
    mirror_axes = tuple(int(a) for a in axes) if axes else None
    in_ch = len(folder.channel_names) + (len(folder.labels.foreground_labels) if config.previous_stage else 0)
    net_folds = []
    for fold, (_, state) in loaded.items():
        net = build_network(config, in_ch, folder.labels.num_heads)
        net = load_weights(net, state, files[fold], trainer).to(dev)
        net_folds.append(_Fold(fold, files[fold], net))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    previous = None
    if config.previous_stage:
        previous = _load_previous(folder, config, folds=folds, checkpoint=checkpoint, step_size=step,
                                  mirroring=mirroring, device=dev, batch_size=batch_size)
    return NnUNetSegmenter(folder, config, net_folds, trainer=trainer, mirror_axes=mirror_axes, step_size=step,
                           mirroring=bool(mirroring), checkpoint=checkpoint, device=dev, previous=previous,
                           batch_size=batch_size)


def _load_previous(folder: ResultsFolder, config: Configuration, **options: Any) -> NnUNetSegmenter:
    """The previous stage (``3d_lowres``) of a cascade: the sibling folder ``Trainer__Plans__<previous_stage>``."""
    stage = config.previous_stage
    assert stage is not None
    trainer = folder.trainer_name or "nnUNetTrainer"
    plans = folder.plans_name or folder.plans.plans_name
    sibling = folder.path.parent / f"{trainer}__{plans}__{stage}"
    if not sibling.is_dir():
        raise ModelError(f"configuration {config.name!r} is a cascade fed by {stage!r}, but its results folder "
                         f"{sibling.name} is not beside it", sibling)
    wanted = parse_folds(options.pop("folds"))
    if wanted is not None:
        present = ResultsFolder.read(sibling).fold_dirs()
        wanted = [f for f in wanted if f in present] or None
    return load_nnunet(sibling, folds=wanted, _stage=stage, **options)
