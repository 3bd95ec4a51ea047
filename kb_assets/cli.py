"""The `kb-assets` command: demo inputs, whole-graph materialization with a run summary, the Dagster UI of a recipe,
SQL on its catalog, its HTML report, new recipes, lineage audits and benchmarks.

A recipe, its warehouse and its Dagster history belong together: unless DAGSTER_HOME is set, every command uses
the Dagster instance in `<warehouse root>/dagster/`, so runs, sensors and automation of one recipe never see or
act on another's.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from kb_assets.errors import InputError
from kb_assets.settings import (
    DEMO_RECIPE,
    PRIMARY_ASSEMBLY,
    PROJECT_ROOT,
    RECIPE_ENV,
    Recipe,
    load_recipe,
    recipe_run_tags,
)

INSTANCE_SETTINGS = PROJECT_ROOT / "data" / "dagster.yaml"
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# Ctrl-C / SIGTERM on `kb-assets ui`: its processes get this long to shut down on SIGTERM, then SIGKILL.
UI_GRACE_S = 5.0


# ---- one Dagster instance per recipe -----------------------------------------------------------------------------
def dagster_home(recipe: Recipe) -> Path:
    """The recipe's Dagster home: $DAGSTER_HOME when set (respected as it is), else `<warehouse root>/dagster/`,
    created on first use with data/dagster.yaml's settings (run queue, the `gpu` pool, no telemetry)."""
    explicit = os.environ.get("DAGSTER_HOME")
    if explicit:
        home = Path(explicit).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        return home
    home = recipe.warehouse.root / "dagster"
    config = home / "dagster.yaml"
    if not config.exists():
        home.mkdir(parents=True, exist_ok=True)
        header = (f"# The Dagster instance of recipe {recipe.recipe_id} ({recipe.source}): its runs, schedules,\n"
                  f"# sensors and automation state. Written by kb-assets from {INSTANCE_SETTINGS}; edit freely.\n")
        config.write_text(header + INSTANCE_SETTINGS.read_text())
        # The UI's first-visit "join the community" dialog, marked as seen: it would cover the page.
        (home / ".nux").mkdir(exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    return home


def open_instance(recipe: Recipe):
    """The recipe's Dagster instance (see `dagster_home`)."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(dagster_home(recipe)))


# ---- materialize -------------------------------------------------------------------------------------------------
PID_TAG = "kb_assets/pid"
HOST_TAG = "kb_assets/host"


def process_tags() -> dict[str, str]:
    """The process that executes a run, so that a later command can tell a run whose process died from a live one."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def release_abandoned_runs(instance, log=print) -> list[str]:
    """Mark failed every unfinished run that kb-assets executed on this host in a process that is gone (killed, out
    of memory), and free the pool slots it held. Dagster frees a slot when its step ends: a killed run keeps its
    `gpu` slot, and every later step of that pool would wait for it forever. An unfinished run from elsewhere (the
    UI's run workers, another host) that holds a slot is named, since steps of its pool wait for it."""
    import dagster as dg

    from kb_assets.storage.warehouse import process_exists

    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING]))
    holding = instance.event_log_storage.get_concurrency_run_ids()
    host = socket.gethostname()
    released = []
    for run in unfinished:
        pid = run.tags.get(PID_TAG)
        ours = run.tags.get(HOST_TAG) == host and pid is not None
        if ours and not process_exists(int(pid)):
            instance.report_run_failed(run, message=f"kb-assets process {pid} on {host} ended without finishing "
                                                    "this run (killed?); marked failed by a later kb-assets command")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            log(f"run {run.run_id} was left unfinished by process {pid}, which is gone: marked failed, its pool "
                "slots freed")
            released.append(run.run_id)
        elif run.run_id in holding and ours:
            log(f"note: run {run.run_id} holds a pool slot and is still executing (process {pid}): steps of that "
                "pool wait until it ends")
        elif run.run_id in holding:
            log(f"note: run {run.run_id} ({run.status.value}) holds a pool slot; steps of that pool wait until it "
                "ends. If nothing executes it any more, terminate it in the UI (Runs → Terminate → Force "
                "termination): the daemon of `kb-assets ui` frees its slots a few minutes later")
    return released


