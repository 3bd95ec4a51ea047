"""The checkpoint folder replaced while a cohort is being embedded: every partition's files record the model and
tokenizer that made them (and are embedded with them), the subject matrix refuses to put vectors of two of them side
by side, and a partition whose files come from two writes is never mixed in."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from kb_assets.assets.cohort import EMBEDDING_SETTINGS
from kb_assets.audit import Auditor
from kb_assets.cli import materialize_all
from kb_assets.definitions import build_definitions
from kb_assets.encoders import load_encoder, write_checkpoint
from kb_assets.encoders.engine import run_windows
from kb_assets.encoders.tokenized import model_windows
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256
from kb_assets.genome import vcf_samples
from kb_assets.storage import Warehouse, to_matrix
from kb_assets.storage.embedding_cache import CACHE_ROOT
from kb_assets_tests.conftest import write_recipe
from kb_assets_tests.reliability.conftest import (
    FAST,
    GENE_EMBEDDING_FILES,
    TWO_CHROMOSOME_GENES,
    TWO_CHROMOSOMES,
    bgzip_vcf,
    one_fact,
    partition_bytes,
    partition_facts,
    rename_sample,
    run_assets,
)

DEMO_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def _two_chromosomes(folder, demo_recipe):
    """A recipe on chr1 and chr2 in `folder` whose checkpoint is a folder of its own, free to be replaced."""
    checkpoint = shutil.copytree(demo_recipe.inputs.checkpoint, folder / "checkpoint")
    recipe = write_recipe(folder / "run", demo_recipe, TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES, **FAST,
                          inputs={"checkpoint": str(checkpoint)})
    return recipe, checkpoint, Warehouse(recipe.warehouse.root)


@pytest.fixture
def swappable(demo_recipe, tmp_path):
    return _two_chromosomes(tmp_path, demo_recipe)


@pytest.fixture(scope="module")
def swapped_mid_run(demo_recipe, tmp_path_factory):
    """One `kb-assets materialize` (one process, partitions one after another) of chr1 and chr2; the weights in the
    checkpoint folder are replaced just before chr2 starts. A copy of the old weights is kept aside."""
    folder = tmp_path_factory.mktemp("swapped")
    recipe, checkpoint, warehouse = _two_chromosomes(folder, demo_recipe)
    old_checkpoint = shutil.copytree(checkpoint, folder / "old_checkpoint")
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))

    def replace_checkpoint_before_chr2(line: str) -> None:
        if line.endswith("(partition chr2)"):
            write_checkpoint(checkpoint, tokenizer, **DEMO_SHAPE, seed=99)

    instance = dg.DagsterInstance.ephemeral()
    materialize_all(build_definitions(recipe), ["chr1", "chr2"], instance=instance,
                    log=replace_checkpoint_before_chr2)
    old_sha, new_sha = file_sha256(old_checkpoint / "pytorch_model.bin"), file_sha256(checkpoint / "pytorch_model.bin")
    assert old_sha != new_sha
    return recipe, warehouse, instance, old_checkpoint, checkpoint, old_sha, new_sha


def _metadata(instance: dg.DagsterInstance, chrom: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("gene_embeddings"), asset_partitions=[chrom]), limit=1).records
    return {key: getattr(value, "value", value) for key, value in records[0].asset_materialization.metadata.items()}


def _mix_refusal(warehouse: Warehouse, key: str, values: dict[str, str], rerun: str) -> str:
    listed = "; ".join(f"{value[:16]} in {chrom}" for chrom, value in values.items())
    return (f"{warehouse.dataset_dir('gene_embeddings')}: {key}: {listed}: gene_embeddings partitions were made "
            f"with different {key} values and cannot share one matrix. Fix: re-materialize gene_embeddings for "
            f"{rerun} with the current checkpoint and recipe")


def _two_writes_refusal(warehouse: Warehouse, chrom: str) -> str:
    return (f"{warehouse.dataset_dir('gene_embeddings')}: partition {chrom}: its files were written by different "
            f"runs (a run stopped while replacing them). Fix: re-materialize gene_embeddings for {chrom}")


def test_checkpoint_replaced_between_two_partitions_of_one_run(swapped_mid_run):
    recipe, warehouse, instance, _, _, old_sha, new_sha = swapped_mid_run

    # The files' own facts and the materialization metadata name the weights each partition was made with.
    assert (one_fact(warehouse, "chr1", "model_sha256"), one_fact(warehouse, "chr2", "model_sha256")) == (
        old_sha, new_sha)
    assert one_fact(warehouse, "chr2", "inputs")["checkpoint"]["sha256"] == new_sha
    assert (_metadata(instance, "chr1")["model_sha256"], _metadata(instance, "chr2")["model_sha256"]) == (
        old_sha, new_sha)
    assert one_fact(warehouse, "chr1", "tokenizer_version") == one_fact(warehouse, "chr2", "tokenizer_version")

    # The subject matrix will not mix them, names the partition to redo, and writes nothing.
    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    assert str(caught.value) == _mix_refusal(warehouse, "model_sha256", {"chr1": old_sha, "chr2": new_sha}, "chr1")
    assert not warehouse.dataset_dir("subject_matrix").exists()


def _window_means(checkpoint, windows) -> np.ndarray:
    """Each window's mean counted hidden state, from a model loaded afresh from `checkpoint` (float32, CPU)."""
    encoder = load_encoder(checkpoint, device="cpu", dtype="float32")
    means = np.zeros((len(windows), encoder.hidden_size))
    for batch in run_windows(encoder.model, windows, unk_ids=encoder.tokenizer.unk_ids,
                             pad_id=encoder.tokenizer.pad_id, batch_tokens=4096, device=encoder.device):
        means[batch.indices] = batch.stats.sums / batch.stats.counts[:, None]
    return means


