"""DNABERT-2 checkpoint folders: write one with seeded random weights in exactly the real layout.

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

from kb_assets.encoders.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE

CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
BIN_WEIGHTS_FILE = "pytorch_model.bin"
SAFETENSORS_WEIGHTS_FILE = "model.safetensors"
# Same std as the real config's initializer_range, so activations have realistic magnitudes.
_INIT_STD = 0.02


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
