"""Section 7 of the paper: how the learned low-rank updates relate to each other and to the frozen weights.

- Subspace similarity (Section 7.2, Figures 3 and 4). For LoRA factors A1 (r1 × k) and A2 (r2 × k),
  let U1 (k × r1) and U2 (k × r2) hold their right-singular vectors, by decreasing singular value. Then
  φ(A1, A2, i, j) = ||U1[:, :i]^T U2[:, :j]||_F² / min(i, j), in [0, 1]: 1 when one top subspace
  contains the other, about max(i, j)/k for unrelated random subspaces.
- Amplification factor (Section 7.3, Table 7). With U, V the top-r left and right singular vectors of
  ΔW (d × k), the factor is ||ΔW||_F / ||U^T W V||_F: how much ΔW amplifies directions that W already
  has but does not emphasise.

No public tool computes these, so they are written here with numpy's SVD. Inputs may be numpy arrays
or torch tensors; everything is computed in float64.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lora_ft.report.runs import ReportError
from lora_ft.results import read_results, write_bytes_atomic, write_json_atomic

FactorLoader = Callable[[Path], Mapping[str, tuple[Any, Any]]]


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor: no torch import needed for numpy inputs
        x = x.detach().to("cpu").double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def right_singular_vectors(a: Any) -> np.ndarray:
    """Columns: the right-singular vectors of ``a`` (r × k), by decreasing singular value; shape k × min(r, k)."""
    matrix = _as_matrix(a, "A")
    _, _, vh = np.linalg.svd(matrix, full_matrices=False)
    return vh.T


def _check_pair(u1: np.ndarray, u2: np.ndarray) -> None:
    if u1.shape[0] != u2.shape[0]:
        raise ValueError(
            f"A1 and A2 act on inputs of different sizes ({u1.shape[0]} vs {u2.shape[0]}): "
            "compare factors of the same weight matrix"
        )


def subspace_similarity(a1: Any, a2: Any, i: int, j: int) -> float:
    """φ(A1, A2, i, j) = ||U1_i^T U2_j||_F² / min(i, j) with U the right-singular vectors of the r × k A matrices."""
    u1, u2 = right_singular_vectors(a1), right_singular_vectors(a2)
    _check_pair(u1, u2)
    if not (1 <= i <= u1.shape[1]) or not (1 <= j <= u2.shape[1]):
        raise ValueError(f"need 1 <= i <= {u1.shape[1]} and 1 <= j <= {u2.shape[1]}, got i={i}, j={j}")
    overlap = u1[:, :i].T @ u2[:, :j]
    return float(np.sum(overlap**2) / min(i, j))


def similarity_grid(a1: Any, a2: Any) -> np.ndarray:
    """φ(A1, A2, i, j) for every 1 <= i <= r1, 1 <= j <= r2, as an r1 × r2 array (entry [i-1, j-1])."""
    u1, u2 = right_singular_vectors(a1), right_singular_vectors(a2)
    _check_pair(u1, u2)
    squared = (u1.T @ u2) ** 2
    # ||U1_i^T U2_j||_F² is the sum of the top-left i × j block of the squared overlaps.
    block_sums = squared.cumsum(axis=0).cumsum(axis=1)
    i = np.arange(1, squared.shape[0] + 1)
    j = np.arange(1, squared.shape[1] + 1)
    return block_sums / np.minimum.outer(i, j)


def amplification_parts(delta_w: Any, w: Any, rank: int | None = None) -> dict[str, float]:
    """The pieces of the amplification factor: rank r used, ||ΔW||_F, ||U^T W V||_F, ||W||_F, and the factor.

    ``rank`` defaults to the numerical rank of ΔW. ΔW and W must have the same shape (out × in).
    """
    dw = _as_matrix(delta_w, "delta_w")
    weight = _as_matrix(w, "w")
    if dw.shape != weight.shape:
        raise ValueError(f"delta_w {dw.shape} and w {weight.shape} must have the same shape (out x in)")
    u, s, vh = np.linalg.svd(dw, full_matrices=False)
    if rank is None:
        tolerance = (s[0] if s.size else 0.0) * max(dw.shape) * np.finfo(np.float64).eps
        rank = int(np.sum(s > tolerance))
    if not 1 <= rank <= s.size:
        raise ValueError(f"rank must be between 1 and {s.size} (is delta_w all zeros?), got {rank}")
    projected = u[:, :rank].T @ weight @ vh[:rank].T
    delta_norm = float(np.linalg.norm(dw))
    projected_norm = float(np.linalg.norm(projected))
    return {
        "rank": rank,
        "delta_w_norm": delta_norm,
        "projected_w_norm": projected_norm,
        "w_norm": float(np.linalg.norm(weight)),
        "factor": delta_norm / projected_norm if projected_norm > 0 else math.inf,
    }


def amplification_factor(delta_w: Any, w: Any, rank: int | None = None) -> float:
    """||ΔW||_F / ||U^T W V||_F with U, V the top-``rank`` left/right singular vectors of ΔW (Section 7.3)."""
    return amplification_parts(delta_w, w, rank)["factor"]


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _default_factor_loader(run_dir: Path) -> Mapping[str, tuple[Any, Any]]:
    try:
        from lora_ft.checkpoint import load_lora_factors
    except ImportError as exc:
        raise RuntimeError(f"cannot load LoRA factors: lora_ft.checkpoint.load_lora_factors is unavailable ({exc})") from exc
    return load_lora_factors(run_dir)


def load_base_weights(run_dir: str | Path) -> dict[str, Any]:
    """The frozen W (out × in) under every LoRA update of a run, keyed like its factors ("...c_attn:q").

    Rebuilds the run's base model from its results.json config (pretrained weights: a hub download or local
    files) and reads each adapted slice's rows from the layer LoRA wraps; a fused q|k|v projection gives its
    q and v parts. A randomly initialised base model has no fixed W, so it is refused.
    """
    import torch  # lazy: the subspace part of the analysis needs only numpy

    from lora_ft.build import adapted_model
    from lora_ft.config import config_from_dict
    from lora_ft.methods.lora import lora_layers

    config = read_results(run_dir).config
    cfg = config_from_dict({k: v for k, v in config.items() if v is not None}, source=f"{run_dir}/results.json")
    if cfg.model.random_init:
        raise ReportError(f"{run_dir}: the base model was randomly initialised (model.random_init), so its W is not known")
    with torch.no_grad():
        model = adapted_model(cfg).model
        weights: dict[str, Any] = {}
        for name, layer in lora_layers(model).items():
            weight = layer.base_layer.weight.detach()
            weight = weight.T if layer.is_conv1d else weight  # Conv1D stores (in, out)
            width = layer.lora_B.shape[1]
            for i, slice_name in enumerate(layer.slice_names):
                rows = slice(None) if layer.out_index is None else layer.out_index[i * width : (i + 1) * width]
                weights[f"{name}:{slice_name}"] = weight[rows].double().cpu().numpy()
    return weights


def _layer_index(key: str) -> int | None:
    match = re.search(r"\.(\d+)\.", key)
    return int(match.group(1)) if match else None


def _natural_key(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _lora_scale(run_dir: Path) -> float:
    """α / r from the run's results.json; ΔW = (α / r) · B · A."""
    method = read_results(run_dir).config.get("method") or {}
    alpha, rank = method.get("alpha"), method.get("rank")
    if not isinstance(alpha, (int, float)) or not isinstance(rank, (int, float)) or rank <= 0:
        raise ReportError(f"{run_dir}: results.json config has no usable method.alpha / method.rank ({alpha!r}, {rank!r})")
    return float(alpha) / float(rank)


