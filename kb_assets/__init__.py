"""kb_assets: DNA foundation-model gene embeddings as Dagster assets."""

__version__ = "0.1.0"
