"""Big non-negative integers, one per row, as little-endian limbs of 16 bits in int64 tensors
(B, k): the value of a row is sum_j v_j 2^(16 j). The arithmetic of the Chomsky-hierarchy binary
tasks (chomsky.py) on 500-bit numbers, a whole batch at a time; tests/test_chomsky_tasks.py
checks it against Python's integers.

Products: c = a * b is the convolution c_m = sum_{i + j = m} a_i b_j of the limbs (each term
< 2^32, so up to 2^31 terms fit in int64), then `normalize` propagates the carries. Carries:
v_j -> (v_j mod 2^16) + floor(v_{j-1} / 2^16) shrinks every excess by 16 bits a pass; once every
carry is 0 or 1, the rest is one carry-lookahead step (`_ripple`): the carry into limb j is the
carry generated at the last limb below j that does not merely pass one on (0xFFFF passes).
"""

import functools

import torch

BITS = 16
MASK = (1 << BITS) - 1
LOW = (1 << torch.arange(BITS + 1)) - 1  # LOW[b]: the b low bits set


def n_limbs(bits):
    return max(-(-bits // BITS), 1)


@functools.cache
def arange(n):  # shared: ops on small tensors cost their overhead, arange included
    return torch.arange(n)


def limb_masks(bits, k):
    """(m, k): row i keeps its low bits[i] bits (bits (m,) int64)."""
    return LOW[(bits[:, None] - BITS * arange(k)).clamp(0, BITS)]


def pack(bits, k):
    """(B, n) 0/1, least significant first -> (B, k) limbs (n <= 16 k)."""
    B, n = bits.shape
    padded = torch.zeros(B, k * BITS, dtype=torch.long)
    padded[:, :n] = bits
    return (padded.view(B, k, BITS) << arange(BITS)).sum(-1)


def unpack(limbs):
    """(B, k) limbs -> (B, 16 k) bits, least significant first."""
    return ((limbs[..., None] >> arange(BITS)) & 1).flatten(1)


def from_int(value, k):
    """A Python integer as (k,) limbs (the value mod 2^(16 k))."""
    return torch.tensor([(value >> (BITS * j)) & MASK for j in range(k)])


def to_int(limbs):
    """(k,) limbs as a Python integer."""
    return sum(int(v) << (BITS * j) for j, v in enumerate(limbs.tolist()))


def compare(a, b):
    """(B,) sign of a - b (-1, 0, 1) for (B, k) limbs."""
    d = a - b
    top = ((d != 0) * (arange(d.shape[1]) + 1)).amax(-1)  # (B,): 1 + the highest differing limb, 0 if none
    return d.gather(1, (top - 1).clamp(min=0)[:, None])[:, 0].sign() * (top > 0)


def _shift_up(c):  # (B, k): limb j gets c_{j-1}; the top one is dropped
    return torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], 1)


def _ripple(low, carry):
    """low (B, k) limbs in 0..0xFFFF plus carries (B, k) in {0, 1} (limb j's goes into j + 1)."""
    s = low + _shift_up(carry)  # in 0..2^16: 2^16 generates a carry, 0xFFFF passes one on
    t = arange(s.shape[1])
    last = torch.where(s != MASK, t, -1).cummax(-1).values  # the last limb <= j that does not pass
    source = _shift_up(last + 1) - 1  # ... below j (-1: none)
    incoming = (s.gather(1, source.clamp(min=0)) >> BITS) * (source >= 0)
    return (s + incoming) & MASK


def normalize(v):
    """(B, k) non-negative limbs of any size -> the same values (mod 2^(16 k)) in limbs 0..0xFFFF."""
    while True:
        carry, low = v >> BITS, v & MASK
        if carry.max() <= 1:
            return _ripple(low, carry)
        v = low + _shift_up(carry)


def multiply(a, b):
    """(B, ka) x (B, kb) limbs -> (B, ka + kb) limbs of the product."""
    B, ka = a.shape
    kb = b.shape[1]
    terms = (a[:, :, None] * b[:, None, :]).view(B, ka * kb)
    index = (arange(ka)[:, None] + arange(kb)).view(-1)
    return normalize(torch.zeros(B, ka + kb, dtype=torch.long).index_add_(1, index, terms))


def add(a, b):
    """(B, k) + (B, k) limbs -> (B, k + 1) limbs of the sum."""
    zero = torch.zeros_like(a[:, :1])
    return normalize(torch.cat([a + b, zero], 1))


def bit_length(bits):
    """(B,) the number of bits up to the highest one (0 for zero) of (B, n) bits."""
    return (bits * (arange(bits.shape[1]) + 1)).amax(-1)
