#!/usr/bin/env bash
# GPU validation in one run, from a clean checkout on a CUDA machine (made for the lent H200:
# Python 3.12, torch 2.11 + CUDA 13, triton 3.6, nvcc, ninja; no network, so the missing
# packages come as the wheels benchmarks/gpu/fetch_wheels.sh puts in .whl/).
#
#   benchmarks/gpu/check.sh              install the wheels, build the CUDA extension (sm_90), run
#                                        pytest -m gpu, train every model= 20 steps on cuda, run
#                                        benchmarks/{kernels,scan,layers}.py --device cuda
#   benchmarks/gpu/check.sh --quick      install, build, tests only (a rerun)
#   benchmarks/gpu/check.sh --dry-run    on a CPU machine: the steps up to the first CUDA-only one
#                                        (the wheels into a fresh target with --no-index, the gpu
#                                        tests collected and skipped with their reasons, every
#                                        model's run composed, the extension's sources compiled)
#   --budget SECONDS                     the whole run's bound (default 480, --quick 300); each step is bounded
#                                        by its own limit and by what is left; a step that fails or
#                                        runs out is recorded and the next one runs
#
# Writes under $OUT (default /tmp/gpu-check-out): check.log (every step's output), summary.md
# (versions, steps, tests per GPU path, training per model, benchmark tables), steps.tsv,
# pytest.xml, train.jsonl. Exit status 0 when every step passed, else 1 (2: bad arguments).
set -uo pipefail   # no -e: a failing step is recorded and the run goes on
cd "$(dirname "$0")/../.."

MODE=full
BUDGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --dry-run) MODE=dry-run ;;
    --budget)
      BUDGET=${2:-}
      if ! [[ "$BUDGET" =~ ^[0-9]+$ ]]; then echo "error: --budget takes whole seconds, got '${2:-}'" >&2; exit 2; fi
      shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "error: unknown option '$1'; choose from --quick, --dry-run, --budget SECONDS, --help" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$BUDGET" ] && { [ "$MODE" = quick ] && BUDGET=300 || BUDGET=480; }

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
OUT=${OUT:-/tmp/gpu-check-out}
if [ "$MODE" = dry-run ]; then TMP=$(mktemp -d); else TMP=/tmp/gpu-check; fi  # kept on a warm machine for --quick
STEPS_DIR=$TMP/steps
mkdir -p "$OUT" "$STEPS_DIR"
: > "$OUT/check.log"; : > "$OUT/steps.tsv"; rm -f "$OUT/pytest.xml" "$OUT/train.jsonl" "$OUT/summary.md"
export PYTHONPATH="$TMP/site:$TMP/ext:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 TORCH_EXTENSIONS_DIR=$TMP/torch_extensions
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then  # torch's cpp_extension looks for it
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); export CUDA_HOME
fi
START=$(date +%s)
FAILED=0

# step NAME LIMIT COMMAND...: run COMMAND bounded by LIMIT seconds and by the budget left; its
# output goes to $STEPS_DIR/NAME.out and check.log; its result to steps.tsv and one line here.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  (( limit > left )) && limit=$left
  if (( limit < 5 )); then
    printf '%s\tskipped\t0\tbudget spent\n' "$name" >> "$OUT/steps.tsv"; echo "== $name: skipped (budget spent)"
    FAILED=1; return
  fi
  echo "== $name (limit ${limit}s): $*" >> "$OUT/check.log"
  local t0 rc status note=""
  t0=$(date +%s.%N)
  # through bash: COMMAND may be one of the functions below (exported); timeout ends its whole group
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" 2>&1 | tee "$STEPS_DIR/$name.out" >> "$OUT/check.log"
  rc=${PIPESTATUS[0]}
  local seconds
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if (( rc == 0 )); then status=pass
  elif (( rc == 124 || rc == 137 )); then status=timeout; note="cut off at ${limit}s"; FAILED=1
  else status=fail; note="exit $rc: $(grep -v '^\s*$' "$STEPS_DIR/$name.out" | tail -n 1 | cut -c1-150 | tr '\t|' '  ')"; FAILED=1
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$note" >> "$OUT/steps.tsv"
  echo "== $name: $status (${seconds} s) $note" | tee -a "$OUT/check.log"
}

