"""Staged outputs: published whole on commit, gone without a trace on discard."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_assets.cluster.staging import STAGING_DIR, StagedOutputs


def _stage(root: Path, name: str = "job1") -> StagedOutputs:
    staged = StagedOutputs(root, name)
    folder = staged.create()
    (folder / "gene_embeddings" / "chrom=chr1").mkdir(parents=True)
    (folder / "gene_embeddings" / "chrom=chr1" / "part-0.parquet").write_text("new chr1")
    (folder / "cache" / "x").mkdir(parents=True)
    (folder / "cache" / "x" / "vectors.parquet").write_text("new cache")
    return staged


def test_commit_replaces_and_adds_files_then_removes_the_staging_folder(tmp_path: Path):
    old = tmp_path / "gene_embeddings" / "chrom=chr1" / "part-0.parquet"
    old.parent.mkdir(parents=True)
    old.write_text("old chr1")
    untouched = tmp_path / "gene_embeddings" / "chrom=chr2" / "part-0.parquet"
    untouched.parent.mkdir(parents=True)
    untouched.write_text("old chr2")
    staged = _stage(tmp_path)
    assert staged.files() == [Path("cache/x/vectors.parquet"), Path("gene_embeddings/chrom=chr1/part-0.parquet")]

    published = staged.commit()

    assert published == [tmp_path / "cache/x/vectors.parquet", old]
    assert old.read_text() == "new chr1" and untouched.read_text() == "old chr2"
    assert (tmp_path / "cache" / "x" / "vectors.parquet").read_text() == "new cache"
    assert not staged.path.exists() and not any((tmp_path / STAGING_DIR).iterdir())


def test_discard_leaves_earlier_outputs_alone(tmp_path: Path):
    old = tmp_path / "gene_embeddings" / "chrom=chr1" / "part-0.parquet"
    old.parent.mkdir(parents=True)
    old.write_text("old chr1")
    staged = _stage(tmp_path)
    staged.discard()
    assert old.read_text() == "old chr1" and not (tmp_path / "cache").exists() and not staged.path.exists()


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_staging_names_are_plain_folder_names(name, tmp_path: Path):
    with pytest.raises(ValueError):
        StagedOutputs(tmp_path, name)
