"""Each atomic task against docs/tasks.md: y recomputed from x sample by sample, in numpy."""

import math

import numpy as np
import pytest
import torch

from src.dataloaders.sequence1d import TASKS, Sequence1D
from src.dataloaders.synthetic import sample
from src.utils.errors import ConfigError

B = 5


def gen(task, seed=0, **kw):
    x, y = sample(task, B, torch.Generator().manual_seed(seed), **kw)
    assert x.dtype == y.dtype == torch.float32
    return x.numpy().astype(np.float64), y.numpy().astype(np.float64)


def check_pos(x):
    T = x.shape[1]
    t = np.arange(T)
    np.testing.assert_allclose(x[:, :, -2], np.cos(2 * np.pi * t / T)[None].repeat(B, 0), atol=1e-6)
    np.testing.assert_allclose(x[:, :, -1], np.sin(2 * np.pi * t / T)[None].repeat(B, 0), atol=1e-6)


def check_inf_normalised(v):
    for row in v:
        assert np.isclose(np.abs(row).max(), 1.0) and np.abs(row).max() <= 1.0


def test_shift():
    L, H = 40, 8
    x, y = gen("shift", L=L, num_shifts=H)
    assert x.shape == (B, L, 3) and y.shape == (B, L, H)
    check_pos(x)
    for b in range(B):
        seq = x[b, :, 0]
        check_inf_normalised(seq[None])
        for j, s in enumerate(int(v) for v in np.linspace(0, L - L / H, H)):
            for t in range(L):
                assert y[b, t, j] == (seq[t - s] if t >= s else 0.0)


def test_context_shift():
    L = 30
    x, y = gen("context_shift", L=L)
    assert x.shape == (B, L, 3) and y.shape == (B, L, 1)
    check_pos(x)
    for b in range(B):
        seq = x[b, :, 0]
        s = round(math.atan2(seq[1], seq[0]) / (2 * math.pi) * L) % L  # the lag, read from the prefix
        assert 0 <= s <= L - 3
        assert np.isclose(seq[0], math.cos(2 * math.pi * s / L), atol=1e-6)
        check_inf_normalised(seq[None, 2:])
        for t in range(L):
            assert np.isclose(y[b, t, 0], seq[t - s] if t >= s else 0.0, atol=1e-6)


@pytest.mark.parametrize("task", ["cumsum", "cummax"])
def test_running(task):
    L = 33
    x, y = gen(task, L=L)
    assert x.shape == (B, L, 3) and y.shape == (B, L, 1)
    check_pos(x)
    for b in range(B):
        seq = x[b, :, 0]
        check_inf_normalised(seq[None])
        for t in range(L):
            expected = sum(seq[: t + 1]) / math.sqrt(t + 1) if task == "cumsum" else max(seq[: t + 1])
            assert np.isclose(y[b, t, 0], expected, atol=1e-5)


@pytest.mark.parametrize("task", ["reverse", "sort"])
def test_reorder(task):
    L = 21
    x, y = gen(task, L=L)
    assert x.shape == (B, 2 * L, 3) and y.shape == (B, L, 1)
    check_pos(x)
    for b in range(B):
        seq = list(x[b, :L, 0])
        assert np.all(x[b, L:, 0] == 0)
        if task == "reverse":
            expected = seq[::-1]
        else:
            expected = [v for _, _, v in sorted((abs(v - seq[0]), i, v) for i, v in enumerate(seq))]
            assert expected[0] == seq[0]
        np.testing.assert_allclose(y[b, :, 0], expected, atol=1e-7)


