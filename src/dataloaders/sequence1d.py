"""The atomic tasks of the DLR paper (arxiv.org/abs/2212.00768), generated a batch at a time.

Regression tasks on real sequences; definitions in docs/tasks.md. Notation:
inf-normalised x <- x / max|x| over the sequence; pos(x) appends cos(2 pi t/T), sin(2 pi t/T)
with T the full input length (padding included).

    task              input (len, ch)           target (len, ch)  definition
    shift             pos(x): (L, 3)             (L, H)   y[t, j] = x[t - s_j] (0 if t < s_j),
                                                          s = long(linspace(0, L - L/H, H)), H = num_shifts
    context_shift     (L, 3)                     (L, 1)   x' = [cos 2pi s/L, sin 2pi s/L, x_1..x_{L-2}],
                                                          s ~ U{0..L-3}; y[t] = x'[t - s] (0 if t < s)
    cumsum            pos(x): (L, 3)             (L, 1)   y[t] = sum_{i<=t} x_i / sqrt(t + 1)
    cummax            pos(x): (L, 3)             (L, 1)   y[t] = max_{i<=t} x_i
    reverse           pos([x, 0_L]): (2L, 3)     (L, 1)   y[t] = x[L - 1 - t]
    sort              pos([x, 0_L]): (2L, 3)     (L, 1)   x ordered by |x_i - x_0| (stable)
    masked_select     (2M + L, 4)                (M, 1)   the M marked values of v, in order
    solve             (L, 3)                     (N, 1)   X from row-major [A | AX], A orthogonal
    mips              (L, 3D + 2)                (L, D)   y_i = v[argmax_j q_i . k_j] (j <= i if causal)

x ~ randn, inf-normalised. masked_select: v = inf-normalised randn(M + L) right-padded with M
zeros; M distinct positions among the first M + L, channels [v, marker] + pos; `consecutive`
picks start..start + M - 1 with start ~ U{0..L-1}. `variable=false` (as in the DLR repo) or a
task name containing "fixed" fixes the positions (masked_select) or the matrix A (solve) once,
from `fixed_seed`, for every sample, process and rank. solve: N = floor(sqrt(1 + L) - 1),
A orthogonal with the law of the polar factor U Vh of randn(N, N) (Haar; `haar_orthogonal`, ~12x
cheaper than the SVD; the fixed matrix is the polar factor itself), X = randn(N) / |X|, zero-padded
to L.
Targets are read at the last `l_output` positions of the model's output.
"""

import functools
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from src.dataloaders.base import SyntheticDataset
from src.utils.errors import ConfigError, check_choice

TASKS = ["shift", "context_shift", "cumsum", "cummax", "reverse", "sort", "masked_select",
         "masked_select_fixed", "solve", "solve_fixed", "mips"]


def family(task):
    """The generator family of a task name ('masked_select' / 'solve' match by substring)."""
    for name in ("masked_select", "solve"):
        if name in task:
            return name
    return check_choice("dataset.task", task, TASKS)


def solve_size(L):
    """Largest N with N^2 + 2N <= L."""
    return math.isqrt(L + 1) - 1


def shapes(task, L, num_shifts=8, M=32, D=4, **unused):
    """(L_in, d_input, l_output, d_output) of a task; ConfigError when L is too small."""
    kind = family(task)
    minimum = {"shift": max(num_shifts, 2), "context_shift": 4, "solve": 3, "mips": 2, "masked_select": 2}.get(kind, 2)
    if L < minimum or (kind == "shift" and num_shifts < 2):
        raise ConfigError(
            f"dataset.L={L} is too small for dataset.task={task}: needs L >= {minimum}"
            + (f" and num_shifts >= 2 (dataset.num_shifts={num_shifts})" if kind == "shift" else "")
        )
    if kind == "masked_select" and M < 1:
        raise ConfigError(f"dataset.M={M} must be at least 1 for dataset.task={task}")
    if kind == "mips" and D < 1:
        raise ConfigError(f"dataset.D={D} must be at least 1 for dataset.task={task}")
    return {
        "shift": (L, 3, L, num_shifts),
        "context_shift": (L, 3, L, 1),
        "cumsum": (L, 3, L, 1),
        "cummax": (L, 3, L, 1),
        "reverse": (2 * L, 3, L, 1),
        "sort": (2 * L, 3, L, 1),
        "masked_select": (2 * M + L, 4, M, 1),
        "solve": (L, 3, solve_size(L), 1),
        "mips": (L, 3 * D + 2, L, D),
    }[kind]


