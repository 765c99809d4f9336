"""Population ages out of fold: stacked predictive distributions against the truth.

Every usable giant of the shared training catalogs (preliminary APOKASC-3, labels
on the DR17 scale) is predicted by a ``giants`` model trained on the other folds
(KIC-hash folds, as the model cards), with its whole calibrated predictive
distribution (`stellar_ml_ages.distributions`). Only stars inside the fold model's
hull are scored (what `add_mass_age` predicts). Written to one JSON file that
``docs/population.rst`` reads (``stellar_ml_ages/data/population.json``):

``groups``
    Per group of stars ([Fe/H] bins, α-poor/α-rich, RGB/RC, all) and target: the
    Kolmogorov-Smirnov distance between the true distribution and (a) the histogram
    of point estimates, (b) the stacked predictive distributions
    (`stellar_ml_ages.population.population_distribution`), (c) a deconvolution
    (EM over the per-star likelihoods, prior replaced by the group's own); the
    fraction above a threshold (8 Gyr, 1.4 Msun) for each, with the bootstrap band
    of (b); and the fraction of bins whose true fraction lies in (b)'s band.
``trends``
    The age-[Fe/H] and age-[α/M] relations: true median, median of point estimates,
    median of the stacked distributions with its bootstrap band.
``coverage``
    [p2.5, p97.5] and [p16, p84] coverage, overall and per state.
``tails``
    Median relative bias and 68% coverage of the youngest/oldest (lightest/heaviest)
    10% of stars, point estimates against truth.
``band_by_sample_size``
    For random samples of 30 to 1,000 stars (100 each): how often the 68% and 95%
    bands of the fraction above the threshold hold what they are for (the whole
    set's true fraction for ``band_for="population"``, the sample's own for
    ``"sample"``).

Usage::

    python tools/population_report.py --data-dir ../shared/data

About 7 minutes on 2 cores (10 fold models; ``--folds 5`` halves it). The fold
predictions are cached in ``--cache`` (default: a file in the system's temporary
directory named after the giants recipe's settings, never in the repository).
"""

import argparse
import hashlib
import itertools
import json
import tempfile
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from _provenance import git_commit  # tools/ is the script's directory
from astropy.table import Table

from stellar_ml_ages.distributions import PredictiveDistribution
from stellar_ml_ages.population import deconvolve, population_distribution, population_trend
from stellar_ml_ages.training import get_spec, load_training_table
from stellar_ml_ages.training.catalogs import find_data_dir
from stellar_ml_ages.training.evaluation import cross_validated_predictions, stacked_prior

