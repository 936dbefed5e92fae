"""The report of one benchmarks/gpu/check.sh run: versions, each step's result and time, each
test's outcome grouped by test function (the GPU path it checks), each model's short training
run, and the benchmark tables.

    python -m benchmarks.gpu.summary versions                 # the versions block (printed)
    python -m benchmarks.gpu.summary skips pytest.xml         # exit 1 unless every test skipped with a reason
    python -m benchmarks.gpu.summary write OUT STEPS_DIR MODE # OUT/summary.md from OUT/steps.tsv, OUT/pytest.xml,
                                                              # OUT/train.jsonl and STEPS_DIR/<step>.out

steps.tsv has one line per step: name, status (pass | fail | timeout | skipped), seconds, note.
"""

import argparse
import collections
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PACKAGES = ["torch", "triton", "lightning", "torchmetrics", "hydra-core", "omegaconf", "antlr4-python3-runtime",
            "fla-core", "mamba-ssm", "accelerated-scan", "causal-conv1d", "pykeops", "keopscore", "numpy", "pytest"]
BENCHMARKS = ["kernels", "scan", "layers", "kernels-keops"]  # steps whose output goes into the summary


def versions():
    """Lines `name: version` for Python, the packages, CUDA, the GPU and nvcc."""
    lines = [f"python: {platform.python_version()} ({sys.executable})"]
    for name in PACKAGES:
        try:
            lines.append(f"{name}: {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    try:
        import torch

        lines.append(f"torch CUDA: {torch.version.cuda}, available: {torch.cuda.is_available()}")
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            lines.append(f"GPU: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
                         f"{p.total_memory / 2**30:.0f} GiB")
    except Exception as e:  # noqa: BLE001 - a broken torch is itself the finding
        lines.append(f"torch: {type(e).__name__}: {e}")
    for command in (["nvcc", "--version"], ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]):
        if shutil.which(command[0]):
            out = subprocess.run(command, capture_output=True, text=True).stdout.strip().splitlines()
            lines.append(f"{command[0]}: {out[-1] if out else '?'}")
        else:
            lines.append(f"{command[0]}: not found")
    return lines


def read_tests(xml_path):
    """[(nodeid, outcome, message)] from a pytest JUnit XML file; outcome pass|fail|error|skip."""
    cases = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        nodeid = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        outcome, message = "pass", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "fail", "error": "error", "skipped": "skip"}[tag]
                text = (child.get("message") or "").strip()
                message = text.splitlines()[0] if text else ""
                break
        cases.append((nodeid, outcome, message))
    return cases


def by_path(cases):
    """{test function: Counter of outcomes, first message of a non-pass}: parameters folded together."""
    groups = collections.OrderedDict()
    for nodeid, outcome, message in cases:
        key = re.sub(r"\[.*\]$", "", nodeid)
        counts, messages = groups.setdefault(key, (collections.Counter(), []))
        counts[outcome] += 1
        if outcome != "pass" and message and message not in messages:
            messages.append(message)
    return groups


def skips(xml_path):
    """Exit status 0 when every collected test skipped and said why; else 1, naming the others."""
    cases = read_tests(xml_path)
    bad = [(n, o, m) for n, o, m in cases if o != "skip" or not m]
    print(f"{len(cases)} gpu tests collected; {len(cases) - len(bad)} skipped with a reason")
    for nodeid, outcome, message in bad:
        print(f"  {nodeid}: {outcome} {message!r}")
    return 1 if bad or not cases else 0


def write(out, steps_dir, mode):
    out, steps_dir = Path(out), Path(steps_dir)
    lines = [f"# GPU check ({mode})", ""]
    versions_out = steps_dir / "versions.out"
    if versions_out.exists():
        lines += ["```", *versions_out.read_text().strip().splitlines(), "```", ""]
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line] \
        if (out / "steps.tsv").exists() else []
    lines += ["| step | result | seconds | note |", "|---|---|---:|---|"]
    lines += [f"| {name} | {status} | {seconds} | {note} |" for name, status, seconds, note in steps]
    xml = out / "pytest.xml"
    if xml.exists():
        cases = read_tests(xml)
        total = collections.Counter(o for _, o, _ in cases)
        lines += ["", f"## Tests: {total['pass']} passed, {total['fail']} failed, {total['error']} errors, "
                      f"{total['skip']} skipped", "", "| test (GPU path) | pass | fail | error | skip | first reason |",
                  "|---|---:|---:|---:|---:|---|"]
        for key, (counts, messages) in by_path(cases).items():
            lines.append(f"| {key} | {counts['pass']} | {counts['fail']} | {counts['error']} | {counts['skip']} | "
                         f"{(messages[0] if messages else '')[:160].replace('|', '/')} |")
    elif any(s[0] == "tests" for s in steps):
        lines += ["", "## Tests: no JUnit file (the step was cut off?); see check.log"]
    train = out / "train.jsonl"
    if train.exists():
        records = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]
        lines += ["", f"## Training: {sum(r['ok'] for r in records)} of {len(records)} models trained", "",
                  "| model | ok | seconds | first step s | step ms | val/loss | error |", "|---|---|---:|---:|---:|---:|---|"]
        for r in records:
            loss = f"{r['val_loss']:.4g}" if isinstance(r.get("val_loss"), float) else ""
            lines.append(f"| {r['model']} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | {r.get('first_step_s', '')} "
                         f"| {r.get('step_ms', '')} | {loss} | {r.get('error', '')[:160].replace('|', '/')} |")
    for name in BENCHMARKS:
        path = steps_dir / f"{name}.out"
        if path.exists():
            text = [line for line in path.read_text().splitlines() if not line.startswith(("WARNING", "Warning"))]
            lines += ["", f"## {name}", "", "```", *text[-60:], "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions")
    p = sub.add_parser("skips")
    p.add_argument("xml")
    p = sub.add_parser("write")
    p.add_argument("out")
    p.add_argument("steps_dir")
    p.add_argument("mode")
    args = parser.parse_args(argv)
    if args.command == "versions":
        print("\n".join(versions()))
        return 0
    if args.command == "skips":
        return skips(args.xml)
    return write(args.out, args.steps_dir, args.mode)


if __name__ == "__main__":
    sys.exit(main())
