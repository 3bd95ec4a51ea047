"""The HTML report of a recipe (`kb-assets report`) and the per-fold PCA facts the run summary prints."""

from kb_assets.report.build import SECTIONS, Report, SectionSpec, audit_status, build_report, write_report
from kb_assets.report.instance import CheckResult, Materialization, latest_check_results, latest_materialization
from kb_assets.report.pca import fold_lines, fold_variance_ratios, scree_per_fold_png

__all__ = [
    "SECTIONS",
    "CheckResult",
    "Materialization",
    "Report",
    "SectionSpec",
    "audit_status",
    "build_report",
    "fold_lines",
    "fold_variance_ratios",
    "latest_check_results",
    "latest_materialization",
    "scree_per_fold_png",
    "write_report",
]
