"""src/ops/ttt (TTT-Linear, TTT-MLP) and src/ops/titans: the chunked paths and the C loops (cpu.py)
against reference.py (outputs, final state, every input's gradient, from a state inside a
mini-batch), the inner gradient formulas against autograd, and reference.py against fla's naive loops
(fla/ops/ttt/naive.py's ttt_linear with lr = 1; fla/ops/titans/naive.py's titans_linear).

fla's loops are loaded from their source with two edits, each checked to be there: `torch.float32`
reads `torch.float64` (they cast a few intermediates to float32, which would hide a float64
comparison under float32 rounding), and Titans' layer-norm backward has its brackets restored:
fla writes `D * grad - grad.sum(-1) / (rstd * D)` where its own commented-out line and TTT's loop
have `(D * grad - grad.sum(-1)) / (rstd * D)`, the gradient (test_ln_l2_grad_is_the_gradient).

Tolerances. float64: the same sums reordered (1e-10). float32 against the float64 loop: 1e-3 (the
gradients go through layer-norm backwards over as few as 3 features, which amplify rounding).
"""

import pytest
import torch

from conftest import fla_naive
from op_backends import compare, gen

from src.models.sequence.layers.ttt import TTTMLP
from src.ops.titans import DISPATCH as TITANS
from src.ops.titans import chunked as titans_chunked
from src.ops.titans import cpu as titans_cpu
from src.ops.titans import reference as titans_reference
from src.ops.titans import titans
from src.ops.ttt import DISPATCH, MLP_DISPATCH, chunked, cpu, reference, ttt_linear, ttt_mlp
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-3, atol=1e-3)
# (B, T, H, D, K, offset): T = 1, T across mini-batches with a partial last one, an odd head width,
# a start inside a mini-batch, T shorter than the rest of the mini-batch, K = 1
SHAPES = [(2, 1, 2, 4, 4, 0), (2, 11, 2, 5, 4, 0), (1, 13, 3, 3, 4, 3), (2, 2, 1, 6, 4, 1), (1, 5, 2, 4, 1, 0)]
# the C loop's (B, T, H, D, K), from a mini-batch's start: those of SHAPES, one T a multiple of K, and D
# 83, which runs every part of its products (4-vector, 1-vector and element-wise columns; 4-row
# blocks and single rows) and of its transposes (tiles, edges) in float32 and in float64
C_SHAPES = [(2, 1, 2, 4, 4), (2, 11, 2, 5, 4), (1, 5, 2, 4, 1), (2, 32, 1, 64, 16), (1, 37, 2, 83, 16)]


def ttt_inputs(B, T, H, D, hidden=None, dtype=torch.float64, seed=0):
    """q, k, v, eta, lr, w, b, then the state's tensors W (and G alike): eta in (0, 1), lr in (0, 1)."""
    g = gen(seed)
    r = lambda *s, scale=1.0: scale * torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    W = [r(B, H, D, D, scale=0.3), r(B, H, D, scale=0.1)] if hidden is None else \
        [r(B, H, D, hidden, scale=0.3), r(B, H, hidden, scale=0.1), r(B, H, hidden, D, scale=0.3), r(B, H, D, scale=0.1)]
    G = [0.1 * torch.randn(w.shape, generator=g, dtype=torch.float64) for w in W]
    x = [r(B, T, H, D), r(B, T, H, D), r(B, T, H, D), torch.rand(B, T, H, generator=g, dtype=torch.float64),
         torch.rand(B, T, H, generator=g, dtype=torch.float64), 1 + r(H, D, scale=0.3), r(H, D, scale=0.3), *W, *G]
    return [t.to(dtype) for t in x]


