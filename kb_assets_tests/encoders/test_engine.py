import numpy as np
import pytest
import torch

from kb_assets.encoders import Encoder, load_encoder
from kb_assets.encoders.engine import plan_batches
from kb_assets.encoders.tokenizer import CLS_ID, SEP_ID, UNK_ID
from kb_assets.encoders.windows import token_spans
from kb_assets.errors import InputError
from kb_assets.genome.sequence import reverse_complement
from kb_assets_tests.encoders.conftest import random_dna

# Lengths chosen so the 64-token windows used below give one window for some and several for others.
LENGTHS = [5, 37, 120, 260, 900, 1, 64, 2_000]


@pytest.fixture(scope="module")
def sequences() -> list[str]:
    return [random_dna(n, seed=100 + i) for i, n in enumerate(LENGTHS)]


def model_vectors(encoder: Encoder, sequence: str, pooling: str = "mean") -> np.ndarray:
    """The pooled vector of one sequence as a single [CLS] … [SEP] input, straight from the model (no engine)."""
    ids = torch.tensor([[1, *encoder.tokenizer.encode(sequence), 2]])
    with torch.inference_mode():
        hidden = encoder.model(ids, torch.ones_like(ids))[0].double()
    if pooling == "cls":
        return hidden[0].numpy()
    tokens = hidden[1:-1]
    return (tokens.mean(0) if pooling == "mean" else tokens.amax(0)).numpy()


def test_batching_and_padding_do_not_change_vectors(small_encoder: Encoder, sequences: list[str]):
    alone = np.stack([small_encoder.embed([s], window_tokens=64, window_overlap=8)[0] for s in sequences])
    together = small_encoder.embed(sequences, window_tokens=64, window_overlap=8)
    assert small_encoder.last_stats.padding_fraction > 0  # the batches really were padded
    tiny_batches = small_encoder.embed(sequences, window_tokens=64, window_overlap=8, batch_tokens=70)
    permutation = [3, 0, 7, 5, 1, 6, 2, 4]
    shuffled = small_encoder.embed([sequences[i] for i in permutation], window_tokens=64, window_overlap=8)
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tiny_batches, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(shuffled, alone[permutation], atol=1e-5, rtol=0)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # distinct sequences, distinct vectors


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_reverse_complement_average_is_strand_invariant(small_encoder: Encoder, sequences: list[str], pooling: str):
    forward = small_encoder.embed(sequences, pooling=pooling, window_tokens=64, window_overlap=8)
    reverse = small_encoder.embed([reverse_complement(s) for s in sequences], pooling=pooling, window_tokens=64,
                                  window_overlap=8)
    np.testing.assert_allclose(reverse, forward, atol=1e-5, rtol=0)
    single_strand = small_encoder.embed(sequences, pooling=pooling, rc="none", window_tokens=64, window_overlap=8)
    assert np.abs(single_strand - forward).max() > 1e-3  # the model itself is not RC-equivariant


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_short_sequence_pools_its_own_tokens_as_without_windowing(small_encoder: Encoder, pooling: str):
    sequence = random_dna(150, seed=5)
    # rc="none" so the engine's vector is the forward strand only; the short sequence fits one 512-token window.
    embedded = small_encoder.embed([sequence, random_dna(3_000, seed=6)], pooling=pooling, rc="none")[0]
    np.testing.assert_allclose(embedded, model_vectors(small_encoder, sequence, pooling), atol=1e-5, rtol=0)
    averaged = small_encoder.embed([sequence], pooling=pooling)[0]
    expected = (model_vectors(small_encoder, sequence, pooling)
                + model_vectors(small_encoder, reverse_complement(sequence), pooling)) / 2
    np.testing.assert_allclose(averaged, expected, atol=1e-5, rtol=0)


def hidden_states(encoder: Encoder, ids: list[int]) -> np.ndarray:
    """[len(ids), H] float64 hidden states of one [CLS] ids [SEP] input, straight from the model."""
    full = torch.tensor([[CLS_ID, *ids, SEP_ID]])
    with torch.inference_mode():
        return encoder.model(full, torch.ones_like(full))[0, 1:-1].double().numpy()


