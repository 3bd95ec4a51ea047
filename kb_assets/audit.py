"""Lineage audits, read from Dagster's own records: which inputs, model, tokenizer and settings made a table, and
whether it is still current.

Every materialization's event holds its facts (metadata: tokenizer_version, rc_mode, input hashes …), its code and
data versions, and its data provenance: the event of each upstream asset (and the observation of each input file)
it read. An audit walks those events from an output back to the input files, and flags each place where the code
changed since, an upstream was materialized again with other data (naming the facts that differ), or an input file
changed since (comparing the observation with the file as it is now).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import extract_data_provenance_from_entry

from kb_assets.settings import Recipe
from kb_assets.storage import Warehouse

# The facts an audit reader asks about first ("which model, tokenizer and settings made this table?").
KEY_FACTS = ("recipe_id", "model_id", "model_sha256", "tokenizer_version", "rc_mode", "pooling_strategy",
             "region_to_gene", "tile_bp", "tile_context_bp", "window_tokens", "window_stride", "dtype",
             "device_kind", "genes_to_subject", "haplotype_mode", "reference_version", "annotation_version",
             "n_components", "order", "scale")
_PLAIN = (str, int, float, bool)


@dataclass
class LineageNode:
    asset: str
    partition: str | None
    run_id: str
    materialized_at: str
    code_version: str | None
    data_version: str | None
    facts: dict
    inputs: dict  # input name → {path, sha256} as observed when this was built
    stale: list[str] = field(default_factory=list)
    upstream: list[LineageNode] = field(default_factory=list)
    run_status: str | None = None

    @property
    def label(self) -> str:
        return self.asset if self.partition is None else f"{self.asset}[{self.partition}]"

    def walk(self):
        yield self
        for node in self.upstream:
            yield from node.walk()


@dataclass(frozen=True)
class PartitionStatus:
    partition: str
    status: str  # current | stale | missing
    reasons: tuple[str, ...]


class Auditor:
    """Reads one recipe's Dagster instance with the recipe's definitions (to know assets, code versions and which
    upstream partitions an asset reads)."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions, warehouse: Warehouse, recipe: Recipe):
        self.instance = instance
        self.graph = defs.resolve_asset_graph()
        self.warehouse = warehouse
        self.expected = recipe_facts(recipe)
        self._nodes: dict[int, LineageNode] = {}

    def asset_names(self) -> list[str]:
        return sorted(k.to_user_string() for k in self.graph.materializable_asset_keys)

    def _key(self, asset: str) -> dg.AssetKey:
        key = dg.AssetKey.from_user_string(asset)
        if key not in self.graph.materializable_asset_keys:
            raise LookupError(f"unknown asset {asset!r}; the assets are: {', '.join(self.asset_names())}")
        return key

    def partition_keys(self, asset: str) -> list[str] | None:
        definition = self.graph.get(self._key(asset)).partitions_def
        return definition.get_partition_keys() if definition else None

    def _latest(self, key: dg.AssetKey, partition: str | None, before: int | None = None):
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None,
                                  before_storage_id=before), limit=1).records
        return records[0] if records else None

    def trace(self, asset: str, partition: str | None = None) -> LineageNode:
        """The lineage tree of an asset's newest materialization (of `partition`), staleness flagged at every node.
        LookupError for an unknown asset, a partition the asset lacks, or one never materialized."""
        key = self._key(asset)
        partitions = self.partition_keys(asset)
        if (partition is None) != (partitions is None) or (partition and partition not in partitions):
            need = f"one of {', '.join(partitions)}" if partitions else "no partition"
            raise LookupError(f"{asset} takes {need} (got {partition or 'none'})")
        record = self._latest(key, partition)
        if record is None:
            where = f"{asset}[{partition}]" if partition else asset
            raise LookupError(f"{where} was never materialized in this recipe's Dagster instance")
        return self._node(key, record)

    def partitions(self, asset: str) -> list[PartitionStatus]:
        """Every partition of a partitioned asset: current, stale (with reasons) or missing."""
        key = self._key(asset)
        statuses = []
        for partition in self.partition_keys(asset) or []:
            record = self._latest(key, partition)
            if record is None:
                statuses.append(PartitionStatus(partition, "missing", ()))
                continue
            reasons = tuple(self._node(key, record, deep=False).stale)
            statuses.append(PartitionStatus(partition, "stale" if reasons else "current", reasons))
        return statuses

    def _node(self, key: dg.AssetKey, record, deep: bool = True) -> LineageNode:
        if deep and record.storage_id in self._nodes:
            return self._nodes[record.storage_id]
        entry = record.event_log_entry
        materialization = entry.asset_materialization
        metadata = {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}
        facts = {name: value for name, value in metadata.items()
                 if not name.startswith(("dagster/", "rows/")) and isinstance(value, _PLAIN)
                 and not str(value).startswith("![")}
        node = LineageNode(
            asset=key.to_user_string(), partition=materialization.partition, run_id=entry.run_id,
            materialized_at=datetime.fromtimestamp(entry.timestamp, timezone.utc).isoformat(timespec="seconds"),
            code_version=entry.tags.get("dagster/code_version"), data_version=entry.tags.get("dagster/data_version"),
            facts=facts, inputs={}, run_status=self._run_status(entry.run_id),
        )
        current_code = self.graph.get(key).code_version
        if current_code and node.code_version and current_code != node.code_version:
            changed = [f"{name} {_shown(facts[name])} → {_shown(value)}" for name, value in self.expected.items()
                       if name in facts and facts[name] != value]
            node.stale.append(f"the recipe or code changed since ({'; '.join(changed) or 'code version'}: "
                              f"{node.code_version} → {current_code})")
        provenance = extract_data_provenance_from_entry(entry)
        for parent, storage_id in sorted((provenance.input_storage_ids if provenance else {}).items()):
            if not self.graph.has(parent):
                continue
            if not self.graph.get(parent).is_materializable:
                self._input(node, parent, storage_id, metadata.get("inputs") or {})
            else:
                for used in self._used_records(node.partition, parent, storage_id):
                    child = self._node(parent, used) if deep else self._shallow(parent, used)
                    if deep:
                        node.upstream.append(child)
                    latest = self._latest(parent, child.partition)
                    if latest is not None and latest.storage_id != used.storage_id:
                        newer = self._shallow(parent, latest)
                        if newer.data_version != child.data_version:
                            node.stale.append(_newer_reason(child, newer))
        if deep:
            self._nodes[record.storage_id] = node
        return node

    def _shallow(self, key: dg.AssetKey, record) -> LineageNode:
        return self._node(key, record, deep=False)

    def _used_records(self, partition: str | None, parent: dg.AssetKey, storage_id: int | None):
        """The upstream materializations a materialization read: the same partition, or every partition of a
        partitioned parent read by an unpartitioned asset (as of the provenance's cursor)."""
        parent_partitions = self.graph.get(parent).partitions_def
        before = storage_id + 1 if storage_id is not None else None
        if parent_partitions is None:
            found = self._latest(parent, None, before)
            return [found] if found else []
        wanted = [partition] if partition is not None else parent_partitions.get_partition_keys()
        return [found for p in wanted if (found := self._latest(parent, p, before)) is not None]

    def _input(self, node: LineageNode, key: dg.AssetKey, storage_id: int | None, hashed: dict) -> None:
        """Record the input file a materialization read, and whether the file changed since. The hash is the one the
        asset recorded itself when it read the file (`hashed`, its `inputs` metadata), else that of the latest
        observation before it: a file replaced between the observation and the run is told right."""
        records = self.instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, storage_ids=[storage_id]),
                                                   limit=1).records if storage_id else []
        if not records:
            return
        observation = records[0].event_log_entry.asset_observation
        metadata = {name: getattr(value, "value", value) for name, value in observation.metadata.items()}
        name = key.path[-1]
        recorded = hashed.get(name) or {}
        used = recorded.get("sha256") or records[0].event_log_entry.tags.get("dagster/data_version")
        path = recorded.get("path") or metadata.get("path")
        node.inputs[name] = {"path": path, "sha256": used}
        now = _file_sha256(self.warehouse, path)
        if now is None:
            node.stale.append(f"input {name} ({path}) no longer exists")
        elif now != used:
            node.stale.append(f"input {name} changed since: {path} is now sha256:{now[:12]}, this was built from "
                              f"sha256:{str(used)[:12]}")

    def _run_status(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id)
        return run.status.value if run else "run not in this Dagster instance"


