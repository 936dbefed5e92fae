"""Per-sample pure-Python definitions of the formal-language tasks (formal.py): the oracle of
tests/test_formal.py and the baseline of benchmarks/datagen.py.

`labels(task, x, **params)` recomputes a sample's labels (a list, -100 unscored) from its
tokens x (a list, unpadded); `sample(task, rng, length, **params)` draws one sample of that
length with a `random.Random`, one token at a time (Dyck: the spec's stack sampler), and labels
it with `labels`.
"""

from src.utils.labels import IGNORE_INDEX


def last(value, length):
    return [IGNORE_INDEX] * (length - 1) + [value]


def modular_value(x, modulus=5):  # n op n op .. n, x before + and - (ids m, m+1, m+2), mod m
    total, term, sign = 0, x[0], 1
    for op, n in zip(x[1::2], x[2::2]):
        if op == modulus + 2:
            term = term * n
        else:
            total, term, sign = total + sign * term, n, 1 if op == modulus else -1
    return (total + sign * term) % modulus


def dyck(x, types):
    stack, out, broken = [], [], False
    for token in x:
        if token < types:
            stack.append(token)
        elif stack and stack[-1] == token - types:
            stack.pop()
        else:
            broken = True
        out.append(int(not broken and not stack))
    return out


def labels(task, x, num_ones=None, label_at="all", types=3, depth=6, modulus=5, equals=False):
    if task == "parity":
        odd = [sum(x[: t + 1]) % 2 for t in range(len(x))]
        return odd if label_at == "all" else last(odd[-1], len(x))
    if task == "majority":
        return last(int(2 * sum(x) > len(x)), len(x))
    if task == "even_pairs":
        return last(int(sum(a != b for a, b in zip(x, x[1:])) % 2 == 0), len(x))
    if task == "cycle_navigation":
        return last(sum(move - 1 for move in x) % 5, len(x))
    if task == "modular_arithmetic":
        return last(modular_value(x[:len(x) - equals], modulus), len(x))  # x[-1] is = with equals
    return dyck(x, types)


def dyck_sample(rng, length, types, depth):
    x, stack = [], []
    for t in range(length):
        if length - t == len(stack) or len(stack) == depth or (stack and rng.random() < 0.5):
            x.append(types + stack.pop())
        else:
            stack.append(rng.randrange(types))
            x.append(stack[-1])
    if rng.random() < 0.5:  # shuffle the suffix after a random balanced prefix end
        height, ends = 0, []
        for t, token in enumerate(x):
            if height == 0:
                ends.append(t)
            height += 1 if token < types else -1
        e = rng.choice(ends)
        suffix = x[e:]
        rng.shuffle(suffix)
        x = x[:e] + suffix
    return x


def sample(task, rng, length, num_ones=None, label_at="all", types=3, depth=6, modulus=5, equals=False):
    if task == "parity" and num_ones is not None:
        ones = set(rng.sample(range(length), num_ones))
        x = [int(t in ones) for t in range(length)]
    elif task in ("parity", "majority", "even_pairs"):
        x = [rng.randrange(2) for _ in range(length)]
    elif task == "cycle_navigation":
        x = [rng.randrange(3) for _ in range(length)]
    elif task == "modular_arithmetic":
        m = modulus
        x = [rng.randrange(m) if t % 2 == 0 else rng.randrange(m, m + 3) for t in range(length - equals)]
        x += [m + 3] * equals
    else:
        x = dyck_sample(rng, length, types, depth)
    return x, labels(task, x, num_ones=num_ones, label_at=label_at, types=types, depth=depth, modulus=modulus,
                     equals=equals)
