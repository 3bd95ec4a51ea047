"""The project config file (a recipe) → validated settings.

A recipe names every input and every setting of a run. Relative paths are resolved against the recipe's own
folder, so a recipe and its inputs can move together. Unknown keys, bad values and missing input files stop with
one `InputError` naming the recipe, the key and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    fasta: Path
    gtf: Path
    gene_set: Path
    checkpoint: Path
    vcf: Path | None = None
    covariates: Path | None = None


class ReferenceSettings(_Section):
    build: str = "hg38"
    chromosomes: list[str] = Field(default_factory=lambda: list(PRIMARY_ASSEMBLY), min_length=1)

    @field_validator("chromosomes")
    @classmethod
    def _unique(cls, chromosomes: list[str]) -> list[str]:
        duplicated = sorted({c for c in chromosomes if chromosomes.count(c) > 1})
        if duplicated:
            raise ValueError(f"listed more than once: {', '.join(duplicated)}")
        return chromosomes


class RegionSettings(_Section):
    mode: Literal["exons", "gene_body", "cds", "promoter"] = "exons"
    promoter_upstream: int = Field(2000, ge=0)
    promoter_downstream: int = Field(500, ge=0)
    max_n_fraction: float = Field(0.1, ge=0.0, le=1.0)


class EncoderSettings(_Section):
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    window_tokens: int = Field(512, ge=8, le=512)
    window_overlap: int = Field(64, ge=0)
    batch_tokens: int = Field(16384, ge=512)
    rc: Literal["average", "none"] = "average"
    pooling: Literal["mean", "cls", "max"] = "mean"
    tokenizer_sha256: str | None = None
    compile: bool = False

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
    region_to_gene: Literal["mean", "length_weighted"] = "length_weighted"
    genes_to_subject: Literal["concat", "mean", "max"] = "concat"


class HaplotypeSettings(_Section):
    mode: Literal["alt_if_present", "phased"] = "alt_if_present"
    missing_genotypes: Literal["ref", "exclude_subject"] = "ref"
    filters: list[str] = Field(default_factory=lambda: ["PASS"])
    max_ref_mismatch_fraction: float = Field(0.01, ge=0.0, le=1.0)


class CovariateColumns(_Section):
    subject_id: str = "subject_id"
    age: str = "age"
    sex: str = "sex"
    batch: str = "batch"
    site: str | None = "site"
    label: str | None = "label"
    pcs: list[str] = Field(default_factory=lambda: [f"pc{i}" for i in range(1, 11)])


class CovariateSettings(_Section):
    columns: CovariateColumns = CovariateColumns()
    missing: Literal["fail", "drop"] = "fail"


class FoldSettings(_Section):
    k: int = Field(5, ge=2)
    seed: int = 42


class PcaSettings(_Section):
    n_components: int = Field(512, ge=1)
    order: Literal["residualize_then_pca", "pca_then_residualize"] = "residualize_then_pca"


class WarehouseSettings(_Section):
    root: Path = Path("warehouse")


class ScheduleSettings(_Section):
    cron: str = "0 2 * * 0"


class Recipe(_Section):
    recipe_id: str
    inputs: Inputs
    reference: ReferenceSettings = ReferenceSettings()
    regions: RegionSettings = RegionSettings()
    encoder: EncoderSettings = EncoderSettings()
    aggregation: AggregationSettings = AggregationSettings()
    haplotypes: HaplotypeSettings = HaplotypeSettings()
    covariates: CovariateSettings = CovariateSettings()
    folds: FoldSettings = FoldSettings()
    pca: PcaSettings = PcaSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    source: Path | None = Field(default=None, exclude=True)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections: a code/data version that changes exactly when they do."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def check_inputs(self) -> None:
        """Every input the recipe names exists; raised as one error listing all missing ones."""
        missing = [
            f"inputs.{name} = {path}"
            for name, path in self.inputs.model_dump().items()
            if path is not None and not Path(path).exists()
        ]
        if missing:
            raise InputError(
                self.source,
                "; ".join(missing),
                f"{len(missing)} input path(s) do not exist",
                "correct the path(s) in the recipe (relative paths are relative to the recipe file), "
                "or run `kb-assets demo init` for the demo inputs",
            )


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    def resolve(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = Path(os.path.expanduser(path))
        return path if path.is_absolute() else (base / path).resolve()

    inputs = recipe.inputs.model_copy(update={k: resolve(v) for k, v in recipe.inputs.model_dump().items()})
    warehouse = recipe.warehouse.model_copy(update={"root": resolve(recipe.warehouse.root)})
    return recipe.model_copy(update={"inputs": inputs, "warehouse": warehouse})


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
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
            "correct the key(s); data/demo/recipe.yaml lists every key with its allowed values",
        ) from None
    recipe = _resolve_paths(recipe, path.parent).model_copy(update={"source": path})
    if require_inputs:
        recipe.check_inputs()
    return recipe
