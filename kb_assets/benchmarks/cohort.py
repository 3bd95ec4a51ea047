"""Benchmark of the whole pipeline on a synthetic cohort with real shapes: `kb-assets bench cohort --subjects N`.

The inputs come from kb_assets.benchmarks.synthetic (hg38-sized genome, ≈60,000-gene GTF, the 38-gene set, an
N-subject exome VCF, covariates, the tiny DNABERT-2 checkpoint); they are written once under the work folder and
reused by cohorts of every size. A recipe on the demo recipe's settings (the contigs holding gene-set genes as
partitions, 5 folds × 512 components) is written beside a fresh warehouse, and `kb-assets materialize` runs in a
child process three times: cold; `rerun`, again with nothing changed (it runs nothing: nothing is missing or stale);
`forced`, with `--all` (every asset runs again, every window from the embedding cache).

Measured in this process while the child runs: the resident memory of the child's whole process tree, sampled
from /proc every 0.2 s. Read from the child's Dagster instance afterwards: every step's start and end (wall time
per asset and partition; the memory peak inside that window), and the materialization metadata (model input
tokens `embedded_tokens`, counted on both strands, and `cache_hits` of gene_embeddings; the non-reference
subject × region × haplotype units of subject_haplotypes, which is what memory should follow). The warehouse is
measured on disk after the cold run. Each run's figures are saved as JSON in the work folder, and the memory of
each stage is fitted against those units over every size saved there (log-log slope).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from kb_assets.benchmarks.synthetic import GENE_SET, CohortInputs, GeneSetGene, generate_cohort_inputs

DEFAULT_WORKDIR = Path("/tmp/kb_assets_cohort_bench")
SAMPLE_S = 0.2
_GIB = 1 << 30
OLD_MODEL_TOKENS_20K = 72_000_000  # model input tokens the per-subject model computed for 20,000 subjects
PHASES = ("cold", "rerun", "forced")  # in the order they run
TARGETS = {
    "peak_rss_gib_470k": 8.0,
    "wall_s_470k": 30 * 60,
    "embedded_token_share_20k": 0.25,  # of OLD_MODEL_TOKENS_20K
    "rerun_wall_s": 30.0,
}


def write_recipe(inputs: CohortInputs, folder: Path, region_mode: str = "exons") -> Path:
    """A recipe on the demo recipe's settings for the synthetic inputs, with a warehouse of its own in `folder`.
    Its chromosomes are the contigs that hold gene-set genes: the others would be empty partitions, costing only a
    run's overhead each."""
    from kb_assets.settings import DEMO_RECIPE, load_recipe

    settings = load_recipe(DEMO_RECIPE, require_inputs=False).model_dump(mode="json", exclude_none=True)
    settings["recipe_id"] = f"synthetic_cohort_{inputs.n_subjects}_{region_mode}"
    settings["inputs"] = {name: str(getattr(inputs, name)) for name in
                          ("fasta", "gtf", "gene_set", "vcf", "covariates", "checkpoint")}
    settings["reference"] = {"build": "synthetic-hg38", "chromosomes": inputs.gene_set_contigs}
    settings["regions"]["mode"] = region_mode
    settings["warehouse"] = {"root": str(folder / "warehouse")}
    path = folder / "recipe.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def run_cohort_benchmark(
    n_subjects: int = 20000,
    workdir: str | os.PathLike | None = None,
    *,
    region_mode: str = "exons",
    seed: int = 0,
    contigs: dict[str, int] | None = None,
    gene_set: Sequence[GeneSetGene] = GENE_SET,
) -> dict:
    """Generate (or reuse) the inputs, materialize everything twice in a child process, and return the figures
    (also saved as JSON under `workdir`/results)."""
    workdir = Path(workdir or DEFAULT_WORKDIR)
    started = time.perf_counter()
    inputs = generate_cohort_inputs(workdir, n_subjects, seed=seed, contigs=contigs, gene_set=gene_set)
    inputs_s = time.perf_counter() - started
    folder = inputs.vcf.parent / f"run-{region_mode}"
    if folder.exists():
        shutil.rmtree(folder)  # a cold run starts from an empty warehouse and Dagster instance
    recipe_path = write_recipe(inputs, folder, region_mode)
    groups = _asset_groups(recipe_path)  # read before the runs: the code is then the code the runs use
    command = [sys.executable, "-m", "kb_assets.cli", "materialize", "--recipe", str(recipe_path)]
    cold = _run_child(command, folder / "cold.log")
    rerun = _run_child(command, folder / "rerun.log") if cold["returncode"] == 0 else None
    forced = _run_child([*command, "--all"], folder / "forced.log") if cold["returncode"] == 0 else None
    result = {
        "n_subjects": n_subjects,
        "region_mode": region_mode,
        "seed": seed,
        "command": f"kb-assets bench cohort --subjects {n_subjects} --workdir {workdir}"
                   + (f" --region-mode {region_mode}" if region_mode != "exons" else ""),
        "materialize_command": " ".join(command[2:]).replace("kb_assets.cli", "kb-assets", 1),
        "recipe": str(recipe_path),
        "groups": groups,
        "inputs": {"seconds_now": inputs.seconds, "total_s": inputs_s, "bytes": inputs.sizes(),
                   "contigs": len(inputs.contigs), "partitions": inputs.gene_set_contigs,
                   "genome_bp": sum(inputs.contigs.values()), "gene_set_genes": len(inputs.gene_set_genes)},
        "cold": cold,
        "rerun": rerun,
        "forced": forced,
    }
    if cold["returncode"] == 0:
        result["warehouse_bytes"] = _warehouse_bytes(folder / "warehouse")
    results = workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"cohort-n{n_subjects}-{region_mode}.json"
    path.write_text(json.dumps(result, indent=1))  # the raw measurements, kept whatever happens next
    read_instance(result)
    path.write_text(json.dumps(result, indent=1))
    return result


