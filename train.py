"""Entry point: `python -m train [overrides]`. Composes configs/ with Hydra and trains.

    python -m train wandb=null model=dlr experiment=dss-sequence1d dataset.task=shift

A ConfigError (a bad key, name or value, checked before anything is written) is printed as one
line, `error: ...`, with exit status 2, and the run leaves nothing on disk. A RunError (a run
stopped by SIGTERM / SIGINT, a non-finite loss or a failed write) is printed as one line with its
status (143, 130, 1). An unknown key is reported the same way with or without Hydra's `+`: one
given without it is passed on as `+key` so that src/config.py names it. A config group choice that
does not exist (`model=mambba`, `experiment=counting-count-mod`) is one line too, naming the closest.

A run from `train.ckpt` (`train.eval_only=true`, or resuming into a new directory) takes its config
from the checkpoint, with what the command line changes on top (src/config.py `from_checkpoint`).

In a multirun (`-m`) each job goes through src/utils/sweep.py: a failing job is recorded and the
others run, finished jobs are skipped, and the exit status is 1 if one failed. An unknown key and
a misspelt choice of a swept group are refused before the sweep starts, as in a single run.

Large CPU tensors go on transparent huge pages (torch's THP_MEM_ALLOC_ENABLE, set here before
torch is imported unless already set; `THP_MEM_ALLOC_ENABLE=0` opts out): a fresh tensor then
faults once per 2 MiB instead of once per 4 KiB page. On the 2-core CPU a 50-step Mamba run
(d_model 64, 2 layers, L = 512) takes 73 s instead of 104 s. No effect where the kernel has THP
off, nor on GPU tensors.
"""

import difflib
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before anything imports torch

from src.utils import devices, sweep  # noqa: F401 - devices registers ${local_jobs:}
from src.config import CONFIGS, from_checkpoint, prepare, starts_from_checkpoint
from src.utils.errors import ConfigError, RunError
from src.utils.run_dir import remove_created


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(config):
    from src.training import fit

    if HydraConfig.get().mode == RunMode.MULTIRUN:  # a failing job is recorded and the sweep goes on
        return sweep.job(config, HydraConfig.get(), prepare_run, fit)
    try:
        fit(prepare_run(config), HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        remove_created()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunError as e:
        print(f"error: {e}" if e.status else str(e), file=sys.stderr)
        sys.exit(e.status)
    except Exception:
        remove_created()  # the directories Hydra made, where the run wrote nothing into them
        raise


def prepare_run(config):
    """`prepare(config)`; a run from train.ckpt (eval-only, or resumed into a new directory) takes
    the checkpoint's config, with what the command line changed on top (src/config.py)."""
    if starts_from_checkpoint(config):
        from hydra.core.global_hydra import GlobalHydra

        hydra_config = HydraConfig.get()
        defaults = GlobalHydra.instance().config_loader().load_configuration(
            hydra_config.job.config_name, [], RunMode.RUN)
        config = from_checkpoint(config, defaults, list(hydra_config.overrides.task))
    return prepare(config)


def missing_choice(error):
    """A ConfigError in one line for Hydra's MissingConfigException of a config group choice that
    does not exist (`model=mambba`), naming the closest choices; None for another missing config."""
    if not error.options or not error.missing_cfg_file or "/" not in error.missing_cfg_file:
        return None
    group, name = error.missing_cfg_file.rsplit("/", 1)
    close = difflib.get_close_matches(name, error.options, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"the choices are: {', '.join(error.options)}"
    return ConfigError(f"{group}={name}: no such {group} config; {hint}")


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parent / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plus_unknown_keys(args):
    """`args` with `+` before each override of a key the composed config does not have (Hydra
    would refuse it in several lines); ConfigError for a config group choice that does not exist
    (Hydra's several lines again). Anything else Hydra refuses is left to Hydra."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    args = list(args)
    overrides = [a for a in args if not a.startswith("-")]
    for _ in range(len(overrides) + 1):
        try:
            _compose(a for a in args if not a.startswith("-"))
            return args
        except MissingConfigException as e:
            error = missing_choice(e)
            if error is None:
                return args
            raise error from None
        except ConfigCompositionException as e:
            match = re.match(r"Could not override '([^']+)'", str(e))
            bad = [i for i, a in enumerate(args) if match and a.split("=")[0] == match.group(1)]
            if not bad:
                return args
            args[bad[0]] = "+" + args[bad[0]]
        except Exception:  # noqa: BLE001 - whatever else Hydra refuses, it reports itself
            return args
    return args


def check_sweep(args):
    """plus_unknown_keys for a multirun (`-m`): every choice of a swept config group must exist
    (`model=dlr,mambba`), and an unknown key (swept or not) gets its `+` in every job, or, when
    nothing reads it, a ConfigError naming it before the sweep starts. The jobs are probed with
    the first value of each swept key and every value of each swept group; the rest is checked
    per job (src/utils/sweep.py)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
        values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [None] for o in parsed]
    except Exception:  # noqa: BLE001 - a glob, an interval or a syntax error: Hydra's own
        return args
    groups = {i for i, o in enumerate(parsed) if (CONFIGS / o.key_or_group).is_dir()}
    plussed, first = set(), None
    for j in range(max([len(values[i]) for i in groups] + [1])):
        probe = []
        for i, (o, vs) in enumerate(zip(parsed, values)):  # job j: value j of each swept group
            value = vs[min(j, len(vs) - 1) if i in groups else 0]
            probe.append(o.input_line if value is None else f"{o.get_key_element()}={value}")
        checked = plus_unknown_keys(probe)
        plussed |= {a[1:].split("=")[0] for a, b in zip(checked, probe) if a != b}
        first = first or checked
    if not plussed:
        return args
    try:  # a key nothing reads fails every job alike: refuse it now, in one line
        prepare(_compose(first))
    except ConfigError as e:
        if str(e).startswith("unknown key"):
            raise
    except Exception:  # noqa: BLE001 - anything else is the jobs' to report
        pass
    return [f"+{a}" if not a.startswith("-") and a.split("=")[0] in plussed else a for a in args]


HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--shell-completion", "-sc",
               "--run", "-r", "--experimental-rerun", "--version"}


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not HYDRA_FLAGS & set(argv):
        try:
            multirun = bool({"-m", "--multirun"} & set(argv))
            sys.argv[1:] = check_sweep(argv) if multirun else plus_unknown_keys(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    try:
        main()
        sys.exit(1 if sweep.FAILED else 0)
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT) before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