def _heatmap_png(grid: np.ndarray, title: str) -> bytes:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError("heat maps need matplotlib: install it with `pip install matplotlib`") from exc
    rows, cols = grid.shape
    figure = Figure(figsize=(min(2.0 + 0.12 * cols, 12.0), min(1.6 + 0.3 * rows, 8.0)))
    ax = figure.subplots()
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest",
                      extent=(0.5, cols + 0.5, rows + 0.5, 0.5))
    ax.set_xlabel("j (top-j directions of run B)")
    ax.set_ylabel("i (top-i directions of run A)")
    ax.set_title(title, fontsize=8)
    figure.colorbar(image, ax=ax, label="φ(i, j)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def _safe_filename(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def analysis_report(
    run_a: str | Path,
    run_b: str | Path,
    layers: Sequence[int] | None = None,
    *,
    base_weights: Mapping[str, Any] | None = None,
    amplification: bool = True,
    factor_loader: FactorLoader | None = None,
) -> dict[str, Any]:
    """The Section 7 numbers for two LoRA runs, as a JSON-ready dict (see :func:`analyze_runs`)."""
    run_a, run_b = Path(run_a), Path(run_b)
    loader = factor_loader or _default_factor_loader
    factors_a, factors_b = loader(run_a), loader(run_b)
    common = sorted(set(factors_a) & set(factors_b), key=_natural_key)
    if not common:
        raise ReportError(
            f"{run_a} and {run_b} share no adapted weight (A: {sorted(factors_a)[:4]}..., B: {sorted(factors_b)[:4]}...)"
        )
    if layers is not None:
        wanted = set(layers)
        common = [k for k in common if _layer_index(k) in wanted]
        if not common:
            raise ReportError(f"no adapted weight in layers {sorted(wanted)}")
    notes: list[str] = []
    weights_per_run: list[Mapping[str, Any] | None] = [base_weights, base_weights]
    if not amplification:
        weights_per_run = [None, None]
        notes.append("amplification factors not computed (amplification=False)")
    elif base_weights is None:
        loaded: dict[str, Mapping[str, Any]] = {}  # one base model load per distinct model section
        for index, run_dir in enumerate((run_a, run_b)):
            try:
                model_key = json.dumps(read_results(run_dir).config.get("model"), sort_keys=True, default=str)
                if model_key not in loaded:
                    loaded[model_key] = load_base_weights(run_dir)
                weights_per_run[index] = loaded[model_key]
            except Exception as exc:  # the similarity part stays useful without the base model
                notes.append(f"amplification of {run_dir.name} skipped: {type(exc).__name__}: {exc}")
    scales = [_lora_scale(r) if w is not None else None for r, w in zip((run_a, run_b), weights_per_run, strict=True)]
    report: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b), "weights": {}, "notes": notes}
    for key in common:
        pairs = (factors_a[key], factors_b[key])
        grid = similarity_grid(pairs[0][0], pairs[1][0])
        amplified: dict[str, Any] = {}
        for label, (a, b), weights, scale in zip("ab", pairs, weights_per_run, scales, strict=True):
            if weights is None or scale is None:
                continue
            if key not in weights:
                notes.append(f"{key}: no base weight for run {label.upper()}, amplification skipped")
                continue
            amplified[label] = amplification_parts(scale * (_as_matrix(b, "B") @ _as_matrix(a, "A")), weights[key])
        report["weights"][key] = {
            "rank_a": int(grid.shape[0]),
            "rank_b": int(grid.shape[1]),
            "similarity": grid.tolist(),
            "amplification": amplified or None,
        }
    return report


