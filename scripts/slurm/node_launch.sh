#!/bin/bash
# One node's launcher of scripts/slurm/multi_node.sbatch (srun starts one per node): accelerate launch with this
# node's rank; lora-ft's processes of every node meet at $LORA_FT_HEAD.
set -u
gpus=${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}
exec "${PYTHON:-python}" -m accelerate.commands.launch \
  --config_file "${ACCELERATE_CONFIG:-configs/accelerate/multi_node.yaml}" \
  --num_machines "$SLURM_NNODES" --num_processes $((SLURM_NNODES * gpus)) --machine_rank "$SLURM_NODEID" \
  --main_process_ip "$LORA_FT_HEAD" --main_process_port "${LORA_FT_PORT:-29500}" \
  -m lora_ft train "$@" --resume auto
