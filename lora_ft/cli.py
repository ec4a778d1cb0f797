"""The `lora-ft` command line: parses arguments and calls one function per command. No logic lives here.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so that checking a config
answers in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .cli_examples import add_examples
from . import console
from .errors import EXIT_USER_ERROR, UserError
from .run_lock import is_main_launch_process
from .schema import ConfigError


def _load(args):
    from .config import load_config
    from .config_checks import check_config

    cfg = load_config(args.config, args.overrides)
    check_config(cfg)
    return cfg


def cmd_train(args) -> int:
    args.overrides = train_overrides(args)
    cfg = _load(args)
    from .train import train

    from .stop_signals import parse_signals

    signals = parse_signals(args.stop_signals)
    command = "lora-ft train --config " + " ".join([args.config, *args.overrides])
    if args.stop_signals:
        command += f" --stop-signals {args.stop_signals}"
    run_dir = train(cfg, resume=args.resume, command=command, signals=signals)
    if is_main_launch_process():  # under `accelerate launch`, once, not once per process
        print(f"trained: {run_dir}")
    return 0


def cmd_eval(args) -> int:
    if args.config:
        if args.run:
            raise ConfigError("eval takes --run DIR (a trained run) or --config FILE (score without training), not both")
        cfg = _load(args)
        from .evaluate import evaluate_config

        command = "lora-ft eval --config " + " ".join([args.config, *args.overrides]) + (" --base" if args.base else "")
        command += f" --adapter {args.adapter}" if args.adapter else ""
        run_dir, evaluations = evaluate_config(cfg, base=args.base, split=args.split, overwrite=args.overwrite,
                                               command=command, meteor=not args.no_meteor, adapter=args.adapter)
        for ev in evaluations:
            print(json.dumps(ev.scores) if args.json else f"{run_dir}: {ev.split} epoch 0: " + _format_scores(ev.scores))
        return 0
    if args.adapter:
        raise ConfigError("eval --adapter DIR scores a peft adapter folder on a config's base model: give --config FILE")
    if args.run:
        from .evaluate import evaluate_run

        evaluations = evaluate_run(args.run, split=args.split, epochs=args.epochs, base=args.base,
                                   meteor=not args.no_meteor)
        for ev in evaluations:
            print(json.dumps(ev.scores) if args.json else f"{ev.split} epoch {ev.epoch}: " + _format_scores(ev.scores))
        return 0
    if not (args.task and args.predictions and args.references):
        raise ConfigError("eval needs --run DIR, or --task with --predictions and --references to score files")
    from .scoring import score_files

    scores = score_files(args.task, args.predictions, args.references, meteor=not args.no_meteor)
    print(json.dumps(scores) if args.json else _format_scores(scores))
    return 0


def _format_scores(scores: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


def cmd_params(args) -> int:
    cfg = _load(args)
    from .build import count_for_config, preflight
    from .memory import estimate_training_memory, format_memory

    report = count_for_config(cfg)
    memory = estimate_training_memory(cfg, report, preflight(cfg))
    if args.json:
        print(json.dumps({**report, "memory": memory}))
    else:
        print(f"trainable {report['trainable']:,}  total {report['total']:,}  "
              f"({100 * report['trainable'] / report['total']:.4f}% trainable)")
        if "trainable_by_peft" in report:  # checked equal when the method applied
            print(f"  peft's own count (get_nb_trainable_parameters): {report['trainable_by_peft']:,} trainable")
        for kind, n in report["by_kind"].items():
            print(f"  {n:>14,}  {kind}")
        print(format_memory(memory))
    return 0


def cmd_config(args) -> int:
    if args.action == "help":
        from .config import config_help

        print(config_help(args.method))
        return 0
    if not args.config:
        raise ConfigError(f"lora-ft config {args.action} needs a config file")
    cfg = _load(args)
    if args.action == "show":
        print(cfg.to_yaml(), end="")
    else:
        print(f"{args.config}: valid")
    return 0


def cmd_export(args) -> int:
    from .atomic import check_writable
    from .export import export_run

    check_writable(args.out, "export --out", "choose another --out, or make that folder writable")
    out = export_run(args.run, args.out, fmt=args.format, overwrite=args.overwrite)
    print(f"exported ({args.format}): {out}")
    return 0


def cmd_table(args) -> int:
    if args.out:  # checked before the runs are read: a mistyped --out must not cost the table's work
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"table --out {out} is a directory; give a file path, e.g. {out / 'table.md'}")
        if out.exists() and not args.overwrite:
            raise UserError(f"table --out {out} already exists; choose another file, or pass --overwrite to replace it")
        from .atomic import check_writable

        check_writable(out.parent, "table --out", f"choose another --out than {out}, or make that folder writable")
    if args.searches:
        from .report.searches import search_table

        text = search_table([Path(d) for d in args.searches], fmt=args.format)
    else:
        from .report.table import build_table

        text = build_table([Path(r) for r in args.runs], layout=args.layout, fmt=args.format, epoch=args.epoch,
                           compare_with=args.compare_with)
    if args.out:
        from .results import write_text_atomic

        write_text_atomic(args.out, text, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_sweep(args) -> int:
    from .report.sweep import run_sweep_command

    if args.select and not (args.dry_run or args.print_commands):
        from .report.selection import run_sweep_and_select

        return run_sweep_and_select(args.config, args.overrides, args.select)
    return run_sweep_command(args.config, args.overrides, dry_run=args.dry_run, print_commands=args.print_commands,
                             accelerate=args.accelerate)


def _check_out_dir(command: str, out: str) -> None:
    """An output folder that exists as a file is refused before any work (mkdir would fail after it)."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{command} --out {out} is a file; --out names a folder (it is created if missing)")
    from .atomic import check_writable

    check_writable(out, f"{command} --out", "choose another --out, or make that folder writable")


