"""Reports people can look at: overlays, box plots, volume agreement, and the HTML report.

* :func:`overlay`, :func:`plot_volumes`, :func:`box_plots` -- matplotlib figures for notebooks;
* :func:`case_figures` -- the per-case overlays the report embeds;
* :func:`write_report` / :func:`write_cohort_report` -- ``per_case.csv``, ``summary.json``, ``report.html``.
"""

from __future__ import annotations

from medseg.report.figures import box_plots, case_figures, overlay, plot_volumes, png_bytes
from medseg.report.html import write_cohort_report, write_report

__all__ = ["box_plots", "case_figures", "overlay", "plot_volumes", "png_bytes", "write_cohort_report", "write_report"]
