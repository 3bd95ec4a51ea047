import numpy as np
import pytest
import torch

from kb_assets.encoders import Encoder, load_encoder
from kb_assets.encoders.engine import plan_batches
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


def test_long_sequence_windows_cover_it_and_weights_make_the_vector(small_encoder: Encoder):
    sequence = random_dna(4_000, seed=8)
    windows = small_encoder.embed_windows([sequence], window_tokens=64, window_overlap=8)
    for is_rc in (False, True):
        strand = ~windows.reverse_complement if not is_rc else windows.reverse_complement
        text = reverse_complement(sequence) if is_rc else sequence
        starts, ends = windows.token_start[strand], windows.token_end[strand]
        assert strand.sum() > 5 and starts[0] == 0 and ends[-1] == len(small_encoder.tokenizer.encode(text))
        assert np.all(starts[1:] <= ends[:-1])  # no gap
        assert np.all(ends - starts <= 62)
        assert windows.weight[strand].sum() == pytest.approx(1.0, abs=1e-12)
        # Each window's vector is the model's pooled vector for that window alone.
        tokens = small_encoder.tokenizer.encode(text)
        middle = len(starts) // 2
        piece = "".join(small_encoder.tokenizer.id_to_token(t) for t in tokens[starts[middle] : ends[middle]])
        np.testing.assert_allclose(windows.vectors[strand][middle], model_vectors(small_encoder, piece), atol=1e-5)
    by_strand = [np.average(windows.vectors[windows.reverse_complement == is_rc], axis=0,
                            weights=windows.weight[windows.reverse_complement == is_rc]) for is_rc in (False, True)]
    np.testing.assert_allclose(small_encoder.embed([sequence], window_tokens=64, window_overlap=8)[0],
                               np.mean(by_strand, axis=0), atol=1e-6, rtol=0)
    assert small_encoder.last_stats.n_windows == len(windows.vectors)


def test_windows_never_exceed_the_model_context(small_encoder: Encoder):
    with pytest.raises(ValueError, match="window_tokens 513 exceeds the model context of 512 tokens"):
        small_encoder.embed(["ACGT"], window_tokens=513)
    with pytest.raises(ValueError, match="pooling must be one of"):
        small_encoder.embed(["ACGT"], pooling="median")
    with pytest.raises(ValueError, match="rc must be one of"):
        small_encoder.embed(["ACGT"], rc="both")


def test_empty_list_and_empty_sequence(small_encoder: Encoder):
    empty = small_encoder.embed([])
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    assert small_encoder.last_stats.n_sequences == 0 and small_encoder.last_stats.padding_fraction == 0.0
    with pytest.raises(InputError, match="sequence 1: has no tokens"):
        small_encoder.embed(["ACGT", ""])


def test_stats_and_progress(small_encoder: Encoder, sequences: list[str]):
    calls: list[tuple[int, int]] = []
    vectors = small_encoder.embed(sequences, window_tokens=64, window_overlap=8, batch_tokens=256,
                                  progress=lambda done, total: calls.append((done, total)))
    stats = small_encoder.last_stats
    windows = [w for s in sequences for text in (s, reverse_complement(s))
               for w in small_encoder.tokenizer.windows(text, 64, 8)]
    assert vectors.shape == (len(sequences), 64) and vectors.dtype == np.float32
    assert (stats.n_sequences, stats.n_windows, stats.base_pairs) == (8, len(windows), sum(LENGTHS))
    assert stats.real_tokens == sum(len(w.input_ids) for w in windows)
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


def test_one_forward_pass_pooled_several_ways_matches_separate_calls(small_encoder: Encoder, sequences: list[str]):
    options = dict(window_tokens=64, window_overlap=8)
    pooled = small_encoder.embed_windows_pooled(sequences, ("mean", "max", "cls"), **options)
    assert small_encoder.last_stats.n_windows == len(pooled["mean"].vectors)
    for pooling, windows in pooled.items():
        alone = small_encoder.embed_windows(sequences, pooling=pooling, **options)
        np.testing.assert_allclose(windows.vectors, alone.vectors, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(windows.token_start, alone.token_start)
    assert not np.allclose(pooled["mean"].vectors, pooled["max"].vectors, atol=1e-3)
