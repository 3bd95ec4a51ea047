"""Native DNABERT-2: tokenizer, checkpoint folders, encoder and embedding engine (domain code, no Dagster)."""

from kb_assets.encoders.checkpoint import write_checkpoint
from kb_assets.encoders.tokenizer import DnaTokenizer, TokenWindow, load_tokenizer, train_bpe_tokenizer

__all__ = ["DnaTokenizer", "TokenWindow", "load_tokenizer", "train_bpe_tokenizer", "write_checkpoint"]
