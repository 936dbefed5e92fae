"""Every `python -m train` command of the DLR-experiment sections of docs/experiments.md runs on CPU.

The commands are read from docs/experiments.md (which carries the DLR repo's commands as they are
written), `CUDA_VISIBLE_DEVICES` dropped, `$TASK` / `$L` substituted and CPU-sized overrides
appended. The default run covers every command once and every task once; `-m slow` runs the
whole command x task matrix.
"""

import pytest

from conftest import CPU_OVERRIDES, command_overrides, readme_commands, train_in_process

TASKS = ["shift", "cumsum", "cummax", "sort", "reverse", "masked_select_fixed", "masked_select",
         "solve_fixed", "solve", "context_shift"]
COMMANDS = readme_commands("docs/experiments.md", "DLR paper experiments: atomic tasks")


def overrides_for(command, task):
    command = command.replace("$TASK", task).replace("$L", "64")
    return command_overrides(command) + CPU_OVERRIDES


def test_readme_has_the_dlr_commands():
    assert len(COMMANDS) == 12  # 6 atomic-task, 3 MIPS, 3 long-shift templates
    assert sum("$TASK" in c for c in COMMANDS) == 6


def _run(command, task, tmp_path):
    metrics = train_in_process(overrides_for(command, task), tmp_path / "run")
    assert {"val/loss", "val/mse", "val/r2"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.slow  # trains; the default tier composes each command (test_config_fixtures, test_docs)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"cmd{COMMANDS.index(c)}")
def test_every_command_runs(command, tmp_path):
    _run(command, "reverse", tmp_path)


@pytest.mark.slow  # trains; the default tier composes each command (test_config_fixtures, test_docs)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs(task, tmp_path):
    _run(COMMANDS[0], task, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("command", [c for c in COMMANDS if "$TASK" in c], ids=lambda c: f"cmd{COMMANDS.index(c)}")
def test_command_task_matrix(command, task, tmp_path):
    _run(command, task, tmp_path)
