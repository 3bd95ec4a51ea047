"""DNABERT-2 throughput at the full 117M shape with random weights, on an exon-like length mix.

Measured in one run on one machine:
- matrix-multiply throughput per dtype at the model's four GEMM shapes with `batch_tokens` rows: the reference for
  the model FLOPs utilisation (MFU);
- kb_assets' model in each dtype: `forward_packed` over the token windows of both strands of every sequence, packed
  longest first into packs of at most `batch_tokens` tokens (no padding): tokens/s, MFU;
- with `upstream` (a folder holding the upstream DNABERT-2 code: bert_layers.py, bert_padding.py,
  configuration_bert.py of the Hugging Face repo zhihan1996/DNABERT-2-117M): that code's `BertModel` in fp32 on the
  same windows in padded batches of at most `batch_tokens` padded tokens, longest first, with its Triton path off
  (plain PyTorch attention): tokens/s, and kb_assets' bf16 throughput ÷ upstream's; and how closely the two models'
  window vectors agree.

Only the forward passes are timed (tokenization and pooling are not). `python -m kb_assets.benchmarks.encoder`
(or `kb-assets bench encoder`) prints `format_report(run_encoder_benchmark(...))`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import platform
import random
import sys
import time
import types
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from kb_assets.encoders import train_bpe_tokenizer
from kb_assets.encoders.checkpoint import random_state_dict
from kb_assets.encoders.model import DnaBert2Config, DnaBert2Model
from kb_assets.encoders.tokenizer import CLS_ID, SEP_ID
from kb_assets.genome.sequence import reverse_complement

SHAPE_117M = DnaBert2Config()
# Exon lengths: log-normal with median 150 bp and 5% above 3 kb (z = 1.645 at 3 kb), kept within real exon sizes.
EXON_MEDIAN_BP = 150
EXON_P95_BP = 3_000
EXON_MIN_BP, EXON_MAX_BP = 10, 20_000
# A GPU needs far more work than a CPU to be measured at all: more sequences and bigger packs there.
DEFAULT_SEQUENCES = {"cpu": 128, "cuda": 4096}
DEFAULT_BATCH_TOKENS = {"cpu": 16_384, "cuda": 131_072}
TARGETS = {
    "bf16_tokens_per_second": {"cpu": 2_000, "cuda": 1_000_000},
    "bf16_mfu": {"cpu": 0.55, "cuda": 0.50},
    "bf16_vs_upstream_fp32": {"cpu": 3.5},
    "min_cosine_bf16_vs_fp32": 0.999,
    "min_cosine_vs_upstream": 0.99999,
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


def exon_windows(token_lists: Sequence[Sequence[int]], window_tokens: int, window_overlap: int) -> list[list[int]]:
    """Model inputs of tokenized strands (without [CLS]/[SEP]): `[CLS] ≤ window_tokens − 2 tokens [SEP]`, consecutive
    windows of a long strand sharing `window_overlap` tokens, as the engine cuts them."""
    content = window_tokens - 2
    step = content - window_overlap
    windows = []
    for tokens in token_lists:
        start = 0
        while True:
            windows.append([CLS_ID, *tokens[start:start + content], SEP_ID])
            if start + content >= len(tokens):
                break
            start += step
    return windows


def packs(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Window indices, longest first, in packs of at most `batch_tokens` tokens (one longer window alone)."""
    groups: list[list[int]] = []
    size = 0
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if groups and size + lengths[index] <= batch_tokens:
            groups[-1].append(index)
            size += lengths[index]
        else:
            groups.append([index])
            size = lengths[index]
    return groups


def padded_batches(lengths: Sequence[int], batch_tokens: int, max_padding: float = 0.05) -> list[list[int]]:
    """Window indices, longest first, in padded batches of at most `batch_tokens` padded tokens (rows × longest), a
    batch closed before its padding passes `max_padding` of it: the padded model's attention computes on padding."""
    groups: list[list[int]] = []
    real = 0
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if groups:
            padded = (len(groups[-1]) + 1) * lengths[groups[-1][0]]
            if padded <= batch_tokens and real + lengths[index] >= (1 - max_padding) * padded:
                groups[-1].append(index)
                real += lengths[index]
                continue
        groups.append([index])
        real = lengths[index]
    return groups


