"""Figures from run directories: Figure 2 (score vs trainable parameters) and the LoRA rank sweep.

The numbers are the table's (``lora_ft.report.table``): runs grouped into configurations, each
configuration's score the mean over seeds of the evaluation chosen by ``epoch``, x the MEASURED trainable count. Figure
2's error bars are the table's 95% bootstrap interval over the scored items (:mod:`lora_ft.report.intervals`; none where
it is n/a), and the untrained base model is a dashed line with its interval as a band; the rank sweep's error bars are
the sample std over seeds. The paper's values are drawn as hollow markers.

matplotlib is imported only when a plot is made, through its object API (no pyplot global state, no
display needed). Each plot is written as PNG and SVG through ``lora_ft.results.write_bytes_atomic``.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from lora_ft.report.paper_numbers import GPT2_MODELS, TABLE3, TABLE4, TABLE18_RANK_BLEU, TASKS_TABLE3
from lora_ft.report.cells import COLUMNS, PRIMARY_METRIC, TASK_LABELS, score_cell
from lora_ft.report.intervals import cell_interval
from lora_ft.report.not_applicable import read_not_applicable
from lora_ft.report.learning_rates import RATE_KEY, criterion_text, format_rate
from lora_ft.report.runs import ConfigGroup, ReportError, group_runs, load_runs
from lora_ft.report.searches import Search, find_searches
from lora_ft.results import write_bytes_atomic

FORMATS = ("png", "svg")
METHOD_NAMES = {
    "lora": "LoRA",
    "adapter_h": "Adapter^H",
    "adapter_l": "Adapter^L",
    "prelayer": "PreLayer",
    "preembed": "PreEmbed",
    "bitfit": "BitFit",
    "ft": "FT",
    "ft_top": "FT^Top",
}
PERCENT_METRICS = {"bleu", "meteor", "rouge_l", "wikisql_acc", "mnli_acc", "samsum_r1", "samsum_r2", "samsum_rl"}
TASK_ORDER = ("e2e", "wikisql", "mnli", "samsum")


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib is an optional dependency of the report tools
        raise RuntimeError("plotting needs matplotlib: install it with `pip install matplotlib`") from exc
    return Figure


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (known methods first, in a stable order) so panels agree."""
    order = list(METHOD_NAMES) + sorted(set(methods) - set(METHOD_NAMES))
    return {m: f"C{i % 10}" for i, m in enumerate(order)}


def save_figure(figure: Any, out: str | Path, *, overwrite: bool = True) -> list[Path]:
    """Write ``figure`` as ``<out>.png`` and ``<out>.svg`` (a .png/.svg suffix on ``out`` is dropped)."""
    out = Path(out)
    if out.suffix.lower() in (".png", ".svg"):
        out = out.with_suffix("")
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(write_bytes_atomic(Path(f"{out}.{fmt}"), buffer.getvalue(), overwrite=overwrite))
    return paths


def _scored(group: ConfigGroup, column_key: str, epoch: str, split: str | None) -> tuple[float, float, float] | None:
    """(mean, distance down to the 95% interval's low end, up to its high end: 0 where it is n/a), or None."""
    cell = score_cell(group, COLUMNS[column_key], epoch=epoch, split=split)
    if cell.mean is None:
        return None
    interval, _ = cell_interval(cell)
    if interval is None:
        return cell.mean, 0.0, 0.0
    return cell.mean, max(cell.mean - interval.low, 0.0), max(interval.high - cell.mean, 0.0)


def _point(group: ConfigGroup, column_key: str, epoch: str, split: str | None) -> tuple[float, ...] | None:
    """(trainable, mean, down, up) of a configuration, or None if it has no score or no count."""
    counts = group.trainable_counts()
    scored = _scored(group, column_key, epoch, split)
    if not counts or scored is None:
        return None
    return (statistics.fmean(counts), *scored)


