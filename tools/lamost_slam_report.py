"""What a LAMOST user with SLAM labels (Zhang, Liu & Deng 2020) should expect.

Measurements on the shared APOKASC/APOGEE catalogs, written to one JSON file that
docs/lamost.rst and `stellar_ml_ages.slam` read (``stellar_ml_ages/data/lamost_slam.json``):

``zero_points``
    SLAM's labels are on the APOGEE DR15 scale; DR15 re-released the DR14 ASPCAP
    values. APOKASC-2 Table 5 carries DR14 Teff, [Fe/H] and [α/Fe] for its stars,
    the shared DR17 files carry the final values: their differences are the part of
    the DR15 -> DR17 zero point that can be measured here.

``degraded``
    K-fold by KIC hash: a ``giants`` and a ``giants-slam`` model are trained on the
    other folds, and the held-out stars' APOGEE labels get the noise that puts them as
    far from the truth as SLAM's labels are at S/N_g = 100, 50, 30: SLAM's error
    (`stellar_ml_ages.slam.slam_error`: the published scatter against APOGEE, taken
    to grow as 100/S/N below 100, less APOGEE's noise) less the noise the APOGEE label
    already has; an upper bound takes the whole published scatter as SLAM's error.
    They are written under SLAM's names ([C/M], [N/M], [M/H], [alpha/M], Teff, logg,
    snrg), given errors by `slam_uncertainties` and annotated through `add_mass_age`:
    the path a LAMOST user's table takes. Reported per level: fraction inside the
    hull, median relative error, robust scatter and bias against the seismic truth,
    [p16, p84] coverage (all, RGB, RC), and interval width over the same star's with
    APOGEE labels; with and without propagation, and for every star with
    ``allow_extrapolation=True``. Also: the hull fraction with one label degraded.

``zero_point_effect``, ``sensitivity``
    Median (and median absolute) change of mass and age when the held-out stars'
    labels are shifted by the measured DR14 - DR17 offsets, or by assumed ones, each
    star predicted by the fold model that did not see it.

Usage::

    python tools/lamost_slam_report.py --data-dir ../shared/data

About 5 minutes on 2 cores (two models per fold).
"""

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from _provenance import git_commit  # tools/ is the script's directory
from astropy.stats import mad_std
from astropy.table import Column, Table, join, vstack

