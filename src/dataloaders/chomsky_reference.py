"""Per-sample definitions of the Chomsky-hierarchy tasks above the regular level (chomsky.py): the
oracle of tests/test_chomsky_tasks.py and the baseline of benchmarks/datagen.py.

`sample(task, rng, length, **params)` draws one example of the hierarchy's `length` as the
original's `sample_batch` draws each of its rows (google-deepmind/neural_networks_chomsky_hierarchy,
tasks/dcf and tasks/cs: the same random calls, one example at a time, from a `random.Random`) and
lays it out as chomsky.py does: x = the input tokens, then one <blank> per output position;
y = -100 on the input, the output ids on the output positions up to the end token (-100 after it).
`labels(task, x, **params)` recomputes y from x alone, by a plain definition of each task (an
expression's value by recursive descent, the sum, product and square root with Python's integers).
"""

import math

from src.utils.labels import IGNORE_INDEX

PLUS, MINUS, TIMES, OPEN, CLOSE, X, EQUALS = "+-*()x="
BRACKET_SYMBOLS = (PLUS, MINUS, TIMES, OPEN, CLOSE, X)  # modular_arithmetic_brackets: ids modulus + 0..5
EQUATION_SYMBOLS = (PLUS, MINUS, OPEN, CLOSE, X, EQUALS)  # solve_equation
POP, PUSH0, PUSH1 = 2, 3, 4  # stack_manipulation's actions (0, 1: the stack's bits)
END = 2  # the end token of the stack and binary outputs
SEPARATOR = 2  # binary_addition's + and binary_multiplication's x
MISSING, EMPTY = 2, 3  # missing_duplicate_string's placeholder and odd-length filler


def input_size(task, modulus=5, vocab_size=None, mult=True):
    """The number of input token ids (the original's input_size); <blank> is this id, <pad> the next."""
    if task in ("modular_arithmetic_brackets", "solve_equation"):
        return modulus + 6
    if task in ("duplicate_string", "reverse_string", "odds_first"):
        return vocab_size or 2
    if task == "bucket_sort":
        return vocab_size or 5
    return {"stack_manipulation": 5, "missing_duplicate_string": 4, "binary_addition": 3,
            "binary_multiplication": 3, "compute_sqrt": 2}[task]


def output_length(task, n):
    """The number of output positions of an input of length n (the original's output_length)."""
    if task == "duplicate_string":
        return 2 * n
    if task in ("stack_manipulation", "binary_addition"):
        return n + 1
    if task == "compute_sqrt":
        return (n + 1) // 2
    if task in ("modular_arithmetic_brackets", "solve_equation", "missing_duplicate_string"):
        return 1
    return n


# --- Sampling, as the original's sample_batch does for one row.

def expression(rng, modulus, length, mult):
    """(string, value mod modulus) of a bracketed expression of `length` characters: d, -d, (d),
    (-d) for lengths 1..4; else (left op right), len(left) ~ U{1..length - 4}, op uniform."""
    if length <= 4:
        d = rng.randrange(modulus)
        text = ["{}", "-{}", "({})", "(-{})"][length - 1].format(d)
        return text, (-d if length in (2, 4) else d) % modulus
    left_length = rng.randrange(1, length - 3)
    left, a = expression(rng, modulus, left_length, mult)
    right, b = expression(rng, modulus, length - 3 - left_length, mult)
    op = rng.randrange(3 if mult else 2)
    value = (a + b, a - b, a * b)[op] % modulus
    return f"({left}{(PLUS, MINUS, TIMES)[op]}{right})", value


def encode(text, symbols, modulus):
    return [int(c) if c.isdigit() else modulus + symbols.index(c) for c in text]


def binary(value, width=0):
    """Little-endian bits of value, at least `width` of them (and at least one)."""
    return [int(c) for c in reversed(f"{value:b}".zfill(width))]


def stack_sample(rng, length):
    if length == 1:
        bit = rng.randrange(2)
        return [bit], [bit]
    k = rng.randrange(1, length)
    stack = [rng.randrange(2) for _ in range(k)]
    actions = [rng.randrange(POP, PUSH1 + 1) for _ in range(length - k)]
    return stack + actions, run_stack(stack + actions)


def binary_operands(rng, length):
    """([a bits, separator, m bits], a, m) with len(a) ~ U{1..length - 2}, a ~ U{1..2^len(a) - 1}."""
    a_length = rng.randrange(1, length - 1)
    m_length = length - 1 - a_length
    a, m = rng.randint(1, 2**a_length - 1), rng.randint(1, 2**m_length - 1)
    return binary(a, a_length) + [SEPARATOR] + binary(m, m_length), a, m


