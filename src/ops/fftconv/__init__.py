"""Long convolutions y = k * u by FFT, causal or bidirectional (src/ops/fftconv).

`fftconv(u, k, bidirectional=False)`: u (B, H, L) real, k (C, H, Lk) real (or (2C, H, Lk):
causal then anticausal kernels when bidirectional) -> y (B, C, H, L), differentiable in both.
fft.py is the fast path (FFT size a 2^a 3^b 5^c >= L + Lk, blocked over features, custom
backward that saves only u and the kernel); reference.py is the direct sum it is tested against.
"""

from src.ops.fftconv.fft import fftconv

__all__ = ["fftconv"]
