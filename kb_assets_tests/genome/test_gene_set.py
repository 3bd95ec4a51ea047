from pathlib import Path

import pytest

from kb_assets.errors import InputError
from kb_assets.genome import load_annotation, read_gene_set, resolve_gene_set
from kb_assets_tests.genome.conftest import MINUS1, NCGENE, PLUS1, Gene, Transcript, gene_lines, write_gtf


def test_manifest_order_comments_and_blank_lines(write_gene_set):
    path = write_gene_set(["# immune genes", "NCGENE\tfirst", "", "ENSG00000000001.5", "  MINUS1  \tx\ty"])
    assert read_gene_set(path) == ["NCGENE", "ENSG00000000001.5", "MINUS1"]


def test_gene_listed_twice_names_both_lines(write_gene_set):
    path = write_gene_set(["PLUS1", "MINUS1", "# note", "PLUS1"])
    with pytest.raises(InputError, match=r"PLUS1 on lines 2 and 5: 1 gene\(s\) listed twice"):
        read_gene_set(path)


def test_ensembl_id_listed_with_two_versions_is_a_repeat(write_gene_set):
    path = write_gene_set(["ENSG00000000001.5", "ENSG00000000001"])
    with pytest.raises(InputError, match="ENSG00000000001 on lines 2 and 3"):
        read_gene_set(path)


def test_a_plain_list_without_header_is_read_from_its_first_line(write_gene_set):
    path = write_gene_set(["PLUS1", "# a comment", "MINUS1", "ENSG00000000003"], header=None)
    entries = read_gene_set(path)
    assert entries == ["PLUS1", "MINUS1", "ENSG00000000003"]
    assert entries.lines == [1, 3, 4]


@pytest.mark.parametrize("header", ["gene", "Gene\tnote", "GENE_ID", "symbol\tweight"])
def test_a_header_line_is_told_apart_from_a_gene(write_gene_set, header):
    entries = read_gene_set(write_gene_set(["PLUS1", "MINUS1"], header=header))
    assert entries == ["PLUS1", "MINUS1"]
    assert entries.lines == [2, 3]


def test_a_gene_named_like_a_word_is_still_a_gene(write_gene_set):
    # Symbols that start like a header word (GENE1, IDH1, NAMPT) are genes, not headers.
    assert read_gene_set(write_gene_set(["GENE1", "IDH1", "NAMPT"], header=None)) == ["GENE1", "IDH1", "NAMPT"]


def test_unresolved_entries_are_named_by_file_line(gtf_path: Path, write_gene_set):
    path = write_gene_set(["# immune genes", "PLUS1", "", "NOPE1", "plus1"])
    with pytest.raises(InputError) as caught:
        resolve_gene_set(read_gene_set(path), load_annotation(gtf_path), source=path)
    message = str(caught.value)
    assert "2 not in GENCODE v46: NOPE1 (line 5 of gene_set.tsv), plus1 (line 6 of gene_set.tsv; did you mean " \
           "PLUS1?)" in message
    assert "is a header" not in message


def test_an_unknown_header_is_reported_as_a_gene_on_line_1_with_the_header_hint(gtf_path: Path, write_gene_set):
    path = write_gene_set(["PLUS1"], header="my_genes\tnote")
    with pytest.raises(InputError, match=r"my_genes \(line 1 of gene_set.tsv\).*if line 1 of gene_set.tsv is a "
                                         r"header, name its first column `gene`"):
        resolve_gene_set(read_gene_set(path), load_annotation(gtf_path), source=path)


def test_same_gene_by_name_and_by_id_named_by_file_line(gtf_path: Path, write_gene_set):
    path = write_gene_set(["PLUS1", "MINUS1", "ENSG00000000001"], header=None)
    with pytest.raises(InputError, match=r"PLUS1 \(line 1 of gene_set.tsv\) and ENSG00000000001 \(line 3 of "
                                         r"gene_set.tsv\) are the same gene"):
        resolve_gene_set(read_gene_set(path), load_annotation(gtf_path))


def test_a_manifest_of_comments_and_a_header_lists_no_genes(write_gene_set):
    with pytest.raises(InputError, match="the gene set lists no genes"):
        read_gene_set(write_gene_set(["# nothing yet"]))


def test_resolution_keeps_manifest_order_and_matches_ids_without_version(gtf_path: Path):
    resolved = resolve_gene_set(["NCGENE", "ENSG00000000001", "ENSG00000000002.99"], load_annotation(gtf_path))
    columns = ["gene_order", "query", "gene_id", "gene_name", "chrom", "start", "end", "strand"]
    assert resolved[columns].values.tolist() == [
        [0, "NCGENE", "ENSG00000000003.1", "NCGENE", "chr2", 2, 12, "+"],
        [1, "ENSG00000000001", "ENSG00000000001.5", "PLUS1", "chr1", 10, 50, "+"],
        [2, "ENSG00000000002.99", "ENSG00000000002.3", "MINUS1", "chr1", 25, 58, "-"],
    ]
    assert resolved.transcript_id.tolist() == ["ENST00000000031.1", "ENST00000000011.2", "ENST00000000021.1"]


def test_every_missing_entry_is_listed_in_one_error(gtf_path: Path):
    with pytest.raises(InputError) as caught:
        resolve_gene_set(["PLUS1", "NOPE1", "ENSG00000000077", "plus1"], load_annotation(gtf_path), source="gs.tsv")
    message = str(caught.value)
    assert message.startswith("gs.tsv: 3 not in GENCODE v46: NOPE1 (entry 2), ENSG00000000077 (entry 3), ")
    assert "plus1 (entry 4; did you mean PLUS1?)" in message


