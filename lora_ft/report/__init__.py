"""Reports: tables, sweeps, plots and the Section 7 analyses, built from run directories' results.json.

Plain functions for the CLI (``lora-ft table|sweep|plot|analyze``):

- :func:`lora_ft.report.table.build_table` — Table 3 / Table 4 as markdown, LaTeX, CSV or JSON.
- :func:`lora_ft.report.sweep.expand_sweep`, :func:`~lora_ft.report.sweep.load_sweep`,
  :func:`~lora_ft.report.sweep.launch_commands`, :func:`~lora_ft.report.sweep.sweep_command`.
- :func:`lora_ft.report.plot.plot_params_vs_score` (Figure 2), :func:`~lora_ft.report.plot.plot_rank_sweep`.
- :func:`lora_ft.report.analysis.analyze_runs`, ``subspace_similarity``, ``similarity_grid``, ``amplification_factor``.

matplotlib is imported only when a figure is drawn.
"""

from lora_ft.report.analysis import amplification_factor, analyze_runs, similarity_grid, subspace_similarity
from lora_ft.report.plot import plot_params_vs_score, plot_rank_sweep
from lora_ft.report.sweep import SweepRun, describe_sweep, expand_sweep, launch_commands, load_sweep, sweep_command
from lora_ft.report.table import build_table

__all__ = [
    "SweepRun",
    "amplification_factor",
    "analyze_runs",
    "build_table",
    "describe_sweep",
    "expand_sweep",
    "launch_commands",
    "load_sweep",
    "plot_params_vs_score",
    "plot_rank_sweep",
    "similarity_grid",
    "subspace_similarity",
    "sweep_command",
]
