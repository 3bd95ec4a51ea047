"""Parity with upstream Caduceus itself: kuleshov-group/caduceus's modeling code on mamba_ssm's Mamba, run on the CPU
with mamba_ssm's pure-PyTorch reference ops (selective_scan_ref, layer_norm_ref/rms_norm_ref in place of the CUDA
scan and the Triton norms, which need a GPU), loading the same checkpoint folder as the native model.

No package on PyPI ships Caduceus's modeling code (the PyPI name "caduceus" is an unrelated project), and
mamba_ssm's own __init__ pulls in Mamba-2/3 kernels, so this test runs only where the upstream code is importable:
set KB_ASSETS_CADUCEUS_UPSTREAM to a folder holding `caduceus/` (github kuleshov-group/caduceus) and `mamba_ssm/`
(github state-spaces/mamba), with `einops` and `triton` importable (`pip install --target <folder> einops triton`
works on a CPU machine). Elsewhere, CI included, it skips and says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kb_assets.encoders.caduceus import load_caduceus_encoder, write_caduceus_checkpoint

UPSTREAM_ENV = "KB_ASSETS_CADUCEUS_UPSTREAM"
# config.json fields that only transformers' own bookkeeping reads.
_NOT_CONFIG_ARGUMENTS = ("architectures", "auto_map", "model_type", "transformers_version", "torch_dtype")


def import_upstream() -> types.SimpleNamespace:
    """The upstream modules, or a skip that says what is missing."""
    folder = os.environ.get(UPSTREAM_ENV)
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        import einops  # noqa: F401
        import triton  # noqa: F401
    except ImportError as err:
        pytest.skip(f"upstream Caduceus needs einops and triton importable ({err}); see this module's docstring")
    if "mamba_ssm" not in sys.modules:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"mamba_ssm is not importable: set {UPSTREAM_ENV} to a folder holding caduceus/ and "
                        "mamba_ssm/ (see this module's docstring)")
        # A bare package: mamba_ssm/__init__.py imports Mamba-2/3 and their GPU kernels, which Caduceus never uses.
        package = types.ModuleType("mamba_ssm")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["mamba_ssm"] = package
    try:
        modeling = importlib.import_module("caduceus.modeling_caduceus")
        rcps = importlib.import_module("caduceus.modeling_rcps")
        mamba_simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
        scan = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        norms = importlib.import_module("mamba_ssm.ops.triton.layer_norm")
    except ImportError as err:
        pytest.skip(f"upstream Caduceus code is not importable ({err}): set {UPSTREAM_ENV} (see this module's "
                    "docstring)")
    try:
        block = importlib.import_module("mamba_ssm.modules.block")  # mamba_ssm 2.x; 1.x keeps Block in mamba_simple
    except ImportError:
        block = mamba_simple
    return types.SimpleNamespace(modeling=modeling, rcps=rcps, mamba_simple=mamba_simple, block=block, scan=scan,
                                 norms=norms)


@pytest.fixture(scope="module")
def upstream() -> types.SimpleNamespace:
    return import_upstream()


@pytest.fixture
def reference_ops(upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap upstream's GPU kernels for its own PyTorch references, for the duration of a test."""
    norms = upstream.norms

    def fused_add_norm(x, weight, bias, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6,
                       is_rms_norm=False, **_):
        reference = norms.rms_norm_ref if is_rms_norm else norms.layer_norm_ref
        out = reference(x, weight, bias, residual=residual, eps=eps, prenorm=prenorm)
        return (out[0], out[1].float()) if prenorm and residual_in_fp32 else out

    def fused_rms_norm(*args, **kwargs):
        return fused_add_norm(*args, is_rms_norm=True, **kwargs)

    def rms_norm_forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return norms.rms_norm_ref(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm)

    monkeypatch.setattr(upstream.mamba_simple, "selective_scan_fn", upstream.scan.selective_scan_ref)
    monkeypatch.setattr(upstream.mamba_simple, "causal_conv1d_fn", None)
    for module in (upstream.modeling, upstream.rcps):
        monkeypatch.setattr(module, "layer_norm_fn", fused_add_norm)
        monkeypatch.setattr(module, "rms_norm_fn", fused_rms_norm)
    monkeypatch.setattr(upstream.block, "layer_norm_fn", fused_add_norm)
    monkeypatch.setattr(norms.RMSNorm, "forward", rms_norm_forward)


def upstream_hidden_states(upstream, folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """The upstream backbone's last hidden states, PS outputs combined as the native model documents."""
    raw = json.loads((folder / "config.json").read_text())
    config = upstream.modeling.CaduceusConfig(**{k: v for k, v in raw.items() if k not in _NOT_CONFIG_ARGUMENTS})
    # The backbone class: CaduceusForMaskedLM's tie_weights predates transformers 5's signature.
    model = upstream.modeling.Caduceus(config).eval()
    state = {key.removeprefix("caduceus."): value for key, value in load_file(folder / "model.safetensors").items()
             if not key.startswith("lm_head.")}
    result = model.load_state_dict(state, strict=False)
    # Only the tied reverse projections are absent from the file; upstream shares them with the forward ones.
    assert not result.unexpected_keys
    assert all(".mamba_rev.in_proj." in key or ".mamba_rev.out_proj." in key for key in result.missing_keys)
    with torch.inference_mode():
        hidden = model(ids, return_dict=True).last_hidden_state
    if config.rcps:
        d_model = config.d_model
        hidden = (hidden[..., :d_model] + hidden[..., d_model:].flip(-1)) / 2
    return hidden


@pytest.mark.parametrize(
    ("variant", "fused", "d_model", "n_layer", "length"),
    [
        ("ps", True, 32, 3, 37),
        ("ps", False, 32, 3, 37),
        ("ph", True, 32, 3, 37),
        ("ph", False, 32, 3, 37),
        ("ps", True, 256, 16, 300),  # the public 131k checkpoints' shape
        ("ph", True, 256, 16, 300),
    ],
)
def test_native_model_matches_upstream(upstream, reference_ops, tmp_path: Path, variant, fused, d_model, n_layer,
                                       length):
    folder = write_caduceus_checkpoint(tmp_path / variant, variant=variant, d_model=d_model, n_layer=n_layer,
                                       fused_add_norm=fused, seed=5)
    ids = torch.randint(7, 12, (2, length), generator=torch.Generator().manual_seed(0))  # A, C, G, T and N
    expected = upstream_hidden_states(upstream, folder, ids)
    encoder = load_caduceus_encoder(folder, device="cpu", dtype="float32")
    with torch.inference_mode():
        native = encoder.model(ids, torch.ones_like(ids))
    difference = float((native - expected).abs().max())
    print(f"{variant} fused_add_norm={fused} d_model={d_model} n_layer={n_layer} L={length}: "
          f"max |native - upstream| = {difference:.2e} (max |upstream| = {float(expected.abs().max()):.2f})")
    torch.testing.assert_close(native, expected, rtol=1e-4, atol=1e-4)