def ttt_call(fn, n_weights, offset, K):
    def run(q, k, v, eta, lr, w, b, *state):
        W, G = state[:n_weights], state[n_weights:]
        if not offset:  # the sums are zero at a mini-batch's start
            G = tuple(torch.zeros_like(x) for x in W)
        W, G = tuple(W), tuple(G)
        z, (W, G), _ = fn(q, k, v, eta, lr, w, b, (W, G), offset, K)
        return (z, *W, *G)
    return run


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_chunked_matches_reference(shape, inner):
    B, T, H, D, K, offset = shape
    hidden = None if inner == "linear" else 2 * D + 1
    n = 2 if hidden is None else 4
    fast, ref = getattr(chunked, f"ttt_{inner}"), getattr(reference, f"ttt_{inner}")
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32)):
        x = ttt_inputs(B, T, H, D, hidden, dtype)
        if not offset:  # no sums in the state (ttt_call starts them at zero)
            x = x[: 7 + n] + [None] * n
        compare(ttt_call(fast, n, offset, K), ttt_call(ref, n, offset, K), x, tol)


@pytest.mark.parametrize("shape", C_SHAPES, ids=str)
def test_the_c_loop_matches_reference(shape):
    B, T, H, D, K = shape
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32)):
        x = ttt_inputs(B, T, H, D, None, dtype)[:9] + [None, None]  # no sums in: offset 0
        compare(ttt_call(cpu.ttt_linear, 2, 0, K), ttt_call(reference.ttt_linear, 2, 0, K), x, tol)


@pytest.mark.parametrize("shape", C_SHAPES + [(1, 37, 2, 40, 16)], ids=str)
def test_the_mlp_c_loop_matches_reference(shape):
    """Hidden width 2 D + 1 (at D 40: F 81, the products' 4-vector, 1-vector and element-wise columns
    in float32). Float32 only up to D 40: at D 83 the unit-variance inputs make gradients whose float32
    rounding passes 1e-3 in a few elements, the torch path's as this loop's (1.7e-3 both)."""
    B, T, H, D, K = shape
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32))[: 1 if D > 40 else 2]:
        x = ttt_inputs(B, T, H, D, 2 * D + 1, dtype)[:11] + [None] * 4
        compare(ttt_call(cpu.ttt_mlp, 4, 0, K), ttt_call(reference.ttt_mlp, 4, 0, K), x, tol)


def test_the_c_loops_partial_sums_continue_on_the_torch_path():
    """A call of the C loop that ends inside a mini-batch, then the torch path from its state and
    offset (the C loop takes offset 0 only), equal one call."""
    for inner, hidden in (("linear", None), ("mlp", 7)):
        n_weights = 2 if hidden is None else 4
        q, k, v, eta, lr, w, b, *W = ttt_inputs(2, 23, 2, 4, hidden)[: 7 + n_weights]
        G = tuple(torch.zeros_like(x) for x in W)
        fast, torch_path, ref = (getattr(m, f"ttt_{inner}") for m in (cpu, chunked, reference))
        z, S, n = ref(q, k, v, eta, lr, w, b, (tuple(W), G), 0, 4)
        z1, S1, n1 = fast(*(x[:, :10] for x in (q, k, v, eta, lr)), w, b, (tuple(W), G), 0, 4)
        z2, S2, n2 = torch_path(*(x[:, 10:] for x in (q, k, v, eta, lr)), w, b, S1, n1, 4)
        assert (n1, n2, n) == (2, 3, 3)
        torch.testing.assert_close(torch.cat((z1, z2), 1), z, **F64)
        for a, c in zip(S2[0] + S2[1], S[0] + S[1]):
            torch.testing.assert_close(a, c, **F64)


