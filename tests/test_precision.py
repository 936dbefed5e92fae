"""Half-precision calls (trainer.precision=bf16-mixed, bf16-true): src/ops/precision.py's
float32_inside, the ops that use it, the rotary angles, and the C loops' dtype guard. The layers
under autocast: test_layer_contract.py."""

import pytest
import torch
import torch.nn.functional as F

from src.models.sequence.positions import rotary
from src.ops import _cpu
from src.ops.precision import float32_inside


def test_float32_inside_widens_half_arguments_and_returns_their_promoted_dtype():
    seen = []

    @float32_inside
    def fn(a, pair, scale=None):
        seen.append((a.dtype, pair[0].dtype, pair[1], scale.dtype, torch.is_autocast_enabled("cpu")))
        return a * scale, (pair[0] + 1, 3)

    a, b, s = torch.ones(2, dtype=torch.bfloat16), torch.ones(2), torch.ones(2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (z, n) = fn(a, (b, "x"), scale=s)
    assert seen[-1] == (torch.float32, torch.float32, "x", torch.float32, False)
    assert (y.dtype, z.dtype, n) == (torch.float32, torch.float32, 3)  # bfloat16 with float32: float32
    y, (z, _) = fn(a, (b.bfloat16(), None), scale=s)
    assert (y.dtype, z.dtype) == (torch.bfloat16, torch.bfloat16)  # a bfloat16 model gets bfloat16 back
    y, (z, _) = fn(a.double(), (b, None), scale=s.double())
    assert seen[-1][:2] == (torch.float64, torch.float32) and (y.dtype, z.dtype) == (torch.float64, torch.float32)


def test_rotary_angles_in_bfloat16_stay_exact_at_long_positions():
    """bfloat16 holds integers exactly only to 256, and p w_m only to p 2^-8 radians: the angles
    were computed in x's dtype, 7.1 off at L 4096. Now only the output's rounding is left (|x| up to ~5:
    an ulp of 2^-5 and below)."""
    x = torch.randn(1, 2, 4096, 16, generator=torch.Generator().manual_seed(0)).bfloat16()
    positions = torch.arange(4096)
    got, want = rotary(x, positions), rotary(x.double(), positions)
    assert got.dtype == torch.bfloat16
    assert (got.double() - want).abs().max() < 0.05


def test_forgetting_attention_keeps_its_prefix_sums_in_float32_for_bfloat16_inputs():
    """G_i - G_j in bfloat16 is off by up to 2^-8 |G|, |G| ~ 130 here at T 1024 (a relative error of 0.15
    before); against float64 on the same bfloat16 inputs only the output's rounding is left."""
    from src.ops.forgetting_attn import forgetting_attn, reference

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1024, 2, 16, generator=g).bfloat16() for _ in range(3))
    gate = F.logsigmoid(torch.randn(1, 1024, 2, generator=g) + 2).bfloat16()
    o = forgetting_attn(q, k, v, gate, backend="torch")
    want = reference.forgetting_attn(*(x.double() for x in (q, k, v, gate)))
    assert o.dtype == torch.bfloat16
    assert (o.double() - want).norm() / want.norm() < 0.01


@pytest.mark.parametrize("op", ["ttt_linear", "ttt_mlp"])
def test_ttt_takes_bfloat16_calls_in_its_c_loop_in_float32(op):
    """The C loops take half-precision calls widened (they were refused, and the torch path ran
    the inner model's steps in bfloat16); the result equals the float32 call on the same inputs."""
    from src.ops import ttt

    g = torch.Generator().manual_seed(0)
    q, k, v = (F.normalize(torch.randn(1, 20, 2, 8, generator=g), dim=-1).bfloat16() for _ in range(3))
    eta, lr = (torch.rand(1, 20, 2, generator=g) for _ in range(2))
    w, b = 1 + 0.1 * torch.randn(2, 8, generator=g), 0.1 * torch.randn(2, 8, generator=g)
    shapes = [(8, 8), (8,)] if op == "ttt_linear" else [(8, 12), (12,), (12, 8), (8,)]
    W = tuple(0.3 * torch.randn(1, 2, *s, generator=g) for s in shapes)
    state = (W, tuple(map(torch.zeros_like, W)))
    fn = getattr(ttt, op)
    assert ttt.cpu.unsupported(q, k, v, eta, lr, w, b, state) is None
    z, (W1, _), _ = fn(q, k, v, eta, lr, w, b, state, 0, 4, backend="cpu")
    want, (W2, _), _ = fn(q.float(), k.float(), v.float(), eta, lr, w, b, state, 0, 4, backend="cpu")
    assert z.dtype == W1[0].dtype == torch.float32  # bfloat16 with float32 gates
    torch.testing.assert_close(z, want, rtol=0, atol=0)
    torch.testing.assert_close(W1, W2, rtol=0, atol=0)