def plot_params_vs_score(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    tasks: Sequence[str] | None = None,
    epoch: str = "best",
    split: str | None = None,
    include_paper: bool = True,
    overwrite: bool = True,
) -> list[Path]:
    """Figure 2: each task's primary metric vs trainable parameters (log x), one line per model+method.

    One panel per task (``tasks`` defaults to those in the runs: give the Table 3 and Table 4 folders together for
    E2E BLEU, MNLI accuracy and SAMSum ROUGE-L side by side). Hollow markers: the paper's Table 3
    rows (E2E, GPT-2 models in the runs, or all if none) or Table 4 rows (GPT-3 175B, plotted at the
    paper's trainable counts). Configurations a not_applicable.tsv lists for a panel's task have no point; the panel
    names them under its axis with the short reason. Returns the PNG and SVG paths.
    """
    Figure = _figure_class()
    runs, skipped = load_runs(run_dirs)
    groups = group_runs(runs)
    present = [t for t in TASK_ORDER if any(g.task == t for g in groups)]
    tasks = list(tasks) if tasks else present
    if not tasks:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped)
        raise ReportError(f"no runs of a known task to plot ({reasons or 'no runs given'})")
    unknown = [t for t in tasks if t not in PRIMARY_METRIC]
    if unknown:
        raise ReportError(f"unknown task(s) {unknown}: expected some of {', '.join(TASK_ORDER)}")
    not_applicable, _ = read_not_applicable(run_dirs)
    methods = [str(g.method.get("name", "?")) for g in groups] + [r.method for r in (*TABLE3, *TABLE4)]
    colors = _method_colors(methods)
    figure = Figure(figsize=(5.5 * len(tasks), 4.2))
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        key = PRIMARY_METRIC[task]
        column = COLUMNS[key]
        lines: dict[tuple[str, str], list[tuple[float, ...]]] = {}
        for group in (g for g in groups if g.task == task and g.untrained is None):
            point = _point(group, key, epoch, split)
            if point is not None:
                lines.setdefault((group.model_name, str(group.method.get("name", "?"))), []).append(point)
        styles = ["-", "--", ":", "-."]
        models = sorted({m for m, _ in lines})
        for (model, method), points in sorted(lines.items()):
            points.sort()
            ax.errorbar(
                [p[0] for p in points], [p[1] for p in points], yerr=[[p[2] for p in points], [p[3] for p in points]],
                color=colors[method], linestyle=styles[models.index(model) % len(styles)], marker="o", capsize=3,
                label=f"{model} {METHOD_NAMES.get(method, method)}",
            )
        for group in (g for g in groups if g.task == task and g.untrained == "base"):
            scored = _scored(group, key, epoch, split)
            if scored is not None:  # the untrained model: what a method must clear, with its interval as a band
                mean, down, up = scored
                ax.axhline(mean, color="grey", linestyle="--", linewidth=1, label=f"{group.model_name} base model, untrained")
                ax.axhspan(mean - down, mean + up, color="grey", alpha=0.15, linewidth=0)
        if include_paper:
            if task in TASKS_TABLE3:
                shown = [k for k, name in GPT2_MODELS.items() if name in models] or list(GPT2_MODELS)
                paper = [(r, GPT2_MODELS[r.model]) for r in TABLE3 if r.model in shown]
            else:
                paper = [(r, "GPT-3 175B") for r in TABLE4]
            labelled: set[str] = set()
            for row, who in paper:
                label = f"paper: {who} {METHOD_NAMES.get(row.method, row.method)}"
                ax.scatter(
                    [row.trainable], [row.scores[key]], facecolors="none", edgecolors=colors[row.method], s=60,
                    linewidths=1.5, marker="s", label=None if label in labelled else label, zorder=3,
                )
                labelled.add(label)
        ax.set_xscale("log")
        xlabel = "Trainable parameters (log scale)"
        refused = sorted({f"{METHOD_NAMES.get(m, m)} ({why})" for m, why in
                          ((str((e.config.get("method") or {}).get("name", "?")), e.short)
                           for e in not_applicable if e.task == task and e.config is not None)})
        if refused:
            xlabel += "\nnot run, n/a: " + "; ".join(refused)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{column.header}{' (%)' if key in PERCENT_METRICS else ''}")
        ax.set_title(f"{TASK_LABELS[task]}: {column.header} vs trainable parameters")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # below the panel: inside, it hid points (a far-right FT run)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2 if refused else -0.13), ncol=2)
    figure.suptitle("Score vs number of trainable parameters (error bars: 95% bootstrap CI over the scored items; "
                    "paper: hollow markers)", fontsize=10)
    return save_figure(figure, out, overwrite=overwrite)