def _asset_groups(recipe_path: Path) -> dict[str, str]:
    from kb_assets.definitions import build_definitions
    from kb_assets.settings import load_recipe

    graph = build_definitions(load_recipe(recipe_path)).resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}


def _run_child(command: list[str], log: Path) -> dict:
    """Run the command with its output in `log`, sampling its process tree's resident memory."""
    env = {key: value for key, value in os.environ.items() if key not in ("DAGSTER_HOME", "KB_ASSETS_RECIPE")}
    with open(log, "wb") as output:
        began = time.time()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        sampler = _TreeSampler(process.pid)
        sampler.start()
        returncode = process.wait()
        sampler.stop()
        ended = time.time()
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return {"returncode": returncode, "began": began, "wall_s": ended - began, "peak_rss": sampler.peak,
            "samples": sampler.samples, "log": str(log), "log_tail": tail if returncode else []}


class _TreeSampler:
    """Resident memory of a process and all its descendants, summed, every SAMPLE_S seconds (Linux /proc)."""

    def __init__(self, root: int):
        self.root = root
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), self._tree_rss()))
            if self._stop.wait(SAMPLE_S):
                return

    def _tree_rss(self) -> int:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        tree, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
            tree.update(children)
            frontier += children
        total = 0
        for pid in tree:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page
            except (OSError, IndexError):
                continue
        return total


