"""Gradient accumulation computes each long-convolution kernel once per optimizer step
(src/models/sequence/kernel_cache.py), with the gradients of the plain computation."""

import contextlib

import pytest
import torch
from conftest import CPU_OVERRIDES, compose_config

from src.models.sequence.kernel_cache import accumulation_window
from src.models.sequence.layers.conv import LongConv
from src.models.sequence.layers.dlr import DLR, DSS


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("cls, kwargs", [(DLR, {}), (DSS, dict(bidirectional=True))])
def test_one_kernel_per_window_same_gradients(cls, kwargs):
    torch.manual_seed(0)
    layer = cls(4, d_state=6, **kwargs).double()
    xs = [torch.randn(2, 13, 4, dtype=torch.float64) for _ in range(3)]
    calls = count_calls(layer.kernel)

    for x in xs:  # plain: one kernel and one backward through it per micro-batch
        (layer(x)[0] ** 2).mean().backward()
    plain = {name: p.grad.clone() for name, p in layer.named_parameters()}
    assert len(calls) == 3
    layer.zero_grad()

    calls.clear()
    for i, x in enumerate(xs):
        with accumulation_window(step=0, last=i == len(xs) - 1):
            loss = (layer(x)[0] ** 2).mean()
        loss.backward()
    assert len(calls) == 1
    for name, p in layer.named_parameters():
        # float64; the kernel's gradient is summed before the kernel's backward instead of after
        torch.testing.assert_close(p.grad, plain[name], rtol=1e-12, atol=1e-14, msg=name)
    assert layer.kernel_cache.entry is None  # released at the last micro-batch


def test_a_new_step_recomputes_and_eval_never_caches():
    layer = DLR(4, d_state=6)
    calls = count_calls(layer.kernel)
    x = torch.randn(1, 5, 4)
    for step in range(2):
        with accumulation_window(step=step, last=False):
            layer(x)
    assert len(calls) == 2
    with torch.no_grad(), accumulation_window(step=1, last=False):
        layer(x)
    assert len(calls) == 3
    with accumulation_window(step=1, last=False), pytest.raises(RuntimeError, match="lengths 5 and 7"):
        layer(torch.randn(1, 7, 4))


def test_training_with_accumulation(tmp_path, monkeypatch):
    """accumulate_grad_batches=2 over 4 micro-batches: 2 kernels instead of 4, the same gradients."""
    from lightning import Callback, Trainer
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from src import module as module_file
    from src.dataloaders.synthetic import sample

    config = compose_config(["wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=shift",
                             *CPU_OVERRIDES, "model.d_model=8", "dataset.L=32", "model.layer.d_state=8"])
    d = {k: v for k, v in dict(config.dataset).items() if k not in ("_name_", "eval_sets")}
    x, y = sample(d.pop("task"), 16, torch.Generator().manual_seed(0), **d)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]

    class Record(Callback):
        def __init__(self):
            self.grads, self.kernels = [], 0

        def on_train_start(self, trainer, module):
            for m in module.modules():
                if isinstance(m, LongConv):
                    m.kernel.register_forward_hook(lambda *a: setattr(self, "kernels", self.kernels + 1))

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})

    def run():
        torch.manual_seed(0)
        module = module_file.SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
        record = Record()
        trainer = Trainer(
            accelerator="cpu", max_epochs=1, accumulate_grad_batches=2, logger=False, callbacks=[record],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, default_root_dir=tmp_path,
        )
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
        return record

    cached = run()
    monkeypatch.setattr(module_file, "accumulation_window", lambda step, last: contextlib.nullcontext())
    plain = run()
    assert (cached.kernels, plain.kernels) == (2, 4)
    assert len(cached.grads) == len(plain.grads) == 2
    for got, want in zip(cached.grads, plain.grads):
        assert got.keys() == want.keys()
        for name in want:
            # float32; the second step starts from parameters updated with these gradients
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
