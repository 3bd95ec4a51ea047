"""Caduceus checkpoint folders: read one safely (config.json as data, weights through safetensors or
`torch.load(weights_only=True)`, nothing from the folder imported or run), or write one with seeded random weights
in exactly the public checkpoints' layout.

The public folders hold config.json, model.safetensors (a `CaduceusForMaskedLM` state dict saved by
`save_pretrained`), tokenizer_config.json, special_tokens_map.json and Python files that are never read. Weight
names, for layer i (PS = rcps, PH = plain):

    caduceus.backbone.embeddings.word_embeddings.embedding.weight        PS   (….word_embeddings.weight in PH)
    caduceus.backbone.embeddings.word_embeddings.complement_map          PS   int64 buffer, checked against config
    caduceus.backbone.layers.i.mixer.submodule.mamba_{fwd,rev}.*         PS   (….mixer.mamba_{fwd,rev}.* in PH)
    caduceus.backbone.layers.i.norm.weight                               (….norm.submodule.weight: PS unfused)
    caduceus.backbone.norm_f.weight                                      (….norm_f.submodule.weight: PS unfused)
    lm_head.complement_map                                               PS   buffer of the masked-LM head

`save_pretrained` drops tensors that share memory with one saved earlier, so the tied reverse-direction
in_proj/out_proj and the LM head weight (tied to the embedding) are absent; present, they must equal what they are
tied to. The masked-LM head is not part of the encoder and is otherwise ignored.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from kb_assets.encoders.caduceus.config import CaduceusConfig, parse_config, read_caduceus_config
from kb_assets.encoders.caduceus.model import CaduceusModel
from kb_assets.encoders.caduceus.tokenizer import (
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG_FILE,
    CaduceusTokenizer,
    tokenizer_config,
)
from kb_assets.encoders.encoder import resolve_device, resolve_dtype
from kb_assets.encoders.families import CONFIG_FILE, FamilyEncoder
from kb_assets.encoders.weights import BIN_WEIGHTS_FILE, SAFETENSORS_WEIGHTS_FILE, read_state_dict
from kb_assets.encoders.weights import weights_file as find_weights_file
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256

SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
MASKED_LM_PREFIX = "caduceus."
# Heads of CaduceusForMaskedLM / CaduceusForSequenceClassification: not the encoder.
HEAD_PREFIXES = ("lm_head.", "score.")
TIED_PROJECTIONS = ("in_proj.weight", "in_proj.bias", "out_proj.weight", "out_proj.bias")
EMBEDDING_COMPLEMENT_KEY = "backbone.embeddings.word_embeddings.complement_map"
_GET_REAL_CHECKPOINT = "download the Caduceus checkpoint again and point at that folder"


def weights_file(folder: Path) -> Path:
    """model.safetensors when present (the public checkpoints'), else pytorch_model.bin."""
    return find_weights_file(folder, SAFETENSORS_WEIGHTS_FILE)


def checkpoint_key(model_key: str, config: CaduceusConfig) -> str:
    """Where a `CaduceusModel` parameter sits in the upstream backbone's state dict (without `caduceus.`)."""
    parts = model_key.split(".")
    if parts[0] == "embedding":
        return "backbone.embeddings.word_embeddings." + ("embedding." if config.rcps else "") + parts[-1]
    if parts[0] == "norm_f":
        wrapped = config.rcps and not config.fused_add_norm
        return "backbone.norm_f." + ("submodule." if wrapped else "") + parts[-1]
    layer, rest = parts[1], ".".join(parts[2:])
    if rest.startswith("norm."):
        wrapped = config.rcps and not config.fused_add_norm
        return f"backbone.layers.{layer}.norm." + ("submodule." if wrapped else "") + parts[-1]
    return f"backbone.layers.{layer}.mixer." + ("submodule." if config.rcps else "") + rest


def _tied_aliases(config: CaduceusConfig) -> dict[str, str]:
    """Checkpoint key of each tied reverse-direction projection → the model key it is tied to."""
    if not (config.bidirectional and config.bidirectional_weight_tie):
        return {}
    aliases = {}
    for index in range(config.n_layer):
        for name in TIED_PROJECTIONS:
            forward = f"layers.{index}.mamba_fwd.{name}"
            aliases[checkpoint_key(forward, config).replace("mamba_fwd", "mamba_rev")] = forward
    return aliases


def encoder_weights(state: dict[str, torch.Tensor], model: CaduceusModel, file: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under `CaduceusModel` names, after checking that they are exactly what config.json
    describes: no weight missing, none unexpected, every shape and every tied copy right."""
    config = model.config
    # Errors name keys as the file spells them.
    prefix = MASKED_LM_PREFIX if any(key.startswith(MASKED_LM_PREFIX) for key in state) else ""
    state = {key.removeprefix(prefix): value for key, value in state.items()}
    expected = model.state_dict()
    by_checkpoint_key = {checkpoint_key(key, config): key for key in expected}
    aliases = _tied_aliases(config)
    weights: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(HEAD_PREFIXES):
            if key.endswith("complement_map"):
                _check_complement(tensor, config, file, key)
            continue
        if key == EMBEDDING_COMPLEMENT_KEY:
            _check_complement(tensor, config, file, prefix + key)
            continue
        if key in aliases:
            continue  # checked below, once the weight it is tied to has been read
        if key not in by_checkpoint_key:
            raise InputError(file, prefix + key, "unexpected weight, not part of the Caduceus backbone that "
                             f"config.json describes (rcps={config.rcps}, fused_add_norm={config.fused_add_norm}, "
                             f"bidirectional_weight_tie={config.bidirectional_weight_tie})",
                             "use the config.json that belongs to these weights")
        model_key = by_checkpoint_key[key]
        if tensor.shape != expected[model_key].shape:
            raise InputError(file, prefix + key, f"shape {list(tensor.shape)} does not match "
                             f"{list(expected[model_key].shape)} from config.json",
                             "use the config.json that belongs to these weights")
        weights[model_key] = tensor
    missing = [prefix + checkpoint_key(key, config) for key in expected if key not in weights]
    if missing:
        raise InputError(file, missing[0], f"weight missing ({len(missing)} missing in all)",
                         "use the complete checkpoint whose config.json sits beside it")
    for key, model_key in aliases.items():
        if key in state and not torch.equal(state[key], weights[model_key]):
            raise InputError(file, prefix + key, "differs from the forward direction's copy, but config.json ties "
                             "the two directions' projections (bidirectional_weight_tie)",
                             "use the config.json that belongs to these weights")
    if config.rcps and EMBEDDING_COMPLEMENT_KEY not in state:
        raise InputError(file, prefix + EMBEDDING_COMPLEMENT_KEY,
                         "the RC-equivariant embedding's complement map is missing", _GET_REAL_CHECKPOINT)
    return weights


def _check_complement(tensor: torch.Tensor, config: CaduceusConfig, file: Path, key: str) -> None:
    if tensor.tolist() != list(config.complement_map or range(config.vocab_size)):
        raise InputError(file, key, f"complement map {tensor.tolist()} differs from config.json's "
                         f"{list(config.complement_map or [])}", "use the config.json that belongs to these weights")


def load_caduceus_model(folder: Path) -> tuple[CaduceusModel, Path]:
    """The CPU float32 model of a checkpoint folder, and its weights file."""
    config = read_caduceus_config(folder)
    file = weights_file(folder)
    # Built on the meta device: no time goes into initialising what the checkpoint overwrites.
    with torch.device("meta"):
        model = CaduceusModel(config)
    weights = encoder_weights(read_state_dict(file, _GET_REAL_CHECKPOINT), model, file)
    model.load_state_dict(weights, assign=True)
    model.complement = torch.tensor(config.complement_map or range(config.vocab_size), dtype=torch.long)
    return model.float().eval().requires_grad_(False), file


def check_tokenizer_fits(tokenizer: CaduceusTokenizer, config: CaduceusConfig, folder: Path) -> None:
    """The tokenizer's ids must fit the embedding, and for PS the config's complement map must pair A/T and C/G."""
    if tokenizer.vocab_size > config.vocab_size:
        raise InputError(tokenizer.path, None, f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{config.vocab_size}", "use the tokenizer_config.json that belongs to this checkpoint")
    if config.rcps:
        for token_id, partner in tokenizer.complement_ids().items():
            if config.complement_map[token_id] != partner:
                raise InputError(folder / CONFIG_FILE, "complement_map", f"maps token {token_id} "
                                 f"({tokenizer.id_to_token(token_id)}) to {config.complement_map[token_id]}, but "
                                 f"its complement is {partner} ({tokenizer.id_to_token(partner)})",
                                 "use the config.json that belongs to this tokenizer")


# --- writing ----------------------------------------------------------------------------------------------------------

def real_config(variant: Literal["ps", "ph"], d_model: int, n_layer: int, fused_add_norm: bool = True) -> dict:
    """config.json as the public 131k checkpoints have it, with the given sizes."""
    complement = {str(i): i for i in range(16)} | {"7": 10, "8": 9, "9": 8, "10": 7}
    return {
        "architectures": ["CaduceusForMaskedLM"],
        "auto_map": {
            "AutoConfig": "configuration_caduceus.CaduceusConfig",
            "AutoModel": "modeling_caduceus.Caduceus",
            "AutoModelForMaskedLM": "modeling_caduceus.CaduceusForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_caduceus.CaduceusForSequenceClassification",
        },
        "bidirectional": True,
        "bidirectional_strategy": "add",
        "bidirectional_weight_tie": True,
        "complement_map": complement,
        "d_model": d_model,
        "fused_add_norm": fused_add_norm,
        "initializer_cfg": {"initializer_range": 0.02, "n_residuals_per_layer": 1, "rescale_prenorm_residual": True},
        "model_type": "caduceus",
        "n_layer": n_layer,
        "norm_epsilon": 1e-05,
        "pad_vocab_size_multiple": 8,
        "rcps": variant == "ps",
        "residual_in_fp32": False,
        "rms_norm": True,
        "ssm_cfg": {"bias": False, "conv_bias": True, "d_conv": 4, "d_state": 16, "dt_init": "random",
                    "dt_init_floor": 0.0001, "dt_max": 0.1, "dt_min": 0.001, "dt_rank": "auto", "dt_scale": 1.0,
                    "expand": 2, "use_fast_path": True},
        "torch_dtype": "float32",
        "transformers_version": "4.38.1",
        "vocab_size": 16,
    }


def random_model_state(config: CaduceusConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights under `CaduceusModel` names, shaped like trained ones: S4D-real A, dt biases spread
    over [0.001, 0.1] after softplus, norms near but not at 1 (and not palindromic, so the fused RCPS strand
    flip matters), embeddings and projections at upstream's init scales."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, bound: float) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

    with torch.device("meta"):
        shapes = {key: value.shape for key, value in CaduceusModel(config).state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        name = ".".join(key.split(".")[-2:])
        if key == "embedding.weight":
            state[key] = torch.randn(*shape, generator=generator) * 0.3
        elif key.endswith("norm.weight") or key.endswith("norm_f.weight"):
            state[key] = 1 + uniform(*shape, bound=0.2)
        elif key.endswith("norm.bias") or key.endswith("norm_f.bias"):
            state[key] = uniform(*shape, bound=0.05)
        elif key.endswith("A_log"):
            state[key] = torch.log(torch.arange(1, shape[1] + 1, dtype=torch.float32)).expand(shape) \
                + uniform(*shape, bound=0.1)
        elif key.endswith(".D"):
            state[key] = 1 + uniform(*shape, bound=0.1)
        elif name == "dt_proj.bias":
            dt = torch.exp(torch.rand(*shape, generator=generator) * (math.log(0.1) - math.log(0.001))
                           + math.log(0.001))
            state[key] = dt + torch.log(-torch.expm1(-dt))  # softplus⁻¹
        elif name == "dt_proj.weight":
            state[key] = uniform(*shape, bound=config.dt_rank ** -0.5)
        elif name == "out_proj.weight":
            state[key] = uniform(*shape, bound=shape[1] ** -0.5) / math.sqrt(config.n_layer)
        elif key.endswith(".weight"):
            state[key] = uniform(*shape, bound=math.prod(shape[1:]) ** -0.5)
        else:  # remaining biases
            state[key] = uniform(*shape, bound=0.05)
    return state


def checkpoint_state(model_state: dict[str, torch.Tensor], config: CaduceusConfig) -> dict[str, torch.Tensor]:
    """`CaduceusModel` weights → the state dict `CaduceusForMaskedLM.save_pretrained` writes (see module doc)."""
    state = {MASKED_LM_PREFIX + checkpoint_key(key, config): value.contiguous()
             for key, value in model_state.items()}
    if config.rcps:
        complement = torch.tensor(config.complement_map, dtype=torch.long)
        state[MASKED_LM_PREFIX + EMBEDDING_COMPLEMENT_KEY] = complement
        state["lm_head.complement_map"] = complement.clone()
    return state


def write_caduceus_checkpoint(
    folder: str | os.PathLike,
    *,
    variant: Literal["ps", "ph"] = "ps",
    d_model: int = 256,
    n_layer: int = 16,
    seed: int = 0,
    fused_add_norm: bool = True,
    model_max_length: int = 131072,
    weights_format: Literal["safetensors", "bin"] = "safetensors",
) -> Path:
    """Write a Caduceus checkpoint folder in the public layout with seeded random weights; returns the folder.

    The defaults are the public 131k checkpoints' shape (d_model 256, 16 layers, 131,072-token context).
    """
    if variant not in ("ps", "ph"):
        raise ValueError(f"variant must be 'ps' or 'ph' (got {variant!r})")
    if weights_format not in ("safetensors", "bin"):
        raise ValueError(f"weights_format must be 'safetensors' or 'bin' (got {weights_format!r})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = real_config(variant, d_model, n_layer, fused_add_norm)
    (folder / CONFIG_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    config = parse_config(raw, folder / CONFIG_FILE)
    state = checkpoint_state(random_model_state(config, seed), config)
    for stale in (SAFETENSORS_WEIGHTS_FILE, BIN_WEIGHTS_FILE):
        (folder / stale).unlink(missing_ok=True)
    if weights_format == "safetensors":
        save_file(state, str(folder / SAFETENSORS_WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        torch.save(state, folder / BIN_WEIGHTS_FILE)
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(tokenizer_config(model_max_length), indent=2) + "\n")
    (folder / SPECIAL_TOKENS_MAP_FILE).write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n")
    return folder


# --- loading ----------------------------------------------------------------------------------------------------------

def load_caduceus_encoder(
    folder: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    model_id: str | None = None,
) -> FamilyEncoder:
    """Load a Caduceus checkpoint folder (PS or PH) as a `FamilyEncoder`.

    PS is RC-equivariant in one pass (`rc_mode_native="equivariant"`, see `CaduceusModel`); PH is not (None).
    `max_tokens` is the checkpoint's training length, tokenizer_config.json's model_max_length.
    """
    folder = Path(folder)
    tokenizer = CaduceusTokenizer(folder)
    model, file = load_caduceus_model(folder)
    config = model.config
    check_tokenizer_fits(tokenizer, config, folder)
    target = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target)
    model = model.to(device=target).cast(target_dtype)
    return FamilyEncoder(
        family="caduceus",
        model_id=model_id or folder.resolve().name,
        model_sha256=file_sha256(file),
        model=model,
        tokenizer=tokenizer,
        rc_mode_native="equivariant" if config.rcps else None,
        hidden_size=config.d_model,
        max_tokens=tokenizer.model_max_length,
        device=target,
        dtype=target_dtype,
    )
