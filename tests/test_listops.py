"""ListOps generator and datasets: every annotation is recomputed from the expression by a plain
recursive evaluator, and the files do not depend on the number of workers."""

import statistics

import numpy as np
import pytest
import torch

from src.dataloaders.base import SPLITS
from src.dataloaders.listops import VOCAB, ListOps, ListOpsSubTrees, read_tsv, tokenize
from src.dataloaders.prepare.listops.__main__ import main as generate
from src.dataloaders.prepare.listops.trees import sample_chunk, to_string
from src.utils.errors import ConfigError

OPS = {
    "[MIN": min, "[MAX": max, "[MED": lambda a: int(statistics.median(a)), "[SM": lambda a: sum(a) % 10,
}


def evaluate(words):
    """Reference: per `]` position (value, length, height, operator) of the paren-free expression."""
    found = {}

    def node(i):  # the node starting at word i -> (value, end index, height)
        if words[i] not in OPS:
            return int(words[i]), i, 0
        args, j, height = [], i + 1, 0
        while words[j] != "]":
            value, end, h = node(j)
            args.append(value)
            height = max(height, h)
            j = end + 1
        found[j] = (OPS[words[i]](args), j - i + 1, height + 1, words[i])
        return found[j][0], j, height + 1

    value, end, _ = node(0)
    assert end == len(words) - 1
    return value, found


def generate_files(tmp_path, *extra, workers=1, task="subtrees", name="data"):
    out = tmp_path / name
    generate([
        "--task", task, "--num_train_samples", "30", "--num_valid_samples", "10", "--num_test_samples", "10",
        "--min_length", "50", "--max_length", "200", "--max_depth", "8", "--max_args", "5",
        "--num_workers", str(workers), "--seed", "3", "--output_dir", str(out), *extra,
    ])
    return out


@pytest.fixture(scope="module")
def subtrees(tmp_path_factory):
    return generate_files(tmp_path_factory.mktemp("listops"), "--no_paranthesis", "--unique_templates")


def test_annotations_match_a_recursive_evaluation(subtrees):
    ids = []
    for split in SPLITS:
        columns = read_tsv(subtrees / f"subtrees_{split}.tsv", ["Source", "Target", "SubTreeEvals", "SubTreeLengths",
                                                                 "SubTreeHeights", "SubTreeOps", "SubTreeInds", "Id"])
        assert len(columns["Source"]) == {"train": 30, "val": 10, "test": 10}[split]
        for row in range(len(columns["Source"])):
            words = columns["Source"][row].split()
            assert 50 < len(words) < 200
            value, found = evaluate(words)
            assert int(columns["Target"][row]) == value
            inds = [int(i) for i in columns["SubTreeInds"][row].split()]
            assert inds == sorted(found) and inds[-1] == len(words) - 1  # every `]`, root last
            for column, k in (("SubTreeEvals", 0), ("SubTreeLengths", 1), ("SubTreeHeights", 2), ("SubTreeOps", 3)):
                assert columns[column][row].split() == [str(found[i][k]) for i in inds]
            ids.append(int(columns["Id"][row]))
    assert ids == list(range(50))


def test_no_expression_or_template_repeats_across_splits(subtrees):
    sources = [s for split in SPLITS for s in read_tsv(subtrees / f"subtrees_{split}.tsv", ["Source"])["Source"]]
    assert len(set(sources)) == len(sources)
    templates = [" ".join(w for w in s.split() if not w.isdigit()) for s in sources]
    assert len(set(templates)) == len(templates)


def test_same_files_for_any_number_of_workers(tmp_path, subtrees):
    two = generate_files(tmp_path, "--no_paranthesis", "--unique_templates", workers=2)
    for split in SPLITS:
        assert (two / f"subtrees_{split}.tsv").read_bytes() == (subtrees / f"subtrees_{split}.tsv").read_bytes()


def test_lra_parentheses_drop_to_the_same_tokens(tmp_path):
    rng = np.random.default_rng(0)
    tree = sample_chunk(rng, 256, 6, 4, 10, 60)[0]
    with_parens = to_string(tree, parentheses=True)
    plain = to_string(tree, parentheses=False)
    assert with_parens.count("(") == with_parens.count(")") > 0
    assert with_parens.replace("( ", "").replace(" )", "") == plain
    assert np.array_equal(tokenize(with_parens), tokenize(plain))
    # LRA's nesting: an operator with k items opens k + 1 groups
    assert to_string({"tokens": np.array([11, 2, 9, 14], dtype=np.uint8), "starts": np.array([0]),
                      "inds": np.array([3]), "n_args": np.array([2])}, True) == "( ( ( [MAX 2 ) 9 ) ] )"


