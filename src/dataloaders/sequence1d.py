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
A = U Vh the orthogonal polar factor of randn(N, N), X = randn(N) / |X|, zero-padded to L.
Targets are read at the last `l_output` positions of the model's output.
"""

import math

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
    B, T, _ = x.shape
    angle = (2 * math.pi / T) * torch.arange(T, dtype=x.dtype)
    return torch.cat((x, angle.cos().expand(B, T)[..., None], angle.sin().expand(B, T)[..., None]), dim=-1)


def inf_normalised(x):
    """x / max|x| along the last dimension."""
    return x / x.abs().amax(dim=-1, keepdim=True)


def _shift(B, g, L, num_shifts, **_):
    x = inf_normalised(torch.randn(B, L, generator=g))  # (B, L)
    s = torch.linspace(0, L - L / num_shifts, num_shifts).long().tolist()  # H delays
    y = x.new_zeros(B, L, num_shifts)
    for j, sj in enumerate(s):  # over the H delays, not over samples
        y[:, sj:, j] = x[:, : L - sj]
    return pos(x[..., None]), y  # (B, L, 3), (B, L, H)


def _context_shift(B, g, L, **_):
    x = inf_normalised(torch.randn(B, L - 2, generator=g))  # (B, L-2)
    s = torch.randint(0, L - 2, (B, 1), generator=g)  # (B, 1) in {0..L-3}
    angle = 2 * math.pi * s / L
    x = torch.cat((angle.cos(), angle.sin(), x), dim=-1)  # (B, L)
    src = torch.arange(L) - s  # (B, L): position read by y[t]
    y = x.gather(-1, src.clamp(min=0)) * (src >= 0)
    return pos(x[..., None]), y[..., None]


def _running(B, g, L, task, **_):
    x = inf_normalised(torch.randn(B, L, generator=g))  # (B, L)
    if task == "cumsum":
        y = x.cumsum(-1) / torch.arange(1, L + 1).sqrt()
    else:
        y = x.cummax(-1).values
    return pos(x[..., None]), y[..., None]


def _reorder(B, g, L, task, **_):
    x = inf_normalised(torch.randn(B, L, generator=g))  # (B, L)
    if task == "reverse":
        y = x.flip(-1)
    else:  # sort by distance to the first token, stable: y[0] = x_0
        order = (x - x[:, :1]).abs().argsort(dim=-1, stable=True)
        y = x.gather(-1, order)
    return pos(F.pad(x, (0, L))[..., None]), y[..., None]


def _masked_positions(B, g, L, M, consecutive):
    """(B, M) sorted distinct positions among the first M + L."""
    if consecutive:
        return torch.randint(0, L, (B, 1), generator=g) + torch.arange(M)
    return torch.rand(B, M + L, generator=g).topk(M, dim=-1).indices.sort(dim=-1).values


def _masked_select(B, g, L, M, consecutive, fixed_positions, **_):
    v = F.pad(inf_normalised(torch.randn(B, M + L, generator=g)), (0, M))  # (B, 2M+L)
    idx = fixed_positions.expand(B, M) if fixed_positions is not None else _masked_positions(B, g, L, M, consecutive)
    marker = torch.zeros_like(v).scatter_(-1, idx, 1.0)
    x = pos(torch.stack((v, marker), dim=-1))  # (B, 2M+L, 4)
    return x, v.gather(-1, idx)[..., None]  # (B, M, 1)


def polar(A):
    """Orthogonal polar factor U Vh of A = U S Vh, batched over leading dims."""
    U, _, Vh = torch.linalg.svd(A)
    return U @ Vh


def _solve(B, g, L, fixed_matrix, **_):
    N = solve_size(L)
    A = fixed_matrix.expand(B, N, N) if fixed_matrix is not None else polar(torch.randn(B, N, N, generator=g))
    X = F.normalize(torch.randn(B, N, 1, generator=g), dim=1)  # (B, N, 1), unit norm
    AB = torch.cat((A, A @ X), dim=-1).reshape(B, N * N + N)  # row-major [A | B]
    x = F.pad(AB, (0, L - N * N - N))  # (B, L)
    return pos(x[..., None]), X


def first_argmax(sim, chunk=64):
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
    chunk = 64
    n = -(-L // chunk) * chunk
    k_padded = F.pad(k, (0, 0, 0, n - L))  # (B, n, D); the padding keys are masked below
    best = torch.empty(B, L, dtype=torch.long)
    block = max(chunk, min(n, 2**22 // (B * n) // chunk * chunk))  # queries per block: sim <= 16 MB
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
        return {"fixed_positions": _masked_positions(1, g, L, M, consecutive)}
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
