"""Outputs of a job that runs elsewhere (a SLURM node, a pod), published only when the orchestrator says so.

The job writes under a staging folder that mirrors the warehouse layout (a `Warehouse` rooted there writes
`<asset>/chrom=<c>/part-0.parquet` as usual); it never writes the warehouse itself. When the job has succeeded, the
orchestrator moves each staged file onto its place under the warehouse root with `os.replace`, atomic per file
because the staging folder lies inside the root (one file system). A job that fails, is cancelled or dies leaves
its staging folder behind at worst, and every earlier output untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

STAGING_DIR = ".staging"  # a dot-folder under the warehouse root: no dataset reader lists it
STAGING_EXTRA = "kb_assets_staging_dir"  # the Pipes extra that tells the job where to write


class StagedOutputs:
    """The staging folder `<root>/.staging/<name>` of one job, and its publication onto `root`."""

    def __init__(self, root: str | os.PathLike, name: str):
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"staging name must be a plain folder name: {name!r}")
        self.root = Path(root)
        self.path = self.root / STAGING_DIR / name

    def create(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=False)
        return self.path

    def files(self) -> list[Path]:
        """Staged files, relative to the staging folder (= their place relative to the root), in a stable order."""
        return sorted(p.relative_to(self.path) for p in self.path.rglob("*") if p.is_file() or p.is_symlink())

    def commit(self) -> list[Path]:
        """Move every staged file onto `root` (replacing what is there) and remove the staging folder; returns the
        published paths. Every file is in place before this returns; a crash in between leaves each file either
        old or new, never half written."""
        published = []
        for relative in self.files():
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / relative, target)
            published.append(target)
        self.discard()
        return published

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
