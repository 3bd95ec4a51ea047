from pathlib import Path

import numpy as np
import pytest

from kb_assets.benchmarks.encoder import (
    exon_like_lengths,
    exon_like_sequences,
    exon_windows,
    format_report,
    packs,
    padded_batches,
    run_encoder_benchmark,
)
from kb_assets.encoders import DnaBert2Config

SMALL_SHAPE = DnaBert2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=96)

# A stand-in for the upstream code folder (never committed here): the same module layout and constructor, and the
# same parameter names as the real BertModel; the forward is kb_assets' own, so the two must agree to rounding.
FAKE_CONFIGURATION = """
class BertConfig:
    def __init__(self, alibi_starting_size=512, attention_probs_dropout_prob=0.0, **kwargs):
        self.__dict__.update(kwargs)
"""
FAKE_LAYERS = """
from kb_assets.encoders.model import DnaBert2Config, DnaBert2Model

class BertModel(DnaBert2Model):
    def __init__(self, config, add_pooling_layer=True):
        super().__init__(DnaBert2Config(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                        num_hidden_layers=config.num_hidden_layers,
                                        num_attention_heads=config.num_attention_heads,
                                        intermediate_size=config.intermediate_size))

    def forward(self, input_ids, attention_mask=None):
        return super().forward(input_ids, attention_mask), None
"""


def test_exon_like_lengths_have_the_documented_mix():
    lengths = exon_like_lengths(20_000, seed=0)
    assert 140 <= np.median(lengths) <= 160
    assert 0.04 <= (lengths > 3000).mean() <= 0.06
    assert lengths.min() >= 10 and lengths.max() <= 20_000
    sequences = exon_like_sequences(50, seed=3)
    assert [len(s) for s in sequences] == exon_like_lengths(50, seed=3).tolist()
    assert set("".join(sequences)) == set("ACGT")


def test_windows_packs_and_padded_batches():
    windows = exon_windows([list(range(10, 20)), list(range(100, 103))], window_tokens=8, window_overlap=2)
    assert windows == [[1, *range(10, 16), 2], [1, *range(14, 20), 2], [1, 100, 101, 102, 2]]
    lengths = [5, 9, 2, 9, 4, 1]
    grouped = packs(lengths, batch_tokens=12)
    assert grouped == [[1], [3], [0, 4, 2, 5]]  # longest first, never over the budget unless alone
    assert sorted(i for pack in grouped for i in pack) == list(range(6))
    # Padded: rows × longest within the budget, and at most 5% padding.
    assert padded_batches(lengths, batch_tokens=20) == [[1, 3], [0], [4], [2], [5]]
    assert padded_batches([4, 4, 4, 3], batch_tokens=100, max_padding=0.5) == [[0, 1, 2, 3]]


def test_small_benchmark_reports_every_measure(tmp_path: Path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "configuration_bert.py").write_text(FAKE_CONFIGURATION)
    (upstream / "bert_layers.py").write_text(FAKE_LAYERS)
    result = run_encoder_benchmark(n_sequences=6, compile=False, shape=SMALL_SHAPE, upstream=upstream)
    assert set(result["runs"]) == {"bfloat16", "float32", "upstream float32"}
    for name, run in result["runs"].items():
        assert run["tokens_per_second"] == pytest.approx(run["real_tokens"] / run["seconds"])
        assert run["real_tokens"] == result["workload"]["tokens"]
        matmul = result["matmul_flops_per_second"][name.split()[-1]]
        assert run["mfu"] == pytest.approx(run["model_flops_per_second"] / matmul)
        assert run["padding_fraction"] == pytest.approx(1 - run["real_tokens"] / run["computed_tokens"])
        # A share of the threads' time; a run of milliseconds meets the CPU clocks' coarse ticks, hence the slack.
        assert 0 < run["cpu_share"] <= 1.25
    assert result["runs"]["bfloat16"]["padding_fraction"] == 0  # packed
    assert 0.99 < result["min_cosine_bf16_vs_fp32"] <= 1.0 + 1e-6
    assert result["agreement_with_upstream"]["max_abs_difference"] < 1e-5
    assert result["bf16_vs_upstream_fp32"] == pytest.approx(
        result["runs"]["bfloat16"]["tokens_per_second"] / result["runs"]["upstream float32"]["tokens_per_second"])
    assert [check["target"] for check in result["targets"]] == [
        "bf16 tokens/s", "bf16 MFU", "bf16 ÷ upstream fp32 tokens/s", "min cosine bf16 vs fp32",
        "min cosine float32 vs upstream"]
    report = format_report(result)
    assert "64/2/4/96" in report and "6 exon-like sequences" in report and "upstream float32" in report
    assert "kb_assets bf16 ÷ upstream fp32 tokens/s" in report
    assert report.count("met") >= 5


def test_without_upstream_the_ratio_is_left_out():
    result = run_encoder_benchmark(n_sequences=2, compile=False, shape=SMALL_SHAPE, dtypes=("float32",))
    assert "bf16_vs_upstream_fp32" not in result and "agreement_with_upstream" not in result
    assert "no ratio" in format_report(result)