def test_titans_takes_bfloat16_calls_in_its_c_loop_in_float32():
    """As TTT's; its gates' chunk coefficients are computed outside autocast (they were bfloat16
    products there, and the loop read them as float32: the heap was corrupted)."""
    from src.ops import titans

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 21, 2, 8, generator=g).bfloat16() for _ in range(3))
    theta, alpha, eta = (0.5 * torch.rand(1, 21, 2, generator=g) for _ in range(3))
    w, b = (torch.randn(2, 8, generator=g) for _ in range(2))
    state = tuple(0.3 * torch.randn(1, 2, 8, 8, generator=g) for _ in range(3))
    gates = (theta, torch.log1p(-alpha), torch.log(0.5 + eta))
    assert titans.cpu.unsupported(q, k, v, *gates, w, b, state) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, M, _ = titans.titans(q, k, v, *gates, w, b, state, 0, 4, backend="cpu")
    want, M2, _ = titans.titans(q.float(), k.float(), v.float(), *gates, w, b, state, 0, 4, backend="cpu")
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, want, rtol=0, atol=0)
    torch.testing.assert_close(M, M2, rtol=0, atol=0)


def test_c_loop_pointers_refuse_mixed_float_dtypes():
    """A bfloat16 tensor among float32 ones would have a loop read and write past its buffer (Titans'
    gate coefficients under autocast corrupted the heap)."""
    with pytest.raises(TypeError, match=r"dtypes \['torch.bfloat16', 'torch.float32'\]: they must share one"):
        _cpu.pointers(torch.ones(2), None, torch.ones(2, dtype=torch.bfloat16))
    assert len(_cpu.pointers(torch.ones(2), torch.zeros(2, dtype=torch.long), None)) == 3


@pytest.mark.parametrize("model, precision", [("dlr", "bf16-true"), ("s4", "16-true"), ("lru", "bf16-true")])
def test_half_precision_weights_are_refused_at_start_where_a_layer_cannot_hold_them(model, precision, tmp_path):
    """One line naming the layers and why (why_no_half_weights), before anything is written."""
    from omegaconf import OmegaConf

    from conftest import compose_config
    from src.module import SequenceLightningModule
    from src.utils.errors import ConfigError

    config = compose_config(["wandb=null", f"model={model}", "model.d_model=16", f"trainer.precision={precision}"])
    with pytest.raises(ConfigError, match=rf"trainer.precision={precision} holds the weights in half precision, "
                                          r"which .*\(its .* complex.*\) cannot run with; "
                                          r"use trainer.precision=bf16-mixed"):
        SequenceLightningModule(OmegaConf.to_container(config, resolve=True))


@pytest.mark.parametrize("overrides", [["model=h3", "trainer.precision=bf16-mixed"],
                                       ["model=mamba", "trainer.precision=bf16-true"]])
def test_two_steps_in_half_precision(overrides, tmp_path):
    """A whole run: H3's FFT convolutions under autocast (they failed), Mamba with bfloat16 weights."""
    from conftest import TWO_STEPS, train_in_process

    metrics = train_in_process([*TWO_STEPS, *overrides], tmp_path / "run")
    assert metrics and all(v == v for v in metrics.values())
