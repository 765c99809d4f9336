"""The training masses' scale: the temperature behind them and the final APOKASC-3 masses.

Measures, on the shared catalogs (`stellar_ml_ages.training.massscale`):

* which temperature the preliminary APOKASC-3 seismic masses were computed with
  (the column that reproduces every star's seismic log g from its νmax);
* how the final APOKASC-3 Table 4 masses differ from them (all stars and per state),
  and how much of that the final DR17 temperatures alone explain;
* the slope of ln age on ln mass per state, to read a mass-scale offset in age.

Usage::

    python tools/mass_scale_report.py --data-dir ../shared/data

A few seconds. Writes ``stellar_ml_ages/data/mass_scale.json`` (with the commit and date);
docs/models.rst quotes it.
"""

import argparse
import datetime
import json
from pathlib import Path

from _provenance import git_commit  # tools/ is the script's directory

from stellar_ml_ages.training.massscale import seismic_mass_scale

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(ROOT / "stellar_ml_ages" / "data"
                                             / "mass_scale.json"))
    args = parser.parse_args(argv)
    report = {"commit": git_commit(), "date": datetime.date.today().isoformat(),
              **seismic_mass_scale(args.data_dir)}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
