"""The Chomsky-hierarchy tasks above the regular level (Deletang et al. 2023; docs/tasks.md,
"Chomsky hierarchy"), with the semantics of google-deepmind/neural_networks_chomsky_hierarchy's
tasks/dcf and tasks/cs, in its sequence-to-sequence layout. Run one with
`python -m train experiment=chomsky dataset=<task>`.

Layout: x = the n input tokens, then one <blank> per output position (the original feeds empty
positions there), then <pad> up to the longest sample; y = -100 on the input, the output ids on
the output positions, -100 on padding. A causal model reads x[:t+1] and writes output j at
position n + j. `L` and `L_min` are the hierarchy's `length` (what the original passes to
sample_batch, here drawn per sample in L_min..L): the input length n, which fixes the output
length; the batch is (B, L + output_length(L)), `L_input`. Batches carry {"task_lengths": n}
(B,), by which `chomsky_score` and `accuracy_by_length` key an example. Ids: the input tokens as
the original numbers them, then <blank>, then <pad>; labels are the original's output ids.

    modular_arithmetic_brackets  a bracketed expression of n characters over the digits 0..m-1 (m = `modulus`)
                                and + - x; its value mod m (one output). Ids: the digits, + - x ( ) = m + 0..4
                                (m + 5, the original's unused "x", never drawn). n <= 4: d, -d, (d), (-d);
                                else (left op right), len(left) ~ U{1..n-4}, op uniform (x only with `mult`)
    reverse_string  n symbols of `vocab_size`; the n symbols reversed
    stack_manipulation  k ~ U{1..n-1} bits (a stack, bottom first; k = 1 at n = 1), then n - k actions 2 = pop
                                (ignored on an empty stack), 3 = push 0, 4 = push 1; n + 1 outputs: the final
                                stack top first, then the end token 2 (scored up to it)
    solve_equation  an expression of n - 2 characters (+ and - only) with one digit replaced by x, then = and
                                the value; the replaced digit (one output). Ids: the digits, + - ( ) x = m +
                                0..5. n < 3: n zeros, answer 0
    duplicate_string  n symbols of `vocab_size`; the n symbols twice (2n outputs)
    missing_duplicate_string  n // 2 bits written twice, one of the 2 (n // 2) replaced by 2, then 3 if n is
                                odd; the missing bit (one output). n = 1: x = 1, answer 1
    odds_first  n symbols of `vocab_size`; x_1 x_3 x_5 .. then x_0 x_2 x_4 .. (0-indexed)
    binary_addition  a + m in little-endian bits: len(a) ~ U{1..n-2}, then 2, then n - 1 - len(a) bits, each
                                number ~ U{1..2^len - 1}; n + 1 outputs: the sum's bits (no leading zeros),
                                then the end token 2 (scored up to it). n <= 2: a number ~ U{0..2^n - 2} in n
                                bits; its bits
    binary_multiplication  a x m the same way; n outputs: the product's bits, then 2. n <= 2: n random bits; n
                                - 1 zeros, then 2
    compute_sqrt  N ~ U{1..2^n - 1} in n big-endian bits; floor(sqrt(N)) in ceil(n / 2) big-endian bits
    bucket_sort  n symbols of `vocab_size` (5); the n symbols sorted

Where the original's docstring and code differ, the code is followed (it made the paper's
numbers): odds_first puts the odd indices (0-indexed) first. The original's loss also trains the
outputs after the end token (zeros) that its accuracy masks; here those positions are -100.

Generation draws a batch at a time (no loop over examples in Python): the strings, the stack and the
missing bit in torch (symbols from 62-bit words: b-bit fields for a vocabulary of 2^b, base-V
digits otherwise, `per_word`), the expressions and numbers in numpy (many ops on small arrays, each
a fraction of torch's cost), from a numpy generator seeded by one draw of the batch's torch
generator. C loops (chomsky.c, compiled on first use as the ops' loops are) turn the draws of the
strings, the stack, the missing bit, the binary tasks and compute_sqrt into the batch's layout in
one pass a row; without a C compiler the torch path does, from the same draws (the same batch; a
batch of one length, L_min = L, written without the layout's masks). The bracketed expressions
split every sub-expression of the batch at once, one tree level a step, then are evaluated bottom
up. The torch path's stack height is the walk h_t (push +1, pop -1, held at 0): h = S - min(0,
min_{s<=t} S_s) for the free walk S; the survivor at height j is the last push that reached j (the
C loop keeps the stack). Numbers below 2^62 are one int64; longer ones are 16-bit limbs (bigint.py:
sums and products of 500-bit numbers with lookahead carries). compute_sqrt draws (s, r) rather than
N: N = s^2 + r with 0 <= r <= 2s is a bijection between N >= 1 and those pairs, so drawing s ~
U{0..2^h - 1} and r ~ U{0..2^(h+1) - 1} (h = ceil(n/2)) and keeping the first pair with s >= 1,
r <= 2s and s^2 + r < 2^n (s < S, or s = S and r <= 2^n - 1 - S^2, S = isqrt(2^n - 1)) gives N
uniform and its root s, with one squaring instead of a square root (below 2^62: N drawn, its root
from float64, corrected). Draws are exact but for floor(u c) of 53-bit uniforms in the expression
trees, 62-bit modulo draws of small ranges and the base-V digits (each value's, or d-tuple's,
probability within 2^-40 of uniform).
"""

