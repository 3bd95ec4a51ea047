"""Lineage audits: which inputs, model, tokenizer and settings made a table, and whether it is still current.

Every materialization writes a lineage row (asset, partition, run, versions, facts such as tokenizer_version and
rc_mode, the input files' hashes, and the run and data version of each upstream it read). An audit walks those
rows from an output back to the input files, and flags each place where something upstream is newer than what
the output was built from, or where an input file's content has changed since.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kb_assets.storage import Warehouse

# The facts an audit reader asks about first ("which model, tokenizer and settings made this table?").
KEY_FACTS = ("recipe_id", "model_id", "model_sha256", "tokenizer_version", "rc_mode", "pooling_strategy",
             "region_to_gene", "window_tokens", "window_stride", "dtype", "genes_to_subject", "haplotype_mode",
             "reference_version", "annotation_version", "n_components", "order")


@dataclass
class LineageNode:
    asset: str
    partition: str | None
    run_id: str | None
    materialized_at: str
    code_version: str | None
    data_version: str | None
    facts: dict
    inputs: dict
    stale: list[str] = field(default_factory=list)
    upstream: list["LineageNode"] = field(default_factory=list)
    run_status: str | None = None

    @property
    def label(self) -> str:
        return self.asset if self.partition is None else f"{self.asset}[{self.partition}]"

    def walk(self):
        yield self
        for node in self.upstream:
            yield from node.walk()


def trace(
    warehouse: Warehouse,
    asset: str,
    partition: str | None = None,
    *,
    run_status: Callable[[str], str | None] = lambda run_id: None,
) -> LineageNode:
    """The lineage tree of an asset's newest materialization (of `partition`), staleness flagged at every node.

    `run_status(run_id)` may look runs up in the Dagster instance.
    """
    record = warehouse.latest_lineage(asset, partition)
    if record is None:
        where = f"{asset}[{partition}]" if partition else asset
        raise LookupError(f"{where} has no lineage in {warehouse.catalog_path}: it was never materialized there")
    latest = warehouse.latest_lineage_all()
    return _node(warehouse, record, latest, input_hasher(warehouse), run_status)


def input_hasher(warehouse: Warehouse) -> Callable[[str], str | None]:
    """The current sha256 of an input file, None when it is gone; remembered in the warehouse by size and mtime,
    so an unchanged input is not read again (a touch costs one read and then matches again)."""
    def current_hash(path: str) -> str | None:
        return warehouse.input_sha256(path) if Path(path).is_file() else None

    return current_hash


def stale_reasons(record: dict, latest: dict, current_hash: Callable[[str], str | None]) -> list[str]:
    """Why a lineage row no longer describes the present: an input file changed (or vanished) since, or an
    upstream asset (partition) was materialized again with other data. Empty when it is current."""
    reasons = []
    for name, used in record["inputs"].items():
        now = current_hash(used["path"])
        if now is None:
            reasons.append(f"input {name} ({used['path']}) no longer exists")
        elif now != used["sha256"]:
            reasons.append(f"input {name} changed since: {used['path']} is now sha256:{now[:12]}, "
                           f"this was built from sha256:{used['sha256'][:12]}")
    for used in record["upstream"]:
        newest = latest.get((used["asset"], used["partition"]))
        if newest is not None and newest["data_version"] != used["data_version"]:
            label = used["asset"] if used["partition"] is None else f"{used['asset']}[{used['partition']}]"
            reasons.append(
                f"{label} is newer than what this was built from: materialized "
                f"{newest['materialized_at'].isoformat(timespec='seconds')} by run {newest['run_id'][:8]} "
                f"(data version {newest['data_version']}, built from {used['data_version']})"
            )
    return reasons


def _node(warehouse, record, latest, current_hash, run_status) -> LineageNode:
    node = LineageNode(
        asset=record["asset"], partition=record["partition"], run_id=record["run_id"],
        materialized_at=record["materialized_at"].isoformat(timespec="seconds"),
        code_version=record["code_version"], data_version=record["data_version"],
        facts=record["facts"], inputs=record["inputs"], run_status=run_status(record["run_id"]),
        stale=stale_reasons(record, latest, current_hash),
    )
    for used in record["upstream"]:
        built_from = (warehouse.lineage_of_run(used["asset"], used["partition"], used["run_id"])
                      or latest.get((used["asset"], used["partition"])))
        if built_from is not None:
            node.upstream.append(_node(warehouse, built_from, latest, current_hash, run_status))
    return node


def summary(root: LineageNode) -> dict[str, list]:
    """Each key fact with every distinct value found anywhere in the tree (two values: a mixed lineage)."""
    found: dict[str, list] = {}
    for node in root.walk():
        for key in KEY_FACTS:
            if key in node.facts and node.facts[key] not in found.setdefault(key, []):
                found[key].append(node.facts[key])
    return {key: values for key, values in found.items() if values}


def to_json(root: LineageNode) -> str:
    return json.dumps({"summary": summary(root), "stale": _stale_lines(root), "lineage": asdict(root)},
                      indent=2, default=str)


def _stale_lines(root: LineageNode) -> list[str]:
    return [f"{node.label}: {reason}" for node in root.walk() for reason in node.stale]


def format_text(root: LineageNode) -> str:
    lines = [f"Lineage of {root.label}", ""]
    lines.append("Made with:")
    for key, values in summary(root).items():
        shown = ", ".join(str(v) for v in values)
        lines.append(f"  {key:<20} {shown}" + ("   <- more than one value in this lineage" if len(values) > 1 else ""))
    lines.append("")
    stale = _stale_lines(root)
    lines.append("Status: " + ("STALE" if stale else "current: nothing upstream is newer, no input has changed"))
    lines += [f"  ! {line}" for line in stale]
    lines += ["", "Upstream:"]
    printed: set[tuple[str, str | None, str | None]] = set()
    _tree(root, "", "", lines, printed)
    return "\n".join(lines)


def _tree(node: LineageNode, prefix: str, connector: str, lines: list[str], printed: set) -> None:
    """One node and its upstream; `connector` is "" for the root, else the branch drawn before the label."""
    status = f", {node.run_status}" if node.run_status else ""
    lines.append(f"{prefix}{connector}{node.label}  run {str(node.run_id)[:8]}{status}  {node.materialized_at}  "
                 f"code {node.code_version}  data {node.data_version}" + ("  STALE" if node.stale else ""))
    inner = prefix + {"": "", "├─ ": "│  ", "└─ ": "   "}[connector]
    key = (node.asset, node.partition, node.run_id)
    if key in printed:
        lines.append(f"{inner}   (its upstream as above)")
        return
    printed.add(key)
    for name, used in node.inputs.items():
        lines.append(f"{inner}   input {name}: {used['path']} sha256:{used['sha256'][:12]}")
    for index, child in enumerate(node.upstream):
        _tree(child, inner, "└─ " if index == len(node.upstream) - 1 else "├─ ", lines, printed)
