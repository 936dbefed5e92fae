"""Entry point: `python -m train [overrides]`. Composes configs/ with Hydra and trains.

    python -m train wandb=null model=dlr experiment=dss-sequence1d dataset.task=shift

A ConfigError (a bad key, name or value, checked before anything is written) is printed as one
line, `error: ...`, with exit status 2, and the run leaves nothing on disk. A RunError (a run
stopped by SIGTERM / SIGINT, a non-finite loss or a failed write) is printed as one line with its
status (143, 130, 1). An unknown key is reported the same way with or without Hydra's `+`: one
given without it is passed on as `+key` so that src/config.py names it.

In a multirun (`-m`) each job goes through src/utils/sweep.py: a failing job is recorded and the
others run, finished jobs are skipped, and the exit status is 1 if one failed.

Large CPU tensors go on transparent huge pages (torch's THP_MEM_ALLOC_ENABLE, set here before
torch is imported unless already set; `THP_MEM_ALLOC_ENABLE=0` opts out): a fresh tensor then
faults once per 2 MiB instead of once per 4 KiB page. On the 2-core CPU a 50-step Mamba run
(d_model 64, 2 layers, L = 512) takes 73 s instead of 104 s. No effect where the kernel has THP
off, nor on GPU tensors.
"""

import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before anything imports torch

from src.utils import devices, sweep  # noqa: F401 - devices registers ${local_jobs:}
from src.config import prepare
from src.utils.errors import ConfigError, RunError
from src.utils.run_dir import remove_created


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(config):
    from src.training import fit

    if HydraConfig.get().mode == RunMode.MULTIRUN:  # a failing job is recorded and the sweep goes on
        return sweep.job(config, HydraConfig.get(), prepare, fit)
    try:
        fit(prepare(config), HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        remove_created()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunError as e:
        print(f"error: {e}" if e.status else str(e), file=sys.stderr)
        sys.exit(e.status)


def plus_unknown_keys(args):
    """`args` with `+` before each override of a key the composed config does not have (Hydra
    would refuse it in several lines). Multirun sweeps and anything else Hydra refuses are left
    to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    args = list(args)
    overrides = [a for a in args if not a.startswith("-")]
    for _ in range(len(overrides)):
        try:
            with initialize_config_dir(str(Path(__file__).resolve().parent / "configs"), version_base="1.3"):
                compose("config", overrides=[a for a in args if not a.startswith("-")])
            return args
        except ConfigCompositionException as e:
            match = re.match(r"Could not override '([^']+)'", str(e))
            bad = [i for i, a in enumerate(args) if match and a.split("=")[0] == match.group(1)]
            if not bad:
                return args
            args[bad[0]] = "+" + args[bad[0]]
        except Exception:  # noqa: BLE001 - whatever else Hydra refuses, it reports itself
            return args
    return args


if __name__ == "__main__":
    if not {"-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info", "-i"} & set(sys.argv[1:]):
        sys.argv[1:] = plus_unknown_keys(sys.argv[1:])
    try:
        main()
        sys.exit(1 if sweep.FAILED else 0)
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT) before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
