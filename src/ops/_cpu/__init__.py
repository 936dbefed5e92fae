"""The runtime of the ops' compiled C loops for CPU tensors (their backend `cpu`): build and load
a C source, split the work over torch's threads, pass tensors to the loops. The headers the
sources share, which they include as "../_cpu/<name>.h": exp_float.h (a branch-free float32
exponential), rank1.h (the rank-1 update-and-read step of gla and delta_rule), vec.h (the 64-byte
vector), dtypes.h (a source compiled once per dtype), blocked.h (products and transposes of small
matrices in L1), ln_l2_grad.h (the inner layer norm's gradient of TTT and Titans, and its
backward) and dual_form.h (the readout of TTT's dual form, and its backward).

Each C source is compiled on first use with the system compiler (`$CC`, default `cc`) into
`$SCAN_CPU_CACHE` (default ~/.cache/sequence-layers/scan), keyed by the source, the headers, the
flags, the compiler and the CPU, and written atomically (ranks may compile at once). Without a
compiler `library` raises RuntimeError: the dispatcher finds the backend unusable, says why once,
and `auto` takes the torch path.
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
DTYPES = {torch.float32: "float32", torch.float64: "float64"}  # the loops' dtypes, as their symbols name them
PARALLEL_FROM = 1 << 16  # elements; below this one thread does the whole loop


def _cpu_model():
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith(("flags", "Features"))), "")


@functools.lru_cache(maxsize=None)
def library(source):
    """The C source `source` (a path to `<name>.c`) compiled and loaded; compiled first if this
    source, these headers, compiler and CPU have no library in the cache yet. Raises RuntimeError
    with the compiler's message."""
    source = pathlib.Path(source)
    cc = os.environ.get("CC", "cc")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(f"no C compiler ({cc}: {error})") from None
    headers = [h.read_text() for h in sorted(pathlib.Path(__file__).parent.glob("*.h"))]  # what the sources include
    key = hashlib.sha256("\0".join([source.read_text(), *headers, *FLAGS, version, _cpu_model()]).encode()).hexdigest()[:16]
    folder = pathlib.Path(os.environ.get("SCAN_CPU_CACHE", pathlib.Path.home() / ".cache/sequence-layers/scan"))
    path = folder / f"{source.stem}-{key}.so"
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
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="cpu-op")


def ranges(total, multiple, work):
    """[0, total) split into one (start, stop) per torch thread, cut at multiples of `multiple`;
    a single range below PARALLEL_FROM elements of `work`."""
    threads = min(torch.get_num_threads(), -(-total // multiple)) if work >= PARALLEL_FROM else 1
    bounds = [min(total, -(-total * i // threads // multiple) * multiple) for i in range(threads)] + [total]
    return list(zip(bounds, bounds[1:]))


def parallel(call, parts):
    """call(i, start, stop) for each (start, stop) of `parts`, in torch's threads (ctypes calls
    release the GIL)."""
    if len(parts) == 1:
        return call(0, *parts[0])
    for done in [_pool(len(parts)).submit(call, i, *r) for i, r in enumerate(parts)]:
        done.result()


def pointers(*tensors):
    """Raw data pointers for the C loops (None: NULL). The caller must hold every tensor until
    the call ends (a temporary, e.g. `x.contiguous()` of a view, would be freed under the loop).
    The floating tensors of one call share a dtype, the loop's: a bfloat16 tensor from autocast
    among float32 ones would have the loop read and write past its buffer, so it raises instead."""
    dtypes = {x.dtype for x in tensors if x is not None and x.is_floating_point()}
    if len(dtypes) > 1:
        raise TypeError(f"a C loop's tensors have dtypes {sorted(map(str, dtypes))}: they must share one")
    return [None if x is None else ctypes.c_void_p(x.data_ptr()) for x in tensors]


def int64(*values):
    return [ctypes.c_int64(v) for v in values]


def arguments(*values):
    """The C loops' arguments in order: a tensor or a C-contiguous numpy array as its data pointer
    (held by the caller until the call ends, as for `pointers`), an int as int64."""
    def one(v):
        if isinstance(v, torch.Tensor):
            return ctypes.c_void_p(v.data_ptr())
        if hasattr(v, "ctypes"):
            if not v.flags["C_CONTIGUOUS"]:
                raise ValueError(f"a C loop's numpy argument must be C-contiguous (shape {v.shape}, "
                                 f"strides {v.strides})")
            return ctypes.c_void_p(v.ctypes.data)
        return ctypes.c_int64(v)
    return [one(v) for v in values]


def refuses_dtype(dtype):
    """Why a C loop cannot take tensors of `dtype` (None if it can): the loops are float32 and
    float64, and take half precisions widened to float32 (src/ops/precision.py's float32_inside
    on their functions)."""
    if torch.promote_types(dtype, torch.float32) in DTYPES:
        return None
    return f"dtype {dtype} (the C loop takes float32, float64, and half precisions widened to float32)"


def on_cpu(*tensors):
    """None if every tensor given (None skipped) is on the CPU, else why not."""
    return None if all(x is None or x.device.type == "cpu" for x in tensors) else "inputs are not on the CPU"
