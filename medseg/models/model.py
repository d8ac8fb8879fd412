""":class:`SegmentationModel`: a loaded network with its model card, ready to segment Images.

It is the first :class:`~medseg.segmenters.Segmenter`: a medseg model
directory, a cross-validation ensemble of them (``medseg train --folds K``)
and a MONAI bundle all load into one (:func:`load_model`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medseg.config import WorkflowConfig
from medseg.errors import ConfigError, ModelError
from medseg.io.image import Image, LabelMap
from medseg.models.folds import fold_dirs, is_ensemble_dir
from medseg.models.networks import build_network
from medseg.models.store import (
    CARD_NAME,
    ModelCard,
    find_weights,
    fingerprint,
    load_state_dict,
    load_weights_into,
    read_card,
)
from medseg.segmenters.base import foreground_names


class SegmentationModel:
    """A trained segmentation network plus the recipe (model card) to apply it.

    Use :func:`load_model` to create one. ``segment`` accepts any
    :class:`~medseg.io.image.Image` and returns a label map on that image's
    exact grid (shape, spacing, origin, direction).

    Attributes
    ----------
    card : dict
        The model card (labels, spacing, orientation, intensity preset, patch
        size, network, training summary, validation Dice, medseg version).
    config : WorkflowConfig
        The workflow part of the card.
    device : torch.device
        Where preprocessing and inference run.
    networks : list of torch.nn.Module
        One network, or one per fold of an ensemble (their probabilities are averaged).
    folds : list of str
        The fold names of an ensemble (``["0", "1", ...]``); empty for one model.
    """

    def __init__(
        self,
        network: torch.nn.Module | Sequence[torch.nn.Module],
        card: ModelCard,
        *,
        device: str | torch.device = "auto",
        source: str | None = None,
        folds: Sequence[tuple[str, ModelCard]] = (),
    ) -> None:
        from medseg.preprocess import resolve_device

        self._card = card
        self.config: WorkflowConfig = card.config
        self.folds = [name for name, _ in folds]
        self._fingerprint = fingerprint(card) if not folds else hashlib.sha256(
            " ".join(f"{name}:{fingerprint(c)}" for name, c in folds).encode()).hexdigest()[:16]
        self.device = resolve_device(self.config.device if device == "auto" else device)
        nets = [network] if isinstance(network, torch.nn.Module) else list(network)
        self.networks = [n.to(self.device).eval() for n in nets]
        self.source = source

    @property
    def network(self) -> torch.nn.Module:
        """The network of a single model (an ensemble has one per fold: :attr:`networks`)."""
        if len(self.networks) != 1:
            raise ModelError(f"model {self.config.name!r} is an ensemble of {len(self.networks)} folds: use .networks")
        return self.networks[0]

    @property
    def card(self) -> dict[str, Any]:
        """The model card as a plain JSON-ready dict (a copy)."""
        return self._card.model_dump(mode="json")

    @property
    def labels(self) -> dict[str, int]:
        """Label name -> index, background 0 included."""
        return dict(self.config.labels)

    # ---- the Segmenter protocol ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The workflow name of the card."""
        return self.config.name

    @property
    def label_names(self) -> dict[int, str]:
        """Foreground label index -> name."""
        return foreground_names(self.config.labels)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.config.dims

    @property
    def in_channels(self) -> int:
        """Input channels the network takes."""
        return self.config.in_channels

    @property
    def postprocess(self) -> dict[str, Any] | None:
        """The card's post-processing rules (keyed by label name), or None."""
        return self.config.postprocess

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the weights and the card."""
        return self._fingerprint

    def probabilities(self, image: Image, *, tta: bool | None = None) -> Image:
        """Float32 class probabilities on ``image``'s grid, one trailing channel per label index."""
        return self.segment(image, probabilities=True, tta=tta)

    def predict(self, image: Image, *, tta: bool | None = None, part: Any = None):  # -> medseg.infer.Prediction
        """Labels and per-label probabilities on ``image``'s grid (see :class:`medseg.infer.Prediction`)."""
        from medseg.infer import predict

        return predict(self.networks, self.config, image, device=self.device, tta=tta, part=part)

    def segment(
        self, image: Image, *, probabilities: bool = False, tta: bool | None = None, part: Any = None
    ) -> LabelMap | Image:
        """Segment ``image``.

        Parameters
        ----------
        image : Image
            A 2D or 3D image matching the model's dims and channels.
        probabilities : bool
            Return the float32 class probabilities (trailing channel axis, one
            channel per label in index order) instead of the label map.
        tta : bool, optional
            Mirroring test-time augmentation; ``None`` follows the model card.
        part : medseg.infer.ImagePart, optional
            ``image`` is a piece of a larger image: segment ``part.region`` as the whole image would be
            (tiled slides, :mod:`medseg.pathology.tiling`); the result is on the region's grid.

        Returns
        -------
        LabelMap or Image
            Label map (uint8, with the label names) on ``image``'s exact grid, or probabilities.
        """
        if image.ndim != self.config.dims:
            raise ModelError(
                f"model {self.config.name!r} is {self.config.dims}D but the image is {image.ndim}D", image.source
            )
        if tta and not self.config.augment.flip_axes:
            raise ModelError(
                f"model {self.config.name!r} was trained without mirroring; test-time mirroring does not apply"
            )
        pred = self.predict(image, tta=tta, part=part)
        return pred.probabilities if probabilities else pred.labels

    def __repr__(self) -> str:
        c = self.config
        folds = f", folds={self.folds}" if self.folds else ""
        return (f"SegmentationModel({c.name!r}, {c.dims}D {c.network.name}, labels={c.label_names[1:]}{folds}, "
                f"device={self.device}, fingerprint={self._fingerprint})")


