#!/usr/bin/env bash
# The wheels benchmarks/gpu/check.sh installs on the GPU machine (Python 3.12, x86-64, no
# network), into .whl/ (ignored; the device tool carries it: `carry: [".whl"]`). Run it where pip
# reaches PyPI, from any directory:
#
#   benchmarks/gpu/fetch_wheels.sh [DIR]      (default DIR: .whl in the repository root)
#
# Only what that machine lacks, pinned (the versions of requirements*.txt where they pin one):
#   from PyPI's wheels    hydra-core, omegaconf (train.py, the tests' configs), fla-core (the gla /
#                         delta_rule Triton kernels), accelerated-scan (linear_scan cuda / triton)
#   built here from their sdists (pure Python; PyPI has no wheel)
#                         antlr4-python3-runtime (omegaconf's parser), pykeops + keopscore (the
#                         keops backend), mamba-ssm with MAMBA_SKIP_CUDA_BUILD=TRUE: its Triton
#                         SSD kernels without its CUDA extension (selective_scan_cuda)
# Not carried: causal-conv1d (its setup.py compiles its CUDA sources for nine architectures, far
# over the GPU budget, and a wheel built here could not link against that machine's torch) and
# mamba-ssm's selective_scan_cuda (the same): their gpu tests skip, saying so. Everything else
# the project needs is already in the machine's image (see /work/.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 fla-core==0.6.0 accelerated-scan==0.3.1)
SDISTS=(antlr4-python3-runtime==4.9.3 keopscore==2.3 pykeops==2.3 mamba-ssm==2.3.2.post1)

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
# mamba-ssm's setup.py imports torch (any build: nothing is compiled) and, unless forced, looks
# for a prebuilt CUDA wheel online; both flags keep it to its Python files
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "$PY" -m pip wheel --quiet --no-deps --no-binary=:all: \
  --no-build-isolation -w "$DEST" "${SDISTS[@]}"

count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne $(( ${#WHEELS[@]} + ${#SDISTS[@]} )) ]; then
  echo "error: $count wheels in $DEST, expected $(( ${#WHEELS[@]} + ${#SDISTS[@]} ))" >&2; exit 1
fi
if ls "$DEST"/*.whl | grep -v -- '-py3-none-any\.whl$'; then
  echo "error: the wheels above are not pure Python; the GPU machine needs cp312 manylinux x86-64 or py3-none-any" >&2
  exit 1
fi
du -ch "$DEST"/*.whl | tail -n 1
ls "$DEST"