def inputs_and_outputs(task, rng, length, modulus=5, vocab_size=None, mult=True):
    """(input tokens, output ids) of one example, the outputs before the end token's masking."""
    if task == "modular_arithmetic_brackets":
        text, value = expression(rng, modulus, length, mult)
        return encode(text, BRACKET_SYMBOLS, modulus), [value]
    if task == "solve_equation":
        if length < 3:
            return [0] * length, [0]
        text, value = expression(rng, modulus, length - 2, False)
        i = rng.randrange(len(text))
        while not text[i].isdigit():
            i = (i + 1) % (length - 2)
        return encode(f"{text[:i]}x{text[i + 1:]}={value}", EQUATION_SYMBOLS, modulus), [int(text[i])]
    if task == "stack_manipulation":
        tokens, stack = stack_sample(rng, length)
        return tokens, stack + [END] + [0] * (length - len(stack))
    if task in ("binary_addition", "binary_multiplication"):
        if length <= 2:
            value = rng.randrange(0, 2**length - 1)
            result = binary(value) if task == "binary_addition" else [0] * (length - 1)
            tokens = binary(value, length)
        else:
            tokens, a, m = binary_operands(rng, length)
            result = binary(a + m if task == "binary_addition" else a * m)
        return tokens, result + [END] + [0] * (output_length(task, length) - 1 - len(result))
    if task == "compute_sqrt":
        value = rng.randint(1, 2**length - 1)
        return binary(value, length)[::-1], binary(math.isqrt(value), (length + 1) // 2)[::-1]
    if task == "missing_duplicate_string":
        if length == 1:
            return [1], [1]
        half = [rng.randrange(2) for _ in range(length // 2)]
        tokens = half + half
        i = rng.randrange(len(tokens))
        missing, tokens[i] = tokens[i], MISSING
        return tokens + [EMPTY] * (length % 2), [missing]
    tokens = [rng.randrange(input_size(task, vocab_size=vocab_size)) for _ in range(length)]
    return tokens, outputs(task, tokens)


def sample(task, rng, length, **params):
    """(x, y) lists of one example of hierarchy length `length`."""
    tokens, result = inputs_and_outputs(task, rng, length, **params)
    blank = input_size(task, **params)
    scored = result[: result.index(END) + 1] if task in ENDED else result
    y = [IGNORE_INDEX] * length + scored + [IGNORE_INDEX] * (len(result) - len(scored))
    return tokens + [blank] * len(result), y


# --- Labels from the tokens alone.

ENDED = ("stack_manipulation", "binary_addition", "binary_multiplication")  # scored up to the end token


def run_stack(tokens):
    """The final stack, top first, of bits pushed (0, 1, PUSH0, PUSH1) and popped (POP; ignored
    on an empty stack)."""
    stack = []
    for token in tokens:
        if token == POP:
            stack = stack[:-1]
        else:
            stack.append(token if token < 2 else token - PUSH0)
    return stack[::-1]


def value_of(tokens, modulus, i=0):
    """(value mod modulus, next position) of the expression at tokens[i:]: a digit, -e, (e) or
    (e op e) (op in + - *, ids modulus + 0, 1, 2; ( ) = modulus + 3, 4)."""
    token = tokens[i]
    if token < modulus:
        return token, i + 1
    if token == modulus + 1:  # unary minus
        value, i = value_of(tokens, modulus, i + 1)
        return -value % modulus, i
    left, i = value_of(tokens, modulus, i + 1)  # after (
    if tokens[i] == modulus + 4:
        return left, i + 1
    op = tokens[i] - modulus
    right, i = value_of(tokens, modulus, i + 1)
    return (left + right, left - right, left * right)[op] % modulus, i + 1


def solution(tokens, modulus):
    """The digit d that makes `expression(x = d) = value` true (+ and - only: exactly one)."""
    *equation, _, value = tokens  # ... = value
    ids = {s: modulus + k for k, s in enumerate(EQUATION_SYMBOLS)}
    as_bracket = {ids[s]: modulus + BRACKET_SYMBOLS.index(s) for s in (PLUS, MINUS, OPEN, CLOSE)}
    (root,) = [d for d in range(modulus)
               if value_of([d if t == ids[X] else as_bracket.get(t, t) for t in equation], modulus)[0] == value]
    return root


def number(bits):  # little-endian bits -> int
    return sum(b << i for i, b in enumerate(bits))


def outputs(task, tokens, modulus=5, vocab_size=None, mult=True):
    """The scored output ids of the input `tokens` (up to and with the end token)."""
    n = len(tokens)
    if task == "duplicate_string":
        return tokens + tokens
    if task == "reverse_string":
        return tokens[::-1]
    if task == "odds_first":
        return tokens[1::2] + tokens[0::2]
    if task == "bucket_sort":
        return sorted(tokens)
    if task == "modular_arithmetic_brackets":
        return [value_of(tokens, modulus)[0]]
    if task == "solve_equation":
        return [0] if n < 3 else [solution(tokens, modulus)]
    if task == "missing_duplicate_string":
        if n == 1:
            return [1]
        half, i = n // 2, tokens.index(MISSING)
        return [tokens[(i + half) % (2 * half)]]
    if task == "stack_manipulation":
        return run_stack(tokens) + [END]
    if task == "compute_sqrt":
        return binary(math.isqrt(number(tokens[::-1])), (n + 1) // 2)[::-1]
    if SEPARATOR not in tokens:  # length <= 2: the number itself, or no product
        return (binary(number(tokens)) if task == "binary_addition" else [0] * (n - 1)) + [END]
    s = tokens.index(SEPARATOR)
    a, m = number(tokens[:s]), number(tokens[s + 1:])
    return binary(a + m if task == "binary_addition" else a * m) + [END]


def labels(task, x, **params):
    """The labels of a sample x (a list: input tokens, then <blank>s), from its tokens."""
    blank = input_size(task, **params)
    n = x.index(blank)
    scored = outputs(task, x[:n], **params)
    return [IGNORE_INDEX] * n + scored + [IGNORE_INDEX] * (len(x) - n - len(scored))
