"""Content hashes of inputs: what the input observations and file facts record, and what decides whether work must
be redone."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed so a 3 GB FASTA costs no memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def remembered_file_sha256(path: str | os.PathLike, memory: str | os.PathLike) -> str:
    """file_sha256, remembered in the folder `memory` by the file's path, size and mtime: a 100 GB VCF that every
    chromosome partition names is read once, not once per partition (and again after any change)."""
    stat = os.stat(path)
    seen = [stat.st_size, stat.st_mtime_ns]
    entry = Path(memory) / f"{text_sha256(str(Path(path).resolve()))[:32]}.json"
    try:
        saved = json.loads(entry.read_text())
        if saved["stat"] == seen:
            return saved["sha256"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    digest = file_sha256(path)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staged = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps({"path": str(path), "stat": seen, "sha256": digest}))
    os.replace(staged, entry)
    return digest


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
