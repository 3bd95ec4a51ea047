"""Model windows: every token of a tile's core counted in exactly one window, whatever the length, window size and
overlap (issue: tokens in overlaps used to count two or three times)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kb_assets.encoders.windows import ModelWindow, check_window_options, tile_windows, token_spans


@pytest.mark.parametrize(("content", "overlap"), [(1, 0), (3, 1), (10, 0), (10, 9), (62, 8), (510, 64), (510, 255)])
def test_counted_spans_partition_the_tokens_for_any_length(content, overlap):
    for n_tokens in itertools.chain(range(1, 3 * content + 5), [1000, 4096]):
        spans = token_spans(n_tokens, content, overlap)
        weight = np.zeros(n_tokens)
        for (_, end, _, _), (next_start, _, _, _) in zip(spans, spans[1:]):
            assert end - next_start >= overlap
        for start, end, count_start, count_end in spans:
            assert 0 <= start <= count_start <= count_end <= end <= n_tokens and end - start <= content
            weight[count_start:count_end] += 1
        # Each token counted once: with mean pooling every token's weight is 1/n, summing to exactly one.
        assert (weight == 1).all(), (n_tokens, content, overlap)


def test_windows_spread_evenly_and_overlaps_are_split_at_their_middle():
    # 1000 tokens need three windows of 510 to overlap by ≥ 64; they start at 0, 245 and 490.
    assert token_spans(1000, 510, 64) == [(0, 510, 0, 377), (245, 755, 377, 622), (490, 1000, 622, 1000)]
    assert token_spans(956, 510, 64) == [(0, 510, 0, 478), (446, 956, 478, 956)]  # exactly the minimum overlap


def test_only_core_tokens_are_counted_and_windows_without_one_are_left_out():
    ids = list(range(100, 130))
    offsets = [(2 * i, 2 * i + 2) for i in range(30)]  # 2-base tokens
    windows = tile_windows(ids, offsets, 20, 40, prefix=(1,), suffix=(2,), window_tokens=12, window_overlap=2)
    counted = [w.input_ids[w.count_start:w.count_end] for w in windows]
    assert [t for part in counted for t in part] == list(range(110, 120))  # tokens starting at bases 20..39
    assert all(w.input_ids[0] == 1 and w.input_ids[-1] == 2 and len(w.input_ids) <= 12 for w in windows)
    # 30 tokens in windows of 10 with overlap 2 make 4 windows; only those holding bases 20..39 are kept.
    assert len(windows) == 2
    assert tile_windows(ids, offsets, 20, 20, (1,), (2,), 12, 2) == []  # an empty core counts nothing


def test_a_window_key_depends_on_ids_and_counted_span():
    a = ModelWindow((1, 5, 6, 2), 1, 3)
    assert a.key == ModelWindow((1, 5, 6, 2), 1, 3).key
    assert len({a.key, ModelWindow((1, 5, 6, 2), 1, 2).key, ModelWindow((1, 5, 7, 2), 1, 3).key}) == 3


def test_invalid_window_options_are_refused():
    with pytest.raises(ValueError, match="window_tokens must be at least 3"):
        check_window_options(2, 0)
    with pytest.raises(ValueError, match=r"window_overlap must be in \[0, 8\)"):
        check_window_options(10, 8)
