"""The baselines of `benchmarks.datagen --families icl`: the originals' generators one example at a
time, with the random calls and per-example work they make, written here from their semantics (not
copied), laid out as src/dataloaders/icl.py and dfa.py lay them out (so the tests can check them
against the reference labels).

    induction_head, associative_recall  HazyResearch/safari (and berlino/seq_icl) synthetics.py: a numpy
                     Generator's `choice` over the string vocabulary for the context, the trigger or the
                     key-value map and the pairs, a Python list of strings joined and split, then mapped to ids
    copying          state-spaces/s4 copying.py, torch_copying_data for one example (variable: a randperm of
                     the L + M positions, as its training dataset draws each example)
    icl_dfa          berlino/seq_icl dfa.py: RandomDFASampler.sample (numpy choice per state) and DFA.sample
                     (one `choice` per letter), strings joined with ` | `, split and mapped to ids. Its
                     pythomata minimisation is left out (a cost the original pays, not counted here).
"""

import numpy as np
import torch

from src.utils.labels import IGNORE_INDEX


def induction_head(rng, vocab_size, L, induction_len=1, num_triggers=1):
    """(x, y) of one example, y the language-model labels (loss_on=all)."""
    symbols = [str(v) for v in range(vocab_size - 2)]
    seq = list(rng.choice(symbols, L)) + ["=>"]
    if rng.uniform() < 0.5:
        num_triggers = 1
    kept = []
    for p in sorted(rng.integers(L - (1 + induction_len), size=num_triggers)):
        if not kept or p - kept[-1] > induction_len:
            kept.append(p)
    copy = [seq[kept[0] + 1 + i] for i in range(induction_len)]
    for p in kept:
        seq[p] = "=>"
        seq[p + 1 : p + 1 + induction_len] = copy
    text = " ".join(seq + copy)
    ids = {s: i for i, s in enumerate(symbols + ["=>", "."])}
    tokens = [ids[t] for t in text.split()]
    return torch.tensor(tokens[:-1]), torch.tensor(tokens[1:])


def associative_recall(rng, vocab_size, L, num_keys=1, allow_dot=False):
    symbols = [str(v) for v in range(vocab_size - 2)]
    keys, values = symbols[: len(symbols) // 2], symbols[len(symbols) // 2 :]
    compound = [[k] for k in keys]
    for _ in range(num_keys - 1):
        compound = [c + [k] for c in compound for k in keys]
    bound = {tuple(c): rng.choice(values) for c in compound}
    present, seq = {}, []
    for _ in range(L // (num_keys + 1)):
        k = tuple(rng.choice(list(bound)))
        seq += list(k) + [bound[k]]
        present[k] = True
    q = tuple(rng.choice(list(bound)))
    if not allow_dot:
        while q not in present:
            q = tuple(rng.choice(list(present)))
    text = " ".join(seq + ["=>", *q, bound[q] if q in present else "."])
    ids = {s: i for i, s in enumerate(symbols + ["=>", "."])}
    tokens = [ids[t] for t in text.split()]
    return torch.tensor(tokens[:-1]), torch.tensor(tokens[1:])


def copying(vocab_size, L, M, variable=True):
    tokens = torch.randint(1, vocab_size - 1, (M,))
    at = torch.randperm(L + M)[:M].sort().values if variable else torch.arange(M)
    x = torch.zeros(L + M, dtype=torch.long).scatter_(0, at, tokens)
    x = torch.cat([x, torch.full((M,), vocab_size - 1)])
    return x, torch.cat([torch.full((L + M,), IGNORE_INDEX), tokens])


def dfa_automaton(rng, vocab_size=20, max_num_nodes=12, max_outgoing_edges=4):
    """{state: {letter: state}} as seq_icl's setup draws one (before its minimisation)."""
    n = rng.integers(max_outgoing_edges, max_num_nodes + 1)
    size = rng.integers(max_outgoing_edges, vocab_size - 2 + 1)
    alphabet = tuple(chr(a + 97) for a in rng.choice(vocab_size - 2, size=size, replace=False))
    sampler = np.random.default_rng(rng.integers(0, 2**32))
    transitions = {}
    for node in range(n):
        k = sampler.integers(1, max_outgoing_edges)
        letters = sampler.choice(alphabet, size=k, replace=False)
        targets = sampler.choice([m for m in range(n) if m != node], size=k, replace=False)
        transitions[node] = dict(zip(letters, targets))
    return transitions, np.random.default_rng(sampler.integers(0, 2**32))


def icl_dfa(rng, L, vocab_size=20, max_num_nodes=12, max_outgoing_edges=4, min_num_in_context_examples=10,
            max_num_in_context_examples=20, max_len_per_example=50):
    """(x, y, dfa {state: {letter: state}}) of one prompt, padded to L."""
    transitions, walker = dfa_automaton(rng, vocab_size, max_num_nodes, max_outgoing_edges)
    text = ""
    for _ in range(rng.integers(min_num_in_context_examples, max_num_in_context_examples)):
        state, word = 0, ""
        for _ in range(rng.integers(1, max_len_per_example)):
            letter = walker.choice(list(transitions[state]))
            word += letter + " "
            state = transitions[state][letter]
        text += word.rstrip() + " | "
    ids = {chr(a + 97): a for a in range(vocab_size - 2)} | {"|": vocab_size - 2}
    tokens = [ids[t] for t in text[:-3].split()][: L + 1]
    pad = vocab_size - 1
    x = tokens[:-1] + [pad] * (L + 1 - len(tokens))
    y = [t if t < vocab_size - 2 else IGNORE_INDEX for t in tokens[1:]] + [IGNORE_INDEX] * (L + 1 - len(tokens))
    return torch.tensor(x), torch.tensor(y), transitions
