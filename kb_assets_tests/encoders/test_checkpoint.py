import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from kb_assets.encoders import encoder as encoder_module
from kb_assets.encoders import load_encoder, write_checkpoint
from kb_assets.errors import InputError
from kb_assets_tests.encoders.conftest import SMALL_SHAPE

SHAPED_KEYS = {
    "bert.embeddings.word_embeddings.weight": [300, 64],
    "bert.embeddings.token_type_embeddings.weight": [2, 64],
    "bert.encoder.layer.1.attention.self.Wqkv.weight": [192, 64],
    "bert.encoder.layer.1.attention.output.dense.weight": [64, 64],
    "bert.encoder.layer.1.mlp.gated_layers.weight": [192, 64],
    "bert.encoder.layer.1.mlp.wo.weight": [64, 96],
    "bert.encoder.layer.1.mlp.layernorm.bias": [64],
    "cls.predictions.decoder.weight": [300, 64],
}


class CodeOnUnpickle:
    """Unpickling this creates a marker file: the kind of payload weights_only=True must refuse to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def hidden_states(folder: Path) -> torch.Tensor:
    encoder = load_encoder(folder, device="cpu", dtype="float32")
    ids = torch.tensor([[1, 9, 17, 40, 2, 3], [1, 5, 6, 7, 8, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    with torch.inference_mode():
        return encoder.model(ids, mask)


def test_written_folder_has_the_real_layout(small_checkpoint: Path):
    assert sorted(p.name for p in small_checkpoint.iterdir()) == [
        "config.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((small_checkpoint / "config.json").read_text())
    assert "model_type" not in config and "architectures" not in config
    assert config["auto_map"]["AutoModel"] == "bert_layers.BertModel"
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (300, 64, 2)
    state = torch.load(small_checkpoint / "pytorch_model.bin", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for key, shape in SHAPED_KEYS.items():
        assert list(state[key].shape) == shape, key
    assert not any(key.startswith("bert.pooler") or "position_embeddings" in key for key in state)
    assert len(state) == 4 + 2 * 11 + 6  # embeddings, 11 tensors per layer, masked-LM head
    tokenizer_config = json.loads((small_checkpoint / "tokenizer_config.json").read_text())
    assert tokenizer_config["pad_token"] == "[PAD]" and "model_max_length" not in tokenizer_config


def test_written_config_matches_the_real_one_field_for_field(real_reference: Path, tmp_path: Path,
                                                               small_tokenizer: Tokenizer):
    folder = write_checkpoint(tmp_path / "c", small_tokenizer, hidden_size=768, num_hidden_layers=0,
                              num_attention_heads=12, intermediate_size=3072)
    written = json.loads((folder / "config.json").read_text())
    real = json.loads((real_reference / "config.json").read_text())
    assert list(written) == list(real)
    differing = {key for key in real if written[key] != real[key]}
    assert differing == {"_name_or_path", "num_hidden_layers", "vocab_size"}


def test_weights_are_deterministic_for_a_seed(tmp_path: Path, small_tokenizer: Tokenizer):
    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        folder = write_checkpoint(tmp_path / name, small_tokenizer, seed=seed, **SMALL_SHAPE)
        return torch.load(folder / "pytorch_model.bin", weights_only=True)

    first, again, other = weights("a", 1), weights("b", 1), weights("c", 2)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["bert.encoder.layer.0.mlp.wo.weight"], other["bert.encoder.layer.0.mlp.wo.weight"])


def test_bin_safetensors_and_unprefixed_keys_load_to_the_same_model(tmp_path: Path, small_checkpoint: Path,
                                                                      small_tokenizer: Tokenizer):
    safetensors_folder = write_checkpoint(tmp_path / "st", small_tokenizer, seed=3, weights_format="safetensors",
                                          **SMALL_SHAPE)
    assert not (safetensors_folder / "pytorch_model.bin").exists()
    assert "cls.predictions.decoder.weight" in load_file(safetensors_folder / "model.safetensors")
    unprefixed = copy_checkpoint(small_checkpoint, tmp_path / "unprefixed")
    state = torch.load(unprefixed / "pytorch_model.bin", weights_only=True)
    torch.save({k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")},
               unprefixed / "pytorch_model.bin")
    expected = hidden_states(small_checkpoint)
    assert torch.equal(hidden_states(safetensors_folder), expected)
    assert torch.equal(hidden_states(unprefixed), expected)


def test_encoder_reports_its_identity(small_checkpoint: Path):
    encoder = load_encoder(small_checkpoint, device="cpu", dtype="float32")
    assert encoder.model_id == "tiny-dnabert2"
    assert encoder.model_sha256 == hashlib.sha256((small_checkpoint / "pytorch_model.bin").read_bytes()).hexdigest()
    assert encoder.tokenizer_version == hashlib.sha256((small_checkpoint / "tokenizer.json").read_bytes()).hexdigest()
    assert (encoder.vocab_size, encoder.hidden_size) == (300, 64)
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_auto_dtype_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, small_checkpoint: Path):
    monkeypatch.setattr(encoder_module.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: True)
    assert load_encoder(small_checkpoint).dtype == torch.bfloat16
    monkeypatch.setattr(encoder_module, "cpu_has_native_bf16", lambda: False)
    encoder = load_encoder(small_checkpoint)
    assert (encoder.device, encoder.dtype) == (torch.device("cpu"), torch.float32)


def test_missing_weight_is_named(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "missing")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["bert.encoder.layer.1.mlp.wo.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model.bin: bert.encoder.layer.1.mlp.wo.bias: weight missing"):
        load_encoder(folder, device="cpu")


def test_shape_mismatch_is_named(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "shape")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["bert.encoder.layer.0.attention.self.Wqkv.weight"] = torch.zeros(190, 64)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"Wqkv.weight: shape \[190, 64\] does not match \[192, 64\]"):
        load_encoder(folder, device="cpu")


def test_unexpected_weight_is_named(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "pooler")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["bert.pooler.dense.weight"] = torch.zeros(64, 64)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"bert.pooler.dense.weight: unexpected weight"):
        load_encoder(folder, device="cpu")


def test_pickle_that_is_not_plain_tensors_is_refused_without_running_it(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "pickle")
    marker = tmp_path / "code-ran"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": CodeOnUnpickle(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model.bin: not loaded: it holds objects other than plain tensors"):
        load_encoder(folder, device="cpu")
    assert not marker.exists()


def test_nested_checkpoint_dict_is_refused(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "nested")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({"state_dict": state, "epoch": 3}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="is not a state dict"):
        load_encoder(folder, device="cpu")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num_hidden_layers": None}, r"config.json: num_hidden_layers: required field num_hidden_layers is missing"),
        ({"hidden_act": "relu"}, r"config.json: hidden_act: hidden_act 'relu' is not supported"),
        ({"num_attention_heads": 5}, r"num_attention_heads: hidden_size 64 is not divisible by num_attention_heads 5"),
        ({"model_type": "esm"}, r"model_type: model_type 'esm' is not a DNABERT-2"),
        ({"intermediate_size": "96"}, r"intermediate_size: intermediate_size must be a positive integer"),
    ],
)
def test_config_it_cannot_honour_is_refused(tmp_path: Path, small_checkpoint: Path, edit: dict, message: str):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "config")
    config = json.loads((folder / "config.json").read_text())
    for key, value in edit.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=message):
        load_encoder(folder, device="cpu")


def test_folder_without_weights_is_refused(tmp_path: Path, small_checkpoint: Path):
    folder = copy_checkpoint(small_checkpoint, tmp_path / "noweights")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="neither model.safetensors nor pytorch_model.bin found"):
        load_encoder(folder, device="cpu")


def test_hub_id_loads_from_the_local_cache_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               small_checkpoint: Path):
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(InputError, match="not a checkpoint folder, and not a model in the local Hugging Face cache"):
        load_encoder("someone/DNABERT-2-117M", device="cpu")
    # The cache layout huggingface_hub writes: refs/main names the snapshot folder holding the files.
    repo = cache / "models--someone--DNABERT-2-117M"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(small_checkpoint, repo / "snapshots" / commit)
    encoder = load_encoder("someone/DNABERT-2-117M", device="cpu", dtype="float32")
    assert encoder.model_id == "someone/DNABERT-2-117M"
    assert encoder.hidden_size == 64
