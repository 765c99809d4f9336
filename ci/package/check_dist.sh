#!/usr/bin/env bash
# Build the sdist and wheel, check them, install the wheel into a fresh venv
# and run the quick start from it (not from the source tree).
#   usage: check_dist.sh PYTHON OUTDIR
set -euo pipefail
python="$1"
out="$2"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out"

"$python" -m build --outdir "$out/dist" "$repo" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
"$python" -m twine check --strict "$out"/dist/*
wheel="$(ls "$out"/dist/*.whl)"
"$python" - "$wheel" <<'PY'
import sys, zipfile
wheel = sys.argv[1]
names = zipfile.ZipFile(wheel).namelist()
models = [n for n in names if n.startswith("stellar_ml_ages/data/models/")]
assert any(n.endswith(".npz") for n in models) and any(n.endswith(".json") for n in models), models
# Nothing from ../shared and no catalogs: only the package, its models and demo table.
assert not [n for n in names if "shared" in n or n.endswith((".fits", ".csv", ".parquet"))], names
import os
print(f"wheel {os.path.basename(wheel)}: {os.path.getsize(wheel) / 2**20:.2f} MiB, {len(names)} files,"
      f" models: {', '.join(sorted(os.path.basename(n) for n in models))}")
PY

"$python" -m venv "$out/wheel-venv"
"$out/wheel-venv/bin/python" -m pip install --quiet "$wheel"
cd "$out"  # away from the source tree, so the installed package is the one imported
"$out/wheel-venv/bin/stellar-ml-ages" demo "$out/quickstart.fits" --overwrite
"$out/wheel-venv/bin/python" - <<'PY'
import stellar_ml_ages
assert "site-packages" in stellar_ml_ages.__file__, stellar_ml_ages.__file__
from stellar_ml_ages import add_mass_age, demo_table
annotated = add_mass_age(demo_table(), model="red-clump")
inside = annotated["mass_age_flag"] == 0
assert annotated["mass"].unit == "solMass" and annotated["age"].unit == "Gyr"
assert inside.sum() > 0 and bool((annotated["age_p16"][inside] < annotated["age"][inside]).all())
print(f"quick start from the installed wheel: stellar_ml_ages {stellar_ml_ages.__version__}, "
      f"{int(inside.sum())} of {len(annotated)} demo stars annotated")
PY