def pos(x):
    """(B, T, C) -> (B, T, C + 2): append cos(2 pi t/T), sin(2 pi t/T)."""
    out = frame(*x.shape)
    out[..., : x.shape[-1]] = x
    return out


@functools.lru_cache(maxsize=16)
def _frame(T, C):
    angle = (2 * math.pi / T) * torch.arange(T, dtype=torch.float32)
    out = torch.zeros(T, C + 2)
    out[:, C], out[:, C + 1] = angle.cos(), angle.sin()
    return out


def frame(B, T, C):
    """A new (B, T, C + 2) input: zeros in the C data channels, then the pos() channels, copied from
    a cached (T, C + 2) (a cos and a sin of T values cost ~3x the copy, writing them strided ~4x)."""
    return torch.empty(B, T, C + 2).copy_(_frame(T, C))


def inf_normalised(x):
    """x / max|x| along the last dimension."""
    return x / x.abs().amax(dim=-1, keepdim=True)


def noise(B, n, g):
    """(B, n) inf-normalised randn."""
    x = torch.randn(B, n, generator=g)
    return x.div_(x.abs().amax(dim=-1, keepdim=True))


def _shift(B, g, L, num_shifts, **_):
    x = noise(B, L, g)  # (B, L)
    s = torch.linspace(0, L - L / num_shifts, num_shifts).long().tolist()  # H delays
    y = x.new_zeros(B, L, num_shifts)
    for j, sj in enumerate(s):  # over the H delays, not over samples
        y[:, sj:, j] = x[:, : L - sj]
    return pos(x[..., None]), y  # (B, L, 3), (B, L, H)


def _context_shift(B, g, L, **_):
    x = noise(B, L - 2, g)  # (B, L-2)
    s = torch.randint(0, L - 2, (B, 1), generator=g)  # (B, 1) in {0..L-3}
    angle = 2 * math.pi * s / L
    x = torch.cat((angle.cos(), angle.sin(), x), dim=-1)  # (B, L)
    y = torch.zeros(B, L)
    for b, sb in enumerate(s[:, 0].tolist()):  # y[t] = x[t - s]: one copy per sample, no index tensor
        y[b, sb:] = x[b, : L - sb]
    return pos(x[..., None]), y[..., None]


def _running(B, g, L, task, **_):
    x = noise(B, L, g)  # (B, L)
    if task == "cumsum":
        y = x.cumsum(-1).div_(_sqrt_counts(L))
    else:
        y = x.cummax(-1).values
    return pos(x[..., None]), y[..., None]


@functools.lru_cache(maxsize=4)
def _sqrt_counts(L):
    return torch.arange(1, L + 1).sqrt()


def distance_order(x):
    """argsort(|x - x_0|, stable) along the last dimension of x float32 (B, L), L < 2^32: one sort of
    int64 keys (the distance's float bits, non-negative so ordered as integers, above the index,
    which breaks ties as a stable sort does), by numpy, which sorts int64 with SIMD (AVX-512) ~10x
    faster than torch's float sort here. int32 indices (B, L)."""
    d = (x - x[:, :1]).abs_().numpy()
    low = 0 if sys.byteorder == "little" else 1
    key = np.empty(d.shape + (2,), np.uint32)  # the two halves of one uint64: (distance, index)
    key[..., low], key[..., 1 - low] = np.arange(d.shape[-1], dtype=np.uint32), d.view(np.uint32)
    return np.sort(key.view(np.uint64)[..., 0], axis=-1).view(np.uint32)[..., low::2]


def _reorder(B, g, L, task, **_):
    seq = noise(B, L, g)  # (B, L)
    x = frame(B, 2 * L, 1)  # (B, 2L, 3): x, then L zeros
    x[:, :L, 0] = seq
    if task == "reverse":
        y = seq.flip(-1)
    else:  # sort by distance to the first token, stable: y[0] = x_0
        y = seq.gather(-1, torch.from_numpy(distance_order(seq).astype(np.int64)))
    return x, y[..., None]