@pytest.mark.parametrize("task", ["masked_select", "masked_select_fixed"])
@pytest.mark.parametrize("consecutive", [False, True])
def test_masked_select(task, consecutive):
    L, M = 20, 6
    x, y = gen(task, L=L, M=M, consecutive=consecutive)
    assert x.shape == (B, 2 * M + L, 4) and y.shape == (B, M, 1)
    check_pos(x)
    positions = []
    for b in range(B):
        v, marker = x[b, :, 0], x[b, :, 1]
        check_inf_normalised(v[None, : M + L])
        assert np.all(v[M + L :] == 0)
        chosen = [i for i in range(2 * M + L) if marker[i] == 1]
        assert len(chosen) == M and max(chosen) < M + L and set(marker) <= {0.0, 1.0}
        if consecutive:
            assert chosen == list(range(chosen[0], chosen[0] + M)) and chosen[0] <= L - 1
        np.testing.assert_array_equal(y[b, :, 0], [v[i] for i in chosen])
        positions.append(tuple(chosen))
    if task.endswith("fixed"):
        assert len(set(positions)) == 1
        _, y2 = gen(task, seed=1, L=L, M=M, consecutive=consecutive)
        x2, _ = gen(task, seed=1, L=L, M=M, consecutive=consecutive)
        assert tuple(np.flatnonzero(x2[0, :, 1])) == positions[0]
    else:
        assert len(set(positions)) > 1


@pytest.mark.parametrize("task", ["solve", "solve_fixed"])
def test_solve(task):
    L = 50
    N = 6  # largest N with N^2 + 2N <= 50 (48)
    x, y = gen(task, L=L)
    assert x.shape == (B, L, 3) and y.shape == (B, N, 1)
    check_pos(x)
    matrices = []
    for b in range(B):
        flat = x[b, :, 0]
        assert np.all(flat[N * N + N :] == 0)
        AB = flat[: N * N + N].reshape(N, N + 1)
        A, rhs, X = AB[:, :N], AB[:, N], y[b, :, 0]
        np.testing.assert_allclose(A @ A.T, np.eye(N), atol=1e-5)
        assert np.isclose(np.linalg.norm(X), 1.0, atol=1e-6)
        np.testing.assert_allclose(A @ X, rhs, atol=1e-5)
        matrices.append(A)
    same = all(np.array_equal(matrices[0], A) for A in matrices)
    assert same == task.endswith("fixed")


def test_solve_matrix_is_the_polar_factor_of_a_gaussian():
    """A = U Vh: symmetric positive definite A^T G = V S Vh for the Gaussian G it came from."""
    from src.dataloaders.sequence1d import polar

    G = torch.randn(3, 7, 7, dtype=torch.float64)
    A = polar(G)
    P = A.mT @ G
    torch.testing.assert_close(P, P.mT)
    assert torch.linalg.eigvalsh(P).min() > 0


def test_haar_orthogonal_is_the_product_of_the_reflectors_of_its_columns():
    """Q = H_1 .. H_N diag(-sign z_kk), H_k the reflector taking column k of tril(Z) to a multiple of e_k."""
    from src.dataloaders.sequence1d import haar_orthogonal

    Z = torch.randn(4, 9, 9, dtype=torch.float64)
    Q = haar_orthogonal(Z.clone())
    for z, q in zip(Z, Q):
        product = torch.eye(9, dtype=torch.float64)
        for k in range(9):
            v = torch.zeros(9, dtype=torch.float64)
            v[k:] = z[k:, k]
            sign = 1.0 if z[k, k] >= 0 else -1.0
            v[k] += sign * z[k:, k].norm()
            product = product @ (torch.eye(9, dtype=torch.float64) - 2 * torch.outer(v, v) / (v @ v))
            product[:, k] *= -sign  # commutes with the later reflectors, which leave row and column k alone
        torch.testing.assert_close(q, product, rtol=0, atol=1e-12)
        torch.testing.assert_close(q.mT @ q, torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-12)


def test_haar_orthogonal_has_the_law_of_the_polar_factor_of_a_gaussian():
    """Both are Haar on O(N): the moments of the trace are those of N(0, 1) up to order N
    (Diaconis-Shahshahani), half the determinants are -1, and each entry has variance 1/N."""
    from src.dataloaders.sequence1d import haar_orthogonal, polar

    g, n, N = torch.Generator().manual_seed(0), 20000, 8
    for Q in (haar_orthogonal(torch.randn(n, N, N, generator=g, dtype=torch.float64)),
              polar(torch.randn(n, N, N, generator=g, dtype=torch.float64))):
        trace = Q.diagonal(dim1=-2, dim2=-1).sum(-1)
        assert abs(trace.mean()) < 0.04 and abs(trace.square().mean() - 1) < 0.06  # 4 standard errors
        assert abs(trace.pow(4).mean() - 3) < 0.3
        assert abs((torch.linalg.det(Q) > 0).double().mean() - 0.5) < 0.015
        assert (Q.square().mean(0) * N - 1).abs().max() < 0.06


