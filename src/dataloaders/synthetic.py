"""`sample(task, batch_size, generator=None, **params)`: a batch (x, y) of any synthetic task (icl_dfa:
(x, y, {"dfa", "valid_next"}), the automata its metrics need),
outside training (e.g. to mix tasks into other data), with the dataset config keys as params.

    from src.dataloaders import synthetic
    x, y = synthetic.sample("cumsum", 8, torch.Generator().manual_seed(0), L=256)

The batch is the one a dataset of the same parameters draws from the same generator (a dataset's
batch g of split s, epoch e uses the generator seeded by base.batch_seed(seed, s, e, g)).
generator=None draws from torch's global RNG.

TASKS maps each task name to its dataset class; the DLR atomic tasks (sequence1d.py) and MAD's
tasks (mad.py, `dataset=mad`) take `task=` as a parameter of one class (function).
"""

import importlib

from src.dataloaders import mad, sequence1d
from src.utils import registry
from src.utils.errors import check_choice

TASKS = {name: "src.dataloaders.sequence1d.Sequence1D" for name in sequence1d.TASKS}
TASKS |= {name: "src.dataloaders.mad.mad_task" for name in mad.TASKS}
FAMILIES = (sequence1d.Sequence1D, mad.mad_task)  # one dataset for several tasks: given task=
# The token tasks: every dataset registered from these modules (src/utils/registry.py).
TOKEN_MODULES = ("src.dataloaders.recall", "src.dataloaders.counting", "src.dataloaders.formal",
                 "src.dataloaders.state_tracking", "src.dataloaders.chomsky", "src.dataloaders.icl",
                 "src.dataloaders.dfa")
TASKS |= {name: path for name, path in registry.dataset.items() if path.rsplit(".", 1)[0] in TOKEN_MODULES}


def dataset_class(task):
    if task not in TASKS and any(family in task for family in ("masked_select", "solve")):
        return sequence1d.Sequence1D  # docs/tasks.md: a name containing one picks that family
    module, name = TASKS[check_choice("task", task, sorted(TASKS))].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def sample(task, batch_size, generator=None, **params):
    """(x, y) of `batch_size` samples of `task` with dataset parameters `params`."""
    cls = dataset_class(task)
    dataset = cls(task=task, **params) if cls in FAMILIES else cls(**params)
    return dataset.generate(batch_size, generator)
