"""Content hashes of inputs: what lineage records and what decides whether work must be redone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed so a 3 GB FASTA costs no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(path: str | os.PathLike, patterns: tuple[str, ...] = ("*",)) -> str:
    """sha256 over the names and contents of a folder's files that match `patterns` (sorted, non-recursive)."""
    folder = Path(path)
    files = sorted({f for pattern in patterns for f in folder.glob(pattern) if f.is_file()})
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file_sha256(file).encode() + b"\0")
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
