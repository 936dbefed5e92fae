"""TrainClock: the seconds a run spends training, from Lightning's on_train_start to on_train_end
(its epochs, their validations and checkpoints; not the imports, composition, sanity check or
testing around them). src/training.py records it in results.json as `train_seconds`, which
benchmarks/train_loop.py sets against a sweep's wall time."""

import time

from lightning.pytorch.callbacks import Callback


class TrainClock(Callback):
    def __init__(self):
        self.start, self.seconds = None, None

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start
