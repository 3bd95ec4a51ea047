"""Family detection from config.json alone, and one loader that dispatches to each family's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kb_assets.encoders import Encoder
from kb_assets.encoders.caduceus import write_caduceus_checkpoint
from kb_assets.encoders.families import FamilyEncoder, detect_family, load_any_encoder
from kb_assets.errors import InputError
from kb_assets_tests.encoders.conftest import REAL_REFERENCE
from kb_assets_tests.encoders.test_hf import write_tiny_bert


def config_folder(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def caduceus_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_caduceus_checkpoint(tmp_path_factory.mktemp("families") / "cad", variant="ps", d_model=16, n_layer=1)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("families") / "bert")


def test_each_family_is_detected(small_checkpoint: Path, caduceus_folder: Path, bert_folder: Path, tmp_path: Path):
    assert detect_family(small_checkpoint) == "dnabert2"
    assert detect_family(caduceus_folder) == "caduceus"
    assert detect_family(bert_folder) == "transformers"
    nt_v1 = {"model_type": "esm", "architectures": ["EsmForMaskedLM"], "vocab_size": 4107, "hidden_size": 1280}
    assert detect_family(config_folder(tmp_path / "nt", nt_v1)) == "transformers"
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64}
    assert detect_family(config_folder(tmp_path / "llama", llama)) == "transformers"


def test_the_real_dnabert2_config_is_dnabert2(tmp_path: Path):
    if not (REAL_REFERENCE / "config.json").is_file():
        pytest.skip(f"{REAL_REFERENCE} is not present (outside this team's CI)")
    folder = tmp_path / "dnabert2"
    folder.mkdir()
    shutil.copy(REAL_REFERENCE / "config.json", folder / "config.json")
    assert detect_family(folder) == "dnabert2"


@pytest.mark.parametrize(
    ("config", "record", "problem"),
    [
        # HyenaDNA: its own model_type, loadable only through its remote code.
        ({"model_type": "hyenadna", "auto_map": {"AutoModel": "modeling_hyena.HyenaDNAModel"}}, "auto_map",
         "trust_remote_code"),
        # Nucleotide Transformer v2: a native model_type name, but its own modeling code.
        ({"model_type": "esm", "auto_map": {"AutoModelForMaskedLM": "modeling_esm.EsmForMaskedLM"}}, "auto_map",
         "trust_remote_code"),
        ({"model_type": "not_a_model"}, "model_type", "neither DNABERT-2, Caduceus nor"),
        ({"hidden_size": 768}, "model_type", "no model_type"),
    ],
)
def test_unsupported_checkpoints_are_refused_naming_the_families(tmp_path: Path, config, record, problem):
    folder = config_folder(tmp_path / "ckpt", config)
    with pytest.raises(InputError) as caught:
        detect_family(folder)
    assert caught.value.record == record and problem in caught.value.problem
    assert all(name in caught.value.fix for name in ("DNABERT-2", "Caduceus", "transformers"))
    with pytest.raises(InputError):
        load_any_encoder(folder, device="cpu", dtype="float32")


def test_missing_or_broken_config(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.json not found"):
        detect_family(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        detect_family(tmp_path / "broken")


def test_load_any_encoder_dispatches(small_checkpoint: Path, caduceus_folder: Path, bert_folder: Path):
    dnabert2 = load_any_encoder(small_checkpoint, device="cpu", dtype="float32")
    assert isinstance(dnabert2, Encoder)
    caduceus = load_any_encoder(caduceus_folder, device="cpu", dtype="float32")
    assert isinstance(caduceus, FamilyEncoder)
    assert (caduceus.family, caduceus.rc_mode_native, caduceus.model_id) == ("caduceus", "equivariant", "cad")
    bert = load_any_encoder(bert_folder, device="cpu", dtype="float32")
    assert isinstance(bert, FamilyEncoder)
    assert (bert.family, bert.rc_mode_native, bert.model_id) == ("transformers", None, "bert")


def test_a_folder_that_does_not_exist(tmp_path: Path):
    with pytest.raises(InputError, match="not a checkpoint folder"):
        load_any_encoder(tmp_path / "nowhere", device="cpu", dtype="float32")
