"""Benchmark of subject_embeddings_pca on a synthetic factored cohort: every fold of the residualized PCA.

The cohort (`synthetic_factored_cohort`) has the structure the factored storage keeps for real data:
- 38 genes × H = 768. Per gene a potential number of distinct haplotype vectors d drawn log-uniformly in
  10..20,000 and a carrier rate uniform in 1..30% (so 70–99% of subjects carry the reference); each carrier
  draws its vector from a 1/j frequency spectrum over the d − 1 non-reference vectors (a neutral-like spectrum:
  a few common haplotypes, a long tail of rare ones), so the distinct vectors actually carried grow with the
  cohort. A vector is the reference plus a small shift: a gene-specific 32-dimensional structure plus as much
  isotropic noise, scaled log-normally (median 5% of the reference's spread).
- Covariates as the recipe residualizes them: age, sex, ancestry PCs 1–10, and a genotyping batch with 36
  levels tied to 22 assessment sites (each site's subjects in 3 consecutive batches, each batch in 1–3 sites),
  so a batch whose sites are all held out is unseen in training; a case/control label for stratification.
  Carrier rates follow PC1 and the batch a little.
The folds are those of the recipe (StratifiedGroupKFold: k = 5, seed 42, grouped by site, stratified by label);
each fold fits the coder and the PCA on its training subjects, scores both splits, writes its rows to one parquet
file (fold by fold, as the asset does), saves its projector and draws its scree plot. Reported: wall and CPU time,
peak RSS (sampled), the accuracy figures each fit reports, and where affordable (training subjects ≤
`exact_max_subjects`) the exact optimum for fold 0 from the eigenvalues of the residualized training Gram matrix
(formed through the factored structure, float64), against which the fitted components' captured variance is
measured directly.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.linalg
from threadpoolctl import threadpool_limits

from kb_assets.benchmarks.dedup import _PeakRss
from kb_assets.stats.covariates import CovariateCoder, covariate_coder
from kb_assets.stats.folds import assign_folds
from kb_assets.stats.plots import scree_plot_png
from kb_assets.stats.projection import FOLD_SCORES_SCHEMA, ResidualizedPCA, fit_folds
from kb_assets.stats.subject_matrix import FactoredSubjectMatrix, GeneBlock

_GIB = 1 << 30
_N_PCS = 10
_N_SITES = 22
_N_BATCHES = 36
_STRUCTURE_RANK = 32
EXACT_MAX_SUBJECTS = 20000  # training subjects up to which fold 0 is checked against an exact eigendecomposition


def synthetic_covariates(n_subjects: int, seed: int = 0) -> pd.DataFrame:
    """A canonical covariates frame: age, sex, pc1..pc10, batch (36 levels tied to 22 sites), site, label."""
    rng = np.random.default_rng(seed)
    site = rng.integers(0, _N_SITES, n_subjects)
    batch = (site * _N_BATCHES // _N_SITES + rng.integers(0, 3, n_subjects)) % _N_BATCHES
    batches = [f"batch{i:02d}" for i in range(_N_BATCHES)]
    sites = [f"site{i:02d}" for i in range(_N_SITES)]
    return pd.DataFrame({
        "subject_id": [f"S{i:07d}" for i in range(n_subjects)],
        "age": rng.normal(57, 8, n_subjects),
        "sex": pd.Categorical(rng.choice(["F", "M"], n_subjects), categories=["F", "M"]),
        **{f"pc{i}": rng.normal(0, 0.01, n_subjects) for i in range(1, _N_PCS + 1)},
        "batch": pd.Categorical(np.array(batches)[batch], categories=batches),
        "site": pd.Categorical(np.array(sites)[site], categories=sites),
        "label": pd.Categorical(rng.choice(["case", "control"], n_subjects, p=[0.3, 0.7])),
    })


def synthetic_factored_cohort(covariates: pd.DataFrame, n_genes: int = 38, hidden: int = 768,
                              max_distinct: int = 20000, seed: int = 0) -> FactoredSubjectMatrix:
    """The factored subject matrix of the module docstring, for the subjects of `covariates` (in its order)."""
    rng = np.random.default_rng(seed + 1)
    n = len(covariates)
    ancestry = covariates["pc1"].to_numpy() / covariates["pc1"].std()
    batch = covariates["batch"].cat.codes.to_numpy()
    blocks = []
    for gene in range(n_genes):
        potential = int(np.exp(rng.uniform(np.log(10), np.log(max_distinct))))
        batch_shift = rng.normal(0, 0.15, _N_BATCHES)
        rate = np.clip(rng.uniform(0.01, 0.30) * np.exp(0.2 * ancestry + batch_shift[batch]), 0, 0.95)
        rows = np.flatnonzero(rng.random(n) < rate)
        harmonic = np.cumsum(1.0 / np.arange(1, potential))
        drawn = np.searchsorted(harmonic, rng.random(len(rows)) * harmonic[-1]) + 1
        carried, codes = np.unique(drawn, return_inverse=True)  # keep the vectors someone carries, common first
        d = len(carried) + 1
        structure = rng.standard_normal((_STRUCTURE_RANK, hidden)) * np.geomspace(1, 0.05, _STRUCTURE_RANK)[:, None]
        shifts = rng.standard_normal((d - 1, _STRUCTURE_RANK)) @ structure / np.sqrt(_STRUCTURE_RANK)
        shifts += rng.standard_normal((d - 1, hidden)) * np.sqrt(np.mean(shifts**2))
        shifts *= rng.lognormal(np.log(0.05), 0.5, (d - 1, 1)) / np.sqrt(np.mean(shifts**2))
        reference = rng.normal(0, 1, hidden)
        vectors = np.vstack([reference, reference + shifts]).astype(np.float32)
        blocks.append(GeneBlock(f"GENE{gene:02d}", vectors, rows.astype(np.int64), (codes + 1).astype(np.int32)))
    return FactoredSubjectMatrix(n, blocks)


def run_pca_benchmark(
    n_subjects: int = 20000,
    n_genes: int = 38,
    hidden: int = 768,
    n_components: int = 512,
    folds: int = 5,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
    exact_max_subjects: int = EXACT_MAX_SUBJECTS,
) -> dict:
    """Synthesize the cohort, run every fold as the asset does, and return sizes, timings, memory and accuracy."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="kb_assets_pca_bench_") as scratch:
        scratch = Path(scratch)
        with _PeakRss() as synthesis_memory:
            started = time.perf_counter()
            covariates = synthetic_covariates(n_subjects, seed)
            matrix = synthetic_factored_cohort(covariates, n_genes, hidden, seed=seed)
            synthesis_s = time.perf_counter() - started
        folds_df = assign_folds(covariates, k=folds, seed=42)
        coder = covariate_coder(covariates)
        pca = ResidualizedPCA(n_components)
        ids = covariates["subject_id"].to_numpy()
        fold_rows = []
        checked = None
        n_rows = 0
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        with _PeakRss() as memory:
            started = fold_started = time.perf_counter()
            with pq.ParquetWriter(scratch / "subject_embeddings_pca.parquet", FOLD_SCORES_SCHEMA) as writer:
                for fit in fit_folds(matrix, covariates, folds_df, coder, pca):
                    for batch in fit.record_batches(ids):
                        writer.write_batch(batch)
                        n_rows += batch.num_rows
                    fit.save(scratch / f"fold-{fit.fold}.npz")
                    scree_plot_png(fit.model.explained_variance_ratio_)
                    summary = fit.summary()
                    summary["seconds"] = time.perf_counter() - fold_started
                    fold_rows.append(summary)
                    if fit.fold == 0 and len(fit.train_rows) <= exact_max_subjects:
                        checked = _CheckedFold(fit.train_rows, fit.coder, fit.model.mean_, fit.n_components,
                                               float(np.sum(fit.train_scores.astype(np.float64) ** 2)))
                    del fit
                    fold_started = time.perf_counter()
            pca_s = time.perf_counter() - started
            cpu_s = _cpu_seconds() - cpu_before
        if checked is not None:  # after the measured loop: its Gram matrix is no part of the PCA's memory
            fold_rows[0].update(_exact_check(matrix, checked, covariates))
        return {
            "n_subjects": n_subjects,
            "n_genes": n_genes,
            "hidden": hidden,
            "n_features": matrix.n_features,
            "dense_gib": n_subjects * matrix.n_features * 4 / _GIB,
            "factored_gib": matrix.nbytes / _GIB,
            "n_assignments": matrix.n_assignments,
            "distinct_vectors": sum(len(matrix.gene_block(g).vectors) for g in range(n_genes)),
            "reference_share": 1 - matrix.n_assignments / (n_subjects * n_genes),
            "n_components_requested": n_components,
            "folds": fold_rows,
            "fold_scheme": folds_df.attrs["scheme"],
            "output_rows": n_rows,
            "synthesis_s": synthesis_s,
            "synthesis_peak_rss_gib": synthesis_memory.peak / _GIB,
            "pca_s": pca_s,
            "cpu_s": cpu_s,
            # Other processes' load slows every pass; the 1-minute load average before and after tells.
            "load_average": (load_before, os.getloadavg()[0]),
            "peak_rss_gib": memory.peak / _GIB,
            "rss_before_gib": memory.before / _GIB,
        }


