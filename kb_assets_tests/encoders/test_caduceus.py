"""Native Caduceus against a deliberately plain float64 reference written from upstream's own formulation:
checkpoint-named weights, the RCPS model as upstream computes it (2·d_model channels, [forward | RC] halves, flips
along length and channels, the fused block's half swap), one sequence at a time and a Python loop over time steps.
Plus RC invariance, padding, checkpoint layout, the tokenizer, and one clear InputError per kind of bad input."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from kb_assets.encoders.caduceus import CaduceusTokenizer, load_caduceus_encoder, write_caduceus_checkpoint
from kb_assets.encoders.caduceus.checkpoint import checkpoint_state, random_model_state
from kb_assets.encoders.caduceus.config import parse_config
from kb_assets.encoders.caduceus.ops import cuda_selective_scan
from kb_assets.encoders.caduceus.tokenizer import PAD_ID
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256

SMALL = {"d_model": 16, "n_layer": 2}
COMPLEMENT_BASE = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def random_dna(length: int, seed: int, alphabet: str = "ACGT") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


def reverse_complement(sequence: str) -> str:
    return "".join(COMPLEMENT_BASE[base] for base in reversed(sequence))


# --- the reference ----------------------------------------------------------------------------------------------------

def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(x))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    centred = x - x.mean(dim=-1, keepdim=True)
    return centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + eps) * weight + bias


def mamba(x: torch.Tensor, w: dict[str, torch.Tensor], prefix: str, tied_prefix: str) -> torch.Tensor:
    """mamba_ssm's Mamba on one sequence x [L, d]; tied projections are read from `tied_prefix`."""
    projection = prefix if prefix + "in_proj.weight" in w else tied_prefix
    length = x.shape[0]
    xz = x @ w[projection + "in_proj.weight"].T + w.get(projection + "in_proj.bias", 0)
    d_inner = xz.shape[1] // 2
    u, z = xz[:, :d_inner], xz[:, d_inner:]
    kernel = w[prefix + "conv1d.weight"][:, 0, :]  # [d_inner, width]
    width = kernel.shape[1]
    conv = torch.zeros_like(u)
    for t in range(length):
        for k in range(width):
            source = t - (width - 1) + k
            if source >= 0:
                conv[t] += kernel[:, k] * u[source]
    u = silu(conv + w[prefix + "conv1d.bias"])
    dt_rank = w[prefix + "dt_proj.weight"].shape[1]
    d_state = w[prefix + "A_log"].shape[1]
    projected = u @ w[prefix + "x_proj.weight"].T
    dt, B, C = projected[:, :dt_rank], projected[:, dt_rank : dt_rank + d_state], projected[:, dt_rank + d_state :]
    delta = softplus(dt @ w[prefix + "dt_proj.weight"].T + w[prefix + "dt_proj.bias"])
    A = -torch.exp(w[prefix + "A_log"])
    state = torch.zeros(d_inner, d_state, dtype=torch.float64)
    y = torch.zeros_like(u)
    for t in range(length):
        state = torch.exp(delta[t][:, None] * A) * state + (delta[t] * u[t])[:, None] * B[t][None, :]
        y[t] = state @ C[t] + w[prefix + "D"] * u[t]
    return (y * silu(z)) @ w[projection + "out_proj.weight"].T + w.get(projection + "out_proj.bias", 0)


def bimamba(x: torch.Tensor, w: dict[str, torch.Tensor], mixer: str, strategy: str = "add") -> torch.Tensor:
    forward = mamba(x, w, mixer + "mamba_fwd.", mixer + "mamba_fwd.")
    backward = mamba(x.flip(0), w, mixer + "mamba_rev.", mixer + "mamba_fwd.").flip(0)
    return forward + backward if strategy == "add" else forward * backward


def rc_flip(x: torch.Tensor) -> torch.Tensor:
    """Upstream's RCPS `rc` of a [L, C] tensor: flip length and channels."""
    return x.flip(0).flip(1)


