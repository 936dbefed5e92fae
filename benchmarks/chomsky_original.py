"""The baseline of `benchmarks.datagen --families chomsky`: the original's sample_batch, one
example at a time, with the random calls it makes and the per-example work it does.

google-deepmind/neural_networks_chomsky_hierarchy, tasks/dcf and tasks/cs, written here from its
semantics (not copied). Where its sample_batch is a loop over examples (the expressions, the
stack, the numbers), one iteration of that loop: the expressions recurse with one legacy
`randint` of a numpy RandomState per draw and build strings, mapped to ids character by
character; the stack draws its three numpy arrays and runs the actions in a Python loop; the
binary tasks draw the split with numpy and the numbers with Python's `random` (its bignums), and
write bits through format strings. Where its sample_batch is one batched jax draw (the strings,
missing_duplicate_string), one numpy draw of the example's tokens (size = its length) and the
same transformation of that one example in numpy. The one-hot encoding is left out; the example
is laid out as chomsky.py lays it out (chomsky_reference.py's layout, by which the tests check
it): x = the input ids, then one <blank> per output position; y = -100 on the input, the
output ids up to the end token, -100 after it. Defaults as chomsky.py's: modulus 5, mult,
vocab 2 (bucket_sort: 5).
"""

import math

import numpy as np
import torch

from src.dataloaders.chomsky_reference import ENDED, END, input_size
from src.utils.labels import IGNORE_INDEX

MODULUS = 5


def expression(rng, length, mult=True, modulus=MODULUS):
    """(text, value) as the original's generate_one_expression_and_result: a digit, -d, (d), (-d)
    for lengths 1..4, else (left op right) with len(left) ~ U{1..length - 4}; one randint a draw."""
    if length <= 4:
        d = rng.randint(low=0, high=modulus)
        text = ("{}", "-{}", "({})", "(-{})")[length - 1].format(d)
        return text, (-d if length % 2 == 0 else d) % modulus
    left_length = rng.randint(low=1, high=length - 3)
    left, a = expression(rng, left_length, mult, modulus)
    right, b = expression(rng, length - 3 - left_length, mult, modulus)
    op = rng.randint(low=0, high=3 if mult else 2)
    if op == 0:
        return "(" + left + "+" + right + ")", (a + b) % modulus
    if op == 1:
        return "(" + left + "-" + right + ")", (a - b) % modulus
    return "(" + left + "*" + right + ")", (a * b) % modulus


def alphabet(symbols, modulus=MODULUS):  # character -> id: the digits, then the symbols
    return {str(d): d for d in range(modulus)} | {s: modulus + k for k, s in enumerate(symbols)}


BRACKETS, EQUATIONS = alphabet("+-*()x"), alphabet("+-()x=")


def modular_arithmetic_brackets(rng, length):
    text, value = expression(rng, length)
    return [BRACKETS[c] for c in text], [value]


def solve_equation(rng, length):
    if length < 3:
        return [0] * length, [0]
    text, value = expression(rng, length - 2, mult=False)
    i = rng.randint(low=0, high=len(text))
    digits = [str(d) for d in range(MODULUS)]
    while text[i] not in digits:
        i = (i + 1) % (length - 2)
    equation = f"{text[:i]}x{text[i + 1:]}={value}"
    return [EQUATIONS[c] for c in equation], [int(text[i])]


def stack_manipulation(rng, length):
    if length == 1:
        value = rng.randint(low=0, high=2, size=(1,))
        return value, list(value) + [END]
    k = rng.randint(low=1, high=length)
    stack = rng.randint(low=0, high=2, size=(k,))
    actions = rng.randint(low=2, high=5, size=(length - k,))
    current = list(stack)
    for action in actions:
        if action == 2:
            if current:
                current.pop()
        elif action in [3, 4]:
            current.append(action - 3)
    result = current[::-1] + [END]
    return np.concatenate([stack, actions]), result + [0] * (length + 1 - len(result))


def bits(value, width=0, little_endian=True):  # the original's numbers_to_*_binary, one number
    text = f"{value:b}".zfill(width)
    return list(map(int, text[::-1] if little_endian else text))


def binary_operation(rng, length, python_rng, product):
    """The original's _sample_expressions_and_results for one row, then sample_batch's padding."""
    if length <= 2:
        value = rng.randint(0, 2**length - 1)
        tokens, result = bits(value, length), [0] * (length - 1) if product else bits(value)
    else:
        length_n = rng.randint(1, length - 1)
        length_m = length - 1 - length_n
        n, m = python_rng.randint(1, 2**length_n - 1), python_rng.randint(1, 2**length_m - 1)
        tokens, result = bits(n, length_n) + [2] + bits(m, length_m), bits(n * m if product else n + m)
    return tokens, result + [END] + [0] * (length - product - len(result))


def binary_addition(rng, length, python_rng):
    return binary_operation(rng, length, python_rng, product=False)


def binary_multiplication(rng, length, python_rng):
    return binary_operation(rng, length, python_rng, product=True)


def compute_sqrt(rng, length, python_rng):
    value = python_rng.randint(1, 2**length - 1)
    return bits(value, length, little_endian=False), bits(math.isqrt(value), (length + 1) // 2, little_endian=False)


def strings(rng, length, vocab_size=2):
    return rng.randint(0, vocab_size, size=length)


def duplicate_string(rng, length):
    s = strings(rng, length)
    return s, np.concatenate([s, s])


def reverse_string(rng, length):
    s = strings(rng, length)
    return s, np.flip(s)


def odds_first(rng, length):
    s = strings(rng, length)
    return s, np.concatenate([s[1::2], s[::2]])


def bucket_sort(rng, length):
    s = strings(rng, length, vocab_size=5)
    return s, np.sort(s)


def missing_duplicate_string(rng, length):
    if length == 1:
        return np.ones(1, np.int64), np.ones(1, np.int64)
    s = rng.randint(0, 2, size=length // 2)
    duplicated = np.concatenate([s, s])
    i = rng.randint(0, len(duplicated))
    output = duplicated[i : i + 1].copy()
    duplicated[i] = 2
    return np.concatenate([duplicated, np.full(length % 2, 3)]), output


TASKS = {f.__name__: f for f in (
    modular_arithmetic_brackets, reverse_string, stack_manipulation, solve_equation, duplicate_string,
    missing_duplicate_string, odds_first, binary_addition, binary_multiplication, compute_sqrt, bucket_sort)}
PYTHON_DRAWS = ("binary_addition", "binary_multiplication", "compute_sqrt")  # numbers from Python's random


def example(task, rng, python_rng, length):
    """(x, y) int64 arrays of one example of `length`, laid out as chomsky.py's (module docstring)."""
    tokens, outputs = TASKS[task](rng, length, python_rng) if task in PYTHON_DRAWS else TASKS[task](rng, length)
    outputs = np.asarray(outputs)
    if task in ENDED:  # -100 after the end token
        outputs = np.where(np.arange(len(outputs)) > np.argmax(outputs == END), IGNORE_INDEX, outputs)
    x = np.concatenate([np.asarray(tokens, np.int64), np.full(len(outputs), input_size(task), np.int64)])
    return x, np.concatenate([np.full(length, IGNORE_INDEX, np.int64), outputs])


def batch(task, batch_size, rng, python_rng, length):
    """(x, y) (batch_size, length + outputs) tensors: the examples, stacked."""
    pairs = [example(task, rng, python_rng, length) for _ in range(batch_size)]
    return torch.from_numpy(np.stack([x for x, _ in pairs])), torch.from_numpy(np.stack([y for _, y in pairs]))