def format_report(result: dict) -> str:
    """A few lines for the terminal and the README."""
    load = result["load_average"]
    lines = [
        f"subject_embeddings_pca benchmark: {result['n_subjects']:,} subjects × {result['n_genes']} genes × "
        f"{result['hidden']} = {result['n_features']:,} features (dense float32 would be "
        f"{result['dense_gib']:.1f} GiB; factored {result['factored_gib']:.2f} GiB: "
        f"{result['distinct_vectors']:,} distinct vectors, {result['n_assignments']:,} non-reference assignments, "
        f"{result['reference_share']:.0%} of subject × gene pairs reference)",
        f"  {len(result['folds'])} folds ({result['fold_scheme']}), {result['n_components_requested']} components "
        f"requested; synthesis {result['synthesis_s']:.0f} s",
        f"  all folds: {result['pca_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU; peak RSS "
        f"{result['peak_rss_gib']:.2f} GiB ({result['rss_before_gib']:.2f} GiB before: the matrix and covariates); "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after ({os.cpu_count()} CPUs)",
        f"  output rows {result['output_rows']:,}",
        f"  {'fold':>4} {'train':>8} {'held-out':>8} {'k':>4} {'reason':<32} {'seconds':>8} {'vs exact (est.)':>15} "
        f"{'guaranteed ≥':>12} {'measured':>9} {'unseen-level subjects':>22}",
    ]
    for fold in result["folds"]:
        measured = f"{fold['captured_vs_exact_measured']:.5f}" if "captured_vs_exact_measured" in fold else "–"
        lines.append(
            f"  {fold['fold']:>4} {fold['n_train']:>8,} {fold['n_heldout']:>8,} {fold['n_components']:>4} "
            f"{fold['n_components_reason']:<32} {fold['seconds']:>8.0f} {fold['captured_variance_vs_exact']:>15.5f} "
            f"{fold['captured_variance_vs_exact_bound']:>12.5f} {measured:>9} {fold['heldout_with_unseen_levels']:>22}"
        )
    exact = [fold for fold in result["folds"] if "exact_s" in fold]
    if exact:
        lines.append(f"  exact optimum for fold 0 from the {exact[0]['n_train']:,} × {exact[0]['n_train']:,} Gram "
                     f"matrix in {exact[0]['exact_s']:.0f} s")
    return "\n".join(lines)