def materialize_all(defs, partitions: Sequence[str] | None = None, *, instance, log=print,
                    tags: Mapping[str, str] | None = None, verbose: bool = False,
                    only_outdated: bool = False) -> list:
    """Materialize the whole graph in dependency order: the unpartitioned assets the chromosome partitions
    need, then each chromosome partition (one run each, as a backfill would), then everything downstream.
    With `partitions`, only those partitions and what feeds them: downstream assets need every partition. With
    `only_outdated`, after observing the inputs, only what is stale or missing at the time its turn comes (see
    below): nothing, when nothing changed.

    An InputError inside a run is raised as itself (not as Dagster's step or run failure), and Dagster's console
    logging stays silent unless `verbose`, so the error is told once, by the caller."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    # The input files are observed first, so every materialization records the input versions it read.
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    partitioned = [k for k in keys if graph.get(k).partitions_def is not None]
    feeding = dg.AssetSelection.assets(*partitioned).upstream().resolve(graph) - set(partitioned)
    upstream = [k for k in keys if k in feeding]
    downstream = [k for k in keys if k not in partitioned and k not in feeding]
    # Every event stays in the instance (and the UI); the terminal gets the summary and the one error.
    console = {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}}}

    results = []
    tags = {**(tags or {}), **process_tags()}
    release_abandoned_runs(instance, log)

    def run(selection, partition=None):
        label = f"partition {partition}" if partition else "unpartitioned"
        names = ", ".join(k.to_user_string() for k in selection)
        log(f"materializing {names} ({label})")
        started = time.perf_counter()
        try:
            result = job.execute_in_process(asset_selection=selection, partition_key=partition, instance=instance,
                                            raise_on_error=True, run_config=console, tags=tags)
        except Exception as err:
            found = input_error_in(err)
            if found is None or found is err:
                raise
            raise found from err
        log(f"  done in {time.perf_counter() - started:.1f} s, run {result.run_id}")
        results.append(result)

    log("observing the input files")
    defs.resolve_job_def("observe_inputs").execute_in_process(instance=instance, run_config=console, tags=tags)
    warehouse_root = Path(defs.resources["warehouse"].root)
    groups = [(upstream, None)]
    if partitioned:
        groups += [(partitioned, partition)
                   for partition in partitions or graph.get(partitioned[0]).partitions_def.get_partition_keys()]
    if partitions is None:
        groups.append((downstream, None))
    if not only_outdated:
        for selection, partition in groups:
            if selection:
                run(selection, partition)
        return results
    # Stage by stage, each time asking Dagster what is stale now: the groups run in dependency order, so what a
    # group's parents just wrote is seen, and a stage whose output came out as it was (same data version) leaves
    # the stages after it fresh: a gene added on chrX re-runs chr1's reference sequences but nothing after them.
    # A stale stage runs together with the stale stages right after it, so a partition never materialized is still
    # one run.
    for selection, partition in groups:
        done: set = set()
        while stale := [key for key, _ in stale_or_missing(graph, instance, warehouse_root,
                                                           [(key, partition) for key in selection])
                        if key not in done]:
            first = selection.index(stale[0])
            together = list(itertools.takewhile(lambda key: key in stale, selection[first:]))
            run(together, partition)
            done.update(together)  # once per command: what Dagster still calls stale after its run is not re-run
    if not results:
        log("everything is up to date: no input, setting or code changed since the last materialization")
    return results


def stale_or_missing(graph, instance, warehouse_root: Path, items: Sequence[tuple]) -> list[tuple]:
    """The (asset key, partition) `items`, in their order, that Dagster's own staleness (what the UI shows) marks
    missing or stale, or whose recorded file is not in this warehouse any more (deleted, or written for another
    recipe on a shared Dagster history)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return [(key, partition) for key, partition in items if resolver.get_status(key, partition) != StaleStatus.FRESH
            or _file_missing(instance, warehouse_root, key, partition)]


def _file_missing(instance, warehouse_root: Path, key, partition: str | None) -> bool:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    recorded = records[0].asset_materialization.metadata.get("path") if records else None
    if recorded is None:  # nothing to check (a SLURM job reports the files it published, not a path)
        return False
    path = Path(recorded.value)
    return not (path.is_relative_to(warehouse_root) and path.exists())


