"""`lora-ft eval`: decode a trained run with the paper's beam search and score it with the task's metrics.

LoRA weights are merged before decoding, so decoding costs exactly what the base model costs.
Writes predictions and references into the run directory and an `Evaluation` into results.json.

Evaluations of one run may run side by side (e.g. epochs 1 and 2 on two GPUs, or an epoch checkpoint while the run
still trains): `eval` takes no lock on the run for its decoding, and records each evaluation with one short locked
read-modify-write of results.json (`record_evaluation`) that keeps what other writers recorded meanwhile.

Predictions files hold exactly one item per line whatever the model wrote: line breaks inside an item are written as
the two characters "\\n" (any character Python counts as a line boundary likewise: "\\r", "\\u2028", ...), and a
`.jsonl` beside the `.txt` holds the exact strings with their references. The task decides where a completion ends
(`Task.end_completion`: SAMSum's and MNLI's at the first line break).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import torch

from .atomic import check_writable, disk_full_advice
from .yaml12 import dump_yaml
from .build import RANDOM_BASE_KEY, rebuilt_model, seeded_base_model
from .checkpoint import TRAINED_FILE, load_trained
from .sharded import MODEL_DIR
from .divergence import check_finite_weights
from .config import RunConfig, load_config
from .data import VirtualTokens, encode_prompt
from .models.architecture import max_positions
from .generate import BeamSearchConfig, beam_search, decode_completion
from .models.loading import load_tokenizer
from .schema import ConfigError
from .results import Evaluation, ParameterCounts, ResultsError, RunResults, collect_environment, read_results, record_evaluation, write_results, write_text_atomic
from .tasks import get_task
from .data import virtual_tokens_for
from .run_dir import CHECKPOINTS_DIR, CONFIG_FILE, RunDirectoryError, folder_contents, refuse_foreign_files, run_dir_of
from .run_lock import LOCK_FILENAME, RunLock

logger = logging.getLogger("lora_ft.evaluate")


def stop_token_ids(tokenizer, cfg: RunConfig, task=None) -> tuple[int, ...]:
    ids = [tokenizer.eos_token_id]
    # A one-line completion (SAMSum, MNLI) is the first line *with text* (`Task.end_completion` cuts it): no line break
    # may stop its decoding, because a model early in training often writes a blank line first (SmolLM2 after 12
    # SAMSum steps: "\n" at p = 0.3-0.6 for the first token), and stopping there scored an empty summary.
    if cfg.decoding.stop_at_double_newline and not (task is not None and task.single_line):
        double_newline = tokenizer.encode("\n\n", add_special_tokens=False)
        if len(double_newline) == 1:  # GPT-2: 628
            ids.append(double_newline[0])
    return tuple(dict.fromkeys(i for i in ids if i is not None))


# Every character str.splitlines() breaks at: written escaped, so a file line is always one item.
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` as one line of a text file: "\\r\\n" and each line-break character written as its escape ("\\n", ...)."""
    text = text.replace("\r\n", "\n")
    return _LINE_BREAK.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def write_predictions(run_dir: Path, name: str, predictions: list[str], items) -> None:
    """`name`.txt (one escaped line per item) and `name`.jsonl (the exact prediction and references per item)."""
    lines = [one_line(p) for p in predictions]
    text = "\n".join(lines) + "\n"
    assert len(text.splitlines()) == len(items), "one_line left a line break"  # the format's promise, checked
    write_text_atomic(run_dir / f"{name}.txt", text, overwrite=True)
    records = [json.dumps({"prediction": p, "references": list(i.references)}) for p, i in zip(predictions, items)]
    write_text_atomic(run_dir / f"{name}.jsonl", "\n".join(records) + "\n", overwrite=True)