def test_dispatch_runs_the_c_loop_from_a_mini_batchs_start():
    q, k, v, eta, lr, w, b, *W = ttt_inputs(1, 6, 2, 4, dtype=torch.float32)[:9]
    args = (q, k, v, eta, lr, w, b, (tuple(W), tuple(torch.zeros_like(x) for x in W)))
    cpu_device = torch.device("cpu")
    assert DISPATCH.resolve("auto", cpu_device, (*args, 0, 4, 1e-6)) == "cpu"
    assert DISPATCH.resolve("auto", cpu_device, (*args, 1, 4, 1e-6)) == "torch"
    assert torch.equal(ttt_linear(*args, 0, 4)[0], cpu.ttt_linear(*args, 0, 4)[0])
    assert torch.equal(ttt_linear(*args, 1, 4)[0], chunked.ttt_linear(*args, 1, 4)[0])
    with pytest.raises(ConfigError, match="offset 1"):
        ttt_linear(*args, 1, 4, backend="cpu")
    q, k, v, eta, lr, w, b, *W = ttt_inputs(1, 6, 2, 4, hidden=5, dtype=torch.float32)[:11]
    args = (q, k, v, eta, lr, w, b, (tuple(W), tuple(torch.zeros_like(x) for x in W)))
    assert MLP_DISPATCH.resolve("auto", cpu_device, (*args, 0, 4, 1e-6)) == "cpu"
    assert MLP_DISPATCH.resolve("auto", cpu_device, (*args, 1, 4, 1e-6)) == "torch"
    assert torch.equal(ttt_mlp(*args, 0, 4)[0], cpu.ttt_mlp(*args, 0, 4)[0])
    with pytest.raises(ConfigError, match="offset 1"):
        ttt_mlp(*args, 1, 4, backend="cpu")


def test_layer_backends():
    """TTT's `backend` is its op's; Titans' serves its convs and its op (a GPU name: the op's torch path)."""
    from src.models.sequence.layers.ttt import Titans, TTTLinear
    assert TTTLinear(8, n_heads=2, backend="cpu").op.keywords == {"backend": "cpu"}
    assert TTTMLP(8, n_heads=2, backend="torch").op.keywords == {"backend": "torch"}
    with pytest.raises(ConfigError, match="model.layer.backend='cuda'"):
        TTTLinear(8, n_heads=2, backend="cuda")
    assert [Titans(8, n_heads=2, backend=b).backend for b in ("auto", "cpu", "torch", "cuda")] == \
        ["auto", "cpu", "torch", "torch"]


