"""src/ops/mamba3: the torch path (chunked.py, an SSD scan on a shifted state) and the C loop path
(cpu.py, the same scan on gla's compiled loop) against reference.py
(forward, final state, every input's gradient), state passing, and reference.py against mamba-ssm's
own pure-torch references `mamba3_siso_step_ref` and `mamba3_siso_fwd_ref`
(tests/ops/triton/test_mamba3_siso.py of a mamba checkout, when one is given).

Tolerances. float64: the same sums reordered (1e-10). float32: the chunked path's decays come from
float64 cumulative sums but its products and sums of up to T terms are float32 (~1e-6 relative),
and the gradients go through exp, tanh and cos/sin of the cumulative angles: 1e-4.
"""

import ast
import importlib.util
import math
import os
from pathlib import Path
from typing import Optional, Tuple

import pytest
import torch
import torch.nn.functional as F

from conftest import need_c_loop
from op_backends import compare

from src.ops.mamba3 import DISPATCH, chunked, cpu, mamba3_siso, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 products and sums, see the module docstring
# (B, T, G, H, N, P, S, chunk): T = 1, odd T across chunks with a partial last one, groups, N and P
# not powers of two, S < N / 2 (some pairs unrotated) and S = N / 2 (all rotated)
PATHS = {"torch": chunked.mamba3_siso, "cpu": cpu.mamba3_siso}
SHAPES = [(2, 1, 1, 2, 4, 3, 1, 4), (2, 13, 1, 2, 6, 3, 2, 4), (1, 37, 2, 4, 10, 5, 5, 8), (2, 9, 1, 1, 6, 7, 3, 64)]


def inputs(B, T, G, H, N, P, S, dtype=torch.float64, seed=0):
    """q, k, v, adt, dt, trap, q_bias, k_bias, angles, D, z and a state (phi, h, k~, v): dt in (0, 1),
    A = adt / dt in (-3, 0), angles large enough to turn the pairs more than once."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    dt = torch.rand(B, T, H, generator=g, dtype=torch.float64)
    adt = -3 * dt * torch.rand(B, T, H, generator=g, dtype=torch.float64)
    state = (2 * math.pi * torch.rand(B, H, S, generator=g, dtype=torch.float64), r(B, H, P, N), r(B, H, N), r(B, H, P))
    args = (r(B, T, G, N), r(B, T, G, N), r(B, T, H, P), adt, dt, r(B, T, H), r(H, N), r(H, N), 3 * r(B, T, H, S),
            r(H), r(B, T, H, P))
    return [t.to(dtype) for t in (*args, *state)]


def path(name):
    if name == "cpu":
        need_c_loop("gla")
    return PATHS[name]


def with_state(fn, **kw):
    def run(q, k, v, adt, dt, trap, qb, kb, ang, D, z, phi, h, kl, vl):
        y, S = fn(q, k, v, adt, dt, trap, qb, kb, ang, D, z, (phi, h, kl, vl), True, **kw)
        return (y, *S[1:])  # the angle state is a mod 2 pi: its gradient is that of the sum (checked below)
    return run


def from_zero(fn, **kw):
    return lambda q, k, v, adt, dt, trap, qb, kb, ang, D, z: (lambda y, S: (y, *S))(
        *fn(q, k, v, adt, dt, trap, qb, kb, ang, D, z, None, True, **kw))


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_paths_match_the_loop_from_a_state(name, shape, dtype, tol):
    *dims, chunk = shape
    compare(with_state(path(name), chunk_size=chunk), with_state(reference.mamba3_siso), inputs(*dims, dtype), tol)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_paths_match_the_loop_from_zero_without_D_and_z(name, shape):
    *dims, chunk = shape
    args = inputs(*dims)[:11]
    args[9] = args[10] = None  # no D, no gate
    got = from_zero(path(name), chunk_size=chunk)(*args)
    want = from_zero(reference.mamba3_siso)(*args)
    for a, b in zip(got, want):  # the angle state included: both keep it in [0, 2 pi)
        torch.testing.assert_close(a, b, **F64)
    compare(from_zero(path(name), chunk_size=chunk), from_zero(reference.mamba3_siso), args, F64)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("split", [1, 6, 12])
def test_splitting_a_sequence_passes_the_state_on(backend, split):
    args = inputs(2, 13, 1, 2, 6, 3, 2)
    seq, rest, state = args[:9], args[9:11], tuple(args[11:])
    cut = lambda lo, hi: [t[:, lo:hi] if t.dim() > 2 else t for t in seq] + [rest[0], rest[1][:, lo:hi]]  # noqa: E731
    y, S = mamba3_siso(*args[:11], state, True)
    path(backend)
    y1, S1 = mamba3_siso(*cut(0, split), state, True, chunk_size=4, backend=backend)
    y2, S2 = mamba3_siso(*cut(split, 13), S1, True, chunk_size=4, backend=backend)
    torch.testing.assert_close(torch.cat((y1, y2), dim=1), y, **F64)
    for a, b in zip(S2, S):
        torch.testing.assert_close(a, b, **F64)


def test_dispatch_and_bad_shapes():
    need_c_loop("gla")
    call = (*inputs(1, 5, 1, 2, 4, 3, 2)[:11], None, False, 64)
    assert DISPATCH.resolve("auto", torch.device("cpu"), call) == "cpu"
    with pytest.raises(ConfigError, match="model.layer.backend"):
        DISPATCH.check("triton")
    args = inputs(1, 5, 1, 2, 4, 3, 3)[:11]  # S = 3 > N / 2 = 2
    with pytest.raises(ValueError, match="S <= N / 2"):
        mamba3_siso(*args)


MAMBA_SOURCE = "tests/ops/triton/test_mamba3_siso.py"
MAMBA_HOW = ("git clone https://github.com/state-spaces/mamba and pip install -e it (or set MAMBA_SSM_REPO to the "
             "checkout): its pure-torch references live in its tests, not in the wheel")


def mamba_references():
    """mamba-ssm's `_segsum`, `mamba3_siso_step_ref` and `mamba3_siso_fwd_ref`, taken by path from
    the test file of a mamba checkout (MAMBA_SSM_REPO, else the checkout an editable mamba_ssm is
    installed from) and defined alone: the file's own imports need Triton and CUDA kernels."""
    root = os.environ.get("MAMBA_SSM_REPO")
    if root is None:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"mamba_ssm is not installed ({MAMBA_HOW})")
        root = Path(spec.submodule_search_locations[0]).parent
    path = Path(root) / MAMBA_SOURCE
    if not path.exists():
        pytest.skip(f"no {path} ({MAMBA_HOW})")
    pytest.importorskip("einops", reason="mamba-ssm's references use einops (pip install einops)")
    from einops import rearrange, repeat

    text = path.read_text()
    names = {"_segsum", "mamba3_siso_step_ref", "mamba3_siso_fwd_ref"}
    nodes = [n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name in names]
    space = dict(math=math, torch=torch, F=F, rearrange=rearrange, repeat=repeat, Optional=Optional, Tuple=Tuple)
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), space)
    return space


