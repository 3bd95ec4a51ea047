"""DNABERT-2 encoder throughput at the full 117M shape with random weights, on an exon-like length mix.

Measured in one run on one machine: matrix-multiply throughput per dtype (the model's own GEMM shapes), then
`Encoder.embed` (RC-averaged, mean pooling) in each dtype: tokens/s, base pairs/s, padding and model FLOPs
utilisation (model FLOPs of the real tokens per second ÷ the measured matmul throughput), and how closely the
bf16 vectors follow the fp32 ones. `kb-assets bench encoder` prints `format_report(run_encoder_benchmark())`.
"""

from __future__ import annotations

import math
import platform
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from kb_assets.encoders import Encoder, load_encoder, train_bpe_tokenizer, write_checkpoint
from kb_assets.encoders.encoder import resolve_device
from kb_assets.encoders.model import DnaBert2Config
from kb_assets.genome.sequence import reverse_complement

SHAPE_117M = DnaBert2Config()
# Exon lengths: log-normal with median 150 bp and 5% above 3 kb (z = 1.645 at 3 kb), kept within real exon sizes.
EXON_MEDIAN_BP = 150
EXON_P95_BP = 3_000
EXON_MIN_BP, EXON_MAX_BP = 10, 20_000
TARGETS = {
    "bf16_tokens_per_second": 2_000,
    "bf16_mfu": 0.60,
    "fp32_tokens_per_second": 700,
    "max_padding_fraction": 0.10,
    "min_cosine_bf16_vs_fp32": 0.999,
}
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def exon_like_lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = math.log(EXON_P95_BP / EXON_MEDIAN_BP) / 1.6449
    lengths = np.exp(rng.normal(math.log(EXON_MEDIAN_BP), sigma, n))
    return np.clip(np.rint(lengths), EXON_MIN_BP, EXON_MAX_BP).astype(np.int64)


def exon_like_sequences(n: int, seed: int = 0) -> list[str]:
    """Uniform random ACGT with exon-like lengths (random DNA tokenizes at about 5 bp per token, like the genome)."""
    rng = np.random.default_rng(seed + 1)
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    return [bases[rng.integers(0, 4, length)].tobytes().decode() for length in exon_like_lengths(n, seed)]


