"""Benchmark of the gene–brain alignment: every fold of `align_fold` on a synthetic cohort.

Defaults: 20,000 subjects × 512 gene PCs (float32, as ``subject_embeddings_pca`` stores them) × 100 brain
features, 10 brain PCs, 3 canonical components, a binary label, 5 site-grouped folds, 1,000 permutations per
fold. Per fold it times the observed analysis (``align_fold``: cca-zoo grid search and refit, scikit-learn
ridge) and a permutation null of as many draws within the same blocks (``permutation_null``: the code path
align_fold runs for its draws), in wall and CPU seconds (CPU seconds are the fairer figure on shared cores), and
reports the null's cost per permutation against one plain refit (the observed analysis does exactly the work a
plain permutation refit would). Peak RSS is the process's; the traced peak counts the arrays the computation
allocates.

    .venv/bin/python -m kb_assets.benchmarks.alignment [--subjects N] [--permutations M] [--folds K]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from kb_assets.stats.alignment import AlignmentSettings, FoldData, align_fold, permutation_null
from kb_assets.stats.permutation import block_permutations, exchangeability_blocks, permutation_p_values

_GIB = 1 << 30
_COVARIATES = 15  # intercept, age, sex, 10 ancestry PCs, 2 batch indicators
_SITES = 20


def run_alignment_benchmark(
    n_subjects: int = 20000,
    n_gene_pcs: int = 512,
    n_brain_features: int = 100,
    n_permutations: int = 1000,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """Synthesize the cohort, run every fold, and return sizes, timings and memory peaks."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    design = np.column_stack([np.ones(n_subjects), rng.standard_normal((n_subjects, _COVARIATES - 1))])
    genes = rng.standard_normal((n_subjects, n_gene_pcs), dtype=np.float32)
    genes *= np.sqrt(np.linspace(20.0, 1.0, n_gene_pcs, dtype=np.float32))  # a decaying PCA spectrum
    brain = rng.standard_normal((n_subjects, n_brain_features)) + design @ rng.normal(0, 0.3, (_COVARIATES,
                                                                                              n_brain_features))
    brain[:, :5] += 0.1 * genes[:, :1]  # a weak planted association
    label = np.where(genes[:, 1] * 0.1 + rng.standard_normal(n_subjects) > 0, "case", "control")
    site = rng.integers(0, _SITES, n_subjects)
    fold_of = site % folds  # site-grouped folds
    ids = np.array([f"S{i:06d}" for i in range(n_subjects)])
    synthesis_s = time.perf_counter() - started
    settings = AlignmentSettings(n_permutations=n_permutations, seed=seed)

    cpu_before = _cpu_seconds()
    load_before = os.getloadavg()[0]
    tracemalloc.start()
    fold_rows = []
    total_started = time.perf_counter()
    for fold in range(folds):
        train, heldout = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        data = FoldData(
            fold=fold, train_ids=ids[train], heldout_ids=ids[heldout],
            genes_train=genes[train], genes_heldout=genes[heldout],
            design_train=design[train], design_heldout=design[heldout],
            brain_train=brain[train], brain_heldout=brain[heldout],
            blocks=exchangeability_blocks(site[train]), label_train=label[train], label_heldout=label[heldout],
        )
        observed_started, observed_cpu = time.perf_counter(), _cpu_seconds()
        observed = align_fold(data, AlignmentSettings(n_permutations=0, seed=seed))
        observed_s, observed_cpu = time.perf_counter() - observed_started, _cpu_seconds() - observed_cpu
        # As many draws within the same blocks as align_fold makes, refitted by the code path it runs.
        perms = np.vstack(list(block_permutations(data.blocks, n_permutations, seed)))
        null_started, null_cpu = time.perf_counter(), _cpu_seconds()
        null = permutation_null(data, settings, perms)
        null_s, null_cpu = time.perf_counter() - null_started, _cpu_seconds() - null_cpu
        fold_rows.append({
            "fold": fold,
            "n_train": len(train),
            "n_heldout": len(heldout),
            "observed_s": observed_s,
            "observed_cpu_s": observed_cpu,
            "null_s": null_s,
            "null_cpu_s": null_cpu,
            "heldout_r1": float(observed.heldout_r[0]),
            "p_value_r1": float(permutation_p_values(observed.heldout_r[0], null["heldout_r"][:, 0])[0]),
            "label_auc": float(observed.prediction["value"].iloc[0]),
            "p_value_auc": float(permutation_p_values(observed.prediction["value"].iloc[0], null["label"])[0]),
        })
    total_s = time.perf_counter() - total_started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cpu_s = _cpu_seconds() - cpu_before
    observed_s = sum(r["observed_s"] for r in fold_rows)
    null_s = sum(r["null_s"] for r in fold_rows)
    observed_cpu = sum(r["observed_cpu_s"] for r in fold_rows)
    null_cpu = sum(r["null_cpu_s"] for r in fold_rows)
    return {
        "n_subjects": n_subjects,
        "n_gene_pcs": n_gene_pcs,
        "n_brain_features": n_brain_features,
        "n_brain_components": settings.n_brain_components,
        "n_canonical_components": settings.n_canonical_components,
        "n_permutations": n_permutations,
        "folds": folds,
        "synthesis_s": synthesis_s,
        "analysis_s": observed_s + null_s,
        "observed_s": observed_s,
        "null_s": null_s,
        "seconds_per_permutation_fold": null_s / (n_permutations * folds),
        "observed_cpu_s": observed_cpu,
        "null_cpu_s": null_cpu,
        "cpu_ms_per_permutation_fold": 1000 * null_cpu / (n_permutations * folds),
        "plain_refits_per_batched_permutation": observed_cpu / (null_cpu / n_permutations),
        "measured_s": total_s,
        "cpu_s": cpu_s,
        "load_average_before": load_before,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB,
        "traced_peak_gib": traced_peak / _GIB,
        "folds_detail": fold_rows,
    }


