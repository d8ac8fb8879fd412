"""One function per user-facing job; the CLI, the batch runner and the demo all call these.

* :func:`~medseg.workflows.case.run_case`: segment -> post-process -> measure
  (-> evaluate against ground truth) for one image: the per-case pipeline of
  ``medseg batch`` and ``medseg demo``;
* :func:`~medseg.workflows.segment.segment_files`: ``medseg segment``;
* :func:`~medseg.workflows.evaluate.evaluate_segmenter`: a Segmenter scored as a
  baseline by ``medseg evaluate --baseline``.

Ground truth is aligned by one rule everywhere,
:func:`medseg.metrics.cohort.align_to_reference`: world space; resampled
(nearest neighbour) onto the reference grid when the grids differ but overlap;
an error when they do not.
"""

from medseg.workflows.case import CaseResult, run_case
from medseg.workflows.segment import segment_files

__all__ = ["CaseResult", "run_case", "segment_files"]