def recipe_facts(recipe: Recipe) -> dict[str, object]:
    """The facts an output made with this recipe now would carry, for naming what a changed recipe changed."""
    return {
        "rc_mode": recipe.encoder.rc, "pooling_strategy": recipe.encoder.pooling, "tile_bp": recipe.encoder.tile_bp,
        "tile_context_bp": recipe.encoder.tile_context_bp, "window_tokens": recipe.encoder.window_tokens,
        "region_to_gene": recipe.aggregation.region_to_gene, "genes_to_subject": recipe.aggregation.genes_to_subject,
        "haplotype_mode": recipe.haplotypes.mode, "region_mode": recipe.regions.mode,
        "n_components_requested": recipe.pca.n_components, "order": recipe.pca.order, "recipe_id": recipe.recipe_id,
    }


def _file_sha256(warehouse: Warehouse, path: str | None) -> str | None:
    return warehouse.input_sha256(path) if path and Path(path).is_file() else None


def _newer_reason(used: LineageNode, newer: LineageNode) -> str:
    changed = [f"{key} {_shown(used.facts.get(key))} → {_shown(newer.facts.get(key))}"
               for key in sorted(set(used.facts) | set(newer.facts))
               if key in KEY_FACTS and used.facts.get(key) != newer.facts.get(key)]
    what = f" ({'; '.join(changed)})" if changed else ""
    return (f"{newer.label} is newer than what this was built from{what}: materialized {newer.materialized_at} "
            f"by run {newer.run_id[:8]} (data version {newer.data_version}, built from {used.data_version})")


