"""Out-of-fold scores of the giants recipe: versions of the training labels and learner.

Every star of the full-range training table is predicted once, by the model of the
KIC-hash fold that did not see it (`train_model`: cleaning, forest, calibration,
hull), and scored against its seismic mass and age (preliminary APOKASC-3):

* median relative error of *all* stars scored (inside the hull or not) and of those
  inside it, for RGB and clump stars separately too;
* the DR17-input test: stars with all six final DR17 labels, predicted from those
  labels (what users have) by the same fold models, and from their preliminary labels
  mapped to the DR17 scale by a map fitted without the fold's stars (what the
  training uses for every star without final labels). Where the training labels are
  the final ones (``v3-labels`` on), the first are the out-of-fold predictions
  themselves, of stars inside the APOKASC-3 subset's mass cut (``true_p1_p99``);
* coverage of the 68% interval (the default robust intervals) overall, by state, and
  by true-value bin per state (mass < 1, 1-1.4, 1.4-1.8, > 1.8 Msun; age < 2, 2-5,
  5-9, > 9 Gyr), with the median ln bias in each bin; the worst bin of the
  posterior's intervals (``intervals="posterior"``) beside it;
* coverage of the 68% interval in tenths of log g (robust and posterior);
* how often the point estimate lies inside its own interval;
* log slopes of predicted on true value, per state (regression dilution).

Variants:

``v2``
    The version 2 training labels (every preliminary value mapped; scale terms from
    the ratio of deviations; clump term on the seismic state) and learner.
``v3-labels``
    Final DR17 labels where a star has them, the others mapped with offsets and the
    trends the overlap identifies (`load_full_range_training_table` defaults).
``v3.1``
    ``v3-labels`` and oblique inputs, the forest alone (models 3.1.0).
``v3.2``
    ``v3.1`` with the point estimate blended with a neural-network ensemble
    (``ModelSpec.network``; models 3.2).
``v3.3``
    For giants, ``v3.2`` with the predictive spread scaled along log g before the
    interval calibration (``spread_feature``; models 3.3: the same point estimates,
    other intervals).
``v3``
    The packaged spec as it is now: for giants, ``v3.3`` with the robust intervals'
    levels recalibrated along log g too (``robust_levels_along``; models 3.4: the
    same point estimates and posterior, other robust intervals).
``v3.1+directions``
    ``v3.1`` and each target's linear fit on the features as two more forest inputs
    (``target_directions``); measured, not packaged. Not in the default
    ``--variants``: ``--variants v3.1+directions`` adds it to the report.

Usage::

    python tools/models_report.py --data-dir ../shared/data [--variants v3.1,v3]

About 4 minutes per variant on 2 cores (10 folds; 6 with the giants networks). Written to
``stellar_ml_ages/data/models_report.json`` (``models_report_<spec>.json`` for another
``--spec``) with the commit each variant ran on; every variant after the first of a
run records its paired change in error against that first one (``change_vs``).
"""

import argparse
import dataclasses
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _paired import median_rel_error, paired_bootstrap  # tools/ is the script's directory
from _provenance import git_commit

from stellar_ml_ages.training import get_spec
from stellar_ml_ages.training.catalogs import load_full_range_training_table
from stellar_ml_ages.training.evaluation import kic_folds, state_bin_coverage
from stellar_ml_ages.training.pipeline import (
    _canonical_matrix,
    _select,
    add_input_noise,
    train_model,
    training_states,
)

#: Version 2 learner: the giants spec without what version 3 added.
V2_LEARNER = {"oblique_features": (), "network": None, "spread_feature": "",
              "robust_levels_along": ""}
#: Version 2 training labels: every preliminary value mapped (symmetric scale rule).
V2_LABELS = {"prefer_final": False, "scale_method": "symmetric"}


#: What models 3.4 added to a spec's intervals (robust levels along log g), taken away.
_NO_LEVELS = {"giants": {"robust_levels_along": ""}}
#: ... and what models 3.3 added (the spread along log g) too.
_NO_SPREAD = {"giants": {"spread_feature": "", "robust_levels_along": ""}}


