"""A training set made of segments (the Based paper's MQAR protocol): each segment is a finite set
of one task at its own parameters, and no batch mixes two segments.

    dataset.segments: [{L: 64, num_kv_pairs: 4, num_examples: 100000},
                       {L: 256, num_kv_pairs: 16, num_examples: 20000}, ...]

Segment s is the dataset of the config with the segment's keys over it, `num_examples` training
examples (drawn once, as num_train_examples) and its own seed, mixed from the dataset's seed and s.
An epoch deals each segment's examples in a new order, cut into floor(n_s / batch size) batches
(the rest sit out that epoch), and all these batches in a new order, both from (seed, epoch).
The validation and test sets are the segments' own, one after the other, each batch from one
segment; `dataset.eval_sets` report any (L, num_kv_pairs, ...) separately.
"""

import torch

from src.dataloaders.base import BatchDataset, TrainBatches, ResumableLoader, _workers, batch_seed
from src.utils import registry
from src.utils.errors import ConfigError


def build(cls, config, segments):
    """The Mixture of `segments` (a list of {key: value, num_examples: n}) over dataset config `config`."""
    if not isinstance(segments, list) or not segments:
        raise ConfigError(f"dataset.segments={segments!r} must be a non-empty list of {{key: value, num_examples: n}}")
    parts = []
    for s, segment in enumerate(segments):
        if not isinstance(segment, dict) or "num_examples" not in segment:
            raise ConfigError(f"dataset.segments[{s}]={segment!r} must map dataset keys to values and set num_examples")
        segment = dict(segment)
        n = segment.pop("num_examples")
        registry.check_kwargs(cls, segment, f"dataset.segments[{s}] ({cls.__name__})")
        seed = batch_seed(config.get("seed", 0), "train", 0, s, 3)
        parts.append(cls(**{**config, **segment, "num_train_examples": n, "seed": seed}))
    return Mixture(parts, config.get("seed", 0))


class Mixture(BatchDataset):
    def __init__(self, parts, seed=0):
        self.parts, self.seed = parts, seed
        for attr in ("d_input", "d_output", "n_tokens", "l_output"):
            values = {getattr(p, attr) for p in parts}
            if len(values) > 1:
                raise ConfigError(f"dataset.segments disagree on {attr} ({sorted(values, key=str)}): a model reads them all")
            setattr(self, attr, values.pop())
        self.L_input = max(p.L_input for p in parts)
        self._plans = {}

    def setup(self):
        for part in self.parts:
            part.setup()

    def n_samples(self, split):
        return sum(p.n_samples(split) for p in self.parts)

    def plan(self, epoch, batch_size):
        """The epoch's training batches, in order: [(segment, example ids (batch_size,))]."""
        if (epoch, batch_size) not in self._plans:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, "train", epoch, 0, 4))
            batches = []
            for s, part in enumerate(self.parts):
                order = torch.randperm(part.n_samples("train"), generator=generator)
                batches += [(s, ids) for ids in order.split(batch_size) if len(ids) == batch_size]
            order = torch.randperm(len(batches), generator=generator).tolist()
            self._plans = {(epoch, batch_size): [batches[i] for i in order]}
        return self._plans[(epoch, batch_size)]

    def train_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        n_batches = len(self.plan(0, batch_size)) // world_size
        if n_batches == 0:
            sizes = [p.n_samples("train") for p in self.parts]
            raise ConfigError(f"dataset.segments of {sizes} examples cannot fill one step of loader.batch_size="
                              f"{batch_size} x {world_size} device(s)")
        sampler = TrainBatches(n_batches, batch_size, rank, world_size)
        return ResumableLoader(self, batch_size=None, sampler=sampler, **_workers(num_workers, pin_memory))

    def eval_batches(self, split, batch_size):
        rows, start = [], 0
        for part in self.parts:
            n = part.n_samples(split)
            rows += [range(i, min(i + batch_size, start + n)) for i in range(start, start + n, batch_size)]
            start += n
        return rows

    def batch(self, split, epoch, index, rows):
        if split == "train":
            s, ids = self.plan(epoch, len(rows))[index]
            return tuple(t[ids] for t in self.parts[s].examples)
        for part in self.parts:  # the segment holding these rows; its batch is keyed by its first row
            n = part.n_samples(split)
            if rows.start < n:
                return part.batch(split, 0, rows.start, range(rows.start, rows.stop))
            rows = range(rows.start - n, rows.stop - n)
        raise IndexError(rows)
