"""tokenized_genes and gene_embeddings: cache, partition isolation, metadata, checks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from kb_assets.encoders import Encoder
from kb_assets.storage import Warehouse, to_matrix
from kb_assets_tests.assets.helpers import check_evaluations, latest_check_evaluation, metadata

EMBEDDING_METADATA = (
    "model_id", "model_sha256", "tokenizer_version", "rc_mode", "rc_averaged", "pooling_strategy", "window_tokens",
    "window_stride", "dtype", "device", "tokens_per_second", "padding_fraction", "cache_hits",
)
TOKENIZED_METADATA = ("tokenizer_version", "bpe_vocab_size", "bp_per_token", "n_windows", "max_tokens", "top_tokens")


@pytest.fixture
def recipe(make_recipe):
    return make_recipe(encoder={"dtype": "float32"})


def test_metadata_names_model_tokenizer_and_settings(recipe, materialize):
    results = materialize(recipe, partitions=["chr2"])
    meta = metadata(results, "gene_embeddings", "chr2")
    assert set(EMBEDDING_METADATA) <= set(meta)
    assert meta["rc_mode"] == "average" and meta["rc_averaged"] is True
    assert meta["pooling_strategy"] == "mean"
    assert meta["dtype"] == "float32" and meta["device"] == "cpu"
    assert meta["window_stride"] == 512 - 2 - 64
    assert meta["tokens_per_second"] > 0 and 0 <= meta["padding_fraction"] <= 0.1
    assert meta["model_id"] == "DNABERT-2-demo"
    assert meta["dagster/row_count"] == 221 * 2  # REF and 220 subjects × SCN2A_demo, CHD8_demo

    tokenized = metadata(results, "tokenized_genes", "chr2")
    assert set(TOKENIZED_METADATA) <= set(tokenized)
    assert tokenized["tokenizer_version"] == meta["tokenizer_version"]
    assert tokenized["bpe_vocab_size"] == 4096
    assert 3.0 < tokenized["bp_per_token"] < 8.0
    assert tokenized["max_tokens"] <= 512


def test_second_materialization_runs_no_forward_pass(recipe, materialize, monkeypatch):
    first = materialize(recipe, partitions=["chr2"])
    assert metadata(first, "gene_embeddings", "chr2")["embedded_sequences"] > 0

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran although every vector was cached")

    for method in ("embed", "embed_windows", "embed_windows_pooled"):
        monkeypatch.setattr(Encoder, method, forbidden)
    second = materialize(recipe, partitions=["chr2"])
    meta = metadata(second, "gene_embeddings", "chr2")
    assert meta["embedded_sequences"] == 0
    assert meta["cache_hits"] == metadata(first, "gene_embeddings", "chr2")["embedded_sequences"]
    warehouse = Warehouse(recipe.warehouse.root)
    assert pq.read_table(warehouse.partition_file("gene_embeddings", "chr2")).num_rows == 221 * 2


def test_changed_pooling_embeds_again(make_recipe, materialize):
    mean = make_recipe("mean", encoder={"dtype": "float32"})
    materialize(mean, partitions=["chr2"])
    cls = make_recipe("cls", encoder={"dtype": "float32", "pooling": "cls"},
                      warehouse={"root": str(mean.warehouse.root)})
    results = materialize(cls, partitions=["chr2"])
    meta = metadata(results, "gene_embeddings", "chr2")
    assert meta["pooling_strategy"] == "cls"
    assert meta["cache_hits"] == 0 and meta["embedded_sequences"] > 0


def test_rerunning_one_partition_leaves_the_others_untouched(recipe, materialize):
    materialize(recipe)
    warehouse = Warehouse(recipe.warehouse.root)
    chr1 = warehouse.partition_file("gene_embeddings", "chr1")
    before = (chr1.stat().st_mtime_ns, chr1.read_bytes())
    materialize(recipe, partitions=["chr2"])
    assert (chr1.stat().st_mtime_ns, chr1.read_bytes()) == before


def test_subjects_without_variants_share_the_reference_vector(recipe, materialize):
    materialize(recipe, partitions=["chrX"])
    warehouse = Warehouse(recipe.warehouse.root)
    embeddings = pq.read_table(warehouse.partition_file("gene_embeddings", "chrX"))
    keys = embeddings.select(["subject_id", "gene_name"]).to_pandas()
    vectors = to_matrix(embeddings.column("vector"))
    assignments = pq.read_table(warehouse.partition_file("subject_haplotypes/assignments", "chrX")).to_pandas()
    regions = pq.read_table(warehouse.partition_file("reference_sequences", "chrX")).to_pandas()
    mecp2_regions = set(regions.loc[regions["gene_name"] == "MECP2_demo", "region_id"])
    carried = assignments[assignments["region_id"].isin(mecp2_regions)].pivot_table(
        index="subject_id", columns="region_id", values="sequence_id", aggfunc="first")
    reference_alleles = (carried == carried.loc["REF"]).all(axis=1)

    mecp2 = (keys["gene_name"] == "MECP2_demo").to_numpy()
    by_subject = dict(zip(keys.loc[mecp2, "subject_id"], vectors[mecp2]))
    reference = by_subject["REF"]
    identical = {subject: bool(np.array_equal(vector, reference)) for subject, vector in by_subject.items()}
    assert identical == reference_alleles.to_dict()
    assert 0 < sum(identical.values()) < len(identical)


def test_checks_pass_on_good_vectors(recipe, materialize):
    results = materialize(recipe, partitions=["chr2"])
    meta = metadata(results, "gene_embeddings", "chr2")
    # DNABERT-2-shaped random weights are not RC-equivariant: the strands' vectors differ before averaging.
    assert 0.0 < meta["strand_cosine_median"] < 0.9999
    assert meta["forward_vs_rc_cosine"].startswith("![cosine of each distinct sequence")
    checks = check_evaluations(results, "gene_embeddings")
    assert checks["vectors_finite_and_complete"][-1].passed
    assert checks["rc_invariance"][-1].passed
    assert check_evaluations(results, "tokenized_genes")["tokenizer_unchanged"][-1].passed


def test_planted_nan_fails_the_finite_check(recipe, materialize, monkeypatch):
    real_embed_windows = Encoder.embed_windows

    def embed_windows_with_nan(self, sequences, *args, **kwargs):
        windows = real_embed_windows(self, sequences, *args, **kwargs)
        windows.vectors[0, 0] = np.nan
        return windows

    monkeypatch.setattr(Encoder, "embed_windows", embed_windows_with_nan)
    with pytest.raises(Exception):
        # The check is blocking: the run fails, and nothing downstream runs on the bad vectors.
        materialize(recipe, partitions=["chr2"])
    evaluation = latest_check_evaluation(materialize.instance, "gene_embeddings", "vectors_finite_and_complete")
    assert not evaluation.passed
    assert evaluation.metadata["non_finite_rows"].value > 0


def test_pinned_tokenizer_mismatch_fails_its_check(make_recipe, materialize):
    pinned = make_recipe(encoder={"dtype": "float32", "tokenizer_sha256": "0" * 64})
    with pytest.raises(Exception):
        materialize(pinned, partitions=["chr2"])
    evaluation = latest_check_evaluation(materialize.instance, "tokenized_genes", "tokenizer_unchanged")
    assert not evaluation.passed
    assert evaluation.metadata["expected"].value == "0" * 64
