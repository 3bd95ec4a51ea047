"""Security: a checkpoint cannot run code (pickle payloads refused unexecuted, Python files never imported in any
family, trust_remote_code never on), SQL is built only from parameters and quoted identifiers, the UI listens on
127.0.0.1."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kb_assets import cli
from kb_assets.encoders import load_encoder
from kb_assets.encoders.caduceus.checkpoint import write_caduceus_checkpoint
from kb_assets.encoders.families import detect_family, load_any_encoder
from kb_assets.encoders.hf import write_esm_checkpoint
from kb_assets.encoders.identity import checkpoint_identity
from kb_assets.errors import InputError
from kb_assets.resources import EncoderResource
from kb_assets.settings import PROJECT_ROOT, RECIPE_ENV
from kb_assets_tests.conftest import write_recipe

PACKAGE = PROJECT_ROOT / "kb_assets"


class RunsAShellCommand:
    """Unpickling this runs `touch <marker>` through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class TouchesAFile:
    """Unpickling this calls Path.touch(marker): no shell involved."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def checkpoint(demo_recipe, tmp_path) -> Path:
    return shutil.copytree(demo_recipe.inputs.checkpoint, tmp_path / "checkpoint")


def _plain_state(folder: Path) -> dict:
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


PAYLOADS = {
    "whole file is a shell command": lambda state, marker: RunsAShellCommand(marker),
    "shell command among the tensors": lambda state, marker: {**state, "bert.pooler": RunsAShellCommand(marker)},
    "file write among the tensors": lambda state, marker: {**state, "bert.pooler": TouchesAFile(marker)},
}


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_pickle_payload_is_refused_without_running_it(checkpoint, tmp_path, payload, writer):
    marker = tmp_path / "code-ran"
    planted = PAYLOADS[payload](_plain_state(checkpoint), marker)
    weights = checkpoint / "pytorch_model.bin"
    if writer == "torch.save":
        torch.save(planted, weights)
    else:  # the legacy (non-zip) format
        with open(weights, "wb") as handle:
            pickle.dump(planted, handle, protocol=2)
    # Proof the payload is live: loading it without weights_only runs it.
    if writer == "torch.save":
        torch.load(weights, weights_only=False)
    else:
        pickle.loads(weights.read_bytes())
    assert marker.exists()
    marker.unlink()

    expected = (f"{weights}: not loaded: it holds objects other than plain tensors (unpickling them could run code) "
                "or is not a PyTorch weights file at all. Fix: save the weights as a plain state dict "
                "(torch.save(model.state_dict(), path)) or as model.safetensors")
    with pytest.raises(InputError) as caught:
        load_encoder(checkpoint, device="cpu", dtype="float32")
    assert str(caught.value) == expected
    # The assets' path: the identity only hashes the file; the model load refuses it the same way.
    resource = EncoderResource(checkpoint=str(checkpoint), device="cpu", dtype="float32")
    assert resource.identity().model_sha256
    with pytest.raises(InputError) as caught:
        resource.encoder()
    assert str(caught.value) == expected
    assert not marker.exists()


def test_safetensors_is_read_and_a_hostile_bin_beside_it_never_unpickled(checkpoint, tmp_path):
    state = _plain_state(checkpoint)
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"].clone()  # untied for safetensors
    save_file(state, str(checkpoint / "model.safetensors"))
    marker = tmp_path / "code-ran"
    torch.save(RunsAShellCommand(marker), checkpoint / "pytorch_model.bin")
    encoder = load_encoder(checkpoint, device="cpu", dtype="float32")
    assert encoder.hidden_size == 64
    assert checkpoint_identity(checkpoint, "cpu", "float32").weights.name == "model.safetensors"
    assert not marker.exists()


def _dnabert2(demo_recipe, folder: Path) -> Path:
    return Path(shutil.copytree(demo_recipe.inputs.checkpoint, folder))


def _caduceus(demo_recipe, folder: Path) -> Path:
    return write_caduceus_checkpoint(folder, d_model=32, n_layer=2, model_max_length=1024)


def _transformers(demo_recipe, folder: Path) -> Path:
    return write_esm_checkpoint(folder)


def _transformers_with_auto_map(demo_recipe, folder: Path) -> Path:
    """Nucleotide Transformer v2's case: a model_type transformers knows, but config.json names its own code."""
    write_esm_checkpoint(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_esm.EsmConfig", "AutoModel": "modeling_esm.EsmModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# Each family's checkpoint folder as published, with the Python modules that its config.json names (what
# trust_remote_code would import) or that such folders ship; the last is refused, the others load natively or
# through transformers without them.
CHECKPOINT_FOLDERS = {
    "dnabert2": (_dnabert2, ("bert_layers", "configuration_bert", "flash_attn_triton")),
    "caduceus": (_caduceus, ("modeling_caduceus", "configuration_caduceus")),
    "transformers": (_transformers, ("modeling_esm", "configuration_esm")),
    "transformers_with_auto_map": (_transformers_with_auto_map, ("modeling_esm", "configuration_esm")),
}


@pytest.mark.parametrize("family", list(CHECKPOINT_FOLDERS))
def test_python_files_in_the_checkpoint_folder_are_never_imported(demo_recipe, tmp_path, family):
    """Each planted module (and an __init__.py) would leave a marker when imported."""
    write, modules = CHECKPOINT_FOLDERS[family]
    checkpoint = write(demo_recipe, tmp_path / "checkpoint")
    auto_map = json.loads((checkpoint / "config.json").read_text()).get("auto_map", {})
    named = {target.split(".")[0] for targets in auto_map.values()
             for target in ([targets] if isinstance(targets, str) else targets) if target}
    assert named <= set(modules)
    markers = {}
    for module in (*modules, "__init__"):
        markers[module] = tmp_path / f"imported-{module}"
        (checkpoint / f"{module}.py").write_text(f"from pathlib import Path\nPath({str(markers[module])!r}).touch()\n")

    if family == "transformers_with_auto_map":
        with pytest.raises(InputError, match="trust_remote_code"):
            load_any_encoder(checkpoint, device="cpu", dtype="float32")
    else:
        assert detect_family(checkpoint) == family
        assert load_any_encoder(checkpoint, device="cpu", dtype="float32").hidden_size > 0
    assert [name for name, marker in markers.items() if marker.exists()] == []
    assert not set(modules) & set(sys.modules)


def _sources() -> list[tuple[str, ast.Module]]:
    """(path relative to the package, parsed module) of every module of the package."""
    return [(str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), str(path)))
            for path in sorted(PACKAGE.rglob("*.py"))]