def reference_forward(folder: Path, token_ids: list[int]) -> torch.Tensor:
    """[L, d_model] float64 for one unpadded sequence, as upstream Caduceus computes it; PS outputs are combined
    as (h[:, :d] + h[:, d:].flip(channels)) / 2."""
    config = json.loads((folder / "config.json").read_text())
    w = {k.removeprefix("caduceus.backbone."): v.double() for k, v in load_file(folder / "model.safetensors").items()}
    eps, d, fused = config["norm_epsilon"], config["d_model"], config["fused_add_norm"]
    ids = torch.tensor(token_ids)
    if not config["rcps"]:
        def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
            if config["rms_norm"]:
                return rms_norm(x, w[prefix + "weight"], eps)
            return layer_norm(x, w[prefix + "weight"], w[prefix + "bias"], eps)

        hidden, residual = w["embeddings.word_embeddings.weight"][ids], None
        for i in range(config["n_layer"]):
            residual = hidden if residual is None else hidden + residual
            hidden = bimamba(norm(residual, f"layers.{i}.norm."), w, f"layers.{i}.mixer.",
                             config["bidirectional_strategy"])
        return norm(hidden + residual, "norm_f.")

    complement = torch.tensor([config["complement_map"][str(i)] for i in range(len(config["complement_map"]))])
    embedding = w["embeddings.word_embeddings.embedding.weight"]
    hidden = torch.cat([embedding[ids], rc_flip(embedding[complement[ids.flip(0)]])], dim=1)
    residual = None
    for i in range(config["n_layer"]):
        zero = torch.zeros_like(hidden)
        previous = zero if residual is None else residual
        if fused:  # RCPSMambaBlock's fused branch: the second half goes to the forward norm
            stream_f = hidden[:, d:] + previous[:, d:]
            stream_r = rc_flip(hidden[:, :d]) + rc_flip(previous[:, :d])
            norm_weight = w[f"layers.{i}.norm.weight"]
        else:  # RCPSAddNormWrapper
            stream_f = hidden[:, :d] + previous[:, :d]
            stream_r = rc_flip(hidden[:, d:]) + rc_flip(previous[:, d:])
            norm_weight = w[f"layers.{i}.norm.submodule.weight"]
        residual = torch.cat([stream_f, rc_flip(stream_r)], dim=1)
        normed = torch.cat([rms_norm(stream_f, norm_weight, eps), rc_flip(rms_norm(stream_r, norm_weight, eps))], 1)
        mixer = f"layers.{i}.mixer.submodule."
        hidden = torch.cat([bimamba(normed[:, :d], w, mixer), rc_flip(bimamba(rc_flip(normed[:, d:]), w, mixer))], 1)
    total = hidden + residual
    norm_f = w["norm_f.weight"] if fused else w["norm_f.submodule.weight"]
    out = torch.cat([rms_norm(total[:, :d], norm_f, eps), rc_flip(rms_norm(rc_flip(total[:, d:]), norm_f, eps))], 1)
    return (out[:, :d] + out[:, d:].flip(1)) / 2


# --- fixtures ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    root = tmp_path_factory.mktemp("caduceus")
    return {
        (variant, fused): write_caduceus_checkpoint(root / f"{variant}-{fused}", variant=variant,
                                                    fused_add_norm=fused, seed=11, model_max_length=4096, **SMALL)
        for variant in ("ps", "ph")
        for fused in (True, False)
    }


def embed(encoder, sequences: list[str]) -> list[torch.Tensor]:
    """Hidden states of each sequence, batched with right padding; each row cut to its length."""
    encoded = [ids for ids, _ in encoder.tokenizer.encode_batch_with_offsets(sequences)]
    longest = max(map(len, encoded))
    ids = torch.full((len(encoded), longest), PAD_ID)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    with torch.inference_mode():
        hidden = encoder.model(ids, mask)
    return [hidden[row, : len(tokens)] for row, tokens in enumerate(encoded)]


