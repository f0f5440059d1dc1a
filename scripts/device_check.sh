#!/usr/bin/env bash
# The accelerator check (issue 40; docs/gpu.md): install bmr-jax on a lent machine without
# fetching anything, then measure what it does there (scripts/device_check.py), writing
# $OUT/device_check.json and $OUT/logs/. Meant for one call of at most 9 minutes:
#
#   OUT=/tmp/check scripts/device_check.sh [--smoke] [--budget SECONDS] [--data-dir DIR]
#
# The machine's image brings jax, flax, numpyro, optax and equinox for its accelerator; ours
# goes in with --no-deps (nothing is downloaded) and every dependency's version is checked
# against pyproject.toml's bounds, failing with exit 2 and the names when one is off.
# --smoke: every phase at tiny sizes on whatever device JAX sees (tests/test_device_check.py
# runs it on the CPU so that it cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT/logs"
PY=${PYTHON:-python3}
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
if ! "$PY" -c "import bmr_jax" 2>/dev/null; then
    # an editable install without dependencies or an index; where the image lacks the build
    # backend, the source tree on PYTHONPATH serves as well (the CLI is run as python -m)
    "$PY" -m pip install --no-deps --no-index --no-build-isolation -e . \
        > "$OUT/logs/install.log" 2>&1 || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# the device data, when carried to the machine beside the tree (see docs/gpu.md)
if [ -z "${BMR_JAX_DATA:-}" ] && [ -d .device_data ]; then export BMR_JAX_DATA="$PWD/.device_data"; fi
exec "$PY" scripts/device_check.py --out "$OUT" "$@"
