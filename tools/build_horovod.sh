#!/usr/bin/env bash
# Install horovod 0.28.1 into the venv given as $1, building it from PyPI's sdist once per torch
# version (the wheel is tied to the torch it was compiled against) and caching the wheel in
# ${LAKEDL_WHEEL_CACHE:-~/.cache/lakedl/wheels}. See ../shared/STACK.md for why each flag is here.
set -euo pipefail
venv=${1:?usage: tools/build_horovod.sh VENV}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
py="$venv/bin/python"
torch_v=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
cache="${LAKEDL_WHEEL_CACHE:-$HOME/.cache/lakedl/wheels}/horovod-0.28.1-torch${torch_v}"
wheel=$(ls "$cache"/horovod-0.28.1-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo ">> building horovod 0.28.1 against torch ${torch_v} (about 3 minutes; cached in $cache)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cmake_bin="${HOROVOD_CMAKE:-/usr/bin/cmake}"  # pip's cmake 4.x rejects gloo's cmake_minimum_required
  [ -x "$cmake_bin" ] || { echo "horovod needs a system cmake 3.x at $cmake_bin (apt-get install cmake)" >&2; exit 1; }
  # --no-build-isolation: the build must see the venv's torch.
  env CXX="$here/cxx17" LAKEDL_REAL_CXX="${CXX:-g++}" HOROVOD_CMAKE="$cmake_bin" \
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
      HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j"$(nproc)" \
      "$venv/bin/pip" wheel --no-deps --no-build-isolation -w "$tmp" horovod==0.28.1
  mkdir -p "$cache"
  mv "$tmp"/horovod-0.28.1-*.whl "$cache"/
  wheel=$(ls "$cache"/horovod-0.28.1-*.whl | head -n1)
fi
"$venv/bin/pip" install -q -c "$repo/constraints.txt" "$wheel"