def test_the_later_partition_is_embedded_with_the_new_weights(swapped_mid_run):
    """The windows cached under the new weights' hash (which chr2's vectors were pooled from) are what the new
    weights give, not what a model loaded earlier in the same process gives."""
    _, warehouse, _, old_checkpoint, checkpoint, _, new_sha = swapped_mid_run
    folders = {json.loads((d / "key.json").read_text())["model_sha256"]: d
               for d in warehouse.dataset_dir(CACHE_ROOT).iterdir()}
    cached = pq.read_table(sorted(folders[new_sha].glob("part-*.parquet")))
    row_of = {key: row for row, key in enumerate(cached.column("window_key").to_pylist())}
    windows = model_windows(warehouse.read_partition("tokenized_genes", "chr2"))[:4]
    rows = [row_of[window.key] for window in windows]
    stored = to_matrix(cached.column("sums").take(rows)) / cached.column("count").to_numpy()[rows, None]
    fresh = _window_means(checkpoint, windows)
    np.testing.assert_allclose(stored, fresh, rtol=1e-4, atol=1e-5)
    assert np.abs(_window_means(old_checkpoint, windows) - stored).max() > 1e-2


def test_the_audit_names_the_checkpoint_each_partition_was_embedded_with(swapped_mid_run):
    """Dagster's records, read by the audit, must say what the files say: chr2 was embedded with the new weights
    (current), chr1 with the old ones (stale)."""
    recipe, warehouse, instance, _, _, old_sha, new_sha = swapped_mid_run
    auditor = Auditor(instance, build_definitions(recipe), warehouse, recipe)
    chr1, chr2 = auditor.trace("gene_embeddings", "chr1"), auditor.trace("gene_embeddings", "chr2")
    assert chr1.facts["model_sha256"] == chr1.inputs["checkpoint"]["sha256"] == old_sha
    assert any(reason.startswith("input checkpoint changed since") for reason in chr1.stale), chr1.stale
    assert chr2.facts["model_sha256"] == new_sha
    assert chr2.inputs["checkpoint"]["sha256"] == new_sha, (
        "the audit says gene_embeddings[chr2] was built from the checkpoint observed before the run "
        f"(sha256 {chr2.inputs['checkpoint']['sha256'][:12]}), its files say {new_sha[:12]}")
    assert not [reason for reason in chr2.stale if "checkpoint" in reason], chr2.stale