def input_error_in(err: BaseException) -> InputError | None:
    """The InputError behind an exception: itself, or one in its chain (Dagster wraps a step's user error in
    DagsterExecutionStepExecutionError and friends, keeping it as `user_exception` or the cause)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, InputError):
            return err
        seen.add(id(err))
        err = getattr(err, "user_exception", None) or err.__cause__ or err.__context__
    return None


def run_summary(recipe: Recipe, instance, results: Sequence) -> list[str]:
    """What a materialization did, read from the assets' metadata: subjects analysed and left out, components
    kept per fold and why, and checks that did not pass."""
    from kb_assets.assets.encoders import recipe_encoders
    from kb_assets.report import fold_lines, latest_materialization

    lines = []
    covariates = latest_materialization(instance, "covariates")
    matrix = latest_materialization(instance, "subject_matrix")
    matrix_meta = matrix.metadata if matrix is not None else {}
    if covariates is not None:
        meta = covariates.metadata
        n_missing = sum((meta.get("dropped_by_reason") or {}).values())
        left_out = []
        if "intersection/n_only_in_vcf" in meta:
            left_out += [f"{meta['intersection/n_only_in_vcf']} in the VCF without covariates",
                         f"{meta['intersection/n_only_in_table']} in the covariates table without genotypes"]
        left_out.append(f"{n_missing} with missing covariate values (covariates.missing)")
        if "excluded_for_missing_genotypes" in matrix_meta:
            left_out.append(f"{matrix_meta['excluded_for_missing_genotypes']} with a missing genotype call "
                            "(haplotypes.missing_genotypes: exclude_subject)")
        # The subject matrix's rows are the subjects analysed: the covariates' minus any the VCF excluded.
        analysed = matrix_meta["shape"][0] if "shape" in matrix_meta else meta.get("n_subjects", "?")
        lines.append(f"Subjects: {analysed} analysed; left out: {', '.join(left_out)}")
    if matrix_meta.get("subjects_without_every_chromosome") and "excluded_for_missing_genotypes" not in matrix_meta:
        lines.append(f"  {matrix_meta['subjects_without_every_chromosome']} covariates subject(s) without "
                     "gene vectors on every chromosome left out of the subject matrix")
    for encoder in recipe_encoders(recipe):
        named = f" [{encoder.label}]" if recipe.inputs.compare_with else ""
        pca = latest_materialization(instance, encoder.key("subject_embeddings_pca").to_user_string())
        folds = fold_lines(pca.metadata) if pca is not None else []
        if folds:
            lines.append(f"PCA{named} ({pca.metadata.get('order', recipe.pca.order)}): components kept per fold, and "
                         "what bound them (a fold keeps at most its training subjects minus the design rank)")
            lines += [f"  {line}" for line in folds]
        alignment = latest_materialization(instance, encoder.key("gene_brain_alignment").to_user_string())
        if alignment is not None:
            meta = alignment.metadata
            p_values = ", ".join(f"{p:.3g}" for p in meta.get("p_value_r1_by_fold", []))
            lines.append(f"Gene–brain alignment{named}: held-out first canonical correlation "
                         f"{meta.get('heldout_r1_mean', float('nan')):.3f} (mean over folds), permutation p by fold "
                         f"{p_values}; top genes by attribution: "
                         f"{', '.join(row['gene_name'] for row in (meta.get('top_genes_by_attribution') or [])[:3])}")
            lines += [f"  {meta['label_metric']} undefined in {reason}"
                      for reason in meta.get("label_metric_undefined") or []]
    comparison = latest_materialization(instance, "encoder_comparison")
    if comparison is not None:
        agreement = {key.split("/", 1)[1]: value for key, value in comparison.metadata.items()
                     if key.startswith("spearman_rho_all_genes/")}
        lines.append("Encoders side by side (Spearman ρ of subject distances, all genes): "
                     + ", ".join(f"{pair} {rho:.3f}" for pair, rho in agreement.items()))
    evaluations = [e for result in results for e in result.get_asset_check_evaluations()]
    failed = [e for e in evaluations if not e.passed]
    if evaluations:
        lines.append(f"Checks: {len(evaluations) - len(failed)} of {len(evaluations)} passed")
        for e in failed:
            where = f" [{e.partition}]" if getattr(e, "partition", None) else ""
            lines.append(f"  {e.severity.value.lower()}: {e.asset_key.to_user_string()}{where} {e.check_name}"
                         + (f": {e.description}" if e.description else ""))
    return lines


def catalog_summary(warehouse) -> list[tuple[str, int]]:
    """(view, row count) for every view of the catalog."""
    from kb_assets.report.tables import catalog_views

    return list(catalog_views(warehouse).items())


def _print_summary(recipe: Recipe) -> None:
    from kb_assets.storage import Warehouse

    warehouse = Warehouse(recipe.warehouse.root)
    print("\nTables in the catalog:")
    views = catalog_summary(warehouse)
    width = max((len(view) for view, _ in views), default=0)
    for view, rows in views:
        print(f"  {view:<{width}} {rows:>10,} rows")
    recipe_flag = "" if recipe.source == DEMO_RECIPE else f" --recipe {recipe.source}"
    print(f"\nDuckDB catalog: {warehouse.catalog_path}")
    print(f"  query it:   kb-assets sql{recipe_flag} \"select * from gene_set\"")
    print(f"  report:     kb-assets report{recipe_flag}")
    print(f"  Dagster UI: kb-assets ui{' ' + str(recipe.source) if recipe_flag else ''}"
          "   (then open http://127.0.0.1:3000)")


def _cmd_materialize(args) -> None:
    from kb_assets.definitions import build_definitions

    recipe = load_recipe(args.recipe)
    partitions = args.partition or None
    unknown = sorted(set(partitions or ()) - set(recipe.reference.chromosomes))
    if unknown:
        raise InputError(recipe.source, f"--partition {', '.join(unknown)}", "not in reference.chromosomes",
                         f"choose from {', '.join(recipe.reference.chromosomes)}")
    started = time.perf_counter()
    with open_instance(recipe) as instance:
        results = materialize_all(build_definitions(recipe), partitions, instance=instance,
                                  tags=recipe_run_tags(recipe), verbose=args.verbose,
                                  only_outdated=not args.all)
        print(f"\nmaterialized in {time.perf_counter() - started:.1f} s: recipe {recipe.recipe_id} "
              f"({recipe.source}), {len(results)} runs in {dagster_home(recipe)}")
        for line in run_summary(recipe, instance, results):
            print(line)
    _print_summary(recipe)


# ---- demo --------------------------------------------------------------------------------------------------------
def _cmd_demo_init(args) -> None:
    from kb_assets.demo import generate_demo_inputs

    recipe = load_recipe(args.recipe or DEMO_RECIPE, require_inputs=False)
    started = time.perf_counter()
    written = generate_demo_inputs(recipe, force=args.force)
    print(f"demo inputs ready in {time.perf_counter() - started:.1f} s:")
    for name, path in written.items():
        print(f"  {name:<24} {path}")


def _cmd_demo_run(args) -> None:
    args.recipe = args.recipe or str(DEMO_RECIPE)
    args.force = False
    _cmd_demo_init(args)
    _cmd_materialize(args)
    args.out = None
    _cmd_report(args)


# ---- audit -------------------------------------------------------------------------------------------------------
def _cmd_audit(args) -> None:
    from kb_assets.audit import Auditor, format_partitions, format_text, partitions_json, to_json
    from kb_assets.definitions import build_definitions
    from kb_assets.storage import Warehouse

    recipe = load_recipe(args.recipe, require_inputs=False)
    with open_instance(recipe) as instance:
        auditor = Auditor(instance, build_definitions(recipe), Warehouse(recipe.warehouse.root), recipe)
        try:
            if args.partition is None and auditor.partition_keys(args.asset) is not None:
                statuses = auditor.partitions(args.asset)
                text = partitions_json(args.asset, statuses) if args.json else format_partitions(args.asset,
                                                                                                  statuses)
            else:
                root = auditor.trace(args.asset, args.partition)
                text = to_json(root) if args.json else format_text(root)
        except LookupError as err:
            raise InputError(recipe.source, args.asset, str(err),
                             "materialize it first, or pass --recipe (or KB_ASSETS_RECIPE) for the recipe it "
                             "belongs to") from None
    print(text)


# ---- sql ---------------------------------------------------------------------------------------------------------
def run_sql(warehouse, query: str, max_rows: int = 40) -> None:
    """Run one statement on the catalog, read-only, and print its result as a table. The catalog is held only
    for the statement (Warehouse.catalog's lock), so runs are never kept waiting by an open prompt."""
    import duckdb

    with warehouse.catalog(read_only=True) as connection:
        try:
            relation = connection.sql(query)
        except duckdb.Error as err:
            raise InputError(None, query.strip(), str(err).splitlines()[0],
                             "check the SQL; `.tables` at the prompt, or `select * from duckdb_views()`, lists "
                             "the views") from None
        if relation is None:
            print("ok")
            return
        width = max(80, _terminal_width())
        relation.show(max_rows=max_rows, max_width=width)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 40)).columns


