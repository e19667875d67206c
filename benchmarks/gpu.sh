#!/usr/bin/env bash
# Every GPU measurement the issues ask for, as one prepared run that fits a short device lease.
#
#   bash benchmarks/gpu.sh prepare   # here, with the package index: wheels the GPU image lacks
#   bash benchmarks/gpu.sh run       # there (device tool: carry [".whl"], timeout_s 600)
#   bash benchmarks/gpu.sh dry-run   # here: the same plumbing on CPU at --quick sizes
#
# `run` needs only the GPU image's python3 (torch, jinja2, rich, matplotlib, torchdiffeq are in
# it) plus the wheels `prepare` put in .whl/ (lark, pydantic and typing-extensions at the
# versions pydantic needs, momentumnet, memcnn). Each part has
# its own time limit so the whole stays under about 9 minutes; every result goes into one archive
# in $OUT (the device tool returns at most 8 files): gpu_results.tar.gz, and the log gpu.log.
# Order: what no other machine can measure first (CUDA tests, the deepest Hamiltonian network,
# invert vs store time and memory on the GPU), the longer peer comparison last.
set -uo pipefail

prepare() {
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  local platforms=()
  for n in 2_28 2_27 2_17 2014; do
    if [ "$n" = 2014 ]; then platforms+=(--platform manylinux2014_x86_64)
    else platforms+=(--platform "manylinux_${n}_x86_64"); fi
  done
  # the versions this checkout's environment (.venv, made from constraints.txt) runs
  local py="${PYTHON:-.venv/bin/python}" pins
  pins=$("$py" -m pip freeze | grep -i -E \
    '^(lark|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|momentumnet|memcnn)==')
  echo "$pins"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl $pins
  ls -la .whl
}

run() {
  local dry="${1:-}" device=cuda quick=() out="${OUT:-/tmp/gpu_out}" work
  if [ "$dry" = dry ]; then
    device=cpu; quick=(--quick)
    # here: this checkout's environment (python3 may be another interpreter without torch)
    if [ -x .venv/bin/python ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
  fi
  work="$(mktemp -d)"
  mkdir -p "$out"
  exec > >(tee "$out/gpu.log") 2>&1
  export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
  if [ -d .whl ] && [ "$dry" != dry ]; then  # the wheels are for the GPU image's Python 3.12
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch, odedsl; print('torch', torch.__version__, torch.cuda.is_available())" \
    || exit 1
  if [ "$device" = cuda ]; then python3 -c "import torch; print(torch.cuda.get_device_name())" \
    || exit 1; fi

  part() {  # part NAME SECONDS COMMAND...: run with a limit, never stop the script
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    timeout "$limit" "$@"
    echo "=== $name: exit $?"
  }
  part cuda-tests 60 python3 -m pytest -q -p no:cacheprovider -k cuda \
    tests/runtime/test_memory.py tests/runtime/test_compile_depth.py
  if [ "$dry" = dry ]; then
    part deepest-hamiltonian 60 python3 examples/deepest_hamiltonian.py --quick \
      --out "$work/examples"
    part modes 60 python3 -m benchmarks.modes --quick --out "$work/benchmarks"
    part compile 60 python3 -m benchmarks.compile --quick --out "$work/benchmarks"
    part peers 60 python3 -m benchmarks.peers --quick --out "$work/benchmarks"
  else
    part deepest-hamiltonian 120 python3 examples/deepest_hamiltonian.py --device cuda \
      --budget 100 --step-budget 10 --out "$work/examples"
    part modes 90 python3 -m benchmarks.modes --device cuda --depths 10 100 1000 \
      --integrators hamiltonian midpoint leapfrog euler heun --repeat 5 --budget 15 \
      --out "$work/benchmarks"
    part compile 150 python3 -m benchmarks.compile --device cuda --depths 8 512 --no-warm \
      --modes store invert --unrolled-depths --out "$work/benchmarks"
    part peers 90 python3 -m benchmarks.peers --device cuda --repeat 5 --budget 15 \
      --out "$work/benchmarks"
  fi
  tar czf "$out/gpu_results.tar.gz" -C "$work" .
  echo "=== done $(date -u +%H:%M:%S)"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  dry-run) run dry ;;
  *) echo "usage: bash benchmarks/gpu.sh prepare|run|dry-run" >&2; exit 2 ;;
esac
