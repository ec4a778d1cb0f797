"""FSDP runs: every process writes and reads its own shard of the trained weights and of the optimizer state.

Under FSDP (`accelerate launch --config_file configs/accelerate/fsdp_*.yaml`) each process holds 1/N of every trained
tensor and of its AdamW moments. Gathering them into one process at every checkpoint, as the one-file checkpoint of
checkpoint.py does, would need the whole state in one process's memory (a 7B full fine-tuning: 28 GB of weights and
56 GB of AdamW moments). Here each process saves only its shard, through PyTorch's distributed checkpointing
(`torch.distributed.checkpoint`, "DCP") with its safetensors storage (`HuggingFaceStorageWriter`, one file per process):

    checkpoints/<name>/model/shard-0000<r+1>-model-000<i>-of-000<n>.safetensors       process r's part of the trained tensors
    checkpoints/<name>/optimizer/shard-0000<r+1>-model-000<i>-of-000<n>.safetensors   process r's part of AdamW's tensors
    checkpoints/<name>/optimizer.json                                                 the optimizer's other values (lr, betas, steps)

(file i of n: one per transformer block, one per other tensor: `file_groups`, so that no file is large.)

Each safetensors file records the offsets of its pieces in their full tensors, so DCP reads the same checkpoint into
any number of processes (resharding) or into one process without a process group (`read_sharded_model`: `lora-ft
export` and `eval` consolidate a sharded final state this way). No pickle is written or read: DCP's default storage
pickles its metadata; the safetensors storage keeps it in the files' headers. Optimizer values that are not tensors
(the flattened state dict's param groups, PaperAdamW's integer step) go to JSON (training_state.py), written once.

The manifest (checkpoint.py) lists every shard with its size and sha256: each process hashes the files it wrote and the
main process gathers the hashes, so no process reads the others' shards. On resume the shards are verified in N parts,
one per process, and the processes agree on the verdict before anything is loaded.

Accelerate 1.15 applies an FSDP config to accelerators only: on CPU processes (gloo) it silently runs without sharding
(MULTI_CPU). `fsdp_on_cpu` switches such an Accelerator to FSDP2, the same `fully_shard` a GPU run uses, so that the
sharded path runs and is measured on CPUs (tests/test_sharded.py, scripts/bench_fsdp.py).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

MODEL_DIR, OPTIMIZER_DIR = "model", "optimizer"
SHARD_FILE = re.compile(r"shard-\d{5}-model-\d{5}-of-\d{5}\.safetensors")
FINAL_DIR = "trained-sharded"  # an FT run's final weights under FSDP, one shard per process (export consolidates it)
SHARDED_FINAL_METHODS = ("ft", "ft_top")  # they train the base weights; every other method's tensors are small


def is_sharded(accelerator) -> bool:
    """Whether the run's model and optimizer state are sharded over its processes (FSDP)."""
    return getattr(accelerator, "distributed_type", None) == "FSDP"