def analyze_runs(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path,
    layers: Sequence[int] | None = None,
    *,
    base_weights: Mapping[str, Any] | None = None,
    amplification: bool = True,
    factor_loader: FactorLoader | None = None,
    heatmaps: bool = True,
    overwrite: bool = True,
) -> list[Path]:
    """Compare the LoRA factors of two runs (e.g. r=8 vs r=64, or two seeds) weight by weight; returns the files written.

    For every adapted weight both runs share (keys like ``transformer.h.0.attn.c_attn:q``; ``layers`` keeps
    only those block indices): the φ grid of their A matrices (entry [i-1][j-1] = φ(A_a, A_b, i, j)), drawn as
    ``<out_dir>/subspace_<key>.png``; and each run's amplification factor with ΔW = (α/r)·B·A and W the frozen
    weight, from ``base_weights`` (key -> W, out × in) or, by default, the run's base model rebuilt with
    :func:`load_base_weights` (skipped, with a note, when that cannot load). Everything goes into
    ``<out_dir>/analysis.json``. ``factor_loader`` defaults to ``lora_ft.checkpoint.load_lora_factors``
    (run_dir -> {key: (A r×in, B out×r)}).
    """
    out_dir = Path(out_dir)
    report = analysis_report(run_a, run_b, layers, base_weights=base_weights, amplification=amplification,
                             factor_loader=factor_loader)
    written: list[Path] = []
    for key, entry in report["weights"].items():
        entry["heatmap"] = None
        if heatmaps:
            name = f"subspace_{_safe_filename(key)}.png"
            title = f"φ(A_a, A_b, i, j), {key}\nA: {Path(run_a).name}  B: {Path(run_b).name}"
            png = _heatmap_png(np.asarray(entry["similarity"]), title)
            written.append(write_bytes_atomic(out_dir / name, png, overwrite=overwrite))
            entry["heatmap"] = name
    written.insert(0, write_json_atomic(out_dir / "analysis.json", report, overwrite=overwrite))
    return written