def _warehouse_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk: the embedding cache, the Dagster instance, and the rest (tables, catalog, lineage)."""
    sizes = {"embedding_cache": 0, "dagster": 0, "tables": 0}
    for path in root.rglob("*"):
        if path.is_file():
            part = path.relative_to(root).parts[0]
            sizes[part if part in sizes else "tables"] += path.stat().st_size
    return sizes


def read_instance(result: dict) -> None:
    """Add the steps (wall, memory peak within them) and materialization metadata of every run of the result's
    Dagster instance, split into the phases by when each began (a result saved raw can be read again later)."""
    import dagster as dg

    from kb_assets.cli import open_instance
    from kb_assets.settings import load_recipe

    recipe = load_recipe(result["recipe"])
    groups = result["groups"]
    phases = [phase for phase in PHASES if result.get(phase) is not None]
    for phase in phases:
        result[phase]["steps"] = []
    with open_instance(recipe) as instance:
        for run in instance.get_runs():
            partition = run.tags.get("dagster/partition")
            metadata = {}
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                materialization = entry.dagster_event.step_materialization_data.materialization
                metadata[materialization.asset_key.to_user_string()] = {
                    key: value.value for key, value in materialization.metadata.items()
                    if isinstance(value.value, (int, float, str, bool))}
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.start_time is None:
                    continue
                phase = [p for p in phases if result[p]["began"] <= stats.start_time][-1]
                samples = result[phase]["samples"]
                end = stats.end_time or stats.start_time
                inside = [rss for t, rss in samples if stats.start_time <= t <= end]
                before = [rss for t, rss in samples if t <= stats.start_time]
                result[phase]["steps"].append({
                    "asset": stats.step_key, "partition": partition, "group": groups.get(stats.step_key, ""),
                    "status": stats.status.value if stats.status else None,
                    "start": stats.start_time, "seconds": end - stats.start_time,
                    "peak_rss": max(inside + before[-1:], default=0), "rss_before": before[-1] if before else 0,
                    "metadata": metadata.get(stats.step_key, {}),
                })
    for phase in phases:
        steps = sorted(result[phase]["steps"], key=lambda step: step["start"])
        result[phase]["steps"] = steps
        # The steps share one process, whose allocator keeps much of what earlier steps freed: what a step itself
        # needs is best seen as its rise, its peak over the memory held when it began.
        result[phase]["baseline_rss"] = steps[0]["rss_before"] if steps else 0
        for step in steps:
            step["rise_rss"] = max(0, step["peak_rss"] - step["rss_before"])
        embedding = [s["metadata"] for s in steps if s["asset"] == "gene_embeddings"]
        result[phase]["embedded_tokens"] = sum(m.get("embedded_tokens", 0) for m in embedding)
        result[phase]["embedded_windows"] = sum(m.get("embedded_windows", 0) for m in embedding)
        result[phase]["cache_hits"] = sum(m.get("cache_hits", 0) for m in embedding)
        pipeline = [s for s in steps if s["group"] != "diagnostics"]
        result[phase]["pipeline_peak_rss"] = max((s["peak_rss"] for s in pipeline), default=0)
        result[phase]["diagnostics_s"] = sum(s["seconds"] for s in steps if s["group"] == "diagnostics")


def materialized_steps(result: dict, phase: dict) -> list[dict]:
    """The phase's steps that materialized an asset (the others observe the input files)."""
    return [step for step in phase.get("steps", []) if step["asset"] in result["groups"]]


def non_reference_units(result: dict) -> dict[str, int]:
    """Per partition, subject × region × haplotype units carrying a non-reference allele (cold run)."""
    return {s["partition"]: int(s["metadata"].get("counts/non_reference_haplotypes", 0))
            for s in result["cold"].get("steps", []) if s["asset"] == "subject_haplotypes"}


