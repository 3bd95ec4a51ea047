"""The `kb-assets` command: demo inputs, whole-graph materialization, the catalog summary and benchmarks."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from kb_assets.errors import InputError
from kb_assets.settings import DEMO_RECIPE, PROJECT_ROOT, RECIPE_ENV, load_recipe


def _instance():
    import dagster as dg

    # The Makefile exports DAGSTER_HOME=data/; the same default here keeps CLI runs visible in the UI.
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "data"))
    return dg.DagsterInstance.get()


def materialize_all(defs, partitions: Sequence[str] | None = None, instance=None, log=print) -> list:
    """Materialize the whole graph in dependency order: the unpartitioned assets the chromosome partitions
    need, then each chromosome partition (one run each, as a backfill would), then everything downstream.
    With `partitions`, only those partitions and what feeds them: downstream assets need every partition."""
    import dagster as dg

    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    keys = graph.toposorted_asset_keys
    partitioned = [k for k in keys if graph.get(k).partitions_def is not None]
    feeding = dg.AssetSelection.assets(*partitioned).upstream().resolve(graph) - set(partitioned)
    upstream = [k for k in keys if k in feeding]
    downstream = [k for k in keys if k not in partitioned and k not in feeding]
    instance = instance or _instance()

    results = []

    def run(selection, partition=None):
        label = f"partition {partition}" if partition else "unpartitioned"
        names = ", ".join(k.to_user_string() for k in selection)
        log(f"materializing {names} ({label})")
        started = time.perf_counter()
        result = job.execute_in_process(
            asset_selection=selection, partition_key=partition, instance=instance, raise_on_error=True,
            # Step-by-step DEBUG events stay in the instance (and the UI); the terminal gets warnings.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        log(f"  done in {time.perf_counter() - started:.1f} s, run {result.run_id}")
        results.append(result)

    if upstream:
        run(upstream)
    if partitioned:
        for partition in partitions or graph.get(partitioned[0]).partitions_def.get_partition_keys():
            run(partitioned, partition)
    if downstream and partitions is None:
        run(downstream)
    return results


def catalog_summary(warehouse) -> list[tuple[str, int]]:
    """(view, row count) for every view of the catalog."""
    from kb_assets.storage import quote_identifier

    with warehouse.catalog(read_only=True) as connection:
        views = [row[0] for row in connection.execute(
            "select view_name from duckdb_views() where not internal order by view_name").fetchall()]
        return [(v, connection.execute(f"select count(*) from {quote_identifier(v)}").fetchone()[0]) for v in views]


def _print_summary(recipe) -> None:
    from kb_assets.storage import Warehouse

    warehouse = Warehouse(recipe.warehouse.root)
    print("\nTables in the catalog:")
    for view, rows in catalog_summary(warehouse):
        print(f"  {view:<40} {rows:>10,} rows")
    print(f"\nDuckDB catalog: {warehouse.catalog_path}")
    print(f"  e.g. duckdb {warehouse.catalog_path} -c 'select * from gene_set'")
    print("Dagster UI:     make ui   (then open http://127.0.0.1:3000)")


def _cmd_demo_init(args) -> None:
    from kb_assets.demo import generate_demo_inputs

    recipe = load_recipe(args.recipe or DEMO_RECIPE, require_inputs=False)
    started = time.perf_counter()
    written = generate_demo_inputs(recipe, force=args.force)
    print(f"demo inputs ready in {time.perf_counter() - started:.1f} s:")
    for name, path in written.items():
        print(f"  {name:<12} {path}")


def _cmd_materialize(args) -> None:
    from kb_assets.definitions import build_definitions

    recipe = load_recipe(args.recipe)
    partitions = args.partition or None
    unknown = sorted(set(partitions or ()) - set(recipe.reference.chromosomes))
    if unknown:
        raise InputError(recipe.source, f"--partition {', '.join(unknown)}", "not in reference.chromosomes",
                         f"choose from {', '.join(recipe.reference.chromosomes)}")
    started = time.perf_counter()
    materialize_all(build_definitions(recipe), partitions)
    print(f"\nmaterialized the asset graph in {time.perf_counter() - started:.1f} s (recipe {recipe.source})")
    _print_summary(recipe)


def _cmd_demo_run(args) -> None:
    args.recipe = args.recipe or str(DEMO_RECIPE)
    args.force = False
    _cmd_demo_init(args)
    _cmd_materialize(args)


def _cmd_audit(args) -> None:
    from kb_assets.audit import format_text, to_json, trace
    from kb_assets.storage import Warehouse

    recipe = load_recipe(args.recipe, require_inputs=False)
    instance = _instance()

    def run_status(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id) if run_id else None
        return run.status.value if run else "run not in this Dagster instance"

    try:
        root = trace(Warehouse(recipe.warehouse.root), args.asset, args.partition, run_status=run_status)
    except LookupError as err:
        raise InputError(recipe.warehouse.root, args.asset, str(err), "materialize it first, or pass --recipe "
                         "(or KB_ASSETS_RECIPE) for the recipe whose warehouse holds it") from None
    print(to_json(root) if args.json else format_text(root))


def _cmd_bench(args) -> None:
    if args.which == "encoder":
        from kb_assets.benchmarks.encoder import format_report, run_encoder_benchmark

        print(format_report(run_encoder_benchmark(device=args.device)))
    elif args.which == "dedup":
        from kb_assets.benchmarks.dedup import format_report, run_dedup_benchmark

        print(format_report(run_dedup_benchmark(n_subjects=args.subjects, seed=args.seed)))
    else:
        from kb_assets.benchmarks.pca import format_report, run_pca_benchmark

        print(format_report(run_pca_benchmark(n_subjects=args.subjects)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kb-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_recipe(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--recipe", help=f"recipe file (default: ${RECIPE_ENV}, else {DEMO_RECIPE})")
        return p

    demo = commands.add_parser("demo", help="the demo inputs and a whole run on them").add_subparsers(
        dest="demo_command", required=True)
    init = with_recipe(demo.add_parser("init", help="write the demo inputs the demo recipe names (if missing)"))
    init.add_argument("--force", action="store_true", help="rewrite inputs that exist")
    init.set_defaults(func=_cmd_demo_init)
    run = with_recipe(demo.add_parser("run", help="demo init, then materialize every asset and partition"))
    run.add_argument("--partition", action="append",
                     help="only this chromosome partition and what feeds it (repeatable)")
    run.set_defaults(func=_cmd_demo_run)

    materialize = with_recipe(commands.add_parser("materialize", help="materialize every asset of a recipe"))
    materialize.add_argument("--partition", action="append",
                             help="only this chromosome partition and what feeds it (repeatable)")
    materialize.set_defaults(func=_cmd_materialize)

    audit = with_recipe(commands.add_parser(
        "audit", help="which inputs, model, tokenizer and settings made an asset, and is it stale"))
    audit.add_argument("asset", help="e.g. subject_embeddings_pca or gene_embeddings")
    audit.add_argument("--partition", help="the chromosome, for a partitioned asset")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=_cmd_audit)

    bench = commands.add_parser("bench", help="benchmarks (apart from the tests)")
    bench.add_argument("which", choices=["encoder", "pca", "dedup"])
    bench.add_argument("--device", default="cpu", help="encoder benchmark device: cpu, cuda or auto")
    bench.add_argument("--subjects", type=int, default=20000, help="pca and dedup benchmarks' cohort size")
    bench.add_argument("--seed", type=int, default=0, help="dedup benchmark seed (gene structures and cohort)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "recipe", None):
        # Definitions loaded later (by Dagster, in this process) read the same recipe.
        os.environ[RECIPE_ENV] = str(os.path.abspath(args.recipe))
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
