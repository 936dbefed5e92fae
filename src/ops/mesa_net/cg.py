"""The conjugate-gradient solve of MesaNet, as fla runs it (fla/ops/mesa_net/chunk_cg_solver_fwd.py,
chunk_cg_solver_bwd.py and naive_mesa_net_CG).

For a symmetric positive definite A, given as a matvec, every row b (..., K) its own system, CG from
x = 0, r = p = b, for a fixed number of steps:
    alpha = r.r / (p.A p + eps),   x += alpha p,   r -= alpha A p,   p = r + (r'.r') / (r.r + eps) p
with fla's eps = 1e-5 in both denominators: a zero right-hand side stays at x = 0, and the step
shrinks once p.A p falls to ~eps, so the solve stops improving near |r| ~ 1e-3 |b| whatever the
number of steps (fla's accuracy; the exact solve is the op's cg_steps=None).
The gradient is fla's as well, implicit, as if x = A^-1 b were exact: with w = CG(A, dL/dx) (A is
symmetric, so the backward solves the same system),
    dL/db = w,      dL/dtheta = -d/dtheta [w . A(theta) x]      (w and x held fixed)
for the tensors theta that A is built from; not the gradient of the unrolled steps.
"""

import torch

EPS = 1e-5  # fla's, in both denominators


def conjugate_gradient(matvec, b, steps):
    """x ~ A^-1 b by `steps` CG steps from 0; matvec(p) = A p on (..., K) rows. No autograd."""
    x, r = torch.zeros_like(b), b.clone()
    p, delta = r.clone(), (r * r).sum(-1, keepdim=True)
    for _ in range(steps):  # x and r updated in place, p anew (addcmul: one pass each, not two)
        Ap = matvec(p)
        alpha = delta / ((p * Ap).sum(-1, keepdim=True) + EPS)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, Ap, value=-1)
        new = (r * r).sum(-1, keepdim=True)
        p, delta = torch.addcmul(r, new / (delta + EPS), p), new
    return x


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matvec, steps, b, *theta):
        x = conjugate_gradient(lambda p: matvec(p, *theta), b, steps)
        ctx.matvec, ctx.steps = matvec, steps
        ctx.save_for_backward(x, *theta)
        return x

    @staticmethod
    def backward(ctx, dx):
        x, *theta = ctx.saved_tensors
        w = conjugate_gradient(lambda p: ctx.matvec(p, *theta), dx, ctx.steps)
        wanted = [i for i in range(len(theta)) if ctx.needs_input_grad[3 + i]]
        grads = [None] * len(theta)
        if wanted:
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(i in wanted) for i, t in enumerate(theta)]
                Ax = ctx.matvec(x, *leaves)
                found = torch.autograd.grad(-(w * Ax).sum(), [leaves[i] for i in wanted], allow_unused=True)
            for i, grad in zip(wanted, found):
                grads[i] = grad
        return None, None, w, *grads


def solve(matvec, b, steps, *theta):
    """x = CG_steps(A, b) with A p = matvec(p, *theta), differentiable in b and theta (the implicit
    gradient of the module docstring). b (..., K); matvec keeps the shape."""
    return _Solve.apply(matvec, steps, b, *theta)