def _sql_prompt(warehouse) -> None:
    """An interactive prompt: statements end with `;` (several lines allowed); `.tables` lists the views,
    `.quit` or Ctrl-D leaves. Line editing and history come from readline."""
    import readline

    history = Path.home() / ".kb_assets_sql_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    print(f"kb-assets sql on {warehouse.catalog_path} (read-only). End statements with ';'. "
          "'.tables' lists the views, '.quit' leaves.")
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("... " if buffer else "sql> ")
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()
                buffer.clear()
                continue
            stripped = line.strip()
            if not buffer and stripped in (".quit", ".exit", "quit", "exit"):
                break
            if not buffer and stripped == ".tables":
                for view, rows in catalog_summary(warehouse):
                    print(f"  {view:<40} {rows:>10,} rows")
                continue
            if stripped:
                buffer.append(line)
            if buffer and stripped.endswith(";"):
                try:
                    run_sql(warehouse, "\n".join(buffer))
                except InputError as err:
                    print(f"error: {err.problem}", file=sys.stderr)
                buffer.clear()
    finally:
        try:
            readline.write_history_file(history)
        except OSError:
            pass


def _cmd_sql(args) -> None:
    from kb_assets.storage import Warehouse

    recipe = load_recipe(args.recipe, require_inputs=False)
    warehouse = Warehouse(recipe.warehouse.root)
    if not warehouse.catalog_path.exists():
        raise InputError(warehouse.catalog_path, None, "no catalog yet",
                         f"materialize the recipe first: kb-assets materialize --recipe {recipe.source}")
    if args.query:
        run_sql(warehouse, args.query)
    else:
        _sql_prompt(warehouse)


