"""Dagster resources: what differs between deployments (where the model runs, where the warehouse lies).

The recipe itself is not a resource: the definitions are built from it once per process, and every asset reads
that same Recipe object, so settings and paths cannot disagree between the graph and a run.
"""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from kb_assets.encoders import Encoder
from kb_assets.encoders.families import FamilyEncoder, load_any_encoder
from kb_assets.encoders.identity import CheckpointIdentity, checkpoint_identity
from kb_assets.errors import InputError
from kb_assets.storage import Warehouse


@lru_cache(maxsize=4)
def _cached_encoder(checkpoint: str, device: str, dtype: str, compile_layers: bool, model_sha256: str):
    # Keyed by the weights' hash as well as the path: a checkpoint folder replaced in place loads again.
    encoder = load_any_encoder(checkpoint, device=device, dtype=dtype, compile=compile_layers)
    if encoder.model_sha256 != model_sha256:
        raise InputError(
            encoder.model_id, "weights",
            f"the checkpoint changed while this run used it (sha256 {model_sha256[:12]} expected, "
            f"{encoder.model_sha256[:12]} loaded)", "let the replacement finish, then run again",
        )
    return encoder


class EncoderResource(dg.ConfigurableResource):
    """The encoder checkpoint. The model loads lazily, once per process and weights version, on the first
    forward pass; its identity (weights hash, tokenizer, resolved device and dtype) needs no model, so
    tokenizing and cache lookups never pay for one."""

    checkpoint: str
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    # One node, N GPUs: each running partition leases one of these (kb_assets.cluster.gpu_slots); empty: `device`.
    devices: list[str] = []

    def encoder(self, model_sha256: str | None = None, device: str | None = None) -> Encoder | FamilyEncoder:
        """The loaded model whose weights hash `model_sha256` (default: the weights there now), on `device`
        (default: the configured one)."""
        return _cached_encoder(self.checkpoint, device or self.device, self.dtype, self.compile,
                               model_sha256 or self.identity().model_sha256)

    def identity(self) -> CheckpointIdentity:
        return checkpoint_identity(self.checkpoint, self.device, self.dtype)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse root: parquet datasets and the DuckDB catalog; and the recipe's run tags, which it adds to a run
    launched without them (the UI's and backfills' runs of the implicit asset job, which takes no definition-level
    tags), so every run says which recipe it belongs to."""

    root: str
    run_tags: dict[str, str] = {}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is not None and context.instance is not None and not self.run_tags.items() <= run.tags.items():
            context.instance.add_run_tags(run.run_id, self.run_tags)

    def get(self) -> Warehouse:
        return Warehouse(self.root)
