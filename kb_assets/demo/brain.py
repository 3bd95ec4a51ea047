"""Synthetic brain feature tables for the demo and the tests: a planted gene–brain association, or none.

Features are correlated noise (a few shared latent factors, as imaging-derived phenotypes are), shifted by
covariate effects when covariates are given; in the planted table a few features also depend on per-subject
gene scores (e.g. carrier indicators of variants in two genes). Deterministic by seed. The demo's table
(`write_demo_brain`) plants carriers of exonic variants in SCN2A_demo and CHD8_demo, so the evaluation stage has
something real to find and to attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

_LATENT_FACTORS = 3
DEMO_PLANTED_GENES = ("SCN2A_demo", "CHD8_demo")
DEMO_FEATURES, DEMO_AFFECTED = 12, 3


def null_brain_table(
    subject_ids: Sequence[str],
    n_features: int = 20,
    covariates: np.ndarray | None = None,
    covariate_effect: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """``subject_id`` and ``idp_001``… columns, unrelated to any gene; `covariates` (subjects × numeric columns,
    e.g. age and site indicators) shift every feature by random effects of size `covariate_effect`."""
    return pd.DataFrame({"subject_id": np.asarray(subject_ids, dtype=str),
                         **_named(_features(len(subject_ids), n_features, covariates, covariate_effect, seed))})


def planted_brain_table(
    subject_ids: Sequence[str],
    gene_scores: np.ndarray,
    n_features: int = 20,
    n_affected: int = 3,
    effect: float = 0.5,
    covariates: np.ndarray | None = None,
    covariate_effect: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """The null table plus, on its first `n_affected` features, `effect` SDs per SD of the summed gene scores.

    `gene_scores` is subjects × genes (carrier indicators or any per-subject gene score; two genes in the demo);
    their standardized sum is the planted signal, so with two genes carriers of either gene move together.
    """
    scores = np.asarray(gene_scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[:, None]
    if len(scores) != len(subject_ids):
        raise ValueError(f"gene_scores has {len(scores)} rows for {len(subject_ids)} subjects")
    if not 1 <= n_affected <= n_features:
        raise ValueError(f"n_affected must be between 1 and n_features ({n_features}), got {n_affected}")
    signal = scores.sum(axis=1)
    spread = signal.std()
    if spread == 0:
        raise ValueError("the gene scores are the same for every subject: nothing to plant")
    shift = np.zeros((len(subject_ids), n_features))
    shift[:, :n_affected] = effect * ((signal - signal.mean()) / spread)[:, None]
    features = _features(len(subject_ids), n_features, covariates, covariate_effect, seed, shift)
    return pd.DataFrame({"subject_id": np.asarray(subject_ids, dtype=str), **_named(features)})


def _features(n: int, n_features: int, covariates: np.ndarray | None, covariate_effect: float,
              seed: int, shift: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.5, (_LATENT_FACTORS, n_features))
    features = rng.standard_normal((n, _LATENT_FACTORS)) @ loadings + rng.standard_normal((n, n_features))
    features /= np.sqrt(1.0 + np.sum(loadings**2, axis=0))  # unit variance before covariate effects
    if covariates is not None:
        covariates = np.asarray(covariates, dtype=float).reshape(n, -1)
        spread = covariates.std(axis=0)
        standardized = (covariates - covariates.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        features += standardized @ rng.normal(0.0, covariate_effect, (covariates.shape[1], n_features))
    if shift is not None:
        features += shift
    # Imaging phenotypes come in their own units and offsets (volumes, thicknesses): scale each feature.
    return features * rng.uniform(0.5, 5.0, n_features) + rng.uniform(-10.0, 10.0, n_features)


def _named(features: np.ndarray) -> dict[str, np.ndarray]:
    return {f"idp_{j + 1:03d}": features[:, j] for j in range(features.shape[1])}


def exon_carriers(fasta: Path, gtf: Path, vcf: Path, gene: str) -> set[str]:
    """Subjects carrying any applied variant in the gene's exons (through the pipeline's own domain functions)."""
    from kb_assets.genome import ReferenceGenome, build_haplotypes, extract_regions, load_annotation, resolve_gene_set

    annotation = load_annotation(gtf)
    genome = ReferenceGenome(fasta)
    gene_set = resolve_gene_set([gene], annotation)
    regions = extract_regions(genome, annotation, gene_set, str(gene_set["chrom"].iloc[0]), "exons")
    haplotypes = build_haplotypes(vcf, regions, genome)
    carrying = set(haplotypes.assignments["subject_index"])
    return set(haplotypes.subjects.loc[haplotypes.subjects["subject_index"].isin(carrying), "subject_id"])


def write_demo_brain(path: Path, fasta: Path, gtf: Path, vcf: Path, covariates: Path) -> None:
    """The demo's brain table (TSV): every covariates subject, 12 features, the first 3 driven by carrying exonic
    variants in SCN2A_demo or CHD8_demo (1 SD per SD of the carrier count)."""
    subjects = pd.read_csv(covariates, sep="\t")["subject_id"].astype(str).tolist()
    carried = [exon_carriers(fasta, gtf, vcf, gene) for gene in DEMO_PLANTED_GENES]
    scores = np.array([[subject in genes for genes in carried] for subject in subjects], dtype=float)
    path.parent.mkdir(parents=True, exist_ok=True)
    planted_brain_table(subjects, scores, n_features=DEMO_FEATURES, n_affected=DEMO_AFFECTED, effect=1.0,
                        seed=1).to_csv(path, sep="\t", index=False, float_format="%.6g")
