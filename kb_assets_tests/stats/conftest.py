"""Small cohorts built in memory: a covariates table with strong covariate effects, and its subject matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kb_assets.stats.covariates import design_matrix

COVARIATES = ["age", "sex", "pc1", "pc2", "pc3", "batch"]


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


def subject_matrix(design: np.ndarray, n_features: int, seed: int = 0) -> np.ndarray:
    """float32 subjects × features: rank-5 signal + strong covariate effects + noise, far from zero mean."""
    rng = np.random.default_rng(seed)
    n = design.shape[0]
    covariates = design[:, 1:]
    covariates = (covariates - covariates.mean(0)) / covariates.std(0)
    signal = rng.normal(size=(n, 5)) * [4, 3, 2, 1.5, 1] @ rng.normal(size=(5, n_features))
    effects = covariates @ rng.normal(0, 1.5, (covariates.shape[1], n_features))
    noise = rng.normal(0, 0.5, (n, n_features))
    return (signal + effects + noise + 40.0).astype(np.float32)


@pytest.fixture
def cohort() -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray]:
    """(frame, design, design column names, X) for 150 subjects × 60 features."""
    frame = cohort_frame(150)
    design, names = design_matrix(frame, COVARIATES)
    return frame, design, names, subject_matrix(design, 60)
