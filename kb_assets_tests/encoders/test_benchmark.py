import numpy as np
import pytest

from kb_assets.benchmarks.encoder import exon_like_lengths, exon_like_sequences, format_report, run_encoder_benchmark
from kb_assets.encoders import DnaBert2Config


def test_exon_like_lengths_have_the_documented_mix():
    lengths = exon_like_lengths(20_000, seed=0)
    assert 140 <= np.median(lengths) <= 160
    assert 0.04 <= (lengths > 3000).mean() <= 0.06
    assert lengths.min() >= 10 and lengths.max() <= 20_000
    sequences = exon_like_sequences(50, seed=3)
    assert [len(s) for s in sequences] == exon_like_lengths(50, seed=3).tolist()
    assert set("".join(sequences)) == set("ACGT")


def test_small_benchmark_reports_every_measure():
    shape = DnaBert2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=96)
    result = run_encoder_benchmark(n_sequences=6, compile=False, shape=shape)
    assert set(result["runs"]) == {"bfloat16", "float32"}
    for dtype_name, run in result["runs"].items():
        assert run["tokens_per_second"] == pytest.approx(run["real_tokens"] / run["seconds"])
        matmul = result["matmul_flops_per_second"][dtype_name]
        assert run["mfu"] == pytest.approx(run["model_flops_per_second"] / matmul)
        assert run["padding_fraction"] == pytest.approx(1 - run["real_tokens"] / run["computed_tokens"])
        # A share of the threads' time; a run of milliseconds meets the CPU clocks' coarse ticks, hence the slack.
        assert 0 < run["cpu_share"] <= 1.25
    assert 0.99 < result["min_cosine_bf16_vs_fp32"] <= 1.0 + 1e-6
    assert [check["target"] for check in result["targets"]] == [
        "bf16 tokens/s", "bf16 MFU", "fp32 tokens/s", "fp32 padding fraction", "min cosine bf16 vs fp32"]
    report = format_report(result)
    assert "64/2/4/96" in report and "6 exon-like sequences" in report
    assert report.count("met") >= 5
