"""Long convolution by FFT, blocked over features so that memory stays bounded at long L.

The kernel is laid out in one circular buffer kk (C, H, n), n >= L + Lk: causal lags 0 .. Lk-1
at the start and, for a bidirectional layer, anticausal lags -1 .. -Lk at the end (kk[n-1-j] is
lag -1-j). With n >= L + Lk nothing wraps around, and for t < L
    y[b, c, h, t] = sum_m kk[c, h, m] u[b, h, (t - m) mod n] = irfft(rfft(u, n) rfft(kk))[t].
Backward, with g = grad_y zero-padded to n (circular correlations, no wrap-around either):
    grad_u  = irfft(rfft(g) conj(rfft(kk)))[:L]      summed over c
    grad_kk = irfft(conj(rfft(u)) rfft(g))           summed over b
Every step runs over blocks of features h (the convolution of each feature is independent), so
the complex spectra exist for one block at a time; only u and kk are saved for the backward.
"""

import torch
import torch.nn.functional as F

from src.ops.precision import float32_inside


def fast_length(m):
    """The smallest 2^a 3^b 5^c >= m (sizes pocketfft and cuFFT handle fastest)."""
    best = 1 << (m - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < m:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def features_per_block(B, C, H, n, budget):
    return max(1, min(H, budget // max(1, B * C * (n // 2 + 1))))


class CircularFFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, kk, budget):  # u (B, H, L), kk (C, H, n) -> (B, C, H, L)
        ctx.save_for_backward(u, kk)
        ctx.budget = budget
        (B, H, L), (C, _, n) = u.shape, kk.shape
        y = u.new_empty(B, C, H, L)
        hb = features_per_block(B, C, H, n, budget)
        for h0 in range(0, H, hb):
            h = slice(h0, h0 + hb)
            spectrum = torch.fft.rfft(u[:, h], n=n).unsqueeze(1) * torch.fft.rfft(kk[:, h], n=n)
            y[:, :, h] = torch.fft.irfft(spectrum, n=n)[..., :L]
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # gy (B, C, H, L)
        u, kk = ctx.saved_tensors
        (B, H, L), (C, _, n) = u.shape, kk.shape
        need_u, need_k = ctx.needs_input_grad[:2]
        grad_u = torch.empty_like(u) if need_u else None
        grad_kk = torch.empty_like(kk) if need_k else None
        hb = features_per_block(B, C, H, n, ctx.budget)
        for h0 in range(0, H, hb):
            h = slice(h0, h0 + hb)
            G = torch.fft.rfft(gy[:, :, h], n=n)  # (B, C, hb, n/2+1)
            if need_u:
                grad_u[:, h] = torch.fft.irfft((G * torch.fft.rfft(kk[:, h], n=n).conj()).sum(1), n=n)[..., :L]
            if need_k:
                grad_kk[:, h] = torch.fft.irfft((torch.fft.rfft(u[:, h], n=n).conj().unsqueeze(1) * G).sum(0), n=n)
        return grad_u, grad_kk, None


@float32_inside  # torch.fft has no bfloat16, and float16 only at powers of two on CUDA
def fftconv(u, k, bidirectional=False, budget=1 << 23):
    """y (B, C, H, L) from u (B, H, L) and k (C, H, Lk), or (2C, H, Lk) = (causal, anticausal)
    when bidirectional (see reference.py); `budget`: complex numbers per block of features."""
    L, Lk = u.shape[-1], k.shape[-1]
    n = fast_length(L + Lk)
    if bidirectional:
        causal, anticausal = k.chunk(2, dim=0)
        kk = torch.cat((F.pad(causal, (0, n - 2 * Lk)), anticausal.flip(-1)), dim=-1)
    else:
        kk = F.pad(k, (0, n - Lk))
    return CircularFFTConv.apply(u, kk, budget)
