"""Section 7 analyses: subspace similarity and amplification factor, against hand-built cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lora_ft.report.analysis import (
    amplification_factor,
    amplification_parts,
    analyze_runs,
    similarity_grid,
    subspace_similarity,
)
from lora_ft.results import ParameterCounts, RunResults, write_results


def test_phi_of_a_matrix_with_itself_is_one_on_the_diagonal():
    a = np.random.default_rng(0).normal(size=(8, 64))
    grid = similarity_grid(a, a)
    assert grid.shape == (8, 8)
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-12)
    for i in range(1, 9):
        assert subspace_similarity(a, a, i, i) == pytest.approx(1.0)
    # Off the diagonal the smaller subspace is contained in the larger one: also 1.
    np.testing.assert_allclose(grid, 1.0, atol=1e-12)


def test_phi_of_random_subspaces_matches_the_expectation():
    # For independent uniformly random subspaces of dims i and j in R^d: E||U_i^T U_j||_F^2 = i*j/d.
    rng = np.random.default_rng(1)
    d, r1, r2, draws = 48, 4, 8, 300
    mean = np.mean([similarity_grid(rng.normal(size=(r1, d)), rng.normal(size=(r2, d))) for _ in range(draws)], axis=0)
    i = np.arange(1, r1 + 1)[:, None]
    j = np.arange(1, r2 + 1)[None, :]
    expected = i * j / (d * np.minimum(i, j))
    np.testing.assert_allclose(mean, expected, atol=0.012)


def test_phi_uses_singular_vectors_in_order():
    # A1's strongest direction is e0, A2's is e1 and its second is e0.
    k = 5
    e = np.eye(k)
    a1 = np.stack([3.0 * e[0], 1.0 * e[2]])
    a2 = np.stack([1.0 * e[0], 4.0 * e[1]])
    assert subspace_similarity(a1, a2, 1, 1) == pytest.approx(0.0, abs=1e-12)
    assert subspace_similarity(a1, a2, 1, 2) == pytest.approx(1.0)  # e0 lies in span(e1, e0)
    assert subspace_similarity(a1, a2, 2, 2) == pytest.approx(0.5)  # span(e0, e2) vs span(e1, e0): 1 / 2
    grid = similarity_grid(a1, a2)
    assert grid[0, 0] == pytest.approx(0.0, abs=1e-12) and grid[1, 1] == pytest.approx(0.5)


def test_full_grid_corner_equals_row_space_overlap():
    # Using all singular vectors, phi only depends on the row spaces: check with a QR basis instead of an SVD.
    rng = np.random.default_rng(2)
    a1, a2 = rng.normal(size=(3, 20)), rng.normal(size=(6, 20))
    q1, _ = np.linalg.qr(a1.T)
    q2, _ = np.linalg.qr(a2.T)
    expected = np.sum((q1.T @ q2) ** 2) / 3
    assert similarity_grid(a1, a2)[-1, -1] == pytest.approx(expected)
    assert subspace_similarity(torch.tensor(a1), torch.tensor(a2), 3, 6) == pytest.approx(expected)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="different sizes"):
        similarity_grid(np.ones((2, 4)), np.ones((2, 5)))
    with pytest.raises(ValueError, match="1 <= i <= 2"):
        subspace_similarity(np.eye(2, 4), np.eye(2, 4), 3, 1)


def test_amplification_factor_by_hand():
    # Rank 1: dW = 6 e0 e1^T, so U = e0, V = e1 and U^T W V = W[0, 1] = 4; factor = 6 / 4.
    w = np.array([[1.0, 4.0], [3.0, 2.0]])
    dw = np.array([[0.0, 6.0], [0.0, 0.0]])
    assert amplification_factor(dw, w) == pytest.approx(1.5)
    # Rank 2: dW = diag(5, 2, 0); U = V = [e0, e1]; U^T W V = W[:2, :2], norm sqrt(1 + 4 + 4 + 1).
    w3 = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 7.0]])
    parts = amplification_parts(np.diag([5.0, 2.0, 0.0]), w3)
    assert parts["rank"] == 2
    assert parts["delta_w_norm"] == pytest.approx(math.sqrt(29))
    assert parts["projected_w_norm"] == pytest.approx(math.sqrt(10))
    assert parts["factor"] == pytest.approx(math.sqrt(29) / math.sqrt(10))
    with pytest.raises(ValueError, match="same shape"):
        amplification_factor(np.ones((2, 3)), np.ones((3, 2)))


def _lora_run(tmp_path: Path, name: str, rank: int, alpha: int) -> Path:
    run_dir = tmp_path / name
    config = {"model": {"name_or_path": "gpt2-medium"}, "task": {"name": "e2e"},
              "method": {"name": "lora", "rank": rank, "alpha": alpha, "targets": ["q", "v"]}, "training": {"seed": 1}}
    results = RunResults.start(name, config)
    results.parameters = ParameterCounts(1, 2, {})
    write_results(run_dir, results)
    return run_dir


def test_analyze_runs_writes_heatmaps_and_json(tmp_path: Path):
    rng = np.random.default_rng(3)
    d = 16
    keys = [f"transformer.h.{layer}.attn.c_attn:{w}" for layer in (0, 1, 10) for w in ("q", "v")]
    factors = {
        "r2": {k: (torch.tensor(rng.normal(size=(2, d))), torch.tensor(rng.normal(size=(d, 2)))) for k in keys},
        "r4": {k: (torch.tensor(rng.normal(size=(4, d))), torch.tensor(rng.normal(size=(d, 4)))) for k in keys},
    }
    run_a, run_b = _lora_run(tmp_path, "r2", 2, 16), _lora_run(tmp_path, "r4", 4, 16)
    base = {k: rng.normal(size=(d, d)) for k in keys}
    out = tmp_path / "analysis"
    written = analyze_runs(run_a, run_b, out, layers=[0, 10], base_weights=base,
                           factor_loader=lambda run_dir: factors[run_dir.name])
    assert written[0] == out / "analysis.json" and len(written) == 1 + 4
    report = json.loads(written[0].read_text())
    assert list(report["weights"]) == [k for k in keys if ".h.1." not in k]
    key = "transformer.h.10.attn.c_attn:v"
    entry = report["weights"][key]
    np.testing.assert_allclose(entry["similarity"], similarity_grid(factors["r2"][key][0], factors["r4"][key][0]))
    a, b = factors["r2"][key]
    expected = amplification_factor((16 / 2) * (b.numpy() @ a.numpy()), base[key])
    assert entry["amplification"]["a"]["factor"] == pytest.approx(expected)
    with Image.open(out / entry["heatmap"]) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_analyze_real_lora_runs_of_a_tiny_gpt2(tmp_path: Path):
    """End to end with the project's own LoRA checkpoints and base-model loading (a local random GPT-2)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lora_ft.build import adapted_model
    from lora_ft.checkpoint import save_trained
    from lora_ft.config import config_from_dict
    from lora_ft.methods.lora import lora_factors

    torch.manual_seed(0)
    d = 32
    base_dir = tmp_path / "tiny-gpt2"
    base = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=d, n_head=2, vocab_size=100, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))
    base.save_pretrained(base_dir)
    c_attn = base.transformer.h[1].attn.c_attn.weight.detach().double().numpy()  # Conv1D: (in, 3d) = [q | k | v]
    runs, factors = {}, {}
    for rank in (2, 4):
        run_dir = tmp_path / f"r{rank}"
        cfg = config_from_dict({"model": {"name_or_path": str(base_dir)}, "task": {"name": "e2e"},
                                "method": {"name": "lora", "rank": rank, "alpha": 8, "targets": ["q", "v"]},
                                "output": {"dir": str(run_dir)}})
        built = adapted_model(cfg)
        model = built.model
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_()  # a "trained" update: B != 0
        save_trained(model, built.method, run_dir)
        results = RunResults.start(run_dir.name, cfg.to_dict())
        results.status = "trained"
        write_results(run_dir, results)
        runs[rank] = run_dir
        factors[rank] = {k: (a.double().numpy(), b.double().numpy()) for k, (a, b) in lora_factors(model).items()}
    written = analyze_runs(runs[2], runs[4], tmp_path / "out")
    report = json.loads(written[0].read_text())
    key = "transformer.h.1.attn.c_attn:v"
    assert list(report["weights"]) == [f"transformer.h.{i}.attn.c_attn:{w}" for i in (0, 1) for w in ("q", "v")]
    np.testing.assert_allclose(report["weights"][key]["similarity"], similarity_grid(factors[2][key][0], factors[4][key][0]))
    # By hand: W_v is the last third of c_attn's output columns; dW = (alpha / r) B A; project W on dW's top-r directions.
    w_v = c_attn[:, 2 * d :].T
    a, b = factors[2][key]
    delta = (8 / 2) * (b @ a)
    u, _, vh = np.linalg.svd(delta)
    expected = np.linalg.norm(delta) / np.linalg.norm(u[:, :2].T @ w_v @ vh[:2].T)
    assert report["weights"][key]["amplification"]["a"]["factor"] == pytest.approx(expected)
    assert report["weights"][key]["amplification"]["b"]["rank"] == 4
    assert report["notes"] == []