# --- the model against the reference ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["ps", "ph"])
@pytest.mark.parametrize("fused", [True, False])
def test_native_forward_matches_the_plain_reference(checkpoints, variant: str, fused: bool):
    encoder = load_caduceus_encoder(checkpoints[variant, fused], device="cpu", dtype="float32")
    # A 5-token scan chunk: lengths below, at and across chunk boundaries, none a multiple of it but one.
    encoder.model.scan_chunk_tokens = 5
    sequences = [random_dna(length, seed=length) for length in (1, 4, 5, 13, 37)]
    sequences[-1] = sequences[-1][:20] + "N" + sequences[-1][21:]
    for sequence, hidden in zip(sequences, embed(encoder, sequences)):
        expected = reference_forward(checkpoints[variant, fused], encoder.tokenizer.encode(sequence))
        torch.testing.assert_close(hidden.double(), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(
    "edit",
    [
        {"ssm_cfg": {"bias": True}},
        {"bidirectional_weight_tie": False},
        {"bidirectional_weight_tie": False, "bidirectional_strategy": "ew_multiply", "ssm_cfg": {"bias": True}},
        {"bidirectional_strategy": "ew_multiply"},
        {"rms_norm": False},
    ],
)
def test_other_mixer_settings_match_the_reference(tmp_path: Path, edit: dict):
    """Projection biases, untied reverse projections, the elementwise-product strategy and LayerNorm (PH)."""
    folder = write_caduceus_checkpoint(tmp_path / "ph", variant="ph", seed=2, **SMALL)
    raw = json.loads((folder / "config.json").read_text())
    raw = {**raw, **edit, "ssm_cfg": {**raw["ssm_cfg"], **edit.get("ssm_cfg", {})}}
    (folder / "config.json").write_text(json.dumps(raw))
    config = parse_config(raw, folder / "config.json")
    save_file(checkpoint_state(random_model_state(config, seed=4), config), str(folder / "model.safetensors"))
    encoder = load_caduceus_encoder(folder, device="cpu", dtype="float32")
    sequence = random_dna(19, seed=6)
    (hidden,) = embed(encoder, [sequence])
    torch.testing.assert_close(hidden.double(), reference_forward(folder, encoder.tokenizer.encode(sequence)),
                               rtol=1e-5, atol=2e-5)


def test_default_chunking_matches_the_reference_past_one_chunk(checkpoints):
    folder = checkpoints["ps", True]
    encoder = load_caduceus_encoder(folder, device="cpu", dtype="float32")
    sequence = random_dna(515, seed=3)  # the scan's default chunk here is 512 tokens
    (hidden,) = embed(encoder, [sequence])
    torch.testing.assert_close(hidden.double(), reference_forward(folder, encoder.tokenizer.encode(sequence)),
                               rtol=1e-5, atol=2e-5)


def test_fused_add_norm_is_honoured(checkpoints):
    """Same weights, the flag alone changes PS outputs (the fused RCPS block swaps the strands' streams); PH is the
    same either way. Each flag's outputs are checked against the reference above."""
    sequence = random_dna(30, seed=5)
    outputs = {}
    for variant in ("ps", "ph"):
        for fused in (True, False):
            encoder = load_caduceus_encoder(checkpoints[variant, fused], device="cpu", dtype="float32")
            (outputs[variant, fused],) = embed(encoder, [sequence])
    assert (outputs["ps", True] - outputs["ps", False]).abs().max() > 1e-2
    torch.testing.assert_close(outputs["ph", True], outputs["ph", False], rtol=0, atol=1e-6)


def test_padding_does_not_change_real_positions(checkpoints):
    for variant in ("ps", "ph"):
        encoder = load_caduceus_encoder(checkpoints[variant, True], device="cpu", dtype="float32")
        sequences = [random_dna(length, seed=length) for length in (40, 7, 23)]
        batched = embed(encoder, sequences)
        for sequence, hidden in zip(sequences, batched):
            (alone,) = embed(encoder, [sequence])
            torch.testing.assert_close(hidden, alone, rtol=1e-5, atol=1e-6)


def test_left_padding_is_refused(checkpoints):
    encoder = load_caduceus_encoder(checkpoints["ph", True], device="cpu", dtype="float32")
    ids = torch.tensor([[PAD_ID, 7, 8], [7, 8, 9]])
    with pytest.raises(ValueError, match="right padding"):
        encoder.model(ids, (ids != PAD_ID).long())


# --- reverse complement -----------------------------------------------------------------------------------------------

def rc_gap(encoder, sequence: str) -> float:
    """Largest difference between the per-base outputs of a sequence and those of its reverse complement, the latter
    read back along the sequence (position L-1-t of the RC is base t)."""
    forward, reverse = embed(encoder, [sequence, reverse_complement(sequence)])
    return float((forward - reverse.flip(0)).abs().max())


def test_ps_outputs_are_rc_symmetric_per_base_so_pooled_vectors_are_rc_invariant(checkpoints):
    encoder = load_caduceus_encoder(checkpoints["ps", True], device="cpu", dtype="float32")
    assert encoder.rc_mode_native == "equivariant"
    for length in (1, 2, 17, 64):
        sequence = random_dna(length, seed=length, alphabet="ACGTN")
        assert rc_gap(encoder, sequence) < 1e-5
        forward, reverse = embed(encoder, [sequence, reverse_complement(sequence)])
        torch.testing.assert_close(forward.mean(0), reverse.mean(0), rtol=0, atol=1e-5)


def test_ph_is_not_rc_invariant_without_averaging(checkpoints):
    """The same check fails for PH: a single pass is not RC-equivariant, so the engine must average both strands."""
    encoder = load_caduceus_encoder(checkpoints["ph", True], device="cpu", dtype="float32")
    assert encoder.rc_mode_native is None
    sequence = random_dna(64, seed=9)
    assert rc_gap(encoder, sequence) > 1e-2
    forward, reverse = embed(encoder, [sequence, reverse_complement(sequence)])
    assert (forward.mean(0) - reverse.mean(0)).abs().max() > 1e-3


# --- loading ----------------------------------------------------------------------------------------------------------

def test_encoder_contract(checkpoints):
    folder = checkpoints["ps", True]
    encoder = load_caduceus_encoder(folder, device="cpu", dtype="float32")
    assert encoder.family == "caduceus"
    assert encoder.model_id == folder.name
    assert encoder.model_sha256 == file_sha256(folder / "model.safetensors")
    assert (encoder.hidden_size, encoder.max_tokens) == (SMALL["d_model"], 4096)
    assert not encoder.model.training
    assert not any(parameter.requires_grad for parameter in encoder.model.parameters())
    (hidden,) = embed(encoder, ["ACGTN"])
    assert hidden.shape == (5, SMALL["d_model"])


def test_bfloat16_keeps_the_scan_parameters_in_float32(checkpoints):
    folder = checkpoints["ps", True]
    encoder = load_caduceus_encoder(folder, device="cpu", dtype="bfloat16")
    dtypes = {name: parameter.dtype for name, parameter in encoder.model.named_parameters()}
    assert dtypes["layers.0.mamba_fwd.A_log"] == dtypes["layers.0.mamba_rev.D"] == torch.float32
    assert dtypes["layers.0.mamba_fwd.dt_proj.bias"] == torch.float32
    assert dtypes["layers.0.mamba_fwd.in_proj.weight"] == dtypes["embedding.weight"] == torch.bfloat16
    sequence = random_dna(50, seed=4)
    (low,) = embed(encoder, [sequence])
    (full,) = embed(load_caduceus_encoder(folder, device="cpu", dtype="float32"), [sequence])
    assert low.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(low.float(), full, dim=-1)
    assert cosine.min() > 0.99


def test_written_checkpoint_has_the_public_layout(tmp_path: Path):
    """Config and weight names as the public 131k checkpoints have them (config.json copied from
    kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16; weight names from its CaduceusForMaskedLM state
    dict less the tensors save_pretrained drops as shared: the tied reverse projections and lm_head.lm_head.weight)."""
    folder = write_caduceus_checkpoint(tmp_path / "ps", variant="ps", d_model=256, n_layer=2)
    config = json.loads((folder / "config.json").read_text())
    assert config["complement_map"] == {str(i): {7: 10, 8: 9, 9: 8, 10: 7}.get(i, i) for i in range(16)}
    assert {k: config[k] for k in ("d_model", "vocab_size", "rcps", "fused_add_norm", "rms_norm",
                                   "residual_in_fp32", "bidirectional_strategy", "model_type")} == {
        "d_model": 256, "vocab_size": 16, "rcps": True, "fused_add_norm": True, "rms_norm": True,
        "residual_in_fp32": False, "bidirectional_strategy": "add", "model_type": "caduceus"}
    state = load_file(folder / "model.safetensors")
    mamba = ["conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"]
    expected = {"caduceus.backbone.embeddings.word_embeddings.embedding.weight",
                "caduceus.backbone.embeddings.word_embeddings.complement_map", "lm_head.complement_map",
                "caduceus.backbone.norm_f.weight"}
    for i in range(2):
        mixer = f"caduceus.backbone.layers.{i}.mixer.submodule."
        expected |= {f"caduceus.backbone.layers.{i}.norm.weight"}
        expected |= {mixer + "mamba_fwd." + name for name in [*mamba, "in_proj.weight", "out_proj.weight"]}
        expected |= {mixer + "mamba_rev." + name for name in mamba}
    assert set(state) == expected
    assert state["caduceus.backbone.layers.1.mixer.submodule.mamba_fwd.in_proj.weight"].shape == (1024, 256)
    assert state["caduceus.backbone.layers.1.mixer.submodule.mamba_rev.x_proj.weight"].shape == (48, 512)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 131072
    assert tokenizer_config["tokenizer_class"] == "CaduceusTokenizer"


def test_bin_weights_with_untied_copies_load_like_safetensors(checkpoints, tmp_path: Path):
    """A pytorch_model.bin that still holds the tied reverse projections (equal to the forward ones) loads the same."""
    source = checkpoints["ps", True]
    folder = Path(shutil.copytree(source, tmp_path / "bin"))
    state = load_file(folder / "model.safetensors")
    for key in list(state):
        if "mamba_fwd.in_proj" in key or "mamba_fwd.out_proj" in key:
            state[key.replace("mamba_fwd", "mamba_rev")] = state[key].clone()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    sequence = random_dna(20, seed=2)
    (expected,) = embed(load_caduceus_encoder(source, device="cpu", dtype="float32"), [sequence])
    (loaded,) = embed(load_caduceus_encoder(folder, device="cpu", dtype="float32"), [sequence])
    torch.testing.assert_close(loaded, expected, rtol=0, atol=0)


# --- the tokenizer ----------------------------------------------------------------------------------------------------

def test_tokenizer_is_the_checkpoints_character_vocabulary(checkpoints):
    folder = checkpoints["ps", True]
    tokenizer = CaduceusTokenizer(folder)
    [(ids, offsets)] = tokenizer.encode_batch_with_offsets(["acgtNxR"])
    assert ids == [7, 8, 9, 10, 11, 6, 6]
    assert offsets == [(i, i + 1) for i in range(7)]
    assert tokenizer.unk_ids == {6, 11}
    assert (tokenizer.prefix_ids, tokenizer.suffix_ids, tokenizer.pad_id, tokenizer.vocab_size) == ((), (), 4, 12)
    assert [tokenizer.id_to_token(i) for i in (0, 1, 4, 6, 7, 11)] == ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "A", "N"]
    assert tokenizer.complement_ids() == {**{i: i for i in range(12)}, 7: 10, 8: 9, 9: 8, 10: 7}
    assert tokenizer.version == file_sha256(folder / "tokenizer_config.json")
    assert tokenizer.model_max_length == 4096