def _annotation_with_twin(tmp_path: Path):
    twin = Gene("ENSG00000000009.1", "PLUS1", "chr2", "-", 3, 12, [Transcript("ENST00000000091.1", [(3, 12)])])
    return load_annotation(write_gtf(tmp_path / "a.gtf", [*gene_lines(PLUS1), *gene_lines(MINUS1), *gene_lines(twin)]))


def test_ambiguous_name_lists_candidates_and_asks_for_the_id(tmp_path: Path):
    with pytest.raises(InputError) as caught:
        resolve_gene_set(["MINUS1", "PLUS1"], _annotation_with_twin(tmp_path))
    message = str(caught.value)
    assert "PLUS1 names 2 genes: ENSG00000000001.5 (protein_coding, chr1:11-50), " in message
    assert "ENSG00000000009.1 (protein_coding, chr2:3-12); write the Ensembl id of the one you mean" in message


def test_ambiguous_name_resolves_by_id(tmp_path: Path):
    resolved = resolve_gene_set(["ENSG00000000009"], _annotation_with_twin(tmp_path))
    assert resolved[["gene_id", "gene_name", "chrom"]].values.tolist() == [["ENSG00000000009.1", "PLUS1", "chr2"]]


def test_a_symbol_naming_a_pseudoautosomal_gene_and_its_par_y_copy_resolves_to_the_chrx_copy(tmp_path: Path):
    """GENCODE's convention: SHOX on chrX (ENSG00000185960.14) and its chrY copy (ENSG00000185960.14_PAR_Y)."""
    chrx = Gene("ENSG00000185960.14", "SHOX", "chrX", "+", 10, 40, [Transcript("ENST00000381192.10", [(10, 40)])])
    chry = Gene("ENSG00000185960.14_PAR_Y", "SHOX", "chrY", "+", 10, 40,
                [Transcript("ENST00000381192.10_PAR_Y", [(10, 40)])])
    annotation = load_annotation(write_gtf(tmp_path / "par.gtf", [*gene_lines(chrx), *gene_lines(chry),
                                                                  *gene_lines(PLUS1)]))
    resolved = resolve_gene_set(["PLUS1", "SHOX"], annotation)
    assert resolved[["gene_id", "chrom"]].values.tolist() == [["ENSG00000000001.5", "chr1"],
                                                               ["ENSG00000185960.14", "chrX"]]
    assert resolved.attrs["par_y_copies_left_out"] == ["SHOX"]
    # By id, the chrY copy stays reachable.
    by_id = resolve_gene_set(["ENSG00000185960_PAR_Y"], annotation)
    assert by_id["chrom"].tolist() == ["chrY"] and by_id.attrs["par_y_copies_left_out"] == []


def test_same_gene_by_name_and_by_id(gtf_path: Path):
    with pytest.raises(InputError, match=r"PLUS1 \(entry 1\) and ENSG00000000001 \(entry 3\) are the same gene"):
        resolve_gene_set(["PLUS1", "MINUS1", "ENSG00000000001"], load_annotation(gtf_path))


def _chosen(tmp_path: Path, transcripts: list[Transcript]) -> tuple[str, str]:
    gene = Gene("ENSG00000000010.1", "CHOICE", "chr1", "+", 1, 60, transcripts)
    resolved = resolve_gene_set(["CHOICE"], load_annotation(write_gtf(tmp_path / "c.gtf", gene_lines(gene))))
    return resolved.transcript_id[0], resolved.transcript_choice[0]


def test_ensembl_canonical_tag_wins(tmp_path: Path):
    transcripts = [
        Transcript("T1", [(1, 60)], [(1, 60)], tags=["MANE_Select"]),
        Transcript("T2", [(1, 10)], tags=["basic", "Ensembl_canonical"]),
    ]
    assert _chosen(tmp_path, transcripts) == ("T2", "ensembl_canonical")


def test_mane_select_without_canonical_tag(tmp_path: Path):
    transcripts = [
        Transcript("T1", [(1, 60)], [(1, 60)], tags=["basic"]),
        Transcript("T2", [(1, 10)], [(1, 9)], tags=["MANE_Plus_Clinical", "MANE_Select"]),
        Transcript("T3", [(1, 20)], [(1, 18)], tags=["MANE_Plus_Clinical"]),  # longer CDS than T2
    ]
    assert _chosen(tmp_path, transcripts) == ("T2", "mane_select")


def test_longest_cds_without_tags(tmp_path: Path):
    transcripts = [
        Transcript("T1", [(1, 60)], [(20, 30)]),  # longest transcript, CDS 11
        Transcript("T2", [(1, 15), (21, 40)], [(5, 15), (21, 30)]),  # CDS 21
    ]
    assert _chosen(tmp_path, transcripts) == ("T2", "longest_cds")


def test_longest_transcript_without_cds_ties_to_smallest_id(tmp_path: Path):
    transcripts = [
        Transcript("T3", [(1, 10), (21, 30)]),  # spliced 20 over a 30-base span
        Transcript("T1", [(1, 12)]),
        Transcript("T2", [(31, 50)]),  # spliced 20
    ]
    assert _chosen(tmp_path, transcripts) == ("T2", "longest_transcript")


def test_gene_set_of_the_fixture_resolves_all_three(gtf_path: Path, write_gene_set):
    entries = read_gene_set(write_gene_set([MINUS1.gene_name, NCGENE.gene_id, PLUS1.gene_name]))
    resolved = resolve_gene_set(entries, load_annotation(gtf_path))
    assert resolved.gene_name.tolist() == ["MINUS1", "NCGENE", "PLUS1"]
    assert resolved.transcript_choice.tolist() == ["ensembl_canonical"] * 3
