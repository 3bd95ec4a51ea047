"""What every asset does after computing: write its tables with their facts, catalog them, report metadata."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kb_assets.errors import InputError
from kb_assets.settings import Recipe
from kb_assets.storage import INPUTS_FACT, Warehouse

# Facts of the reference and annotation that every materialization repeats, so any one table names them.
REFERENCE_FACTS = ("reference_version",)
ANNOTATION_FACTS = ("annotation_version",)


def _plain(value):
    """numpy scalars as Python ones: Dagster's metadata serializer and JSON take only the latter."""
    return value.item() if isinstance(value, np.generic) else value


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as stored: categoricals as plain strings, since their dictionaries differ between partitions."""
    plain = frame.assign(**{c: frame[c].astype(str) for c in frame.columns
                            if isinstance(frame[c].dtype, pd.CategoricalDtype)})
    return pa.Table.from_pandas(plain, preserve_index=False)


def gene_chromosomes(warehouse: Warehouse, recipe: Recipe, datasets: Sequence[str]) -> list[str]:
    """The recipe's chromosomes that hold gene-set genes; InputError unless every dataset has their partitions."""
    genes = warehouse.read_table("gene_set", columns=["chrom"]).to_pandas()
    chromosomes = [c for c in recipe.reference.chromosomes if c in set(genes["chrom"])]
    for dataset in datasets:
        missing = [c for c in chromosomes if not warehouse.has_partition(dataset, c)]
        if missing:
            asset = dataset.split("/")[0]
            raise InputError(warehouse.dataset_dir(dataset), f"partitions {', '.join(missing)}",
                             f"{asset} has not been materialized for chromosomes with gene-set genes",
                             f"materialize {asset} for {', '.join(missing)} (e.g. a backfill)")
    return chromosomes


def png_markdown(png: bytes, caption: str) -> dg.MarkdownMetadataValue:
    """A PNG inline in markdown metadata, which the Dagster UI renders as a picture."""
    return dg.MetadataValue.md(f"![{caption}](data:image/png;base64,{base64.b64encode(png).decode()})\n\n{caption}")


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def upstream_facts(warehouse: Warehouse, dataset: str, keys: Sequence[str], partition: str | None = None) -> dict:
    """Selected facts written into an upstream dataset's file (empty when it was never materialized here)."""
    facts = warehouse.read_facts(dataset, partition)
    return {key: facts[key] for key in keys if key in facts}


def input_facts(warehouse: Warehouse, **paths: str | os.PathLike | None) -> dict[str, dict[str, str]]:
    """{name: {path, sha256}} of the input files an asset read (None paths left out), for `publish(inputs=…)`."""
    return {name: {"path": str(path), "sha256": warehouse.input_sha256(path)}
            for name, path in paths.items() if path is not None}


def publish(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    recipe: Recipe,
    tables: Mapping[str, pa.Table],
    *,
    facts: Mapping[str, object],
    metadata: Mapping[str, object] | None = None,
    inputs: Mapping[str, Mapping[str, str]] | None = None,
    check_results: Sequence[dg.AssetCheckResult] = (),
) -> dg.MaterializeResult:
    """Write `tables` (the first is the asset's main table) atomically, catalog them, and report them to Dagster.

    `facts` are the settings and versions that made the output (tokenizer_version, rc_mode …) and `inputs` the
    input files it read ({name: {path, sha256}}): both go into every written file's own metadata and into the
    materialization metadata. Dagster's event log keeps the run, the code and data versions and what each upstream
    was when this ran (data provenance); the audit reads them there.
    """
    partition = partition_of(context)
    all_facts = {"recipe_id": recipe.recipe_id, **{k: _plain(v) for k, v in facts.items()}}
    if inputs:
        all_facts[INPUTS_FACT] = {name: dict(used) for name, used in inputs.items()}
    paths, data_version, all_facts = warehouse.write_outputs(tables, partition, all_facts)
    warehouse.register_views(list(tables))
    shapes = {name: (table.schema, table.num_rows) for name, table in tables.items()}
    return report(shapes, paths, data_version, all_facts, metadata, check_results)


def written_shapes(paths: Mapping[str, Path]) -> dict[str, tuple[pa.Schema, int]]:
    """(schema, rows) of written parquet files, from their footers (for outputs written batch by batch)."""
    return {name: (pq.read_schema(path), pq.read_metadata(path).num_rows) for name, path in paths.items()}


def report(shapes: Mapping[str, tuple[pa.Schema, int]], paths: Mapping[str, Path], data_version: str,
           facts: Mapping[str, object], metadata: Mapping[str, object] | None = None,
           check_results: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
    """The materialization of datasets written with `facts` (shown as metadata, except the write id); `shapes`
    gives each dataset's (schema, rows), the first being the asset's main table."""
    main_dataset = next(iter(shapes))
    main_schema, main_rows = shapes[main_dataset]
    shown_facts = {k: v for k, v in facts.items() if k not in ("inputs", "write_id")}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": main_rows,
            "dagster/column_schema": column_schema(main_schema),
            "path": dg.MetadataValue.path(str(paths[main_dataset])),
            **{f"rows/{name}": rows for name, (_, rows) in shapes.items() if name != main_dataset},
            **shown_facts,
            **({"inputs": dg.MetadataValue.json(facts["inputs"])} if "inputs" in facts else {}),
            **{k: _plain(v) for k, v in (metadata or {}).items()},
        },
        data_version=dg.DataVersion(data_version),
        check_results=list(check_results),
    )