def is_model_dir(path: Path) -> bool:
    """True for a medseg model directory (it holds ``model_card.json``), that card file itself, or an ensemble."""
    if path.is_dir():
        return (path / CARD_NAME).is_file() or is_ensemble_dir(path)
    return path.name == CARD_NAME and path.is_file()


def _read_network(model_dir: Path) -> tuple[torch.nn.Module, ModelCard]:
    card = read_card(model_dir)
    weights = find_weights(model_dir, card)
    network = build_network(card.config)
    load_weights_into(network, load_state_dict(weights), weights)
    return network, card


def load_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "auto", folds: str | Sequence[int] | None = None
) -> SegmentationModel:
    """Load a medseg model directory, a cross-validation ensemble or a MONAI bundle directory.

    Parameters
    ----------
    path : path-like
        A folder with ``model_card.json`` + ``model.safetensors`` (what ``medseg
        train`` writes), the card file itself, an ensemble folder (``folds.json``
        and ``fold_N`` model directories, what ``medseg train --folds K``
        writes), or a MONAI bundle folder (``configs/inference.json`` + ``models/model.pt``).
    device : str or torch.device
        ``"auto"`` (the card's device setting, CUDA when available), ``"cpu"`` or ``"cuda"``.
    folds : str or sequence of int, optional
        Ensembles: the folds to average (``"0,2"``, ``[0, 2]``, ``"all"``; default every fold).

    Raises
    ------
    medseg.errors.ModelError
        Missing or invalid card, weights that are a pickled object, weights
        that do not match the card, folds trained with different configs.
    medseg.errors.ConfigError
        ``folds`` given for a single model.
    """
    p = Path(path)
    if p.is_file() and p.name == CARD_NAME:
        p = p.parent
    if not p.is_dir():
        raise ModelError("no such model directory", p)
    if is_ensemble_dir(p) and not (p / CARD_NAME).is_file():
        loaded = [(d.name.removeprefix("fold_"), *_read_network(d)) for d in fold_dirs(p, folds)]
        first = loaded[0][2].config.model_dump(mode="json", exclude={"train"})
        odd = [name for name, _, card in loaded if card.config.model_dump(mode="json", exclude={"train"}) != first]
        if odd:
            raise ModelError(f"folds {odd} were trained with another workflow config than fold {loaded[0][0]}", p)
        return SegmentationModel([net for _, net, _ in loaded], loaded[0][2], device=device, source=str(p),
                                 folds=[(name, card) for name, _, card in loaded])
    if folds is not None:
        raise ConfigError("--folds does not apply to this segmenter, a single model (it applies to ensembles of "
                          "medseg train --folds K and to nnU-Net results folders)", p)
    if not (p / CARD_NAME).is_file():
        from medseg.models.bundle import is_bundle, load_bundle

        if is_bundle(p):
            network, card = load_bundle(p)
            return SegmentationModel(network, card, device=device, source=str(p))
    network, card = _read_network(p)
    return SegmentationModel(network, card, device=device, source=str(p))