@dataclass(frozen=True)
class _CheckedFold:
    """What the exact check needs of fold 0, kept after its scores are gone."""

    train_rows: np.ndarray
    coder: CovariateCoder
    mean: np.ndarray
    n_components: int
    captured: float  # ‖P·Xc·Cᵀ‖²: the variance the fitted components capture (sum of squared training scores)


def _exact_check(matrix: FactoredSubjectMatrix, fold: _CheckedFold, covariates: pd.DataFrame) -> dict:
    """Fold 0's captured variance over the exact optimum: the sum of the top-k eigenvalues of the residualized
    training Gram matrix P·Xc·Xcᵀ·P (scale none), in float64.

    With Xc = S·Δ + 1·cᵀ (c = x_ref − mean) the Gram matrix is (cᵀc)·11ᵀ plus, per gene, Δ_g·Δ_gᵀ gathered
    onto its carriers × carriers and Δ_g·c_g onto its carriers' rows and columns: no subjects × features array.
    """
    started = time.perf_counter()
    train = matrix.take_rows(fold.train_rows)
    n = train.n_rows
    shift = train.reference.astype(np.float64) - fold.mean
    gram = np.full((n, n), shift @ shift)
    for gene in range(len(train.gene_ids)):
        block = train.gene_block(gene)
        columns = slice(gene * train.hidden_size, (gene + 1) * train.hidden_size)
        vectors = block.vectors.astype(np.float64)
        deltas = vectors[block.codes] - vectors[0]  # one row per carrier
        gram[np.ix_(block.rows, block.rows)] += deltas @ deltas.T
        cross = deltas @ shift[columns]
        gram[block.rows] += cross[:, None]
        gram[:, block.rows] += cross[None, :]
    basis = np.linalg.svd(fold.coder.transform(covariates.iloc[fold.train_rows]), full_matrices=False)[0]
    side = gram @ basis
    gram -= side @ basis.T
    gram -= basis @ side.T
    gram += basis @ (basis.T @ side) @ basis.T
    k = fold.n_components
    with threadpool_limits(1):  # one thread: faster than two when another process holds a core
        optimum = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[n - k, n - 1], check_finite=False,
                                    overwrite_a=True).sum()
    del gram
    return {"captured_vs_exact_measured": fold.captured / optimum, "exact_s": time.perf_counter() - started}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