import functools
import logging
import math
import pathlib

import numpy as np
import torch

from src.dataloaders import bigint
from src.dataloaders.bigint import arange
from src.dataloaders.tokens import TokenDataset
from src.ops import _cpu
from src.utils.errors import ConfigError
from src.utils.labels import IGNORE_INDEX

log = logging.getLogger(__name__)


def _integer(key, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        valid = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"dataset.{key}={value!r} must be an integer {valid}")


def per_word(V):
    """The ids 0..V-1 one 62-bit word gives: for V = 2^b its 62 // b b-bit fields (exact; ~4x faster
    than torch.randint for bits); else the d base-V digits of floor(w V^d / 2^62), the largest V^d <=
    2^22 (each d-tuple's probability within 2^-40 of uniform; torch.randint's own is within 2^-32,
    and costs ~2.6 ns an id); 0 for V = 1 or V > 2^22 (one torch.randint id a draw)."""
    if V == 1:
        return 0
    if not V & (V - 1):
        return WORD // (V.bit_length() - 1)
    d = 0
    while V ** (d + 1) <= 2**22:
        d += 1
    return d


def uniform_draw(V, shape, generator):
    """What `uniform` draws: (B, ceil(L / per_word(V))) 62-bit words; the (B, L) ids if per_word is 0."""
    if not (per := per_word(V)):
        return torch.randint(0, V, shape, generator=generator)
    B, L = shape
    return torch.randint(0, 2**WORD, (B, -(-L // per)), generator=generator)


def uniform_ids(V, L, draw):
    """(B, L) ids 0..V-1 of a `uniform_draw`: word w's digit (or field) i is id w per_word(V) + i."""
    if not (per := per_word(V)):
        return draw
    B, i = len(draw), arange(per)
    if V & (V - 1):  # floor(w V^per / 2^62) (< 2^22) with products below 2^53
        D = V**per
        u = ((draw >> 31) * D + ((draw & (2**31 - 1)) * D >> 31)) >> 31
        return (u[:, :, None] // V**i % V).view(B, -1)[:, :L]
    return ((draw[:, :, None] >> (V.bit_length() - 1) * i) & (V - 1)).view(B, -1)[:, :L]


@functools.cache
def c_loops():
    """chomsky.c compiled and loaded, or None (said once) where it cannot be: then the torch path."""
    try:
        return _cpu.library(pathlib.Path(__file__).with_name("chomsky.c"))
    except RuntimeError as error:
        log.info(f"chomsky: the C loops are not usable ({error}); the torch path lays the batches out")
        return None


def layout(inputs, outputs, n, o, blank, pad):
    """x, y (B, L + O) from inputs (B, L) (row b's first n_b), outputs (B, O) (its first o_b)."""
    (B, L), O = inputs.shape, outputs.shape[1]
    t, j = arange(L + O), arange(O)
    x = torch.cat([inputs, inputs.new_full((B, O), blank)], 1)
    x = x.masked_fill_(t >= n[:, None], blank).masked_fill_(t >= (n + o)[:, None], pad)
    y = torch.full((B, L + O), IGNORE_INDEX)  # output j at n + j (past o: on the padding)
    return x, y.scatter_(1, n[:, None] + j, outputs.masked_fill(j >= o[:, None], IGNORE_INDEX))


class Chomsky(TokenDataset):
    """Base: subclasses set `input_size` (the input ids, before <blank> and <pad>), `d_output`,
    `output_length(n)` (ints or tensors) and `inputs_outputs(n, generator) -> (inputs (B, L), outputs
    (B, output_length(L)))`, int64 tensors or numpy arrays: row b's input in its first n_b
    positions, its output ids in its first output_length(n_b) (-100 where the original's accuracy
    masks the output)."""

    def __init__(self, L=40, L_min=1, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None):
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)
        self.blank_id, self.n_tokens = self.input_size, self.input_size + 2
        self.L_input = L + self.output_length(L)

    def output_length(self, n):
        return n

    def inputs_outputs(self, n, generator):
        raise NotImplementedError

    LOOP = None  # the task's function in chomsky.c, if it has one (then `draws` and `loop_args`)

    def draws(self, n, generator):  # the random tensors both paths read
        raise NotImplementedError

    def loop_args(self, n, *draws):  # the LOOP's arguments before (n, B, width, blank, pad, x, y)
        raise NotImplementedError

    def generate(self, batch_size, generator):
        n = self.lengths(batch_size, generator)
        if self.LOOP and (loops := c_loops()) is not None:
            # one block (as two tensors of 1 MB at L 500 they were page-faulted on every call, 10x the
            # loop's time), split by indexing (unbind: 5 us)
            xy = torch.empty(2, batch_size, self.L_input, dtype=torch.long)
            x, y = xy[0], xy[1]
            args = [np.ascontiguousarray(v, np.int64) if isinstance(v, np.ndarray) else v  # held until the call returns
                    for v in [*self.loop_args(n, *self.draws(n, generator)), n, batch_size, self.L_input,
                              self.blank_id, self.pad_id, x, y]]
            getattr(loops, self.LOOP)(*_cpu.arguments(*args))
            return x, y
        inputs, outputs = self.inputs_outputs(n, generator)  # tensors or numpy arrays
        if self.L_min == self.L:  # every n = L: no blanks in the inputs, no padding (two writes an array)
            xy = np.empty((2, batch_size, self.L_input), np.int64)  # numpy: ~1 us a write, torch's ~5-10
            xy[0, :, : self.L], xy[0, :, self.L :] = inputs, self.blank_id
            xy[1, :, : self.L], xy[1, :, self.L :] = IGNORE_INDEX, outputs
            return tuple(torch.from_numpy(xy))
        inputs, outputs = torch.as_tensor(inputs), torch.as_tensor(outputs)
        return layout(inputs, outputs, n, self.output_length(n), self.blank_id, self.pad_id)

    def batch(self, split, epoch, index, rows):
        x, y = super().batch(split, epoch, index, rows)
        return x, y, {"task_lengths": (x < self.blank_id).sum(-1)}


class Strings(Chomsky):
    """A string of `vocab_size` symbols in, a rearrangement of it out: `outputs(n, x)` (B, L)."""

    LOOP, TASK = "strings", None  # TASK: the task's number in chomsky.c's strings

    def __init__(self, L=40, L_min=1, vocab_size=2, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        _integer("vocab_size", vocab_size, 1)
        self.input_size = self.d_output = vocab_size
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def draws(self, n, generator):
        return (uniform_draw(self.input_size, (len(n), self.L), generator),)

    def loop_args(self, n, draw):
        return [self.TASK, draw, draw.shape[1], per_word(self.input_size), self.input_size]

    def inputs_outputs(self, n, generator):
        x = uniform_ids(self.input_size, self.L, *self.draws(n, generator))
        return x, self.outputs(n, x)


class ReverseString(Strings):
    TASK = 0

    def outputs(self, n, x):
        return x.gather(1, (n[:, None] - 1 - arange(self.L)).clamp(min=0))


class DuplicateString(Strings):
    TASK = 1

    def output_length(self, n):
        return 2 * n

    def outputs(self, n, x):  # output j < n: x_j (the copy); n + k: x_k (scattered; past 2n unused)
        return x.repeat(1, 2).scatter_(1, n[:, None] + arange(self.L), x)


class OddsFirst(Strings):
    TASK = 2

    def outputs(self, n, x):
        j, odd = arange(self.L), n[:, None] // 2  # odd: x_1, x_3, ..
        return x.gather(1, torch.where(j < odd, 2 * j + 1, 2 * (j - odd)).clamp(max=self.L - 1))


class BucketSort(Strings):
    TASK = 3

    def __init__(self, L=40, L_min=1, vocab_size=5, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        super().__init__(L, L_min, vocab_size, samples_per_epoch, val_split, seed, num_train_examples)

    def outputs(self, n, x):
        V = self.input_size
        counted = x.masked_fill(arange(self.L) >= n[:, None], V)  # padding counts as symbol V
        counts = torch.zeros(len(n), V + 1, dtype=torch.long).scatter_add_(1, counted, torch.ones_like(x))
        upto = counts[:, :V].cumsum(-1)  # (B, V): symbols <= c
        return (upto[:, :, None] <= arange(self.L)).sum(1)  # sorted[j] = #{c: upto[c] <= j}


def randbelow(high, generator):
    """(m,) uniform on 0..high-1 (high (m,) >= 1), from 62 random bits (bias < 2^-40 for high < 2^20)."""
    return torch.randint(0, 2**62, high.shape, generator=generator) % high


class MissingDuplicateString(Chomsky):
    input_size, d_output = 4, 2  # 0, 1, 2 = the missing bit, 3 = the odd length's filler; bits
    MISSING, EMPTY = 2, 3
    LOOP = "missing_duplicate"

    def output_length(self, n):
        return 1 + 0 * n  # (an int or a tensor, as n)

    def draws(self, n, generator):  # the bits' words, the missing position
        words = uniform_draw(2, (len(n), max(self.L // 2, 1)), generator)
        return words, randbelow((2 * (n // 2)).clamp(min=1), generator)

    def loop_args(self, n, words, missing):
        return [words, words.shape[1], missing]

    def inputs_outputs(self, n, generator):
        words, i = self.draws(n, generator)
        bits, t, half, i = uniform_ids(2, max(self.L // 2, 1), words), arange(self.L), n[:, None] // 2, i[:, None]
        x = bits.gather(1, torch.where(t < half, t, t - half).clamp(max=bits.shape[1] - 1))  # t mod half to 2 half
        x = x.masked_fill(t == 2 * half, self.EMPTY)  # odd n (even n: the position is past the input)
        answer = x.gather(1, i)
        x = x.scatter(1, i, self.MISSING)
        one = n[:, None] == 1
        return x.masked_fill(one, 1), answer.masked_fill(one, 1)


class StackManipulation(Chomsky):
    input_size, d_output = 5, 3  # bits 0 1, 2 = pop, 3 = push 0, 4 = push 1; outputs bits 0 1, 2 = end
    END = 2
    TOKENS = torch.tensor([2, 3, 4, 2, 3, 4, 0, 1, 0, 1, 0, 1])  # [6 stack + u]: action 2 + u mod 3, bit u mod 2
    LOOP = "stack_manipulation"

    def output_length(self, n):
        return n + 1

    def draws(self, n, generator):  # the stack's size: U{1..n-1} (1 at n = 1); (B, L) ids 0..5
        k = 1 + randbelow((n - 1).clamp(min=1), generator)
        return k, torch.randint(0, 6, (len(n), self.L), generator=generator)

    def loop_args(self, n, k, raw):
        return [raw, self.L, k]

    def inputs_outputs(self, n, generator):
        k, x = self.draws(n, generator)  # x: the bit x mod 2, or action 2 + x mod 3
        B, L, t = len(n), self.L, arange(self.L)
        stack, valid = t < k[:, None], t < n[:, None]
        x = self.TOKENS[x + 6 * stack]  # (a table: no division)
        push = stack | (x >= 3)
        walk = ((2 * push.long() - 1) * valid).cumsum(-1)  # +1 push, -1 pop, 0 after the input
        height = walk - walk.cummin(-1).values.clamp(max=0)  # (B, L): after step t, pops held at 0
        # the survivor at height j: the last push with height j after it (index 0 collects the rest)
        last = torch.full((B, L + 1), -1).scatter_reduce_(1, height * (push & valid), t.expand(B, L), "amax")
        bit = torch.where(stack, x, x - 3)  # a push's bit
        top = height.gather(1, n[:, None] - 1)  # (B, 1): the final height
        j = arange(L + 1)
        out = bit.gather(1, last.gather(1, (top - j).clamp(min=1)).clamp(min=0))  # output j: height top - j
        return x, out.masked_fill_(j == top, self.END).masked_fill_(j > top, IGNORE_INDEX)


WORD = 62  # numbers below 2^62 are one int64, with native arithmetic; longer ones are limbs (bigint.py)


def numpy_rng(generator):
    """A numpy generator seeded by one draw of the batch's torch generator: the number and tree
    tasks are many ops on small arrays, each a fraction of torch's cost in numpy."""
    return np.random.default_rng(torch.randint(0, 2**63 - 1, (), generator=generator).item())


def random_bits(bits, rng):
    """Uniform on 0..2^bits - 1, elementwise (bits <= 62)."""
    return rng.integers(0, 2**WORD, bits.shape) >> (WORD - bits)


def random_limbs(bits, k, rng):
    """(m, k) limbs, row i uniform on 0..2^bits[i] - 1."""
    return torch.from_numpy(rng.integers(0, 1 << bigint.BITS, (len(bits), k))) & bigint.limb_masks(
        torch.from_numpy(bits), k)


def to_limbs(value, k):  # (B,) int64 -> (B, k) 16-bit limbs, numpy (bigint.py's layout)
    return (value[:, None] >> bigint.BITS * np.arange(k)) & bigint.MASK


def to_bits(value, width):  # (B,) int64 -> (B, width) bits, least significant first
    return (value[:, None] >> np.arange(width)) & 1


def bit_length(bits):  # (B,) the number of bits up to the highest one, of (B, w) bits
    return (bits * np.arange(1, bits.shape[1] + 1)).max(1)


def big_endian_shifts(n, width):  # (B, width): the bit n - 1 - t at t (0 past n)
    return np.maximum(n[:, None] - 1 - np.arange(width), 0)


def big_endian(bits, n, width):
    """(B, width): the n (B,) low bits of (B, >= max n) little-endian `bits`, most significant first."""
    return np.take_along_axis(bits, big_endian_shifts(n, width), 1)


def first_accepted(B, draw, tries):
    """Rejection sampling, row by row: draw(rows) for the (m,) rows left, `tries` times each (rows
    tiled: try-major) -> (accepted (tries m,), *values (tries m, ...)), numpy; the values of each
    row's first accepted draw, drawing again for the rows that had none."""
    todo, out = np.arange(B), None
    while len(todo):
        m = len(todo)
        accepted, *values = draw(np.tile(todo, tries))
        accepted = accepted.reshape(tries, m)
        done = accepted.any(0)
        pick = (accepted.argmax(0) * m + np.arange(m))[done]
        if out is None:
            out = [np.zeros((B, *v.shape[1:]), v.dtype) for v in values]
        for o, v in zip(out, values):
            o[todo[done]] = v[pick]
        todo = todo[~done]
    return out


@functools.cache
def _sqrt_bounds(n_max, k):
    """For n = 0..n_max: the (n_max + 1, k) limbs of S = isqrt(2^n - 1) and of floor(R / 2), and the
    bits R mod 2 (n_max + 1,), with R = 2^n - 1 - S^2."""
    S = [math.isqrt(2**n - 1) for n in range(n_max + 1)]
    R = [2**n - 1 - s * s for n, s in enumerate(S)]
    return (torch.stack([bigint.from_int(s, k) for s in S]), torch.stack([bigint.from_int(r >> 1, k) for r in R]),
            torch.tensor([r & 1 for r in R]))


class ComputeSqrt(Chomsky):
    input_size = d_output = 2
    TRIES = 4  # (s, r) pairs a row and round; each is kept with probability (2^n - 1) / 2^(2h + 1), ~1/2 or ~1/4

    def output_length(self, n):
        return (n + 1) // 2

    LOOP = "compute_sqrt"

    def draws(self, n, generator):
        """(s, q, c), numpy: N = s^2 + 2q + c ~ U{1..2^n - 1} (0 <= 2q + c <= 2s) and s = isqrt(N); s, q
        (B,) int64 (L <= 62) or (B, k) limbs, c (B,) bits."""
        rng, n = numpy_rng(generator), n.numpy()
        if self.L <= WORD:  # N ~ U{1..2^n - 1}; its root in float64 is within 1, then corrected
            N = first_accepted(len(n), lambda rows: ((v := random_bits(n[rows], rng)) != 0, v), 4)[0]
            s = np.sqrt(N).astype(np.int64)
            s -= s * s > N
            s += (s + 1) * (s + 1) <= N
            r = N - s * s
            return s, r >> 1, r & 1
        h, k = (n + 1) // 2, bigint.n_limbs(self.output_length(self.L))
        S, half_R, odd_R = _sqrt_bounds(self.L, k)

        def draw(rows):  # (s, r = 2q + c), s, q ~ U{0..2^h - 1}, c a bit: r ~ U{0..2^(h + 1) - 1}
            m = len(rows)
            s, q = random_limbs(np.concatenate([h[rows], h[rows]]), k, rng).view(2, m, k)
            c = rng.integers(0, 2, m)
            if (loops := c_loops()) is not None:  # the same test, one pass a row (chomsky.c)
                accepted, n_rows = np.empty(m, np.int64), n[rows]
                loops.sqrt_accepted(*_cpu.arguments(s, q, c, n_rows, m, k, S, half_R, odd_R, accepted))
                return accepted.astype(bool), s.numpy(), q.numpy(), c
            c = torch.from_numpy(c)
            sign = bigint.compare(torch.cat([q, s, q]), torch.cat([s, S[n[rows]], half_R[n[rows]]])).view(3, m)
            within = (sign[0] < 0) | ((sign[0] == 0) & (c == 0))  # r <= 2s
            fits = (sign[1] < 0) | ((sign[1] == 0) & ((sign[2] < 0) | ((sign[2] == 0) & (c <= odd_R[n[rows]]))))
            return ((s != 0).any(-1) & within & fits).numpy(), s.numpy(), q.numpy(), c.numpy()  # fits: s^2 + r < 2^n

        return first_accepted(len(n), draw, self.TRIES)

    def loop_args(self, n, s, q, c):
        k = bigint.n_limbs(self.output_length(self.L))
        if s.ndim == 1:  # one int64: its k limbs
            s, q = to_limbs(s, k), to_limbs(q, k)
        return [s, q, c, k]

    def inputs_outputs(self, n, generator):
        s, q, c = self.draws(n, generator)
        n = n.numpy()
        h, width = (n + 1) // 2, self.output_length(self.L)
        if self.L <= WORD:
            N = s * s + 2 * q + c
            return N[:, None] >> big_endian_shifts(n, self.L) & 1, s[:, None] >> big_endian_shifts(h, width) & 1
        s, q, c = map(torch.from_numpy, (s, q, c))
        N = bigint.multiply(s, s) + torch.cat([2 * q, torch.zeros_like(q)], 1)
        N[:, 0] += c
        N_bits, s_bits = bigint.unpack(bigint.normalize(N)).numpy(), bigint.unpack(s).numpy()
        return big_endian(N_bits, n, self.L), big_endian(s_bits, h, width)


class BinaryOperation(Chomsky):
    """a op m in little-endian bits, separated by 2; the result's bits, then the end token 2."""

    input_size, d_output = 3, 3
    SEPARATOR = END = 2

    def output_length(self, n):
        return n + 1

    LOOP = "binary"

    def draws(self, n, generator):
        """(len(a) (B,), a, m), numpy: below 2^62 (L <= 62) (B,) int64, else (B, k) 16-bit limbs."""
        rng, n = numpy_rng(generator), n.numpy()
        B, L = len(n), self.L
        small = n <= 2  # one number ~ U{0..2^n - 2} in n bits (a; m = 0)
        a_length = np.where(small, n, 1 + rng.integers(0, np.maximum(n - 2, 1)))  # U{1..n-2}
        lengths = np.stack([a_length, np.maximum(n - 1 - a_length, 0)])  # (2, B)
        if L <= WORD:  # a ~ U{1..2^len(a) - 1}, m ~ U{1..2^len(m) - 1} (small: a ~ U{0..2^n - 2}, m = 0)
            high = 2 ** np.maximum(lengths, 1)  # (2, B), exclusive
            high[0, small] -= 1
            a, m = rng.integers((~small).astype(np.int64), high)
            return a_length, a, m * ~small
        k = bigint.n_limbs(L)

        def draw(rows):
            a, m = random_limbs(lengths[:, rows].ravel(), k, rng).view(2, len(rows), k)
            return (a.any(-1) & m.any(-1)).numpy() | small[rows], a.numpy(), m.numpy()

        a, m = first_accepted(B, draw, 4)
        a[small], m[small] = 0, 0
        a[:, 0] += rng.integers(0, 2 ** np.minimum(n, 2) - 1) * small
        return a_length, a, m

    def loop_args(self, n, a_length, a, m):
        k = bigint.n_limbs(self.L)
        if a.ndim == 1:  # one int64: its k limbs
            a, m = to_limbs(a, k), to_limbs(m, k)
        return [int(isinstance(self, BinaryMultiplication)), a, m, k, a_length]

    def inputs_outputs(self, n, generator):
        a_length, a, m = self.draws(n, generator)
        n = n.numpy()
        B, L, width = len(n), self.L, self.output_length(self.L)
        t = np.arange(L)
        shift = np.maximum(t - a_length[:, None] - 1, 0)  # (B, L): the bit of m at t > len(a)
        if L <= WORD:
            in_a = t < a_length[:, None]
            x = np.where(in_a, a[:, None], m[:, None]) >> np.where(in_a, t, shift) & 1
            result = to_bits(self.combine(a, m), width)
        else:
            a, m = torch.from_numpy(a), torch.from_numpy(m)
            a_bits, m_bits = bigint.unpack(torch.cat([a, m])).numpy()[:, :L].reshape(2, B, L)
            x = np.where(t < a_length[:, None], a_bits, np.take_along_axis(m_bits, shift, 1))
            result = bigint.unpack(self.combine(a, m)).numpy()[:, :width]
        x[t == a_length[:, None]] = self.SEPARATOR
        size = self.size(bit_length(result), n)  # the result's bits
        j = np.arange(width)
        result[j == size[:, None]] = self.END
        result[j > size[:, None]] = IGNORE_INDEX
        return x, result


class BinaryAddition(BinaryOperation):
    def combine(self, a, m):  # (B,) int64 or (B, k) limbs
        return a + m if isinstance(a, np.ndarray) else bigint.add(a, m)

    def size(self, bits, n):  # the sum's bits, at least one (a 0 at n <= 2)
        return np.maximum(bits, 1)


class BinaryMultiplication(BinaryOperation):
    def output_length(self, n):
        return n

    def combine(self, a, m):
        return a * m if isinstance(a, np.ndarray) else bigint.multiply(a, m)

    def size(self, bits, n):  # n <= 2: n - 1 zeros
        return np.where(n <= 2, n - 1, bits)


@functools.cache
def _operations(modulus):  # [op, a, b] -> (a + b, a - b, a * b)[op] mod modulus
    a = np.arange(modulus)
    return np.stack([np.add.outer(a, a), np.subtract.outer(a, a), np.multiply.outer(a, a)]) % modulus


def bracket_expressions(lengths, modulus, mult, rng, width, symbols):
    """(tokens (B, width) int64, values (B,), digits): a bracketed expression of each length (0 past
    it), its value mod `modulus` and the flat positions of its digits; `symbols`: the ids of + - x ( )
    (x, only drawn with `mult`, may be None).

    The nodes of one tree level, over the batch, are split at once: a size <= 4 is a leaf d, -d,
    (d), (-d); a larger one is (left op right), and the children of a level's k splits are the next
    level's nodes i (left) and k + i (right), appended to the node arrays. Operators and digits
    are drawn once the tree is known, and the values computed bottom up. A draw U{0..c-1} is
    floor(u c) of a 53-bit uniform u (each value's probability within 2^-43 of 1/c for c < 1000)."""
    B, m = len(lengths), modulus
    plus, minus_id, times, open_id, close_id = symbols
    most = int(((lengths - 1) // 4).sum())  # splits: at most (n - 1) / 4 in a row
    u = rng.random(3 * most + B)  # per split its left size and its op, per leaf its digit
    at, size = np.empty(B + 2 * most, np.int64), np.empty(B + 2 * most, np.int64)  # first position (flat), size
    at[:B], size[:B] = np.arange(B) * width, lengths
    node, left = np.empty(most, np.int64), np.empty(most, np.int64)  # each split's node and left size - 1
    lo, hi, s, levels = 0, B, 0, []  # the level's nodes: lo..hi-1; its splits: s..s+k-1
    while lo < hi:
        inner = np.flatnonzero(size[lo:hi] > 4) + lo
        k = len(inner)
        if not k:
            break
        a, z = at[inner], size[inner]
        l = (u[s : s + k] * (z - 4)).astype(np.int64)  # noqa: E741  U{0..z - 5}
        node[s : s + k], left[s : s + k] = inner, l
        at[hi : hi + k], at[hi + k : hi + 2 * k] = a + 1, a + 3 + l
        size[hi : hi + k], size[hi + k : hi + 2 * k] = l + 1, z - 4 - l
        levels.append((s, k, hi))
        lo, hi, s = hi, hi + 2 * k, s + k
    node, left, at, size = node[:s], left[:s], at[:hi], size[:hi]
    leaf = np.ones(hi, bool)
    leaf[node] = False
    a, z, la, lz = at[node], size[node], at[leaf], size[leaf]
    op = (u[most : most + s] * (3 if mult else 2)).astype(np.int64)
    d = (u[2 * most : 2 * most + len(lz)] * m).astype(np.int64)
    minus, bracket = (lz == 2) | (lz == 4), lz >= 3  # leaves -d, (-d); (d), (-d)
    digits = la + bracket + minus
    tokens = np.zeros(B * width, dtype=np.int64)
    tokens[np.concatenate([a, la[bracket]])] = open_id
    tokens[np.concatenate([a + z - 1, (la + lz - 1)[bracket]])] = close_id
    tokens[a + 2 + left] = np.array([plus, minus_id, times][: 3 if mult else 2])[op]
    tokens[digits] = d
    tokens[(la + bracket)[minus]] = minus_id
    values = np.empty(hi, np.int64)
    values[leaf] = np.where(minus, -d, d) % m
    table = _operations(m)
    for s, k, child in reversed(levels):
        values[node[s : s + k]] = table[op[s : s + k], values[child : child + k], values[child + k : child + 2 * k]]
    return tokens.reshape(B, width), values[:B], digits


class Expressions(Chomsky):
    """Digits 0..modulus-1 and the symbols after them; answers mod `modulus`."""

    def __init__(self, L=40, L_min=1, modulus=5, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        _integer("modulus", modulus, 1, 10)  # the original writes each digit as one character
        self.modulus, self.input_size, self.d_output = modulus, modulus + 6, modulus
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def output_length(self, n):
        return 1 + 0 * n  # (an int or a tensor, as n)


class ModularArithmeticBrackets(Expressions):
    def __init__(self, L=40, L_min=1, modulus=5, mult=True, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        if not isinstance(mult, bool):
            raise ConfigError(f"dataset.mult={mult!r} must be true or false")
        self.mult = mult
        super().__init__(L, L_min, modulus, samples_per_epoch, val_split, seed, num_train_examples)

    def inputs_outputs(self, n, generator):
        m = self.modulus
        tokens, values, _ = bracket_expressions(n.numpy(), m, self.mult, numpy_rng(generator), self.L,
                                                (m, m + 1, m + 2, m + 3, m + 4))
        return tokens, values[:, None]


class SolveEquation(Expressions):
    def inputs_outputs(self, n, generator):
        m, B, L, rng = self.modulus, len(n), self.L, numpy_rng(generator)
        n = n.numpy()
        e = (n - 2).clip(min=1)  # the expression's length (rows n < 3: unused)
        x, values, digits = bracket_expressions(e, m, False, rng, L, (m, m + 1, None, m + 2, m + 3))
        x, digits, begin = x.reshape(-1), np.sort(digits), np.arange(B) * L
        after = digits[np.searchsorted(digits, begin + rng.integers(0, e)).clip(max=len(digits) - 1)]
        at = np.where(after < begin + e, after, digits[np.searchsorted(digits, begin)])  # from U{0..e-1} on to the
        answer, x[at] = x[at], m + 4  # next digit, cyclically: x
        equation = np.flatnonzero(n >= 3)
        x[begin[equation] + e[equation]], x[begin[equation] + e[equation] + 1] = m + 5, values[equation]  # = value
        x, short = x.reshape(B, L), n < 3  # n zeros, answer 0
        x[short], answer[short] = 0, 0
        return x, answer[:, None]
