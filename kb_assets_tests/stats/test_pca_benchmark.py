from pathlib import Path

from kb_assets.benchmarks.pca import format_report, run_pca_benchmark


def test_small_benchmark_runs_every_fold_and_cleans_up(tmp_path: Path):
    result = run_pca_benchmark(n_subjects=240, n_genes=2, hidden=16, n_components=8, folds=5, workdir=tmp_path)
    assert (result["n_features"], result["n_components"], result["output_rows"]) == (32, 8, 5 * 240)
    assert len(result["fold_s"]) == 5 and result["pca_s"] > 0 and result["peak_rss_gib"] > 0
    assert result["fold_scheme"] == "StratifiedGroupKFold"
    assert "240 subjects × 32 features" in format_report(result)
    assert list(tmp_path.iterdir()) == []
