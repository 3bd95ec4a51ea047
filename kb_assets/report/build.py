"""The report of one recipe, assembled from its warehouse (catalog views, lineage audit) and its Dagster instance
(materialization metadata, asset checks). Sections are declared in SECTIONS; one appears only when its assets
were materialized or its views exist, so sections for tables to come (evaluation) need no code beyond a line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from kb_assets.report.instance import (
    CheckResult,
    Markdown,
    Materialization,
    latest_check_results,
    latest_materialization,
    materialized_partitions,
)
from kb_assets.report.pca import fold_lines, fold_variance_ratios, scree_per_fold_png
from kb_assets.report.tables import TablePreview, catalog_views, format_cell, preview
from kb_assets.settings import Recipe
from kb_assets.storage import Warehouse, quote_identifier

# The outputs whose lineage the report audits (kb-assets audit <asset>).
AUDITED = ("subject_embeddings_pca", "rc_stability", "pooling_comparison", "bpe_token_report")
PCA_FOLDS_VIEW = "subject_embeddings_pca_folds"  # one row per fold: components kept, why, the saved model
_LONG_VALUE = 240  # metadata values longer than this are cut in the report


@dataclass(frozen=True)
class SectionSpec:
    anchor: str
    title: str
    intro: str
    assets: tuple[str, ...] = ()
    views: tuple[str, ...] = ()  # view-name prefixes; a view belongs to the first section whose prefix it has
    rows: int = 25


SECTIONS = (
    SectionSpec("gene-set", "Gene set", "The ordered gene set, each entry resolved to one annotation gene and "
                "the transcript whose regions are embedded.", ("gene_set",), ("gene_set",), rows=200),
    SectionSpec("subjects", "Subjects and folds", "Who is analysed: subjects in both the VCF and the covariates "
                "table, those left out, and the cross-validation folds.", ("covariates", "cv_folds",
                                                                           "subject_matrix"),
                ("covariates_left_out",)),
    SectionSpec("embeddings", "Tokens and embeddings", "Per chromosome: token lengths, and the cosine between "
                "each sequence's forward and reverse-complement embeddings before averaging.",
                ("tokenized_genes", "gene_embeddings")),
    SectionSpec("rc-stability", "RC stability", "How much reverse-complement averaging moves each gene.",
                ("rc_stability",), ("rc_stability",)),
    SectionSpec("pooling", "Pooling comparison", "Mean vs CLS vs max pooling: agreement between strategies, "
                "half-split stability and subject-distance rank agreement.", ("pooling_comparison",),
                ("pooling_comparison",)),
    SectionSpec("bpe", "BPE token report", "Token lengths, bp per token by region type, exon vs intron "
                "enrichment and token boundaries against the codon frame.", ("bpe_token_report",),
                ("bpe_token_report",)),
    SectionSpec("pca", "Residualized PCA", "Per fold, fitted on the training subjects only: residualize on the "
                "covariates, then PCA; held-out subjects projected with that fit.", ("subject_embeddings_pca",),
                (PCA_FOLDS_VIEW,)),
    SectionSpec("encoders", "Encoders side by side", "Per gene, how each encoder's vectors move under reverse "
                "complement and between poolings, and how far the encoders agree on which subjects are alike.",
                ("encoder_comparison",), ("encoder_comparison",)),
    SectionSpec("evaluation", "Gene–brain evaluation", "Per fold, fitted on training subjects only: ridge CCA "
                "between gene PCs and brain PCs, label prediction and leave-one-gene-out attribution, with "
                "block-permutation p-values.", ("brain_features", "gene_brain_alignment",
                                                "gene_brain_alignment_by_encoder"),
                ("gene_brain_alignment", "brain_features")),
)


@dataclass(frozen=True)
class Figure:
    caption: str
    png: bytes


@dataclass
class Panel:
    """One materialization shown in a section: its markdown metadata (plots, small tables) and scalar values."""

    title: str
    materialization: Materialization
    markdown: list[tuple[str, Markdown]]
    values: list[tuple[str, str]]


@dataclass
class Section:
    anchor: str
    title: str
    intro: str
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[TablePreview] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)


@dataclass(frozen=True)
class AuditStatus:
    asset: str
    stale: list[str]
    facts: dict[str, list]


@dataclass
class Report:
    recipe_id: str
    recipe_path: str
    warehouse: str
    generated_at: datetime
    audits: list[AuditStatus]
    sections: list[Section]
    checks: list[CheckResult]
    other_tables: dict[str, int]


def audit_status(auditor, asset: str) -> AuditStatus | None:
    """The lineage audit of an asset, as `kb-assets audit` reports it; None when it was never materialized."""
    from kb_assets.audit import stale_lines, summary

    try:
        root = auditor.trace(asset)
    except LookupError:
        return None
    return AuditStatus(asset, stale_lines(root), summary(root))


def build_report(recipe: Recipe, instance: dg.DagsterInstance, defs: dg.Definitions) -> Report:
    from kb_assets.audit import Auditor

    warehouse = Warehouse(recipe.warehouse.root)
    auditor = Auditor(instance, defs, warehouse, recipe)
    views = catalog_views(warehouse) if warehouse.catalog_path.exists() else {}
    claimed: set[str] = set()
    sections = []
    # Each further encoder's assets and views carry its name (kb_assets.assets.encoders): shown beside the primary's.
    encoders = ["", *recipe.inputs.compare_with]
    for spec in SECTIONS:
        section = Section(spec.anchor, spec.title, spec.intro)
        prefixes = [f"{name}_{view}" if name else view for name in encoders for view in spec.views]
        # Summaries first, then the shorter (main) names.
        for view in sorted(views, key=lambda v: ("summary" not in v, len(v), v)):
            if view not in claimed and any(view.startswith(prefix) for prefix in prefixes):
                claimed.add(view)
                section.tables.append(preview(warehouse, view, views[view], spec.rows))
        for asset in (f"{name}/{asset}" if name else asset for name in encoders for asset in spec.assets):
            section.panels += _panels(instance, asset, recipe.reference.chromosomes)
        if spec.anchor == "pca":
            _add_fold_fits(section, warehouse, views)
        shown = [table.name for table in section.tables]
        for panel in section.panels:
            # A markdown table that repeats one of the asset's tables previewed above goes; plots stay.
            if any(name.startswith(panel.materialization.asset) for name in shown):
                panel.markdown = [(key, text) for key, text in panel.markdown if "](data:image/" in text]
        if section.tables or section.panels:
            sections.append(section)
    return Report(
        recipe_id=recipe.recipe_id, recipe_path=str(recipe.source), warehouse=str(warehouse.root),
        generated_at=datetime.now(timezone.utc),
        audits=[status for asset in AUDITED if (status := audit_status(auditor, asset))],
        sections=sections, checks=latest_check_results(instance, defs.resolve_asset_graph().asset_check_keys),
        other_tables={view: rows for view, rows in views.items() if view not in claimed},
    )


def _panels(instance: dg.DagsterInstance, asset: str, chromosomes: list[str]) -> list[Panel]:
    partitions = materialized_partitions(instance, asset, chromosomes)
    found = [latest_materialization(instance, asset, p) for p in partitions or [None]]
    return [_panel(m) for m in found if m is not None]


def _panel(materialization: Materialization) -> Panel:
    title = materialization.asset + (f" [{materialization.partition}]" if materialization.partition else "")
    markdown, values = [], []
    for key, value in materialization.metadata.items():
        if isinstance(value, Markdown):
            markdown.append((key, value))
        elif not key.startswith("dagster/") or key == "dagster/row_count":
            text = format_cell(value) if not isinstance(value, (dict, list)) else json.dumps(value, default=str)
            values.append((key, text if len(text) <= _LONG_VALUE else text[:_LONG_VALUE] + " …"))
    return Panel(title, materialization, markdown, values)


def _add_fold_fits(section: Section, warehouse: Warehouse, views: dict[str, int]) -> None:
    """What each fold kept and why (the PCA metadata), and the scree per fold (the models the folds view names)."""
    pca = next((p.materialization for p in section.panels if p.materialization.asset == "subject_embeddings_pca"),
               None)
    lines = fold_lines(pca.metadata) if pca else []
    limited = [line for line in lines if "limited by" in line]
    if limited:
        section.notes.append(f"{len(limited)} of {len(lines)} folds kept fewer components than requested: "
                             f"{'; '.join(limited)}.")
    if PCA_FOLDS_VIEW in views:
        with warehouse.catalog(read_only=True) as connection:
            folds = connection.execute(f"select * from {quote_identifier(PCA_FOLDS_VIEW)}").df()
        if {"fold", "model"} <= set(folds.columns):
            ratios = fold_variance_ratios(dict(zip(folds["fold"], folds["model"])))
            section.figures.append(Figure("explained variance per component, per fold", scree_per_fold_png(ratios)))


def write_report(report: Report, out: str | Path) -> Path:
    """Render the report to one self-contained HTML file (written under a temporary name, then renamed)."""
    from kb_assets.report.render import render_html

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(render_html(report), encoding="utf-8")
    temporary.replace(out)
    return out
