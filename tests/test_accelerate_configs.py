"""The Accelerate configs lora-ft ships (configs/accelerate/, issue 18 item 4): each parses as `accelerate launch` reads
it, says what it is for and what has run, and the FSDP ones train here on CPU processes (gloo). DeepSpeed is not
installed here: its configs are parsed into Accelerate's DeepSpeed plugin, and lora-ft refuses to train under them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from lora_ft.checkpoint import read_trained
from lora_ft.config import config_from_dict
from lora_ft.schema import ConfigError
from lora_ft.sharded import check_supported
from lora_ft.train import train
from tiny_runs import free_port, launch_env, tiny_run_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
KINDS = {  # file -> (distributed type, FSDP offload, DeepSpeed ZeRO stage, machines)
    "ddp.yaml": ("MULTI_GPU", None, None, 1),
    "fsdp_full_shard.yaml": ("FSDP", False, None, 1),
    "fsdp_full_shard_offload.yaml": ("FSDP", True, None, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", None, 2, 1),
    "deepspeed_zero3.yaml": ("DEEPSPEED", None, 3, 1),
    "multi_node.yaml": ("FSDP", False, None, 2),
}


def test_the_configs_shipped_are_the_ones_documented():
    assert sorted(p.name for p in CONFIGS) == sorted(KINDS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses_as_accelerate_launch_reads_it(path):
    """What `accelerate launch --config_file F` does before it starts anything: the config class (unknown keys are an
    error), the launch arguments it fills in, the environment it hands the processes, and the plugin each process
    builds from that environment."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    kind, offload, stage, machines = KINDS[path.name]
    assert str(load_config_from_file(str(path)).distributed_type).split(".")[-1] == kind
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    assert args.num_machines == machines and args.num_processes >= 2
    if kind == "DEEPSPEED":
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)  # as launch_command sets it
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            assert DeepSpeedPlugin().zero_stage == stage
    else:
        env = prepare_multi_gpu_env(args)
        if kind == "FSDP":
            with mock.patch.dict(os.environ, env):
                plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2 and (type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy") == offload
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    text = " ".join(header)
    assert "accelerate launch --config_file" in text and "# For: " in "\n".join(header), path.name
    assert "GB" in text, f"{path.name}: memory per GPU from lora-ft params"
    assert ("Run here" in text or "never run" in text) and ("Not run on GPUs" in text or "never run" in text)


def test_deepspeed_and_fsdp1_are_refused_in_one_line():
    class Accelerator:
        def __init__(self, kind, version=2):
            self.distributed_type = kind
            self.state = type("State", (), {"fsdp_plugin": type("Plugin", (), {"fsdp_version": version})()})()

    for accelerator, why in ((Accelerator("DEEPSPEED"), "does not train under DeepSpeed"),
                             (Accelerator("FSDP", version=1), "need FSDP2")):
        with pytest.raises(ConfigError, match=why) as info:
            check_supported(accelerator)
        assert "\n" not in str(info.value)
    check_supported(Accelerator("FSDP"))
    check_supported(Accelerator("MULTI_GPU"))


@pytest.mark.slow
def test_fsdp_with_cpu_offload_trains_on_cpu_processes_as_one_process_does(tmp_path):
    """fsdp_full_shard_offload.yaml on 2 CPU processes (offloading to the CPU from the CPU: the code path, not the
    speed; lora-ft turns off pinned memory there, which needs an accelerator): FT ends as one process does."""
    def config(name):
        config = tiny_run_config(tmp_path / name, epochs=1, batch_size=6, eval_batch_size=6)
        config["task"]["max_train_examples"] = 24
        config["method"] = {"name": "ft"}
        return config

    train(config_from_dict(config("one")))
    path = tmp_path / "offload.yaml"
    path.write_text(yaml.safe_dump(config("offload")))
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(REPO / "configs" / "accelerate" / "fsdp_full_shard_offload.yaml"),
           "--num_processes", "2", "--main_process_port", str(free_port()),
           "-m", "lora_ft", "train", "--config", str(path)]
    proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected, got = read_trained(tmp_path / "one")[0], read_trained(tmp_path / "offload")[0]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