# ---- report ------------------------------------------------------------------------------------------------------
def _cmd_report(args) -> None:
    from kb_assets.definitions import build_definitions
    from kb_assets.report import build_report, write_report

    recipe = load_recipe(args.recipe, require_inputs=False)
    with open_instance(recipe) as instance:
        report = build_report(recipe, instance, build_definitions(recipe))
    out = write_report(report, args.out or recipe.warehouse.root / "report.html")
    print(f"\nReport: {out}")


# ---- recipe new --------------------------------------------------------------------------------------------------
INPUT_FLAGS = ("fasta", "gtf", "gene_set", "vcf", "covariates", "checkpoint", "brain")


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML with every key, each under a comment generated from its settings field: the
    description, the allowed values and the default. Generated from the pydantic models, so it cannot drift."""
    from pydantic import BaseModel

    lines = [
        "# A kb_assets recipe: every input and setting of one run. Written by `kb-assets recipe new`; each key",
        "# carries its meaning, allowed values and default. Relative paths would be read relative to this file.",
    ]

    def emit(model: BaseModel, indent: str) -> None:
        for name, field in type(model).model_fields.items():
            if field.exclude:
                continue
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                lines.append("")
                if field.description:
                    lines.append(f"{indent}# {field.description}")
                lines.append(f"{indent}{name}:")
                emit(value, indent + "  ")
                continue
            lines.append(f"{indent}# {_field_comment(field)}")
            if isinstance(value, dict) and value:
                # A mapping of names (inputs.compare_with): one line per entry, as a user would write it.
                lines.append(f"{indent}{name}:")
                lines.extend(f"{indent}  {key}: {_yaml_value(item)}" for key, item in value.items())
            else:
                lines.append(f"{indent}{name}: {_yaml_value(value)}")

    emit(recipe, "")
    return "\n".join(lines) + "\n"


def _yaml_value(value) -> str:
    """One value in YAML flow style, on one line (paths as strings)."""

    def plain(item):
        if isinstance(item, Path):
            return str(item)
        if isinstance(item, dict):
            return {key: plain(v) for key, v in item.items()}
        return [plain(v) for v in item] if isinstance(item, list) else item

    return yaml.safe_dump(plain(value), default_flow_style=True, width=1_000_000).removesuffix("...\n").strip()


def _field_comment(field) -> str:
    from typing import Literal, get_args, get_origin

    parts = [field.description] if field.description else []
    choices = [a for a in get_args(field.annotation) if get_origin(field.annotation) is Literal]
    if choices:
        parts.append("one of: " + " | ".join(str(c) for c in choices))
    if field.is_required():
        parts.append("required")
    else:
        parts.append(f"default: {_yaml_value(field.get_default(call_default_factory=True))}")
    return "; ".join(parts)


def input_paths(recipe: Recipe) -> dict[str, Path]:
    """Every input path the recipe names, by key (`compare_with.<name>` for the encoders compared side by side)."""
    paths: dict[str, Path] = {}
    for name, value in recipe.inputs.model_dump().items():
        if isinstance(value, dict):
            paths |= {f"{name}.{key}": Path(item) for key, item in value.items()}
        elif value is not None:
            paths[name] = Path(value)
    return paths


def new_recipe(path: Path, inputs: Mapping[str, str | None], warehouse: str | None = None,
               recipe_id: str | None = None, compare_with: Mapping[str, str] | None = None) -> Recipe:
    """A recipe for `path`: the demo recipe's settings and inputs, with `inputs` replacing any of the demo's, every
    path absolute, the warehouse (and so the Dagster history) of its own beside the recipe file.

    What belongs to the demo goes where its inputs go: a new FASTA resets the reference section (build hg38, the
    primary chromosomes the FASTA holds, under its naming); a new checkpoint drops the demo's encoders to compare; a
    new checkpoint, VCF or covariates table drops the demo's brain table (it describes the demo's subjects); and
    whenever the demo's brain table is not kept, the evaluation settings are the defaults, not the demo's small ones.
    """
    from kb_assets.settings import EvaluationSettings, ReferenceSettings

    demo = load_recipe(DEMO_RECIPE, require_inputs=False)

    def absolute(value: str) -> Path:
        return Path(os.path.abspath(os.path.expanduser(value)))

    given = {name: absolute(value) for name, value in inputs.items() if value}
    if "checkpoint" in given:
        given["compare_with"] = {}
    if given.keys() & {"checkpoint", "vcf", "covariates"}:
        given.setdefault("brain", None)
    if compare_with:
        given["compare_with"] = {name: absolute(value) for name, value in compare_with.items()}
    updates = {
        "recipe_id": recipe_id or path.stem,
        "inputs": demo.inputs.model_copy(update=given),
        "warehouse": demo.warehouse.model_copy(
            update={"root": Path(os.path.abspath(warehouse)) if warehouse else path.parent.resolve() / "warehouse"}),
        "source": None,
    }
    if "fasta" in given:
        updates["reference"] = ReferenceSettings(chromosomes=primary_chromosomes(given["fasta"]))
    if "brain" in given:
        updates["evaluation"] = EvaluationSettings()
    return demo.model_copy(update=updates)


def primary_chromosomes(fasta: Path) -> list[str]:
    """The primary-assembly chromosomes (1–22, X, Y, M) a FASTA holds, under its own naming ("chr1" or "1", "chrM"
    or "MT"), in that order; the default list when the FASTA is not there yet or holds none of them."""
    from kb_assets.genome import ReferenceGenome
    from kb_assets.genome.contigs import respell_contigs

    if not fasta.is_file():
        return list(PRIMARY_ASSEMBLY)
    contigs = ReferenceGenome(fasta).contigs
    respelled = respell_contigs([name for name in PRIMARY_ASSEMBLY if name not in contigs], list(contigs))
    found = [name if name in contigs else respelled[name] for name in PRIMARY_ASSEMBLY
             if name in contigs or name in respelled]
    return found or list(PRIMARY_ASSEMBLY)


def _cmd_recipe_new(args) -> None:
    path = Path(args.path).expanduser().absolute()
    if path.exists() and not args.force:
        raise InputError(path, None, "the file exists", "choose another path, or pass --force to replace it")
    encoders = {}
    for pair in args.compare_with or []:
        name, _, folder = pair.partition("=")
        if not name or not folder:
            raise InputError(None, f"--compare-with {pair}", "not NAME=PATH",
                             "name the encoder and its checkpoint folder, e.g. --compare-with caduceus_ps=/models/ps")
        encoders[name] = folder
    recipe = new_recipe(path, {name: getattr(args, name) for name in INPUT_FLAGS}, args.warehouse, args.recipe_id,
                        encoders)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_yaml(recipe))
    written = load_recipe(path, require_inputs=False)  # the generated file is a valid recipe, or this says why
    missing = [name for name, path in input_paths(written).items() if not path.exists()]
    print(f"recipe written: {path}")
    print(f"  warehouse and Dagster history: {written.warehouse.root}")
    print(f"  chromosomes (one partition each): {', '.join(written.reference.chromosomes)}")
    if missing:
        print(f"  inputs not there yet: {', '.join(missing)} (run `kb-assets demo init` for the demo inputs)")
    print(f"next: kb-assets materialize --recipe {path}")


# ---- ui ----------------------------------------------------------------------------------------------------------
def lineage_url(base_url: str, groups: Sequence[str]) -> str:
    """The global asset lineage with every group expanded: the UI keeps expanded groups in the `expanded` query
    parameter, as `global@global:<group>` (or `<repository>@<location>:<group>` with per-location groups)."""
    ids = [f"global@global:{g}" for g in groups] + [f"__repository__@kb_assets:{g}" for g in groups]
    return f"{base_url}/asset-groups?expanded={urllib.parse.quote(','.join(ids), safe='@:,_')}"


def _cmd_ui(args) -> int:
    from kb_assets.definitions import build_definitions

    recipe = load_recipe(args.recipe_file or args.recipe, require_inputs=False)
    home = dagster_home(recipe)
    graph = build_definitions(recipe).resolve_asset_graph()
    groups = sorted({graph.get(key).group_name for key in graph.get_all_asset_keys()})
    url = f"http://{args.host}:{args.port}"
    print(f"Dagster UI of recipe {recipe.recipe_id} ({recipe.source})")
    print(f"  run history: {home}")
    print(f"  open {url}  (asset lineage, every group expanded: {lineage_url(url, groups)})")
    print("  Ctrl-C stops it and everything it started.", flush=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), RECIPE_ENV: str(recipe.source)}
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE), "--host", args.host,
               "--port", str(args.port)]
    code = run_in_own_group(command, env=env, cwd=PROJECT_ROOT)
    # Everything it started has ended; skip the interpreter's seconds-long teardown of the torch and Dagster
    # modules the definitions imported, so the command ends when its processes do.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_in_own_group(command: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """Run `command` in a process group of its own until it exits or this process gets SIGINT or SIGTERM; then
    stop the whole group (dagster dev, webserver, daemon, code servers, run workers): see `stop_group`."""
    process = subprocess.Popen(list(command), env=dict(env), cwd=cwd, process_group=0)
    stopping: list[int] = []

    def request_stop(signum, _frame):
        stopping.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while process.poll() is None and not stopping:
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_group(process)
    return 0 if stopping else process.returncode


def stop_group(process: subprocess.Popen, grace: float = UI_GRACE_S) -> None:
    """SIGTERM to every process of the group (each shuts down on it: dagster dev maps it to Ctrl-C), then SIGKILL
    to whatever is still running after `grace`."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(group):
        process.poll()
        time.sleep(0.1)
    if group_members(group):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, session, …
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(int(entry.name))
    return members


