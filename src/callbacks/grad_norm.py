"""Logs the p-norm of all gradients before each optimizer step as `grad_norm/total`
(the `track_grad_norm` option of Lightning 1.x): ||g||_p = (sum_i ||g_i||_p^p)^(1/p)."""

import torch
from lightning.pytorch import Callback


class GradNorm(Callback):
    def __init__(self, norm_type=2.0):
        self.norm_type = float(norm_type)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([torch.linalg.vector_norm(g, self.norm_type) for g in grads])
        total = torch.linalg.vector_norm(norms, self.norm_type)
        pl_module.log("grad_norm/total", total, on_step=True, on_epoch=False)
