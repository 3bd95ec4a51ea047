"""The project config file (a recipe) → validated settings.

A recipe names every input and every setting of a run. Relative paths are resolved against the recipe's own
folder, so a recipe and its inputs can move together. Unknown keys, bad values and missing input files stop with
one `InputError` naming the recipe, the key and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kb_assets.errors import InputError

RECIPE_ENV = "KB_ASSETS_RECIPE"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_RECIPE = PROJECT_ROOT / "data" / "demo" / "recipe.yaml"

PRIMARY_ASSEMBLY = [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY", "chrM"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Inputs(_Section):
    fasta: Path = Field(description="the reference genome: plain or bgzipped FASTA (the .fai is built if missing)")
    gtf: Path = Field(description="GENCODE or Ensembl GTF, plain or gzipped, with the FASTA's contig names")
    gene_set: Path = Field(description="the ordered gene set: a gene symbol or Ensembl id per line (first column, "
                                       "tab-separated), with or without a header line `gene`")
    checkpoint: Path = Field(description="DNABERT-2 checkpoint folder (config.json, model.safetensors or "
                                         "pytorch_model.bin, tokenizer.json), or a hub id in the local HF cache")
    vcf: Path | None = Field(None, description="the cohort VCF/BCF, bgzipped and indexed (.tbi/.csi), on the "
                                               "FASTA's build")
    covariates: Path | None = Field(None, description="covariates table (CSV, TSV or parquet); name its columns "
                                                      "under covariates.columns")
    compare_with: dict[str, Path] = Field(
        default_factory=dict, description="further encoders side by side, by name (lowercase letters, digits, _): "
                                          "checkpoint folders of any supported family; each gets its own embedding, "
                                          "cohort, diagnostic and evaluation assets, prefixed with its name")
    brain: Path | None = Field(None, description="brain feature table per subject (CSV, TSV or parquet: imaging-"
                                                 "derived phenotypes or a brain model's embedding); turns on the "
                                                 "gene-brain evaluation stage")

    @field_validator("compare_with")
    @classmethod
    def _encoder_names(cls, encoders: dict[str, Path]) -> dict[str, Path]:
        bad = [name for name in encoders if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name == "primary"]
        if bad:
            raise ValueError(f"encoder names must be lowercase letters, digits and _, and not 'primary' (the "
                             f"checkpoint's own name; got {', '.join(bad)})")
        return encoders


class ReferenceSettings(_Section):
    build: str = Field("hg38", description="genome build label, recorded with every output")
    chromosomes: list[str] = Field(default_factory=lambda: list(PRIMARY_ASSEMBLY), min_length=1,
                                   description="the chromosomes embedded, one partition each")

    @field_validator("chromosomes", mode="before")
    @classmethod
    def _numbers_as_names(cls, chromosomes: object) -> object:
        # YAML reads Ensembl's [1, 2, X] as numbers and letters; a chromosome is a name either way.
        if isinstance(chromosomes, list):
            return [str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in chromosomes]
        return chromosomes

    @field_validator("chromosomes")
    @classmethod
    def _unique(cls, chromosomes: list[str]) -> list[str]:
        duplicated = sorted({c for c in chromosomes if chromosomes.count(c) > 1})
        if duplicated:
            raise ValueError(f"listed more than once: {', '.join(duplicated)}")
        return chromosomes


class RegionSettings(_Section):
    mode: Literal["exons", "gene_body", "cds", "promoter"] = Field(
        "exons", description="the sequence embedded per gene (of its chosen transcript)")
    promoter_upstream: int = Field(2000, ge=0, description="promoter mode: bp upstream of the TSS")
    promoter_downstream: int = Field(500, ge=0, description="promoter mode: bp downstream of the TSS")
    max_n_fraction: float = Field(
        0.1, ge=0.0, le=1.0,
        description="regions with a larger share of N (or any non-ACGT base) are reported by a warning check")


class EncoderSettings(_Section):
    device: str = Field("auto", description="where the model runs: auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="inference precision; auto: bfloat16 where the device supports it, else float32")
    # Tiles anchored to reference coordinates: a variant re-embeds only the tiles that hold it.
    tile_bp: int | None = Field(
        2000, ge=50, description="bases each tile of a region counts (tiles are anchored to reference coordinates, "
                                 "so a variant re-embeds only its tile); null: one tile per region")
    tile_context_bp: int = Field(200, ge=0, description="bases on each side of a tile given to the model as "
                                                        "context but not counted")
    window_tokens: int = Field(512, ge=8, le=512, description="tokens per window, [CLS] and [SEP] included")
    window_overlap: int = Field(64, ge=0, description="tokens shared by consecutive windows")
    batch_tokens: int = Field(16384, ge=512, description="padded tokens per forward batch")
    rc: Literal["average", "none"] = Field(
        "average", description="average: the mean of the sequence's and its reverse complement's vectors")
    pooling: Literal["mean", "cls", "max"] = Field("mean", description="tokens → region vector")
    tokenizer_sha256: str | None = Field(
        None, description="pin the tokenizer: materializations fail when tokenizer.json's sha256 differs")
    compile: bool = Field(False, description="torch.compile the layers: ~1 min up front, then 12-15% faster")

    @model_validator(mode="after")
    def _overlap_fits(self) -> "EncoderSettings":
        # Two slots of every window hold [CLS] and [SEP]; the overlap must leave each window new tokens.
        if self.window_overlap >= self.window_tokens - 2:
            raise ValueError(f"window_overlap ({self.window_overlap}) must be below window_tokens - 2")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return device


class AggregationSettings(_Section):
    region_to_gene: Literal["mean", "length_weighted"] = Field(
        "length_weighted", description="region vectors → gene vector")
    genes_to_subject: Literal["concat", "mean", "max"] = Field(
        "concat", description="gene vectors → subject vector (concat: in gene-set order)")


class HaplotypeSettings(_Section):
    mode: Literal["alt_if_present", "phased"] = Field(
        "alt_if_present", description="alt_if_present: one sequence with every ALT allele carried; phased: two "
                                      "haplotypes, their vectors averaged")
    missing_genotypes: Literal["ref", "exclude_subject"] = Field(
        "ref", description="a missing genotype reads as the reference, or leaves the subject out")
    filters: list[str] = Field(default_factory=lambda: ["PASS"],
                               description="VCF FILTER values whose records are applied")
    max_ref_mismatch_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="more VCF REF alleles unlike the FASTA than this stops the run "
                                          "(another build)")


class CovariateColumns(_Section):
    subject_id: str = Field("subject_id", description="column of subject ids (as the VCF names samples)")
    age: str = Field("age", description="column of ages")
    sex: str = Field("sex", description="column of sexes")
    batch: str = Field("batch", description="column of batches (residualized out)")
    site: str | None = Field("site", description="column of sites: folds keep a site together (null: none)")
    label: str | None = Field("label", description="column of labels: folds are stratified by it (null: none)")
    pcs: list[str] = Field(default_factory=lambda: [f"pc{i}" for i in range(1, 11)],
                           description="columns of ancestry PCs (residualized out)")


class CovariateSettings(_Section):
    columns: CovariateColumns = Field(CovariateColumns(), description="your table's column names")
    missing: Literal["fail", "drop"] = Field(
        "fail", description="a missing covariate value stops the run (fail) or leaves the subject out (drop)")


class FoldSettings(_Section):
    k: int = Field(5, ge=2, description="cross-validation folds")
    seed: int = Field(42, description="seed of the fold assignment and the PCA")


class PcaSettings(_Section):
    n_components: int = Field(512, ge=1, description="components per fold; at most the rank the training "
                                                    "subjects allow (subjects minus covariate columns)")
    order: Literal["residualize_then_pca", "pca_then_residualize"] = Field(
        "residualize_then_pca", description="residualize on the covariates before or after the PCA")
    scale: Literal["none", "standardize"] = Field(
        "none", description="none: a covariance PCA (features centered only); standardize: every feature scaled to "
                            "unit variance first, which lets a gene varying through a few carriers dominate")


class BrainColumns(_Section):
    subject_id: str = Field("subject_id", description="the brain table's subject id column")
    features: list[str] | None = Field(None, description="the feature columns, in order; null: every other column")


class EvaluationSettings(_Section):
    columns: BrainColumns = BrainColumns()
    missing: Literal["fail", "drop"] = Field("fail", description="a missing brain value stops the run, or drops "
                                                                  "the subject (counted)")
    n_brain_components: int = Field(10, ge=1, description="brain PCs kept per fold (fitted on training subjects)")
    n_canonical_components: int = Field(3, ge=1, description="canonical components of the gene-brain CCA")
    n_permutations: int = Field(1000, ge=0, description="permutations (within site and batch blocks) per fold")
    attribution_permutations: int = Field(
        0, ge=0, description="permutations for each gene's leave-one-gene-out test (0: the change only)")
    predict_brain_pcs: bool = Field(False, description="also predict each brain PC from the gene PCs")
    seed: int = Field(0, description="seed of the permutations")

    @model_validator(mode="after")
    def _attribution_pairs_with_the_null(self) -> "EvaluationSettings":
        # Each gene's drop is tested against the full fit's first draws, so there must be as many.
        if self.attribution_permutations > self.n_permutations:
            raise ValueError(f"attribution_permutations ({self.attribution_permutations}) exceeds n_permutations "
                             f"({self.n_permutations}); set it to at most n_permutations")
        return self


class WarehouseSettings(_Section):
    root: Path = Field(Path("warehouse"), description="where the tables, the DuckDB catalog and this recipe's "
                                                      "Dagster history (dagster/) go")


class ScheduleSettings(_Section):
    cron: str = Field("0 2 * * 0", description="cron of the chromosome_refresh schedule (off until turned on)")


class Recipe(_Section):
    recipe_id: str = Field(description="names this recipe in the lineage, run tags and report")
    inputs: Inputs
    reference: ReferenceSettings = ReferenceSettings()
    regions: RegionSettings = RegionSettings()
    encoder: EncoderSettings = EncoderSettings()
    aggregation: AggregationSettings = AggregationSettings()
    haplotypes: HaplotypeSettings = HaplotypeSettings()
    covariates: CovariateSettings = CovariateSettings()
    folds: FoldSettings = FoldSettings()
    pca: PcaSettings = PcaSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _brain_needs_concatenated_genes(self) -> "Recipe":
        # Attribution and gene loadings need each gene's own features; mean and max pool all genes into the same H.
        if self.inputs.brain is not None and self.aggregation.genes_to_subject != "concat":
            raise ValueError(
                f"aggregation.genes_to_subject: {self.aggregation.genes_to_subject} cannot be evaluated against "
                "inputs.brain (leave-one-gene-out attribution and per-gene loadings need each gene's own "
                "features); set aggregation.genes_to_subject: concat to evaluate against inputs.brain, or remove "
                "inputs.brain")
        return self

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections: a code/data version that changes exactly when they do."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def checked(self) -> "Recipe":
        """This recipe, after checking that its input files exist (what an asset does before reading them)."""
        self.check_inputs()
        return self

    def check_inputs(self) -> None:
        """Every input the recipe names exists; raised as one error listing all missing ones."""
        named = [(f"inputs.{name}", path) for name, path in self.inputs.model_dump().items()
                 if not isinstance(path, dict)]
        named += [(f"inputs.compare_with.{name}", path) for name, path in self.inputs.compare_with.items()]
        missing = [f"{key} = {path}" for key, path in named if path is not None and not Path(path).exists()]
        if missing:
            raise InputError(
                self.source,
                "; ".join(missing),
                f"{len(missing)} input path(s) do not exist",
                "correct the path(s) in the recipe (relative paths are relative to the recipe file)"
                + (", or run `kb-assets demo init` for the demo inputs" if self.source == DEMO_RECIPE else ""),
            )


RECIPE_ID_TAG = "kb_assets/recipe_id"
RECIPE_PATH_TAG = "kb_assets/recipe"


def recipe_run_tags(recipe: Recipe) -> dict[str, str]:
    """The tags that say which recipe a run belongs to (shown in the UI's runs list)."""
    return {RECIPE_ID_TAG: recipe.recipe_id, RECIPE_PATH_TAG: str(recipe.source)}


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    def resolve(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = Path(os.path.expanduser(path))
        return path if path.is_absolute() else (base / path).resolve()

    inputs = recipe.inputs.model_copy(update={
        k: {name: resolve(path) for name, path in v.items()} if isinstance(v, dict) else resolve(v)
        for k, v in recipe.inputs.model_dump().items()})
    warehouse = recipe.warehouse.model_copy(update={"root": resolve(recipe.warehouse.root)})
    return recipe.model_copy(update={"inputs": inputs, "warehouse": warehouse})


def _valid_keys(location: tuple) -> list[str]:
    """The keys the recipe section holding `location` accepts (empty when it is not a section)."""
    model: type[BaseModel] = Recipe
    for part in location[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return [name for name, field in model.model_fields.items() if not field.exclude]


def _describe(error: dict) -> str:
    if not error["loc"] and error["type"] == "value_error":  # a check across sections: its message names the keys
        return str(error["ctx"]["error"])
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = _valid_keys(error["loc"])
        nearest = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1)
        if nearest:
            return f"{location}: unknown key (did you mean `{nearest[0]}`?)"
        return f"{location}: unknown key (valid keys: {', '.join(valid)})" if valid else f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: required key is missing"
    return f"{location}: {error['msg']}"


def load_recipe(path: str | os.PathLike | None = None, *, require_inputs: bool = True) -> Recipe:
    """Read and validate a recipe; `path` defaults to $KB_ASSETS_RECIPE, then the demo recipe.

    `require_inputs=False` skips the input-file check: loading the Dagster definitions (to show the graph)
    needs only the settings, not the data.
    """
    path = Path(path or os.environ.get(RECIPE_ENV) or DEMO_RECIPE).expanduser().resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, None, "recipe file not found",
                         f"create it or set {RECIPE_ENV} to an existing recipe") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise InputError(path, where, f"not valid YAML ({getattr(err, 'problem', err)})",
                         "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise InputError(path, None, "expected a mapping of settings at the top level", "see data/demo/recipe.yaml")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise InputError(
            path,
            "; ".join(problems),
            f"{len(problems)} invalid setting(s)",
            "correct the key(s); `kb-assets recipe new PATH` writes a recipe listing every key with its allowed "
            "values",
        ) from None
    recipe = _resolve_paths(recipe, path.parent).model_copy(update={"source": path})
    if require_inputs:
        recipe.check_inputs()
    return recipe
