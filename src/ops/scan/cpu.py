"""Scans as compiled C loops for CPU tensors, backend `cpu`.

    linear_scan      h_t = a_t * h_{t-1} + b_t over the last dim, real or complex, float32 or
                     float64, forward and backward (linear_scan.c)
    selective_scan   S6 (mamba-ssm's selective_scan_fn), real, float32 or float64, forward
                     and backward (selective_scan.c)

The blocked torch path (chunked.py) avoids a Python step per time step, but it works time-major
and so pays two transposing copies and their fresh pages (~70% of its time at (2048, 4096)).
The linear scan's C loop reads a and b once in the layout they come in (time-last, or
time-major as layers' transposed (B, L, D) activations are) and writes h once in it: a
memory-speed pass. The rows are split over torch's threads (ctypes calls release the GIL).

The selective scan's forward keeps the (N,) state of a channel in L1 and never writes
the (batch, D, N, L) trajectory (the torch path stores it for its backward); the backward
recomputes one channel's states into a cache-sized scratch. Both cost the B D N L exponentials,
which they vectorise.

Each C source is compiled on first use with the system compiler (`$CC`, default `cc`) into
`$SCAN_CPU_CACHE` (default ~/.cache/sequence-layers/scan), keyed by the source, the flags, the
compiler and the CPU, and written atomically (ranks may compile at once). Without a compiler
the dispatcher finds the backend unusable, says why once, and `auto` takes the torch path.
"""

import concurrent.futures
import ctypes
import functools
import hashlib
import os
import pathlib
import subprocess
import tempfile

import torch

# -fcx-limited-range: complex products inline (no NaN/inf recovery calls); -fopenmp-simd: the
# `omp simd` loops (no OpenMP runtime); -fno-trapping-math: lets the branch-free exp vectorise
FLAGS = ["-O3", "-march=native", "-fcx-limited-range", "-fopenmp-simd", "-fno-trapping-math", "-std=gnu11",
         "-shared", "-fPIC"]
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.complex64: "complex64",
          torch.complex128: "complex128"}
PARALLEL_FROM = 1 << 16  # elements; below this one thread does the whole scan


def _cpu_model():
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith(("flags", "Features"))), "")


@functools.lru_cache(maxsize=None)
def library(name, source_dir=None):
    """The compiled `name`.c (in `source_dir`, default beside this file), loaded; compiled first if this
    source, compiler and CPU have no library in the cache yet. Raises RuntimeError with the
    compiler's message."""
    source = pathlib.Path(source_dir or pathlib.Path(__file__).parent) / f"{name}.c"
    cc = os.environ.get("CC", "cc")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"no C compiler ({cc}: {error})") from None
    headers = [h.read_text() for h in sorted(pathlib.Path(__file__).parent.glob("*.h"))]  # what the sources include
    key = hashlib.sha256("\0".join([source.read_text(), *headers, *FLAGS, version, _cpu_model()]).encode()).hexdigest()[:16]
    folder = pathlib.Path(os.environ.get("SCAN_CPU_CACHE", pathlib.Path.home() / ".cache/sequence-layers/scan"))
    path = folder / f"{name}-{key}.so"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            partial = pathlib.Path(tmp) / path.name
            done = subprocess.run([cc, *FLAGS, str(source), "-o", str(partial)], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{cc} could not compile {source.name}: {done.stderr.strip()[:500]}")
            partial.replace(path)
    return ctypes.CDLL(str(path))


@functools.lru_cache(maxsize=None)
def _pool(threads):
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="scan")


def _dtype(*tensors):
    """The promoted dtype of the tensors given (None skipped)."""
    return functools.reduce(torch.promote_types, [x.dtype for x in tensors if x is not None])


