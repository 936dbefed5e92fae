"""In-context language learning (Akyurek et al. 2024, "In-Context Language Learning: Architectures
and Algorithms", RegBench; berlino/seq_icl, src/dataloaders/dfa.py): every example is a prompt of
strings from one random finite automaton, which the model must infer in context. docs/tasks.md,
"icl_dfa".

Ids: letters 0..A-1 (A = vocab_size - 2; seq_icl's a, b, c, ..), then `|` (A, the separator), then
<pad> (A + 1 = vocab_size - 1; seq_icl's `.`). With E = max_outgoing_edges, one example:

    automaton  n ~ U{E..max_num_nodes} states (0 initial, all accepting); an alphabet of a ~ U{E..A}
               distinct letters; from each state, k ~ U{1..E-1} edges: k distinct letters of the
               alphabet to k distinct other states (no self-loops)
    prompt     m ~ U{min_num_in_context_examples..max_num_in_context_examples - 1} strings joined by `|`;
               string i has length l_i ~ U{1..max_len_per_example - 1} and is a walk from state 0, each
               step a letter drawn uniformly among the current state's edges
    x, y       x = the prompt without its last token, y_t = x_{t+1} (the next token), -100 where the next
               token is `|` (seq_icl never scores the separator) and on the padding

Every state has an edge, so every walk goes on. seq_icl minimises and trims each automaton
(pythomata); that merges states with the same continuations, which changes neither the strings'
law nor the set of valid next letters after any prefix, so it is left out here. seq_icl also
meant to keep its automata distinct (a set keyed by their transitions), but its DFA class defines
__hash__ without __eq__, so the set keeps every draw: no automaton is ever dropped, here neither.
It truncates a prompt to `input_seq_len` characters (two per token, never reached at its
settings); here a prompt is cut to L + 1 tokens, L being the padded input length (null: the
longest prompt, (m_max - 1) l_max + m_max - 2 with m_max, l_max the largest values drawn: 948
at seq_icl's settings). seq_icl's training set is 5000 prompts, each from its own automaton,
and its test set 500, halved into validation and test: num_train_examples=5000,
num_eval_examples=250.

Batches carry {"dfa": (B, max_num_nodes, A) int8, the target state of each (state, letter) edge or -1;
"valid_next": (B, L) int64, bit v set iff letter v may follow x_<=t: the edges of the state that the
current string (the letters since the last `|`) reaches; 0 on padding}. The metrics dfa_accuracy
(greedy next-token validity) and dfa_tv (total variation to the automaton's uniform next-letter
distribution) read valid_next (src/tasks/metrics.py).

Generation: the automata of the batch at once (edge letters and targets as the first k of random
orders), then all strings of the batch walked together, one step per letter (max_len_per_example
- 1 steps of (B, strings) gathers), and laid out by searchsorted over the strings' offsets.
"""

import torch

from src.dataloaders.tokens import TokenDataset
from src.utils.errors import ConfigError
from src.utils.labels import IGNORE_INDEX

MAX_LETTERS = 62  # valid_next is a bitmask of letters in an int64


def _first(keys, k):
    """(..., n) random keys -> (..., k) the positions of the k smallest: a uniform ordered k-sample
    of the positions whose key is finite."""
    return keys.argsort(dim=-1)[..., :k]