@pytest.mark.parametrize("inner", ["linear", "mlp"])
def test_state_passing(inner):
    """Two calls, cut inside a mini-batch, equal one call: outputs and state."""
    q, k, v, eta, lr, w, b, *state = ttt_inputs(2, 23, 2, 4, None if inner == "linear" else 6)
    W = tuple(state[: len(state) // 2])
    G = tuple(torch.zeros_like(x) for x in W)
    fn = getattr(chunked, f"ttt_{inner}")
    z, S, n = fn(q, k, v, eta, lr, w, b, (W, G), 0, 4)
    z1, S1, n1 = fn(q[:, :10], k[:, :10], v[:, :10], eta[:, :10], lr[:, :10], w, b, (W, G), 0, 4)
    z2, S2, n2 = fn(q[:, 10:], k[:, 10:], v[:, 10:], eta[:, 10:], lr[:, 10:], w, b, S1, n1, 4)
    assert (n1, n2, n) == (2, 3, 3)
    torch.testing.assert_close(torch.cat((z1, z2), 1), z, **F64)
    for a, c in zip(S2[0] + S2[1], S[0] + S[1]):
        torch.testing.assert_close(a, c, **F64)


def test_ln_l2_grad_is_the_gradient():
    """The inner gradients are the autograd gradients of the inner losses."""
    g = gen(3)
    z, target = (torch.randn(3, 2, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w, b = 1 + torch.randn(2, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    loss = 0.5 * ((reference.layer_norm(z, w, b, 1e-6) - target) ** 2).sum()
    want = torch.autograd.grad(loss, z)[0]
    torch.testing.assert_close(reference.ln_l2_grad(z, target, w, b, 1e-6), want, **F64)
    torch.testing.assert_close(chunked.ln_grad(z, (b - target) * w, w.square(), 1e-6), want, **F64)  # c folded in
    q, k, v, eta, lr, w, b, *W = ttt_inputs(3, 1, 2, 4, hidden=7)[:11]
    W = [x.detach().requires_grad_() for x in W]
    z2 = reference.mlp_apply(W, k[:, 0])
    loss = 0.5 * ((reference.layer_norm(z2, w, b, 1e-6) - (v[:, 0] - k[:, 0])) ** 2).sum()
    for got, want in zip(reference.mlp_grads(W, k[:, 0], v[:, 0], w, b, 1e-6), torch.autograd.grad(loss, W)):
        torch.testing.assert_close(got, want, **F64)


def test_gelu_is_torchs():
    """chunked's gelu pair (gelu, gelu') equals torch's tanh approximation and its gelu_backward, and
    the reference's gelu and gelu_grad, and its gradient is theirs (gelu'' through autograd of the
    reference's gelu_grad); 3 sigmas of inputs, the range where the sigmoid saturates included."""
    x = (3 * torch.randn(4, 16, 9, generator=gen(5), dtype=torch.float64)).requires_grad_()
    y, d = chunked._Gelu.apply(x, True)
    torch.testing.assert_close(chunked._Gelu.apply(x, False), y, **F64)
    for got, want in zip(chunked._gelu(x.detach(), True), (y, d)):  # the path without autograd
        torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(chunked._gelu(x.detach(), False), y, **F64)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x, approximate="tanh"), **F64)
    torch.testing.assert_close(d, torch.ops.aten.gelu_backward(torch.ones_like(x), x, approximate="tanh"), **F64)
    dy, dd = (torch.randn(x.shape, generator=gen(6 + i), dtype=torch.float64) for i in range(2))
    got = torch.autograd.grad((y * dy + d * dd).sum(), x)[0]
    want = torch.autograd.grad((reference.gelu(x) * dy + reference.gelu_grad(x) * dd).sum(), x)[0]
    torch.testing.assert_close(got, want, **F64)
    got = torch.autograd.grad((chunked._Gelu.apply(x, False) * dy).sum(), x)[0]
    torch.testing.assert_close(got, reference.gelu_grad(x) * dy, **F64)


def test_shapes_refused():
    q, k, v, eta, lr, w, b, *W = ttt_inputs(1, 3, 2, 4)[:9]
    with pytest.raises(ValueError, match="offset"):
        ttt_linear(q, k, v, eta, lr, w, b, (W, W), offset=4, mini_batch_size=4)
    with pytest.raises(ValueError, match="eta"):
        ttt_linear(q, k, v, eta[..., :1], lr, w, b, (W, W))


def _readout_selectivity(w1_std, seed, D=16, K=16):
    """TTT-MLP stores K random pairs (k_s, v_s) in one mini-batch, then reads each key back in the
    next: mean cosine of LN(z(k_s)) with its own target LN(v_s - k_s), less the mean with the other
    pairs' targets. The inner learning rate is the layer's at its start (base_lr sigmoid(0) / d)."""
    g = gen(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    k = torch.nn.functional.normalize(r(1, K, 1, D), dim=-1) * D**0.5 / 2
    v = r(1, K, 1, D)
    W = [r(1, 1, D, 4 * D) * w1_std, torch.zeros(1, 1, 4 * D).double(), r(1, 1, 4 * D, D) * 0.02,
         torch.zeros(1, 1, D).double()]
    w, b = torch.ones(1, D).double(), torch.zeros(1, D).double()
    kk, vv = torch.cat((k, k), 1), torch.cat((v, v), 1)  # the pairs again: the second mini-batch reads them
    eta = (1 / (torch.arange(2 * K) % K + 1)).double()[None, :, None]
    lr = torch.full((1, 2 * K, 1), 0.5 / D).double()
    z, _, _ = reference.ttt_mlp(kk, kk, vv, eta, lr, w, b, (W, [torch.zeros_like(x) for x in W]), 0, K)
    read = torch.nn.functional.normalize(reference.layer_norm(z[0, K:, 0], w, b, 1e-6), dim=-1)
    target = torch.nn.functional.normalize(reference.layer_norm((v - k)[0, :, 0], w, b, 1e-6), dim=-1)
    sim = read @ target.T
    return (sim.diagonal().mean() - (sim.sum() - sim.diagonal().sum()) / (K * K - K)).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ttt_mlp_official_start_reads_the_bias(seed):
    """The layer docstring's claim: from the official W1 ~ N(0, 0.02) the readout after a mini-batch
    is the inner bias's sum of gradients, alike for every key (measured 0.008-0.017 over seeds 0-4);
    from w1_std = 1 / sqrt(d) it tells the keys apart (0.38-0.67)."""
    assert abs(_readout_selectivity(0.02, seed)) < 0.05
    assert _readout_selectivity(16**-0.5, seed) > 0.3


def test_ttt_mlp_w1_std():
    torch.manual_seed(0)
    for std in (0.02, 0.25):
        W1 = TTTMLP(64, n_heads=4, w1_std=std).W0[0]  # (4, 16, 64): 4,096 draws
        assert abs(W1.std().item() / std - 1) < 0.05
    with pytest.raises(ConfigError, match="model.layer.w1_std=0"):
        TTTMLP(64, w1_std=0)


# --- Titans ----------------------------------------------------------------------------------------


def titans_inputs(B, T, H, D, dtype=torch.float64, seed=0):
    """q, k, v, theta in (0, 0.5), log(1 - alpha) for alpha in (0, 0.5), log(eta) for eta in (0.05, 1),
    w, b, then the state M, S, M0."""
    g = gen(seed)
    r = lambda *s, scale=1.0: scale * torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u = lambda: torch.rand(B, T, H, generator=g, dtype=torch.float64)  # noqa: E731
    x = [r(B, T, H, D), r(B, T, H, D), r(B, T, H, D), 0.5 * u(), torch.log1p(-0.5 * u()), torch.log(0.05 + 0.95 * u()),
         1 + r(H, D, scale=0.3), r(H, D, scale=0.3), r(B, H, D, D, scale=0.3), r(B, H, D, D, scale=0.1),
         r(B, H, D, D, scale=0.3)]
    return [t.to(dtype) for t in x]


def titans_call(fn, offset, K):
    def run(q, k, v, theta, ld, lm, w, b, M, S, M0):
        z, state, _ = fn(q, k, v, theta, ld, lm, w, b, (M, S, M0), offset, K)
        return (z, *state)
    return run


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_titans_chunked_matches_reference(shape):
    B, T, H, D, K, offset = shape
    fast, ref = titans_call(titans_chunked.titans, offset, K), titans_call(titans_reference.titans, offset, K)
    compare(fast, ref, titans_inputs(B, T, H, D), F64)
    compare(fast, ref, titans_inputs(B, T, H, D, dtype=torch.float32), F32)


@pytest.mark.parametrize("shape", C_SHAPES, ids=str)
def test_titans_c_loop_matches_reference(shape):
    """The C loop, from a chunk's start (M0 apart from M, as a state may have it), and the gates'
    gradients through the coefficients computed in torch."""
    B, T, H, D, K = shape
    for dtype, tol in ((torch.float64, F64), (torch.float32, F32)):
        compare(titans_call(titans_cpu.titans, 0, K), titans_call(titans_reference.titans, 0, K),
                titans_inputs(B, T, H, D, dtype), tol)


def test_titans_c_loops_state_continues_on_the_torch_path():
    q, k, v, theta, ld, lm, w, b, *state = titans_inputs(2, 23, 2, 4)
    z, S, n = titans_reference.titans(q, k, v, theta, ld, lm, w, b, tuple(state), 0, 4)
    z1, S1, n1 = titans_cpu.titans(*(x[:, :10] for x in (q, k, v, theta, ld, lm)), w, b, tuple(state), 0, 4)
    z2, S2, n2 = titans_chunked.titans(*(x[:, 10:] for x in (q, k, v, theta, ld, lm)), w, b, S1, n1, 4)
    assert (n1, n2, n) == (2, 3, 3)
    torch.testing.assert_close(torch.cat((z1, z2), 1), z, **F64)
    for a, c in zip(S2, S):
        torch.testing.assert_close(a, c, **F64)


def test_titans_dispatch_runs_the_c_loop_from_a_chunks_start():
    q, k, v, theta, ld, lm, w, b, *state = titans_inputs(1, 6, 2, 4, dtype=torch.float32)
    args = (q, k, v, theta, ld, lm, w, b, tuple(state))
    cpu_device = torch.device("cpu")
    assert TITANS.resolve("auto", cpu_device, (*args, 0, 4, 1e-6)) == "cpu"
    assert TITANS.resolve("auto", cpu_device, (*args, 1, 4, 1e-6)) == "torch"
    assert torch.equal(titans(*args, 0, 4)[0], titans_cpu.titans(*args, 0, 4)[0])
    with pytest.raises(ConfigError, match="offset 1"):
        titans(*args, 1, 4, backend="cpu")


def test_titans_refuses_shapes():
    q, k, v, th, ld, lm, w, b, *S = titans_inputs(1, 3, 2, 4)
    with pytest.raises(ValueError, match="gates"):
        titans(q, k, v, th[..., :1], ld, lm, w, b, S)


# --- fla's naive loops -----------------------------------------------------------------------------


FLOAT64 = ("torch.float32", "torch.float64")


@pytest.mark.parametrize("T", [1, 16, 37])
def test_ttt_linear_matches_fla_naive(T):
    """fla's chunk_ttt_linear_ref (eta one per token, no lr: lr = 1; its output z + LN(z)), from an
    initial state and bias, at T = 1, one mini-batch, and a padded partial one; fla's final state
    only where T is a multiple of the mini-batch (its padding steps the bias on the padded rows)."""
    fla = fla_naive("ttt/naive.py", [FLOAT64])
    q, k, v, eta, _, w, b, W1, b1 = ttt_inputs(2, T, 3, 6)[:9]
    eta = 0.3 * eta
    o, W1_fla, b1_fla = fla.chunk_ttt_linear_ref(q.clone(), k.clone(), v.clone(), w, b, eta[..., None].clone(),
                                                scale=1.0, mini_batch_size=16, initial_state=W1.clone(),
                                                initial_state_bias=b1[:, :, None].clone(), output_final_state=True)
    z, ((W1_end, b1_end), _), n = reference.ttt_linear(q, k, v, eta, torch.ones_like(eta), w, b,
                                                       ((W1, b1), (0 * W1, 0 * b1)), 0, 16)
    torch.testing.assert_close(z + reference.layer_norm(z, w, b, 1e-6), o, **F64)
    if n == 0:
        torch.testing.assert_close(W1_end, W1_fla, **F64)
        torch.testing.assert_close(b1_end, b1_fla[:, :, 0], **F64)


@pytest.mark.parametrize("T", [1, 16, 37])
def test_titans_matches_fla_naive(T):
    """fla's titans_linear loop (use_chunk=False; theta, alpha, eta one per token; output z + LN(z))
    with the bracket restored (module docstring), from an initial memory; the final memory where T
    is a multiple of the chunk (fla pads with the last gates)."""
    fla = fla_naive("titans/naive.py", [
        FLOAT64, ("from fla.ops.titans.log_impl import combine_params_log\n", ""),
        ("v_new = D * grad - grad.sum(-1, keepdim=True) / (rstd * D)",
         "v_new = (D * grad - grad.sum(-1, keepdim=True)) / (rstd * D)")])
    q, k, v, theta, ld, lm, w, b, M, _, _ = titans_inputs(2, T, 3, 6)
    o, M_fla = fla.chunk_titans_linear_ref(q, k, v, w, b, theta[..., None], -torch.expm1(ld)[..., None],
                                           lm.exp()[..., None], chunk_size=16, initial_state=M.clone(),
                                           output_final_state=True, use_chunk=False)
    z, (M_end, _, _), n = titans_reference.titans(q, k, v, theta, ld, lm, w, b, (M, torch.zeros_like(M), M), 0, 16)
    torch.testing.assert_close(z + reference.layer_norm(z, w, b, 1e-6), o, **F64)
    if n == 0:
        torch.testing.assert_close(M_end, M_fla, **F64)
