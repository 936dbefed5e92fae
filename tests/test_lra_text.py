"""LRA Text (IMDB) and Retrieval (AAN) on tiny files in the real formats: vocabulary and
tokenisation against hand-computed ids, splits, batches (padding, lengths, pairs) and the
messages for missing or malformed files; the length-aware and retrieval decoders by hand."""

import pytest
import torch

from lra_files import write_aan, write_imdb
from src.dataloaders.lra import AAN, IMDB, build_vocab, encode
from src.tasks.decoders import RetrievalDecoder, SequenceDecoder
from src.utils.errors import ConfigError


def test_vocabulary_by_count_then_code_point_with_min_freq():
    # counts: b 4, a 3, c 3, d 1 -> b=3, a=4 (ties by code point), c=5, d=6; <pad> 0 <unk> 1 <eos> 2
    lookup, size = build_vocab(["abcb", "cabd", "cab"], min_freq=1)
    assert size == 7 and encode("dcba", lookup).tolist() == [6, 5, 3, 4, 2]
    lookup, size = build_vocab(["abcb", "cabd", "cab"], min_freq=2)
    assert size == 6 and encode("dcba", lookup).tolist() == [1, 5, 3, 4, 2]  # d seen once: <unk>
    assert encode("z\u00e9", lookup).tolist() == [1, 1, 2]  # unseen characters, ASCII or not


IMDB_TEXTS = {
    ("train", "neg"): ["bad bad", "awful\u00e9\u00e9"],
    ("train", "pos"): ["good", "great!"],
    ("test", "neg"): ["bad?"],
    ("test", "pos"): ["goodgoodgood"],
}


@pytest.fixture
def imdb(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    write_imdb(tmp_path, IMDB_TEXTS)
    dataset = IMDB(l_max=6, min_freq=2)
    dataset.setup()
    return dataset


def test_imdb_splits_tokens_and_cut(imdb):
    assert [len(imdb.splits[k]) for k in ("train", "val", "test")] == [4, 2, 2]  # LRA: the test set validates
    # training characters, first 5 of each review (l_max 6 = 5 + <eos>):
    # "bad b", "awful", "good", "great": counts a 3; b, d, g, o 2; the rest 1. With min_freq 2:
    # a=3, then b=4 d=5 g=6 o=7 (ties by code point)
    assert imdb.n_tokens == 8
    tokens = [imdb.splits["train"][i][0][0].tolist() for i in range(4)]
    assert tokens == [[4, 3, 5, 1, 4, 2], [3, 1, 1, 1, 1, 2], [6, 7, 7, 5, 2], [6, 1, 1, 3, 1, 2]]
    assert [int(imdb.splits["train"][i][1]) for i in range(4)] == [0, 0, 1, 1]
    assert imdb.splits["test"][0][0][0].tolist() == [4, 3, 5, 1, 2]  # "bad?": ? is <unk>
    assert imdb.splits["test"][1][0][0].tolist() == [6, 7, 7, 5, 6, 2]  # cut to "goodg"


def test_imdb_batch_is_padded_with_lengths_and_classes(imdb):
    x, y, extra = imdb.batch("test", 0, 0, range(0, 2))
    assert x.tolist() == [[4, 3, 5, 1, 2, 0], [6, 7, 7, 5, 6, 2]]
    assert y.tolist() == [0, 1] and extra["lengths"].tolist() == [5, 6] and extra["class"].tolist() == [0, 1]


def test_imdb_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        IMDB().setup()
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "imdb" / "aclImdb" / "train" / "neg") in message
    assert "aclImdb_v1.tar.gz" in message


AAN_PAIRS = {
    "train": [(1, "abc", "ab"), (0, "ccc", "a b")],
    "eval": [(0, "ba", "cab c")],
    "test": [(1, "x", "abcabc"), (0, "", "b")],
}


@pytest.fixture
def aan(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    write_aan(tmp_path, AAN_PAIRS)
    dataset = AAN(l_max=5)
    dataset.setup()
    return dataset


def test_aan_pairs_are_stacked_first_texts_then_second(aan):
    # training characters (each text cut to 4): c 4, a 3, b 3, " " 1 -> c=3, a=4, b=5, " "=6
    assert aan.n_tokens == 7 and [len(aan.splits[k]) for k in ("train", "val", "test")] == [2, 1, 2]
    x, y, extra = aan.batch("test", 0, 0, range(0, 2))
    assert x.tolist() == [
        [1, 2, 0, 0, 0],  # "x" (unknown), <eos>
        [2, 0, 0, 0, 0],  # "" -> <eos>
        [4, 5, 3, 4, 2],  # "abcabc" cut to "abca"
        [5, 2, 0, 0, 0],  # "b"
    ]
    assert y.tolist() == [1, 0] and extra["lengths"].tolist() == [2, 1, 5, 2] and extra["class"].tolist() == [1, 0]
    x, y, _ = aan.batch("val", 0, 0, range(0, 1))
    assert x.tolist() == [[5, 4, 2, 0, 0], [3, 4, 5, 6, 2]] and y.tolist() == [0]


def test_aan_missing_and_malformed_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        AAN().setup()
    assert "\n" not in str(e.value) and str(tmp_path / "aan" / "new_aan_pairs.eval.tsv") in str(e.value)
    assert "lra_release" in str(e.value)
    write_aan(tmp_path, AAN_PAIRS)
    (tmp_path / "aan" / "new_aan_pairs.test.tsv").write_text("1.0\ta\tb\tonly four fields\n")
    with pytest.raises(ConfigError, match=r"new_aan_pairs.test.tsv:1: 4 tab-separated fields, expected 5"):
        AAN().setup()
    (tmp_path / "aan" / "new_aan_pairs.test.tsv").write_text("yes\ta\tb\tt1\tt2\n")
    with pytest.raises(ConfigError, match=r"new_aan_pairs.test.tsv:1: label 'yes', expected 0 or 1"):
        AAN().setup()


def test_sequence_decoder_reads_each_sequence_within_its_length():
    x = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)  # (B, L, d)
    lengths = torch.tensor([2, 4])
    pool, last = (SequenceDecoder(3, 5, l_output=0, mode=m, use_lengths=True) for m in ("pool", "last"))
    for decoder in (pool, last):
        decoder.output.weight.data = torch.eye(5, 3)
        decoder.output.bias.data.zero_()
    assert pool(x, lengths=lengths)[:, :3].tolist() == [[1.5, 2.5, 3.5], [16.5, 17.5, 18.5]]  # rows 0-1; 0-3
    assert last(x, lengths=lengths)[:, :3].tolist() == [[3, 4, 5], [21, 22, 23]]  # rows 1; 3
    with pytest.raises(ConfigError, match="carry no lengths"):
        pool(x)


def test_retrieval_decoder_compares_the_two_halves():
    torch.manual_seed(0)
    decoder = RetrievalDecoder(3, 2, mode="pool", use_lengths=True)
    x = torch.randn(4, 5, 3)  # 2 pairs: rows 0, 1 the first texts, rows 2, 3 the second
    lengths = torch.tensor([5, 3, 2, 4])
    u = torch.stack([x[0].mean(0), x[1, :3].mean(0)])
    v = torch.stack([x[2, :2].mean(0), x[3, :4].mean(0)])
    expected = decoder.classifier(torch.cat([u, v, u - v, u * v], dim=-1))
    torch.testing.assert_close(decoder(x, lengths=lengths), expected)
