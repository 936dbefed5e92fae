"""Random ListOps expression trees, sampled and evaluated many at a time.

A tree, after LRA ListOps: the root sits at depth 1; a node at depth d < max_depth is an operator
with probability `p_op`, with randint(2, max_args) children (inclusive), otherwise a leaf; at
max_depth every node is a leaf. Leaves are digits 0-9; operators are

    MIN, MAX, MED = int(median) (the floor of the mean of the two middle values for an even
    count), SM = sum mod 10.

The paren-free token sequence of an operator node is `[OP child_1 ... child_k ]`, of a leaf its
digit, so a node's length is 1 for a leaf and 2 + the children's lengths for an operator. Trees
are kept when min_length < length < max_length.

Vectorised form: `sample_chunk` grows `attempts` trees together, one depth level at a time (all
nodes of a level in one array, a tree's nodes contiguous and in order), stops a tree as soon as it
grows past max_length, and then computes sizes, heights and values bottom-up and token positions
top-down with segment reductions over the children of each node. The cost is a few numpy calls per
level instead of a Python call per node.
"""

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
# Token codes: digits 0-9 are themselves, operators 10-13, END 14.
OP0, END_CODE = 10, 14
TOKEN_NAMES = np.array([str(d) for d in range(10)] + list(OPERATORS) + [END])


def _grow(rng, attempts, max_depth, max_args, max_length, p_op):
    """Tree shapes, level by level: [(tree id, number of children)] per level, and each tree's
    length (max_length for trees stopped when they reached it)."""
    tree = np.arange(attempts)
    length = np.zeros(attempts, dtype=np.int64)
    levels, depth = [], 1
    while tree.size:
        is_op = rng.random(tree.size) < p_op if depth < max_depth else np.zeros(tree.size, dtype=bool)
        k = np.where(is_op, rng.integers(2, max_args + 1, tree.size), 0)
        length += np.bincount(tree, weights=1 + is_op, minlength=attempts).astype(np.int64)
        k[length[tree] >= max_length] = 0  # stop growing trees already too long
        levels.append((tree, k))
        tree = np.repeat(tree, k)
        depth += 1
    return levels, np.minimum(length, max_length)


def _segments(k):
    """Start offsets of each node's children in the next level (k: children per node)."""
    return np.cumsum(k) - k


