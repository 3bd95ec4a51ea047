"""Native DNABERT-2: tokenizer, checkpoint folders, encoder and embedding engine (domain code, no Dagster)."""

from kb_assets.encoders.checkpoint import write_checkpoint
from kb_assets.encoders.encoder import Encoder, load_encoder
from kb_assets.encoders.engine import EmbedStats, WindowEmbeddings
from kb_assets.encoders.model import DnaBert2Config, DnaBert2Model
from kb_assets.encoders.tokenizer import DnaTokenizer, TokenWindow, load_tokenizer, train_bpe_tokenizer

__all__ = [
    "DnaBert2Config",
    "DnaBert2Model",
    "DnaTokenizer",
    "EmbedStats",
    "Encoder",
    "TokenWindow",
    "WindowEmbeddings",
    "load_encoder",
    "load_tokenizer",
    "train_bpe_tokenizer",
    "write_checkpoint",
]