def format_report(result: dict) -> str:
    """The figures as a table, with the targets met or not."""
    cold, rerun, forced = result["cold"], result["rerun"], result.get("forced")
    inputs = result["inputs"]
    sizes = inputs["bytes"]
    lines = [
        f"cohort benchmark: {result['n_subjects']:,} subjects × {inputs['gene_set_genes']} genes, regions "
        f"{result['region_mode']}, {len(inputs['partitions'])} partitions of a {inputs['contigs']}-contig genome "
        f"({inputs['genome_bp'] / 1e9:.2f} Gb); `{result['command']}`",
        "  inputs (" + (", ".join(f"{name} {seconds:.0f} s" for name, seconds in inputs["seconds_now"].items())
                        or "all reused") + "): "
        + ", ".join(f"{name} {size / (1 << 20):,.1f} MiB" for name, size in sizes.items()),
    ]
    if cold["returncode"] != 0:
        lines += [f"  the cold run FAILED (exit {cold['returncode']}) after {cold['wall_s']:.0f} s; log "
                  f"{cold['log']}:", *(f"    {line}" for line in cold["log_tail"])]
    steps = cold.get("steps", [])
    if steps:
        lines += ["", f"{'asset':<26}{'partitions':>11}{'wall s':>10}{'slowest':>18}{'peak RSS GiB':>14}"
                      f"{'rise GiB':>10}"]
        for asset in dict.fromkeys(step["asset"] for step in steps):
            rows = [step for step in steps if step["asset"] == asset]
            slowest = max(rows, key=lambda step: step["seconds"])
            where = f"{slowest['seconds']:.1f} {slowest['partition']}" if slowest["partition"] else ""
            lines.append(f"{asset:<26}{len(rows):>11}{sum(r['seconds'] for r in rows):>10.1f}{where:>18}"
                         f"{max(r['peak_rss'] for r in rows) / _GIB:>14.2f}"
                         f"{max(r['rise_rss'] for r in rows) / _GIB:>10.2f}")
        units = non_reference_units(result)
        lines += [
            "",
            f"  cold run: {cold['wall_s']:.0f} s wall (diagnostics {cold['diagnostics_s']:.0f} s of it), peak RSS "
            f"{cold['peak_rss'] / _GIB:.2f} GiB over the process tree ({cold['pipeline_peak_rss'] / _GIB:.2f} GiB "
            f"in pipeline steps, diagnostics left out; {cold['baseline_rss'] / _GIB:.2f} GiB when the first step "
            "began)",
            f"  model input tokens computed (embedded_tokens, both strands): {cold['embedded_tokens']:,} in "
            f"{cold['embedded_windows']:,} windows; cache hits {cold['cache_hits']:,}",
            f"  non-reference subject × region × haplotype units: {sum(units.values()):,}",
        ]
    if "warehouse_bytes" in result:
        warehouse = result["warehouse_bytes"]
        lines.append(f"  warehouse on disk: {sum(warehouse.values()) / (1 << 20):,.1f} MiB ("
                     + ", ".join(f"{name} {size / (1 << 20):,.1f} MiB" for name, size in warehouse.items()) + ")")
    if rerun is not None:
        lines.append(f"  rerun with nothing changed: {rerun['wall_s']:.1f} s wall, inputs observed and "
                     f"{len(materialized_steps(result, rerun))} steps materialized, peak RSS "
                     f"{rerun['peak_rss'] / _GIB:.2f} GiB"
                     + ("" if rerun["returncode"] == 0 else f", FAILED (exit {rerun['returncode']})"))
    if forced is not None:
        lines.append(f"  forced rerun (--all): {forced['wall_s']:.1f} s wall, embedded_tokens "
                     f"{forced.get('embedded_tokens', 0):,}, cache hits {forced.get('cache_hits', 0):,}, peak RSS "
                     f"{forced['peak_rss'] / _GIB:.2f} GiB"
                     + ("" if forced["returncode"] == 0 else f", FAILED (exit {forced['returncode']})"))
    lines += ["", *verdicts(result)]
    return "\n".join(lines)


def verdicts(result: dict) -> list[str]:
    """The issue's targets that apply to this cohort size: met or not, with the figure."""
    cold, rerun = result["cold"], result["rerun"]
    n = result["n_subjects"]
    done = cold["returncode"] == 0

    def say(what: str, met: bool, figure: str) -> str:
        return f"{what}: {'met' if met else 'NOT met'} ({figure})"

    lines = []
    if n >= 470_000:
        lines.append(say(f"{n:,} subjects complete with peak RSS ≤ {TARGETS['peak_rss_gib_470k']:g} GiB",
                         done and cold["pipeline_peak_rss"] <= TARGETS["peak_rss_gib_470k"] * _GIB,
                         f"{cold['pipeline_peak_rss'] / _GIB:.2f} GiB" + ("" if done else ", run failed")))
        lines.append(say(f"… and wall time ≤ {TARGETS['wall_s_470k'] / 60:g} min",
                         done and cold["wall_s"] - cold.get("diagnostics_s", 0) <= TARGETS["wall_s_470k"],
                         f"{(cold['wall_s'] - cold.get('diagnostics_s', 0)) / 60:.1f} min without diagnostics"))
    if n == 20_000 and result["region_mode"] == "exons":
        share = cold.get("embedded_tokens", 0) / OLD_MODEL_TOKENS_20K
        lines.append(say(f"embedded_tokens ≤ {TARGETS['embedded_token_share_20k']:.0%} of "
                         f"{OLD_MODEL_TOKENS_20K / 1e6:.0f}M", done and share <= TARGETS["embedded_token_share_20k"],
                         f"{cold.get('embedded_tokens', 0):,} = {share:.1%}"))
    if rerun is not None:
        lines.append(say(f"rerun with nothing changed ≤ {TARGETS['rerun_wall_s']:g} s and embeds nothing",
                         rerun["returncode"] == 0 and rerun["wall_s"] <= TARGETS["rerun_wall_s"]
                         and rerun.get("embedded_tokens", 0) == 0,
                         f"{rerun['wall_s']:.1f} s, {len(materialized_steps(result, rerun))} steps materialized, "
                         f"{rerun.get('embedded_tokens', 0):,} tokens"))
    return lines


