"""The transformers family on tiny random-weight checkpoints built here and saved with save_pretrained: a
Nucleotide-Transformer-v1-style ESM (6-mer vocabulary, ESM tokenizer without offsets) and a BERT with a fast BPE
tokenizer. Loaded offline through kb_assets; outputs checked against transformers' own model and tokenizer."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedTokenizerFast,
)

from kb_assets.encoders import train_bpe_tokenizer
from kb_assets.encoders.hf import TransformersTokenizer, load_transformers_encoder, write_esm_checkpoint
from kb_assets.errors import InputError
from kb_assets.fingerprint import file_sha256


def random_dna(length: int, seed: int, alphabet: str = "ACGT") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


def write_tiny_esm(folder: Path, seed: int = 0) -> Path:
    """Nucleotide Transformer v1's layout at toy size; the tokenizer's model_max_length (1000) is above what the
    position table allows (128), so the table must set max_tokens."""
    write_esm_checkpoint(folder, seed=seed, max_tokens=128)
    tokenizer_file = folder / "tokenizer_config.json"
    tokenizer_file.write_text(json.dumps({**json.loads(tokenizer_file.read_text()), "model_max_length": 1000}))
    return folder


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A BERT-architecture DNA model with a fast BPE tokenizer (tokenizer.json)."""
    folder.mkdir(parents=True)
    bpe = train_bpe_tokenizer([random_dna(20_000, seed=seed)], vocab_size=200)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                        model_max_length=64)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=3)
    torch.manual_seed(seed)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def esm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_esm(tmp_path_factory.mktemp("hf") / "tiny-nt")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def esm(esm_folder: Path):
    return load_transformers_encoder(esm_folder, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def bert(bert_folder: Path):
    return load_transformers_encoder(bert_folder, device="cpu", dtype="float32")


def contract_batch(encoder, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids as the engine builds them from the contract: prefix + ids + suffix, right-padded with pad_id."""
    tokenizer = encoder.tokenizer
    rows = [[*tokenizer.prefix_ids, *ids, *tokenizer.suffix_ids]
            for ids, _ in tokenizer.encode_batch_with_offsets(sequences)]
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), tokenizer.pad_id)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


@pytest.mark.parametrize("name", ["esm", "bert"])
def test_hidden_states_equal_transformers_own(request: pytest.FixtureRequest, name: str):
    """transformers' tokenizer (with its special tokens, padding) and base model give the same ids and the same last
    hidden states as the loaded encoder."""
    encoder = request.getfixturevalue(name)
    folder = request.getfixturevalue(f"{name}_folder")
    sequences = [random_dna(90, seed=1), random_dna(13, seed=2) + "N" + random_dna(20, seed=3), "acgtac"]
    ids, mask = contract_batch(encoder, sequences)
    own_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    own = own_tokenizer([s.upper() for s in sequences], padding=True, return_tensors="pt")
    assert torch.equal(ids, own["input_ids"]) and torch.equal(mask, own["attention_mask"])
    own_model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        expected = own_model(**own).last_hidden_state
        hidden = encoder.model(ids, mask)
    assert hidden.shape == (len(sequences), ids.shape[1], encoder.hidden_size)
    real = mask.bool()
    torch.testing.assert_close(hidden[real], expected[real], rtol=0, atol=0)


def test_esm_contract(esm, esm_folder: Path):
    tokenizer = esm.tokenizer
    assert (esm.family, esm.rc_mode_native, esm.hidden_size) == ("transformers", None, 32)
    assert esm.max_tokens == 128  # the position table, not the tokenizer's 1000
    assert (tokenizer.prefix_ids, tokenizer.suffix_ids, tokenizer.pad_id) == ((3,), (4,), 1)
    vocab = (esm_folder / "vocab.txt").read_text().split()
    assert tokenizer.unk_ids == {0, vocab.index("N"), vocab.index("<bos>")}
    assert esm.model_sha256 == file_sha256(esm_folder / "model.safetensors")
    assert not esm.model.training


def test_esm_offsets_are_derived_from_the_tokens(esm):
    """The ESM tokenizer reports no offsets; they are spelled out: 6-mers, single bases, N, and an unknown run."""
    sequence = "ACGTACgtacgNNXACGTAA"
    [(ids, offsets)] = esm.tokenizer.encode_batch_with_offsets([sequence])
    tokens = [esm.tokenizer.id_to_token(i) for i in ids]
    assert tokens == ["ACGTAC", "G", "T", "A", "C", "G", "N", "N", "<unk>", "ACGTAA"]
    assert offsets == [(0, 6), (6, 7), (7, 8), (8, 9), (9, 10), (10, 11), (11, 12), (12, 13), (13, 14), (14, 20)]
    for token, (start, end) in zip(tokens, offsets):
        assert token == "<unk>" or sequence.upper()[start:end] == token


def test_bert_contract_and_fast_offsets(bert, bert_folder: Path):
    tokenizer = bert.tokenizer
    assert (tokenizer.prefix_ids, tokenizer.suffix_ids, tokenizer.pad_id) == ((1,), (2,), 3)
    assert bert.max_tokens == 64
    sequence = random_dna(40, seed=8) + "N" + random_dna(9, seed=9)
    [(ids, offsets)] = tokenizer.encode_batch_with_offsets([sequence.lower()])
    assert "".join(sequence[start:end] for start, end in offsets) == sequence
    assert [tokenizer.id_to_token(i) for i, (start, end) in zip(ids, offsets) if sequence[start:end] == "N"] == [
        "[UNK]"]
    assert tokenizer.version != file_sha256(bert_folder / "tokenizer.json")  # several files define it
    assert TransformersTokenizer(bert_folder).version == tokenizer.version


# --- bad folders -----------------------------------------------------------------------------------------------------

def edited_copy(source: Path, target: Path, **config_edit) -> Path:
    folder = Path(shutil.copytree(source, target))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_edit}))
    return folder


def test_remote_code_checkpoint_is_refused(esm_folder: Path, tmp_path: Path):
    """Nucleotide Transformer v2 declares model_type "esm" but ships its own modeling code (auto_map)."""
    folder = edited_copy(esm_folder, tmp_path / "nt-v2", auto_map={"AutoModel": "modeling_esm.EsmModel"})
    with pytest.raises(InputError, match="trust_remote_code") as caught:
        load_transformers_encoder(folder, device="cpu", dtype="float32")
    assert "Caduceus" in caught.value.fix and "DNABERT-2" in caught.value.fix


def test_remote_code_tokenizer_is_refused(esm_folder: Path, tmp_path: Path):
    folder = Path(shutil.copytree(esm_folder, tmp_path / "ckpt"))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.DnaTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(InputError, match="trust_remote_code"):
        load_transformers_encoder(folder, device="cpu", dtype="float32")


@pytest.mark.parametrize(("edit", "record"), [({"num_hidden_layers": 3}, "encoder.layer.2"),
                                              ({"num_hidden_layers": 1}, "encoder.layer.1"),
                                              ({"intermediate_size": 48}, "intermediate.dense")])
def test_config_that_does_not_match_the_weights(esm_folder: Path, tmp_path: Path, edit, record):
    folder = edited_copy(esm_folder, tmp_path / "ckpt", **edit)
    with pytest.raises(InputError) as caught:
        load_transformers_encoder(folder, device="cpu", dtype="float32")
    assert record in caught.value.record


@pytest.mark.parametrize("missing", ["vocab.txt", "model.safetensors"])
def test_missing_file(esm_folder: Path, tmp_path: Path, missing: str):
    folder = Path(shutil.copytree(esm_folder, tmp_path / "ckpt"))
    (folder / missing).unlink()
    with pytest.raises(InputError) as caught:
        load_transformers_encoder(folder, device="cpu", dtype="float32")
    assert caught.value.fix