def _ranges(total, multiple, work):
    """[0, total) split into one (start, stop) per torch thread, cut at multiples of `multiple`;
    a single range below PARALLEL_FROM elements of `work`."""
    threads = min(torch.get_num_threads(), -(-total // multiple)) if work >= PARALLEL_FROM else 1
    bounds = [min(total, -(-total * i // threads // multiple) * multiple) for i in range(threads)] + [total]
    return list(zip(bounds, bounds[1:]))


def _parallel(call, ranges):
    """call(i, start, stop) for each range, in torch's threads (ctypes calls release the GIL)."""
    if len(ranges) == 1:
        return call(0, *ranges[0])
    for done in [_pool(len(ranges)).submit(call, i, *r) for i, r in enumerate(ranges)]:
        done.result()


def _pointers(*tensors):
    """Raw data pointers for the C loops. The caller must hold every tensor until the call ends
    (a temporary, e.g. `x.contiguous()` of a view, would be freed under the loop)."""
    return [None if x is None else ctypes.c_void_p(x.data_ptr()) for x in tensors]


def _int64(*values):
    return [ctypes.c_int64(v) for v in values]


def _selective_inputs(u, delta, A, B, C, B_layout, C_layout):
    """selective_scan.c's arguments after the sizes: u, delta, A, then B and C each with its
    strides and channels per group."""
    u_, delta_, A_, B_, C_ = _pointers(u, delta, A, B, C)
    return [u_, delta_, A_, B_, *_int64(*B_layout), C_, *_int64(*C_layout)]


def _run(fn, batch, R, L, time_major, tensors, reverse):
    """fn(batch, R, L, r0, r1, time_major, *pointers, reverse) with the rows split over threads
    at multiples of the C loop's row group. tensors: contiguous, or None (NULL)."""
    if not time_major:  # rows of contiguous steps, batch after batch: one batch of batch * R rows
        batch, R = 1, batch * R
    pointers = _pointers(*tensors)

    def call(i, r0, r1):
        fn(*_int64(batch, R, L, r0, r1), ctypes.c_int(time_major), *pointers, ctypes.c_int(reverse))

    _parallel(call, _ranges(R, 64 if time_major else 2, batch * R * L))


def _in_layout(x, time_major):
    """x (batch, R, L) -> the same values, contiguous in the layout asked for (a copy only if needed)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2) if time_major else x.contiguous()


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse, time_major):  # (batch, R, L) both in the layout, (batch, R) or None
        batch, R, L = b.shape
        h = torch.empty(batch, L, R, dtype=b.dtype).transpose(1, 2) if time_major else torch.empty_like(b)
        _run(getattr(library("linear_scan"), f"scan_{DTYPES[b.dtype]}_forward"), batch, R, L, time_major,
             (a, b, h0, h), reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.time_major = reverse, time_major
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        grad_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None  # empty_like keeps the layout
        grad_b = torch.empty_like(a)
        grad_h0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[2] else None
        _run(getattr(library("linear_scan"), f"scan_{DTYPES[a.dtype]}_backward"), *a.shape, ctx.time_major,
             (a, h, h0, _in_layout(grad_h, ctx.time_major), grad_a, grad_b, grad_h0), ctx.reverse)
        return grad_a, grad_b, grad_h0, None, None


def linear_scan(a, b, h0=None, reverse=False):
    """h_t = a_t * h_{t-1} + b_t over the last dim; a, b broadcast; h0 (...) or None (zeros).
    reverse: h_t = a_t * h_{t+1} + b_t from the end, h0 the state after the end.
    Works in b's layout where b is a (..., R, L) view of a time-major (..., L, R) tensor, as
    layers' (B, L, D) activations are once transposed; h comes back in that layout too."""
    dtype = _dtype(a, b, h0)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    shape = b.shape
    if b.numel() == 0:
        return b.clone()
    R, L = (shape[-2] if len(shape) > 1 else 1), shape[-1]
    batch = b.numel() // (R * L)
    a, b = a.reshape(batch, R, L), b.reshape(batch, R, L)
    time_major = R > 1 and L > 1 and b.transpose(1, 2).is_contiguous()
    if h0 is not None:
        h0 = h0.to(dtype).expand(shape[:-1]).reshape(batch, R).contiguous()
    h = _LinearScan.apply(_in_layout(a, time_major), _in_layout(b, time_major), h0, reverse, time_major)
    return h.reshape(shape)


def _on_cpu(*tensors):
    return None if all(x is None or x.device.type == "cpu" for x in tensors) else "inputs are not on the CPU"


def linear_scan_unsupported(a, b, h0=None, reverse=False):
    dtype = _dtype(a, b, h0)
    if dtype not in DTYPES:
        return _on_cpu(a, b, h0) or f"dtype {dtype} (the C loop takes {', '.join(str(d) for d in DTYPES)})"
    return _on_cpu(a, b, h0)


def _groups(M, D):
    """B or C ((D, N), (batch, N, L) or (batch, G, N, L)) -> (array, its strides (b, g, t), channels
    per group) for selective_scan.c: a contiguous (batch or 1, G, L or 1, N) array, 0 strides where
    it broadcasts."""
    if M.dim() == 2:
        M = M[None, :, None, :]  # (1, D, 1, N): a group per channel
    elif M.dim() == 3:
        M = M.transpose(1, 2)[:, None]  # (batch, 1, L, N)
    else:
        M = M.transpose(2, 3)  # (batch, G, L, N)
    M = M.contiguous()
    return M, *(M.stride(i) if M.shape[i] > 1 else 0 for i in range(3)), D // M.shape[1]


class _SelectiveScan(torch.autograd.Function):
    """u, delta (batch, D, L), A (D, N) contiguous; B, C and their (strides, channels per group)
    as _groups makes them; h0 (batch, D, N) or None -> y (batch, D, L), last state (batch, D, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, B_layout, C_layout):
        (batch, dim, L), N = u.shape, A.shape[1]
        y, last = u.new_empty(batch, dim, L), u.new_empty(batch, dim, N)
        fn = getattr(library("selective_scan"), f"selective_scan_{DTYPES[u.dtype]}_forward")
        args = _selective_inputs(u, delta, A, B, C, B_layout, C_layout) + _pointers(h0, y, last)

        def call(i, d0, d1):
            fn(*_int64(batch, dim, N, L, d0, d1), *args)

        _parallel(call, _ranges(dim, 1, batch * dim * L * N))
        ctx.save_for_backward(u, delta, A, B, C, h0)
        ctx.layouts = B_layout, C_layout
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, h0 = ctx.saved_tensors
        B_layout, C_layout = ctx.layouts
        (batch, dim, L), N = u.shape, A.shape[1]
        ranges = _ranges(dim, 1, batch * dim * L * N)
        grad_u, grad_delta, grad_A = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        grad_B = B.new_zeros(len(ranges), *B.shape)  # one buffer per thread: channels share B and C
        grad_C = C.new_zeros(len(ranges), *C.shape)
        grad_h0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[5] else None
        scratch = u.new_empty(len(ranges), L, N)  # each thread's recomputed states of one channel
        fn = getattr(library("selective_scan"), f"selective_scan_{DTYPES[u.dtype]}_backward")
        grad_y, grad_last = grad_y.contiguous(), grad_last.contiguous()  # held here: the C loop reads them
        args = (_selective_inputs(u, delta, A, B, C, B_layout, C_layout)
                + _pointers(h0, grad_y, grad_last, grad_u, grad_delta, grad_A))

        def call(i, d0, d1):
            fn(*_int64(batch, dim, N, L, d0, d1), *args, *_pointers(grad_B[i], grad_C[i], grad_h0, scratch[i]))

        _parallel(call, ranges)
        return grad_u, grad_delta, grad_A, grad_B.sum(0), grad_C.sum(0), grad_h0, None, None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    """Same arguments and result as reference.selective_scan (mamba-ssm's selective_scan_fn).
    The bias, softplus, D u and z gate are torch ops around the C loop."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dtype = _dtype(u, delta, A, B, C, D, z, initial_state)
    batch, dim, L = u.shape
    N = A.shape[1]
    u, delta, A = (x.to(dtype).contiguous() for x in (u, delta, A))
    (Bm, *B_layout), (Cm, *C_layout) = _groups(B.to(dtype), dim), _groups(C.to(dtype), dim)
    h0 = None if initial_state is None else initial_state.to(dtype).expand(batch, dim, N).contiguous()
    y, last = _SelectiveScan.apply(u, delta, A, Bm, Cm, h0, B_layout, C_layout)
    in_place = not (torch.is_grad_enabled() and y.requires_grad)  # y is ours: spare a fresh array
    if D is not None:
        y = y.addcmul_(u, D[:, None].to(dtype)) if in_place else y + u * D[:, None].to(dtype)
    if z is not None:
        gate = torch.nn.functional.silu(z.to(dtype))
        y = y.mul_(gate) if in_place else y * gate
    return (y, last) if return_last_state else y


def selective_scan_unsupported(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                               return_last_state=False, initial_state=None):
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtype = _dtype(*tensors)
    if dtype not in (torch.float32, torch.float64):
        return _on_cpu(*tensors) or f"dtype {dtype} (the C loop takes torch.float32, torch.float64)"
    return _on_cpu(*tensors)


KERNELS = {"linear_scan": {"cpu": (linear_scan, linear_scan_unsupported)},
           "selective_scan": {"cpu": (selective_scan, selective_scan_unsupported)}}