def load_results(workdir: str | os.PathLike | None = None, region_mode: str = "exons") -> list[dict]:
    """Every saved result of one region mode in the work folder, smallest cohort first."""
    folder = Path(workdir or DEFAULT_WORKDIR) / "results"
    results = [json.loads(path.read_text()) for path in sorted(folder.glob(f"cohort-n*-{region_mode}.json"))]
    return sorted((r for r in results if r["cold"]["returncode"] == 0), key=lambda r: r["n_subjects"])


def fit_memory_exponents(results: Sequence[dict], min_rise_gib: float = 0.05) -> list[dict]:
    """Per stage (asset, and partition for partitioned ones), the log-log slope of its memory rise against the
    non-reference units it handles (a partition's own; the sum over partitions for the unpartitioned stages), over
    the cohort sizes at which it rose by at least `min_rise_gib` (less is within what the allocator hands back from
    earlier steps of the same process); stages with fewer than two such sizes are left out."""
    if len(results) < 2:
        return []
    units = [non_reference_units(r) for r in results]
    stages: dict[tuple[str, str | None], dict[int, float]] = {}
    for size, result in enumerate(results):
        for step in result["cold"]["steps"]:
            stages.setdefault((step["asset"], step["partition"]), {})[size] = step["rise_rss"]
    fits = []
    for (asset, partition), rises in stages.items():
        used = [size for size, rise in sorted(rises.items()) if rise >= min_rise_gib * _GIB]
        x = [units[size].get(partition, 0) if partition else sum(units[size].values()) for size in used]
        if len(used) < 2 or min(x) <= 0 or len(set(x)) < 2:
            continue
        slope = float(np.polyfit(np.log(x), np.log([rises[size] for size in used]), 1)[0])
        fits.append({"asset": asset, "partition": partition, "subjects": [results[i]["n_subjects"] for i in used],
                     "units": x, "rise_gib": [rises[size] / _GIB for size in used], "exponent": slope})
    return sorted(fits, key=lambda fit: -fit["exponent"])


def format_scaling(results: Sequence[dict]) -> str:
    fits = fit_memory_exponents(results)
    if not fits:
        return ""
    sizes = ", ".join(f"{r['n_subjects']:,}" for r in results)
    lines = [f"memory rise per stage vs its non-reference units, over {sizes} subjects (log-log slope; 1 = linear; "
             "sizes where the stage rose by under 0.05 GiB left out):",
             f"{'stage':<30}{'subjects':>26}{'units':>38}{'rise GiB':>22}{'exponent':>10}"]
    for fit in fits:
        stage = fit["asset"] + (f"[{fit['partition']}]" if fit["partition"] else "")
        lines.append(f"{stage:<30}{' / '.join(f'{n // 1000}k' for n in fit['subjects']):>26}"
                     f"{' / '.join(f'{u:,}' for u in fit['units']):>38}"
                     f"{' / '.join(f'{r:.2f}' for r in fit['rise_gib']):>22}{fit['exponent']:>10.2f}")
    worst = max(fit["exponent"] for fit in fits)
    lines.append(f"  steepest: {worst:.2f} ({'no faster than linear' if worst <= 1.1 else 'FASTER than linear'})")
    return "\n".join(lines)
