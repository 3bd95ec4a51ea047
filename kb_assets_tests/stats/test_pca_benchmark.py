from pathlib import Path

from kb_assets.benchmarks.pca import format_report, run_pca_benchmark


def test_small_benchmark_runs_every_fold_checks_exactness_and_cleans_up(tmp_path: Path):
    result = run_pca_benchmark(n_subjects=600, n_genes=3, hidden=16, n_components=8, workdir=tmp_path)
    assert (result["n_features"], result["output_rows"], result["fold_scheme"]) == (48, 5 * 600,
                                                                                    "StratifiedGroupKFold")
    assert [fold["n_components"] for fold in result["folds"]] == [8] * 5
    assert result["pca_s"] > 0 and result["peak_rss_gib"] > 0
    assert 0.3 < result["reference_share"] < 0.99  # most subject × gene pairs carry the reference
    assert sum(fold["heldout_with_unseen_levels"] for fold in result["folds"]) > 0  # batch ≈ site
    measured = result["folds"][0]["captured_vs_exact_measured"]
    assert measured >= 0.999 and result["folds"][0]["captured_variance_vs_exact"] <= measured + 1e-5
    report = format_report(result)
    assert "600 subjects × 3 genes × 16 = 48 features" in report and "exact optimum for fold 0" in report
    assert list(tmp_path.iterdir()) == []