def prompts_within_positions(tokenizer, task, items, virtual: VirtualTokens, model_config, max_new_tokens: int) -> list[list[int]]:
    """The items' prompts, each cut to fit the model's positions beside decoding.max_new_tokens: a longer one loses the
    start of its context, keeping the end that leads into the completion (a long SAMSum dialogue keeps its last turns),
    with one warning for all of them. Refusing instead would leave no way to score the split."""
    prompts = [encode_prompt(tokenizer, i.context, separator_eos=task.separator_eos, virtual=virtual) for i in items]
    positions = max_positions(model_config)
    if positions is None:
        return prompts
    room = positions - max_new_tokens
    fixed = len(encode_prompt(tokenizer, "", separator_eos=task.separator_eos, virtual=virtual))
    if room <= fixed:
        raise ConfigError(
            f"decoding.max_new_tokens {max_new_tokens} leaves {max(room, 0)} of the model's {positions} positions for "
            f"a prompt, which needs more than {fixed}; lower decoding.max_new_tokens"
        )
    long = [n for n, prompt in enumerate(prompts) if len(prompt) > room]
    if long:
        logger.warning(
            "%d of %d prompts do not fit in the model's %d positions beside decoding.max_new_tokens %d (the longest has "
            "%d tokens): each was cut from the start of its context to %d tokens, keeping the end", len(long),
            len(prompts), positions, max_new_tokens, max(len(prompts[n]) for n in long), room,
        )
        for n in long:
            prompts[n] = encode_prompt(tokenizer, items[n].context, separator_eos=task.separator_eos, virtual=virtual,
                                       max_tokens=room)
    return prompts


def references_text(task, items) -> str:
    """E2E: the official scorer's groups (blank line between MRs); other tasks: one (escaped) reference per line."""
    if task.grouped_references:
        return "\n\n".join("\n".join(one_line(r) for r in i.references) for i in items) + "\n"
    return "\n".join(one_line(i.references[0]) for i in items) + "\n"


def weights_dir(run_dir: Path, epoch: int | None) -> Path:
    """The directory holding the trained tensors of `epoch` (None: the final weights)."""
    if epoch is None:
        return run_dir
    directory = run_dir / CHECKPOINTS_DIR / f"epoch-{epoch}"
    if not ((directory / TRAINED_FILE).is_file() or (directory / MODEL_DIR).is_dir()):  # FSDP: shards (sharded.py)
        raise FileNotFoundError(f"{run_dir} has no checkpoint of epoch {epoch} ({directory} is missing)")
    return directory


def resolve_epochs(run_dir: Path, which: str) -> list[int | None]:
    """'last' -> [None] (final weights); 'best' -> the epoch of lowest validation loss; 'all' -> every epoch; 'N' -> [N]."""
    if which == "last":
        return [None]
    results = read_results(run_dir)
    if which == "best":
        if results.best_epoch is None:
            raise ResultsError(
                f"--epochs best: {run_dir} has no epoch with a validation loss, so there is no best epoch; "
                "use --epochs last, or train until an epoch ends"
            )
        return [results.best_epoch]
    if which == "all":
        if not results.epochs:
            raise ResultsError(f"--epochs all: {run_dir} has no finished epoch yet; use --epochs last")
        return [e.epoch for e in results.epochs]
    if not which.isdigit() or int(which) < 1:
        raise ConfigError(f"--epochs {which!r}: expected last, best, all or an epoch number >= 1")
    return [int(which)]


# A full disk's advice for eval (no --resume: that is training's).
EVAL_DISK_FULL_ADVICE = "eval decodes again from the start; the run's weights and the scores recorded so far are kept"