def test_tokenizer_version_follows_the_file(checkpoints, tmp_path: Path):
    folder = Path(shutil.copytree(checkpoints["ps", True], tmp_path / "copy"))
    before = CaduceusTokenizer(folder).version
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 1024}))
    assert CaduceusTokenizer(folder).version != before


# --- bad input: one clear InputError each -----------------------------------------------------------------------------

def edited_copy(source: Path, target: Path, config_edit: dict | None = None) -> Path:
    folder = Path(shutil.copytree(source, target))
    if config_edit:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **config_edit}))
    return folder


@pytest.mark.parametrize(
    ("edit", "record", "problem"),
    [
        ({"d_model": 24}, "caduceus.backbone.embeddings.word_embeddings.embedding.weight", "does not match"),
        ({"n_layer": 3}, "caduceus.backbone.layers.2.norm.weight", "weight missing"),
        ({"n_layer": 1}, "caduceus.backbone.layers.1.mixer.submodule.mamba_fwd.A_log", "unexpected weight"),
        ({"rcps": False}, "caduceus.backbone.embeddings.word_embeddings.embedding.weight", "unexpected weight"),
        ({"fused_add_norm": False}, "caduceus.backbone.layers.0.norm.weight", "unexpected weight"),
        ({"ssm_cfg": {"d_state": 8}}, "caduceus.backbone.layers.0.mixer.submodule.mamba_fwd.A_log", "does not match"),
    ],
)
def test_config_that_does_not_match_the_weights(checkpoints, tmp_path: Path, edit, record, problem):
    folder = edited_copy(checkpoints["ps", True], tmp_path / "ckpt", edit)
    with pytest.raises(InputError) as caught:
        load_caduceus_encoder(folder, device="cpu", dtype="float32")
    assert caught.value.record == record and problem in caught.value.problem
    assert caught.value.file.endswith("model.safetensors")


