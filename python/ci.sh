#!/usr/bin/env bash
# Build the medtwin Python package from this checkout and run its tests.
#
#   bash python/ci.sh            (from anywhere; CI calls it from .ci/run)
#
# Needs: python3 >= 3.9 with the venv module (Debian: apt-get install python3-venv), a Rust
# toolchain >= 1.95 (cargo on PATH), and PyPI for maturin, pytest, pyarrow, pandas, polars and ray (ray: the
# distributed-trial tests, tests/test_ray.py, which start a two-node Ray cluster on 127.0.0.1 and
# stop it with `ray stop --force`; MEDTWIN_PY_NO_RAY=1 skips installing it, and those tests).
# No Python headers are needed (abi3 extension). Builds an abi3 wheel with `maturin build --release` into
# python/dist/, installs it into a fresh venv (python/.venv-ci, or $MEDTWIN_PY_VENV) and runs
# pytest on python/tests. The Rust build goes to python/target (not the workspace's target/).
# Set MEDTWIN_CLI to a built `medtwin` binary to also compare with the CLI bit for bit
# (otherwise target/release or target/debug of the repository is used if present, else skipped).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MEDTWIN_PY_VENV:-$here/.venv-ci}"
py="${PYTHON:-python3}"

t0=$(date +%s)
"$py" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
  || { echo "python/ci.sh: Python >= 3.9 is needed" >&2; exit 1; }
"$py" -m venv --clear "$venv" \
  || { echo "python/ci.sh: '$py -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.16,<2" "pytest>=7" "pyarrow>=14"
# pandas and polars: the DataFrame input paths (tests/test_dataframes.py; skipped without them).
td0=$(date +%s)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pandas>=1.5" "polars>=0.20"
echo "python/ci.sh: pandas + polars installed in $(($(date +%s) - td0)) s"
if [ -z "${MEDTWIN_PY_NO_RAY:-}" ]; then
  tr0=$(date +%s)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ray>=2.9,<3"
  echo "python/ci.sh: ray installed in $(($(date +%s) - tr0)) s"
fi
t1=$(date +%s)

rm -rf "$here/dist"
(cd "$here" && "$venv/bin/maturin" build --release --quiet --out dist --interpreter "$venv/bin/python")
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$here"/dist/medtwin-*.whl
t2=$(date +%s)
echo "python/ci.sh: venv + tools $((t1 - t0)) s, build + install $((t2 - t1)) s ($(basename "$here"/dist/medtwin-*.whl))"

# Import + a 1-day simulation, measured in a fresh interpreter (reported, not asserted).
(cd / && "$venv/bin/python" - <<'PY'
import time
t0 = time.perf_counter()
import medtwin
t = medtwin.simulate({"patient": "adult#001", "duration_min": 1440,
                      "meal": [{"at_min": 420, "carbs_g": 45}]})
print(f"python/ci.sh: import medtwin + 1-day simulation: {time.perf_counter() - t0:.3f} s ({t.num_rows} rows)")
PY
)

# pytest's executable (not `python -m pytest`) so that python/medtwin (without the compiled
# module) does not shadow the installed package.
cd "$here"
exec "$venv/bin/pytest" -q -rs -p no:cacheprovider tests