def plot_rank_sweep(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    task: str = "e2e",
    metric: str | None = None,
    epoch: str = "best",
    split: str | None = None,
    include_paper: bool = True,
    overwrite: bool = True,
) -> list[Path]:
    """LoRA rank sweep: ``metric`` (default: the task's primary) vs rank (log2 x), one line per configuration
    apart from the rank (e.g. per target set). With E2E BLEU the paper's Table 18 values (GPT-2 M, q,v) are
    drawn as hollow markers. Returns the PNG and SVG paths.
    """
    Figure = _figure_class()
    if task not in PRIMARY_METRIC:
        raise ReportError(f"unknown task {task!r}: expected one of {', '.join(TASK_ORDER)}")
    key = metric or PRIMARY_METRIC[task]
    if key not in COLUMNS or COLUMNS[key].task != task:
        valid = [k for k, c in COLUMNS.items() if c.task == task]
        raise ReportError(f"metric {key!r} is not a {task} metric: expected one of {', '.join(valid)}")
    column = COLUMNS[key]
    runs, skipped = load_runs(run_dirs)
    groups = [g for g in group_runs(runs) if g.task == task and g.method.get("name") == "lora" and g.untrained is None]
    lines: dict[str, tuple[str, list[tuple[int, float, float]]]] = {}
    for group in groups:
        rank = group.method.get("rank")
        cell = score_cell(group, column, epoch=epoch, split=split)
        if not isinstance(rank, int) or cell.mean is None:
            continue
        rest = json.loads(json.dumps(group.identity, default=str))
        rest["method"].pop("rank", None)
        line_key = json.dumps(rest, sort_keys=True)
        targets = ",".join(str(t) for t in group.method.get("targets") or [])
        label = f"{group.model_name} LoRA {targets}".strip()
        lines.setdefault(line_key, (label, []))[1].append((rank, cell.mean, cell.std or 0.0))
    paper_points = sorted(TABLE18_RANK_BLEU.items()) if include_paper and task == "e2e" and key == "bleu" else []
    if not lines:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped)
        raise ReportError(f"no scored LoRA runs of task {task!r} to plot{f' ({reasons})' if reasons else ''}")
    figure = Figure(figsize=(6.0, 4.2))
    ax = figure.subplots()
    labels = [label for label, _ in lines.values()]
    ranks: set[int] = set()
    for i, (label, points) in enumerate(lines.values()):
        points.sort()
        ranks.update(p[0] for p in points)
        shown = label if labels.count(label) == 1 else f"{label} #{i + 1}"
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                    marker="o", capsize=3, color=f"C{i % 10}", label=shown)
    if paper_points:
        ranks.update(r for r, _ in paper_points)
        ax.scatter([r for r, _ in paper_points], [v for _, v in paper_points], facecolors="none", edgecolors="black",
                   s=60, linewidths=1.5, marker="s", label="paper: GPT-2 M LoRA q,v (Table 18)", zorder=3)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ranks))
    ax.set_xticklabels([str(r) for r in sorted(ranks)])
    ax.set_xlabel("LoRA rank r (log scale)")
    ax.set_ylabel(f"{column.header}{' (%)' if key in PERCENT_METRICS else ''}")
    ax.set_title(f"{TASK_LABELS[task]}: {column.header} vs LoRA rank")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(figure, out, overwrite=overwrite)