def cmd_plot(args) -> int:
    _check_out_dir("plot", args.out)
    from .report.plot import plot_command

    for path in plot_command([Path(r) for r in args.runs], Path(args.out), kind=args.kind):
        print(f"wrote {path}")
    return 0


def cmd_analyze(args) -> int:
    _check_out_dir("analyze", args.out)
    from .report.analysis import analyze_runs

    for path in analyze_runs(Path(args.runs[0]), Path(args.runs[1]), Path(args.out)):
        print(f"wrote {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other user error (exit 2, as argparse's own)."""

    def error(self, message: str):
        command = self.prog.removeprefix("lora-ft").strip()  # "eval" for `lora-ft eval`'s parser
        where = f"{command}: " if command else ""
        self.exit(EXIT_USER_ERROR, f"lora-ft: error: {where}{message} (see {self.prog} --help)\n")


def epochs_choice(text: str) -> str:
    """--epochs: last | best | all | N >= 1 (epoch 0, the untrained base model, is --base)."""
    if text in ("last", "best", "all") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not last, best, all or an epoch number >= 1 (the untrained base model: --base)"
    )


class ResumeAction(argparse.Action):
    """--resume (True) or --resume auto. Any other word after --resume is an override (`--resume method.rank=4` was
    always allowed): it goes back to the overrides, in its place."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value or True)
        if value not in (None, "auto"):
            setattr(namespace, self.dest, True)
            before = bool(getattr(namespace, "overrides", None))  # overrides already parsed stand before it
            namespace.resume_overrides = (before, [*getattr(namespace, "resume_overrides", (0, []))[1], value])


def train_overrides(args) -> list[str]:
    before, words = getattr(args, "resume_overrides", (False, []))
    return [*args.overrides, *words] if before else [*words, *args.overrides]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lora-ft", description="Reproduce the LoRA paper's experiments.")
    parser.add_argument("--version", action="version", version=f"lora-ft {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print errors only, no progress bars")
    loudness.add_argument("-v", "--verbose", action="count", default=0,
                          help="print progress lines (also on a terminal); -vv: debug lines too")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p, required=True):
        p.add_argument("--config", required=required, help="YAML run config")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides applied after the config")

    p = sub.add_parser("train", help="train one run (use `accelerate launch -m lora_ft train ...` for several GPUs)")
    with_config(p)
    p.add_argument("--resume", nargs="?", default=False, action=ResumeAction, metavar="auto",
                   help="continue the run in output.dir from its last checkpoint; --resume auto: continue it if it has "
                   "one, else start it (one command for a job's first start and every requeue)")
    p.add_argument("--stop-signals", metavar="SIGNALS",
                   help="signals that make training finish its step, write a checkpoint and exit with 128 + the "
                   "signal's number (default TERM,USR1; INT, Ctrl-C, always)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="decode and score a run, or score prediction files")
    p.add_argument("--run", help="run directory to decode and score")
    p.add_argument("--config", help="score without training: the config's model (with --base) or its method untrained, "
                   "in a new run directory output.dir")
    p.add_argument("overrides", nargs="*", help="with --config: section.key=value overrides")
    p.add_argument("--adapter", help="with --config: score this peft adapter folder (save_pretrained's, a user's or "
                   "`lora-ft export`'s) on the config's base model, recorded with its provenance; a merged model "
                   "folder: model.name_or_path=DIR --base")
    p.add_argument("--overwrite", action="store_true", help="with --config: score into a used output.dir")
    p.add_argument("--split", help="validation | test (default: decoding.split)")
    p.add_argument("--epochs", default="last", type=epochs_choice,
                   help="last (final weights) | best (lowest validation loss) | all | N")
    p.add_argument("--base", action="store_true", help="score the untrained base model of the run's (or --config's) config (epoch 0)")
    p.add_argument("--task", help="score files without a model: the task whose metrics to use (e2e, samsum, ...)")
    p.add_argument("--predictions", help="one prediction per line")
    p.add_argument("--references", help="E2E: references grouped by blank lines; others: one per line")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--json", action="store_true", help="print scores as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("params", help="count trainable and total parameters without loading weights")
    with_config(p)
    p.add_argument("--json", action="store_true", help="print {\"trainable\": N, \"total\": M, ...} as JSON")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("config", help="show | validate a config, or list every key with its help")
    p.add_argument("action", choices=["show", "validate", "help"])
    p.add_argument("config", nargs="?", help="YAML run config")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied after the config")
    p.add_argument("--method", help="with help: only this method's keys")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("export", help="write a trained run as a peft adapter, a merged transformers model, or in lora-ft's format")
    p.add_argument("--run", required=True, help="trained run directory")
    p.add_argument("--out", required=True, help="directory to write (refused if it holds anything, unless --overwrite)")
    p.add_argument("--format", choices=["peft", "merged", "lora-ft"], default="peft",
                   help="peft: adapter for AutoPeftModelForCausalLM (LoRA runs); merged: full transformers model (LoRA, "
                   "BitFit, FT, FT^Top); lora-ft: trained tensors + run config, loaded by lora_ft.export.load_export "
                   "(every method)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier lora-ft export in --out (of any format); a folder holding other files is refused")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("table", help="the paper's Table 3 / Table 4 from run directories")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--runs", nargs="+", help="run directories, or folders holding them")
    given.add_argument("--searches", nargs="+", metavar="DIR",
                       help="instead: every selection.json (lora-ft sweep --select) under DIR as one table of "
                       "search x value -> score on the selection split, the choice in bold (markdown or json)")
    p.add_argument("--layout", choices=["auto", "table3", "table4", "custom-bleu", "custom-rouge", "custom-accuracy",
                                        "custom-exact_match"], default="auto",
                   help="table3 (E2E), table4 (WikiSQL/MNLI/SAMSum), custom-<metric> (task.name: custom), auto: from the "
                   "runs' tasks")
    p.add_argument("--format", choices=["markdown", "latex", "csv", "json"], default="markdown", help="output format")
    p.add_argument("--epoch", choices=["best", "last", "best-validation"], default="best",
                   help="each seed's epoch: best test score (the paper's rule), last, or lowest validation loss "
                   "(best-validation: chosen on the selection split)")
    p.add_argument("--compare-with", choices=["gpt2-medium", "gpt2-large"],
                   help="set E2E runs of another model beside this GPT-2 model's Table 3 rows (marked: a different model)")
    p.add_argument("--out", help="write to this file instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("sweep", help="one run per combination of a config's `sweep:` lists")
    with_config(p)
    p.add_argument("--dry-run", action="store_true", help="list the runs and their output directories")
    p.add_argument("--print-commands", action="store_true", help="print one command per run for a scheduler")
    p.add_argument("--accelerate", action="store_true", help="with --print-commands: `accelerate launch` commands")
    p.add_argument("--select", metavar="CRITERION",
                   help="after the runs, choose the best on the selection split and write <output.dir>/selection.json: "
                   "validation_loss (lowest) or validation:METRIC (highest, after `eval --split validation`)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="Figure 2 (score vs trainable parameters), the rank sweep, the searches, PNG + SVG")
    p.add_argument("--runs", nargs="+", required=True,
                   help="run directories, or folders holding them (--kind search: folders holding selection.json)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kind", choices=["figure2", "rank", "search", "all"], default="all",
                   help="which figure(s) to draw; search: the learning-rate searches (not part of all)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("analyze", help="Section 7: subspace similarity and amplification of two LoRA runs")
    p.add_argument("--runs", nargs=2, required=True, metavar=("RUN_A", "RUN_B"), help="two LoRA run directories")
    p.add_argument("--out", required=True, help="output directory for the heat-maps and analysis.json")
    p.set_defaults(func=cmd_analyze)
    add_examples(parser, sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The one place that turns a user's mistake into one line and exit code 2. Every module raises its own subclass
    of `UserError` (lora_ft/errors.py) where the mistake is found, with a message naming the file or key and the fix;
    anything else is a bug and keeps its traceback (exit 1)."""
    args = build_parser().parse_args(argv)
    console.configure(-1 if args.quiet else args.verbose)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"lora-ft: config error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (UserError, FileNotFoundError) as exc:
        # Errors about the user's input or files get one clear line; anything else is a bug and keeps its traceback.
        if is_main_launch_process() or not getattr(exc, "main_process_only", False):  # a stop: every process, once
            print(f"lora-ft: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USER_ERROR)  # Ctrl-C during training: 130


if __name__ == "__main__":
    sys.exit(main())
