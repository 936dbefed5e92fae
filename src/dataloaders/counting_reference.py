"""Per-sample pure-Python definitions of the counting tasks (counting.py): the oracle of
tests/test_counting.py and the baseline of benchmarks/datagen.py.

`labels(task, x, **params)` recomputes a sample's labels (a list, -100 unscored) from its
tokens x (a list, unpadded); `sample(task, rng, length, **params)` draws one sample of that
length with a `random.Random`, one token at a time, and labels it with `labels`.
"""

from src.utils.labels import IGNORE_INDEX

MODULUS = {"count_mod": 10, "count_selective": 0}  # the default modulus (null) of each task


def labels(task, x, max_count=100, symbols=1, bos=False, modulus=None, items=10, cap=10, shift_min=0):
    modulus = MODULUS.get(task) if modulus is None else modulus
    if task == "count_shifted":
        return [IGNORE_INDEX] + [x[0] + t for t in range(1, len(x))]
    if task == "count_selective":
        seen, out = {}, []
        for t, token in enumerate(x):
            if bos and t == 0:
                out.append(IGNORE_INDEX)
                continue
            count = seen.get(token, 0)
            seen[token] = count + 1
            out.append(count % modulus if modulus else count)
        return out
    out, k = [], 0
    for t, token in enumerate(x):
        if bos and t == 0:
            out.append(IGNORE_INDEX)
            continue
        k += 1
        out.append(k if task == "count_same" else (k - 1) % modulus + 1)
    return out


def sample(task, rng, length, max_count=100, symbols=1, bos=False, modulus=None, items=10, cap=10, shift_min=0):
    params = dict(max_count=max_count, symbols=symbols, bos=bos, modulus=modulus, items=items, cap=cap,
                  shift_min=shift_min)
    if task == "count_shifted":
        x = [rng.randint(shift_min, max_count - (length - 1))] + [max_count + 1] * (length - 1)
    elif task == "count_selective":
        c = length - bos  # cap: a draw without replacement from {each item cap times}; null: uniform items
        x = [rng.randrange(items) for _ in range(c)] if cap is None else [
            token // cap for token in rng.sample(range(items * cap), c)]
        x = [max(items, cap or 0)] * bos + x
    else:
        x = [max_count + 1 + (rng.randrange(symbols) if symbols > 1 else 0) for _ in range(length - bos)]
        x = [max_count + 1 + symbols] * bos + x
    return x, labels(task, x, **params)