def plot_searches(paths: Sequence[str | Path], out: str | Path, *, overwrite: bool = True) -> list[Path]:
    """The criterion vs the learning rate (log x), one line per search and one panel per task and criterion, the
    chosen rate circled. Searches whose grid varies more than the rate are named under the panels, not drawn."""
    Figure = _figure_class()
    searches = find_searches(paths)
    drawn = [s for s in searches if s.rate_only]
    if not drawn:
        raise ReportError(f"no search under {', '.join(str(p) for p in paths)} varies the learning rate alone "
                          f"({RATE_KEY}); `lora-ft table --searches` shows any grid")
    panels: dict[tuple[str, str], list[Search]] = {}
    for search in drawn:
        panels.setdefault((search.task, search.record["criterion"]), []).append(search)
    figure = Figure(figsize=(5.5 * len(panels), 4.2))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, ((task, criterion), members) in zip(axes, panels.items(), strict=True):
        for index, search in enumerate(members):
            points = sorted((c["values"][RATE_KEY], c["score"]) for c in search.record["candidates"]
                            if c.get("score") is not None)
            failed = [format_rate(c["values"][RATE_KEY]) for c in search.record["candidates"] if c.get("score") is None]
            label = search.label + (f" (failed: {', '.join(failed)})" if failed else "")
            color = f"C{index % 10}"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color, label=label)
            chosen = search.record["chosen"]
            ax.scatter([chosen["values"][RATE_KEY]], [chosen["score"]], s=160, facecolors="none", edgecolors=color,
                       linewidths=2, zorder=3)
        ax.set_xscale("log")
        rates = sorted({c["values"][RATE_KEY] for s in members for c in s.record["candidates"]})
        ax.minorticks_off()  # the grid's own rates as ticks: log-scale minor labels overlapped them
        ax.set_xticks(rates)
        ax.set_xticklabels([format_rate(r) for r in rates])
        ax.set_xlabel("Learning rate (log scale)")
        ax.set_ylabel(criterion_text(criterion))
        ax.set_title(f"{TASK_LABELS.get(task, task or '?')}: {criterion_text(criterion)} vs learning rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1)
    skipped = [s.name for s in searches if not s.rate_only]
    title = "Learning-rate searches on the selection split (circled: the rate chosen)"
    figure.suptitle(title + (f"; not drawn (grid over other keys): {', '.join(skipped)}" if skipped else ""), fontsize=10)
    return save_figure(figure, out, overwrite=overwrite)


PLOT_KINDS = ("figure2", "rank", "search", "all")


def plot_command(run_dirs: Sequence[str | Path], out_dir: str | Path, *, kind: str = "all") -> list[Path]:
    """``lora-ft plot``: ``<out_dir>/figure2.{png,svg}`` and/or ``<out_dir>/rank_sweep.{png,svg}``; with
    ``kind="search"``, ``<out_dir>/search.{png,svg}`` from the selection.json files under ``run_dirs``.

    With ``kind="all"`` the rank plot is left out (not an error) when the runs hold no scored E2E LoRA runs; "all" does
    not draw the search (its folders are not the final runs). Returns the files written.
    """
    if kind not in PLOT_KINDS:
        raise ReportError(f"kind={kind!r}: expected one of {', '.join(PLOT_KINDS)}")
    out_dir = Path(out_dir)
    if kind == "search":
        return plot_searches(run_dirs, out_dir / "search")
    paths: list[Path] = []
    if kind in ("figure2", "all"):
        paths += plot_params_vs_score(run_dirs, out_dir / "figure2")
    if kind in ("rank", "all"):
        try:
            paths += plot_rank_sweep(run_dirs, out_dir / "rank_sweep", include_paper=True)
        except ReportError:
            if kind == "rank":
                raise
    return paths