def test_complement_map_that_differs_from_the_weights_buffer(checkpoints, tmp_path: Path):
    folder = edited_copy(checkpoints["ps", True], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    swapped = {**config["complement_map"], "7": 9, "9": 7, "8": 10, "10": 8}  # A↔G, C↔T: an involution, but wrong
    (folder / "config.json").write_text(json.dumps({**config, "complement_map": swapped}))
    with pytest.raises(InputError, match="complement map"):
        load_caduceus_encoder(folder, device="cpu", dtype="float32")


def test_tied_copy_that_differs(checkpoints, tmp_path: Path):
    folder = edited_copy(checkpoints["ps", True], tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    key = "caduceus.backbone.layers.0.mixer.submodule.mamba_fwd.in_proj.weight"
    state[key.replace("mamba_fwd", "mamba_rev")] = state[key] + 1
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(InputError, match="bidirectional_weight_tie"):
        load_caduceus_encoder(folder, device="cpu", dtype="float32")


@pytest.mark.parametrize("missing", ["config.json", "tokenizer_config.json", "model.safetensors"])
def test_missing_file(checkpoints, tmp_path: Path, missing: str):
    folder = edited_copy(checkpoints["ph", True], tmp_path / "ckpt")
    (folder / missing).unlink()
    with pytest.raises(InputError) as caught:
        load_caduceus_encoder(folder, device="cpu", dtype="float32")
    assert caught.value.fix
    assert missing in str(caught.value) or "neither model.safetensors" in str(caught.value)


def test_pickle_that_is_not_plain_tensors(checkpoints, tmp_path: Path):
    folder = edited_copy(checkpoints["ph", True], tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    torch.save({"weights": np.arange(3)}, folder / "pytorch_model.bin")  # a numpy array: refused by weights_only
    with pytest.raises(InputError, match="could run code"):
        load_caduceus_encoder(folder, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    ("edit", "record"),
    [
        ({"model_type": "hyenadna"}, "model_type"),
        ({"bidirectional_strategy": "concat"}, "bidirectional_strategy"),
        ({"ssm_cfg": {"headdim": 64}}, "ssm_cfg.headdim"),
        ({"complement_map": {"0": 1, "1": 1}}, "complement_map"),
        ({"complement_map": None}, "complement_map"),
        ({"d_model": 0}, "d_model"),
        ({"fused_add_norm": "yes"}, "fused_add_norm"),
    ],
)
def test_config_this_implementation_cannot_honour(checkpoints, tmp_path: Path, edit, record):
    folder = edited_copy(checkpoints["ps", True], tmp_path / "ckpt", edit)
    with pytest.raises(InputError) as caught:
        load_caduceus_encoder(folder, device="cpu", dtype="float32")
    assert caught.value.record == record
    assert caught.value.file.endswith("config.json")


@pytest.mark.parametrize(
    ("edit", "record"),
    [
        ({"tokenizer_class": "PreTrainedTokenizerFast"}, "tokenizer_class"),
        ({"model_max_length": None}, "model_max_length"),
        ({"added_tokens_decoder": {"0": {"content": "[SEP]"}}}, "added_tokens_decoder.0"),
        ({"characters": ["A", "C", "G", "T", "N", "R", "Y", "K", "W", "S"]}, None),
    ],
)
def test_tokenizer_config_that_does_not_fit(checkpoints, tmp_path: Path, edit, record):
    folder = edited_copy(checkpoints["ps", True], tmp_path / "ckpt")
    tokenizer_file = folder / "tokenizer_config.json"
    tokenizer_file.write_text(json.dumps({**json.loads(tokenizer_file.read_text()), **edit}))
    with pytest.raises(InputError) as caught:
        load_caduceus_encoder(folder, device="cpu", dtype="float32")
    assert caught.value.record == record
    assert caught.value.file.endswith("tokenizer_config.json")


# --- GPU --------------------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["ps", "ph"])
def test_cuda_forward_matches_cpu(tmp_path: Path, variant: str):
    """On a GPU the scan (and conv) run through mamba_ssm/causal_conv1d when installed, else through the PyTorch
    scan on the device; either way the numbers agree with the CPU's within float32 tolerance."""
    folder = write_caduceus_checkpoint(tmp_path / variant, variant=variant, d_model=256, n_layer=4, seed=1)
    sequences = [random_dna(length, seed=length) for length in (3000, 1500, 150)]
    cpu = embed(load_caduceus_encoder(folder, device="cpu", dtype="float32"), sequences)
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = embed(load_caduceus_encoder(folder, device="cuda", dtype="float32"), sequences)
    for on_cpu, on_gpu in zip(cpu, gpu):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or cuda_selective_scan() is None,
                    reason="needs a CUDA device and mamba_ssm's selective_scan_cuda")
def test_mamba_ssm_kernel_matches_the_pytorch_scan():
    from kb_assets.encoders.caduceus.ops import selective_scan

    generator = torch.Generator(device="cuda").manual_seed(0)
    batch, length, d_inner, d_state = 2, 1000, 64, 16

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=generator) * scale

    u, delta, z = randn(batch, length, d_inner), randn(batch, length, d_inner, scale=0.5), randn(batch, length, d_inner)
    A = -torch.exp(randn(d_inner, d_state, scale=0.5))
    B, C = randn(batch, length, d_state), randn(batch, length, d_state)
    D, bias = randn(d_inner), randn(d_inner, scale=0.1) - math.log(10)
    kernel = selective_scan(u, delta, A, B, C, D, z, bias)
    chunked = selective_scan(u, delta, A, B, C, D, z, bias, chunk_tokens=128)
    torch.testing.assert_close(kernel, chunked, rtol=1e-4, atol=1e-4)