def test_medians_of_even_counts_round_down():
    rng = np.random.default_rng(1)
    checked = 0
    for tree in sample_chunk(rng, 2048, 3, 4, 3, 40):
        words = to_string(tree, False).split()
        value, found = evaluate(words)
        assert [found[i][0] for i in tree["inds"].tolist()] == tree["evals"].tolist()
        checked += sum(op == "[MED" for *_, op in found.values())
    assert checked > 50


def test_tokenize_rejects_unknown_words():
    assert tokenize("[SM 3 [MIN 1 2 ] ]").tolist() == [VOCAB.index("[SM"), 10, VOCAB.index("[MIN"), 8, 9, 6, 6]
    for bad in ("[SM 12 ]", "[SUM 1 ]", "[M 1 ]"):
        with pytest.raises(ValueError, match="unknown token"):
            tokenize(bad)


def test_existing_files_are_not_overwritten(subtrees):
    with pytest.raises(SystemExit, match="exists"):
        generate(["--task", "subtrees", "--output_dir", str(subtrees)])


def test_subtrees_dataset_labels_every_closing_bracket(subtrees, tmp_path):
    ds = ListOpsSubTrees(l_min=50, l_max=256, data_dir=subtrees)
    ds.setup()
    columns = read_tsv(subtrees / "subtrees_val.tsv", ["Source", "SubTreeEvals", "SubTreeInds", "SubTreeHeights"])
    x, y, extra = ds.splits["val"][3]
    words = columns["Source"][3].split()
    assert x.shape == y.shape == (256,) and (x[len(words):] == 0).all()
    assert [VOCAB[i] for i in x[: len(words)].tolist()] == [w.replace("]", "X") for w in words]
    inds = [int(i) for i in columns["SubTreeInds"][3].split()]
    assert torch.nonzero(y != -100).flatten().tolist() == inds
    assert y[inds].tolist() == [int(v) for v in columns["SubTreeEvals"][3].split()]
    heights = [min(int(h), 10) - 1 for h in columns["SubTreeHeights"][3].split()]
    assert extra["height"][inds].tolist() == heights and (extra["op"][y == -100] == -1).all()
    assert (subtrees / "cache" / "subtrees_val.npz").exists()
    again = ListOpsSubTrees(l_min=50, l_max=256, data_dir=subtrees)
    again.setup()  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(again.splits["val"][3][:2], (x, y)))


def test_lengths_outside_l_min_l_max_are_an_error(subtrees):
    ds = ListOpsSubTrees(l_min=50, l_max=100, data_dir=subtrees)
    with pytest.raises(ConfigError, match=r"dataset.l_max=100: .* has \d+ tokens"):
        ds.setup()


def test_missing_data_names_the_command(tmp_path):
    ds = ListOpsSubTrees(data_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="python -m src.dataloaders.prepare.listops --task subtrees"):
        ds.setup()


def test_lra_listops_dataset(tmp_path):
    data = generate_files(tmp_path, task="basic")
    ds = ListOps(l_min=50, l_max=300, data_dir=data)
    ds.setup()
    x, y = ds.splits["train"][0]
    source = read_tsv(data / "basic_train.tsv", ["Source", "Target"])
    assert y.item() == int(source["Target"][0]) and x.shape == (300,)
    assert y.item() == evaluate(source["Source"][0].replace("(", "").replace(")", "").split())[0]


def test_the_generate_hint_is_the_readme_command():
    """The command a missing-data error prints for ListOpsSubTrees' defaults generates what the
    command of docs/experiments.md does (same options), with the run's output directory."""
    from conftest import ROOT

    readme = next(line for line in (ROOT / "docs" / "experiments.md").read_text().splitlines()
                  if line.startswith("python -m src.dataloaders.prepare.listops --task subtrees"))

    def options(command):
        words = command.split()
        return {w: words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
                for i, w in enumerate(words) if w.startswith("--") and w != "--output_dir"}

    assert options(ListOpsSubTrees().command()) == options(readme)
    assert "--max_length 2000" in ListOps().command()  # LRA's generator setting, the documented default