def matmul_throughput(dtype: torch.dtype, device: torch.device, config: DnaBert2Config = SHAPE_117M,
                      tokens: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of one layer's four GEMMs at the model's shapes with `tokens` rows, best of `repeats` after a warm-up
    round: what the model could reach if everything but its matrix multiplies were free.

    On CPU the faster of plain `torch.nn.functional.linear` and oneDNN with weights prepacked for the GEMM (what
    torch.compile's freezing uses) is kept, so compiled layers are not measured against a slower reference. On CUDA
    each round runs the four GEMMs ten times between synchronizations, so launch latency does not count.
    """
    hidden, intermediate = config.hidden_size, config.intermediate_size
    shapes = [(hidden, 3 * hidden), (hidden, hidden), (hidden, 2 * intermediate), (intermediate, hidden)]
    generator = torch.Generator(device=device).manual_seed(0)
    operands = [
        (torch.randn(tokens, k, generator=generator, device=device).to(dtype),
         torch.randn(n, k, generator=generator, device=device).to(dtype))
        for k, n in shapes
    ]
    rounds = 10 if device.type == "cuda" else 1
    flops = rounds * sum(2 * tokens * k * n for k, n in shapes)
    with torch.inference_mode():
        plain = [partial(torch.nn.functional.linear, activations, weight) for activations, weight in operands]
        seconds = _best_seconds(plain * rounds, device, repeats)
        if device.type == "cpu" and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            prepacked = [
                partial(torch.ops.mkldnn._linear_pointwise, activations,
                        torch.ops.mkldnn._reorder_linear_weight(weight, tokens), None, "none", [], "")
                for activations, weight in operands
            ]
            seconds = min(seconds, _best_seconds(prepacked, device, repeats))
    return flops / seconds


def _best_seconds(calls: Sequence[Callable[[], object]], device: torch.device, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats + 1):  # the first round warms up the kernels
        _synchronize(device)
        started = time.perf_counter()
        for call in calls:
            call()
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def random_model(state: dict[str, torch.Tensor], shape: DnaBert2Config, device: torch.device,
                 dtype: torch.dtype) -> DnaBert2Model:
    with torch.device("meta"):
        model = DnaBert2Model(shape)
    model.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")},
                          assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_upstream(folder: Path, state: dict[str, torch.Tensor], shape: DnaBert2Config,
                  device: torch.device) -> torch.nn.Module:
    """The upstream `BertModel` (fp32) built from the code in `folder` with these weights. Its code runs here only
    because the benchmark was asked to compare against it. Its Triton flash-attention module is kept from
    importing, so it runs its plain PyTorch attention, as it does wherever Triton is missing."""
    package = f"_dnabert2_upstream_{abs(hash(folder.resolve()))}"
    module = types.ModuleType(package)
    module.__path__ = [str(folder)]
    sys.modules[package] = module
    sys.modules[f"{package}.flash_attn_triton"] = None  # `from .flash_attn_triton import …` → ImportError
    configuration = importlib.import_module(f"{package}.configuration_bert")
    layers = importlib.import_module(f"{package}.bert_layers")
    # pad_token_id: the upstream code reads it, config.json lacks it, and transformers ≥ 5 no longer defaults it.
    config = configuration.BertConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
        type_vocab_size=shape.type_vocab_size, layer_norm_eps=shape.layer_norm_eps,
        max_position_embeddings=shape.max_position_embeddings, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0, alibi_starting_size=512, pad_token_id=None)
    model = layers.BertModel(config, add_pooling_layer=False)
    model.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")})
    return model.to(device).eval().requires_grad_(False)


def _timed(run: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(seconds, share of the CPU this process got: 1.0 = all its threads all the time)."""
    _synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    _synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu / (wall * torch.get_num_threads())


def _mean_vectors(hidden: torch.Tensor, lengths: Sequence[int]) -> np.ndarray:
    """[windows, H] fp32: each window's mean over its tokens, from its packed hidden states [T, H]."""
    return np.stack([chunk.float().mean(0).cpu().numpy() for chunk in hidden.split(list(lengths))])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def run_encoder_benchmark(
    n_sequences: int | None = None,
    seed: int = 0,
    dtypes: Sequence[str] = ("bfloat16", "float32"),
    device: str = "cpu",
    compile: bool = True,
    window_tokens: int = 512,
    window_overlap: int = 64,
    batch_tokens: int | None = None,
    shape: DnaBert2Config = SHAPE_117M,
    upstream: str | Path | None = None,
) -> dict:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict.

    `n_sequences` and `batch_tokens` default per device (DEFAULT_SEQUENCES, DEFAULT_BATCH_TOKENS). With `compile`,
    the layers run through torch.compile; the warm-up (compilation included) is timed on its own. `shape` is the
    architecture (DNABERT-2-117M unless a test wants a small one).
    """
    target = resolve_device(device)
    kind = "cuda" if target.type == "cuda" else "cpu"
    n_sequences = n_sequences or DEFAULT_SEQUENCES[kind]
    batch_tokens = batch_tokens or DEFAULT_BATCH_TOKENS[kind]
    sequences = exon_like_sequences(n_sequences, seed)
    rng = random.Random(seed)
    tokenizer = train_bpe_tokenizer(["".join(rng.choices("ACGT", k=1_000_000))], vocab_size=shape.vocab_size)
    strands = sequences + [reverse_complement(s) for s in sequences]
    windows = exon_windows([encoding.ids[1:-1] for encoding in tokenizer.encode_batch(strands)], window_tokens,
                           window_overlap)
    lengths = [len(w) for w in windows]
    base_pairs = sum(len(s) for s in sequences)
    flops = sum(n * shape.flops_per_token(n) for n in lengths)
    state = random_state_dict(shape.vocab_size, shape.hidden_size, shape.num_hidden_layers, shape.intermediate_size,
                              seed=seed)
    result: dict = {
        "device": str(target),
        "device_name": (torch.cuda.get_device_name(target) if target.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": compile,
        "shape": {"hidden_size": shape.hidden_size, "num_hidden_layers": shape.num_hidden_layers,
                  "num_attention_heads": shape.num_attention_heads, "intermediate_size": shape.intermediate_size},
        "workload": {
            "n_sequences": n_sequences,
            "seed": seed,
            "base_pairs": base_pairs,
            "median_bp": float(np.median([len(s) for s in sequences])),
            "fraction_over_3kb": float(np.mean([len(s) > 3000 for s in sequences])),
            "windows": len(windows),
            "tokens": sum(lengths),
            "model_flops": flops,
            "window_tokens": window_tokens,
            "window_overlap": window_overlap,
            "batch_tokens": batch_tokens,
        },
        "matmul_flops_per_second": {},
        "runs": {},
    }
    vectors: dict[str, np.ndarray] = {}
    pack_list = packs(lengths, batch_tokens)
    pack_inputs = [(torch.tensor([t for i in pack for t in windows[i]], device=target),
                    torch.tensor([lengths[i] for i in pack])) for pack in pack_list]
    order = [i for pack in pack_list for i in pack]
    for dtype_name in dtypes:
        dtype = _DTYPES[dtype_name]
        model = random_model(state, shape, target, dtype)
        if compile:
            model.compile_layers()
        outputs: list[torch.Tensor] = []

        def run_all(keep: bool, model: DnaBert2Model = model, outputs: list[torch.Tensor] = outputs) -> None:
            with torch.inference_mode():
                for ids, pack_lengths in pack_inputs:
                    hidden = model.forward_packed(ids, pack_lengths)
                    if keep:
                        outputs.append(hidden)

        # Warm-up: kernel selection, the allocator and, with compile, the compilation (longest and shortest packs).
        warm_up = time.perf_counter()
        with torch.inference_mode():
            for ids, pack_lengths in (pack_inputs[0], pack_inputs[-1]):
                model.forward_packed(ids, pack_lengths)
        _synchronize(target)
        warm_up = time.perf_counter() - warm_up
        matmul_before = matmul_throughput(dtype, target, shape, min(batch_tokens, 16_384))
        seconds, cpu_share = _timed(partial(run_all, False), target)
        # Measured before and after the run, the higher kept: a moment of contention from other processes then
        # lowers the reported utilisation instead of inflating it.
        peak = max(matmul_before, matmul_throughput(dtype, target, shape, min(batch_tokens, 16_384)))
        run_all(True)
        packed_vectors = _mean_vectors(torch.cat(outputs), [lengths[i] for i in order])
        vectors[dtype_name] = packed_vectors[np.argsort(order)]
        result["matmul_flops_per_second"][dtype_name] = peak
        result["runs"][dtype_name] = _run_record(warm_up, seconds, cpu_share, target, lengths, sum(lengths), flops,
                                                 peak, base_pairs, model.compiled, len(pack_list))
        del model, outputs
    if upstream is not None:
        model = load_upstream(Path(upstream), state, shape, target)
        batches = padded_batches(lengths, batch_tokens)
        batch_inputs = []
        for batch in batches:
            longest = lengths[batch[0]]
            ids = torch.full((len(batch), longest), 3, dtype=torch.long)
            mask = torch.zeros(len(batch), longest, dtype=torch.long)
            for row, index in enumerate(batch):
                ids[row, : lengths[index]] = torch.tensor(windows[index])
                mask[row, : lengths[index]] = 1
            batch_inputs.append((ids.to(target), mask.to(target)))

        def run_upstream() -> None:
            with torch.inference_mode():
                for ids, mask in batch_inputs:
                    model(ids, attention_mask=mask)

        warm_up = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in (batch_inputs[0], batch_inputs[-1]):
                model(ids, attention_mask=mask)
        warm_up = time.perf_counter() - warm_up
        seconds, cpu_share = _timed(run_upstream, target)
        peak = result["matmul_flops_per_second"].get("float32") or matmul_throughput(
            torch.float32, target, shape, min(batch_tokens, 16_384))
        result["matmul_flops_per_second"]["float32"] = peak
        computed = sum(len(batch) * lengths[batch[0]] for batch in batches)
        result["runs"]["upstream float32"] = _run_record(warm_up, seconds, cpu_share, target, lengths, computed,
                                                         flops, peak, base_pairs, False, len(batches))
        with torch.inference_mode():
            upstream_vectors = np.empty((len(windows), shape.hidden_size), dtype=np.float32)
            for batch, (ids, mask) in zip(batches, batch_inputs):
                hidden = model(ids, attention_mask=mask)[0]
                upstream_vectors[batch] = _mean_vectors(hidden[mask.bool()], [lengths[i] for i in batch])
        vectors["upstream float32"] = upstream_vectors
        del model
    if {"bfloat16", "float32"} <= vectors.keys():
        result["min_cosine_bf16_vs_fp32"] = _min_cosine(vectors["bfloat16"], vectors["float32"])
    if "upstream float32" in vectors:
        ours = "float32" if "float32" in vectors else next(iter(dtypes))
        result["agreement_with_upstream"] = {
            "dtype": ours,
            "min_cosine": _min_cosine(vectors[ours], vectors["upstream float32"]),
            "max_abs_difference": float(np.abs(vectors[ours] - vectors["upstream float32"]).max()),
        }
        if "bfloat16" in result["runs"]:
            result["bf16_vs_upstream_fp32"] = (result["runs"]["bfloat16"]["tokens_per_second"]
                                               / result["runs"]["upstream float32"]["tokens_per_second"])
    result["targets"] = _check_targets(result, kind)
    return result


def _run_record(warm_up: float, seconds: float, cpu_share: float, device: torch.device, lengths: Sequence[int],
                computed_tokens: int, flops: int, peak: float, base_pairs: int, compiled: bool, calls: int) -> dict:
    real = sum(lengths)
    return {
        "warm_up_seconds": warm_up,
        "compiled": compiled,
        "forward_calls": calls,
        "seconds": seconds,
        "cpu_share": cpu_share if device.type == "cpu" else None,
        "real_tokens": real,
        "computed_tokens": computed_tokens,
        "padding_fraction": 1 - real / computed_tokens,
        "tokens_per_second": real / seconds,
        "base_pairs_per_second": base_pairs / seconds,
        "model_flops_per_second": flops / seconds,
        "mfu": flops / seconds / peak,
    }


def _check_targets(result: dict, kind: str) -> list[dict]:
    runs = result["runs"]
    checks = []

    def check(name: str, value: float | None, target: float | None, at_least: bool = True) -> None:
        if value is not None and target is not None:
            met = value >= target if at_least else value <= target
            checks.append({"target": name, "value": value, "limit": target, "at_least": at_least, "met": met})

    if "bfloat16" in runs:
        check("bf16 tokens/s", runs["bfloat16"]["tokens_per_second"], TARGETS["bf16_tokens_per_second"][kind])
        check("bf16 MFU", runs["bfloat16"]["mfu"], TARGETS["bf16_mfu"][kind])
    check("bf16 ÷ upstream fp32 tokens/s", result.get("bf16_vs_upstream_fp32"),
          TARGETS["bf16_vs_upstream_fp32"].get(kind))
    check("min cosine bf16 vs fp32", result.get("min_cosine_bf16_vs_fp32"), TARGETS["min_cosine_bf16_vs_fp32"])
    agreement = result.get("agreement_with_upstream", {})
    # fp32 against fp32 agrees to rounding; bf16 against fp32 only to bf16's precision.
    check(f"min cosine {agreement.get('dtype')} vs upstream", agreement.get("min_cosine"),
          TARGETS["min_cosine_vs_upstream"] if agreement.get("dtype") == "float32"
          else TARGETS["min_cosine_bf16_vs_fp32"])
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
        f"{workload['median_bp']:.0f} bp, {workload['fraction_over_3kb']:.1%} over 3 kb; both strands → "
        f"{workload['windows']} windows ({workload['window_tokens']}/{workload['window_overlap']}), "
        f"{workload['tokens']:,} tokens, {workload['model_flops'] / 1e12:.2f} TFLOP; packs/batches of "
        f"≤ {workload['batch_tokens']:,} tokens; forward passes only",
        "",
        f"{'model':<18}{'matmul GFLOP/s':>15}{'tokens/s':>11}{'bp/s':>9}{'padding':>9}{'calls':>7}"
        f"{'model GFLOP/s':>15}{'MFU':>7}{'seconds':>9}{'warm-up s':>11}{'CPU share':>11}",
    ]
    for name, run in result["runs"].items():
        dtype = name.split()[-1]
        label = name if name.startswith("upstream") else f"kb_assets {name}"
        cpu_share = "" if run["cpu_share"] is None else f"{run['cpu_share']:.0%}"
        lines.append(
            f"{label:<18}{result['matmul_flops_per_second'].get(dtype, math.nan) / 1e9:>15.0f}"
            f"{run['tokens_per_second']:>11,.0f}{run['base_pairs_per_second']:>9,.0f}{run['padding_fraction']:>9.1%}"
            f"{run['forward_calls']:>7}{run['model_flops_per_second'] / 1e9:>15,.0f}{run['mfu']:>7.1%}"
            f"{run['seconds']:>9.1f}{run['warm_up_seconds']:>11.1f}{cpu_share:>11}"
        )
        if run["cpu_share"] is not None and run["cpu_share"] < 0.9:
            lines.append(f"  warning: this process got {run['cpu_share']:.0%} of its threads' CPU time; other "
                         "processes competed for the cores, so the numbers above are low")
        if result["compile"] and not name.startswith("upstream") and not run["compiled"]:
            lines.append("  warning: torch.compile failed, this run was eager")
    if "min_cosine_bf16_vs_fp32" in result:
        lines.append(f"bf16 vs fp32 window vectors: min cosine {result['min_cosine_bf16_vs_fp32']:.6f}")
    if "agreement_with_upstream" in result:
        agreement = result["agreement_with_upstream"]
        lines.append(f"kb_assets {agreement['dtype']} vs upstream fp32 window vectors: min cosine "
                     f"{agreement['min_cosine']:.7f}, max |difference| {agreement['max_abs_difference']:.2e}")
    if "bf16_vs_upstream_fp32" in result:
        lines.append(f"kb_assets bf16 ÷ upstream fp32 tokens/s: {result['bf16_vs_upstream_fp32']:.2f}×")
    else:
        lines.append("upstream not measured (pass --upstream PATH to a folder with DNABERT-2's bert_layers.py): "
                     "no ratio")
    lines.append("")
    for check in result["targets"]:
        relation = "≥" if check["at_least"] else "≤"
        lines.append(f"{'met    ' if check['met'] else 'NOT met'}  {check['target']}: "
                     f"{_shown(check['target'], check['value'])} {relation} {_shown(check['target'], check['limit'])}")
    return "\n".join(lines)


def _shown(target: str, value: float) -> str:
    if "cosine" in target:
        return f"{value:.6f}"
    if "MFU" in target:
        return f"{value:.1%}"
    if "÷" in target:
        return f"{value:.2f}×"
    return f"{value:,.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kb_assets.benchmarks.encoder", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--upstream", type=Path, help="folder with the upstream DNABERT-2 code (bert_layers.py …)")
    parser.add_argument("--sequences", type=int, help="exon-like sequences (default: 128 on CPU, 4096 on CUDA)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per pack (default: 16384 on CPU, 131072 on CUDA)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated: bfloat16, float32")
    parser.add_argument("--no-compile", action="store_true", help="run the layers eagerly")
    args = parser.parse_args(argv)
    print(format_report(run_encoder_benchmark(
        n_sequences=args.sequences, device=args.device, batch_tokens=args.batch_tokens, upstream=args.upstream,
        dtypes=tuple(args.dtypes.split(",")), compile=not args.no_compile)))


if __name__ == "__main__":
    main()
