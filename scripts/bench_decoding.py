"""Benchmark: lora-ft's beam search (lora_ft.generate) against transformers' `generate` with the same settings.

    python scripts/bench_decoding.py [--model tiny-gpt2|smollm2-135m|gpt2-medium|llama-1b] [--mrs 48] [--repeats 3]
                                     [--device cpu|cuda] [--out bench/decoding-<model>.json]

Random-weight models of the named shape (speed does not depend on the weights' values; no download): tiny-gpt2 is
GPT-2's vocabulary with 2 blocks of width 64; smollm2-135m is SmolLM2-135M's LLaMA shape (30 blocks, width 576). The
prompts are the first E2E validation MRs, GPT-2-tokenised. Settings: beam 10, 64 new tokens, length penalty 0.9,
no-repeat 4-grams, batches of 16, stop on the EOS id. The two are timed alternately; each decodes every prompt once per
repeat. The outputs differ by design (the authors' rules are not Hugging Face's: see lora_ft/generate.py), so this
measures speed only; tests/test_generate.py checks lora-ft's outputs against the authors' loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_ft.generate import BeamSearchConfig, beam_search  # noqa: E402


def build(name: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == "tiny-gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=50257))
    if name == "gpt2-medium":
        return GPT2LMHeadModel(GPT2Config(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257))
    if name == "smollm2-135m":
        return LlamaForCausalLM(LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                            tie_word_embeddings=True, max_position_embeddings=2048))
    if name == "llama-1b":
        return LlamaForCausalLM(LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                            tie_word_embeddings=True, max_position_embeddings=2048))
    raise SystemExit(f"unknown model {name!r}")


def prompts(count: int, vocab: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / ".." / "shared" / "data" / "gpt2-tokenizer"))
    mrs: list[str] = []
    for line in (ROOT / ".." / "shared" / "data" / "e2e" / "valid.txt").read_text(encoding="utf-8").splitlines():
        mr = line.split("||", 1)[0].strip()
        if mr not in mrs:
            mrs.append(mr)
        if len(mrs) == count:
            break
    return [[t % vocab for t in tokenizer(mr)["input_ids"]] for mr in mrs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--mrs", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build(args.model).to(device).eval()
    vocab = model.config.vocab_size
    eos = vocab - 1
    model.generation_config.pad_token_id = eos
    cfg = BeamSearchConfig(num_beams=10, length_penalty=0.9, no_repeat_ngram_size=4,
                           max_new_tokens=args.max_new_tokens, stop_token_ids=(eos,), batch_size=16)
    batch = prompts(args.mrs, vocab)

    def ours() -> None:
        beam_search(model, batch, cfg, pad_token_id=eos, device=device)

    def hf() -> None:
        for start in range(0, len(batch), cfg.batch_size):
            part = batch[start : start + cfg.batch_size]
            width = max(len(p) for p in part)
            ids = torch.tensor([[eos] * (width - len(p)) + p for p in part], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in part], device=device)
            with torch.inference_mode():
                model.generate(ids, attention_mask=mask, do_sample=False, num_beams=cfg.num_beams,
                               max_new_tokens=cfg.max_new_tokens, length_penalty=cfg.length_penalty,
                               no_repeat_ngram_size=cfg.no_repeat_ngram_size, eos_token_id=eos, pad_token_id=eos)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"lora_ft": [], "hf_generate": []}
    pair = [("lora_ft", ours), ("hf_generate", hf)]
    for _ in range(args.repeats):
        for name, fn in pair:
            times[name].append(timed(fn))
        pair.reverse()  # each goes first half of the time
    ms = {name: 1000 * statistics.median(values) / len(batch) for name, values in times.items()}
    report = {
        "benchmark": "beam search (beam 10, 64 new tokens, lp 0.9, no-repeat 4, batch 16) vs transformers generate",
        "model": args.model, "device": args.device, "mrs": len(batch), "repeats": args.repeats,
        "torch": torch.__version__,
        "lora_ft_ms_per_mr": round(ms["lora_ft"], 1), "hf_generate_ms_per_mr": round(ms["hf_generate"], 1),
        "speedup_lora_ft_over_hf": round(ms["hf_generate"] / ms["lora_ft"], 2),
        "all_s": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "command": "python scripts/bench_decoding.py " + " ".join(sys.argv[1:]),
    }
    out = args.out or ROOT / "bench" / f"decoding-{args.model}-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