def variants(spec_name):
    spec = get_spec(spec_name)
    v2_fields = {k: v for k, v in V2_LEARNER.items()
                 if k in {f.name for f in dataclasses.fields(spec)}}
    return {
        "v2": (dataclasses.replace(spec, **v2_fields), dict(V2_LABELS)),
        "v3-labels": (dataclasses.replace(spec, **v2_fields), {}),
        "v3.1": (dataclasses.replace(spec, network=None, **_NO_SPREAD.get(spec_name, {})), {}),
        "v3.2": (dataclasses.replace(spec, **_NO_SPREAD.get(spec_name, {})), {}),
        "v3.3": (dataclasses.replace(spec, **_NO_LEVELS.get(spec_name, {})), {}),
        "v3": (spec, {}),
        # Measured, not packaged: see docs/models.rst.
        "v3.1+directions": (dataclasses.replace(spec, network=None, target_directions=True,
                                                **_NO_SPREAD.get(spec_name, {})), {}),
    }


def fold_predictions(spec, table, n_folds, say=print, mapped_table_for=None):
    """Out-of-fold predictions from the training labels and from the final DR17 labels.

    With ``mapped_table_for``, a function of the test fold's KIC numbers returning the
    same stars with every label the preliminary run's, mapped to the DR17 scale by a
    map fitted without those stars (``prefer_final=False, map_fit_excluding=...``), the
    stars with final labels are predicted from those mapped labels too
    (``<target>_mapped``; NaN where a mapped label is missing).
    """
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    states = training_states(selected)
    features = add_input_noise(spec, features[keep], kic)
    dr17 = selected.copy(copy_data=True)
    for name in ("TEFF", "LOGG", "FE_H", "C_FE", "N_FE", "ALPHA_M"):
        dr17[name] = selected[f"{name}_DR17"]
    dr17_features = add_input_noise(spec, _canonical_matrix(dr17, spec.features), kic)
    has_dr17 = np.all(np.isfinite(dr17_features), axis=1)
    fold = kic_folds(kic, n_folds)
    out = {"kic": kic, "state": states, "fold": fold, "has_dr17": has_dr17, "features": features,
           "in_hull": np.zeros(len(kic), bool), "in_hull_dr17": np.zeros(len(kic), bool)}
    if mapped_table_for is not None:
        out.update({f"{target}{suffix}": np.full(len(kic), np.nan) for target in spec.targets
                    for suffix in ("_mapped", "_dr17_shifted")})
        out["label_difference"] = np.full((len(kic), len(spec.features)), np.nan)
    for target in spec.targets:
        out[f"{target}_true"] = targets[target][keep]
        for suffix in ("", "_p2.5", "_p16", "_p84", "_p97.5", "_p16_posterior",
                       "_p84_posterior", "_dr17"):
            out[f"{target}{suffix}"] = np.full(len(kic), np.nan)
    for k in range(n_folds):
        start = time.time()
        model = train_model(spec, selected, test_mask=fold == k).model
        rows = np.flatnonzero(fold == k)
        out["in_hull"][rows] = model.in_hull(features[rows])
        predicted = model.predict(features[rows], quantiles=(0.025, 0.16, 0.84, 0.975),
                                  states=states[rows])
        posterior = model.predict(features[rows], quantiles=(0.16, 0.84), states=states[rows],
                                  intervals="posterior")
        dr17_rows = rows[has_dr17[rows]]
        out["in_hull_dr17"][dr17_rows] = model.in_hull(dr17_features[dr17_rows])
        from_dr17 = model.predict(dr17_features[dr17_rows], quantiles=(0.16, 0.84),
                                  states=states[dr17_rows])
        if mapped_table_for is not None:
            mapped = mapped_table_for(kic[rows])
            row_of = {k: i for i, k in enumerate(np.asarray(mapped["KIC"]))}
            mapped_features = add_input_noise(
                spec, _canonical_matrix(mapped[[row_of[k] for k in kic[dr17_rows]]],
                                        spec.features), kic[dr17_rows])
            has_mapped = np.all(np.isfinite(mapped_features), axis=1)
            mapped_rows = dr17_rows[has_mapped]
            from_mapped = model.predict(mapped_features[has_mapped], states=states[mapped_rows])
            difference = mapped_features[has_mapped] - dr17_features[mapped_rows]
            out["label_difference"][mapped_rows] = difference
            # The final labels moved by the mean difference alone: how much of the
            # shift between the two predictions is a zero point.
            shifted = model.predict(dr17_features[mapped_rows] + difference.mean(axis=0),
                                    states=states[mapped_rows])
        for target in spec.targets:
            out[target][rows] = predicted[target]["value"]
            out[f"{target}_p16"][rows] = predicted[target][0.16]
            out[f"{target}_p84"][rows] = predicted[target][0.84]
            out[f"{target}_p2.5"][rows] = predicted[target][0.025]
            out[f"{target}_p97.5"][rows] = predicted[target][0.975]
            out[f"{target}_p16_posterior"][rows] = posterior[target][0.16]
            out[f"{target}_p84_posterior"][rows] = posterior[target][0.84]
            out[f"{target}_dr17"][dr17_rows] = from_dr17[target]["value"]
            if mapped_table_for is not None:
                out[f"{target}_mapped"][mapped_rows] = from_mapped[target]["value"]
                out[f"{target}_dr17_shifted"][mapped_rows] = shifted[target]["value"]
        say(f"  fold {k + 1}/{n_folds}: {time.time() - start:.0f} s")
    return out