def test_distance_order_is_a_stable_argsort_with_ties():
    from src.dataloaders.sequence1d import distance_order

    x = torch.randint(-6, 7, (50, 33)).float() / 4  # many equal and mirrored distances
    expected = (x - x[:, :1]).abs().argsort(dim=-1, stable=True)
    np.testing.assert_array_equal(distance_order(x), expected.numpy())


def test_masked_positions_are_uniform_over_the_subsets():
    """M distinct draws per row (redrawn on a repeat) or the top M of M + L uniforms: every M-subset
    of the first M + L positions equally likely."""
    from collections import Counter

    from src.dataloaders.sequence1d import _masked_positions

    g, n = torch.Generator().manual_seed(0), 28000
    for L, M in [(6, 2), (1, 3)]:  # M^2 <= M + L draws; M^2 > M + L takes the top M
        subsets = math.comb(M + L, M)
        counts = Counter(map(tuple, _masked_positions(n, g, L, M, consecutive=False).tolist()))
        assert len(counts) == subsets and all(a < b for s in counts for a, b in zip(s, s[1:]))
        expected = n / subsets
        assert max(abs(c - expected) for c in counts.values()) < 5 * math.sqrt(expected)


@pytest.mark.parametrize("causal", [True, False])
def test_mips(causal):
    L, D = 70, 3  # L not a multiple of the 64-key chunks
    x, y = gen("mips", L=L, D=D, causal=causal)
    assert x.shape == (B, L, 3 * D + 2) and y.shape == (B, L, D)
    check_pos(x)
    for b in range(B):
        q, k, v = x[b, :, :D], x[b, :, D : 2 * D], x[b, :, 2 * D : 3 * D]
        np.testing.assert_allclose(np.linalg.norm(np.concatenate([q, k, v]), axis=1), 1.0, atol=1e-6)
        for i in range(L):
            keys = range(i + 1) if causal else range(L)
            j = max(keys, key=lambda j: (float(np.float32(q[i] @ k[j])), -j))
            np.testing.assert_allclose(y[b, i], v[j], atol=0)


def test_dataset_shapes_match_samples():
    for task in TASKS:
        ds = Sequence1D(task=task, L=64, M=8, samples_per_epoch=8, val_split=0.5)
        x, y = ds[("train", 0, 0, range(2))]
        assert x.shape == (2, ds.L_input, ds.d_input) and y.shape == (2, ds.l_output, ds.d_output)


def test_same_generator_seed_same_batch():
    for task in TASKS:
        a = sample(task, 2, torch.Generator().manual_seed(3), L=32, M=4)
        b = sample(task, 2, torch.Generator().manual_seed(3), L=32, M=4)
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_variable_false_fixes_the_positions_like_fixed():
    a = sample("masked_select", 4, torch.Generator().manual_seed(0), L=20, M=5, variable=False)[0][..., 1]
    b = sample("masked_select_fixed", 4, torch.Generator().manual_seed(9), L=20, M=5)[0][..., 1]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        ("shfit", {}, r"task='shfit' is not valid; choose one of: .*'shift'"),
        ("shift", {"L": 4, "num_shifts": 8}, r"dataset.L=4 is too small for dataset.task=shift: needs L >= 8"),
        ("shift", {"L": 16, "num_shifts": 1}, r"num_shifts >= 2"),
        ("context_shift", {"L": 3}, r"needs L >= 4"),
        ("solve", {"L": 2}, r"needs L >= 3"),
    ],
)
def test_bad_task_or_length(task, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sample(task, 2, **{"L": 16, **kwargs})