def format_report(report: dict) -> str:
    lines = [
        f"Gene–brain alignment benchmark: {report['n_subjects']:,} subjects × {report['n_gene_pcs']} gene PCs × "
        f"{report['n_brain_features']} brain features ({report['n_brain_components']} brain PCs, "
        f"{report['n_canonical_components']} canonical components), {report['folds']} folds × "
        f"{report['n_permutations']:,} permutations",
        f"  observed analysis (cca-zoo grid search + ridge), all folds: {report['observed_s']:.1f} s wall, "
        f"{report['observed_cpu_s']:.1f} CPU s",
        f"  permutation nulls, all folds: {report['null_s']:.1f} s wall, {report['null_cpu_s']:.1f} CPU s "
        f"({report['cpu_ms_per_permutation_fold']:.1f} CPU ms per permutation and fold)",
        f"  analysis in all: {report['analysis_s']:.1f} s wall, {report['cpu_s']:.0f} CPU s (load average "
        f"{report['load_average_before']:.1f} before)",
        f"  one plain refit (the observed analysis) costs {report['plain_refits_per_batched_permutation']:.0f}× "
        "the CPU time of one batched permutation",
        f"  peak RSS {report['peak_rss_gib']:.2f} GiB, traced peak {report['traced_peak_gib']:.2f} GiB",
        "  per fold: " + "; ".join(
            f"{r['fold']}: {r['n_train']:,}/{r['n_heldout']:,} subjects, observed {r['observed_s']:.1f} s, "
            f"null {r['null_s']:.1f} s, r1 {r['heldout_r1']:.3f} (p {r['p_value_r1']:.3g}), AUC "
            f"{r['label_auc']:.3f} (p {r['p_value_auc']:.3g})"
            for r in report["folds_detail"]),
    ]
    return "\n".join(lines)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20000)
    parser.add_argument("--gene-pcs", type=int, default=512)
    parser.add_argument("--brain-features", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    print(format_report(run_alignment_benchmark(args.subjects, args.gene_pcs, args.brain_features,
                                                args.permutations, args.folds)))


if __name__ == "__main__":
    main()
