"""Native DNABERT-2: tokenizer, checkpoint folders, encoder and embedding engine (domain code, no Dagster)."""

from kb_assets.encoders.checkpoint import write_checkpoint
from kb_assets.encoders.encoder import Encoder, StrandStats, load_encoder
from kb_assets.encoders.engine import EmbedStats
from kb_assets.encoders.model import DnaBert2Config, DnaBert2Model
from kb_assets.encoders.pooling import PooledStats
from kb_assets.encoders.tokenizer import DnaTokenizer, load_tokenizer, train_bpe_tokenizer

__all__ = [
    "DnaBert2Config",
    "DnaBert2Model",
    "DnaTokenizer",
    "EmbedStats",
    "Encoder",
    "PooledStats",
    "StrandStats",
    "load_encoder",
    "load_tokenizer",
    "train_bpe_tokenizer",
    "write_checkpoint",
]
