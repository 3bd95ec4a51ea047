"""Smoke test of the dedup benchmark (`kb-assets bench dedup`) at tiny sizes: its numbers must be consistent."""

import cyvcf2
import numpy as np
import pytest

from kb_assets.benchmarks.dedup import format_report, run_dedup_benchmark, synthesize_cohort
from kb_assets.cli import main
from kb_assets.genome import REGION_DTYPES, ReferenceGenome, reverse_complement


def test_synthetic_cohort_matches_its_fasta_and_its_reported_allele_counts(tmp_path):
    cohort = synthesize_cohort(tmp_path, n_subjects=30, n_genes=3, variants_per_kb=5.0, seed=1)
    regions = cohort.regions
    assert list(regions.columns) == list(REGION_DTYPES) and set(regions.strand) <= {"+", "-"}
    with ReferenceGenome(cohort.fasta) as genome:
        for region in regions.itertuples():
            forward = genome.fetch(region.chrom, region.start, region.end)
            assert region.sequence == (reverse_complement(forward) if region.strand == "-" else forward)
    copies = [int((record.genotype.array()[:, :2] == 1).sum()) for record in cyvcf2.VCF(str(cohort.vcf))]
    assert copies == cohort.allele_counts.tolist() and len(copies) > 0
    assert cohort.variants_per_kb == pytest.approx(sum(copies) / (60 * cohort.region_bp) * 1000)


@pytest.mark.parametrize("seed", [0, 3])
def test_reported_numbers_are_consistent(tmp_path, seed):
    result = run_dedup_benchmark(n_subjects=40, n_genes=3, variants_per_kb=5.0, seed=seed, workdir=tmp_path)
    regions, subjects = result["n_regions"], result["n_subjects"]
    assert result["subject_region_pairs"] == subjects * regions and result["vcf_records"] > 0
    for mode, ploidy in (("alt_if_present", 1), ("phased", 2)):
        numbers = result["modes"][mode]
        distinct = numbers["distinct_sequences"]
        assert numbers["units"] == subjects * regions * ploidy
        # Every region's reference sequence is counted, carried or not; at most one more per unit.
        assert regions <= distinct <= numbers["units"] + regions
        assert numbers["ratio"] == pytest.approx(distinct / (subjects * regions))
        assert numbers["strand_pass_ratio"] == pytest.approx(2 * numbers["ratio"])
        assert numbers["ratio_per_unit"] == pytest.approx(distinct / numbers["units"])
        assert sum(numbers["per_region"]) <= distinct and 1 <= numbers["per_region_max"] <= subjects * ploidy
        assert sum(row["regions"] for row in numbers["by_length"]) == regions
        assert numbers["counts"]["subjects"] == subjects and numbers["counts"]["unique_sequences"] == distinct
        assert np.all(np.array(numbers["per_region"]) >= 1)  # every region: at least one sequence among subjects
    assert format_report(result).count("forward passes ≤ 5%") == 2
    assert not list(tmp_path.iterdir())  # the synthetic files are removed


def test_a_cohort_without_variants_costs_one_sequence_per_region(tmp_path):
    result = run_dedup_benchmark(n_subjects=25, n_genes=2, variants_per_kb=0.0, workdir=tmp_path)
    assert result["vcf_records"] == 0 and result["variants_per_kb"] == 0.0
    for numbers in result["modes"].values():
        assert numbers["distinct_sequences"] == result["n_regions"]
        assert numbers["non_reference_sequences"] == 0 and numbers["reference_unit_fraction"] == 1.0
        assert numbers["per_region"] == [1] * result["n_regions"]
    assert "alt_if_present: " in format_report(result) and "holds" in format_report(result)


def test_cli_runs_the_dedup_benchmark(capsys):
    assert main(["bench", "dedup", "--subjects", "8", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "dedup benchmark: 8 subjects" in out and "phased:" in out
