"""Benchmark of subject_embeddings_pca: all folds of the residualized PCA on a synthetic memmapped subject matrix.

The matrix is written to a .npy file in row blocks and opened with ``mmap_mode="r"``, as the asset reads the
stored subject matrix; the folds are fitted, scored, turned into output rows, saved and plotted as the asset
does. Peak RSS includes the file pages of the memmap the process has touched (they are the page cache, shared
and reclaimable); the traced peak counts the arrays the computation allocates.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from kb_assets.stats.covariates import design_matrix
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.plots import scree_plot_png
from kb_assets.stats.projection import fit_fold_projections

_GIB = 1 << 30
_LATENT = 64  # rank of the synthetic signal
_N_PCS = 10
_N_BATCHES = 8
_N_SITES = 20


def run_pca_benchmark(
    n_subjects: int = 20000,
    n_genes: int = 38,
    hidden: int = 768,
    n_components: int = 512,
    folds: int = 5,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Synthesize the matrix and covariates, run every fold, and return sizes, timings and memory peaks."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="kb_assets_pca_bench_") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        covariates = _synthetic_covariates(n_subjects, seed)
        design, names = design_matrix(covariates, ["age", "sex", *(f"pc{i}" for i in range(1, _N_PCS + 1)), "batch"])
        matrix_path = _write_synthetic_matrix(scratch / "subject_matrix.npy", design, n_genes * hidden, seed)
        synthesis_s = time.perf_counter() - started

        X = np.load(matrix_path, mmap_mode="r")
        folds_df = assign_folds(covariates, k=folds, seed=42)
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        tracemalloc.start()
        started = fold_started = time.perf_counter()
        fold_seconds = []
        n_rows = 0
        for result in fit_fold_projections(
            X, covariates["subject_id"], design, folds_df, n_components=n_components, seed=seed, covariate_names=names
        ):
            n_rows += len(result.to_frame())
            result.projector.save(scratch / f"projector_fold{result.fold}.npz")
            scree_plot_png(result.projector.explained_variance_ratio)
            fold_seconds.append(time.perf_counter() - fold_started)
            fold_started = time.perf_counter()
        pca_s = time.perf_counter() - started
        cpu_s = _cpu_seconds() - cpu_before
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {
            "n_subjects": n_subjects,
            "n_features": n_genes * hidden,
            "matrix_gib": n_subjects * n_genes * hidden * 4 / _GIB,
            "n_components": result.projector.n_components,
            "folds": folds,
            "fold_scheme": folds_df.attrs["scheme"],
            "output_rows": n_rows,
            "synthesis_s": synthesis_s,
            "pca_s": pca_s,
            "fold_s": fold_seconds,
            "cpu_s": cpu_s,
            # Other processes' load slows every pass; the 1-minute load average before and after tells.
            "load_average": (load_before, os.getloadavg()[0]),
            # ru_maxrss is in KiB on Linux.
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB,
            "traced_peak_gib": traced_peak / _GIB,
        }


def format_report(result: dict) -> str:
    """A few lines for the terminal and the README."""
    folds = ", ".join(f"{s:.0f}" for s in result["fold_s"])
    load = result["load_average"]
    return "\n".join(
        [
            f"subject_embeddings_pca benchmark: {result['n_subjects']} subjects × {result['n_features']} features "
            f"(float32 {result['matrix_gib']:.2f} GiB, memmapped), {result['folds']} folds "
            f"({result['fold_scheme']}), {result['n_components']} components",
            f"  all folds: {result['pca_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU (per fold: {folds} s); "
            f"synthesis {result['synthesis_s']:.0f} s; load average {load[0]:.1f} before, {load[1]:.1f} after "
            f"({os.cpu_count()} CPUs)",
            f"  peak RSS {result['peak_rss_gib']:.2f} GiB (includes touched memmap pages); "
            f"peak allocated arrays {result['traced_peak_gib']:.2f} GiB",
            f"  output rows {result['output_rows']}",
        ]
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _synthetic_covariates(n_subjects: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i:06d}" for i in range(n_subjects)],
            "age": rng.normal(57, 8, n_subjects),
            "sex": pd.Categorical(rng.choice(["F", "M"], n_subjects)),
            **{f"pc{i}": rng.normal(0, 0.01, n_subjects) for i in range(1, _N_PCS + 1)},
            "batch": pd.Categorical(rng.choice([f"b{i}" for i in range(1, _N_BATCHES + 1)], n_subjects)),
            "site": pd.Categorical(rng.choice([f"site{i:02d}" for i in range(1, _N_SITES + 1)], n_subjects)),
            "label": pd.Categorical(rng.choice(["case", "control"], n_subjects, p=[0.3, 0.7])),
        }
    )
    return frame


def _write_synthetic_matrix(path: Path, design: np.ndarray, n_features: int, seed: int) -> Path:
    """Low-rank signal + covariate effects + noise, written block by block (never held whole, never mapped)."""
    rng = np.random.default_rng(seed + 1)
    n_subjects = design.shape[0]
    loadings = rng.standard_normal((_LATENT, n_features)).astype(np.float32)
    strengths = np.geomspace(3.0, 0.3, _LATENT).astype(np.float32)
    # Standardize the design's non-intercept columns so every covariate moves the features visibly.
    covariates = design[:, 1:]
    spread = covariates.std(0)
    covariates = ((covariates - covariates.mean(0)) / np.where(spread > 0, spread, 1.0)).astype(np.float32)
    effects = 0.5 * rng.standard_normal((covariates.shape[1], n_features)).astype(np.float32)
    offsets = rng.normal(0, 2, n_features).astype(np.float32)
    block = max(1, (64 << 20) // (n_features * 4))
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                  "shape": (n_subjects, n_features)}
        np.lib.format.write_array_header_2_0(handle, header)
        for start in range(0, n_subjects, block):
            stop = min(start + block, n_subjects)
            latent = rng.standard_normal((stop - start, _LATENT), dtype=np.float32) * strengths
            values = latent @ loadings + covariates[start:stop] @ effects + offsets
            values += rng.standard_normal(values.shape, dtype=np.float32)
            values.astype("<f4").tofile(handle)
    return path
