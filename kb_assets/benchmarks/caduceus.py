"""Benchmark of the native Caduceus forward on the CPU at the public checkpoints' shape, beside a tiny
transformers-family model (issue 16).

Models: random-weight Caduceus-PS and -PH with d_model 256 and 16 layers (the shape of
kuleshov-group/caduceus-{ps,ph}_seqlen-131k_d_model-256_n_layer-16, written by `write_caduceus_checkpoint`), and a
2-layer, 32-wide Nucleotide-Transformer-v1-style ESM (`write_esm_checkpoint`, 6-mers, 128-token context).

Inputs: a batch of exon-like sequences (log-normal lengths, median 150 bp, 50 bp – 1 kb, batched 16 at a time in
length order, right-padded), one 10 kb sequence and one 100 kb sequence. Caduceus takes each sequence whole; the ESM
takes 126-token windows (plus <cls>/<eos>) batched 32 at a time.

Reported per case: bases per second (input bases, padding excluded, over the wall time of the forward passes),
bases per CPU second (the same over the process's CPU time: with one thread, what the forward costs even when
other processes share the cores) and the peak resident memory the forward added (sampled every 10 ms, minus the
resident memory before). A PS pass embeds both strands at once (RC-symmetric output); PH and the ESM need a
second pass on the reverse complement for RC averaging, so their bases per second per strand-averaged vector are
half the figure shown. One thread throughout.

    python -m kb_assets.benchmarks.caduceus
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kb_assets.benchmarks.dedup import _GIB, _PeakRss
from kb_assets.encoders.caduceus import load_caduceus_encoder, write_caduceus_checkpoint
from kb_assets.encoders.families import FamilyEncoder

EXON_COUNT = 64
EXON_BATCH = 16
WINDOW_BATCH = 32
LONG_LENGTHS = (10_000, 100_000)


@dataclass(frozen=True)
class Measurement:
    model: str
    case: str
    bases: int
    seconds: float
    cpu_seconds: float
    peak_added_gib: float

    @property
    def bases_per_second(self) -> float:
        return self.bases / self.seconds

    @property
    def bases_per_cpu_second(self) -> float:
        return self.bases / self.cpu_seconds


def exon_like_sequences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(150 * np.exp(0.6 * rng.standard_normal(count))), 50, 1000).astype(int)
    return ["".join(rng.choice(list("ACGT"), size=length)) for length in lengths]


def padded_batches(rows: list[list[int]], batch: int, pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rows in length order, `batch` at a time, right-padded: (input_ids, attention_mask) per batch."""
    rows = sorted(rows, key=len, reverse=True)
    batches = []
    for start in range(0, len(rows), batch):
        group = rows[start : start + batch]
        ids = torch.full((len(group), len(group[0])), pad_id)
        mask = torch.zeros_like(ids)
        for row, tokens in enumerate(group):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        batches.append((ids, mask))
    return batches


def model_inputs(encoder: FamilyEncoder, sequences: list[str], batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each sequence's ids, cut into windows of the model's context when it has to be, framed by its specials."""
    tokenizer = encoder.tokenizer
    frame = len(tokenizer.prefix_ids) + len(tokenizer.suffix_ids)
    room = encoder.max_tokens - frame
    rows = []
    for ids, _ in tokenizer.encode_batch_with_offsets(sequences):
        rows += [[*tokenizer.prefix_ids, *ids[start : start + room], *tokenizer.suffix_ids]
                 for start in range(0, len(ids), room)]
    return padded_batches(rows, batch, tokenizer.pad_id)


def measure(encoder: FamilyEncoder, name: str, case: str, sequences: list[str], batch: int) -> Measurement:
    inputs = model_inputs(encoder, sequences, batch)
    with _PeakRss() as memory, torch.inference_mode():
        started, cpu_started = time.perf_counter(), time.process_time()
        for ids, mask in inputs:
            encoder.model(ids, mask)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return Measurement(name, case, sum(map(len, sequences)), seconds, cpu_seconds,
                       (memory.peak - memory.before) / _GIB)


def run_caduceus_benchmark(seed: int = 0, long_lengths: tuple[int, ...] = LONG_LENGTHS) -> list[Measurement]:
    from kb_assets.encoders.hf import load_transformers_encoder, write_esm_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed + 1)
    cases = [(f"{EXON_COUNT} exon-like, median 150 bp", exon_like_sequences(EXON_COUNT, seed), EXON_BATCH)]
    cases += [(f"1 × {length // 1000} kb", ["".join(rng.choice(list("ACGT"), size=length))], 1)
              for length in long_lengths]
    measurements = []
    try:
        with tempfile.TemporaryDirectory() as root:
            encoders = {
                f"Caduceus-{variant.upper()} 256×16": load_caduceus_encoder(
                    write_caduceus_checkpoint(Path(root) / variant, variant=variant, seed=seed), "cpu", "float32")
                for variant in ("ps", "ph")
            }
            encoders["tiny ESM (NT-v1 layout) 32×2"] = load_transformers_encoder(
                write_esm_checkpoint(Path(root) / "esm", seed=seed), "cpu", "float32")
            for name, encoder in encoders.items():
                for case, sequences, batch in cases:
                    windowed = WINDOW_BATCH if encoder.family == "transformers" else batch
                    measurements.append(measure(encoder, name, case, sequences, windowed))
    finally:
        torch.set_num_threads(threads)
    return measurements


def format_report(measurements: list[Measurement]) -> str:
    lines = ["Native Caduceus and a tiny transformers model, CPU forward passes, float32, 1 thread", ""]
    lines.append(f"  {'model':<30} {'input':<30} {'bases':>9} {'seconds':>9} {'bases/s':>9} {'bases/cpu-s':>11} "
                 f"{'peak added':>11}")
    for m in measurements:
        lines.append(f"  {m.model:<30} {m.case:<30} {m.bases:>9,} {m.seconds:>9.2f} {m.bases_per_second:>9,.0f} "
                     f"{m.bases_per_cpu_second:>11,.0f} {m.peak_added_gib:>7.2f} GiB")
    lines.append("")
    lines.append("  PS embeds both strands in one pass; PH and the ESM need a second (reverse-complement) pass.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_report(run_caduceus_benchmark()))
