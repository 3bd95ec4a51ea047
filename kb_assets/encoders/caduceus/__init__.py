"""Native Caduceus (Schiff et al. 2024): config, character tokenizer, BiMamba/RCPS model, checkpoint folders."""

from kb_assets.encoders.caduceus.checkpoint import load_caduceus_encoder, write_caduceus_checkpoint
from kb_assets.encoders.caduceus.config import CaduceusConfig, read_caduceus_config
from kb_assets.encoders.caduceus.model import CaduceusModel
from kb_assets.encoders.caduceus.tokenizer import CaduceusTokenizer

__all__ = [
    "CaduceusConfig",
    "CaduceusModel",
    "CaduceusTokenizer",
    "load_caduceus_encoder",
    "read_caduceus_config",
    "write_caduceus_checkpoint",
]
