"""nnU-Net v2 results folders as medseg Segmenters, without importing nnunetv2.

A trained nnU-Net v2 model is a folder
``RESULTS/DatasetNNN_Name/Trainer__Plans__configuration`` holding ``dataset.json``,
``plans.json`` and ``fold_*/checkpoint_final.pth``. :func:`load_nnunet` reads it
and gives an :class:`~medseg.models.nnunet.segmenter.NnUNetSegmenter` that
predicts as ``nnUNetv2_predict`` does (reader semantics, transpose, crop,
normalisation, resampling, sliding window with Gaussian weights, mirroring,
fold ensembling, export); :mod:`medseg.models.nnunet.task` merges several such
folders into one label map, as TotalSegmentator's multi-model tasks do.

Modules (each usable on its own):

``plans``       dataset.json / plans.json / folds: configurations, labels and regions
``checkpoint``  the restricted unpickler for ``checkpoint_*.pth``
``reader``      what nnU-Net's image reader would give for a medseg Image, and the way back
``resample``    nnU-Net's resampling (order 3 data, order 1 logits, separate z), separable
``preprocess``  transpose, crop to nonzero, normalisation, resampling
``network``     the U-Net from ``architecture`` (dynamic-network-architectures), weights checked
``predict``     sliding window, Gaussian importance, mirroring, fold averaging, export
``segmenter``   :class:`NnUNetSegmenter` and :func:`load_nnunet`
``task``        multi-model tasks (YAML or JSON)

This package module imports nothing heavy: ``detect`` functions run for every path spec.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_nnunet_folder", "is_task_file", "load_nnunet", "load_task"]


def __getattr__(name: str) -> Any:
    if name in ("is_nnunet_folder", "is_task_file"):
        from medseg.models.nnunet import detect

        return getattr(detect, name)
    if name == "load_nnunet":
        from medseg.models.nnunet.segmenter import load_nnunet

        return load_nnunet
    if name == "load_task":
        from medseg.models.nnunet.task import load_task

        return load_task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