def _masked_positions(B, g, L, M, consecutive, draws=True):
    """(B, M) sorted distinct positions among the first M + L, uniform over the M-subsets: where
    M^2 <= M + L (then at most ~40% of rows are redrawn) and `draws`, M uniform draws per row, rows
    with a repeat drawn again (the cost of M draws, not M + L); otherwise the M largest of M + L
    uniforms."""
    if consecutive:
        return torch.randint(0, L, (B, 1), generator=g) + torch.arange(M)
    if M * M > M + L or not draws:
        return torch.rand(B, M + L, generator=g).topk(M, dim=-1).indices.sort(dim=-1).values
    idx = torch.randint(0, M + L, (B, M), generator=g).sort(dim=-1).values
    while True:
        repeat = (idx[:, 1:] == idx[:, :-1]).any(-1).nonzero()[:, 0]
        if len(repeat) == 0:
            return idx
        idx[repeat] = torch.randint(0, M + L, (len(repeat), M), generator=g).sort(dim=-1).values


def _masked_select(B, g, L, M, consecutive, fixed_positions, **_):
    x = frame(B, 2 * M + L, 2)  # (B, 2M+L, 4): [v, marker] + pos
    v = x[..., 0]  # (B, 2M+L), right-padded with M zeros
    v[:, : M + L] = noise(B, M + L, g)
    idx = fixed_positions.expand(B, M) if fixed_positions is not None else _masked_positions(B, g, L, M, consecutive)
    x[..., 1].scatter_(-1, idx, 1.0)
    return x, v.gather(-1, idx)[..., None]  # (B, M, 1)


def polar(A):
    """Orthogonal polar factor U Vh of A = U S Vh, batched over leading dims."""
    U, _, Vh = torch.linalg.svd(A)
    return U @ Vh


def haar_orthogonal(Z):
    """A Haar-distributed orthogonal matrix for each Gaussian Z[b] of Z (B, N, N): the law of
    the polar factor polar(Z) (for any orthogonal Q, QZ ~ Z and polar(QZ) = Q polar(Z), so that law
    is left-invariant: Haar) at ~1/12 of its cost. Householder QR of a Gaussian matrix, Q
    with R's diagonal made positive, is Haar (Mezzadri 2007); its k-th reflector acts on a Gaussian
    vector of length N - k + 1 independent of the earlier ones, so column k of tril(Z) serves
    (Stewart 1980). The product of the N reflectors H_k = I - 2 v_k v_k^T / |v_k|^2 is formed at
    once, as Q = I - V T^-1 V^T with T = triu(V^T V, 1) + diag(V^T V) / 2 (the UT transform,
    Joffrain et al. 2006): two batched matmuls and a triangular solve."""
    B, N, _ = Z.shape
    V = Z.tril()
    d = V.diagonal(dim1=-2, dim2=-1)  # (B, N) view: z_k's first entry
    sign = torch.where(d >= 0, 1.0, -1.0).to(Z.dtype)
    d.addcmul_(sign, V.square().sum(-2).sqrt_())  # v_k = z_k + sign(z_k1) |z_k| e_k
    T = (V.mT @ V).triu_()
    T.diagonal(dim1=-2, dim2=-1).mul_(0.5)
    W = torch.linalg.solve_triangular(T, V.mT, upper=True)  # T^-1 V^T
    Q = torch.baddbmm(torch.eye(N, dtype=Z.dtype).expand(B, N, N), V, W, alpha=-1)  # I - V T^-1 V^T
    return Q.mul_(sign.neg_()[..., None, :])  # R's diagonal -sign(z_k1) |z_k| made positive


def _solve(B, g, L, fixed_matrix, **_):
    N = solve_size(L)
    A = fixed_matrix.expand(B, N, N) if fixed_matrix is not None else haar_orthogonal(torch.randn(B, N, N, generator=g))
    X = F.normalize(torch.randn(B, N, 1, generator=g), dim=1)  # (B, N, 1), unit norm
    x = frame(B, L, 1)
    AB = x[:, : N * N + N, 0].view(B, N, N + 1)  # row-major [A | B], zero-padded to L
    AB[..., :N], AB[..., N:] = A, A @ X
    return x, X


