"""TTT-Linear and TTT-MLP in the mini-batch dual form (Sun et al. 2024, Sec. 2.5): one step of
matrix products a mini-batch, the same computation as reference.py's token loop.

Within a mini-batch (rows t, s of its m tokens; W0, c0 a layer's weight and bias at its start,
G, G_c the gradient sums of the tokens before the segment, zero from a mini-batch's start), every
gradient is at W0, so for TTT-Linear with g_s = d l / d Z(k_s; W0) (one layer-norm backward for
the whole segment) and A_ts = lr_s (q_t . k_s + 1) for s <= t (else 0; the 1 is the bias's input):

    z_t = q_t W0 + c0 - eta_t (q_t G + G_c + sum_s A_ts g_s)
    G <- G + k^T (lr g),  G_c <- G_c + sum_s lr_s g_s;   at the mini-batch's end W0 <- W0 - eta_last G (c0 alike)

TTT-MLP applies the same to each layer: the first layer's on (q, k; g1), then gelu, then the
second's on (gelu(Z1 of q), gelu(Z1 of k); g2), with g1 = (g2 W2^T) gelu'(Z1 of k).

The sequence is cut into the rest of the current mini-batch (offset tokens already in it, its
sums G in the state), whole mini-batches, and a partial last one (see reference.py). A whole
mini-batch needs no sums: its end weights are W0 - k^T (eta_last lr g). Batch and heads are one
dimension (B H) here, so that every product is one bmm, and the subtractions ride in baddbmm.
"""

import math

import torch

from src.ops.precision import float32_inside


def _affine(x, layer):
    """x W + c: x (BH, m, n), layer (W (BH, n, n'), c (BH, 1, n'))."""
    return torch.baddbmm(layer[1], x, layer[0])


class _Gelu(torch.autograd.Function):
    """gelu with the tanh approximation (and, with `derivative`, its derivative as a second output)
    from one sigmoid: with u = c (x + a x^3) (c = 2 sqrt(2 / pi), a = 0.044715) and s = sigmoid(u),

        gelu = 0.5 x (1 + tanh(u / 2)) = x s,   gelu' = s + x s' u',   gelu'' = s' (u' (2 + x (1 - 2 s) u') + x u'')

    where s' = s (1 - s), u' = c (1 + 3 a x^2), u'' = 6 c a x. On CPU torch's tanh takes ~6x its
    sigmoid's time: F.gelu(approximate="tanh") and its gelu_backward took 56 and 64 us a call on
    32k floats (one core), and the op forward + backward was 1.19-1.21x faster with this Function."""

    C, A = 2 * math.sqrt(2 / math.pi), 0.044715

    @staticmethod
    def forward(ctx, x, derivative):
        (y, *d), s = _Gelu.values(x, derivative)
        ctx.save_for_backward(x, s)
        ctx.derivative = derivative
        return (y, *d) if derivative else y

    @staticmethod
    def values(x, derivative):
        """((gelu, gelu') or (gelu,), sigmoid(u)), without autograd."""
        s = (x * x).mul_(_Gelu.A * _Gelu.C).add_(_Gelu.C).mul_(x).sigmoid_()  # sigmoid(u)
        return ((x * s, _Gelu.derivatives(x, s)[0]) if derivative else (x * s,)), s

    @staticmethod
    def derivatives(x, s):
        """gelu' and the factors s', u' of gelu''."""
        du = (x * x).mul_(3 * _Gelu.A * _Gelu.C).add_(_Gelu.C)
        ds = s * (1 - s)
        return (x * ds).mul_(du).add_(s), ds, du

    @staticmethod
    @torch.autograd.function.once_differentiable  # its in-place products are not recorded for a second backward
    def backward(ctx, dy, dd=None):
        x, s = ctx.saved_tensors
        d, ds, du = _Gelu.derivatives(x, s)
        if not ctx.derivative:
            return dy * d, None
        dd2 = ds * (du * (2 + x * (1 - 2 * s) * du) + (6 * _Gelu.A * _Gelu.C) * x * x)  # gelu'', x u'' = 6 c a x^2
        return dy * d + dd * dd2, None


def _gelu(x, derivative):
    """_Gelu's outputs; without autograd (evaluation, or inputs that need no gradient) without the
    Function's bookkeeping (~20 us a call, 5% of TTT-MLP's forward)."""
    if x.requires_grad:
        return _Gelu.apply(x, derivative)
    out = _Gelu.values(x, derivative)[0]
    return out if derivative else out[0]


def ln_grad(z, c, w2, eps):
    """d/dz of 1/2 || LN_{w,b}(z) - target ||^2 over the last dim (w, b the layer norm's weight and
    bias), with c = (b - target) w and w2 = w^2: for z^ = (z - mean z) / std, h = z^ w2 + c (the
    gradient at z^), (h - mean h - z^ mean(h z^)) / std: reference.ln_l2_grad with c folded in (one
    addcmul a segment). In the titans op (which uses it too) 3-6% faster than ln_l2_grad forward and
    forward + backward (T 256 and 1024, 7 interleaved rounds), and its float32 error at T 1024 4.6e-3
    instead of 1.8e-2."""
    centred = z - z.mean(-1, keepdim=True)
    inv = (centred.square().mean(-1, keepdim=True) + eps).rsqrt()  # torch's var: ~10x slower on small tensors
    z_hat = centred * inv
    h = torch.addcmul(c, z_hat, w2)
    return torch.addcmul(h - h.mean(-1, keepdim=True), z_hat, (h * z_hat).mean(-1, keepdim=True), value=-1) * inv


