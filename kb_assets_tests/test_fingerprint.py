"""Input hashes: remembered by path, size and mtime, recomputed after any change; what Dagster observes of an input
file is its hash."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from kb_assets import fingerprint
from kb_assets.definitions import build_definitions
from kb_assets.fingerprint import file_sha256, remembered_file_sha256


def test_a_remembered_hash_is_not_read_again_until_the_file_changes(tmp_path, monkeypatch):
    data = tmp_path / "cohort.vcf.gz"
    data.write_bytes(b"x" * 1000)
    memory = tmp_path / "hashes"
    first = remembered_file_sha256(data, memory)
    assert first == file_sha256(data)

    def no_reading(path):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(fingerprint, "file_sha256", no_reading)
    assert remembered_file_sha256(data, memory) == first
    data.write_bytes(b"y" * 1000)  # same size, new bytes and mtime
    with pytest.raises(AssertionError, match="read again"):
        remembered_file_sha256(data, memory)
    monkeypatch.undo()
    assert remembered_file_sha256(data, memory) == file_sha256(data) != first
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: hashed again, same answer
    assert remembered_file_sha256(data, memory) == file_sha256(data)
    assert [p.suffix for p in memory.iterdir()] == [".json"]


def _observed(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    """Observe the recipe's input files (the observe_inputs job): {input name: data version}."""
    result = defs.resolve_job_def("observe_inputs").execute_in_process(instance=instance)
    return {event.asset_key.path[-1]: event.event_specific_data.asset_observation.data_version
            for event in result.get_asset_observation_events()}


def test_an_input_file_is_observed_as_its_content_hash_and_hashed_once_per_change(make_recipe, monkeypatch):
    """What Dagster records of an input (and links every materialization to) is the file's sha256: observing again
    costs a stat, touching the file changes nothing, new bytes give a new version."""
    recipe = make_recipe()
    defs, instance = build_definitions(recipe), dg.DagsterInstance.ephemeral()
    first = _observed(defs, instance)
    assert set(first) == {"fasta", "gtf", "gene_set", "vcf", "covariates", "checkpoint", "tokenizer"}
    assert first["vcf"] == file_sha256(recipe.inputs.vcf)
    assert first["gene_set"] == file_sha256(recipe.inputs.gene_set)

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(fingerprint, "file_sha256", no_reading)
    assert _observed(defs, instance) == first
    monkeypatch.undo()

    stat = recipe.inputs.gene_set.stat()
    os.utime(recipe.inputs.gene_set, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert _observed(defs, instance) == first
    recipe.inputs.gene_set.write_text(recipe.inputs.gene_set.read_text() + "MECP2_demo\n")
    changed = _observed(defs, instance)
    assert changed == {**first, "gene_set": file_sha256(recipe.inputs.gene_set)} != first