from stellar_ml_ages import add_mass_age
from stellar_ml_ages.slam import (
    APOGEE_LABEL_NOISE,
    REFERENCE_SNR,
    SCATTER_AT_REFERENCE,
    noise_to_add,
    slam_scatter,
    slam_uncertainties,
)
from stellar_ml_ages.training import get_spec, load_training_table
from stellar_ml_ages.training.catalogs import find_data_dir
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import (
    _canonical_matrix,
    _select,
    kic_normal,
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


#: Correlation given to the Teff, log g and [M/H] errors in the misspecified-noise test
#: (spectroscopic degeneracy: a hotter fit is also one of higher gravity and
#: metallicity); the error columns, and the models, take them as independent.
CORRELATION = 0.6


def _degraded_table(truth, kic, snr, salt, full_scatter=False, only=None, correlated=False,
                    population=None):
    """Truth labels written as a SLAM table with SLAM's noise at one S/N.

    The error columns are what `slam_uncertainties` writes for a SLAM table (the
    upper bound: the published scatter). ``only`` degrades one label alone;
    ``correlated`` correlates the Teff, log g and [M/H] errors (`CORRELATION`).

    ``population`` ({feature: (mean, variance)} of the training stars) gives
    *shrinkage-type* errors of the same size instead, as a data-driven label has:
    ``mean + lam (label - mean) + sqrt(lam) sigma e`` with ``lam = 1 - sigma^2 /
    variance`` (0 where the error reaches the population's spread). The error is
    then uncorrelated with the *reported* label, not with the truth, and the
    reported labels are narrower than the truth, never wider.
    """
    deviates = {label: kic_normal(kic, f"{salt}-{label}-{snr:g}") for label in _SLAM_COLUMNS}
    if correlated:
        for label in ("logg", "m_h"):
            deviates[label] = (CORRELATION * deviates["teff"]
                               + np.sqrt(1 - CORRELATION**2) * deviates[label])
    stars = Table()
    for label, (column, feature, unit) in _SLAM_COLUMNS.items():
        sigma = 0.0 if only not in (None, label) else noise_to_add(label, snr, full_scatter)
        sigma = float(getattr(sigma, "value", sigma))
        if population is None:
            stars[column] = (truth[feature] + sigma * deviates[label]) * unit
        else:
            mean, variance = population[feature]
            shrink = max(1.0 - sigma**2 / variance, 0.0)
            stars[column] = (mean + shrink * (truth[feature] - mean)
                             + np.sqrt(shrink) * sigma * deviates[label]) * unit
        if full_scatter:
            stars[f"e_{column}"] = np.full(len(kic), float(slam_scatter(label, snr))) * (
                u.K if label == "teff" else u.dex)
    stars["snrg"] = np.full(len(kic), snr)
    return slam_uncertainties(stars)


def _apogee_table(truth):
    return Table({"TEFF": truth["teff"] * u.K, "LOGG": truth["logg"] * u.dex(u.cm / u.s**2),
                  "FE_H": truth["fe_h"] * u.dex, "ALPHA_M": truth["alpha_m"] * u.dex,
                  "C_FE": truth["c_fe"] * u.dex, "N_FE": truth["n_fe"] * u.dex})


def _summarise(result, truth_mass, truth_age, states, baseline=None):
    """Errors, coverage and interval widths of one level, all folds together.

    ``baseline`` (the APOGEE-label level's result) gives each star's interval width
    with APOGEE labels; the width ratio is taken star by star on the stars both
    levels predict.
    """
    entry = {"n": len(result), "in_hull": float(np.mean(result["in_hull"]))}
    entry["predicted"] = float(np.mean(~np.ma.getmaskarray(result["mass"])))
    for target, truth in (("mass", truth_mass), ("age", truth_age)):
        value = np.ma.filled(result[target], np.nan).astype(float)
        low = np.ma.filled(result[f"{target}_p16"], np.nan).astype(float)
        high = np.ma.filled(result[f"{target}_p84"], np.nan).astype(float)
        ok = np.isfinite(value) & np.isfinite(truth) & (truth > 0)
        log_ratio = np.log(value[ok] / truth[ok])
        inside = (truth[ok] >= low[ok]) & (truth[ok] <= high[ok])
        width = 0.5 * np.log(high / low)
        stats = {
            "n_with_truth": int(ok.sum()),
            "median_rel_error": float(np.median(np.abs(value[ok] / truth[ok] - 1.0))),
            "bias": float(np.median(log_ratio)),
            "robust_scatter_ln": float(mad_std(log_ratio)),
            "coverage_p16_p84": float(np.mean(inside)),
            "median_half_width_ln": float(np.median(width[ok])),
        }
        for state in ("RGB", "RC"):
            rows = states[ok] == state
            stats[f"coverage_{state}"] = float(np.mean(inside[rows])) if rows.any() else None
            stats[f"n_{state}"] = int(rows.sum())
        if baseline is not None:
            base_width = 0.5 * np.log(
                np.ma.filled(baseline[f"{target}_p84"], np.nan).astype(float)
                / np.ma.filled(baseline[f"{target}_p16"], np.nan).astype(float))
            both = np.isfinite(width) & np.isfinite(base_width) & (base_width > 0)
            stats["width_vs_baseline"] = float(np.median(width[both] / base_width[both]))
        entry[target] = stats
    return entry


def _shifted(stars, moves):
    moved = stars.copy()
    for feature, shift in moves.items():
        column = moved[feature]
        moved[feature] = Column(np.asarray(column) + shift, unit=column.unit)
    return moved


#: Label shifts whose effect is measured with the fold models (feature -> shift, all
#: applied together, on APOGEE-named columns). [Fe/H] = [M/H] + 0.05 with [Fe/H] taken
#: as [M/H] lowers the [Fe/H] input by 0.05 and raises [N/Fe] (read as [N/M]) by 0.05,
#: while [C/N] = [C/M] - [N/M] stays exact: C_FE and N_FE move together.
_ASSUMED_SHIFTS = {
    "[Fe/H] - [M/H] = +0.05 dex": {"FE_H": -0.05, "N_FE": 0.05, "C_FE": 0.05},
    "[N/M] +0.05 dex": {"N_FE": 0.05},
    "[C/M] +0.05 dex": {"C_FE": 0.05},
    "log g +0.05 dex": {"LOGG": 0.05},
    "Teff +50 K": {"TEFF": 50.0},
}


def _shift_effects(collected, shifts):
    """Median signed and absolute change per shift set, over stars predicted both ways."""
    out = {}
    for name, moves in shifts.items():
        entry = {"shift": moves}
        for target in ("mass", "age"):
            base = np.concatenate([np.ma.filled(b[target], np.nan).astype(float)
                                   for b in collected["base"]])
            moved = np.concatenate([np.ma.filled(m[target], np.nan).astype(float)
                                    for m in collected[name]])
            ratio = moved / base - 1.0
            ratio = ratio[np.isfinite(ratio)]
            entry[f"{target}_median_change"] = float(np.median(ratio))
            entry[f"{target}_median_abs_change"] = float(np.median(np.abs(ratio)))
        out[name] = entry
    return out


def evaluate(data_dir, n_folds, n_draws, shifts, salt="slam-degraded"):
    """Out-of-fold evaluation: degraded labels by S/N, and label shifts, per fold model."""
    spec = get_spec("giants")
    table = load_training_table(spec, data_dir)
    keep, _, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    states = np.asarray(training_states(selected)).astype(str)
    truth = {name: _canonical_matrix(selected, [name])[:, 0]
             for name in ("teff", "logg", "fe_h", "alpha_m", "c_fe", "n_fe")}
    # The spread a data-driven label shrinks within: the training stars' own.
    population = {name: (float(np.nanmean(values)), float(np.nanvar(values)))
                  for name, values in truth.items()}
    truth_mass = np.asarray(targets["mass"][keep], dtype=float)
    truth_age = np.asarray(targets["age"][keep], dtype=float)
    fold = kic_folds(kic, n_folds, salt="slam-degraded-folds")
    # (name, S/N, propagate_errors, allow_extrapolation, noise, model); noise is
    # "slam" (slam_error, the model giants-slam is trained for), "full" (the whole
    # published scatter: upper bound) or "correlated" (slam_error with correlated
    # Teff, log g, [M/H] errors): the last two are noise the models do not assume.
    levels = [("APOGEE", None, False, False, "slam", "giants")]
    for model in ("giants", "giants-slam"):
        tag = "" if model == "giants" else ", giants-slam"
        if model == "giants-slam":
            levels.append(("APOGEE, giants-slam", None, False, False, "slam", model))
        for snr in SNR_LEVELS:
            levels += [(f"S/N {snr:g}{tag}", snr, True, False, "slam", model),
                       (f"S/N {snr:g}{tag}, every star (extrapolated)", snr, True, True,
                        "slam", model),
                       (f"S/N {snr:g}{tag}, full scatter (upper bound)", snr, True, False,
                        "full", model),
                       (f"S/N {snr:g}{tag}, correlated Teff-log g-[M/H] errors", snr, True,
                        False, "correlated", model),
                       (f"S/N {snr:g}{tag}, shrinkage-type errors", snr, True, False,
                        "shrinkage", model)]
            if model == "giants":
                levels.append((f"S/N {snr:g}, no propagation", snr, False, False, "slam",
                               model))
    slam_spec = get_spec("giants-slam")
    collected = {name: [] for name, *_ in levels}
    hull_alone = {label: [] for label in _SLAM_COLUMNS}
    shifted = {model: {"base": [], **{name: [] for name in shifts}}
               for model in ("giants", "giants-slam")}
    columns = ["mass", "mass_p16", "mass_p84", "age", "age_p16", "age_p84", "in_hull"]
    order = []
    for k in range(n_folds):
        started = time.perf_counter()
        models = {"giants": train_model(spec, selected, test_mask=fold == k).model,
                  "giants-slam": train_model(slam_spec, selected, test_mask=fold == k).model}
        model = models["giants"]
        rows = np.flatnonzero(fold == k)
        order.append(rows)
        fold_truth = {name: values[rows] for name, values in truth.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, snr, propagate, extrapolate, noise, which in levels:
                stars = _apogee_table(fold_truth) if snr is None else _degraded_table(
                    fold_truth, kic[rows], snr, salt, full_scatter=noise == "full",
                    correlated=noise == "correlated",
                    population=population if noise == "shrinkage" else None)
                result = add_mass_age(stars, model=models[which], propagate_errors=propagate,
                                      allow_extrapolation=extrapolate, n_draws=n_draws, seed=k)
                collected[name].append(result[columns])
            for label in _SLAM_COLUMNS:
                stars = _degraded_table(fold_truth, kic[rows], REFERENCE_SNR, salt, only=label)
                hull_alone[label].append(np.asarray(add_mass_age(stars, model=model)["in_hull"]))
            base = _apogee_table(fold_truth)
            for which, found in shifted.items():
                found["base"].append(add_mass_age(base, model=models[which])[columns])
                for name, moves in shifts.items():
                    found[name].append(
                        add_mass_age(_shifted(base, moves), model=models[which])[columns])
        print(f"fold {k + 1}/{n_folds}: {time.perf_counter() - started:.0f} s", flush=True)
    order = np.concatenate(order)  # the stars in the order the folds were stacked
    report, baseline = {}, None
    for name, *_ in levels:
        result = vstack(collected[name])
        report[name] = _summarise(result, truth_mass[order], truth_age[order], states[order],
                                  baseline)
        if baseline is None:
            baseline = result
    return {"folds": n_folds, "n_draws": n_draws, "n_stars": len(selected),
            "scatter_at_snr100": {k: f"{v.value:g} {v.unit}"
                                  for k, v in SCATTER_AT_REFERENCE.items()},
            "apogee_label_noise": {k: f"{v.value:g} {v.unit}"
                                   for k, v in APOGEE_LABEL_NOISE.items()},
            "levels": report,
            "in_hull_one_label_degraded_snr100": {
                label: float(np.mean(np.concatenate(values)))
                for label, values in hull_alone.items()}}, {
                which: _shift_effects(found, shifts) for which, found in shifted.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="stellar_ml_ages/data/lamost_slam.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-draws", type=int, default=32)
    args = parser.parse_args(argv)
    data_dir = find_data_dir(args.data_dir)
    out = {"command": "python tools/lamost_slam_report.py --data-dir DATA "
                      f"--folds {args.folds} --n-draws {args.n_draws}",
           "commit": git_commit(), "date": datetime.date.today().isoformat()}
    out["zero_points"] = zero_points(data_dir)
    offsets = out["zero_points"]["dr14_minus_dr17"]
    measured = {"TEFF": offsets["teff"]["median"], "FE_H": offsets["fe_h"]["median"],
                "ALPHA_M": offsets["alpha_m"]["median"]}
    shifts = {"teff": {"TEFF": measured["TEFF"]}, "fe_h": {"FE_H": measured["FE_H"]},
              "alpha_m": {"ALPHA_M": measured["ALPHA_M"]}, "all three": measured,
              **_ASSUMED_SHIFTS}
    degraded, effects = evaluate(data_dir, args.folds, args.n_draws, shifts)
    # Per model: the giants fold models, and the giants-slam ones.
    for which, suffix in (("giants", ""), ("giants-slam", "_giants_slam")):
        out[f"zero_point_effect{suffix}"] = {
            name: effects[which][name] for name in ("teff", "fe_h", "alpha_m", "all three")}
        out[f"sensitivity{suffix}"] = {name: effects[which][name] for name in _ASSUMED_SHIFTS}
    out["degraded"] = degraded
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out.get("degraded", {}), indent=1))


if __name__ == "__main__":
    main()
