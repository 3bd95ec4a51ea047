"""Input hashes: remembered by path, size and mtime, recomputed after any change."""

from __future__ import annotations

import os

import pytest

from kb_assets import fingerprint
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