@disk_full_advice(EVAL_DISK_FULL_ADVICE)
def evaluate_config(
    cfg: RunConfig, *, base: bool = False, split: str | None = None, overwrite: bool = False, command: str | None = None,
    meteor: bool = True, adapter: str | Path | None = None,
) -> tuple[Path, list[Evaluation]]:
    """`lora-ft eval --config`: score a model without training it, in a run directory of its own (output.dir).

    With `base`, the plain base model; with `adapter`, a peft adapter folder on the config's base model (its method
    section becomes `method.name: peft` with the adapter's settings; scored_model.py); otherwise the config's method
    applied and untrained (LoRA: the base model, as B = 0; a prefix method: its initialisation). Recorded as epoch 0
    (the adapter: as a final model). A model folder (model.name_or_path) and an adapter are recorded with their
    provenance (results.json extra "scored_model"). A used run directory is refused unless `overwrite`.
    """
    from .scored_model import SCORED_KEY, adapter_method_section, adapter_record, adapter_settings, check_adapter_base
    from .scored_model import folder_record

    run_dir = run_dir_of(cfg)
    split = split or cfg.decoding.split
    get_task(cfg.task).check_source((split,))  # before anything is written or loaded
    check_writable(run_dir, "output.dir", "choose another output.dir, or make that folder writable")
    record, config = (folder_record(cfg.model.name_or_path) if base else None), cfg.to_dict()
    if adapter is not None:
        if base:
            raise ConfigError("eval --adapter scores the adapter on the config's base model; --base scores the base alone")
        settings = adapter_settings(adapter)
        config["method"] = adapter_method_section(adapter, settings)
        check_adapter_base(cfg, adapter, settings)
        record = adapter_record(adapter, settings)
    # One writer per run directory (run_lock.py): two `eval --config` into one output.dir cannot both create it.
    with RunLock(run_dir, command=command or f"lora-ft eval --config {cfg.source}"):
        used = [p for p in run_dir.iterdir() if p.name != LOCK_FILENAME]
        refuse_foreign_files(run_dir)  # a user's own config.yaml or results.json is never replaced, --overwrite or not
        if used and not (overwrite or cfg.output.overwrite):
            raise RunDirectoryError(
                f"{run_dir} is not empty: it holds {folder_contents(run_dir)}; choose another output.dir, or pass "
                "--overwrite to score into it"
            )
        # The header marks config.yaml as lora-ft's (run_dir.CONFIG_HEADERS): a later --overwrite may replace it.
        header = f"# lora-ft eval --config: {command or cfg.source}\n"
        write_text_atomic(run_dir / CONFIG_FILE, header + dump_yaml(config, sort_keys=False), overwrite=True)
        results = RunResults.start(run_dir.name, config, environment=collect_environment())
        results.status = "evaluated"
        if record is not None:
            results.extra[SCORED_KEY] = record
        if adapter is not None:  # the adapter's size as peft counts it on this model (shapes only)
            from .build import count_for_config
            from .config import config_from_dict

            results.parameters = ParameterCounts(**{k: v for k, v in count_for_config(config_from_dict(
                config, str(adapter))).items() if k in ("trainable", "total", "by_kind")})
        write_results(run_dir, results)
        return run_dir, evaluate_run(run_dir, split=split, base=base, untrained=not base and adapter is None,
                                     meteor=meteor, adapter=adapter)