def counted_once_mean(encoder: Encoder, text: str, content: int, overlap: int) -> np.ndarray:
    """The mean over a sequence's tokens, each taken once from the window token_spans counts it in."""
    ids = encoder.tokenizer.encode(text)
    states = [hidden_states(encoder, ids[start:end])[count_start - start:count_end - start]
              for start, end, count_start, count_end in token_spans(len(ids), content, overlap)]
    return np.concatenate(states).mean(axis=0)


def test_long_sequence_mean_counts_every_token_once(small_encoder: Encoder):
    sequence = random_dna(4_000, seed=8)
    assert len(small_encoder.tokenizer.encode(sequence)) > 5 * 62  # many windows
    expected = [counted_once_mean(small_encoder, text, 62, 8) for text in (sequence, reverse_complement(sequence))]
    strands = small_encoder.embed_strands([sequence], window_tokens=64, window_overlap=8)
    np.testing.assert_allclose(strands.forward.vectors("mean")[0], expected[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(strands.reverse.vectors("mean")[0], expected[1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(small_encoder.embed([sequence], window_tokens=64, window_overlap=8)[0],
                               np.mean(expected, axis=0), atol=1e-5, rtol=0)
    assert strands.forward.counts[0] == len(small_encoder.tokenizer.encode(sequence))


def test_unknown_bases_are_not_pooled(small_encoder: Encoder):
    sequence = random_dna(60, seed=9) + "NNNNNRYNN" + random_dna(60, seed=10)
    ids = small_encoder.tokenizer.encode(sequence)
    known = np.array([token != UNK_ID for token in ids])
    assert (~known).sum() == 9  # one [UNK] per non-ACGT base
    expected = hidden_states(small_encoder, ids)[known].mean(axis=0)
    np.testing.assert_allclose(small_encoder.embed([sequence], rc="none")[0], expected, atol=1e-5, rtol=0)
    assert np.isnan(small_encoder.embed(["NNNN", ""])).all()  # nothing to count: no vector


def test_tiles_with_full_context_count_each_token_once(small_encoder: Encoder):
    """Tiles whose context spans the whole sequence all see the same tokens; their cores partition them, so the
    pooled statistics equal one tile's."""
    sequence = random_dna(1_500, seed=12)
    whole = small_encoder.embed_strands([sequence], window_tokens=512, window_overlap=64)
    tiled = small_encoder.embed_strands([sequence], window_tokens=512, window_overlap=64, tile_bp=400,
                                        tile_context_bp=1_500)
    assert small_encoder.last_stats.n_windows == 2 * 4  # four tiles, both strands
    for pooling in ("mean", "cls", "max"):
        np.testing.assert_allclose(tiled.forward.vectors(pooling), whole.forward.vectors(pooling), atol=2e-5)
    np.testing.assert_array_equal(tiled.forward.counts, whole.forward.counts)


def test_windows_never_exceed_the_model_context(small_encoder: Encoder):
    with pytest.raises(ValueError, match="window_tokens 513 exceeds the model context of 512 tokens"):
        small_encoder.embed(["ACGT"], window_tokens=513)
    with pytest.raises(ValueError, match="pooling must be one of"):
        small_encoder.embed(["ACGT"], pooling="median")
    with pytest.raises(ValueError, match="window_overlap must be in"):
        small_encoder.embed(["ACGT"], window_tokens=64, window_overlap=62)
    with pytest.raises(ValueError, match="rc must be one of"):
        small_encoder.embed(["ACGT"], rc="both")


def test_empty_list(small_encoder: Encoder):
    empty = small_encoder.embed([])
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    assert small_encoder.last_stats.n_windows == 0 and small_encoder.last_stats.padding_fraction == 0.0
    with pytest.raises(InputError, match="sequence 1: is a int, not a string"):
        small_encoder.embed(["ACGT", 7])


def test_stats_and_progress(small_encoder: Encoder, sequences: list[str]):
    calls: list[tuple[int, int]] = []
    vectors = small_encoder.embed(sequences, window_tokens=64, window_overlap=8, batch_tokens=256,
                                  progress=lambda done, total: calls.append((done, total)))
    stats = small_encoder.last_stats
    spans = [span for s in sequences for text in (s, reverse_complement(s))
             for span in token_spans(len(small_encoder.tokenizer.encode(text)), 62, 8)]
    assert vectors.shape == (len(sequences), 64) and vectors.dtype == np.float32
    assert (stats.n_windows, stats.base_pairs) == (len(spans), sum(LENGTHS))
    assert stats.real_tokens == sum(end - start + 2 for start, end, _, _ in spans)  # [CLS] and [SEP] included
    assert stats.computed_tokens >= stats.real_tokens
    assert stats.padding_fraction == pytest.approx(1 - stats.real_tokens / stats.computed_tokens)
    assert stats.tokens_per_second == pytest.approx(stats.real_tokens / stats.seconds)
    assert len(calls) > 1 and calls[-1] == (stats.real_tokens, stats.real_tokens)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_batches_respect_the_token_budget_longest_first():
    lengths = [5, 300, 40, 41, 512, 7, 40, 600]
    batches = plan_batches(lengths, batch_tokens=512)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [lengths[batch[0]] for batch in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    for batch in batches:
        assert max(lengths[i] for i in batch) == lengths[batch[0]]
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= 512
    assert [4] in batches and [7] in batches  # a window over the budget runs alone


def test_bf16_vectors_point_the_same_way_as_fp32(small_checkpoint, small_encoder: Encoder, sequences: list[str]):
    bf16 = load_encoder(small_checkpoint, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    low, full = bf16.embed(sequences), small_encoder.embed(sequences)
    assert low.dtype == np.float32
    cosine = (low * full).sum(1) / np.linalg.norm(low, axis=1) / np.linalg.norm(full, axis=1)
    assert cosine.min() > 0.999


def test_compiled_layers_match_eager(small_checkpoint, small_encoder: Encoder, sequences: list[str]):
    compiled = load_encoder(small_checkpoint, device="cpu", dtype="float32", compile=True)
    options = dict(window_tokens=64, window_overlap=8)
    np.testing.assert_allclose(compiled.embed(sequences, batch_tokens=700, **options),
                               small_encoder.embed(sequences, batch_tokens=700, **options), atol=1e-5, rtol=0)
    np.testing.assert_allclose(compiled.embed(sequences[:3], batch_tokens=100, **options),
                               small_encoder.embed(sequences[:3], batch_tokens=100, **options), atol=1e-5, rtol=0)
    assert compiled.model.compiled


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch, small_checkpoint,
                                            small_encoder: Encoder, sequences: list[str]):
    def broken_compile(function, **options):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    encoder = load_encoder(small_checkpoint, device="cpu", dtype="float32", compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed, running the DNABERT-2 layers eagerly: no C"):
        vectors = encoder.embed(sequences[:4])
    assert not encoder.model.compiled
    np.testing.assert_array_equal(vectors, small_encoder.embed(sequences[:4]))


def test_one_forward_pass_pools_every_strategy(small_encoder: Encoder, sequences: list[str]):
    options = dict(window_tokens=64, window_overlap=8)
    strands = small_encoder.embed_strands(sequences, **options)
    n_windows = small_encoder.last_stats.n_windows
    for pooling in ("mean", "max", "cls"):
        np.testing.assert_allclose(strands.vectors(pooling), small_encoder.embed(sequences, pooling=pooling,
                                                                                 **options), atol=1e-6, rtol=0)
        assert small_encoder.last_stats.n_windows == n_windows
    assert not np.allclose(strands.vectors("mean"), strands.vectors("max"), atol=1e-3)