FE_H_BINS = (-np.inf, -0.3, 0.0, 0.2, np.inf)
#: α-rich: [α/M] above this line in [Fe/H] (the thick-disc sequence of APOGEE giants).
ALPHA_RICH = {"intercept": 0.12, "slope": -0.10}
THRESHOLD = {"age": 8.0, "mass": 1.4}
AGE_ALPHA_BINS = (-0.1, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
AGE_FE_H_BINS = (-1.0, -0.5, -0.3, -0.1, 0.1, 0.3, 0.6)
UNITS = {"age": u.Gyr, "mass": u.solMass}
EDGES = {"age": np.arange(0.0, 20.5, 0.5), "mass": np.arange(0.4, 4.05, 0.1)}


def fold_predictions(data_dir, n_folds, spec_name="giants", say=print):
    """Out-of-fold quantile grids of every usable star (arrays, one row per star)."""
    spec = get_spec(spec_name)
    table = load_training_table(spec, data_dir)
    predictions = cross_validated_predictions(spec, table, n_folds, progress=say)
    out = {"kic": np.asarray(predictions["KIC"]), "state": np.asarray(predictions["EVSTATE"]),
           "fold": np.asarray(predictions["fold"]), "in_hull": np.asarray(predictions["in_hull"]),
           "grid": np.asarray(predictions.meta["probability"])}
    for name in spec.features:
        out[f"feature:{name}"] = np.asarray(predictions[name])
    for target in spec.targets:
        out[f"{target}:true"] = np.asarray(predictions[f"{target}_true"])
        out[f"{target}:point"] = np.asarray(predictions[target])
        out[f"{target}:state"] = np.asarray(predictions[f"{target}_quantiles"])
        out[f"{target}:pooled"] = np.asarray(predictions[f"{target}_quantiles_pooled"])
    return out


def ks_distance(dist, truth):
    """sup |stacked CDF - empirical CDF of truth|, at the true values (both sides)."""
    truth = np.sort(truth)
    stacked = dist.stacked_cdf(truth * dist.unit)
    n = len(truth)
    upper = np.arange(1, n + 1) / n
    lower = np.arange(n) / n
    return float(max(np.max(np.abs(stacked - upper)), np.max(np.abs(stacked - lower))))


def ks_points(points, truth):
    from scipy.stats import ks_2samp

    return float(ks_2samp(points, truth).statistic)


def _floats(values):
    """Plain floats for JSON, None for NaN (no bootstrap)."""
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def _ks_binned(fraction, edges, truth):
    """KS distance between a binned distribution (CDF linear within bins) and the truth."""
    truth = np.sort(truth)
    cdf_edges = np.concatenate([[0.0], np.cumsum(fraction)]) / max(np.sum(fraction), 1e-300)
    model = np.interp(truth, edges, cdf_edges)
    n = len(truth)
    return float(max(np.max(np.abs(model - np.arange(1, n + 1) / n)),
                     np.max(np.abs(model - np.arange(n) / n))))


def _group_masks(arrays):
    fe_h = arrays["feature:fe_h"]
    alpha = arrays["feature:alpha_m"]
    rich = alpha > ALPHA_RICH["intercept"] + ALPHA_RICH["slope"] * fe_h
    groups = {"all": np.ones(len(fe_h), dtype=bool)}
    for low, high in itertools.pairwise(FE_H_BINS):
        label = ("[Fe/H] < -0.3" if low == -np.inf else "[Fe/H] > 0.2" if high == np.inf
                 else f"{low:g} < [Fe/H] < {high:g}")
        groups[label] = (fe_h >= low) & (fe_h < high)
    groups["alpha-poor"] = ~rich
    groups["alpha-rich"] = rich
    groups["RGB"] = arrays["state"] == "RGB"
    groups["RC"] = arrays["state"] == "RC"
    # Along the giant branch: the upper RGB (luminous, distant giants) and its base,
    # where the spread of the residuals differs most (models 3.3).
    logg = arrays["feature:logg"]
    groups["log g < 2.2"] = logg < 2.2
    groups["log g > 2.8"] = logg > 2.8
    # Populations selected on the *true* age (a field unlike Kepler's, with the same
    # labels-given-age relation): where the training prior is wrong, not the labels.
    age = np.where(np.isfinite(arrays["age:true"]), arrays["age:true"], np.nan)
    keep = np.random.default_rng(3).random(len(age))
    with np.errstate(invalid="ignore"):
        groups["young-selected"] = keep < np.exp(-np.nan_to_num(age, nan=99) / 2.0)
        groups["old-selected"] = keep < (np.nan_to_num(age, nan=0) / 14.0) ** 2
    return groups


def group_table(arrays, target, calibrated_by="state", n_bootstrap=200,
                em_iterations=(5, 10, 20, 50)):
    unit = UNITS[target]
    truth_all = arrays[f"{target}:true"]
    scored = arrays["in_hull"] & np.isfinite(truth_all)
    # The prior the packaged model's card records (`stacked_prior`).
    predictions = Table({f"{target}_true": truth_all, "in_hull": arrays["in_hull"],
                         f"{target}_quantiles": arrays[f"{target}:state"]})
    predictions.meta.update(probability=list(arrays["grid"]), n_folds=int(arrays["fold"].max()) + 1)
    prior = stacked_prior(predictions, target)
    dist_all = PredictiveDistribution(target, arrays["grid"], arrays[f"{target}:{calibrated_by}"],
                                      point=arrays[f"{target}:point"], unit=unit, prior=prior)
    edges = EDGES[target]
    threshold = THRESHOLD[target]
    prior_bins = dist_all.prior_fractions(edges * unit)
    groups = _group_masks(arrays)
    table = Table()
    rows = []
    for label, mask in groups.items():
        chosen = mask & scored
        dist = dist_all[chosen]
        truth = truth_all[chosen]
        points = arrays[f"{target}:point"][chosen]
        fake = Table({"row": np.arange(len(truth))})
        true_fraction = np.histogram(truth, edges)[0] / len(truth)
        k = int(np.searchsorted(edges, threshold))
        entry = {"group": label, "n": int(chosen.sum()),
                 "ks_points": ks_points(points, truth), "ks_stacked": ks_distance(dist, truth)}
        for band in (0.68, 0.95):
            # The truth here is these stars' own distribution: the "sample" band.
            binned = population_distribution(fake, target, bins=edges * unit,
                                             distribution=dist, n_bootstrap=n_bootstrap,
                                             band=band, band_for="sample", seed=1)
            inside = ((true_fraction >= binned["fraction_low"]) &
                      (true_fraction <= binned["fraction_high"]))
            occupied = (true_fraction > 0.01) | (np.asarray(binned["fraction"]) > 0.01)
            above = {"truth": float(np.mean(truth > threshold)),
                     "points": float(np.mean(points > threshold)),
                     "stacked": float(1 - binned["cumulative"][k - 1]),
                     "stacked_band": [float(1 - binned["cumulative_high"][k - 1]),
                                      float(1 - binned["cumulative_low"][k - 1])]}
            entry["above"] = above
            entry[f"bins_in_band{100 * band:g}"] = float(np.mean(inside[occupied]))
            entry[f"above_in_band{100 * band:g}"] = bool(
                above["stacked_band"][0] <= above["truth"] <= above["stacked_band"][1])
            entry[f"above_band{100 * band:g}"] = above["stacked_band"]
        # Per bin, for the docs' figures (the 95% band of the last pass).
        entry["bins"] = {"edges": _floats(edges), "truth": _floats(true_fraction),
                         "points": _floats(binned["point_fraction"]),
                         "stacked": _floats(binned["fraction"]),
                         "band95": [_floats(binned["fraction_low"]),
                                    _floats(binned["fraction_high"])]}
        for n_iterations in em_iterations:
            fraction = deconvolve(dist.bin_probabilities(edges * unit), prior_bins,
                                  n_iterations)
            entry[f"ks_em{n_iterations}"] = _ks_binned(fraction, edges, truth)
            entry[f"above_em{n_iterations}"] = float(fraction[k:].sum() / fraction.sum())
            entry["bins"][f"em{n_iterations}"] = _floats(fraction)
        rows.append(entry)
    table.meta["threshold"] = threshold
    return rows


def coverage_table(arrays, target, calibrated_by="state"):
    unit = UNITS[target]
    truth = arrays[f"{target}:true"]
    scored = arrays["in_hull"] & np.isfinite(truth)
    dist = PredictiveDistribution(target, arrays["grid"], arrays[f"{target}:{calibrated_by}"],
                                  unit=unit)
    out = {}
    for label, mask in {"all": scored, "RGB": scored & (arrays["state"] == "RGB"),
                        "RC": scored & (arrays["state"] == "RC")}.items():
        part = dist[mask]
        t = truth[mask]
        entry = {"n": int(mask.sum())}
        for low, high in ((0.16, 0.84), (0.025, 0.975), (0.05, 0.95), (0.005, 0.995)):
            inside = (t >= part.quantile(low).value) & (t <= part.quantile(high).value)
            entry[f"p{100 * low:g}_p{100 * high:g}"] = float(np.mean(inside))
        pit = part.pit(t)
        entry["pit_ks"] = float(np.max(np.abs(np.sort(pit) - (np.arange(len(pit)) + 0.5)
                                              / len(pit))))
        out[label] = entry
    return out


def tails_table(arrays, target):
    truth = arrays[f"{target}:true"]
    scored = arrays["in_hull"] & np.isfinite(truth)
    t = truth[scored]
    point = arrays[f"{target}:point"][scored]
    dist = PredictiveDistribution(target, arrays["grid"], arrays[f"{target}:state"][scored],
                                  unit=UNITS[target])
    inside = (t >= dist.quantile(0.16).value) & (t <= dist.quantile(0.84).value)
    low, high = np.quantile(t, [0.1, 0.9])
    out = {}
    for label, mask in (("lowest 10%", t <= low), ("highest 10%", t >= high)):
        out[label] = {"n": int(mask.sum()),
                      "median_rel_bias": float(np.median((point[mask] - t[mask]) / t[mask])),
                      "coverage_68": float(np.mean(inside[mask]))}
    slope = np.polyfit(np.log(t), np.log(point), 1)[0]
    out["log_slope_predicted_on_true"] = float(slope)
    return out


#: Sizes of the random samples whose bands are checked (well below the 7,853 scored
#: stars they are drawn from, without replacement), and samples per size.
BAND_SAMPLE_SIZES = (30, 100, 300, 1000)
BAND_SAMPLES = 100


def band_table(arrays, target, n_bootstrap=200):
    """How often the bands hold what they are for, by sample size: for random samples
    of the scored stars, the fraction above the threshold of the whole set (the
    "population" the sample was drawn from) inside the ``band_for="population"``
    band, and the sample's own true fraction inside the ``band_for="sample"`` one.
    Neither band includes the model's systematic error; these samples are drawn
    like the training set, where that error is smallest."""
    unit = UNITS[target]
    truth = arrays[f"{target}:true"]
    scored = np.flatnonzero(arrays["in_hull"] & np.isfinite(truth))
    dist_all = PredictiveDistribution(target, arrays["grid"], arrays[f"{target}:state"],
                                      point=arrays[f"{target}:point"], unit=unit)
    threshold = THRESHOLD[target]
    parent = float(np.mean(truth[scored] > threshold))
    edges = np.array([0.0, threshold, 1e3])
    rng = np.random.default_rng(11)
    out = {}
    for size in BAND_SAMPLE_SIZES:
        held = {(kind, band): [] for kind in ("population", "sample") for band in (0.68, 0.95)}
        for _ in range(BAND_SAMPLES):
            rows = rng.choice(scored, size, replace=False)
            target_value = {"population": parent,
                            "sample": float(np.mean(truth[rows] > threshold))}
            fake = Table({"row": np.arange(size)})
            for kind, band in held:
                binned = population_distribution(
                    fake, target, bins=edges * unit, distribution=dist_all[rows],
                    n_bootstrap=n_bootstrap, band=band, band_for=kind,
                    seed=int(rng.integers(2**31)))
                held[kind, band].append(bool(binned["fraction_low"][1] <= target_value[kind]
                                             <= binned["fraction_high"][1]))
        out[str(size)] = {f"{kind}_in_band{100 * band:g}": float(np.mean(hits))
                          for (kind, band), hits in held.items()}
    return out


def trend_tables(arrays, n_bootstrap=200):
    truth = arrays["age:true"]
    scored = arrays["in_hull"] & np.isfinite(truth)
    dist = PredictiveDistribution("age", arrays["grid"], arrays["age:state"][scored],
                                  point=arrays["age:point"][scored], unit=u.Gyr)
    table = Table({"FE_H": arrays["feature:fe_h"][scored] * u.dex,
                   "ALPHA_M": arrays["feature:alpha_m"][scored] * u.dex})
    out = {}
    for column, bins in (("FE_H", AGE_FE_H_BINS), ("ALPHA_M", AGE_ALPHA_BINS)):
        trend = population_trend(table, column, "age", bins=bins * u.dex, distribution=dist,
                                 band_for="sample",
                                 n_bootstrap=n_bootstrap, seed=2)
        x = np.asarray(table[column])
        rows = []
        for entry in trend:
            inside = (x >= entry["low"].value) & (x < entry["high"].value)
            t = truth[scored][inside]
            p = arrays["age:point"][scored][inside]
            rows.append({"low": float(entry["low"].value), "high": float(entry["high"].value),
                         "n": int(entry["n_stars"]),
                         "true_median": float(np.median(t)) if len(t) else None,
                         "true_p16": float(np.quantile(t, 0.16)) if len(t) else None,
                         "true_p84": float(np.quantile(t, 0.84)) if len(t) else None,
                         "point_median": float(entry["point_median"].value),
                         "point_p16": float(np.quantile(p, 0.16)) if len(p) else None,
                         "point_p84": float(np.quantile(p, 0.84)) if len(p) else None,
                         "stacked_median": float(entry["p50"].value),
                         "stacked_median_band": [float(entry["p50_low"].value),
                                                 float(entry["p50_high"].value)],
                         "stacked_p16": float(entry["p16"].value),
                         "stacked_p84": float(entry["p84"].value)})
        out[column] = rows
    return out


def cached_fold_predictions(data_dir, n_folds, cache=None):
    """`fold_predictions`, read from ``cache`` if there (written there if not).

    The default cache is a file in the system's temporary directory keyed by the
    giants recipe: a retrained recipe must not reuse another's predictions.
    """
    spec = get_spec("giants")
    recipe = hashlib.sha256(json.dumps([spec.features, spec.hyperparameters, spec.model_version],
                                       sort_keys=True, default=str).encode()).hexdigest()[:12]
    cache = Path(cache or Path(tempfile.gettempdir())
                 / f"stellar_ml_ages_population_{n_folds}_{recipe}.npz")
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            print(f"fold predictions from {cache}")
            return {key: stored[key] for key in stored.files}
    arrays = fold_predictions(data_dir, n_folds)
    np.savez(cache, **arrays)
    return arrays


def fold_prediction_run(argv, description, out_name):
    """The command line of a tool built on the giants fold predictions, parsed.

    ``--data-dir``, ``--folds``, ``--cache`` (`cached_fold_predictions`) and ``--out``
    (default ``stellar_ml_ages/data/<out_name>``). Returns the arguments, the data
    directory and the fold predictions.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=None, help="directory of the shared catalogs")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--cache", default=None, help="npz of fold predictions (reused)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                             / "stellar_ml_ages" / "data" / out_name))
    args = parser.parse_args(argv)
    data_dir = find_data_dir(args.data_dir)
    return args, data_dir, cached_fold_predictions(data_dir, args.folds, args.cache)


def main(argv=None):
    args, _, arrays = fold_prediction_run(argv, __doc__.split("\n\n")[0], "population.json")
    report = {"n_folds": args.folds, "n_stars": len(arrays["kic"]),
              "fraction_in_hull": float(np.mean(arrays["in_hull"])),
              "alpha_rich_line": ALPHA_RICH, "thresholds": THRESHOLD}
    for target in ("age", "mass"):
        report[target] = {"groups": group_table(arrays, target),
                          "groups_pooled": group_table(arrays, target, "pooled", n_bootstrap=0,
                                                       em_iterations=()),
                          "coverage": coverage_table(arrays, target),
                          "coverage_pooled": coverage_table(arrays, target, "pooled"),
                          "tails": tails_table(arrays, target),
                          "band_by_sample_size": band_table(arrays, target)}
    report["trends"] = trend_tables(arrays)
    commit = git_commit()
    report["generated"] = {"commit": commit, "date": time.strftime("%Y-%m-%d"),
                           "command": "python tools/population_report.py --data-dir DATA"}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for target in ("age", "mass"):
        print(f"\n{target}: group, n, KS points / stacked / EM5 / EM10 / EM20 / EM50, above "
              f"{THRESHOLD[target]} truth / points / stacked [95% band], bins in 68/95% band")
        for entry in report[target]["groups"]:
            above = entry["above"]
            print(f"  {entry['group']:<22} {entry['n']:5d}  {entry['ks_points']:.3f} / "
                  f"{entry['ks_stacked']:.3f} / {entry['ks_em5']:.3f} / {entry['ks_em10']:.3f} / "
                  f"{entry['ks_em20']:.3f} / {entry['ks_em50']:.3f}"
                  f"  {above['truth']:.3f} / {above['points']:.3f} / {above['stacked']:.3f} "
                  f"[{above['stacked_band'][0]:.3f}, {above['stacked_band'][1]:.3f}]"
                  f"  {entry['bins_in_band68']:.2f} {entry['bins_in_band95']:.2f}")
        print("  coverage:", json.dumps(report[target]["coverage"]))
        print("  tails:", json.dumps(report[target]["tails"]))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
