import hashlib
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from kb_assets.encoders import load_tokenizer, train_bpe_tokenizer
from kb_assets.encoders.windows import tile_windows
from kb_assets.errors import InputError
from kb_assets_tests.encoders.conftest import random_dna

REAL_LAYOUT = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "A", "C", "G", "T"]


def save(tokenizer: Tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_trained_tokenizer_has_the_real_layout(small_tokenizer: Tokenizer):
    assert small_tokenizer.get_vocab_size() == 300
    assert [small_tokenizer.id_to_token(i) for i in range(9)] == REAL_LAYOUT
    state = json.loads(small_tokenizer.to_str())
    assert state["normalizer"] is None
    assert state["pre_tokenizer"] == {"type": "Whitespace"}
    assert state["model"]["type"] == "BPE" and state["model"]["unk_token"] == "[UNK]"
    assert state["post_processor"]["type"] == "TemplateProcessing"
    encoding = small_tokenizer.encode("ACGTACGTTTGA")
    assert encoding.ids[0] == 1 and encoding.ids[-1] == 2
    assert "".join(encoding.tokens[1:-1]) == "ACGTACGTTTGA"
    learned = [small_tokenizer.id_to_token(i) for i in range(9, 300)]
    assert all(set(token) <= set("ACGT") and len(token) >= 2 for token in learned)


def test_training_skips_non_acgt_and_renumbers_a_skewed_alphabet():
    # T is the most frequent base, so the trainer alone would number it first.
    text = "T" * 50 + "NNNN" + "GATTACA" * 30 + "RYKM" + random_dna(2_000, seed=1).replace("C", "T")
    tokenizer = train_bpe_tokenizer([text, text.lower()], vocab_size=40)
    assert [tokenizer.id_to_token(i) for i in range(9)] == REAL_LAYOUT
    assert not any(set(tokenizer.id_to_token(i)) - set("ACGT") for i in range(5, tokenizer.get_vocab_size()))


def test_load_tokenizer_from_folder_or_file(tmp_path: Path, small_tokenizer: Tokenizer):
    folder = save(small_tokenizer, tmp_path / "ckpt")
    from_folder, from_file = load_tokenizer(folder), load_tokenizer(folder / "tokenizer.json")
    expected_version = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert from_folder.version == from_file.version == expected_version
    assert from_folder.vocab_size == 300
    assert from_folder.path == folder / "tokenizer.json"
    assert from_folder.id_to_token(3) == "[PAD]"


def test_encode_uppercases_adds_no_specials_and_maps_n_to_unk(tmp_path: Path, small_tokenizer: Tokenizer):
    tokenizer = load_tokenizer(save(small_tokenizer, tmp_path / "ckpt"))
    sequence = random_dna(300, seed=2)
    ids = tokenizer.encode(sequence)
    assert tokenizer.encode(sequence.lower()) == ids
    assert 1 not in ids and 2 not in ids
    assert "".join(tokenizer.id_to_token(i) for i in ids) == sequence
    assert tokenizer.encode("ACGNNT").count(0) == 2
    assert tokenizer.encode_batch([sequence, "acgnnt"]) == [ids, tokenizer.encode("ACGNNT")]


def test_missing_or_broken_tokenizer_file_is_refused(tmp_path: Path):
    with pytest.raises(InputError, match="tokenizer.json not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable Hugging Face tokenizer file"):
        load_tokenizer(tmp_path)


def test_real_tokenizer_special_tokens_and_ids(real_reference: Path):
    tokenizer = load_tokenizer(real_reference)
    assert tokenizer.version == "5d178e8ce2ba55df97fff197f4b30f40133b95d7096be398c2df6b526c5d8cd3"
    assert tokenizer.vocab_size == 4096
    assert [tokenizer.id_to_token(i) for i in range(9)] == REAL_LAYOUT
    raw = Tokenizer.from_file(str(real_reference / "tokenizer.json"))
    assert raw.encode("ACGTAGCATCG").ids[0] == 1 and raw.encode("ACGTAGCATCG").ids[-1] == 2
    sequence = random_dna(5_000, seed=11)
    ids = tokenizer.encode(sequence)
    assert "".join(tokenizer.id_to_token(i) for i in ids) == sequence
    assert max(len(tokenizer.id_to_token(i)) for i in range(9, 4096)) <= 32
    assert 3.5 < len(sequence) / len(ids) < 6.5  # about 5 bp per token


def test_real_tokenizer_lowercase_and_windows(real_reference: Path):
    tokenizer = load_tokenizer(real_reference)
    sequence = random_dna(12_000, seed=12)
    assert tokenizer.encode(sequence.lower()) == tokenizer.encode(sequence)
    assert tokenizer.encode("ACGTNacgt") == tokenizer.encode("ACGTNACGT")
    [(ids, offsets)] = tokenizer.encode_batch_with_offsets([sequence.lower()])
    windows = tile_windows(ids, offsets, 0, len(sequence), tokenizer.prefix_ids, tokenizer.suffix_ids, 512, 64)
    assert len(windows) > 1 and max(len(w.input_ids) for w in windows) == 512
    assert all(w.input_ids[0] == tokenizer.prefix_ids[0] and w.input_ids[-1] == tokenizer.suffix_ids[0]
               for w in windows)
    assert sum(w.count_end - w.count_start for w in windows) == len(tokenizer.encode(sequence))


def test_offsets_locate_each_token_in_the_sequence(tmp_path: Path, small_tokenizer: Tokenizer):
    tokenizer = load_tokenizer(save(small_tokenizer, tmp_path / "ckpt"))
    sequence = random_dna(200, seed=4) + "NN" + random_dna(50, seed=5).lower()
    [(ids, offsets)] = tokenizer.encode_batch_with_offsets([sequence])
    assert ids == tokenizer.encode(sequence)
    assert offsets[0][0] == 0 and offsets[-1][1] == len(sequence)
    assert all(before[1] == after[0] for before, after in zip(offsets, offsets[1:]))
    for token_id, (start, end) in zip(ids, offsets):
        token = tokenizer.id_to_token(token_id)
        assert sequence[start:end].upper() == token or (token == "[UNK]" and end - start == 1)