def first_argmax(sim, chunk=32):
    """sim.argmax(-1) (first maximum) for sim (..., n) with n a multiple of `chunk`: torch's
    argmax is ~20x slower than amax on CPU, so find the first chunk holding the row maximum
    (amax per chunk, argmax over n / chunk), then the first maximum inside that chunk."""
    *lead, n = sim.shape
    chunks = sim.view(*lead, n // chunk, chunk)
    first = chunks.amax(-1).argmax(-1)  # (...)
    inside = chunks.gather(-2, first[..., None, None].expand(*lead, 1, chunk)).squeeze(-2).argmax(-1)
    return first * chunk + inside


def _mips(B, g, L, D, causal, **_):
    q, k, v = F.normalize(torch.randn(B, 3 * L, D, generator=g), dim=-1).chunk(3, dim=1)  # (B, L, D) each
    chunk = 32
    n = -(-L // chunk) * chunk
    k_padded = F.pad(k, (0, 0, 0, n - L))  # (B, n, D); the padding keys are masked below
    best = torch.empty(B, L, dtype=torch.long)
    # queries per block: sim <= 8 MB (32 at B 16, L 4096: ~10% faster than 64, which is 16 MB)
    block = max(chunk, min(n, 2**21 // (B * n) // chunk * chunk))
    for i in range(0, L, block):
        end = min(i + block, L)
        width = -(-end // chunk) * chunk if causal else n  # causal: query t only needs keys j <= t
        sim = q[:, i:end] @ k_padded[:, :width].mT  # (B, b, width)
        lo = i if causal else L  # columns that may need masking: from lo on
        j, t = torch.arange(lo, width), torch.arange(i, end)[:, None]
        sim[..., lo:].masked_fill_((j > t) | (j >= L), -torch.inf)
        best[:, i:end] = first_argmax(sim, chunk)
    y = v.gather(1, best[..., None].expand(B, L, D))
    return pos(torch.cat((q, k, v), dim=-1)), y


GENERATORS = {"shift": _shift, "context_shift": _context_shift, "cumsum": _running, "cummax": _running,
              "reverse": _reorder, "sort": _reorder, "masked_select": _masked_select, "solve": _solve, "mips": _mips}


def fixed_parts(task, L, M=32, consecutive=False, variable=True, fixed_seed=0, **_):
    """The positions / matrix that "fixed" tasks (or variable=false) share across all samples."""
    kind = family(task)
    if kind not in ("masked_select", "solve") or (variable and "fixed" not in task):
        return {}
    g = torch.Generator().manual_seed(fixed_seed)
    if kind == "masked_select":
        return {"fixed_positions": _masked_positions(1, g, L, M, consecutive, draws=False)}  # as before the draws
    N = solve_size(L)
    return {"fixed_matrix": polar(torch.randn(1, N, N, generator=g))}


def _generate(task, batch_size, generator, kwargs, fixed):
    kind = family(task)
    defaults = {"fixed_positions": None, "fixed_matrix": None}
    return GENERATORS[kind](batch_size, generator, task=task, **kwargs, **{**defaults, **fixed})


class Sequence1D(SyntheticDataset):
    """`dataset=sequence1d`: the atomic tasks above, generated on the fly (see base.py)."""

    def __init__(self, task="shift", L=512, samples_per_epoch=16000, val_split=0.1, num_shifts=8, M=32, D=4,
                 causal=True, variable=True, consecutive=False, fixed_seed=0, seed=0, num_train_examples=None):
        super().__init__(samples_per_epoch, val_split, seed, num_train_examples)
        self.task = task
        self.kwargs = dict(L=L, num_shifts=num_shifts, M=M, D=D, causal=causal, consecutive=consecutive)
        self.L_input, self.d_input, self.l_output, self.d_output = shapes(task, **self.kwargs)
        self.fixed = fixed_parts(task, variable=variable, fixed_seed=fixed_seed, **self.kwargs)

    def generate(self, batch_size, generator):
        return _generate(self.task, batch_size, generator, self.kwargs, self.fixed)
