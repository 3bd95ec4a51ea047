"""A real single-node SLURM cluster, started once for the SLURM tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kb_assets_tests.cluster.local_slurm import LocalSlurm, missing_binaries


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing): .ci/run installs slurm-wlm and munge")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.env.items():
            patch.setenv(name, value)
        try:
            yield cluster
        finally:
            cluster.stop()
