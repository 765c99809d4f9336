"""Would a luminosity lower the giants model's mass error? Gaia-based luminosities checked.

The ``giants`` model sees six spectroscopic labels; its mass error (5.2%, out of
fold) is set by what those labels say (docs/models.rst, "Where the mass error comes
from"). A luminosity brings information of another kind: with the spectroscopic
log g and Teff it gives a mass, ``M = g L / (4 pi G sigma Teff**4)``. The shared data
hold luminosities from Gaia DR3 parallaxes and 2MASS photometry for Kepler red
giants in the sample of Li et al. (``kepler_rg_li2023/samples_rg.csv``; PROVENANCE
section 5), independent of the seismic masses.

For the stars of that sample among the giants model's training stars, this script
takes each star's out-of-fold ``giants`` prediction (the fold predictions of
``tools/population_report.py``, 10 KIC-hash folds, cached) and:

- the luminosity mass's scatter about the seismic mass (median absolute deviation
  of ln M_L/M, after its median offset) and its correlation with the model's ln
  residual;
- an out-of-fold linear combination, per target, ``ln y = a + b ln y_model + c ln M_L``
  fitted on the other folds' stars (the model's fold assignment), scored as the
  model is (median |predicted / true - 1|), with a paired bootstrap (1,000
  resamples of the stars) of the change.

Written to ``stellar_ml_ages/data/luminosity_check.json`` (docs/models.rst quotes it)::

    python tools/luminosity_check.py --data-dir ../shared/data

A few seconds once ``tools/population_report.py`` has cached the fold predictions
(about 7 minutes otherwise).
"""

import json
import time
from pathlib import Path

import numpy as np
from _provenance import git_commit  # tools/ is the script's directory
from astropy.table import Table
from population_report import fold_prediction_run

SAMPLE = Path("kepler_rg_li2023") / "samples_rg.csv"
#: Solar log g (cgs) and effective temperature (K): IAU 2015 nominal values.
LOGG_SUN, TEFF_SUN = 4.438, 5772.0
N_BOOTSTRAP = 1000


def luminosity_mass(logg, teff, luminosity):
    """ln(M / Msun) from log g [cgs], Teff [K] and L [Lsun]: M = g L / (4 pi G sigma Teff^4).

    Examples
    --------
    >>> round(float(luminosity_mass(4.438, 5772.0, 1.0)), 12)
    0.0
    """
    return (np.log(10.0) * (np.asarray(logg) - LOGG_SUN) + np.log(luminosity)
            - 4.0 * np.log(np.asarray(teff) / TEFF_SUN))


def median_error(log_predicted, log_true):
    return float(np.median(np.abs(np.expm1(log_predicted - log_true))))


def combined_out_of_fold(log_model, log_mass_l, log_true, fold):
    """ln y from ``a + b ln y_model + c ln M_L``, each fold's coefficients fitted on the others."""
    design = np.column_stack([np.ones_like(log_model), log_model, log_mass_l])
    out = np.empty_like(log_true)
    coefficients = []
    for k in np.unique(fold):
        train = fold != k
        beta = np.linalg.lstsq(design[train], log_true[train], rcond=None)[0]
        out[~train] = design[~train] @ beta
        coefficients.append(beta)
    return out, np.mean(coefficients, axis=0)


def check(arrays, sample):
    index = {int(k): i for i, k in enumerate(np.asarray(sample["KIC"]))}
    rows = np.array([index.get(int(k), -1) for k in arrays["kic"]])
    luminosity = np.full(len(rows), np.nan)
    luminosity[rows >= 0] = np.ma.filled(np.ma.asarray(sample["luminosity"], dtype=float),
                                         np.nan)[rows[rows >= 0]]
    with np.errstate(invalid="ignore", divide="ignore"):
        log_mass_l = luminosity_mass(arrays["feature:logg"], arrays["feature:teff"], luminosity)
    states, counts = np.unique(arrays["state"][np.isfinite(log_mass_l)], return_counts=True)
    report = {"sample": str(SAMPLE), "n_matched": int(np.sum(np.isfinite(log_mass_l))),
              "states": dict(zip(states.tolist(), counts.tolist(), strict=True))}
    rng = np.random.default_rng(1)
    for target in ("mass", "age"):
        log_true = np.log(arrays[f"{target}:true"])
        log_model = np.log(arrays[f"{target}:point"])
        usable = np.isfinite(log_mass_l) & np.isfinite(log_true) & np.isfinite(log_model)
        entry = {}
        for scope, rows in (("all", usable), ("in_hull", usable & arrays["in_hull"])):
            combined, beta = combined_out_of_fold(log_model[rows], log_mass_l[rows],
                                                  log_true[rows], arrays["fold"][rows])
            model_error = np.abs(np.expm1(log_model[rows] - log_true[rows]))
            combined_error = np.abs(np.expm1(combined - log_true[rows]))
            draws = rng.integers(0, rows.sum(), size=(N_BOOTSTRAP, rows.sum()))
            change = [np.median(combined_error[d]) - np.median(model_error[d]) for d in draws]
            residual_l = log_mass_l[rows] - log_true[rows]
            entry[scope] = {
                "n": int(rows.sum()),
                "median_rel_error_model": float(np.median(model_error)),
                "median_rel_error_combined": float(np.median(combined_error)),
                "change": float(np.median(combined_error) - np.median(model_error)),
                "change_bootstrap_sigma": float(np.std(change)),
                "mean_coefficients": [round(float(b), 4) for b in beta],
                "correlation_with_model_residual": float(np.corrcoef(
                    residual_l, log_model[rows] - log_true[rows])[0, 1]),
            }
            if target == "mass":
                offset = float(np.median(residual_l))
                entry[scope]["luminosity_mass_median_ln_offset"] = offset
                entry[scope]["luminosity_mass_mad"] = float(np.median(np.abs(residual_l
                                                                             - offset)))
        report[target] = entry
    return report


def main(argv=None):
    args, data_dir, arrays = fold_prediction_run(argv, __doc__.split("\n\n")[0],
                                                 "luminosity_check.json")
    report = check(arrays, Table.read(Path(data_dir) / SAMPLE, format="ascii.csv"))
    report["n_folds"] = args.folds
    report["generated"] = {"commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                           "command": "python tools/luminosity_check.py --data-dir DATA"}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['n_matched']} stars with a luminosity ({report['states']})")
    for target in ("mass", "age"):
        for scope, entry in report[target].items():
            print(f"{target} {scope}: n {entry['n']}, model {entry['median_rel_error_model']:.4f}, "
                  f"with the luminosity mass {entry['median_rel_error_combined']:.4f} "
                  f"({entry['change']:+.4f} +- {entry['change_bootstrap_sigma']:.4f}), "
                  f"r {entry['correlation_with_model_residual']:+.3f}")
    mass = report["mass"]["all"]
    print(f"luminosity mass: median ln offset {mass['luminosity_mass_median_ln_offset']:+.3f}, "
          f"MAD {mass['luminosity_mass_mad']:.3f}")


if __name__ == "__main__":
    main()
