"""Training: ``train(config, dataset_json, out_dir)`` -> a model directory.

See :func:`medseg.train.loop.train` and, for the dataset format and the checks
run before training, :mod:`medseg.train.dataset`.
"""

from medseg.train.loop import train

__all__ = ["train"]