# Calls that can run code the package did not write, each reviewed: where it is, and why it is safe.
REVIEWED_CODE_LOADING = {
    ("benchmarks/encoder.py", "importlib.import_module"):
        "the upstream DNABERT-2 code, only when `kb-assets bench encoder --upstream PATH` is asked to compare "
        "against it; never on the assets' path",
    ("cluster/job_entry.py", "importlib.import_module"):
        "the module:function of kb_assets' own SLURM job command (cluster.slurm_pipes.job_entry_command)",
}
# The "transformers" family: architectures transformers implements itself, loaded offline without remote code.
TRANSFORMERS_MODULES = {"encoders/hf.py", "encoders/families.py"}
BUILTINS_THAT_RUN_CODE = {"exec", "eval", "__import__"}
MODULE_LOADERS = {"run_path", "spec_from_file_location", "import_module"}


def _code_loading_offenders(where: str, tree: ast.Module) -> tuple[list[str], set[tuple[str, str]]]:
    """(what in one module could run a checkpoint's code, the reviewed sites seen there)."""
    offenders, reviewed = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                offenders.append(f"{where}:{node.value.lineno}: trust_remote_code={ast.unparse(node.value)}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            offenders += [f"{where}:{node.lineno}: imports {n}" for n in names
                          if n.split(".")[0] == "transformers" and where not in TRANSFORMERS_MODULES]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
            given = {keyword.arg: keyword.value for keyword in node.keywords}
            for name, wanted in (("trust_remote_code", False), ("local_files_only", True)):
                value = given.get(name)
                if not (isinstance(value, ast.Constant) and value.value is wanted):
                    offenders.append(f"{where}:{node.lineno}: from_pretrained without {name}={wanted}")
        elif isinstance(node, ast.Call) and (getattr(node.func, "id", None) in BUILTINS_THAT_RUN_CODE
                                             or getattr(node.func, "attr", None) in MODULE_LOADERS):
            site = (where, ast.unparse(node.func))
            if site in REVIEWED_CODE_LOADING:
                reviewed.add(site)
            else:
                offenders.append(f"{where}:{node.lineno}: calls {site[1]}")
    return offenders, reviewed