def sample_chunk(rng, attempts, max_depth, max_args, min_length, max_length, p_op=0.25):
    """Grow `attempts` trees from `rng` and return the kept ones, in attempt order, as dicts:
        tokens   (length,) uint8 token codes
        starts   (n_ops,) position of each operator's `[OP` token
        inds     (n_ops,) position of its closing `]`, increasing (so the root is last)
        evals, lengths, heights, ops, n_args   (n_ops,) value, token length, height (1 for an
                 operator over leaves), operator index 0-3 and child count of each operator node
    """
    levels, length = _grow(rng, attempts, max_depth, max_args, max_length, p_op)
    kept = (length > min_length) & (length < max_length)
    # Keep the nodes of kept trees; a kept node's children are kept, so the level order holds.
    levels = [(tree[kept[tree]], k[kept[tree]]) for tree, k in levels]
    levels = [level for level in levels if level[0].size]
    n_trees = int(kept.sum())
    if n_trees == 0:
        return []
    ops = [np.where(k > 0, rng.integers(0, len(OPERATORS), k.size), -1) for _, k in levels]
    digits = [rng.integers(0, 10, k.size) for _, k in levels]

    # Bottom-up: token length, height and value of every node.
    size = [None] * len(levels)
    height = [None] * len(levels)
    value = [None] * len(levels)
    for d in reversed(range(len(levels))):
        k = levels[d][1]
        size[d] = np.ones(k.size, dtype=np.int64)
        height[d] = np.zeros(k.size, dtype=np.int64)
        value[d] = digits[d].copy()
        inner = k > 0
        if inner.any():
            starts = _segments(k)[inner]
            size[d][inner] = 2 + np.add.reduceat(size[d + 1], starts)
            height[d][inner] = 1 + np.maximum.reduceat(height[d + 1], starts)
            value[d][inner] = _apply(ops[d][inner], value[d + 1], k[inner], starts)

    # Top-down: position of every node's first token; trees are laid end to end.
    offset = np.cumsum(size[0]) - size[0]
    start = [offset]
    for d in range(len(levels) - 1):
        k = levels[d][1]
        child_size = size[d + 1]
        before = np.cumsum(child_size) - child_size  # tokens of earlier children, level-wide
        first = np.repeat(_segments(k), k)  # index of the first sibling of each child
        start.append(np.repeat(start[d] + 1, k) + before - before[first])

    total = int(size[0].sum())
    tokens = np.empty(total, dtype=np.uint8)
    for d in range(len(levels)):
        inner = levels[d][1] > 0
        tokens[start[d]] = np.where(inner, OP0 + ops[d], digits[d])
        tokens[start[d][inner] + size[d][inner] - 1] = END_CODE

    cat = lambda parts: np.concatenate([p[levels[d][1] > 0] for d, p in enumerate(parts)])  # noqa: E731
    op_start, op_size = cat(start), cat(size)
    op_end = op_start + op_size - 1
    order = np.argsort(op_end, kind="stable")
    tree_of_op = np.searchsorted(offset, op_end[order], side="right") - 1
    fields = dict(
        starts=op_start[order], inds=op_end[order], evals=cat(value)[order], lengths=op_size[order],
        heights=cat(height)[order], ops=cat(ops)[order], n_args=cat([k for _, k in levels])[order],
    )
    bounds = np.searchsorted(tree_of_op, np.arange(n_trees + 1))
    trees = []
    for t in range(n_trees):
        lo, hi, base = bounds[t], bounds[t + 1], offset[t]
        tree = {name: a[lo:hi] for name, a in fields.items()}
        tree["starts"] = tree["starts"] - base
        tree["inds"] = tree["inds"] - base
        tree["tokens"] = tokens[base : base + size[0][t]]
        trees.append(tree)
    return trees


def _apply(op, child_values, k, starts):
    """Values of operator nodes: op (n,) in 0-3 applied to their k (n,) children, which are the
    contiguous runs of `child_values` beginning at `starts` (n,)."""
    mins = np.minimum.reduceat(child_values, starts)
    maxs = np.maximum.reduceat(child_values, starts)
    sums = np.add.reduceat(child_values, starts) % 10
    # Median: sort each run (runs are ordered by parent, values within a run), take the middle.
    parent = np.repeat(np.arange(k.size), k)
    ranked = child_values[np.lexsort((child_values, parent))]
    meds = (ranked[starts + (k - 1) // 2] + ranked[starts + k // 2]) // 2
    return np.choose(op, [mins, maxs, meds, sums])


def to_string(tree, parentheses):
    """The expression as text. Without parentheses, tokens joined by spaces; with them, LRA's
    form, which nests a node's items left to right: `( ( ( [MAX 2 ) 9 ) ] )`."""
    names = TOKEN_NAMES[tree["tokens"]]
    if not parentheses:
        return " ".join(names.tolist())
    n = names.size
    opens = np.zeros(n, dtype=np.int64)
    closes = np.zeros(n, dtype=np.int64)
    opens[tree["starts"]] = tree["n_args"] + 1
    closes[tree["inds"]] += 1  # the `]` item of each operator
    # Every non-root node closes one group of its parent: its last token gets a `)`.
    last = _last_tokens(tree)
    closes[last[last != n - 1]] += 1
    return " ".join(
        "( " * o + name + " )" * c for o, name, c in zip(opens.tolist(), names.tolist(), closes.tolist())
    )


def _last_tokens(tree):
    """Position of the last token of every node: leaves are their own token, operators their `]`."""
    is_leaf = np.ones(tree["tokens"].size, dtype=bool)
    is_leaf[tree["inds"]] = False
    is_leaf[tree["tokens"] >= OP0] = False
    return np.concatenate([np.flatnonzero(is_leaf), tree["inds"]])
