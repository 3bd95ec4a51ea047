"""Caduceus config.json as data: the architecture numbers, validated, with every field the math depends on.

The public checkpoints (`kuleshov-group/caduceus-{ps,ph}_seqlen-131k_d_model-256_n_layer-16`) store a
`CaduceusConfig` (model_type "caduceus"): d_model, n_layer, vocab_size (already padded to a multiple of
pad_vocab_size_multiple), the RC complement map over token ids, the bidirectional and RCPS switches, the norm
(RMSNorm or LayerNorm), fused_add_norm, and `ssm_cfg` with the Mamba mixer's sizes. Fields that only steer
initialisation or kernels (dt_init, dt_min, dt_max, dt_scale, dt_init_floor, use_fast_path, initializer_cfg) do not
change a forward pass and are not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kb_assets.encoders.families import CONFIG_FILE, read_config_json
from kb_assets.errors import InputError

MODEL_TYPE = "caduceus"
BIDIRECTIONAL_STRATEGIES = ("add", "ew_multiply")
# ssm_cfg keys that size or switch the Mamba mixer, with upstream Mamba's defaults.
_SSM_DEFAULTS = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "conv_bias": True, "bias": False}
# ssm_cfg keys that only matter to initialisation or kernel choice.
_SSM_IGNORED = frozenset({"dt_init", "dt_min", "dt_max", "dt_scale", "dt_init_floor", "use_fast_path", "layer_idx"})
_GET_REAL_CONFIG = "copy config.json from the Caduceus checkpoint again (kuleshov-group/caduceus-…)"


@dataclass(frozen=True)
class CaduceusConfig:
    """What a Caduceus forward pass depends on. `vocab_size` is the padded size of the embedding matrix."""

    d_model: int
    n_layer: int
    vocab_size: int
    rcps: bool
    complement_map: tuple[int, ...] | None  # token id → id of its complement, length vocab_size
    bidirectional: bool = True
    bidirectional_strategy: str = "add"
    bidirectional_weight_tie: bool = True
    rms_norm: bool = True
    fused_add_norm: bool = True
    residual_in_fp32: bool = False
    norm_epsilon: float = 1e-5
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 16
    conv_bias: bool = True
    bias: bool = False

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


def _field(raw: dict, file: Path, key: str, kind: type, default: object = None, *, required: bool = False):
    if key not in raw or raw[key] is None:
        if required:
            raise InputError(file, key, f"required field {key} is missing", _GET_REAL_CONFIG)
        return default
    value = raw[key]
    # bool is an int to Python; a size must not be true/false and a switch must not be 0/1.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(file, key, f"{key} must be a positive integer (got {value!r})", _GET_REAL_CONFIG)
    if kind is bool and not isinstance(value, bool):
        raise InputError(file, key, f"{key} must be true or false (got {value!r})", _GET_REAL_CONFIG)
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise InputError(file, key, f"{key} must be a positive number (got {value!r})", _GET_REAL_CONFIG)
    return float(value) if kind is float else value


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
    """The embedding rows upstream allocates: vocab_size rounded up to a multiple of pad_vocab_size_multiple."""
    return vocab_size + (-vocab_size) % multiple


def _complement_map(raw: dict, file: Path, vocab_size: int) -> tuple[int, ...] | None:
    mapping = raw.get("complement_map")
    if mapping is None:
        return None
    if not isinstance(mapping, dict):
        raise InputError(file, "complement_map", "complement_map must map token ids to token ids", _GET_REAL_CONFIG)
    try:
        pairs = {int(key): value for key, value in mapping.items()}
    except ValueError as err:
        raise InputError(file, "complement_map", f"complement_map has a key that is not a token id ({err})",
                         _GET_REAL_CONFIG) from err
    if sorted(pairs) != list(range(len(pairs))) or len(pairs) > vocab_size:
        raise InputError(file, "complement_map", f"complement_map must cover token ids 0 … n-1 for some n ≤ "
                         f"vocab_size {vocab_size} (got keys {sorted(pairs)[:20]})", _GET_REAL_CONFIG)
    # Upstream extends the map with identities up to the padded vocabulary size.
    table = [pairs.get(index, index) for index in range(vocab_size)]
    if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab_size for v in table):
        raise InputError(file, "complement_map", f"complement_map values must be token ids below {vocab_size}",
                         _GET_REAL_CONFIG)
    if any(table[table[index]] != index for index in range(vocab_size)):
        raise InputError(file, "complement_map", "complement_map is not its own inverse (the complement of a "
                         "complement must be the base itself)", _GET_REAL_CONFIG)
    return tuple(table)


def parse_config(raw: object, file: Path) -> CaduceusConfig:
    """Validate config.json contents; stops on any field this implementation cannot honour, naming it."""
    if not isinstance(raw, dict):
        raise InputError(file, None, "not a JSON object", _GET_REAL_CONFIG)
    if raw.get("model_type") != MODEL_TYPE:
        raise InputError(file, "model_type", f"model_type {raw.get('model_type')!r} is not {MODEL_TYPE!r}",
                         "point at a Caduceus checkpoint folder")
    for key in ("layer_cfg", "mamba_version"):
        if key in raw:
            raise InputError(file, key, f"{key} selects a Mamba-2 or hybrid Caduceus, which is not implemented "
                             "(the native model is the published Mamba-1 BiMamba)", "use a Mamba-1 Caduceus checkpoint")
    d_model = _field(raw, file, "d_model", int, required=True)
    n_layer = _field(raw, file, "n_layer", int, required=True)
    multiple = _field(raw, file, "pad_vocab_size_multiple", int, 8)
    vocab_size = padded_vocab_size(_field(raw, file, "vocab_size", int, required=True), multiple)
    rcps = _field(raw, file, "rcps", bool, False)
    complement_map = _complement_map(raw, file, vocab_size)
    if rcps and complement_map is None:
        raise InputError(file, "complement_map", "rcps is true but complement_map is missing (the RC-equivariant "
                         "embedding needs it)", _GET_REAL_CONFIG)
    bidirectional = _field(raw, file, "bidirectional", bool, True)
    strategy = raw.get("bidirectional_strategy") or "add"
    if bidirectional and strategy not in BIDIRECTIONAL_STRATEGIES:
        raise InputError(file, "bidirectional_strategy", f"bidirectional_strategy {strategy!r} is not one of "
                         f"{BIDIRECTIONAL_STRATEGIES}", _GET_REAL_CONFIG)
    ssm = raw.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise InputError(file, "ssm_cfg", "ssm_cfg must be a JSON object", _GET_REAL_CONFIG)
    unknown = sorted(set(ssm) - set(_SSM_DEFAULTS) - _SSM_IGNORED)
    if unknown:
        raise InputError(file, f"ssm_cfg.{unknown[0]}", f"ssm_cfg field {unknown[0]!r} is not a Mamba-1 mixer "
                         "setting this implementation knows", "use a Mamba-1 Caduceus checkpoint")
    sizes = {key: _field(ssm, file, key, int, _SSM_DEFAULTS[key]) for key in ("d_state", "d_conv", "expand")}
    dt_rank = ssm.get("dt_rank", "auto")
    if dt_rank == "auto":
        dt_rank = math.ceil(d_model / 16)
    elif isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise InputError(file, "ssm_cfg.dt_rank", f"dt_rank must be 'auto' or a positive integer (got {dt_rank!r})",
                         _GET_REAL_CONFIG)
    return CaduceusConfig(
        d_model=d_model,
        n_layer=n_layer,
        vocab_size=vocab_size,
        rcps=rcps,
        complement_map=complement_map,
        bidirectional=bidirectional,
        bidirectional_strategy=strategy,
        bidirectional_weight_tie=_field(raw, file, "bidirectional_weight_tie", bool, True),
        rms_norm=_field(raw, file, "rms_norm", bool, True),
        fused_add_norm=_field(raw, file, "fused_add_norm", bool, True),
        residual_in_fp32=_field(raw, file, "residual_in_fp32", bool, False),
        norm_epsilon=_field(raw, file, "norm_epsilon", float, 1e-5),
        dt_rank=dt_rank,
        conv_bias=_field(ssm, file, "conv_bias", bool, True),
        bias=_field(ssm, file, "bias", bool, False),
        **sizes,
    )


def read_caduceus_config(folder: Path) -> CaduceusConfig:
    return parse_config(read_config_json(folder), folder / CONFIG_FILE)