class ICLDFA(TokenDataset):
    """10..19 strings of one random automaton joined by `|`; every next letter is predicted (seq_icl's in-context language learning)."""

    def __init__(self, vocab_size=20, max_num_nodes=12, max_outgoing_edges=4, min_num_in_context_examples=10,
                 max_num_in_context_examples=20, max_len_per_example=50, L=None, samples_per_epoch=16000,
                 val_split=0.1, seed=0, num_train_examples=5000, num_eval_examples=250):
        for key, value, low in (("vocab_size", vocab_size, 4), ("max_outgoing_edges", max_outgoing_edges, 2),
                                ("min_num_in_context_examples", min_num_in_context_examples, 1),
                                ("max_len_per_example", max_len_per_example, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"dataset.{key}={value!r} must be an integer >= {low}")
        A, E = vocab_size - 2, max_outgoing_edges
        if not E <= A <= MAX_LETTERS:
            raise ConfigError(f"dataset.vocab_size={vocab_size}: the {A} letters must be in max_outgoing_edges={E}.."
                              f"{MAX_LETTERS}")
        if not isinstance(max_num_nodes, int) or not E <= max_num_nodes <= 127:
            raise ConfigError(f"dataset.max_num_nodes={max_num_nodes!r} must be an integer in max_outgoing_edges={E}..127")
        if not isinstance(max_num_in_context_examples, int) or max_num_in_context_examples <= min_num_in_context_examples:
            raise ConfigError(f"dataset.max_num_in_context_examples={max_num_in_context_examples!r} must be an integer "
                              f"> min_num_in_context_examples={min_num_in_context_examples} (its bound is exclusive)")
        self.letters, self.edges, self.max_nodes = A, E, max_num_nodes
        self.min_examples, self.max_examples = min_num_in_context_examples, max_num_in_context_examples
        self.max_len = max_len_per_example
        self.sep_id, self.n_tokens, self.d_output = A, vocab_size, vocab_size
        words, letters = max_num_in_context_examples - 1, max_len_per_example - 1
        longest = words * letters + words - 2  # the longest prompt, less its last token
        super().__init__(longest if L is None else L, None, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)

    def automata(self, B, generator):
        """(letter (B, S, E-1), target (B, S, E-1), edges (B, S)): state s's edge i < edges[b, s] reads
        letter[b, s, i] and goes to target[b, s, i] (S = max_num_nodes; states >= n have no edges)."""
        A, E, S = self.letters, self.edges, self.max_nodes
        n = torch.randint(E, S + 1, (B,), generator=generator)
        size = torch.randint(E, A + 1, (B,), generator=generator)
        alphabet = _first(torch.rand(B, A, generator=generator), A)  # (B, A): the alphabet is its first `size`
        edges = torch.randint(1, E, (B, S), generator=generator).masked_fill_(torch.arange(S) >= n[:, None], 0)
        slots = torch.rand(B, S, A, generator=generator).masked_fill_(torch.arange(A) >= size[:, None, None], 2.0)
        letter = alphabet.gather(1, _first(slots, E - 1).flatten(1)).view(B, S, E - 1)
        others = torch.rand(B, S, S, generator=generator)
        others.masked_fill_((torch.arange(S) >= n[:, None, None]) | torch.eye(S, dtype=torch.bool), 2.0)
        return letter, _first(others, E - 1), edges

    def generate(self, batch_size, generator):
        B, E, L = batch_size, self.edges, self.L
        letter, target, edges = self.automata(B, generator)
        W, steps = self.max_examples - 1, self.max_len - 1
        m = torch.randint(self.min_examples, self.max_examples, (B,), generator=generator)
        lengths = torch.randint(1, self.max_len, (B, W), generator=generator).masked_fill_(
            torch.arange(W) >= m[:, None], 0)  # (B, W): 0 for the strings past m
        # Walk every string of the batch at once from state 0; symbols and states (B, W, steps).
        flat = (torch.arange(B) * self.max_nodes)[:, None]  # (B, 1): row offsets into the (B S) states
        letter, target, edges = letter.view(-1, E - 1), target.view(-1, E - 1), edges.view(-1)
        u = torch.rand(B, W, steps, generator=generator)
        state = torch.zeros(B, W, dtype=torch.long)
        symbols, states = torch.empty(B, W, steps, dtype=torch.long), torch.empty(B, W, steps, dtype=torch.long)
        for j in range(steps):
            row = flat + state  # (B, W)
            i = (u[:, :, j] * edges[row]).long()[..., None]
            symbols[:, :, j] = letter[row].gather(2, i)[..., 0]
            state = states[:, :, j] = target[row].gather(2, i)[..., 0]
        prompt, state_at, total = self.layout(symbols, states, lengths, L + 1)  # (B, L + 1) x2, (B, 1)
        y = prompt[:, 1:].masked_fill(prompt[:, 1:] >= self.sep_id, IGNORE_INDEX)
        x = prompt[:, :L].masked_fill(torch.arange(L) >= total - 1, self.pad_id)  # the prompt less its last token
        bits = (1 << letter) * (torch.arange(E - 1) < edges[:, None])  # (B S, E-1)
        masks = bits.sum(-1).view(B, -1)  # (B, S): the letters leaving each state
        valid = masks.gather(1, state_at[:, :L]).masked_fill_(x == self.pad_id, 0)
        table = torch.full((B * self.max_nodes, self.letters), -1, dtype=torch.int8)
        live = torch.arange(E - 1) < edges[:, None]
        table[torch.arange(B * self.max_nodes)[:, None].expand_as(letter)[live], letter[live]] = target[live].to(torch.int8)
        return x, y, {"dfa": table.view(B, self.max_nodes, self.letters), "valid_next": valid}

    def layout(self, symbols, states, lengths, T):
        """The prompts (B, T): string i, `|`, string i + 1, .., cut to T and padded; the state
        reached at each position (0 after `|` and on padding); each prompt's length (B, 1), uncut."""
        B, W, steps = symbols.shape
        ends = (lengths + 1).cumsum(1)  # (B, W): one past each string's `|`
        t = torch.arange(T).expand(B, T).contiguous()
        w = torch.searchsorted(ends, t, right=True).clamp_(max=W - 1)  # (B, T): the string of each position
        j = t - (ends - lengths - 1).gather(1, w)  # position in the string (== its length: the `|`)
        inside = j < lengths.gather(1, w)
        index = (w * steps + j.clamp(max=steps - 1)).masked_fill_(~inside, 0)
        x = torch.where(inside, symbols.view(B, -1).gather(1, index), self.sep_id)
        state = torch.where(inside, states.view(B, -1).gather(1, index), 0)
        total = ends.gather(1, (lengths > 0).sum(1, keepdim=True) - 1) - 1  # (B, 1): the prompt's length
        x.masked_fill_(t >= total, self.pad_id)
        return x, state.masked_fill_(t >= total, 0), total
