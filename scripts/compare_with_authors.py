"""Side by side: the authors' unmodified training code and lora-ft's Trainer on the same tiny run.

    python scripts/compare_with_authors.py --authors /path/to/microsoft-LoRA               # adamw_paper, warm-up 0
    python scripts/compare_with_authors.py --authors /path/to/microsoft-LoRA --optimizer adamw_torch   # fails: A, B

Needs a checkout of github.com/microsoft/LoRA (nothing is installed from it: its loralib/ and examples/NLG/src/ are put
on sys.path, unmodified). Runs, on the CPU:
- the authors' data pipeline (format_converting_e2e.py, gpt2_encode.py --add_bos --add_eos) on the first 8 rows
  (--rows) of an E2E `MR||reference` file, and a check that lora-ft tokenises them to the same ids and loss mask;
- lora-ft's Trainer: a tiny random GPT-2 (2 blocks, width 64, GPT-2 vocabulary), LoRA r=4 alpha=32 on q,v, a fixed A,
  B = 0, LoRA dropout 0, batch 8, lr 2e-2, weight decay 0.01, betas (0.9, 0.999), eps 1e-6, label smoothing 0.1,
  linear schedule (--warmup, default 0), 10 steps;
- the authors' gpt2_ft.train_validate loop with their GPT2LMModel (loaded with lora-ft's base weights through their
  load_weight), their AdamW (--correct_bias) and linear schedule, the same A and B;
and compares each step's loss (needs rel < 1e-4) and the final A and B (need max abs diff < 1e-5).

Instrumentation only: the authors' per-step loss is read by wrapping gpt2_ft.AverageMeter.update (train_validate feeds
it `_lm_loss.item()` each step), lora-ft's by wrapping Trainer._training_step; neither changes what is computed.
Their __main__ block is replayed here with the device set to the CPU and no DDP wrapper (it calls .cuda() and wraps
the model in DistributedDataParallel); a single-process gloo group stands in for their NCCL group (DistributedSampler,
barrier). gpt2_encode.py imports progress.bar.Bar without using it: a stub stands in when `progress` is not installed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--authors", required=True, help="a microsoft/LoRA checkout (or an extract of it)")
ap.add_argument("--data", help="an E2E MR||reference file, whose first --rows rows are used "
                "(default: the checkout's examples/NLG/data/e2e/valid.txt)")
ap.add_argument("--optimizer", choices=["adamw_paper", "adamw_torch"], default="adamw_paper", help="lora-ft's")
ap.add_argument("--authors-optimizer", choices=["theirs", "torch"], default="theirs",
                help="'torch': swap torch.optim.AdamW into their loop (a control)")
ap.add_argument("--rows", type=int, default=8, help="training rows (a multiple of 8: whole batches)")
ap.add_argument("--warmup", type=int, default=0)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--lr", type=float, default=2e-2)
ap.add_argument("--rank", type=int, default=4)
ap.add_argument("--alpha", type=int, default=32)
ap.add_argument("--n-layer", type=int, default=2)
ap.add_argument("--n-embd", type=int, default=64)
ap.add_argument("--n-head", type=int, default=4)
ap.add_argument("--seq-len", type=int, default=512)
ap.add_argument("--tokenizer", help="lora-ft's tokenizer (default: the checkout's examples/NLG/vocab, GPT-2's BPE)")
ap.add_argument("--json", help="write the figures here")
args = ap.parse_args()

if args.rows < 8 or args.rows % 8:
    sys.exit("--rows must be a multiple of 8 (whole batches: the authors pad a partial batch with random repeats)")
authors = Path(args.authors).resolve()
src = authors / "examples" / "NLG" / "src"
if not (src / "gpt2_ft.py").is_file() or not (authors / "loralib").is_dir():
    sys.exit(f"{authors} is not a microsoft/LoRA checkout (no examples/NLG/src/gpt2_ft.py or loralib/)")
data_file = Path(args.data or authors / "examples" / "NLG" / "data" / "e2e" / "valid.txt").resolve()
tokenizer = args.tokenizer or str(authors / "examples" / "NLG" / "vocab")
torch.set_num_threads(1)
work = Path(tempfile.mkdtemp(prefix="authors_check_"))

# ---- the authors' data pipeline on the first rows --------------------------------------------------------------------
rows_file = work / "e2e8.txt"
rows = data_file.read_text(encoding="utf-8").splitlines(keepends=True)[: args.rows]
rows_file.write_text("".join(rows), encoding="utf-8")
stubs = work / "stubs" / "progress"
stubs.mkdir(parents=True)
(stubs / "__init__.py").write_text("")
(stubs / "bar.py").write_text("class Bar:  # gpt2_encode.py imports it and never uses it\n    pass\n")
env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(work / "stubs")])}
subprocess.run(
    [sys.executable, str(src / "format_converting_e2e.py"), str(rows_file), str(work / "e2e8_formatted.jsonl")],
    check=True, env=env,
)
subprocess.run([sys.executable, str(src / "gpt2_encode.py"), "--vocab", str(authors / "examples" / "NLG" / "vocab"),
                "--input", str(work / "e2e8_formatted.jsonl"), "--output", str(work / "e2e8.jsonl"), "--add_bos",
                "--add_eos"], check=True, env=env)

# ---- lora-ft --------------------------------------------------------------------------------------------------------
from lora_ft.config import config_from_dict  # noqa: E402
from lora_ft.methods.lora import lora_layers  # noqa: E402
from lora_ft.train import Trainer  # noqa: E402

config = config_from_dict({
    "model": {"name_or_path": "gpt2", "tokenizer": tokenizer, "random_init": True,
              "config_overrides": {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head}},
    "task": {"name": "e2e", "train_file": str(rows_file), "validation_file": str(rows_file)},
    "method": {"name": "lora", "rank": args.rank, "alpha": args.alpha, "dropout": 0.0, "targets": ["q", "v"]},
    "training": {"epochs": -(-args.steps * 8 // args.rows), "max_steps": args.steps, "batch_size": 8,
                 "learning_rate": args.lr, "weight_decay": 0.01, "adam_betas": [0.9, 0.999], "adam_epsilon": 1e-6,
                 "warmup_steps": args.warmup, "label_smoothing": 0.1, "max_grad_norm": None, "seed": 110,
                 "optimizer": args.optimizer, "log_every_steps": 1000},
    "output": {"dir": str(work / "lora_ft_run")},
}, "compare_with_authors.py")
trainer = Trainer(config)
model = trainer.accelerator.unwrap_model(trainer.model)
layers = lora_layers(model)
gen = torch.Generator().manual_seed(1234)
fixed_a = {}
with torch.no_grad():
    for name, layer in layers.items():  # a fixed A (kaiming-uniform scale, as loralib), B = 0
        bound = 1.0 / (layer.lora_A.shape[1] ** 0.5)
        layer.lora_A.copy_(torch.rand(layer.lora_A.shape, generator=gen) * 2 * bound - bound)
        layer.lora_B.zero_()
        fixed_a[name] = layer.lora_A.detach().clone()
base_state = {
    k.replace("base_layer.", ""): v.detach().clone() for k, v in model.state_dict().items() if "lora_" not in k
}
train_tokens = [(list(e["input_ids"]), list(e["labels"])) for e in trainer.train_loader.dataset]

ours_losses = []
step_fn = trainer._training_step


def recording_step(batch):
    loss_sum, tokens = step_fn(batch)  # device tensors over all processes (the Trainer syncs once per log interval)
    ours_losses.append(float(loss_sum / tokens))  # the step's token-mean loss, as the authors' AverageMeter sees it
    return loss_sum, tokens


trainer._training_step = recording_step
trainer.run()
ours_final = {name: (l.lora_A.detach().clone(), l.lora_B.detach().clone().reshape(-1, l.lora_B.shape[-1]))
              for name, l in layers.items()}

# ---- the authors' code ----------------------------------------------------------------------------------------------
sys.path[:0] = [str(src), str(authors)]  # their modules and loralib, unmodified
import torch.distributed as dist  # noqa: E402

with socket.socket() as free:
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)

import gpt2_ft  # noqa: E402
from data_utils import FT_Dataset  # noqa: E402
from model import GPT2Config, GPT2LMModel  # noqa: E402
from optimizer import create_adam_optimizer_from_args, create_optimizer_scheduler  # noqa: E402
import loralib as lora  # noqa: E402

# Tokens: the authors' jsonl (their format_converting_e2e.py + gpt2_encode.py) against lora-ft's encoding.
authors_rows = [json.loads(line) for line in (work / "e2e8.jsonl").read_text().splitlines()]
token_mismatch = []
for i, (row, (ids, labels)) in enumerate(zip(authors_rows, train_tokens)):
    theirs_ids = row["context"] + row["completion"]
    theirs_mask = [0] * len(row["context"]) + [1] * len(row["completion"])
    ours_mask = [int(l != -100) for l in labels]
    if theirs_ids != ids or theirs_mask != ours_mask:
        token_mismatch.append(i)

authors_jsonl = work / "e2e8.jsonl"
their_args = gpt2_ft.parser.parse_args([
    "--train_data", str(authors_jsonl), "--valid_data", str(authors_jsonl), "--train_batch_size", "8",
    "--grad_acc", "1", "--valid_batch_size", "4", "--seq_len", str(args.seq_len), "--model_card", "gpt2.sm",
    "--platform", "cpu", "--clip", "0.0", "--lr", str(args.lr), "--weight_decay", "0.01", "--correct_bias",
    "--adam_beta2", "0.999", "--scheduler", "linear", "--warmup_step", str(args.warmup), "--max_step", str(args.steps),
    "--save_interval", "100000", "--eval_interval", "100000", "--log_interval", "100000", "--lora_dim", str(args.rank),
    "--lora_alpha", str(args.alpha), "--lora_dropout", "0.0", "--label_smooth", "0.1",
    "--work_dir", str(work / "authors_run"), "--random_seed", "110",
])
their_args.device, their_args.rank, their_args.world_size, their_args.dist = torch.device("cpu"), 0, 1, dist
(work / "authors_run").mkdir()
torch.manual_seed(their_args.random_seed)

train_data = FT_Dataset(their_args.train_data, their_args.train_batch_size, their_args.seq_len, joint_lm=False)
valid_data = FT_Dataset(their_args.valid_data, their_args.valid_batch_size, their_args.seq_len)
train_loader = torch.utils.data.DataLoader(
    train_data, batch_size=their_args.train_batch_size, num_workers=0, shuffle=False, pin_memory=False, drop_last=True,
    sampler=torch.utils.data.distributed.DistributedSampler(train_data, seed=their_args.random_seed),
)
valid_loader = torch.utils.data.DataLoader(
    valid_data, batch_size=their_args.valid_batch_size, num_workers=0, shuffle=False, pin_memory=False,
    drop_last=False, sampler=torch.utils.data.distributed.DistributedSampler(valid_data, seed=their_args.random_seed),
)
gpt_config = GPT2Config(n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, lora_attn_dim=args.rank,
                        lora_attn_alpha=args.alpha, lora_dropout=0.0)
lm_net = GPT2LMModel(gpt_config)
# lora-ft's tiny random base weights, in the layout of the checkpoints their load_weight reads (no "transformer.")
lm_net.load_weight({k[len("transformer."):]: v for k, v in base_state.items() if k.startswith("transformer.")})
their_state = lm_net.transformer.state_dict()
not_loaded = [k for k, v in base_state.items() if k.startswith("transformer.")
              and not torch.equal(their_state[k[len("transformer."):]], v)]
assert not not_loaded, f"their load_weight did not take lora-ft's base weights: {not_loaded}"
with torch.no_grad():
    for i, block in enumerate(lm_net.transformer.h):
        block.attn.c_attn.lora_A.copy_(fixed_a[f"transformer.h.{i}.attn.c_attn"])
        block.attn.c_attn.lora_B.zero_()
lora.mark_only_lora_as_trainable(lm_net)
their_optimizer = create_adam_optimizer_from_args(lm_net, their_args)
if args.authors_optimizer == "torch":  # a control: torch's AdamW in their loop
    their_optimizer = torch.optim.AdamW([p for p in lm_net.parameters() if p.requires_grad], lr=args.lr,
                                        betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
scheduler = create_optimizer_scheduler(their_optimizer, their_args)

their_losses = []


class RecordingMeter(gpt2_ft.AverageMeter):
    def update(self, val, n=1):
        their_losses.append(val)
        super().update(val, n)


gpt2_ft.AverageMeter = RecordingMeter
train_step = 0
for epoch in itertools.count(start=1):
    train_step = gpt2_ft.train_validate(lm_net, their_optimizer, scheduler, train_loader, valid_loader, their_args,
                                        train_step=train_step, epoch=epoch)
    if train_step >= their_args.max_step:
        break
dist.destroy_process_group()

# ---- compare --------------------------------------------------------------------------------------------------------
rel = [abs(a - b) / abs(b) for a, b in zip(ours_losses, their_losses)]
worst_a = worst_b = 0.0
for i, block in enumerate(lm_net.transformer.h):
    a, b = ours_final[f"transformer.h.{i}.attn.c_attn"]
    worst_a = max(worst_a, float((a - block.attn.c_attn.lora_A.detach()).abs().max()))
    worst_b = max(worst_b, float((b - block.attn.c_attn.lora_B.detach()).abs().max()))
figures = {
    "optimizer": args.optimizer, "authors_optimizer": args.authors_optimizer, "rows": args.rows,
    "warmup": args.warmup, "steps": len(their_losses), "lr": args.lr,
    "token_mismatch_rows": token_mismatch, "lora_ft_losses": ours_losses, "authors_losses": their_losses,
    "loss_rel_diff_per_step": rel, "worst_loss_rel_diff": max(rel), "first_loss_rel_diff": rel[0],
    "final_A_max_abs_diff": worst_a, "final_B_max_abs_diff": worst_b,
    "final_B_max_abs": max(float(l.lora_B.detach().abs().max()) for l in layers.values()),
}
print(json.dumps({k: v for k, v in figures.items() if "losses" not in k and k != "loss_rel_diff_per_step"}, indent=1))
print("step  lora-ft            authors            rel diff")
for i, (a, b, r) in enumerate(zip(ours_losses, their_losses, rel), start=1):
    print(f"{i:4d}  {a:.12f}  {b:.12f}  {r:.2e}")
ok = max(rel) < 1e-4 and worst_a < 1e-5 and worst_b < 1e-5 and len(ours_losses) == len(their_losses) == args.steps
print("PASS" if ok else "FAIL", "(need every step's loss within rel 1e-4 and final A, B within 1e-5)")
if args.json:
    Path(args.json).write_text(json.dumps(figures, indent=1))
shutil.rmtree(work, ignore_errors=True)
sys.exit(0 if ok else 1)