def test_no_checkpoint_code_can_run_from_the_package():
    """No trust_remote_code but False; every from_pretrained offline and without remote code; transformers only in
    the transformers family's modules; no exec, eval or module loading but at the reviewed sites."""
    offenders, reviewed = [], set()
    for where, tree in _sources():
        found, seen = _code_loading_offenders(where, tree)
        offenders, reviewed = offenders + found, reviewed | seen
    assert offenders == []
    assert reviewed == set(REVIEWED_CODE_LOADING), f"reviewed, but gone: {set(REVIEWED_CODE_LOADING) - reviewed}"


def test_the_code_loading_check_catches_remote_code():
    bad = ast.parse("AutoModel.from_pretrained(folder, trust_remote_code=True, local_files_only=True)\n"
                    "AutoConfig.from_pretrained(folder, trust_remote_code=False)\n"
                    "import transformers\n"
                    "module = importlib.import_module(name)\n"
                    "exec(source)\n")
    offenders, reviewed = _code_loading_offenders("x.py", bad)
    assert sorted(offenders) == [
        "x.py:1: from_pretrained without trust_remote_code=False", "x.py:1: trust_remote_code=True",
        "x.py:2: from_pretrained without local_files_only=True", "x.py:3: imports transformers",
        "x.py:4: calls importlib.import_module", "x.py:5: calls exec"]
    assert reviewed == set()


# Interpolated into SQL text, only these may appear: identifiers quoted by quote_identifier, string literals quoted by
# _sql_string, integers, and the reviewed fragments below, each built from those or from constants.
SAFE_SQL_CALLS = {"quote_identifier", "_sql_string", "int"}
SAFE_SQL_FRAGMENTS = {
    ("storage/warehouse.py", "source"): "read_parquet(<_sql_string(path)>, hive_partitioning = <true|false>)",
    ("storage/warehouse.py", "pattern"): "_sql_string(<the warehouse's parquet glob>), for the facts view",
    ("storage/warehouse.py", "query"): "a derived view's query: the literal text of storage/views.py DERIVED_VIEWS "
                                       "(checked below), filled in with str.format (whose values this scan checks)",
}
# SQL handed over whole, reviewed.
REVIEWED_SQL = {
    ("cli.py", "query"): "the user's own statement (`kb-assets sql`), run on a read-only connection",
}
SQL_METHODS = {"execute", "executemany", "sql", "query", "read_sql", "from_query"}
# Variables that hold SQL templates (storage/views.py fills its derived views' queries with str.format).
SQL_TEMPLATE_NAMES = {"query", "sql", "statement"}


def _safe_sql_call(value: ast.expr) -> bool:
    """A safe call, or a mapping of names to safe calls (`**{key: quote_identifier(…) for …}` filling a template)."""
    if isinstance(value, ast.DictComp):
        return _safe_sql_call(value.value)
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) in SAFE_SQL_CALLS