@disk_full_advice(EVAL_DISK_FULL_ADVICE)
def evaluate_run(
    run_dir: str | Path,
    *,
    split: str | None = None,
    epochs: str = "last",
    base: bool = False,
    untrained: bool = False,
    device: str | None = None,
    meteor: bool = True,
    adapter: str | Path | None = None,
) -> list[Evaluation]:
    """Decode and score the run's weights of each chosen epoch; with `base`, the untrained base model instead
    (recorded as epoch 0), the reference point that shows what training added; with `untrained`, the config's method
    applied but not trained (also epoch 0). `meteor=False` skips METEOR (it needs Java) for tasks that report it (E2E)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / CONFIG_FILE)
    check_writable(run_dir, "the run directory", "eval writes its predictions and scores there: copy the run to a "
                   "folder you can write to, or make it writable")  # before a decoding whose output would be lost
    split = split or cfg.decoding.split
    task = get_task(cfg.task)
    task.check_source((split,))
    chosen = [0] if (base or untrained) else [None] if adapter is not None else resolve_epochs(run_dir, epochs)
    results = read_results(run_dir)
    if None in chosen and results.status not in ("trained", "evaluated"):
        # A run still training (or stopped) has no final weights of its own: an older run's may still lie there.
        raise ResultsError(
            f"{run_dir} has status '{results.status}': its final weights are written when training finishes; "
            "evaluate an epoch's checkpoint instead (--epochs N, best or all)"
        )
    for epoch in chosen:  # a diverged run's NaN weights decode to garbage: refuse them before loading any model
        if epoch != 0 and adapter is None:
            check_finite_weights(weights_dir(run_dir, epoch))
    examples = task.load(split)
    items = task.eval_items(examples)
    if cfg.task.max_eval_examples:
        items = items[: cfg.task.max_eval_examples]

    tokenizer = load_tokenizer(cfg.model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    references_file = f"references-{split}.txt"
    write_text_atomic(run_dir / references_file, references_text(task, items), overwrite=True)

    evaluations = []
    for epoch in chosen:
        # Built as training built it (seeded): a random_init base is drawn again, the same every time.
        if adapter is not None:  # a peft adapter on the config's base, merged as a peft run's is (scored_model.py)
            from .scored_model import load_adapter

            model, method = load_adapter(cfg, adapter)
            if method.mergeable:
                method.merge(model)
            virtual = virtual_tokens_for(method, model)
        elif epoch == 0 and not untrained:
            model, virtual = seeded_base_model(cfg), VirtualTokens()
        elif epoch == 0:
            adapted = rebuilt_model(cfg)
            model, virtual = adapted.model, virtual_tokens_for(adapted.method, adapted.model)
        else:
            adapted = rebuilt_model(cfg, trained_in=run_dir, recorded=results.extra.get(RANDOM_BASE_KEY))
            model = adapted.model
            load_trained(model, weights_dir(run_dir, epoch))
            if adapted.method.mergeable:
                adapted.method.merge(model)  # zero-latency inference: W = W0 + (alpha/r) B A
            virtual = virtual_tokens_for(adapted.method, model)
        model.to(device).eval()
        prompts = prompts_within_positions(tokenizer, task, items, virtual, model.config, cfg.decoding.max_new_tokens)
        beam = BeamSearchConfig(
            num_beams=cfg.decoding.num_beams,
            length_penalty=cfg.decoding.length_penalty,
            no_repeat_ngram_size=cfg.decoding.no_repeat_ngram_size,
            max_new_tokens=cfg.decoding.max_new_tokens,
            stop_token_ids=stop_token_ids(tokenizer, cfg, task),
            batch_size=cfg.decoding.batch_size,
        )
        start = time.time()
        outputs = beam_search(model, prompts, beam, pad_token_id=tokenizer.pad_token_id, device=device, progress=True)
        predictions = [task.end_completion(decode_completion(tokenizer, ids, blank_line_ends=not task.single_line))
                       for ids in outputs]
        seconds = time.time() - start
        label = {None: "adapter" if adapter is not None else "final", 0: "untrained" if untrained else "base"}.get(
            epoch, f"epoch{epoch}")
        predictions_file = f"predictions-{split}-{label}.txt"
        # Written before scoring: a scorer that fails (METEOR without Java) must not lose the decoding.
        write_predictions(run_dir, predictions_file.removesuffix(".txt"), predictions, items)
        options = {"meteor": meteor} if "METEOR" in task.metric_names else {}
        scores = task.score(predictions, items, **options)
        final_epoch = results.epochs[-1].epoch if results.epochs else None
        evaluation = Evaluation(
            split=split,
            epoch=epoch if epoch is not None else final_epoch,
            scores=scores,
            predictions_file=predictions_file,
            num_items=len(items),
            decoding={**beam.__dict__, "stop_token_ids": list(beam.stop_token_ids), "seconds": round(seconds, 2)},
        )
        record_evaluation(run_dir, evaluation, run=results)
        logger.info("%s %s: %s", split, label, scores)
        evaluations.append(evaluation)
        del model
    return evaluations