# ---- benchmarks --------------------------------------------------------------------------------------------------
def _cmd_bench(args) -> None:
    if args.which == "encoder" and args.family == "dnabert2":
        from kb_assets.benchmarks.encoder import format_report, run_encoder_benchmark

        print(format_report(run_encoder_benchmark(device=args.device, upstream=args.upstream)))
    elif args.which == "encoder":
        # One benchmark measures both non-DNABERT-2 families side by side (Caduceus PS/PH and a transformers ESM).
        from kb_assets.benchmarks.caduceus import format_report, run_caduceus_benchmark

        print(format_report(run_caduceus_benchmark(seed=args.seed)))
    elif args.which == "alignment":
        from kb_assets.benchmarks.alignment import format_report, run_alignment_benchmark

        print(format_report(run_alignment_benchmark(args.subjects, 512, 100, args.permutations, 5)))
    elif args.which == "dedup":
        from kb_assets.benchmarks.dedup import format_report, run_dedup_benchmark

        print(format_report(run_dedup_benchmark(n_subjects=args.subjects, seed=args.seed)))
    elif args.which == "cohort":
        from kb_assets.benchmarks.cohort import format_report, format_scaling, load_results, run_cohort_benchmark

        result = run_cohort_benchmark(n_subjects=args.subjects, workdir=args.workdir, region_mode=args.region_mode,
                                      seed=args.seed)
        print(format_report(result))
        scaling = format_scaling(load_results(args.workdir, args.region_mode))
        if scaling:
            print("\n" + scaling)
    else:
        from kb_assets.benchmarks.pca import format_report, run_pca_benchmark

        print(format_report(run_pca_benchmark(n_subjects=args.subjects)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kb-assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_recipe(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--recipe", help=f"recipe file (default: ${RECIPE_ENV}, else {DEMO_RECIPE})")
        return p

    def with_verbose(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--verbose", action="store_true",
                       help="Dagster's step log on the terminal, and the traceback of an error")
        return p

    demo = commands.add_parser("demo", help="the demo inputs and a whole run on them").add_subparsers(
        dest="demo_command", required=True)
    init = with_recipe(demo.add_parser("init", help="write the demo inputs the demo recipe names (if missing)"))
    init.add_argument("--force", action="store_true", help="rewrite inputs that exist")
    init.set_defaults(func=_cmd_demo_init)
    def with_selection(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--partition", action="append",
                       help="only this chromosome partition and what feeds it (repeatable)")
        p.add_argument("--all", action="store_true",
                       help="materialize everything again, also what is up to date (cached windows are reused)")
        return p

    run = with_selection(with_verbose(with_recipe(demo.add_parser(
        "run", help="demo init, then bring every asset and partition up to date, then the report"))))
    run.set_defaults(func=_cmd_demo_run)

    materialize = with_selection(with_verbose(with_recipe(commands.add_parser(
        "materialize", help="bring every asset of a recipe up to date, then summarize the run"))))
    materialize.set_defaults(func=_cmd_materialize)

    ui = with_recipe(commands.add_parser(
        "ui", help="the Dagster UI (dagster dev) of a recipe, on its own run history"))
    ui.add_argument("recipe_file", nargs="?", metavar="RECIPE",
                    help=f"recipe file (default: --recipe, ${RECIPE_ENV}, else the demo recipe)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: forward a port with "
                                                         "ssh -L rather than binding a public interface)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_cmd_ui)

    sql = with_recipe(commands.add_parser("sql", help="query the recipe's DuckDB catalog (read-only)"))
    sql.add_argument("query", nargs="?", help="one SQL statement; without it, an interactive prompt")
    sql.set_defaults(func=_cmd_sql)

    report = with_recipe(commands.add_parser("report", help="write the recipe's self-contained HTML report"))
    report.add_argument("--out", help="where to write it (default: <warehouse>/report.html)")
    report.set_defaults(func=_cmd_report)

    recipe = commands.add_parser("recipe", help="recipes").add_subparsers(dest="recipe_command", required=True)
    new = recipe.add_parser("new", help="write a recipe with every key explained and absolute paths (to the demo "
                                        "inputs unless given)")
    new.add_argument("path", help="the recipe file to write")
    for name in INPUT_FLAGS:
        new.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="PATH", help=f"inputs.{name}")
    new.add_argument("--compare-with", action="append", metavar="NAME=PATH",
                     help="a further encoder side by side (repeatable): inputs.compare_with.NAME")
    new.add_argument("--warehouse", metavar="DIR", help="warehouse root (default: warehouse/ beside the recipe)")
    new.add_argument("--recipe-id", help="recipe_id (default: the file name without extension)")
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(func=_cmd_recipe_new)

    audit = with_recipe(commands.add_parser(
        "audit", help="which inputs, model, tokenizer and settings made an asset, and is it stale"))
    audit.add_argument("asset", help="e.g. subject_embeddings_pca or gene_embeddings")
    audit.add_argument("--partition", help="the chromosome, for a partitioned asset")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=_cmd_audit)

    bench = commands.add_parser("bench", help="benchmarks (apart from the tests)")
    bench.add_argument("which", choices=["encoder", "pca", "dedup", "cohort", "alignment"])
    bench.add_argument("--device", default="cpu", help="encoder benchmark device: cpu, cuda or auto")
    bench.add_argument("--family", default="dnabert2", choices=["dnabert2", "caduceus", "transformers"],
                       help="encoder benchmark: DNABERT-2 at the 117M shape, or Caduceus PS/PH at the 131k "
                            "checkpoints' shape beside a transformers-family ESM (CPU, one thread)")
    bench.add_argument("--upstream", metavar="DIR",
                       help="encoder benchmark: also time the upstream DNABERT-2 code in DIR (its bert_layers.py; "
                            "needs the `upstream` extra) on the same windows and report the ratio and agreement")
    bench.add_argument("--permutations", type=int, default=1000, help="alignment benchmark: permutations per fold")
    bench.add_argument("--subjects", type=int, default=20000,
                       help="pca, dedup, cohort and alignment benchmarks' cohort size")
    bench.add_argument("--seed", type=int, default=0, help="dedup and cohort benchmarks' seed (synthetic inputs)")
    bench.add_argument("--workdir", help="cohort benchmark: where the synthetic inputs, runs and results go "
                                         "(default /tmp/kb_assets_cohort_bench; the hg38-sized inputs take ~4 GB)")
    bench.add_argument("--region-mode", default="exons", choices=["exons", "gene_body", "cds", "promoter"],
                       help="cohort benchmark: the recipe's regions.mode")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = getattr(args, "recipe_file", None) or getattr(args, "recipe", None)
    if recipe:
        # Definitions loaded later (by Dagster, in this process) read the same recipe.
        os.environ[RECIPE_ENV] = str(os.path.abspath(recipe))
    try:
        return args.func(args) or 0
    except BrokenPipeError:
        # The reader went away (`kb-assets audit … | head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InputError as err:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        sys.stdout.flush()
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
