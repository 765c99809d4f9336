"""What a LAMOST user with SLAM labels (Zhang, Liu & Deng 2020) should expect.

Two measurements on the shared APOKASC/APOGEE catalogs, written to one JSON file
that docs/lamost.rst quotes:

``zero-points``
    SLAM's labels are on the APOGEE DR15 scale; DR15 re-released the DR14 ASPCAP
    values. APOKASC-2 Table 5 carries DR14 Teff, [Fe/H] and [α/Fe] for its stars,
    the shared DR17 files carry the final values: their differences are the part of
    the DR15 -> DR17 zero point that can be measured here. The mass and age shifts
    those offsets cause are measured with the packaged giants model.

``degraded``
    K-fold by KIC hash: a giants model is trained on the other folds (APOGEE labels),
    and the held-out stars' labels are degraded with SLAM's cross-validated scatters
    at S/N_g = 100, 50, 30 (scatter taken to grow as 100/S/N below 100, an assumption),
    written under SLAM's label names ([C/M], [N/M], [M/H], [alpha/M], Teff, logg with
    e_ columns) and annotated through `add_mass_age` with ``propagate_errors=True``:
    the same path a LAMOST user's table takes. Reported per S/N level: fraction inside
    the training hull, median relative error and robust scatter against the seismic
    truth, the [p16, p84] coverage (all, RGB, RC) and the interval width relative to
    the APOGEE-quality baseline.

Usage::

    python tools/lamost_slam_report.py --data-dir ../shared/data

The degraded run trains ``--folds`` giants models (about a minute each on 2 cores).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.stats import mad_std
from astropy.table import Column, Table, join

from stellar_ml_ages import add_mass_age, get_model
from stellar_ml_ages.slam import SCATTER_AT_REFERENCE, slam_scatter
from stellar_ml_ages.training import get_spec, load_training_table
from stellar_ml_ages.training.catalogs import find_data_dir
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import (
    _canonical_matrix,
    _select,
    kic_uniform,
    train_model,
    training_states,
)

SNR_LEVELS = (100.0, 50.0, 30.0)

#: SLAM label -> (column name in the degraded table, the true DR17 feature it stands for).
#: Under [Fe/H] = [M/H], [C/M] = [C/Fe] and [N/M] = [N/Fe]: the degraded table tests the
#: noise; the zero-point measurement tests the assumption.
_SLAM_COLUMNS = {
    "teff": ("Teff", "teff", u.K),
    "logg": ("logg", "logg", u.dex(u.cm / u.s**2)),
    "m_h": ("[M/H]", "fe_h", u.dex),
    "alpha_m": ("[alpha/M]", "alpha_m", u.dex),
    "c_m": ("[C/M]", "c_fe", u.dex),
    "n_m": ("[N/M]", "n_fe", u.dex),
}


def _stats(x):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return {"n": int(x.size), "median": float(np.median(x)), "robust_scatter": float(mad_std(x))}


def zero_points(data_dir):
    """DR14 (= DR15) minus DR17 labels of the APOKASC-2 giants, and what they do to masses."""
    data_dir = Path(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dr14 = Table.read(data_dir / "apokasc2" / "apokasc2_table5_radec.fits")
        dr17 = Table.read(data_dir / "apokasc2_apogee" / "apokasc2_apogee_dr17_labels.fits")
        a3 = Table.read(data_dir / "apokasc3" / "Table4_Apoor_RGB+RC_Gold.csv")
    both = join(dr14, dr17, keys="KIC", table_names=["14", "17"])
    alpha = join(dr14, a3, keys="KIC")
    offsets = {
        "teff": _stats(np.ma.filled(both["TEFF_14"] - both["TEFF_17"], np.nan)),
        "fe_h": _stats(np.ma.filled(both["FEH"] - both["FE_H"], np.nan)),
        "alpha_m": _stats(np.ma.filled(alpha["ALPHAFE"] - alpha["[Alp/Fe]"], np.nan)),
    }
    offsets["teff"]["unit"] = "K"
    for name in ("fe_h", "alpha_m"):
        offsets[name]["unit"] = "dex"
    offsets["alpha_m"]["note"] = ("DR14 [alpha/Fe] against DR17 [alpha/Fe] of the APOKASC-3 "
                                  "alpha-poor 0.9-1.8 Msun subset")
    return {"dr14_minus_dr17": offsets,
            "not_measured": ["logg", "c_m", "n_m", "m_h vs fe_h"],
            "sources": {"dr14": "apokasc2/apokasc2_table5_radec.fits (APOGEE DR14 values)",
                        "dr17": "apokasc2_apogee/apokasc2_apogee_dr17_labels.fits; "
                                "apokasc3/Table4_Apoor_RGB+RC_Gold.csv"}}


def sensitivity(data_dir, shifts):
    """Median mass and age change of the packaged giants model per set of label shifts.

    ``shifts`` maps a name to ``{feature: shift}``, all applied together.
    """
    spec = get_spec("giants")
    table = load_training_table(spec, data_dir)
    keep, features, _ = _select(table, spec)
    stars = Table(features[keep], names=spec.features)
    for name in spec.features:
        stars[name].unit = u.dex(u.cm / u.s**2) if name == "logg" else (
            u.K if name == "teff" else u.dex)
    mapping = {name: name for name in spec.features}
    model = get_model("giants")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = add_mass_age(stars, model=model, mapping=mapping, survey_flags=False)
    out = {}
    for name, moves in shifts.items():
        moved = stars.copy()
        for feature, shift in moves.items():
            column = moved[feature]
            moved[feature] = Column(np.asarray(column) + shift, unit=column.unit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = add_mass_age(moved, model=model, mapping=mapping, survey_flags=False)
        entry = {"shift": moves}
        for target in ("mass", "age"):
            ratio = np.ma.filled(result[target] / base[target], np.nan)
            entry[f"{target}_median_change"] = float(np.nanmedian(ratio) - 1.0)
        out[name] = entry
    return out


def _degraded_table(truth, kic, snr, salt):
    """Truth labels written as a SLAM table with SLAM noise at one S/N."""
    stars = Table()
    for label, (column, feature, unit) in _SLAM_COLUMNS.items():
        sigma = slam_scatter(label, snr)
        # Independent, reproducible draws per star and label (KIC hash -> normal deviate).
        uniform = kic_uniform(kic, f"{salt}-{label}-{snr:g}")
        deviate = np.sqrt(2.0) * _erfinv(2.0 * uniform - 1.0)
        stars[column] = (truth[feature] + sigma * deviate) * unit
        stars[f"e_{column}"] = np.full(len(kic), sigma) * (u.K if label == "teff" else u.dex)
    stars["snrg"] = np.full(len(kic), snr)
    return stars


def _erfinv(y):
    from scipy.special import erfinv

    return erfinv(np.clip(y, -1 + 1e-12, 1 - 1e-12))


def _summarise(result, truth_mass, truth_age, states, baseline_width=None):
    entry = {"n": len(result), "in_hull": float(np.mean(result["in_hull"]))}
    predicted = ~np.ma.getmaskarray(result["mass"])
    entry["predicted"] = float(np.mean(predicted))
    widths = {}
    for target, truth in (("mass", truth_mass), ("age", truth_age)):
        value = np.ma.filled(result[target], np.nan).astype(float)
        low = np.ma.filled(result[f"{target}_p16"], np.nan).astype(float)
        high = np.ma.filled(result[f"{target}_p84"], np.nan).astype(float)
        ok = np.isfinite(value) & np.isfinite(truth) & (truth > 0)
        log_ratio = np.log(value[ok] / truth[ok])
        inside = (truth[ok] >= low[ok]) & (truth[ok] <= high[ok])
        width = 0.5 * np.log(high[ok] / low[ok])
        widths[target] = float(np.median(width))
        stats = {
            "n_with_truth": int(ok.sum()),
            "median_rel_error": float(np.median(np.abs(value[ok] / truth[ok] - 1.0))),
            "bias": float(np.median(log_ratio)),
            "robust_scatter_ln": float(mad_std(log_ratio)),
            "coverage_p16_p84": float(np.mean(inside)),
            "median_half_width_ln": widths[target],
        }
        for state in ("RGB", "RC"):
            rows = states[ok] == state
            stats[f"coverage_{state}"] = float(np.mean(inside[rows])) if rows.any() else None
            stats[f"n_{state}"] = int(rows.sum())
        if baseline_width is not None:
            stats["width_vs_baseline"] = widths[target] / baseline_width[target]
        entry[target] = stats
    return entry, widths


def degraded(data_dir, n_folds, n_draws, salt="slam-degraded"):
    spec = get_spec("giants")
    table = load_training_table(spec, data_dir)
    keep, _, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    states = np.asarray(training_states(selected)).astype(str)
    truth = {name: _canonical_matrix(selected, [name])[:, 0]
             for name in ("teff", "logg", "fe_h", "alpha_m", "c_fe", "n_fe")}
    truth_mass = np.asarray(targets["mass"][keep], dtype=float)
    truth_age = np.asarray(targets["age"][keep], dtype=float)
    fold = kic_folds(kic, n_folds, salt="slam-degraded-folds")
    # (name, S/N, propagate_errors, allow_extrapolation)
    levels = [("APOGEE", None, False, False),
              *((f"S/N {s:g}", s, True, False) for s in SNR_LEVELS),
              *((f"S/N {s:g}, no propagation", s, False, False) for s in SNR_LEVELS),
              *((f"S/N {s:g}, every star (extrapolated)", s, True, True) for s in SNR_LEVELS)]
    collected = {name: [] for name, *_ in levels}
    rows_of = []
    for k in range(n_folds):
        started = time.perf_counter()
        model = train_model(spec, selected, test_mask=fold == k).model
        rows = np.flatnonzero(fold == k)
        rows_of.append(rows)
        fold_truth = {name: values[rows] for name, values in truth.items()}
        for name, snr, propagate, extrapolate in levels:
            if snr is None:
                stars = Table({"TEFF": fold_truth["teff"] * u.K,
                               "LOGG": fold_truth["logg"] * u.dex(u.cm / u.s**2),
                               "FE_H": fold_truth["fe_h"] * u.dex,
                               "ALPHA_M": fold_truth["alpha_m"] * u.dex,
                               "C_FE": fold_truth["c_fe"] * u.dex,
                               "N_FE": fold_truth["n_fe"] * u.dex})
            else:
                stars = _degraded_table(fold_truth, kic[rows], snr, salt)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = add_mass_age(stars, model=model, propagate_errors=propagate,
                                      allow_extrapolation=extrapolate, n_draws=n_draws, seed=k)
            collected[name].append(result[["mass", "mass_p16", "mass_p84", "age", "age_p16",
                                           "age_p84", "in_hull"]])
        print(f"fold {k + 1}/{n_folds}: {time.perf_counter() - started:.0f} s", flush=True)
    order = np.concatenate(rows_of)
    from astropy.table import vstack

    report, baseline = {}, None
    for name, *_ in levels:
        result = vstack(collected[name])
        entry, widths = _summarise(result, truth_mass[order], truth_age[order], states[order],
                                   baseline)
        if baseline is None:
            baseline = widths
        report[name] = entry
    return {"folds": n_folds, "n_draws": n_draws, "n_stars": len(selected),
            "scatter_at_snr100": {k: f"{v.value:g} {v.unit}"
                                  for k, v in SCATTER_AT_REFERENCE.items()},
            "levels": report}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="stellar_ml_ages/data/lamost_slam.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-draws", type=int, default=32)
    parser.add_argument("--skip-degraded", action="store_true")
    args = parser.parse_args(argv)
    data_dir = find_data_dir(args.data_dir)
    out = {"command": "python tools/lamost_slam_report.py --data-dir DATA "
                      f"--folds {args.folds} --n-draws {args.n_draws}"}
    out["zero_points"] = zero_points(data_dir)
    offsets = out["zero_points"]["dr14_minus_dr17"]
    measured = {name: offsets[name]["median"] for name in ("teff", "fe_h", "alpha_m")}
    out["zero_point_effect"] = sensitivity(
        data_dir, {**{name: {name: shift} for name, shift in measured.items()},
                   "all three": measured})
    # What unmeasured zero points would do. [Fe/H] = [M/H] + 0.05 read as [M/H] lowers
    # the [Fe/H] input by 0.05 and raises [N/Fe] = [N/M] + [M/H] - [Fe/H] by 0.05.
    out["sensitivity"] = sensitivity(data_dir, {
        "[Fe/H] - [M/H] = +0.05 dex": {"fe_h": -0.05, "n_fe": 0.05},
        "[N/M] +0.05 dex": {"n_fe": 0.05, "c_n": -0.05},
        "[C/M] +0.05 dex": {"c_n": 0.05},
        "log g +0.05 dex": {"logg": 0.05},
        "Teff +50 K": {"teff": 50.0},
    })
    print(json.dumps(out, indent=1), flush=True)
    if not args.skip_degraded:
        out["degraded"] = degraded(data_dir, args.folds, args.n_draws)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out.get("degraded", {}), indent=1))


if __name__ == "__main__":
    main()