def matmul_throughput(dtype: torch.dtype, device: torch.device, config: DnaBert2Config = SHAPE_117M,
                      tokens: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of one layer's four GEMMs at the model's shapes, best of `repeats`: what the model could reach if
    everything but its matrix multiplies were free.

    On CPU the faster of plain `torch.nn.functional.linear` and oneDNN with weights prepacked for the GEMM (what
    torch.compile's freezing uses) is kept, so compiled layers are not measured against a slower reference.
    """
    hidden, intermediate = config.hidden_size, config.intermediate_size
    shapes = [(hidden, 3 * hidden), (hidden, hidden), (hidden, 2 * intermediate), (intermediate, hidden)]
    generator = torch.Generator(device=device).manual_seed(0)
    operands = [
        (torch.randn(tokens, k, generator=generator, device=device).to(dtype),
         torch.randn(n, k, generator=generator, device=device).to(dtype))
        for k, n in shapes
    ]
    flops = sum(2 * tokens * k * n for k, n in shapes)
    with torch.inference_mode():
        plain = [partial(torch.nn.functional.linear, activations, weight) for activations, weight in operands]
        seconds = _best_seconds(plain, device, repeats)
        if device.type == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            prepacked = [
                partial(torch.ops.mkldnn._linear_pointwise, activations,
                        torch.ops.mkldnn._reorder_linear_weight(weight, tokens), None, "none", [], "")
                for activations, weight in operands
            ]
            seconds = min(seconds, _best_seconds(prepacked, device, repeats))
    return flops / seconds


def _best_seconds(matmuls: Sequence[Callable[[], torch.Tensor]], device: torch.device, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats + 1):  # the first round warms up the kernels
        _synchronize(device)
        started = time.perf_counter()
        for matmul in matmuls:
            matmul()
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_flops(encoder: Encoder, sequences: Sequence[str], window_tokens: int, window_overlap: int) -> int:
    """Forward FLOPs of the real tokens of every window of both strands (padding not counted)."""
    total = 0
    for sequence in sequences:
        for strand in (sequence, reverse_complement(sequence)):
            for window in encoder.tokenizer.windows(strand, window_tokens, window_overlap):
                length = len(window.input_ids)
                total += length * encoder.model.config.flops_per_token(length)
    return total


def _benchmark_checkpoint(folder: Path, config: DnaBert2Config, seed: int) -> Path:
    """A checkpoint of the given shape with random weights and a BPE tokenizer trained on 1 Mb of random DNA."""
    rng = random.Random(seed)
    tokenizer = train_bpe_tokenizer(["".join(rng.choices("ACGT", k=1_000_000))], vocab_size=config.vocab_size)
    return write_checkpoint(folder, tokenizer, hidden_size=config.hidden_size,
                            num_hidden_layers=config.num_hidden_layers,
                            num_attention_heads=config.num_attention_heads,
                            intermediate_size=config.intermediate_size, seed=seed, weights_format="safetensors")


def _timed_embed(encoder: Encoder, sequences: Sequence[str], **options: int) -> tuple[np.ndarray, float]:
    """Vectors and the share of the CPU this process got while embedding (1.0 = all its threads all the time)."""
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = encoder.embed(sequences, progress=lambda done, total: None, **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return vectors, cpu / (wall * torch.get_num_threads())


def run_encoder_benchmark(
    n_sequences: int = 128,
    seed: int = 0,
    dtypes: Sequence[str] = ("bfloat16", "float32"),
    device: str = "cpu",
    compile: bool = True,
    window_tokens: int = 512,
    window_overlap: int = 64,
    batch_tokens: int = 16384,
    shape: DnaBert2Config = SHAPE_117M,
) -> dict:
    """Embed `n_sequences` exon-like sequences in each dtype and measure; returns a JSON-ready dict.

    With `compile`, the first call (compilation included) is timed separately as warm-up; the measured call then
    runs on compiled layers. `shape` is the model architecture (DNABERT-2-117M unless a test wants a small one).
    """
    target_device = resolve_device(device)
    sequences = exon_like_sequences(n_sequences, seed)
    lengths = np.array([len(s) for s in sequences])
    options = dict(window_tokens=window_tokens, window_overlap=window_overlap, batch_tokens=batch_tokens)
    result: dict = {
        "device": str(target_device),
        "device_name": (torch.cuda.get_device_name(target_device) if target_device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": compile,
        "shape": {"hidden_size": shape.hidden_size, "num_hidden_layers": shape.num_hidden_layers,
                  "num_attention_heads": shape.num_attention_heads, "intermediate_size": shape.intermediate_size},
        "workload": {
            "n_sequences": n_sequences,
            "seed": seed,
            "base_pairs": int(lengths.sum()),
            "median_bp": float(np.median(lengths)),
            "fraction_over_3kb": float((lengths > 3000).mean()),
            "rc": "average",
            "pooling": "mean",
            **options,
        },
        "matmul_flops_per_second": {},
        "runs": {},
    }
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="kb-assets-bench-") as scratch:
        checkpoint = _benchmark_checkpoint(Path(scratch) / "dnabert2-random", shape, seed)
        for dtype_name in dtypes:
            matmul_before = matmul_throughput(_DTYPES[dtype_name], target_device, shape)
            encoder = load_encoder(checkpoint, device=target_device, dtype=_DTYPES[dtype_name], compile=compile)
            flops = model_flops(encoder, sequences, window_tokens, window_overlap)
            # Warm-up: kernel selection, the allocator and, with compile, the compilation.
            warm_up = time.perf_counter()
            encoder.embed(sequences[:8], progress=lambda done, total: None, **options)
            warm_up = time.perf_counter() - warm_up
            vectors[dtype_name], cpu_share = _timed_embed(encoder, sequences, **options)
            stats = encoder.last_stats
            # Measured before and after the run, the higher kept: a moment of contention from other processes
            # then lowers the reported utilisation instead of inflating it.
            peak = max(matmul_before, matmul_throughput(_DTYPES[dtype_name], target_device, shape))
            result["matmul_flops_per_second"][dtype_name] = peak
            result["runs"][dtype_name] = {
                "warm_up_seconds": warm_up,
                "compiled": encoder.model.compiled,
                "seconds": stats.seconds,
                "cpu_share": cpu_share if target_device.type == "cpu" else None,
                "windows": stats.n_windows,
                "real_tokens": stats.real_tokens,
                "computed_tokens": stats.computed_tokens,
                "tokens_per_second": stats.tokens_per_second,
                "base_pairs_per_second": stats.base_pairs_per_second,
                "padding_fraction": stats.padding_fraction,
                "model_flops": flops,
                "model_flops_per_second": flops / stats.seconds,
                "mfu": flops / stats.seconds / peak,
            }
            del encoder
    if {"bfloat16", "float32"} <= vectors.keys():
        low, full = vectors["bfloat16"], vectors["float32"]
        cosine = (low * full).sum(1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(full, axis=1))
        result["min_cosine_bf16_vs_fp32"] = float(cosine.min())
    result["targets"] = _check_targets(result)
    return result


def _check_targets(result: dict) -> list[dict]:
    runs = result["runs"]
    checks = []

    def check(name: str, value: float | None, target: float, at_least: bool) -> None:
        if value is not None:
            met = value >= target if at_least else value <= target
            checks.append({"target": name, "value": value, "limit": target, "at_least": at_least, "met": met})

    bf16, fp32 = runs.get("bfloat16"), runs.get("float32")
    if bf16:
        check("bf16 tokens/s", bf16["tokens_per_second"], TARGETS["bf16_tokens_per_second"], True)
        check("bf16 MFU", bf16["mfu"], TARGETS["bf16_mfu"], True)
    if fp32:
        check("fp32 tokens/s", fp32["tokens_per_second"], TARGETS["fp32_tokens_per_second"], True)
        check("fp32 padding fraction", fp32["padding_fraction"], TARGETS["max_padding_fraction"], False)
    check("min cosine bf16 vs fp32", result.get("min_cosine_bf16_vs_fp32"), TARGETS["min_cosine_bf16_vs_fp32"], True)
    return checks


def format_report(result: dict) -> str:
    """A plain-text table of one `run_encoder_benchmark` result."""
    workload = result["workload"]
    shape = result["shape"]
    lines = [
        f"DNABERT-2 shape {shape['hidden_size']}/{shape['num_hidden_layers']}/{shape['num_attention_heads']}/"
        f"{shape['intermediate_size']} (hidden/layers/heads/intermediate), random weights · "
        f"{result['device']} ({result['device_name']}) · "
        f"torch {result['torch']} · {result['threads']} threads · compile={result['compile']}",
        f"workload: {workload['n_sequences']} exon-like sequences, {workload['base_pairs']:,} bp, median "
        f"{workload['median_bp']:.0f} bp, {workload['fraction_over_3kb']:.1%} over 3 kb; rc={workload['rc']}, "
        f"pooling={workload['pooling']}, windows {workload['window_tokens']}/{workload['window_overlap']}, "
        f"batch budget {workload['batch_tokens']} tokens",
        "",
        f"{'dtype':<10}{'matmul GFLOP/s':>15}{'tokens/s':>10}{'bp/s':>8}{'padding':>9}{'model GFLOP/s':>15}"
        f"{'MFU':>7}{'seconds':>9}{'warm-up s':>11}{'CPU share':>11}",
    ]
    for dtype_name, run in result["runs"].items():
        cpu_share = "" if run["cpu_share"] is None else f"{run['cpu_share']:.0%}"
        lines.append(
            f"{dtype_name:<10}{result['matmul_flops_per_second'][dtype_name] / 1e9:>15.0f}"
            f"{run['tokens_per_second']:>10.0f}{run['base_pairs_per_second']:>8.0f}{run['padding_fraction']:>9.1%}"
            f"{run['model_flops_per_second'] / 1e9:>15.0f}{run['mfu']:>7.1%}{run['seconds']:>9.1f}"
            f"{run['warm_up_seconds']:>11.1f}{cpu_share:>11}"
        )
        if run["cpu_share"] is not None and run["cpu_share"] < 0.9:
            lines.append(f"  warning: this process got {run['cpu_share']:.0%} of its threads' CPU time; other "
                         "processes competed for the cores, so the numbers above are low")
        if result["compile"] and not run["compiled"]:
            lines.append("  warning: torch.compile failed, this run was eager")
    if "min_cosine_bf16_vs_fp32" in result:
        lines.append(f"bf16 vs fp32 pooled vectors: min cosine {result['min_cosine_bf16_vs_fp32']:.6f}")
    lines.append("")
    for check in result["targets"]:
        relation = "≥" if check["at_least"] else "≤"
        lines.append(f"{'met    ' if check['met'] else 'NOT met'}  {check['target']}: "
                     f"{_shown(check['target'], check['value'])} {relation} {_shown(check['target'], check['limit'])}")
    return "\n".join(lines)


def _shown(target: str, value: float) -> str:
    if "cosine" in target:
        return f"{value:.6f}"
    if "MFU" in target or "fraction" in target:
        return f"{value:.1%}"
    return f"{value:,.0f}"
