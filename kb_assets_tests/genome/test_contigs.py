"""Contig naming across the recipe's chromosomes, the FASTA, the GTF and the VCF: every mismatch in one error."""

from pathlib import Path

import pysam
import pytest

from kb_assets.errors import InputError
from kb_assets.genome import (
    ReferenceGenome,
    check_contig_names,
    check_genes_on_chromosomes,
    load_annotation,
    resolve_gene_set,
)
from kb_assets_tests.genome.conftest import (
    CHR1,
    CHR2,
    CHR3,
    NCGENE,
    PLUS1,
    gene_lines,
    write_fasta,
    write_gtf,
    write_vcf,
)

SNV = ("chr1", 33, "G", "A", ["0/1"])


def _ensembl_fasta(tmp_path: Path) -> ReferenceGenome:
    return ReferenceGenome(write_fasta(tmp_path / "ensembl.fa", {"1": CHR1, "2": CHR2, "MT": CHR3}))


def _ensembl_gtf(tmp_path: Path) -> Path:
    return write_gtf(tmp_path / "ensembl.gtf",
                     [line.replace("chr", "", 1) for line in [*gene_lines(PLUS1), *gene_lines(NCGENE)]])


def test_every_mismatch_with_an_ensembl_fasta_is_reported_at_once(tmp_path, gtf_path):
    # The FASTA alone writes '1': the recipe, the GTF and the VCF write 'chr1'. One run names all three.
    vcf = write_vcf(tmp_path / "cohort.vcf.gz", ["s1"], [SNV])
    with pytest.raises(InputError) as caught:
        check_contig_names(_ensembl_fasta(tmp_path), ["chr1", "chr2"], gtf_path, vcf)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'ensembl.fa'}: contig names: 3 contig naming mismatches with the "
                              "FASTA: (1) reference.chromosomes: the recipe names chromosomes differently from the "
                              "FASTA ('chr1' → '1', 'chr2' → '2'); (2) annotation.gtf: the GTF and the FASTA "
                              "(ensembl.fa) name contigs differently: the GTF writes 'chr1' where the FASTA writes "
                              "'1'; (3) cohort.vcf.gz: the VCF and the FASTA (ensembl.fa) name contigs differently: "
                              "the VCF writes 'chr1' where the FASTA writes '1'. Fix: ")
    fix = message.split(". Fix: ", 1)[1]
    assert fix.startswith("rename the FASTA's contigs, one change that fixes all of them: sed -E "
                          "'s/^>MT\\b/>chrM/; s/^>([0-9]+|X|Y)\\b/>chr\\1/' ensembl.fa > renamed.fa, then point "
                          "inputs.fasta at the renamed file; or fix each: (1) list reference.chromosomes as the "
                          "FASTA names them: [1, 2]; (2) use a GTF and FASTA from the same source")
    assert ("(3) rename the VCF's contigs to the FASTA's: printf 'chr1 1\\nchr2 2\\n' > map.txt && bcftools "
            "annotate --rename-chrs map.txt -Oz -W -o renamed.vcf.gz cohort.vcf.gz") in fix


def test_gtf_and_vcf_mismatches_together_without_renaming_the_fasta(tmp_path, fasta_path):
    # The recipe agrees with the FASTA, so renaming the FASTA is no fix: each file is named with its own.
    vcf = write_vcf(tmp_path / "cohort.vcf.gz", ["s1"], [("1", 33, "G", "A", ["0/1"])], contigs={"1": 60, "2": 20})
    with pytest.raises(InputError) as caught:
        check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chr2"], _ensembl_gtf(tmp_path), vcf)
    message = str(caught.value)
    assert "2 contig naming mismatches with the FASTA: (1) ensembl.gtf: the GTF and the FASTA (genome.fa)" in message
    assert ("(2) cohort.vcf.gz: the VCF and the FASTA (genome.fa) name contigs differently: the VCF writes '1'"
            in message)
    assert ". Fix: (1) use a GTF and FASTA from the same source" in message
    assert "sed -E 's/^MT\\t/chrM\\t/; s/^([0-9]+|X|Y)\\t/chr\\1\\t/'" in message
    assert "printf '1 chr1\\n2 chr2\\n' > map.txt" in message
    assert "renamed.fa" not in message


def test_a_vcf_without_contig_lines_is_named_by_its_index(tmp_path, fasta_path, gtf_path):
    plain = tmp_path / "cohort.vcf"
    plain.write_text("##fileformat=VCFv4.2\n"
                     '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                     "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n"
                     "1\t33\t.\tG\tA\t.\tPASS\t.\tGT\t0/1\n")
    vcf = pysam.tabix_index(str(plain), preset="vcf", force=True)
    with pytest.raises(InputError, match=r"cohort.vcf.gz: contig names: the VCF and the FASTA \(genome.fa\) name "
                                         r"contigs differently: the VCF writes '1' where the FASTA writes 'chr1'"):
        check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chr2"], gtf_path, vcf)


def test_agreeing_inputs_pass(tmp_path, fasta_path, gtf_path):
    vcf = write_vcf(tmp_path / "cohort.vcf.gz", ["s1"], [SNV])
    check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chr2"], gtf_path, vcf)
    check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chr2"], load_annotation(gtf_path))


def test_recipe_chromosomes_spelled_unlike_the_fasta(tmp_path, gtf_path):
    # The GTF agrees with the recipe here too, but the recipe is the only mismatch asked about: one error.
    with pytest.raises(InputError, match=r"ensembl.fa: reference.chromosomes: the recipe names chromosomes "
                                         r"differently from the FASTA \('chr1' → '1', 'chr2' → '2', 'chrM' → 'MT'\)\. "
                                         r"Fix: list reference.chromosomes as the FASTA names them: \[1, 2, MT\]"):
        check_contig_names(_ensembl_fasta(tmp_path), ["chr1", "chr2", "chrM"],
                           write_gtf(tmp_path / "scaffold.gtf", [gene_lines(PLUS1)[0].replace("chr1", "KI270706.1")]))


def test_parsed_gtf_mismatch_counts_its_contigs(tmp_path, fasta_path):
    with pytest.raises(InputError) as caught:
        check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chr2"], load_annotation(_ensembl_gtf(tmp_path)))
    message = str(caught.value)
    assert "ensembl.gtf: contig names: the GTF and the FASTA (genome.fa) name contigs differently" in message
    assert "the GTF writes '1' where the FASTA writes 'chr1' (2 contig(s): 1, 2)" in message
    assert "sed -E 's/^MT\\t/chrM\\t/; s/^([0-9]+|X|Y)\\t/chr\\1\\t/'" in message


def test_chromosome_missing_from_fasta(fasta_path, gtf_path):
    with pytest.raises(InputError, match=r"chrX: chromosome\(s\) not in the FASTA \(it has chr1, chr2, chr3\)"):
        check_contig_names(ReferenceGenome(fasta_path), ["chr1", "chrX"], gtf_path)


def test_gene_on_a_chromosome_not_listed(fasta_path, gtf_path):
    annotation = load_annotation(gtf_path)
    genes = resolve_gene_set(["MINUS1", "PLUS1", "NCGENE"], annotation)
    check_genes_on_chromosomes(annotation, ["chr1", "chr2", "chr3"], genes)
    with pytest.raises(InputError, match=r"NCGENE \(chr2\): 1 gene-set gene\(s\) lie on chromosomes not in"):
        check_genes_on_chromosomes(annotation, ["chr1"], genes)
