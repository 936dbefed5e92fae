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

A run composes its config once (`launch`), imports torch and Lightning with the garbage collector
off and freezes what they made, and leaves without tearing the interpreter down (`exit_now`): on
the 2-core CPU a one-step run costs 1.8-2.0 s above a process that only imports torch, 4.4 s
before (benchmarks/train_loop.py, benchmarks/README.md#small-runs). `python -m train --cfg job` and Hydra's other flags go through
hydra.main.

Large CPU tensors go on transparent huge pages (torch's THP_MEM_ALLOC_ENABLE, set here before
torch is imported unless already set; `THP_MEM_ALLOC_ENABLE=0` opts out): a fresh tensor then
faults once per 2 MiB instead of once per 4 KiB page. On the 2-core CPU a 50-step Mamba run
(d_model 64, 2 layers, L = 512) takes 73 s instead of 104 s. No effect where the kernel has THP
off, nor on GPU tensors.
"""

import atexit
import difflib
import gc
import logging
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

STARTED = []  # main has run: a later composition error is the run's own, never retried with `+`


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(config):
    STARTED.append(True)
    # Importing torch and Lightning makes millions of objects and next to no garbage: with the
    # collector off meanwhile they take 0.5 s less on the 2-core CPU; frozen, no later collection
    # scans them again.
    gc.disable()
    from src.training import fit

    gc.freeze()
    gc.enable()
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


def plus_key(args, error):
    """`args` with `+` before the override Hydra's ConfigCompositionException `error` refused as
    a key the composed config does not have; None when it refused something else."""
    match = re.match(r"Could not override '([^']+)'", str(error))
    bad = [i for i, a in enumerate(args) if match and a.split("=")[0] == match.group(1)]
    if not bad:
        return None
    return [*args[:bad[0]], "+" + args[bad[0]], *args[bad[0] + 1:]]


def plus_unknown_keys(args):
    """`args` with `+` before each override of a key the composed config does not have (Hydra
    would refuse it in several lines); ConfigError for a config group choice that does not exist
    (Hydra's several lines again). Anything else Hydra refuses is left to Hydra."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    args = list(args)
    for _ in range(len(args) + 1):
        try:
            _compose(a for a in args if not a.startswith("-"))
            return args
        except MissingConfigException as e:
            error = missing_choice(e)
            if error is None:
                return args
            raise error from None
        except ConfigCompositionException as e:
            plussed = plus_key(args, e)
            if plussed is None:
                return args
            args = plussed
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


def launch(args, multirun):
    """Hydra's run (or, `multirun`, its multirun) of `main` with the overrides `args`, the config
    composed once. hydra.main composes it once more first, only to read hydra.mode, which no
    config here sets; the rest is what it does (hydra/_internal/utils.py: _run_hydra, _run_app).
    A key the config does not have, given without `+`, gets it and the composition is tried
    again (never once main has started); a config group choice that does not exist is one line."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, run_and_report
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException

    app = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(f"file://{CONFIGS}"))
    go, mode = (app.multirun, "MULTIRUN") if multirun else (app.run, "RUN")

    def attempt(args):
        for _ in range(len(args) + 1):
            try:
                return go(config_name="config", task_function=main, overrides=[*args, f"hydra.mode={mode}"])
            except MissingConfigException as e:
                error = None if STARTED else missing_choice(e)
                if error is None:
                    raise
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)
            except ConfigCompositionException as e:
                plussed = None if STARTED else plus_key(args, e)
                if plussed is None:
                    raise
                args = plussed

    try:
        run_and_report(lambda: attempt(list(args)))  # Hydra's own report of anything else (status 1)
    finally:
        GlobalHydra.instance().clear()


def exit_now(status):
    """Leave a single run with `status` (SystemExit's code) without tearing the interpreter down.
    Every file a run writes is complete and closed when `main` returns (checkpoints are written
    atomically, the CSV logger and results.json before the last line is printed); what is left is
    Python freeing the heap of torch, Lightning and their imports, about 1 s on the 2-core CPU. The
    exit handlers (logging's flush, multiprocessing's worker shutdown) still run first."""
    if status is not None and not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if HYDRA_FLAGS & set(argv):
        main()  # Hydra's own command line (--cfg, --help, ...), left to hydra.main
        sys.exit(0)
    multirun = bool({"-m", "--multirun"} & set(argv))
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    try:
        if multirun:
            overrides = check_sweep(overrides)
        launch(overrides, multirun)
        status = 1 if sweep.FAILED else 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("error: interrupted (SIGINT) before training started; nothing to resume", file=sys.stderr)
        status = 130
    except SystemExit as e:
        status = e.code
    if multirun:  # the pool's workers are shut down by threading's exit hooks, which exit_now skips
        sys.exit(status)
    exit_now(status)
