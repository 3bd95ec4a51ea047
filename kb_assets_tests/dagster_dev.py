"""`kb-assets ui` as a test fixture: upstream assets materialized beforehand into the recipe's own Dagster history,
the UI started as a user starts it (DAGSTER_HOME unset, its own session, a free 127.0.0.1 port), and everything it
started stopped afterwards. /proc tells which processes it left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from kb_assets.definitions import build_definitions
from kb_assets.settings import PROJECT_ROOT, RECIPE_ENV, Recipe

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

_WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


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


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_loaded(url: str, process: subprocess.Popen, log: Path, location: str = "kb_assets",
                      timeout: float = 180.0) -> None:
    """Poll the webserver's GraphQL until the code location has loaded (not merely until the port answers).
    Fails at once, with the log's tail, if the UI exits or the location fails to load."""
    deadline = time.monotonic() + timeout
    state = "webserver not answering"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kb-assets ui exited with {process.returncode} (log {log}):\n{tail(log)}")
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
    raise TimeoutError(f"kb-assets ui not ready after {timeout:.0f} s ({state}; log {log}):\n{tail(log)}")


def session_members(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live (not zombie) process of a session, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        state, _ppid, _pgrp, sid = stat[stat.rindex(")") + 2:].split()[:4]
        if int(sid) == session and state != "Z":
            members.append((int(entry.name), command))
    return members


def kill_session(session: int) -> None:
    for pid, _ in session_members(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class RunningUi:
    url: str
    process: subprocess.Popen
    log: Path
    recipe: Recipe


@contextmanager
def kb_assets_ui(recipe: Recipe, log: Path, timeout: float = 180.0) -> Iterator[RunningUi]:
    """`kb-assets ui RECIPE --port P` in a session of its own (as a terminal or service manager starts it), with
    DAGSTER_HOME unset so the recipe's own history is used; yields once the code location has loaded. Whatever
    is left of its session afterwards is killed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({RECIPE_ENV: str(recipe.source), "PYTHONUNBUFFERED": "1"})
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "kb_assets.cli", "ui", str(recipe.source), "--port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_loaded(url, process, log, timeout=timeout)
        yield RunningUi(url, process, log, recipe)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        kill_session(process.pid)
        process.wait()

