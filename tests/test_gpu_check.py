"""benchmarks/gpu/: the parts of the GPU check that run without a GPU (the whole dry run is
`benchmarks/gpu/check.sh --dry-run`, minutes): the script's arguments and its step bookkeeping,
the summary writer, and a model's short training run with its record."""

import json
import math
import subprocess
import time

import pytest

from conftest import ROOT

from benchmarks.gpu import summary, train_models

CHECK = ROOT / "benchmarks" / "gpu" / "check.sh"


def run_check(*args, env=None, tmp_path):
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), **(env or {})})


@pytest.mark.parametrize("args, message", [
    (["--fast"], "error: unknown option '--fast'; choose from --quick, --dry-run, --budget SECONDS, --help"),
    (["--budget", "soon"], "error: --budget takes whole seconds, got 'soon'")])
def test_bad_arguments_stop_with_one_line(args, message, tmp_path):
    result = run_check(*args, tmp_path=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == message
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_spent_budget_skips_every_step_records_it_and_fails(tmp_path):
    import sys

    result = run_check("--dry-run", "--budget", "0", env={"PYTHON": sys.executable}, tmp_path=tmp_path)
    assert result.returncode == 1
    steps = [line.split("\t") for line in (tmp_path / "out" / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["wheels", "versions", "tests", "skips", "train-list", "sources", "bench-flags"]
    assert {s[1] for s in steps} == {"skipped"}
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "# GPU check (dry-run)" in text and "| sources | skipped | 0 | budget spent |" in text


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_scan" name="test_gpu_linear_scan_matches_reference[1-cuda]" time="0.1"/>
<testcase classname="tests.test_scan" name="test_gpu_linear_scan_matches_reference[33-cuda]" time="0.1">
  <failure message="AssertionError: Tensor-likes are not close!&#10;Mismatched elements: 3 / 99">trace</failure></testcase>
<testcase classname="tests.test_scan" name="test_gpu_causal_conv1d_matches_reference[1]" time="0.0">
  <skipped type="pytest.skip" message="causal_conv1d is not installed (see requirements-gpu.txt)">why</skipped></testcase>
<testcase classname="tests.test_gla" name="test_fla_kernels_match_the_torch_path_on_cuda[key-False]" time="0.0">
  <skipped type="pytest.skip" message="">no reason</skipped></testcase>
</testsuite></testsuites>"""


def test_the_summary_groups_tests_by_path_and_lists_steps_models_and_benchmarks(tmp_path):
    out, steps = tmp_path / "out", tmp_path / "steps"
    out.mkdir(), steps.mkdir()
    (out / "pytest.xml").write_text(JUNIT)
    (out / "steps.tsv").write_text("build\tpass\t41.2\t\ntests\tfail\t88.0\texit 1: 1 failed\n")
    (out / "train.jsonl").write_text(json.dumps({"model": "s4d", "ok": True, "seconds": 3.1, "first_step_s": 1.2,
                                                 "step_ms": 4.5, "val_loss": 0.25}) + "\n" +
                                     json.dumps({"model": "gla", "ok": False, "seconds": 40.0,
                                                 "error": "Overrun: ran past --per-model seconds"}) + "\n")
    (steps / "versions.out").write_text("torch: 2.11.0\nGPU: NVIDIA H200, capability 9.0\n")
    (steps / "scan.out").write_text("WARNING: noise\nlinear scan fwd  warp CUDA vs loop  0.1  9.0  90.0x\n")
    assert summary.main(["write", str(out), str(steps), "full"]) == 0
    text = (out / "summary.md").read_text()
    assert "GPU: NVIDIA H200, capability 9.0" in text
    assert "| build | pass | 41.2 |  |" in text and "| tests | fail | 88.0 | exit 1: 1 failed |" in text
    assert "## Tests: 1 passed, 1 failed, 0 errors, 2 skipped" in text
    assert ("| tests/test_scan.py::test_gpu_linear_scan_matches_reference | 1 | 1 | 0 | 0 | "
            "AssertionError: Tensor-likes are not close! |") in text
    assert "| tests/test_scan.py::test_gpu_causal_conv1d_matches_reference | 0 | 0 | 0 | 1 | causal_conv1d is not" in text
    assert "## Training: 1 of 2 models trained" in text
    assert "| s4d | yes | 3.1 | 1.2 | 4.5 | 0.25 |  |" in text and "| gla | NO | 40.0 |" in text
    assert "## scan" in text and "90.0x" in text and "noise" not in text
    assert "## kernels" not in text  # a step that did not run has no section


def test_skips_passes_only_when_every_test_skipped_with_a_reason(tmp_path, capsys):
    xml = tmp_path / "pytest.xml"
    xml.write_text(JUNIT)
    assert summary.main(["skips", str(xml)]) == 1  # one passed, one failed, one skipped without a reason
    printed = capsys.readouterr().out
    assert "4 gpu tests collected; 1 skipped with a reason" in printed and "[key-False]: skip ''" in printed
    only_skips = "\n".join(line for line in JUNIT.splitlines() if "test_scan\" name=\"test_gpu_linear" not in line
                           and "<failure" not in line and "key-False" not in line and "no reason" not in line)
    xml.write_text(only_skips)
    assert summary.main(["skips", str(xml)]) == 0


def test_every_model_config_is_in_the_training_list():
    stems = {p.stem for p in (ROOT / "configs" / "model").glob("*.yaml")}
    assert set(train_models.MODELS) == stems and len(stems) > 30


def test_a_short_run_records_its_steps_and_loss(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = train_models.train("s4d", "cpu", steps=3, length=16, per_model=60)
    assert record["ok"] and record["model"] == "s4d", record
    assert math.isfinite(record["val_loss"]) and record["step_ms"] > 0 and record["first_step_s"] > 0


def test_a_failing_or_overrunning_model_is_recorded_and_the_run_goes_on(monkeypatch):
    import signal

    def broken(args):
        raise ValueError("model.layer.d_state=-1 is not valid\nsecond line")

    monkeypatch.setattr(train_models, "compose", broken)
    record = train_models.train("s4d", "cpu", steps=3, length=16, per_model=60)
    assert not record["ok"] and record["error"] == "ValueError: model.layer.d_state=-1 is not valid"

    def slow(args):
        time.sleep(5)

    monkeypatch.setattr(train_models, "compose", slow)
    previous = signal.signal(signal.SIGALRM, train_models._overrun)
    try:
        start = time.perf_counter()
        record = train_models.train("s4d", "cpu", steps=3, length=16, per_model=1)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < 3
    assert not record["ok"] and record["error"] == "Overrun: ran past --per-model seconds"