def _linear_grads(layers, k, c, w2, eps):
    """The inner gradients at `layers` of a segment's tokens, one (input, d l / d output) pair a
    layer: k (BH, m, D), c (BH, m, D) the layer norm's (ln_grad)."""
    return [(k, ln_grad(_affine(k, layers[0]), c, w2, eps))]


def _mlp_grads(layers, k, c, w2, eps):
    x2, d = _gelu(_affine(k, layers[0]), True)  # gelu and gelu' of Z1
    g2 = ln_grad(_affine(x2, layers[1]), c, w2, eps)
    return [(k, torch.bmm(g2, layers[1][0].transpose(-1, -2)) * d), (x2, g2)]


def _read(layers, G, q, grads, eta):
    """The outputs at the queries q (BH, m, D) of `layers` after the steps of the gradients `grads`
    (one (input x, lr g) pair a layer: each token's own and those before it) and of the sums G
    (None: zero), all scaled by eta (BH, m)."""
    mask = torch.tril(-eta[..., None].expand(-1, -1, q.shape[1]))  # (BH, m, m): -eta_t for s <= t
    for i, (layer, (x, lg)) in enumerate(zip(layers, grads)):
        if i:
            q = _gelu(z, False)
        A = torch.bmm(q, x.transpose(-1, -2)).add_(1) * mask  # the 1: the bias's input
        z = torch.baddbmm(_affine(q, layer), A, lg)
        if G is not None:
            z = z - eta[..., None] * _affine(q, G[i])
    return z


def _ttt(inner, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps):
    B, T, H, D = q.shape
    q, k, kv = (x.transpose(1, 2).reshape(B * H, T, D) for x in (q, k, k - v))  # (BH, T, D)
    eta, lr = (x.transpose(1, 2).reshape(B * H, T) for x in (eta, lr))
    w, b = (x.expand(B, H, D).reshape(B * H, 1, D) for x in (w, b))  # as the titans op
    bw, w2 = b * w, w.square()  # ln_grad's c = (b - target) w = b w + (k - v) w, a segment at a time

    def pairs(flat):  # (W1 (B, H, n, n'), c1 (B, H, n'), ..) -> [(W1 (BH, n, n'), c1 (BH, 1, n')), ..]
        return [(W.reshape(B * H, *W.shape[2:]), c.reshape(B * H, 1, -1)) for W, c in zip(flat[::2], flat[1::2])]

    layers, G = pairs(state[0]), pairs(state[1]) if offset else None  # the sums are zero at a mini-batch's start
    K, out = mini_batch_size, []
    first = min(K - offset, T)  # the segments: the rest of the current mini-batch, whole ones, a partial last
    sizes = [first] + [K] * ((T - first) // K) + ([(T - first) % K] if (T - first) % K else [])
    # split, not [:, start:end]: the backward of a slice a segment writes a zero tensor of the whole size
    for q_i, k_i, kv_i, eta_i, lr_i in zip(*(x.split(sizes, dim=1) for x in (q, k, kv, eta, lr))):
        grads = [(x, lr_i[..., None] * g) for x, g in inner(layers, k_i, torch.addcmul(bw, kv_i, w), w2, eps)]
        out.append(_read(layers, G, q_i, grads, eta_i))
        offset += q_i.shape[1]
        last = eta_i[:, -1, None, None]  # (BH, 1, 1)
        if offset == K and G is None:  # W - x^T (eta_last lr g), the bias alike with inputs 1
            layers = [(torch.baddbmm(W, x.transpose(-1, -2), lg, alpha=-1), c - lg.sum(1, keepdim=True))
                      for (W, c), (x, lg) in zip(layers, [(x, last * lg) for x, lg in grads])]
        else:
            sums = [(torch.bmm(x.transpose(-1, -2), lg), lg.sum(1, keepdim=True)) for x, lg in grads]
            G = sums if G is None else [(a + c, a_c + c_c) for (a, a_c), (c, c_c) in zip(G, sums)]
            if offset == K:
                layers = [(W - last * GW, c - last * Gc) for (W, c), (GW, Gc) in zip(layers, G)]
        if offset == K:
            G, offset = None, 0

    def flat(pairs):  # the inverse of pairs()
        return tuple(x.reshape(B, H, *x.shape[1:]) if i % 2 == 0 else x.reshape(B, H, -1)
                     for i, x in enumerate(t for pair in pairs for t in pair))

    G = tuple(torch.zeros_like(x) for x in flat(layers)) if G is None else flat(G)
    return torch.cat(out, dim=1).view(B, H, T, D).transpose(1, 2), (flat(layers), G), offset


@float32_inside  # the inner layer norm and gradient steps (in bfloat16, TTT-MLP's output: 5x its inputs' rounding)
def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_linear."""
    return _ttt(_linear_grads, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)


@float32_inside
def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_mlp."""
    return _ttt(_mlp_grads, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
