"""Reports: tables, sweeps, plots and the Section 7 analyses, built from run directories' results.json.

Plain functions behind ``lora-ft table|sweep|plot|analyze``:

- :func:`~lora_ft.report.table.build_table` — Table 3 / Table 4 as markdown, LaTeX, CSV or JSON, with a 95% bootstrap
  interval of each row's primary metric (:mod:`~lora_ft.report.intervals`).
- :func:`~lora_ft.report.searches.search_table` — the learning-rate searches (selection.json files) as one table.
- :func:`~lora_ft.report.sweep.run_sweep_command` (list / print / run a sweep), built on
  :func:`~lora_ft.report.sweep.expand_sweep`, :func:`~lora_ft.report.sweep.load_sweep` and
  :func:`~lora_ft.report.sweep.launch_commands`.
- :func:`~lora_ft.report.plot.plot_command`: Figure 2 (:func:`~lora_ft.report.plot.plot_params_vs_score`),
  the rank sweep (:func:`~lora_ft.report.plot.plot_rank_sweep`) and the searches
  (:func:`~lora_ft.report.plot.plot_searches`), PNG + SVG.
- :func:`~lora_ft.report.analysis.analyze_runs` (files) / :func:`~lora_ft.report.analysis.analysis_report` (dict),
  on top of ``subspace_similarity``, ``similarity_grid`` and ``amplification_factor``.

User-facing problems raise :class:`ReportError` (or ``SweepError``, a ``ConfigError``). matplotlib is imported
only when a figure is drawn.
"""

from lora_ft.report.analysis import (
    amplification_factor,
    analysis_report,
    analyze_runs,
    load_base_weights,
    similarity_grid,
    subspace_similarity,
)
from lora_ft.report.plot import plot_command, plot_params_vs_score, plot_rank_sweep, plot_searches
from lora_ft.report.searches import search_table
from lora_ft.report.sweep import (
    SweepError,
    SweepRun,
    describe_sweep,
    expand_sweep,
    launch_commands,
    load_sweep,
    run_sweep_command,
    sweep_command,
)
from lora_ft.report.table import ReportError, build_table

__all__ = [
    "ReportError",
    "SweepError",
    "SweepRun",
    "amplification_factor",
    "analysis_report",
    "analyze_runs",
    "build_table",
    "describe_sweep",
    "expand_sweep",
    "launch_commands",
    "load_base_weights",
    "load_sweep",
    "plot_command",
    "plot_params_vs_score",
    "plot_rank_sweep",
    "plot_searches",
    "run_sweep_command",
    "search_table",
    "similarity_grid",
    "subspace_similarity",
    "sweep_command",
]
