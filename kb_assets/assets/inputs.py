"""The recipe's input files as observable source assets: each one's data version is its content hash, so Dagster
itself knows when an input changed, marks exactly the assets (and partitions) built from it stale, and automation
conditions react to it.

An observation hashes a file once per size and modification time (the hash is remembered in the warehouse), so
observing a 100 GB VCF every minute costs a stat, and touching a file without changing its bytes changes nothing.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import warnings
from pathlib import Path

import dagster as dg

from kb_assets.assets.encoders import recipe_encoders
from kb_assets.encoders.identity import checkpoint_files
from kb_assets.errors import InputError
from kb_assets.settings import Recipe

GROUP = "inputs"
# How often the observe_inputs sensor looks at the files (a stat each, a hash only when one changed).
OBSERVE_CRON = "* * * * *"
DESCRIPTIONS = {
    "fasta": "the reference genome FASTA (recipe inputs.fasta)",
    "gtf": "the gene annotation GTF (recipe inputs.gtf)",
    "gene_set": "the ordered gene-set manifest (recipe inputs.gene_set)",
    "vcf": "the cohort's variants, bgzipped and indexed (recipe inputs.vcf)",
    "covariates": "the covariates table (recipe inputs.covariates)",
    "checkpoint": "the model weights of the checkpoint folder (recipe inputs.checkpoint)",
    "tokenizer": "the checkpoint's tokenizer.json (recipe inputs.checkpoint)",
    "brain": "the brain feature table (recipe inputs.brain)",
}


def input_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def input_names(recipe: Recipe) -> list[str]:
    """The inputs this recipe names (vcf, covariates and brain are optional; each further encoder adds its
    checkpoint and tokenizer)."""
    optional = {"vcf": recipe.inputs.vcf, "covariates": recipe.inputs.covariates, "brain": recipe.inputs.brain}
    names = [name for name in DESCRIPTIONS if name not in optional or optional[name] is not None]
    return names + [f"{name}_{part}" for name in recipe.inputs.compare_with for part in ("checkpoint", "tokenizer")]


def input_path(recipe: Recipe, name: str) -> Path:
    """The file an input stands for (a checkpoint: its weights file; a tokenizer: the file that defines it)."""
    encoders = {encoder.input(part): (encoder, part) for encoder in recipe_encoders(recipe)
                for part in ("checkpoint", "tokenizer")}
    if name in encoders:
        encoder, part = encoders[name]
        weights, tokenizer = checkpoint_files(encoder.checkpoint)
        return weights if part == "checkpoint" else tokenizer
    return Path(getattr(recipe.inputs, name))


def description(name: str) -> str:
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    encoder, _, part = name.rpartition("_")
    return f"the {part} of encoder {encoder} (recipe inputs.compare_with.{encoder})"


def build_input_sources(recipe: Recipe) -> list:
    names = input_names(recipe)
    # multi_observable_source_asset is marked beta in Dagster 1.13: said once here rather than on every command.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        observe = dg.multi_observable_source_asset(
            specs=[dg.AssetSpec(input_key(name), group_name=GROUP, description=description(name),
                                automation_condition=dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON))
                   for name in names],
            can_subset=True, required_resource_keys={"warehouse"},
        )

    @observe
    def input_files(context: dg.AssetExecutionContext):
        """Hash each input file the recipe names: its data version is its content."""
        store = context.resources.warehouse.get()
        for key in context.selected_asset_keys:
            name = key.path[-1]
            try:
                path = input_path(recipe, name)
            except InputError as err:
                yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion("missing"),
                                       metadata={"missing": str(err)})
                continue
            if not path.is_file():
                yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion("missing"),
                                       metadata={"path": dg.MetadataValue.path(str(path)), "missing": True})
                continue
            sha256 = store.input_sha256(path)
            yield dg.ObserveResult(asset_key=key, data_version=dg.DataVersion(sha256), metadata={
                "path": dg.MetadataValue.path(str(path)), "sha256": sha256, "bytes": path.stat().st_size})

    return [input_files]