def _slope(predicted, truth):
    use = np.isfinite(predicted) & np.isfinite(truth)
    return float(np.polyfit(np.log(truth[use]), np.log(predicted[use]), 1)[0])


def _states(state):
    """The states scored separately: RGB and RC, those the spec trains on."""
    return [s for s in ("RGB", "RC") if np.any(state == s)]


def scores(arrays, targets, features=()):
    state = arrays["state"]
    out = {}
    for target in targets:
        truth, value = arrays[f"{target}_true"], arrays[target]
        inside = arrays["in_hull"]
        entry = {"n": int(np.isfinite(truth).sum()),
                 "median_rel_error_all": median_rel_error(value, truth),
                 "median_rel_error_in_hull": median_rel_error(value[inside], truth[inside]),
                 "fraction_in_hull": float(inside[np.isfinite(truth)].mean())}
        for s in _states(state):
            rows = state == s
            entry[f"median_rel_error_{s}"] = median_rel_error(value[rows], truth[rows])
            entry[f"log_slope_{s}"] = _slope(value[rows], truth[rows])
        dr17 = arrays["has_dr17"]
        entry["dr17_input"] = {
            "n": int((dr17 & np.isfinite(truth)).sum()),
            "median_rel_error": median_rel_error(arrays[f"{target}_dr17"][dr17], truth[dr17]),
            "median_rel_error_training_labels": median_rel_error(value[dr17], truth[dr17]),
            "true_p1_p99": [float(v) for v in np.nanpercentile(truth[dr17], [1, 99])],
        }
        # Every star of that range, and those of them without all six final labels:
        # how much of the subset's lower error is its range.
        low, high = entry["dr17_input"]["true_p1_p99"]
        in_range = (truth >= low) & (truth <= high)
        entry["dr17_input"]["median_rel_error_all_in_range"] = median_rel_error(
            value[in_range], truth[in_range])
        entry["dr17_input"]["median_rel_error_in_range_without_all_final"] = median_rel_error(
            value[in_range & ~dr17], truth[in_range & ~dr17])
        if f"{target}_mapped" in arrays:
            both = dr17 & np.isfinite(arrays[f"{target}_mapped"]) & np.isfinite(truth)
            from_dr17, mapped = arrays[f"{target}_dr17"][both], arrays[f"{target}_mapped"][both]
            shift = np.log(from_dr17 / mapped)
            entry["dr17_input"].update({
                "n_mapped": int(both.sum()),
                "median_rel_error_mapped_labels": median_rel_error(mapped, truth[both]),
                # Prediction from DR17 labels against the same model's from the mapped
                # preliminary ones (zero point and per-star differences together).
                "median_ln_dr17_over_mapped": float(np.median(shift)),
                "median_abs_ln_dr17_over_mapped": float(np.median(np.abs(shift))),
                # Mapped minus final label, mean over the same stars: what the map's
                # (median) offsets leave; and the shift those means alone cause.
                "mean_label_difference": dict(zip(
                    features, (float(v) for v in arrays["label_difference"][both].mean(axis=0)),
                    strict=True)),
                "median_ln_dr17_over_dr17_shifted": float(np.median(np.log(
                    from_dr17 / arrays[f"{target}_dr17_shifted"][both]))),
            })
        coverage = state_bin_coverage({**arrays, "EVSTATE": state}, target)
        entry["coverage"] = coverage
        has = np.isfinite(truth) & np.isfinite(arrays[f"{target}_p2.5"])
        entry["coverage_p2.5_p97.5"] = float(np.mean(
            (truth[has] >= arrays[f"{target}_p2.5"][has])
            & (truth[has] <= arrays[f"{target}_p97.5"][has])))
        # By *predicted* value too, per state: tenths of the point estimate.
        entry["coverage_by_predicted_tenth"] = {}
        for s in _states(state):
            for label, low_name, high_name in (("robust", "_p16", "_p84"),
                                               ("posterior", "_p16_posterior",
                                                "_p84_posterior")):
                rows = (state == s) & np.isfinite(truth) & np.isfinite(value)
                edges = np.quantile(value[rows], np.linspace(0, 1, 11))
                which = np.clip(np.searchsorted(edges, value[rows], side="right") - 1, 0, 9)
                inside = ((truth[rows] >= arrays[f"{target}{low_name}"][rows])
                          & (truth[rows] <= arrays[f"{target}{high_name}"][rows]))
                entry["coverage_by_predicted_tenth"][f"{s} {label}"] = [
                    float(inside[which == k].mean()) for k in range(10)]
        # Along the giant branch: tenths of log g (the labels as predicted), all states;
        # the calibration is by state and predicted value, not by label.
        if "logg" in features:
            logg = arrays["features"][:, list(features).index("logg")]
            rows = np.isfinite(truth) & np.isfinite(value) & np.isfinite(logg)
            edges = np.quantile(logg[rows], np.linspace(0, 1, 11))
            which = np.clip(np.searchsorted(edges, logg[rows], side="right") - 1, 0, 9)
            entry["coverage_by_logg_tenth"] = {"edges": [float(e) for e in edges]}
            for label, low_name, high_name in (("robust", "_p16", "_p84"),
                                               ("posterior", "_p16_posterior",
                                                "_p84_posterior")):
                inside = ((truth[rows] >= arrays[f"{target}{low_name}"][rows])
                          & (truth[rows] <= arrays[f"{target}{high_name}"][rows]))
                entry["coverage_by_logg_tenth"][label] = [
                    float(inside[which == k].mean()) for k in range(10)]
        # Where the point estimate (posterior mean under the training prior) falls
        # outside its own reference-prior interval: the compression made visible.
        has = np.isfinite(value) & np.isfinite(arrays[f"{target}_p16"])
        entry["point_inside_interval"] = float(np.mean(
            (value[has] >= arrays[f"{target}_p16"][has])
            & (value[has] <= arrays[f"{target}_p84"][has])))
        entry["worst_bin_coverage"] = min(row["p16_p84"] for row in coverage
                                          if row["bin"] != "all" and row["n"] >= 20)
        # The same for the posterior's intervals (intervals="posterior"), for comparison.
        posterior = state_bin_coverage(
            {**arrays, "EVSTATE": state, f"{target}_p16": arrays[f"{target}_p16_posterior"],
             f"{target}_p84": arrays[f"{target}_p84_posterior"]}, target)
        entry["worst_bin_coverage_posterior"] = min(
            row["p16_p84"] for row in posterior if row["bin"] != "all" and row["n"] >= 20)
        out[target] = entry
    return out


