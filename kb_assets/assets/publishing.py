"""What every asset does after computing: write its tables, catalog them, record lineage, report metadata."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from kb_assets.errors import InputError
from kb_assets.settings import Recipe
from kb_assets.storage import Warehouse, content_version

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


def upstream_facts(warehouse: Warehouse, asset: str, keys: Sequence[str], partition: str | None = None) -> dict:
    """Selected facts from the newest lineage row of an upstream asset (empty when it never ran here)."""
    record = warehouse.latest_lineage(asset, partition)
    facts = record["facts"] if record else {}
    return {key: facts[key] for key in keys if key in facts}


def lineage_upstream(warehouse: Warehouse, upstream: Sequence[tuple[str, str | None]]) -> list[dict]:
    """Run id and versions of each upstream asset (partition) as it stands now: what this output read."""
    found = []
    for asset, partition in upstream:
        record = warehouse.latest_lineage(asset, partition)
        if record is not None:
            found.append({
                "asset": asset,
                "partition": partition,
                "run_id": record["run_id"],
                "data_version": record["data_version"],
                "code_version": record["code_version"],
                "materialized_at": record["materialized_at"].isoformat(),
            })
    return found


def publish(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    recipe: Recipe,
    tables: Mapping[str, pa.Table],
    *,
    facts: Mapping[str, object],
    metadata: Mapping[str, object] | None = None,
    inputs: Mapping[str, object] | None = None,
    upstream: Sequence[tuple[str, str | None]] = (),
    check_results: Sequence[dg.AssetCheckResult] = (),
    data_files: Sequence[Path] = (),
) -> dg.MaterializeResult:
    """Write `tables` (the first is the asset's main table) atomically, then catalog and record them.

    `facts` are the settings and versions that made the output (tokenizer_version, rc_mode …): they go to the
    materialization metadata and to the lineage table, where the audit and downstream assets read them.
    """
    partition = partition_of(context)
    if partition is None:
        paths = warehouse.write_tables(tables)
    else:
        paths = warehouse.write_partitions(tables, partition)
    warehouse.register_views(list(tables))

    main_dataset = next(iter(tables))
    main_table = tables[main_dataset]
    data_version = content_version(*[Path(p) for p in paths.values()], *data_files)
    asset_key = context.asset_key
    code_version = context.assets_def.code_versions_by_key.get(asset_key)
    all_facts = {"recipe_id": recipe.recipe_id, **{k: _plain(v) for k, v in facts.items()}}
    warehouse.record_lineage(
        asset_key.to_user_string(),
        partition=partition,
        run_id=context.run.run_id,
        recipe_id=recipe.recipe_id,
        code_version=code_version,
        data_version=data_version,
        path=str(paths[main_dataset]),
        facts=all_facts,
        inputs=inputs,
        upstream=lineage_upstream(warehouse, upstream),
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": main_table.num_rows,
            "dagster/column_schema": column_schema(main_table.schema),
            "path": dg.MetadataValue.path(str(paths[main_dataset])),
            **{f"rows/{name}": table.num_rows for name, table in tables.items() if name != main_dataset},
            **all_facts,
            **{k: _plain(v) for k, v in (metadata or {}).items()},
        },
        data_version=dg.DataVersion(data_version),
        check_results=list(check_results),
    )