def mamba_layout(args):
    """Ours -> mamba-ssm's: adt, dt, trap (B, T, H) -> (B, H, T); the state as a tuple."""
    q, k, v, adt, dt, trap, qb, kb, ang, D, z, *state = args
    return (q, k, v, adt.transpose(1, 2), dt.transpose(1, 2), trap.transpose(1, 2), qb, kb, ang, D, z), tuple(state)


@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("given_state", [False, True])
def test_the_loop_is_mambas_step_reference(shape, given_state):
    """From zeros to 1e-10; from a given state to 1e-6: mamba's step_ref casts the given SSM state
    to float32."""
    ref = mamba_references()["mamba3_siso_step_ref"]
    args = inputs(*shape[:-1])
    theirs, state = mamba_layout(args)
    state = state if given_state else None
    tol = dict(rtol=1e-6, atol=1e-6) if given_state else F64  # its float32 copy of the state
    y, S = reference.mamba3_siso(*args[:11], state, True)
    y_m, S_m = ref(*theirs, Input_States=state)
    torch.testing.assert_close(y, y_m, **tol)
    for a, b in zip(S, S_m):
        torch.testing.assert_close(a, b.to(a.dtype), **tol)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_the_torch_path_is_mambas_forward_reference(shape):
    """mamba's fwd_ref computes adt and dt in float32 whatever `dtype` it is given: 1e-5."""
    ref = mamba_references()["mamba3_siso_fwd_ref"]
    *dims, chunk = shape
    args = inputs(*dims)
    theirs, state = mamba_layout(args)
    y, S = chunked.mamba3_siso(*args[:11], state, True, chunk_size=chunk)
    y_m, S_m = ref(*theirs, Initial_States=state, chunk_size=chunk, dtype=torch.float64)
    tol = dict(rtol=1e-5, atol=1e-5)  # its float32 adt and dt, see the docstring
    torch.testing.assert_close(y, y_m.to(y.dtype), **tol)
    for a, b in zip(S, S_m):
        torch.testing.assert_close(a, b.to(a.dtype), **tol)
