"""Security: a checkpoint cannot run code (pickle payloads refused unexecuted, Python files never imported, no
trust_remote_code), SQL is built only from parameters and quoted identifiers, the UI listens on 127.0.0.1."""

from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kb_assets.encoders import load_encoder
from kb_assets.encoders.identity import checkpoint_identity
from kb_assets.errors import InputError
from kb_assets.resources import EncoderResource
from kb_assets.settings import PROJECT_ROOT

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


def test_python_files_in_the_checkpoint_folder_are_never_imported(checkpoint, tmp_path):
    """The real DNABERT-2 folder ships bert_layers.py and configuration_bert.py, named by config.json's auto_map:
    what trust_remote_code would import. Here each would leave a marker when imported."""
    markers = {}
    for module in ("bert_layers", "configuration_bert", "flash_attn_triton", "__init__"):
        markers[module] = tmp_path / f"imported-{module}"
        (checkpoint / f"{module}.py").write_text(f"from pathlib import Path\nPath({str(markers[module])!r}).touch()\n")
    assert "bert_layers.BertModel" in (checkpoint / "config.json").read_text()

    encoder = load_encoder(checkpoint, device="cpu", dtype="float32")
    identity = checkpoint_identity(checkpoint, "cpu", "float32")
    vectors = encoder.embed(["ACGTACGTTTGACCA"], window_tokens=64, window_overlap=8)
    assert vectors.shape == (1, 64) and identity.hidden_size == 64
    assert [name for name, marker in markers.items() if marker.exists()] == []
    assert not {"bert_layers", "configuration_bert", "flash_attn_triton"} & set(sys.modules)


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_trust_remote_code_and_no_transformers_anywhere_in_the_package():
    offenders = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                offenders.append(f"{path}:{node.value.lineno}: trust_remote_code=")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                offenders += [f"{path}:{node.lineno}: imports {n}" for n in names if n.split(".")[0] == "transformers"]
            elif isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval", "__import__"))
                    or getattr(node.func, "attr", None) in ("run_path", "spec_from_file_location", "import_module")):
                offenders.append(f"{path}:{node.lineno}: calls {ast.unparse(node.func)}")
    assert offenders == []


# Interpolated into SQL text, only these may appear: identifiers quoted by quote_identifier, string literals quoted by
# _sql_string, and the named fragments below, each built from those or from constants.
SAFE_SQL_CALLS = {"quote_identifier", "_sql_string"}
SAFE_SQL_FRAGMENTS = {
    ("storage/warehouse.py", "source"): "read_parquet(<_sql_string(path)>, hive_partitioning = <true|false>)",
    ("storage/warehouse.py", "clause"): "a constant clause from this module's own callers; values go as parameters",
}
SQL_METHODS = {"execute", "executemany", "sql", "query", "read_sql", "from_query"}


def _sql_offenders(where: str, tree: ast.Module) -> tuple[int, list[str]]:
    """(SQL call sites seen, those that build SQL from anything but constants, quoted names and reviewed fragments)."""
    seen, offenders = 0, []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS and node.args):
            continue
        seen += 1
        sql = node.args[0]
        if isinstance(sql, ast.Constant) or (isinstance(sql, ast.Name) and sql.id.isupper()):
            continue
        if not isinstance(sql, ast.JoinedStr):
            offenders.append(f"{where}:{node.lineno}: SQL built as {ast.unparse(sql)[:60]}")
            continue
        for part in sql.values:
            if not isinstance(part, ast.FormattedValue):
                continue
            value = part.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) in SAFE_SQL_CALLS:
                continue
            if isinstance(value, ast.Name) and (where, value.id) in SAFE_SQL_FRAGMENTS:
                continue
            offenders.append(f"{where}:{node.lineno}: {{{ast.unparse(value)}}} in SQL")
    return seen, offenders


def test_sql_is_built_from_parameters_and_quoted_identifiers_only():
    """Every SQL string handed to DuckDB (or pandas) in the package: a constant, or an f-string whose every
    interpolation is a quoted identifier/literal or a reviewed fragment. No %-formatting, .format or + on SQL."""
    seen, offenders = 0, []
    for path, tree in _sources():
        n, found = _sql_offenders(str(path.relative_to(PACKAGE)), tree)
        seen, offenders = seen + n, offenders + found
    assert seen >= 6  # the warehouse's and the CLI's own, at least
    assert offenders == [], "pass values as parameters (?), names through quote_identifier: " + "; ".join(offenders)


def test_the_sql_check_catches_interpolated_values():
    bad = ast.parse("c.execute(f\"select * from t where id = '{subject}'\")\n"
                    "c.execute('select * from ' + name)\n"
                    "c.execute(f'select * from {quote_identifier(name)} where id = ?', [subject])\n")
    assert _sql_offenders("x.py", bad) == (
        3, ["x.py:1: {subject} in SQL", "x.py:2: SQL built as 'select * from ' + name"])


def test_the_ui_binds_to_127_0_0_1_and_the_readme_says_how_to_reach_it_safely():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no ui target"
    command = recipe.group(1)
    assert "dagster dev" in command
    assert re.search(r"(--host|-h)[ =]127\.0\.0\.1\b", command), command
    assert "0.0.0.0" not in makefile
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "The UI binds to 127.0.0.1" in readme
    assert "ssh -L 3000:127.0.0.1:3000" in readme