def _formats_sql(node: ast.AST) -> bool:
    """A `.format(...)` call on SQL text: a variable named as SQL, or a string constant that reads as SQL."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"):
        return False
    template = node.func.value
    if isinstance(template, ast.Name):
        return template.id.lower() in SQL_TEMPLATE_NAMES
    return isinstance(template, ast.Constant) and isinstance(template.value, str) and bool(
        re.search(r"\b(select|from|create|insert|update|delete)\b", template.value, re.IGNORECASE))


def _sql_offenders(where: str, tree: ast.Module) -> tuple[int, list[str], set[tuple[str, str]]]:
    """(SQL call sites seen, those that build SQL from anything but constants, quoted names and reviewed fragments,
    the reviewed fragments and statements used)."""
    seen, offenders, reviewed = 0, [], set()
    for node in ast.walk(tree):
        if _formats_sql(node):
            # A SQL template filled with str.format: the same rule as an f-string, for every value filled in.
            values = [*node.args, *(keyword.value for keyword in node.keywords)]
            offenders += [f"{where}:{node.lineno}: {{{ast.unparse(value)}}} in SQL ({ast.unparse(node.func)})"
                          for value in values if not _safe_sql_call(value)]
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS and node.args):
            continue
        seen += 1
        sql = node.args[0]
        if isinstance(sql, ast.Constant) or (isinstance(sql, ast.Name) and sql.id.isupper()):
            continue
        if isinstance(sql, ast.Name) and (where, sql.id) in REVIEWED_SQL:
            reviewed.add((where, sql.id))
            continue
        if not isinstance(sql, ast.JoinedStr):
            offenders.append(f"{where}:{node.lineno}: SQL built as {ast.unparse(sql)[:60]}")
            continue
        for part in sql.values:
            if not isinstance(part, ast.FormattedValue):
                continue
            value = part.value
            if _safe_sql_call(value):
                continue
            if isinstance(value, ast.Name) and (where, value.id) in SAFE_SQL_FRAGMENTS:
                reviewed.add((where, value.id))
                continue
            offenders.append(f"{where}:{node.lineno}: {{{ast.unparse(value)}}} in SQL")
    return seen, offenders, reviewed


def test_sql_is_built_from_parameters_and_quoted_identifiers_only():
    """Every SQL string handed to DuckDB (or pandas) in the package: a constant, or an f-string whose every
    interpolation is a quoted identifier/literal, an integer or a reviewed fragment. No %-formatting, .format or +
    on SQL."""
    seen, offenders, reviewed = 0, [], set()
    for where, tree in _sources():
        n, found, used = _sql_offenders(where, tree)
        seen, offenders, reviewed = seen + n, offenders + found, reviewed | used
    assert seen >= 6  # the warehouse's and the CLI's own, at least
    assert offenders == [], "pass values as parameters (?), names through quote_identifier: " + "; ".join(offenders)
    assert reviewed == set(SAFE_SQL_FRAGMENTS) | set(REVIEWED_SQL), "reviewed, but gone: " + str(
        set(SAFE_SQL_FRAGMENTS) | set(REVIEWED_SQL) - reviewed)


def test_derived_view_queries_are_constant_text():
    """What the `query` fragment stands for: DERIVED_VIEWS is a literal (no name, call or f-string in it)."""
    [assignment] = [node for node in ast.parse((PACKAGE / "storage" / "views.py").read_text()).body
                    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "DERIVED_VIEWS"
                    or isinstance(node, ast.Assign) and "DERIVED_VIEWS" in {getattr(t, "id", None)
                                                                             for t in node.targets}]
    views = ast.literal_eval(assignment.value)
    assert views and all(isinstance(query, str) for _, _, query in views)


def test_the_sql_check_catches_interpolated_values():
    bad = ast.parse("c.execute(f\"select * from t where id = '{subject}'\")\n"
                    "c.execute('select * from ' + name)\n"
                    "c.execute(f'select * from {quote_identifier(name)} where id = ?', [subject])\n"
                    "c.execute(f'select * from t limit {int(limit)}')\n"
                    "c.sql(query)\n"
                    "text = query.format(p=prefix, q=quote_identifier(name))\n"
                    "text = 'select * from {t}'.format(t=table)\n")
    seen, offenders, reviewed = _sql_offenders("x.py", bad)
    assert (seen, sorted(offenders), reviewed) == (5, [
        "x.py:1: {subject} in SQL", "x.py:2: SQL built as 'select * from ' + name", "x.py:5: SQL built as query",
        "x.py:6: {prefix} in SQL (query.format)", "x.py:7: {table} in SQL ('select * from {t}'.format)"], set())


def test_the_ui_binds_to_127_0_0_1_and_the_readme_says_how_to_reach_it_safely(demo_recipe, tmp_path, monkeypatch):
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no ui target"
    assert "kb-assets ui" in recipe.group(1)
    assert not re.search(r"--host[ =](?!127\.0\.0\.1\b)", recipe.group(1)), recipe.group(1)
    assert "0.0.0.0" not in makefile

    # What `kb-assets ui` starts: dagster dev on 127.0.0.1 (run_in_own_group and the final os._exit stood in for).
    started = []

    class Exited(Exception):
        pass

    def exit_(code):
        raise Exited(code)

    monkeypatch.setattr(cli, "run_in_own_group", lambda command, env, cwd: started.append(list(command)) or 0)
    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setenv(RECIPE_ENV, str(demo_recipe.source))  # main() points it at --recipe; restored afterwards
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    own = write_recipe(tmp_path / "ui", demo_recipe)
    with pytest.raises(Exited):
        cli.main(["ui", "--recipe", str(own.source)])
    [command] = started
    assert command[1:4] == ["-m", "dagster", "dev"]
    assert command[command.index("--host") + 1] == "127.0.0.1"

    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "The UI binds to 127.0.0.1" in readme
    assert "ssh -L 3000:127.0.0.1:3000" in readme