def paired_changes(arrays, reference, targets):
    """Change in median relative error against ``reference`` (the same stars, in the
    same order), percentage points: (mean, spread) of a paired bootstrap, for all
    stars, each state and the DR17-input test."""
    if not np.array_equal(arrays["kic"], reference["kic"]):
        raise ValueError("the two variants scored different stars")
    out = {}
    for target in targets:
        truth = arrays[f"{target}_true"]
        entry = {"all": paired_bootstrap(arrays[target], reference[target], truth)}
        for s in _states(arrays["state"]):
            rows = arrays["state"] == s
            entry[s] = paired_bootstrap(arrays[target][rows], reference[target][rows],
                                        truth[rows])
        dr17 = arrays["has_dr17"]
        entry["dr17_input"] = paired_bootstrap(arrays[f"{target}_dr17"][dr17],
                                               reference[f"{target}_dr17"][dr17], truth[dr17])
        out[target] = entry
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--spec", default="giants")
    parser.add_argument("--variants", default="v2,v3-labels,v3.1,v3")
    parser.add_argument("--save-arrays", default=None, metavar="DIR",
                        help="also write each variant's out-of-fold arrays to DIR/<variant>.npz")
    parser.add_argument("--out", default=None,
                        help="default: stellar_ml_ages/data/models_report.json for giants, "
                             "models_report_<spec>.json for another spec")
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.spec == "giants" else f"_{args.spec}"
        args.out = str(Path(__file__).resolve().parents[1] / "stellar_ml_ages" / "data"
                       / f"models_report{suffix}.json")
    warnings.simplefilter("ignore")  # catalog unit strings; the numbers are what matter
    known = variants(args.spec)
    report = {"commit": git_commit(), "date": datetime.date.today().isoformat(),
              "spec": args.spec, "n_folds": args.folds, "variants": {}}
    path = Path(args.out)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("spec") == args.spec and previous.get("n_folds") == args.folds:
            report["variants"] = previous["variants"]
    first = None  # the first variant of this run: the others' paired changes are against it
    for name in args.variants.split(","):
        spec, table_options = known[name]
        print(f"{name}: {table_options or 'default training labels'}")
        table = load_full_range_training_table(args.data_dir, **table_options)

        def mapped_table_for(test_kic, options=table_options):
            return load_full_range_training_table(
                args.data_dir, **{**options, "prefer_final": False,
                                  "map_fit_excluding": test_kic})

        arrays = fold_predictions(spec, table, args.folds, mapped_table_for=mapped_table_for)
        if args.save_arrays:
            Path(args.save_arrays).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.save_arrays) / f"{name}.npz",
                     **{k: np.asarray(v) for k, v in arrays.items()})
        report["variants"][name] = {"table": table.meta["label_choice"],
                                    "scores": scores(arrays, spec.targets, spec.features),
                                    "commit": report["commit"], "date": report["date"]}
        if first is None:
            first = name, arrays
        else:
            report["variants"][name]["change_vs"] = {"variant": first[0],
                                                     **paired_changes(arrays, first[1],
                                                                      spec.targets)}
        for target, entry in report["variants"][name]["scores"].items():
            print(f"  {target}: all {100 * entry['median_rel_error_all']:.2f}%, in hull "
                  f"{100 * entry['median_rel_error_in_hull']:.2f}%, DR17 input "
                  f"{100 * entry['dr17_input']['median_rel_error']:.2f}% "
                  f"(n={entry['dr17_input']['n']}), "
                  + ", ".join(f"{s} {100 * entry[f'median_rel_error_{s}']:.2f}% (slope "
                              f"{entry[f'log_slope_{s}']:.2f})"
                              for s in ("RGB", "RC") if f"log_slope_{s}" in entry)
                  + f", worst bin {100 * entry['worst_bin_coverage']:.0f}%")
        path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
