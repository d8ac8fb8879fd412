"""Segmentation models: the network factory, the model directory format, MONAI bundle import.

>>> import medseg
>>> model = medseg.load_model("sample_data/models/ct_organs")   # doctest: +SKIP
>>> labels = model.segment(medseg.load("scan.nii.gz"))         # doctest: +SKIP
"""

from medseg.models.model import SegmentationModel, load_model
from medseg.models.networks import build_network
from medseg.models.store import ModelCard, save_model_dir

__all__ = ["ModelCard", "SegmentationModel", "build_network", "load_model", "save_model_dir"]
