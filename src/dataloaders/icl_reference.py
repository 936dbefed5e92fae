"""Per-example pure-Python definitions of the in-context tasks (icl.py, dfa.py): the oracle of
tests/test_icl.py. Each recomputes an example's labels (a list, -100 unscored) from its tokens x
(a list), as the task defines them.

    induction_head      the answer is the k symbols after the first `=>` of x; y = x[1:] + [its last symbol]
    associative_recall  the answer is the value next to the query key (the tokens after the last `=>`)
                        in the context, `.` if none; y = x[1:] + [answer]
    copying             at the M markers, the non-noise tokens before them, in order
    icl_dfa             walk(dfa, x): the states of the automaton along the prompt and the letters each
                        allows next; the labels are the next tokens but `|`, the last one a letter the
                        automaton allows (the prompt's last token is not in x)
"""

from src.utils.labels import IGNORE_INDEX


def labels(task, x, vocab_size, loss_on="all", induction_len=1, num_keys=1, M=None, **unused):
    prefix, dot = vocab_size - 2, vocab_size - 1
    if task == "copying":
        data = [t for t in x[: len(x) - M] if t != 0]
        return [IGNORE_INDEX] * (len(x) - M) + data
    if task == "induction_head":
        p, k = x.index(prefix), induction_len
        answer = x[p + 1 : p + 1 + k]
    else:
        assert task == "associative_recall"
        q = tuple(x[len(x) - num_keys :])
        pairs = [x[i : i + num_keys + 1] for i in range(0, len(x) - num_keys - 1, num_keys + 1)]
        values = {v for *key, v in pairs if tuple(key) == q}
        assert len(values) <= 1, "a key bound to one value in its example"
        answer, k = [values.pop() if values else dot], 1
    y = x[1:] + answer[-1:]
    return y if loss_on == "all" else [IGNORE_INDEX] * (len(y) - k) + y[-k:]


def walk(dfa, x, sep, pad):
    """dfa: {state: {letter: state}} (0 initial); x: the prompt's tokens. -> [the set of letters
    allowed after x_<=t] per position (empty on padding); AssertionError if x leaves the automaton."""
    allowed, state = [], 0
    for token in x:
        if token == pad:
            allowed.append(set())
            continue
        if token == sep:
            state = 0
        else:
            assert token in dfa[state], ("a letter the automaton does not allow", state, token)
            state = dfa[state][token]
        allowed.append(set(dfa[state]))
    return allowed


def dfa_labels(x, allowed, sep, pad):
    """The labels of an icl_dfa prompt x given walk's sets: x_{t+1} where it is a letter; at the last
    non-pad position the prompt's last letter, unknown from x: None there (any of allowed[t])."""
    n = len([t for t in x if t != pad])
    return [(None if t == n - 1 else x[t + 1] if x[t + 1] != sep else IGNORE_INDEX) if t < n else IGNORE_INDEX
            for t in range(len(x))]
