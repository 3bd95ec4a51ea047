"""Vectors for the diagnostics: window vectors of both strands under every pooling strategy, through the embedding
cache, and the sequence and gene vectors that follow from them as the engine and gene_embeddings compute them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from kb_assets.encoders import DnaTokenizer, Encoder, WindowEmbeddings
from kb_assets.encoders.engine import POOLINGS, cut_windows, window_origin
from kb_assets.encoders.gene_pooling import RegionToGene, region_weights
from kb_assets.fingerprint import text_sha256
from kb_assets.genome import reverse_complement
from kb_assets.storage import EmbeddingCache, EmbeddingKey, Warehouse


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two [n, H] arrays (float64); NaN where either row is all zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(norms > 0, (a * b).sum(axis=-1) / norms, np.nan), -1.0, 1.0)


def window_id(sequence_id: str, token_start: int, token_end: int) -> str:
    """Cache id of one token window: the pooled vector of tokens [token_start, token_end) of the sequence with that
    id, embedded alone as one model input (so it is cached under a key with rc_mode "none")."""
    return f"{sequence_id}:{token_start}-{token_end}"


def strand(windows: WindowEmbeddings, reverse_complement: bool) -> WindowEmbeddings:
    """The windows of one strand, marked forward: what embedding that strand alone (rc "none") gives."""
    chosen = windows.reverse_complement == reverse_complement
    return WindowEmbeddings(
        vectors=windows.vectors[chosen], sequence_index=windows.sequence_index[chosen],
        reverse_complement=np.zeros(int(chosen.sum()), dtype=bool), token_start=windows.token_start[chosen],
        token_end=windows.token_end[chosen], weight=windows.weight[chosen],
    )


def sequence_vectors(windows: WindowEmbeddings, n_sequences: int, rc_mode: str) -> np.ndarray:
    """[n, H] sequence vectors from both strands' windows, as `Encoder.embed` with that rc mode computes them."""
    return (windows if rc_mode == "average" else strand(windows, False)).sequence_vectors(n_sequences)


class WindowVectors:
    """Per pooling strategy, the vector of every token window of both strands of sequences, through the cache.

    A window's vector is cached under the recipe's key with rc_mode "none" and that pooling, by `window_id` of its
    strand: the forward strand is the sequence itself, the other its reverse complement (tokenized on its own, as
    a single-strand embedding of it would be). Sequences with a window missing go through one forward pass over
    both strands whose hidden states are pooled every way, so the three strategies cost one pass, whichever
    diagnostic runs first fills the cache for the others, and an unchanged rerun runs no forward pass. The model is
    loaded (`encoder()`) only then. Existing cache entries are never overwritten.
    """

    def __init__(self, warehouse: Warehouse, key: EmbeddingKey, tokenizer: DnaTokenizer,
                 encoder: Callable[[], Encoder], hidden_size: int, batch_tokens: int):
        self.caches = {p: EmbeddingCache(warehouse, replace(key, rc_mode="none", pooling=p)) for p in POOLINGS}
        self.key = key
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.hidden_size = hidden_size
        self.batch_tokens = batch_tokens
        self.embedded_windows = 0
        self.cached_windows = 0

    def _cached(self, pooling: str, ids: list[str]) -> dict[str, np.ndarray]:
        found_ids, found = self.caches[pooling].lookup(ids)
        return dict(zip(found_ids, found)) if found is not None else {}

    def both_strands(self, sequences: Sequence[str], partition: str) -> dict[str, WindowEmbeddings]:
        """Pooling → the windows of both strands of `sequences` (repeats allowed), as `Encoder.embed_windows` with
        rc "average" returns them; windows made now are stored in the cache's `partition` file."""
        key = self.key
        windows = cut_windows(self.tokenizer, list(sequences), "average", key.window_tokens, key.window_overlap) \
            if sequences else []
        strand_ids = {False: [text_sha256(s) for s in sequences],
                      True: [text_sha256(reverse_complement(s.upper())) for s in sequences]}
        ids = [window_id(strand_ids[w.reverse_complement][w.sequence_index], w.window.token_start,
                         w.window.token_end) for w in windows]
        distinct = list(dict.fromkeys(ids))
        known = {p: self._cached(p, distinct) for p in POOLINGS}
        self.cached_windows += len(known[key.pooling])
        incomplete = {strand_ids[False][w.sequence_index]: sequences[w.sequence_index]
                      for w, i in zip(windows, ids) if any(i not in known[p] for p in POOLINGS)}
        if incomplete:
            embedded = self.encoder().embed_windows_pooled(
                list(incomplete.values()), POOLINGS, rc="average", window_tokens=key.window_tokens,
                window_overlap=key.window_overlap, batch_tokens=self.batch_tokens)
            made = list(incomplete.values())
            made_ids = {False: [text_sha256(s) for s in made],
                        True: [text_sha256(reverse_complement(s.upper())) for s in made]}
            for pooling, result in embedded.items():
                new_ids = [window_id(made_ids[bool(rc)][s], start, end) for s, rc, start, end in zip(
                    result.sequence_index, result.reverse_complement, result.token_start, result.token_end)]
                fresh = {i: v for i, v in zip(new_ids, result.vectors) if i not in known[pooling]}
                if fresh:
                    self.caches[pooling].store(partition, list(fresh), np.stack(list(fresh.values())))
                    known[pooling].update(fresh)
            self.embedded_windows += len(embedded[key.pooling].vectors)
        origin = window_origin(windows)
        empty = np.zeros((0, self.hidden_size), dtype=np.float32)
        return {p: WindowEmbeddings(vectors=np.stack([known[p][i] for i in ids]) if ids else empty, **origin)
                for p in POOLINGS}


def gene_table(regions: pd.DataFrame) -> pd.DataFrame:
    """One row per gene of `regions`, in gene-set order: gene_id, gene_name, gene_order, chrom, n_regions, length_bp
    (the bases its regions hold: what is embedded)."""
    return (regions.groupby("gene_id", sort=False)
            .agg(gene_name=("gene_name", "first"), gene_order=("gene_order", "first"), chrom=("chrom", "first"),
                 n_regions=("region_id", "size"), length_bp=("length", "sum"))
            .reset_index().sort_values("gene_order", kind="stable").reset_index(drop=True))


def pool_regions(regions: pd.DataFrame, region_vectors: np.ndarray, region_to_gene: RegionToGene) -> np.ndarray:
    """[G, H] float64 gene vectors, rows as `gene_table(regions)`: the region vectors (row-aligned with `regions`)
    weighted per `region_to_gene`, as gene_embeddings pools a subject's regions."""
    genes = gene_table(regions)
    weights = region_weights(regions, region_to_gene).to_numpy()
    rows = pd.Index(genes["gene_id"]).get_indexer(regions["gene_id"])
    pooled = np.zeros((len(genes), region_vectors.shape[1]), dtype=np.float64)
    np.add.at(pooled, rows, region_vectors.astype(np.float64) * weights[:, None])
    return pooled
