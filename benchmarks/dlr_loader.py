"""The baseline of the atomic-task benchmark: the DLR repo's loader, one example at a time.

github.com/ag1988/dlr, src/dataloaders/sequence1d.py: `Sequence1dTrainDataset` yields one
example per step (`torch_sequence1d_data(batch_shape=(), ...)`, in torch, on the CPU) and the
DataLoader stacks them into a batch. Written here from its semantics (not copied), with the
per-example work it does even where our definition needs less: shift and context_shift convolve
with one-hot kernels built per example (FFT), solve finds N with numpy.roots and takes an SVD per
example, the fixed variants rebuild the fixed positions / matrix (SVD included) per example, and
mips computes the full L x L similarity (in_device='cpu'; the original defaults to CUDA). Each
example has the meaning docs/tasks.md gives it. Random numbers come from a torch.Generator
passed in rather than the global RNG (same cost). The DLR repo defines every task of
sequence1d.TASKS: shift, context_shift, cumsum, cummax, reverse, sort, masked_select(_fixed),
solve(_fixed), mips.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def with_pos(x):
    """(T, C) -> (T, C + 2): cos(2 pi t/T), sin(2 pi t/T) appended."""
    angle = (2 * math.pi * torch.arange(x.shape[-2]) / x.shape[-2])[:, None]
    return torch.cat((x, torch.zeros_like(x[:, :1]) + angle.cos(), torch.zeros_like(x[:, :1]) + angle.sin()), dim=-1)


def fft_delay(x, kernels):
    """x (L,) convolved with each row of kernels (K, L) through an FFT of length 2L: (K, L)."""
    L = x.shape[-1]
    spectrum = torch.fft.rfft(x, n=2 * L) * torch.fft.rfft(kernels, n=2 * L)
    return torch.fft.irfft(spectrum, n=2 * L)[..., :L]


def noise(n, g):
    x = torch.randn(n, generator=g)
    return x / x.abs().max().clamp(min=1e-12)  # F.normalize(p=inf)


def shift(g, L, num_shifts=8, **_):
    x = noise(L, g)
    delays = torch.linspace(0, L - L / num_shifts, num_shifts, dtype=torch.long)
    y = fft_delay(x, F.one_hot(delays, L).float()).T  # (L, H)
    return with_pos(x[:, None]), y


def context_shift(g, L, **_):
    x = noise(L - 2, g)
    s = torch.randint(0, L - 2, (), generator=g)
    kernel = F.one_hot(s, L).float()[None]  # (1, L)
    angle = 2 * math.pi * s / L
    x = torch.cat((angle.cos()[None], angle.sin()[None], x))  # (L,)
    return with_pos(x[:, None]), fft_delay(x, kernel).T  # (L, 3), (L, 1)


def atomic(g, L, task, **_):
    x = noise(L, g)
    if task == "cumsum":
        y = x.cumsum(-1) / torch.arange(1, L + 1) ** 0.5
    elif task == "cummax":
        y = x.cummax(-1).values
    elif task == "reverse":
        y = x.flip(-1)
    else:  # sort
        y = x.gather(-1, (x - x[:1]).abs().sort(stable=True).indices)
    inputs = F.pad(x, (0, L)) if task in ("reverse", "sort") else x
    return with_pos(inputs[:, None]), y[:, None]


def masked_select(g, L, task, M=32, **_):
    if "fixed" in task:  # the original redraws the fixed positions, from a fresh seeded generator, per example
        idx = torch.rand(M + L, generator=torch.Generator().manual_seed(0)).topk(M).indices.sort().values
    else:
        idx = torch.rand(M + L, generator=g).topk(M).indices.sort().values
    v = F.pad(noise(M + L, g), (0, M))
    marker = torch.zeros_like(v).scatter_(-1, idx, 1.0)
    return with_pos(torch.stack((v, marker), dim=-1)), v.gather(-1, idx)[:, None]


def solve(g, L, task, **_):
    N = int(np.max(np.roots([1, 2, -L])))  # per example, as in the original
    source = torch.Generator().manual_seed(0) if "fixed" in task else g  # fixed: same matrix, SVD per example
    U, _, Vh = torch.linalg.svd(torch.randn(N, N, generator=source), full_matrices=False)
    A = U @ Vh
    X = F.normalize(torch.randn(N, 1, generator=g), dim=0)
    flat = torch.cat((A, A @ X), dim=-1).reshape(-1)
    return with_pos(F.pad(flat, (0, L - flat.shape[0]))[:, None]), X


def mips(g, L, D=4, causal=True, **_):
    q, k, v = F.normalize(torch.randn(3 * L, D, generator=g), dim=-1).chunk(3)
    sim = q @ k.T  # (L, L)
    if causal:
        i = torch.arange(L)
        sim.masked_fill_(i[:, None] < i[None], -1e5)
    y = v.gather(0, sim.argmax(-1, keepdim=True).expand_as(v))
    return with_pos(torch.cat((q, k, v), dim=-1)), y


EXAMPLE = {"shift": shift, "context_shift": context_shift, "cumsum": atomic, "cummax": atomic, "reverse": atomic,
           "sort": atomic, "masked_select": masked_select, "masked_select_fixed": masked_select, "solve": solve,
           "solve_fixed": solve, "mips": mips}


def batch(task, batch_size, g, L, **params):
    """A batch as the DLR loader makes it: one example at a time, stacked (default_collate)."""
    pairs = [EXAMPLE[task](g, L, task=task, **params) for _ in range(batch_size)]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
