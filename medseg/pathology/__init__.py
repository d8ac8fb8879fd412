"""Computational pathology: H&E colour, tissue detection, tiled nuclei segmentation, per-cell morphometry.

* :mod:`~medseg.pathology.stain`: optical density, colour deconvolution (H, E, residual),
  Macenko stain vectors and normalisation, HED jitter;
* :mod:`~medseg.pathology.tissue`: tissue on a slide's low-resolution overview;
* :mod:`~medseg.pathology.segmenters`: ``he:`` segmenters (haematoxylin channel through any
  one-channel segmenter, or Otsu + watershed) and :func:`~medseg.pathology.segmenters.with_reference`
  (slide-wide normalisation statistics);
* :mod:`~medseg.pathology.tiling`: tiles, ownership of instances, seam resolution, resumable runs;
* :mod:`~medseg.pathology.morphometry`: vectorised per-cell features;
* :mod:`~medseg.pathology.labels`: the cells as a pyramidal label TIFF.

The whole chain for one slide is :func:`medseg.workflows.slide.segment_slide`.
"""