have_wheels() {
  if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    echo "no wheels in $WHEELS/: run benchmarks/gpu/fetch_wheels.sh where pip reaches PyPI (and carry .whl)"; return 1
  fi
}

install_wheels() {  # the real install (the GPU machine)
  have_wheels || return 1
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TMP/site" "$WHEELS"/*.whl &&
    ls "$TMP/site"
}

check_wheels() {  # dry run: the wheel set installs into fresh targets with --no-index, for Python 3.12
  have_wheels || return 1
  "$PY" -m pip install -q --no-index --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --target "$TMP/site312" "$WHEELS"/*.whl || return 1
  echo "pip (--python-version 3.12 --platform manylinux_2_28_x86_64): $(ls "$WHEELS"/*.whl | wc -l) wheels into a fresh target"
  local py312="" candidate
  for candidate in "${PYTHON312:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2> /dev/null; then
      py312=$candidate; break
    fi
  done
  if [ -n "$py312" ]; then
    "$py312" -m pip install -q --no-index --no-deps --no-compile --target "$TMP/site" "$WHEELS"/*.whl || return 1
    echo "$py312: the wheels install with --no-index"
    PYTHONPATH="$TMP/site" "$py312" - <<'EOF' || return 1
import importlib
for name in ["antlr4", "omegaconf", "hydra"]:
    try:
        importlib.import_module(name)
        print(f"python 3.12 imports {name} from the wheels")
    except ModuleNotFoundError as e:  # the GPU image has PyYAML and packaging; a bare interpreter may not
        if e.name not in ("yaml", "packaging"):
            raise
        print(f"python 3.12: {name} needs {e.name}, which this interpreter lacks (the GPU image has it)")
EOF
  else
    echo "no Python 3.12 here (set PYTHON312): the real install is left to the GPU machine"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$TMP/site" "$WHEELS"/*.whl || return 1
  fi
  # the wheels' modules that the code imports, with this Python (the GPU ones need triton, not a GPU)
  "$PY" - <<'EOF'
import importlib, importlib.util
names = ["hydra", "omegaconf"]
if importlib.util.find_spec("triton") is None:
    print("triton is not installed here: the GPU modules' imports are left to the GPU machine")
else:
    from src.ops.ssd_scan import gpu
    gpu._mamba_ssm()
    names += ["mamba_ssm.ops.triton.ssd_combined", "accelerated_scan.scalar", "pykeops"]
    names += [f"fla.ops.{op}" for op in ("gla", "simple_gla", "rwkv6", "delta_rule", "gated_delta_rule",
                                         "generalized_delta_rule")]
for name in names:
    module = importlib.import_module(name)
    print(f"imports {name} from {module.__file__}")
EOF
}

build_extension() {
  (cd extensions/kernels && "$PY" setup.py build_ext --build-lib "$TMP/ext" --build-temp "$TMP/build") &&
    "$PY" -c 'import structured_kernels; print("structured_kernels:", structured_kernels.__file__)'
}

check_sources() {  # dry run: the extension's sources compile here with torch's own flags (no GPU needed)
  local flags
  flags=$("$PY" -c 'import sysconfig; from torch.utils.cpp_extension import include_paths, COMMON_NVCC_FLAGS
print(" ".join("-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]))') || return 1
  g++ -std=c++20 -fsyntax-only $flags extensions/kernels/kernels.cpp || return 1
  echo "kernels.cpp: g++ -std=c++20 -fsyntax-only passes"
  if ! command -v nvcc > /dev/null; then echo "no nvcc here: the .cu files are left to the build on the GPU machine"; return 0; fi
  # a CPU build of torch lacks one generated CUDA header (a CUDA build's own comes first in the
  # search order); its content in CUDA builds is this define
  mkdir -p "$TMP/include/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$TMP/include/c10/cuda/impl/cuda_cmake_macros.h"
  local nvcc_flags f pids=() rc=0
  nvcc_flags=$("$PY" -c 'from torch.utils.cpp_extension import COMMON_NVCC_FLAGS; print(" ".join(COMMON_NVCC_FLAGS))')
  for f in vandermonde cauchy; do  # both at once: each takes minutes on a small CPU
    nvcc -std=c++20 -O3 -gencode=arch=compute_90,code=sm_90 $nvcc_flags -DTORCH_EXTENSION_NAME=structured_kernels \
      $flags -I"$TMP/include" -c "extensions/kernels/$f.cu" -o "$TMP/$f.o" > "$TMP/$f.nvcc.log" 2>&1 &
    pids+=($!)
  done
  for f in 0 1; do wait "${pids[$f]}" || rc=1; done
  for f in vandermonde cauchy; do
    if [ -s "$TMP/$f.o" ]; then echo "$f.cu: nvcc $(nvcc --version | tail -n 1 | cut -d, -f2) compiles it for sm_90"
    else grep -iE "error|fatal" "$TMP/$f.nvcc.log" | head -n 5; echo "$f.cu: nvcc failed"; fi
  done
  return $rc
}

gpu_tests() {
  local timeout_flag=()
  "$PY" -c 'import pytest_timeout' 2> /dev/null && timeout_flag=(--timeout 120)
  "$PY" -m pytest -m gpu -v -rs -p no:cacheprovider --junitxml="$OUT/pytest.xml" "${timeout_flag[@]}" "$@"
}

bench_flags() {  # dry run: every benchmark the full run calls takes --device
  local b
  for b in kernels scan layers; do
    "$PY" -m "benchmarks.$b" --help | grep -q -- "--device" || { echo "benchmarks/$b.py has no --device"; return 1; }
    echo "benchmarks/$b.py takes --device"
  done
}

export -f have_wheels install_wheels check_wheels build_extension check_sources gpu_tests bench_flags
export PY WHEELS OUT TMP
echo "GPU check, mode $MODE, budget ${BUDGET}s, output $OUT"
if [ "$MODE" = dry-run ]; then
  step wheels 120 check_wheels
  step versions 30 "$PY" -m benchmarks.gpu.summary versions
  step tests 120 gpu_tests
  step skips 10 "$PY" -m benchmarks.gpu.summary skips "$OUT/pytest.xml"
  step train-list 60 "$PY" -m benchmarks.gpu.train_models --list --device cuda
  step sources 300 check_sources
  step bench-flags 60 bench_flags
  echo "dry run: stopped before the first CUDA-only step (building the extension against a CUDA torch)" |
    tee -a "$OUT/check.log"
else
  step wheels 60 install_wheels
  step versions 30 "$PY" -m benchmarks.gpu.summary versions
  step build 150 build_extension
  step build-warp 90 "$PY" -c 'import accelerated_scan.warp; print("accelerated_scan.warp built")'
  step tests 180 gpu_tests
  if [ "$MODE" = full ]; then
    step train 120 "$PY" -m benchmarks.gpu.train_models --device cuda --steps 20 --per-model 40 --out "$OUT/train.jsonl"
    step kernels 75 "$PY" -m benchmarks.kernels --device cuda --cuda --cases dlr dss cauchy --reps 5
    step scan 45 "$PY" -m benchmarks.scan --device cuda --repeats 5
    step layers 90 "$PY" -m benchmarks.layers --device cuda --B 16 --L 4096 --D 128 --repeats 3
    step kernels-keops 60 "$PY" -m benchmarks.kernels --device cuda --keops --backends keops --cases dlr dss cauchy --reps 5
  fi
fi
"$PY" -m benchmarks.gpu.summary write "$OUT" "$STEPS_DIR" "$MODE" || echo "the summary could not be written; see check.log"
[ -f "$OUT/summary.md" ] && cat "$OUT/summary.md"
echo "total $(( $(date +%s) - START )) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ "$MODE" = dry-run ] && rm -rf "$TMP"
exit $FAILED
