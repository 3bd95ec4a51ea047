"""Small cohorts built in memory: covariates with strong effects, a dense subject matrix, a factored one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kb_assets.stats.covariates import CovariateCoder
from kb_assets.stats.subject_matrix import FactoredSubjectMatrix, GeneBlock

CODER = CovariateCoder(categorical=["sex", "batch"], numeric=["age", "pc1", "pc2", "pc3"])


def write_table(path: Path, header: list[str], rows: list[list[object]], sep: str = ",") -> Path:
    """A text covariates file, cells written as given (None → empty cell)."""
    lines = [sep.join(header)] + [sep.join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def cohort_frame(n: int, seed: int = 0, n_sites: int = 12) -> pd.DataFrame:
    """A canonical covariates frame (as load_covariates returns it) for n subjects."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "subject_id": [f"S{i:04d}" for i in range(n)],
            "age": rng.normal(55, 9, n),
            "sex": pd.Categorical(rng.choice(["F", "M"], n), categories=["F", "M"]),
            "pc1": rng.normal(0, 0.02, n),
            "pc2": rng.normal(0, 0.02, n),
            "pc3": rng.normal(0, 0.02, n),
            "batch": pd.Categorical(rng.choice(["b1", "b2", "b3"], n), categories=["b1", "b2", "b3"]),
            "site": pd.Categorical(rng.choice([f"site{i:02d}" for i in range(n_sites)], n)),
            "label": pd.Categorical(rng.choice(["case", "control"], n, p=[0.3, 0.7])),
        }
    )


def batch_by_site(frame: pd.DataFrame, n_batches: int) -> pd.DataFrame:
    """The frame with batch ≈ site (site i in batch i mod n_batches): a held-out site takes its batch along."""
    sites = frame["site"].cat.codes.to_numpy()
    levels = [f"batch{i:02d}" for i in range(n_batches)]
    frame = frame.copy()
    frame["batch"] = pd.Categorical(np.array(levels)[sites % n_batches], categories=levels)
    return frame


def dense_matrix(design: np.ndarray, n_features: int, seed: int = 0) -> np.ndarray:
    """float32 subjects × features: rank-5 signal + strong covariate effects + noise, far from zero mean."""
    rng = np.random.default_rng(seed)
    n = design.shape[0]
    covariates = design[:, 1:]
    covariates = (covariates - covariates.mean(0)) / covariates.std(0)
    signal = rng.normal(size=(n, 5)) * [4, 3, 2, 1.5, 1] @ rng.normal(size=(5, n_features))
    effects = covariates @ rng.normal(0, 1.5, (covariates.shape[1], n_features))
    noise = rng.normal(0, 0.5, (n, n_features))
    return (signal + effects + noise + 40.0).astype(np.float32)


def factored_matrix(n: int, n_genes: int = 4, hidden: int = 16, distinct: tuple[int, int] = (3, 60),
                    carriers: tuple[float, float] = (0.05, 0.4), seed: int = 0,
                    batch_effect: np.ndarray | None = None) -> FactoredSubjectMatrix:
    """A factored cohort: per gene a few distinct vectors with 1/j frequencies among carriers, most subjects
    reference. With `batch_effect` (a number per subject), carrier rates and the share of carriers of the most
    common vector follow it, so the covariates explain part of the matrix."""
    rng = np.random.default_rng(seed)
    blocks = []
    for gene in range(n_genes):
        d = int(rng.integers(*distinct))
        rate = np.full(n, rng.uniform(*carriers))
        if batch_effect is not None:
            rate = np.clip(rate * (1 + 0.8 * np.sin(batch_effect + gene)), 0, 0.9)
        rows = np.flatnonzero(rng.random(n) < rate)
        weights = 1.0 / np.arange(1, d)
        codes = rng.choice(np.arange(1, d), len(rows), p=weights / weights.sum()).astype(np.int32)
        if batch_effect is not None:
            codes[rng.random(len(rows)) < 0.6 * (np.sin(batch_effect[rows] + gene) + 1) / 2] = 1
        reference = rng.normal(0, 1, hidden)
        deltas = rng.normal(0, 1, (d - 1, hidden)) * rng.lognormal(np.log(0.1), 0.5, (d - 1, 1))
        vectors = np.vstack([reference, reference + deltas]).astype(np.float32)
        blocks.append(GeneBlock(f"ENSG{gene:05d}", vectors, rows.astype(np.int64), codes))
    return FactoredSubjectMatrix(n, blocks)


@pytest.fixture
def cohort() -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray]:
    """(frame, design, design column names, X) for 150 subjects × 60 features."""
    frame = cohort_frame(150)
    coder = CovariateCoder(categorical=["sex", "batch"], numeric=["age", "pc1", "pc2", "pc3"]).fit(frame)
    design = coder.transform(frame)
    return frame, design, coder.columns_, dense_matrix(design, 60)