def test_two_tokenizer_versions_are_refused_until_the_named_partition_is_rerun(swappable):
    """Separate runs (one per partition, as a backfill makes them); between them tokenizer.json changes."""
    recipe, checkpoint, warehouse = swappable
    instance = dg.DagsterInstance.ephemeral()
    materialize_all(build_definitions(recipe), ["chr1", "chr2"], instance=instance, log=lambda _: None)
    old_version = file_sha256(checkpoint / "tokenizer.json")
    # The same vocabulary written out differently: another file, so another tokenizer version.
    (checkpoint / "tokenizer.json").write_text(json.dumps(json.loads((checkpoint / "tokenizer.json").read_text()),
                                                          indent=1))
    new_version = file_sha256(checkpoint / "tokenizer.json")

    materialize_all(build_definitions(recipe), ["chr2"], instance=instance, log=lambda _: None)
    assert one_fact(warehouse, "chr1", "tokenizer_version") == old_version
    assert one_fact(warehouse, "chr2", "tokenizer_version") == new_version
    assert _metadata(instance, "chr2")["tokenizer_version"] == new_version
    assert one_fact(warehouse, "chr1", "model_sha256") == one_fact(warehouse, "chr2", "model_sha256")
    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    assert str(caught.value) == _mix_refusal(
        warehouse, "tokenizer_version", {"chr1": old_version, "chr2": new_version}, "chr1")
    assert not warehouse.dataset_dir("subject_matrix").exists()

    # Doing what the message says is enough.
    materialize_all(build_definitions(recipe), ["chr1"], instance=instance, log=lambda _: None)
    run_assets(recipe, instance, "subject_matrix")
    assert warehouse.read_facts("subject_matrix")["tokenizer_version"] == new_version


def test_a_partition_whose_files_come_from_two_writes_is_never_mixed_in(swappable, tmp_path, monkeypatch):
    recipe, _, warehouse = swappable
    instance = dg.DagsterInstance.ephemeral()
    materialize_all(build_definitions(recipe), ["chr1", "chr2"], instance=instance, log=lambda _: None)
    first_write = partition_bytes(warehouse, "chr2")
    first_facts = partition_facts(warehouse, "chr2")

    # Another VCF (one sample renamed): chr2's files change, the settings they are made with do not.
    sample = vcf_samples(recipe.inputs.vcf)[0]
    vcf = bgzip_vcf(rename_sample(gzip.open(recipe.inputs.vcf, "rt").read(), sample, "renamed"),
                    tmp_path / "renamed.vcf.gz")
    renamed = write_recipe(tmp_path / "renamed", recipe, None, inputs={"vcf": str(vcf)},
                           warehouse={"root": str(warehouse.root)})

    # A run that stops after renaming the first of the four files into place (the kernel's rename is atomic per
    # file, not per set).
    replace = os.replace
    renamed_into_chr2: list[str] = []

    def stops_after_the_first_file(source, target):
        if "/gene_embeddings/" in str(target) and "chrom=chr2" in str(target):
            if renamed_into_chr2:
                raise RuntimeError("the run stopped here")
            renamed_into_chr2.append(str(target))
        return replace(source, target)

    monkeypatch.setattr(os, "replace", stops_after_the_first_file)
    with pytest.raises(RuntimeError, match="the run stopped here"):
        materialize_all(build_definitions(renamed), ["chr2"], instance=instance, log=lambda _: None)
    monkeypatch.undo()
    mixed = partition_bytes(warehouse, "chr2")
    assert [name for name in GENE_EMBEDDING_FILES if mixed[name] != first_write[name]] == [GENE_EMBEDDING_FILES[0]]
    mixed_facts = partition_facts(warehouse, "chr2")
    # Only the write id tells the files apart: every setting the subject matrix compares is the same.
    assert len({json.dumps({key: facts.get(key) for key in EMBEDDING_SETTINGS}, sort_keys=True)
                for facts in mixed_facts.values()}) == 1
    assert mixed_facts[GENE_EMBEDDING_FILES[0]]["write_id"] != first_facts[GENE_EMBEDDING_FILES[0]]["write_id"]

    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    assert str(caught.value) == _two_writes_refusal(warehouse, "chr2")
    assert not warehouse.dataset_dir("subject_matrix").exists()

    # Doing what the message says is enough.
    materialize_all(build_definitions(renamed), ["chr2"], instance=instance, log=lambda _: None)
    run_assets(recipe, instance, "subject_matrix")
    matrix = {p: p.read_bytes() for p in sorted(warehouse.dataset_dir("subject_matrix").rglob("*.parquet"))}
    assert matrix

    # One file of the partition replaced by another write's (restored from a backup, copied between warehouses):
    # refused the same way, and the subject matrix already there is left as it was.
    warehouse.partition_file(GENE_EMBEDDING_FILES[1], "chr2").write_bytes(first_write[GENE_EMBEDDING_FILES[1]])
    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "subject_matrix")
    assert str(caught.value) == _two_writes_refusal(warehouse, "chr2")
    assert {p: p.read_bytes() for p in sorted(warehouse.dataset_dir("subject_matrix").rglob("*.parquet"))} == matrix
