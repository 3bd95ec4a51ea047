"""DNABERT-2 checkpoint folders: read one safely (no code from the folder runs), or write one with seeded random
weights in exactly the real layout.

The real `zhihan1996/DNABERT-2-117M` folder holds config.json (no `model_type`, no `architectures`),
pytorch_model.bin (a BertForMaskedLM state dict: `bert.*` encoder weights plus the `cls.predictions.*`
masked-LM head), tokenizer.json and tokenizer_config.json. Demo data and tests all over the project use
`write_checkpoint` to get such a folder without downloading 470 MB.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn

from kb_assets.encoders.model import DnaBert2Config
from kb_assets.encoders.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE
from kb_assets.encoders.weights import BIN_WEIGHTS_FILE, SAFETENSORS_WEIGHTS_FILE, read_state_dict
from kb_assets.encoders.weights import weights_file as find_weights_file
from kb_assets.errors import InputError

CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Same std as the real config's initializer_range, so activations have realistic magnitudes.
_INIT_STD = 0.02
ENCODER_PREFIX = "bert."
MLM_HEAD_PREFIX = "cls."
_REQUIRED_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_GET_REAL_CHECKPOINT = "download zhihan1996/DNABERT-2-117M again and point at that folder"


def read_config(folder: Path) -> DnaBert2Config:
    """The architecture from config.json; stops on a field this implementation cannot honour, naming it."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise InputError(file, None, "config.json not found",
                         "point at a DNABERT-2 checkpoint folder (config.json, pytorch_model.bin, tokenizer.json)")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(file, None, f"not valid JSON ({err})", _GET_REAL_CHECKPOINT) from err
    if not isinstance(raw, dict):
        raise InputError(file, None, "not a JSON object", _GET_REAL_CHECKPOINT)
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
        raise InputError(file, "model_type", f"model_type {model_type!r} is not a DNABERT-2 (BERT) model",
                         "point at a DNABERT-2 checkpoint")
    hidden_act = raw.get("hidden_act", "gelu")
    if hidden_act != "gelu":
        raise InputError(file, "hidden_act",
                         f"hidden_act {hidden_act!r} is not supported (DNABERT-2 uses exact 'gelu')",
                         "point at a DNABERT-2 checkpoint")
    sizes: dict[str, int] = {}
    for key in (*_REQUIRED_SIZES, "type_vocab_size", "max_position_embeddings"):
        if key not in raw and key in _REQUIRED_SIZES:
            raise InputError(file, key, f"required field {key} is missing", _GET_REAL_CHECKPOINT)
        value = raw.get(key, getattr(DnaBert2Config, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(file, key, f"{key} must be a positive integer (got {value!r})", _GET_REAL_CHECKPOINT)
        sizes[key] = value
    if sizes["hidden_size"] % sizes["num_attention_heads"]:
        raise InputError(file, "num_attention_heads",
                         f"hidden_size {sizes['hidden_size']} is not divisible by num_attention_heads "
                         f"{sizes['num_attention_heads']}", _GET_REAL_CHECKPOINT)
    layer_norm_eps = raw.get("layer_norm_eps", DnaBert2Config.layer_norm_eps)
    if isinstance(layer_norm_eps, bool) or not isinstance(layer_norm_eps, (int, float)) or layer_norm_eps <= 0:
        raise InputError(file, "layer_norm_eps", f"layer_norm_eps must be a positive number (got {layer_norm_eps!r})",
                         _GET_REAL_CHECKPOINT)
    return DnaBert2Config(**sizes, layer_norm_eps=float(layer_norm_eps))


def weights_file(folder: Path) -> Path:
    """The folder's weights: model.safetensors when present, else pytorch_model.bin (the real checkpoint's)."""
    return find_weights_file(folder, BIN_WEIGHTS_FILE)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint file under model key names: `bert.` stripped, `cls.*` dropped."""
    return {
        key.removeprefix(ENCODER_PREFIX): tensor
        for key, tensor in read_state_dict(file, _GET_REAL_CHECKPOINT).items()
        if not key.startswith(MLM_HEAD_PREFIX)
    }


def check_weights(model: nn.Module, weights: dict[str, torch.Tensor], file: Path) -> None:
    """Stop, naming the key, on a missing or unexpected weight or a shape that does not fit the config."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    if missing:
        raise InputError(file, ENCODER_PREFIX + missing[0],
                         f"weight missing ({len(missing)} missing in all: {', '.join(missing[:3])}"
                         f"{' …' if len(missing) > 3 else ''})",
                         "use the complete checkpoint whose config.json sits beside it")
    unexpected = [key for key in weights if key not in expected]
    if unexpected:
        raise InputError(file, ENCODER_PREFIX + unexpected[0],
                         f"unexpected weight ({len(unexpected)} in all), not part of DNABERT-2's encoder",
                         "point at a DNABERT-2 checkpoint; its config.json must describe these weights")
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape:
            raise InputError(file, ENCODER_PREFIX + key,
                             f"shape {list(tensor.shape)} does not match {list(expected[key].shape)} from config.json",
                             "use the config.json that belongs to these weights")


def real_config(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    name_or_path: str = "zhihan1996/DNABERT-2-117M",
) -> dict:
    """config.json contents as the real checkpoint has them, with the given sizes."""
    return {
        "_name_or_path": name_or_path,
        "alibi_starting_size": 512,
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
            "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": _INIT_STD,
        "intermediate_size": intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.28.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def random_state_dict(
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    intermediate_size: int,
    type_vocab_size: int = 2,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Seeded random weights under the real BertForMaskedLM key names (`bert.` prefix, `cls.predictions.*`).

    LayerNorm weights are near 1 and biases near 0 but not exactly, so every parameter matters in parity tests.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * _INIT_STD + mean

    def layer_norm(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": normal(hidden_size, mean=1.0), f"{prefix}.bias": normal(hidden_size)}

    def linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> dict[str, torch.Tensor]:
        weights = {f"{prefix}.weight": normal(out_features, in_features)}
        if bias:
            weights[f"{prefix}.bias"] = normal(out_features)
        return weights

    word_embeddings = normal(vocab_size, hidden_size)
    state = {
        "bert.embeddings.word_embeddings.weight": word_embeddings,
        "bert.embeddings.token_type_embeddings.weight": normal(type_vocab_size, hidden_size),
        **layer_norm("bert.embeddings.LayerNorm"),
    }
    for index in range(num_hidden_layers):
        layer = f"bert.encoder.layer.{index}"
        state |= linear(f"{layer}.attention.self.Wqkv", 3 * hidden_size, hidden_size)
        state |= linear(f"{layer}.attention.output.dense", hidden_size, hidden_size)
        state |= layer_norm(f"{layer}.attention.output.LayerNorm")
        state |= linear(f"{layer}.mlp.gated_layers", 2 * intermediate_size, hidden_size, bias=False)
        state |= linear(f"{layer}.mlp.wo", hidden_size, intermediate_size)
        state |= layer_norm(f"{layer}.mlp.layernorm")
    state |= linear("cls.predictions.transform.dense", hidden_size, hidden_size)
    state |= layer_norm("cls.predictions.transform.LayerNorm")
    # The masked-LM decoder is tied to the word embeddings, as in the real checkpoint.
    state["cls.predictions.decoder.weight"] = word_embeddings
    state["cls.predictions.decoder.bias"] = normal(vocab_size)
    return state


def write_checkpoint(
    folder: str | os.PathLike,
    tokenizer: Tokenizer,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    seed: int = 0,
    weights_format: Literal["bin", "safetensors"] = "bin",
) -> Path:
    """Write a DNABERT-2 checkpoint folder in the real layout with seeded random weights; returns the folder.

    vocab_size comes from the tokenizer. `weights_format="bin"` writes pytorch_model.bin (a pickled plain tensor
    dict, like the real one); "safetensors" writes model.safetensors instead.
    """
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
    if weights_format not in ("bin", "safetensors"):
        raise ValueError(f"weights_format must be 'bin' or 'safetensors' (got {weights_format!r})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = tokenizer.get_vocab_size()
    config = real_config(vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                         name_or_path=folder.name)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = random_state_dict(vocab_size, hidden_size, num_hidden_layers, intermediate_size, seed=seed)
    # A folder holds one weights file, so a rewrite in the other format removes the old one.
    for stale in (BIN_WEIGHTS_FILE, SAFETENSORS_WEIGHTS_FILE):
        (folder / stale).unlink(missing_ok=True)
    if weights_format == "bin":
        torch.save(state, folder / BIN_WEIGHTS_FILE)
    else:
        # safetensors refuses tensors that share memory: store the tied decoder weight as its own copy.
        state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"].clone()
        save_file(state, str(folder / SAFETENSORS_WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save(str(folder / TOKENIZER_FILE))
    unk, cls, sep, pad, mask = SPECIAL_TOKENS
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": unk, "cls_token": cls,
                        "sep_token": sep, "pad_token": pad, "mask_token": mask}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(tokenizer_config))
    return folder