def fsdp_on_cpu(accelerator) -> bool:
    """An FSDP config on CPU processes: switch the Accelerator (MULTI_CPU) to FSDP2, as on GPUs. Returns whether it did."""
    if getattr(accelerator, "distributed_type", None) != "MULTI_CPU" or os.environ.get(
            "ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from .schema import ConfigError

    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise ConfigError("FSDP on CPU processes needs fsdp_version: 2 in the accelerate config (configs/accelerate/)")
    if plugin.cpu_offload is not None and getattr(plugin.cpu_offload, "pin_memory", False):
        from torch.distributed.fsdp import CPUOffloadPolicy

        plugin.cpu_offload = CPUOffloadPolicy(pin_memory=False)  # pinned memory needs an accelerator
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as Accelerate does on GPUs
    return True


def check_supported(accelerator) -> None:
    """ConfigError (one line, before the model loads) where lora-ft's checkpoints would save part of the state only:
    DeepSpeed's ZeRO (its partitions live in DeepSpeed's objects) and FSDP1 (flattened parameters)."""
    from .schema import ConfigError

    kind = getattr(accelerator, "distributed_type", None)
    if kind == "DEEPSPEED":
        raise ConfigError("lora-ft does not train under DeepSpeed: ZeRO partitions the optimizer state (ZeRO-3 the "
                          "weights too) where lora-ft's checkpoints cannot reach it, so a resume would load one "
                          "partition; use FSDP instead (configs/accelerate/fsdp_full_shard.yaml: sharded checkpoints)")
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    if kind == "FSDP" and getattr(plugin, "fsdp_version", 2) != 2:
        raise ConfigError("lora-ft's sharded checkpoints need FSDP2: set fsdp_version: 2 in the accelerate config "
                          "(as configs/accelerate/fsdp_full_shard.yaml does)")


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a sharded (DTensor) value; a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor (a collective: every process calls it in the same order); a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def gathered_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors, whole, in every process (small methods' final weights: a LoRA is megabytes)."""
    return {name: full_value(p.detach()).cpu() for name, p in model.named_parameters() if p.requires_grad}


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """This process's shards of the trainable tensors, by the names `named_parameters` gives (a tied weight once)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model  # DCP's names have no "module."
    names = {name for name, p in inner.named_parameters() if p.requires_grad}
    return {name: t for name, t in get_model_state_dict(model).items() if name in names}


def _optimizer_state(model: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's flattened state dict ("state.<name>.exp_avg", "param_groups.<name>.lr", ...): (tensors, rest)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps torch's
    state = get_optimizer_state_dict(model, inner, options=StateDictOptions(flatten_optimizer_state_dict=True))
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors, {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}


def file_groups(names) -> dict[str, int]:
    """Which file (1, 2, ...) each tensor goes to: one per block ("transformer.h.3"), one per other tensor. The
    safetensors writer builds each file in memory before writing it: one file per process would hold that process's
    whole shard twice while it writes."""
    groups = sorted({_BLOCK.sub(r"\1", name) for name in names})
    index = {group: i + 1 for i, group in enumerate(groups)}
    return {name: index[_BLOCK.sub(r"\1", name)] for name in names}


_BLOCK = re.compile(r"^(.*?\.\d+)\..*$")  # "state.transformer.h.3.attn.c_attn.weight.exp_avg" -> "state.transformer.h.3"


def _save(state: dict[str, torch.Tensor], folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    writer = HuggingFaceStorageWriter(str(folder), fqn_to_index_mapping=file_groups(state), save_distributed=True)
    dcp.save(state, storage_writer=writer)


def _load(state: dict[str, torch.Tensor], folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder)))


def own_shard_files(directory: Path, process_index: int, folders=(MODEL_DIR, OPTIMIZER_DIR)) -> list[str]:
    """The shard files process `process_index` wrote under `directory` ("model/shard-00002-...") after a save."""
    prefix = f"shard-{process_index + 1:05d}-"
    return [f"{folder}/{p.name}" for folder in folders if (directory / folder).is_dir()
            for p in sorted((directory / folder).iterdir()) if p.name.startswith(prefix) and SHARD_FILE.fullmatch(p.name)]


def save_sharded_weights(directory: Path, model: nn.Module) -> None:
    """Every process writes its shard of the trainable tensors to `directory/model/` (a collective)."""
    _save(_model_state(model), directory / MODEL_DIR)


def save_sharded_state(directory: Path, model: nn.Module, optimizer) -> dict:
    """Every process writes its shards of the trainable tensors and of the optimizer's tensors (a collective); returns
    the optimizer's other values, the same in every process, for the main process to store as JSON."""
    save_sharded_weights(directory, model)
    tensors, rest = _optimizer_state(model, optimizer)
    _save(tensors, directory / OPTIMIZER_DIR)
    return rest


def load_sharded_state(directory: Path, model: nn.Module, optimizer, optimizer_rest: dict) -> None:
    """Read this process's parts of a sharded checkpoint (written by any number of processes) into the model and the
    optimizer (a collective). ValueError if the checkpoint's optimizer values do not fit this optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    weights = _model_state(model)
    _load(weights, directory / MODEL_DIR)
    set_model_state_dict(model, weights, options=StateDictOptions(strict=False))
    tensors, rest = _optimizer_state(model, optimizer)  # a fresh optimizer gets its state created first (zero steps)
    if set(rest) != set(optimizer_rest):
        raise ValueError(f"optimizer.json holds {len(optimizer_rest)} values, this optimizer {len(rest)}")
    _load(tensors, directory / OPTIMIZER_DIR)
    set_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), {**tensors, **optimizer_rest},
                             options=StateDictOptions(flatten_optimizer_state_dict=True))


def read_sharded_model(directory: Path) -> dict[str, torch.Tensor]:
    """The whole trained tensors of `directory/model/` in this one process (no process group): what `eval` and
    `export` load, however many processes wrote it. Holds the model once, as loading the model does anyway."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    reader = HuggingFaceStorageReader(str(directory / MODEL_DIR))
    metadata = reader.read_metadata().state_dict_metadata
    state = {name: torch.empty(meta.size, dtype=meta.properties.dtype) for name, meta in metadata.items()}
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process": yes
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=HuggingFaceStorageReader(str(directory / MODEL_DIR)), no_dist=True)
    return state
