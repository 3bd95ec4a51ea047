"""The checkpoint folder replaced while a cohort is being embedded: every partition records the model and
tokenizer that made it, and the subject matrix refuses to put vectors of two of them side by side."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import numpy as np
import pytest
from tokenizers import Tokenizer

from kb_assets.cli import materialize_all
from kb_assets.definitions import build_definitions
from kb_assets.encoders import load_encoder, write_checkpoint
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256
from kb_assets.storage import Warehouse, to_matrix
from kb_assets_tests.reliability.conftest import FAST, TWO_CHROMOSOME_GENES, TWO_CHROMOSOMES, run_assets

DEMO_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


@pytest.fixture
def swappable(demo_recipe, make_recipe, tmp_path):
    """A recipe on chr1 and chr2 whose checkpoint is a folder of the test's own, free to be replaced."""
    checkpoint = shutil.copytree(demo_recipe.inputs.checkpoint, tmp_path / "checkpoint")
    recipe = make_recipe(genes=TWO_CHROMOSOME_GENES, **TWO_CHROMOSOMES, **FAST,
                         inputs={"checkpoint": str(checkpoint)})
    return recipe, checkpoint, Warehouse(recipe.warehouse.root)


def _facts(warehouse: Warehouse, chrom: str) -> dict:
    return warehouse.latest_lineage("gene_embeddings", chrom)["facts"]


def _metadata(instance: dg.DagsterInstance, chrom: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("gene_embeddings"), asset_partitions=[chrom]), limit=1).records
    return {key: getattr(value, "value", value) for key, value in records[0].asset_materialization.metadata.items()}


def _mix_refusal(warehouse: Warehouse, key: str, values: dict[str, str], rerun: str) -> str:
    listed = "; ".join(f"{value[:16]} in {chrom}" for chrom, value in values.items())
    return (f"{warehouse.dataset_dir('gene_embeddings')}: {key}: {listed}: gene_embeddings partitions were made "
            f"with different {key} values and cannot share one matrix. Fix: re-materialize gene_embeddings for "
            f"{rerun} with the current checkpoint and recipe")


def test_checkpoint_replaced_between_two_partitions_of_one_run(swappable):
    """One `kb-assets materialize` (one process, partitions one after another); the weights in the checkpoint
    folder are replaced just before chr2 starts."""
    recipe, checkpoint, warehouse = swappable
    old_sha = file_sha256(checkpoint / "pytorch_model.bin")
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))

    def replace_checkpoint_before_chr2(line: str) -> None:
        if line.endswith("(partition chr2)"):
            write_checkpoint(checkpoint, tokenizer, **DEMO_SHAPE, seed=99)

    instance = dg.DagsterInstance.ephemeral()
    materialize_all(build_definitions(recipe), ["chr1", "chr2"], instance=instance,
                    log=replace_checkpoint_before_chr2)
    new_sha = file_sha256(checkpoint / "pytorch_model.bin")
    assert new_sha != old_sha

    # Lineage and materialization metadata name the weights each partition was made with.
    assert (_facts(warehouse, "chr1")["model_sha256"], _facts(warehouse, "chr2")["model_sha256"]) == (old_sha, new_sha)
    assert _metadata(instance, "chr1")["model_sha256"] == old_sha
    assert _metadata(instance, "chr2")["model_sha256"] == new_sha
    assert warehouse.latest_lineage("gene_embeddings", "chr2")["inputs"]["checkpoint"]["sha256"] == new_sha
    assert _facts(warehouse, "chr1")["tokenizer_version"] == _facts(warehouse, "chr2")["tokenizer_version"]

    # The subject matrix will not mix them, and names the partition to redo.
    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    assert str(caught.value) == _mix_refusal(warehouse, "model_sha256", {"chr1": old_sha, "chr2": new_sha}, "chr1")

    # ... and the vectors recorded under the new hash are the new model's, not a model loaded earlier.
    keys = {json.loads((d / "key.json").read_text())["model_sha256"]: d.name
            for d in warehouse.dataset_dir("embedding_cache").iterdir()}
    cached = warehouse.read_partition(f"embedding_cache/{keys[new_sha]}", "chr2")
    sequences = warehouse.read_partition("subject_haplotypes/sequences", "chr2").to_pandas()
    sequences = sequences.set_index("sequence_id")["sequence"]
    rows = [i for i, s in enumerate(cached.column("sequence_id").to_pylist()) if s in sequences.index][:3]
    ids = [cached.column("sequence_id")[i].as_py() for i in rows]
    fresh = load_encoder(checkpoint, device="cpu", dtype="float32").embed(
        sequences[ids].tolist(), pooling=recipe.encoder.pooling, rc=recipe.encoder.rc,
        window_tokens=recipe.encoder.window_tokens, window_overlap=recipe.encoder.window_overlap)
    np.testing.assert_allclose(to_matrix(cached.column("vector").take(rows)), fresh, rtol=1e-4, atol=1e-5)


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
    assert _facts(warehouse, "chr1")["tokenizer_version"] == old_version
    assert _facts(warehouse, "chr2")["tokenizer_version"] == new_version
    assert _metadata(instance, "chr2")["tokenizer_version"] == new_version
    assert _facts(warehouse, "chr1")["model_sha256"] == _facts(warehouse, "chr2")["model_sha256"]
    with pytest.raises(InputError) as caught:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    assert str(caught.value) == _mix_refusal(
        warehouse, "tokenizer_version", {"chr1": old_version, "chr2": new_version}, "chr1")
    assert not warehouse.array_file("subject_matrix").exists()

    # Doing what the message says is enough.
    materialize_all(build_definitions(recipe), ["chr1"], instance=instance, log=lambda _: None)
    run_assets(recipe, instance, "subject_matrix")
    assert warehouse.latest_lineage("subject_matrix")["facts"]["tokenizer_version"] == new_version


def test_a_partition_whose_lineage_was_not_recorded_is_never_mixed_in(swappable, monkeypatch):
    recipe, checkpoint, warehouse = swappable
    instance = dg.DagsterInstance.ephemeral()
    materialize_all(build_definitions(recipe), ["chr1", "chr2"], instance=instance, log=lambda _: None)
    partition = warehouse.partition_file("gene_embeddings", "chr2")
    before = partition.read_bytes()
    write_checkpoint(checkpoint, Tokenizer.from_file(str(checkpoint / "tokenizer.json")), **DEMO_SHAPE, seed=99)

    record_lineage = Warehouse.record_lineage

    def catalog_gone(self, asset, **kwargs):
        if asset == "gene_embeddings":
            raise RuntimeError("the catalog could not be written")
        return record_lineage(self, asset, **kwargs)

    monkeypatch.setattr(Warehouse, "record_lineage", catalog_gone)
    with pytest.raises(RuntimeError, match="the catalog could not be written"):
        run_assets(recipe, instance, "gene_embeddings", partition="chr2")
    monkeypatch.undo()

    # Either nothing was replaced, or the subject matrix notices that chr2 is not what its lineage says.
    assert partition.read_bytes() == before or _refuses_to_build(recipe, instance, "chr2")


def _refuses_to_build(recipe, instance, chrom: str) -> bool:
    try:
        run_assets(recipe, instance, "covariates", "subject_matrix")
    except InputError as err:
        return chrom in str(err)
    return False