def _shown(value) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 else text  # a sha256 is shown as its prefix


def summary(root: LineageNode) -> dict[str, list]:
    """Each key fact with every distinct value found anywhere in the tree (two values: a mixed lineage)."""
    found: dict[str, list] = {}
    for node in root.walk():
        for key in KEY_FACTS:
            if key in node.facts and node.facts[key] not in found.setdefault(key, []):
                found[key].append(node.facts[key])
    return {key: values for key, values in found.items() if values}


def stale_lines(root: LineageNode) -> list[str]:
    seen, lines = set(), []
    for node in root.walk():
        for reason in node.stale:
            if (node.label, reason) not in seen:
                seen.add((node.label, reason))
                lines.append(f"{node.label}: {reason}")
    return lines


def to_json(root: LineageNode) -> str:
    return json.dumps({"summary": summary(root), "stale": stale_lines(root), "lineage": asdict(root)},
                      indent=2, default=str)


def partitions_json(asset: str, statuses: list[PartitionStatus]) -> str:
    return json.dumps({"asset": asset, "partitions": [asdict(s) for s in statuses]}, indent=2)


def format_partitions(asset: str, statuses: list[PartitionStatus]) -> str:
    """A partitioned asset at a glance: how many partitions are current, stale or missing, and why."""
    counts = {state: [s.partition for s in statuses if s.status == state] for state in ("current", "stale",
                                                                                          "missing")}
    lines = [f"Partitions of {asset}: " + ", ".join(f"{len(p)} {state}" for state, p in counts.items() if p), ""]
    for state in ("stale", "missing", "current"):
        if counts[state]:
            lines.append(f"{state:>8}: {', '.join(counts[state])}")
    for status in statuses:
        for reason in status.reasons:
            lines.append(f"  ! {asset}[{status.partition}]: {reason}")
    lines += ["", f"For one partition's lineage: kb-assets audit {asset} --partition <partition>"]
    return "\n".join(lines)


def format_text(root: LineageNode) -> str:
    lines = [f"Lineage of {root.label}", ""]
    lines.append("Made with:")
    for key, values in summary(root).items():
        shown = ", ".join(str(v) for v in values)
        lines.append(f"  {key:<20} {shown}" + ("   <- more than one value in this lineage" if len(values) > 1 else ""))
    lines.append("")
    stale = stale_lines(root)
    lines.append("Status: " + ("STALE" if stale else "current: nothing upstream is newer, no input has changed"))
    lines += [f"  ! {line}" for line in stale]
    lines += ["", "Upstream:"]
    _tree([root], "", "", lines, set())
    return "\n".join(lines)


def _group_key(node: LineageNode) -> tuple:
    """Partitions of one asset made alike (same code, facts and staleness) are shown as one line."""
    return (node.asset, node.code_version, bool(node.stale), json.dumps(
        {k: node.facts.get(k) for k in KEY_FACTS}, sort_keys=True, default=str))


def _tree(group: list[LineageNode], prefix: str, connector: str, lines: list[str], printed: set) -> None:
    """One node (or a group of alike partitions) and its upstream; `connector` is "" for the root, else the
    branch drawn before the label."""
    node = group[0]
    if len(group) > 1:
        partitions = ", ".join(n.partition or "" for n in group)
        label = f"{node.asset}[{partitions}]"
        runs = sorted({n.run_id[:8] for n in group})
        detail = f"runs {', '.join(runs[:3])}{' …' if len(runs) > 3 else ''}"
    else:
        label = node.label
        detail = f"run {node.run_id[:8]}, {node.run_status}  {node.materialized_at}"
    lines.append(f"{prefix}{connector}{label}  {detail}  code {node.code_version}  data {node.data_version}"
                 + ("  STALE" if any(n.stale for n in group) else ""))
    inner = prefix + {"": "", "├─ ": "│  ", "└─ ": "   "}[connector]
    key = tuple((n.asset, n.partition, n.run_id) for n in group)
    if key in printed:
        lines.append(f"{inner}   (its upstream as above)")
        return
    printed.add(key)
    for name, used in node.inputs.items():
        lines.append(f"{inner}   input {name}: {used['path']} sha256:{str(used['sha256'])[:12]}")
    groups: dict[tuple, list[LineageNode]] = {}
    for child in node.upstream:
        groups.setdefault(_group_key(child), []).append(child)
    if len(group) > 1:
        lines.append(f"{inner}   (each of these {len(group)} partitions read its own upstream, shown for "
                     f"{node.partition})")
    children = list(groups.values())
    for index, child_group in enumerate(children):
        _tree(child_group, inner, "└─ " if index == len(children) - 1 else "├─ ", lines, printed)
