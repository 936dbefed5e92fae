"""One dispatcher for every op in src/ops: `backend: auto|<name>` -> a function that really runs.

Each op declares its backends as {name: loader}, where `loader()` imports what the backend needs
(pykeops, the CUDA extension, ...) only when it is first asked for, and returns the function, or
raises ImportError / RuntimeError saying why it cannot; and a `smoke(fn, device)` that calls the
function on a tiny input on that device. A backend is *usable* on a device when it loads and its
smoke call runs (an extension that imports but fails at run time is not usable). The verdict is
cached per (backend, device type). A backend that can run only some calls (no complex dtypes,
no gradients, no initial state) also declares `unsupported[name](*args, **kwargs)`, which says
why it cannot run this call (None if it can); it is asked on every call.

`auto` takes the first backend of the op's preference list for the device type (fastest first,
from the benchmarks) that is usable and supports the call, and logs its choice once. An explicit
backend that cannot run raises ConfigError with the reason; an unknown name raises ConfigError
with the choices.

Every op folder uses it the same way: its `__init__.py` defines one module-level
`DISPATCH = Dispatcher(...)` (loaders `lazy("src.ops.<op>.<file>.<function>")`, the preference
per device type, a smoke check, the kernels' `unsupported` hooks), and the public function runs
`DISPATCH.function(backend, device, args)(*args)`. Layers check their `backend` key with
`DISPATCH.check(backend)`, or with `DISPATCH.backend_of(backend)` where one key serves several
ops of the layer (a scan and its causal convolution).
"""

import importlib
import logging

import torch

from src.ops.precision import no_autocast
from src.utils.errors import ConfigError, check_choice

log = logging.getLogger(__name__)
LAYER_BACKENDS = ["auto", "torch", "cuda", "triton", "cpu"]  # a key that serves several ops: see backend_of


def fla_refuses(q):
    """Why fla's Triton kernels cannot take inputs like q (None if they can): they run on a CUDA device,
    in float32, float16 or bfloat16. The `unsupported` hooks of the fla-backed ops start with it."""
    if not q.is_cuda:
        return "inputs are not on a CUDA device"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {q.dtype} (fla's kernels take float32, float16, bfloat16)"
    return None


def agrees_with(torch_path, smoke_inputs, tol=1e-3):
    """A `smoke(fn, device)` for a kernel: fn(*args, **kwargs) on `smoke_inputs(device)` -> (args,
    kwargs) runs there and agrees with `torch_path` on the same call within `tol`."""
    def smoke(fn, device):
        args, kwargs = smoke_inputs(device)
        got, want = fn(*args, **kwargs), torch_path(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if not torch.allclose(got.float(), want.float(), rtol=tol, atol=tol):
            raise RuntimeError(f"its smoke call differs from the torch path by {(got - want).abs().max().item():.3g}")
    return smoke


def real_on_cuda(*tensors):
    """None if every tensor given (None skipped) is a real CUDA tensor, else why not: the
    `unsupported` answer of the field's GPU kernels (mamba-ssm, causal-conv1d, accelerated-scan)."""
    for t in tensors:
        if t is not None and not t.is_cuda:
            return "inputs are not on a CUDA device"
        if t is not None and t.is_complex():
            return "complex inputs"
    return None


def lazy(path):
    """A loader for the function at `path` ("package.module.name"), imported when first asked for."""
    module, name = path.rsplit(".", 1)
    return lambda: getattr(importlib.import_module(module), name)


class Dispatcher:
    def __init__(self, op, loaders, preference, smoke, unsupported=None):
        self.op = op
        self.loaders = loaders  # {name: () -> fn}
        self.preference = preference  # {device type: [names, fastest first]}; "default" for others
        self.smoke = smoke  # (fn, device) -> None; raises if fn does not run there
        self.unsupported = unsupported or {}  # {name: (*args, **kwargs) -> None or why not this call}
        self.choices = ["auto", *loaders]
        self._functions = {}  # name -> fn, once loaded
        self._verdicts = {}  # (name, device type) -> None (usable) or the reason it is not
        self._announced = set()

    def check(self, backend):
        """ConfigError unless `backend` is 'auto' or a backend name of this op."""
        return check_choice("model.layer.backend", backend, self.choices)

    def backend_of(self, backend):
        """The backend this op runs when a layer's one `backend` key (one of LAYER_BACKENDS) serves
        several ops: the same name where this op has it; else its kernel of the other GPU family
        (cuda <-> triton: mamba-ssm's SSD is Triton, causal-conv1d is CUDA); else torch (`cpu`
        means the C loops where the op has them)."""
        check_choice("model.layer.backend", backend, LAYER_BACKENDS)
        if backend in self.choices:
            return backend
        other = {"cuda": "triton", "triton": "cuda"}.get(backend)
        return other if other in self.choices else "torch"

    def why_unusable(self, name, device):
        """None if backend `name` loads and runs on `device`, else the reason (a string)."""
        key = (name, device.type)
        if key not in self._verdicts:
            try:
                if name not in self._functions:
                    self._functions[name] = self.loaders[name]()
                # The smoke call runs the backward too, also from a caller under no_grad or under
                # inference_mode (Lightning's validate and test: the first call of an op in an
                # eval-only process). enable_grad alone does not lift inference_mode; its inputs,
                # made inside, are then ordinary tensors that can require grad. It runs outside
                # the caller's autocast (bf16-mixed), whose casts would mix the dtypes of its
                # float32 inputs: the verdict is cached for every later call.
                with torch.inference_mode(False), torch.enable_grad(), no_autocast(device):
                    self.smoke(self._functions[name], device)
                self._verdicts[key] = None
            except Exception as e:  # any failure to import or to run makes the backend unusable here
                self._verdicts[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return self._verdicts[key]

    def reset(self):
        """Forget the verdicts and announcements (after the environment changed: a compiler or a
        package installed or removed)."""
        self._functions.clear()
        self._verdicts.clear()
        self._announced.clear()

    def resolve(self, backend, device, args=(), kwargs=None):
        """The backend name `backend` means on `device` for the call fn(*args, **kwargs)."""
        self.check(backend)

        def why_not(name):
            hook = self.unsupported.get(name)
            return (hook(*args, **(kwargs or {})) if hook else None) or self.why_unusable(name, device)

        if backend == "auto":
            order = self.preference.get(device.type, self.preference["default"])
            reasons = {}
            for name in order:
                reasons[name] = why_not(name)
                if reasons[name] is None:
                    break
            else:
                raise RuntimeError(f"{self.op}: no backend runs on {device.type}: {reasons}")
            skipped = "; ".join(f"{n} not usable ({r})" for n, r in reasons.items() if r)
            self._announce(backend, name, device, skipped)
            return name
        reason = why_not(backend)
        if reason:
            raise ConfigError(f"model.layer.backend={backend!r} does not run on {device.type} here ({reason}); "
                              "use model.layer.backend=auto (the fastest backend that runs there)")
        self._announce(backend, backend, device, "")
        return backend

    def function(self, backend, device, args=(), kwargs=None):
        """The function `backend` resolves to on `device` for the call fn(*args, **kwargs)."""
        return self._functions[self.resolve(backend, device, args, kwargs)]

    def _announce(self, backend, name, device, skipped):
        key = (backend, name, device.type)
        if key not in self._announced:
            self._announced.add(key)
            log.info(f"{self.op}: backend={backend} -> {name} on {device.type}" + (f" ({skipped})" if skipped else ""))
