"""`dagster dev` as a test fixture: a Dagster home of its own, upstream assets materialized into it beforehand,
the server started in its own process group on a free 127.0.0.1 port, and the whole group killed afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from kb_assets.definitions import build_definitions
from kb_assets.settings import PROJECT_ROOT, RECIPE_ENV, Recipe

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

_WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def make_dagster_home(folder: Path) -> Path:
    """A Dagster home with the project's instance config (run queue, the `gpu` pool) and the first-visit
    "Join the Dagster community" dialog marked as seen, so it never covers the page."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "data" / "dagster.yaml", folder / "dagster.yaml")
    (folder / ".nux").mkdir(exist_ok=True)
    (folder / ".nux" / "nux.yaml").write_text("seen: 1\n")
    return folder


def materialize_upstream_of(recipe: Recipe, home: Path, asset: str, partition: str) -> None:
    """Materialize, on the instance in `home`, everything `asset` needs for `partition` (not `asset` itself):
    the unpartitioned assets upstream in one run, then the partitioned ones for `partition` in another."""
    defs = build_definitions(recipe)
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    target = dg.AssetKey(asset)
    upstream = dg.AssetSelection.assets(target).upstream().resolve(graph) - {target}
    ordered = [key for key in graph.toposorted_asset_keys if key in upstream]
    unpartitioned = [key for key in ordered if graph.get(key).partitions_def is None]
    partitioned = [key for key in ordered if graph.get(key).partitions_def is not None]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for selection, partition_key in ((unpartitioned, None), (partitioned, partition)):
            if selection:
                job.execute_in_process(asset_selection=selection, partition_key=partition_key, instance=instance,
                                       run_config=QUIET, raise_on_error=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_loaded(url: str, process: subprocess.Popen, log: Path, location: str = "kb_assets",
                      timeout: float = 180.0) -> None:
    """Poll the webserver's GraphQL until the code location has loaded (not merely until the port answers).
    Fails at once, with the log's tail, if `dagster dev` exits or the location fails to load."""
    deadline = time.monotonic() + timeout
    state = "webserver not answering"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode} (log {log}):\n{_tail(log)}")
        try:
            workspace = _graphql(url, _WORKSPACE_QUERY)["data"]["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, OSError, KeyError, TypeError, ValueError):
            time.sleep(0.5)
            continue
        entries = {entry["name"]: entry for entry in workspace.get("locationEntries") or ()}
        entry = entries.get(location)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "RepositoryLocation":
                return
            raise RuntimeError(f"code location {location} failed to load: {loaded.get('message')} (log {log})")
        state = f"location {location}: {entry['loadStatus'] if entry else 'not listed yet'}"
        time.sleep(0.5)
    raise TimeoutError(f"dagster dev not ready after {timeout:.0f} s ({state}; log {log}):\n{_tail(log)}")


def stop_process_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the whole group (dagster dev, webserver, daemon, code servers, run workers), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; wait for the rest of its group to follow.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@contextmanager
def dagster_dev(home: Path, recipe: Recipe, log: Path, timeout: float = 180.0) -> Iterator[str]:
    """`dagster dev -w workspace.yaml` from the repository root on a free 127.0.0.1 port, with DAGSTER_HOME=`home`
    and the recipe `recipe`; yields its URL once the code location has loaded. Output goes to `log`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), RECIPE_ENV: str(recipe.source), "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "--host", "127.0.0.1", "--port",
             str(port)],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_loaded(url, process, log, timeout=timeout)
        yield url
    finally:
        stop_process_group(process)
