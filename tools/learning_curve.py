"""How much would more training stars buy? The giants model's learning curve.

Each fold model of the packaged recipe (`train_model` with the ``giants`` spec:
labels, cleaning, forest, networks, calibration) is trained on a fraction of the
other KIC-hash folds' stars and predicts the held-out fold; every held-out star with
a seismic value is scored (inside or outside the hull, as the models report's
``median_rel_error_all``). The fractions are nested: a star kept at 50% is kept at
71% and 100%. Fraction 1 is the packaged recipe itself, so its numbers are the
models report's.

Why: every learner tried on the six labels ends at 5.2-5.3% in mass
(docs/models.rst, "Where the mass error comes from"). If the error still falls
steeply with the number of stars, more stars (a bigger seismic sample) are the
route; if it has flattened, the labels' information is. The rate per doubling of the
training stars (a straight line in log N, with a bootstrap over stars) says how many
more stars the 5.0% / 18.0% of issue #23 would take if the curve did not flatten.

Written to ``stellar_ml_ages/data/learning_curve.json``.

Usage::

    python tools/learning_curve.py --data-dir ../shared/data

About 20 minutes on 2 cores (four fractions, 10 folds).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _provenance import git_commit  # tools/ is the script's directory

from stellar_ml_ages.training import get_spec, load_training_table
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import _select, add_input_noise, train_model, training_states

#: Fractions of each fold's training stars, spaced by factors of sqrt(2).
FRACTIONS = (0.25, 0.5, 0.71, 1.0)
#: Resolution of the per-star draw that decides which stars a fraction keeps.
_SUBSAMPLE_BINS = 1000


def subsample_key(kic):
    """A per-star number in [0, 1), from a salted hash of KIC (nested subsets)."""
    return kic_folds(kic, _SUBSAMPLE_BINS, salt="stellar_ml_ages-learning-curve") / _SUBSAMPLE_BINS


def _median_error(predicted, truth):
    use = np.isfinite(predicted) & np.isfinite(truth)
    return float(np.median(np.abs(predicted[use] / truth[use] - 1)))


def learning_curve(spec, table, fractions=FRACTIONS, n_folds=10, say=print):
    """Out-of-fold predictions with each fraction of the training stars.

    Returns
    -------
    truth : dict
        Per target, the seismic value of every usable star (NaN where it has none).
    predicted : dict
        Per fraction, per target, every star's out-of-fold point estimate.
    summary : dict
        Per fraction (as a string): the mean number of training stars and, per
        target, the median relative error over every scored star, by state, and the
        fold-to-fold noise (standard deviation of the fold medians over
        sqrt(n_folds)).
    """
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    features = add_input_noise(spec, features[keep], kic)
    states = training_states(selected)
    fold = kic_folds(kic, n_folds)
    key = subsample_key(kic)
    truth = {target: np.asarray(targets[target][keep], dtype=float) for target in spec.targets}
    predicted, summary = {}, {}
    for fraction in fractions:
        predicted[fraction] = {target: np.full(len(selected), np.nan) for target in spec.targets}
        n_train = []
        for k in range(n_folds):
            start = time.time()
            held_out = fold == k
            # Left-out training stars join the test mask: train_model never trains on
            # them, and only fold k's stars are scored.
            not_trained = held_out | (key >= fraction)
            n_train.append(int((~not_trained).sum()))
            model = train_model(spec, selected, test_mask=not_trained).model
            rows = np.flatnonzero(held_out)
            prediction = model.predict(features[rows], states=states[rows])
            for target in spec.targets:
                predicted[fraction][target][rows] = prediction[target]["value"]
            say(f"  fraction {fraction:g} fold {k + 1}/{n_folds}: {n_train[-1]} training stars, "
                f"{time.time() - start:.0f} s")
        entry = {"mean_training_stars": float(np.mean(n_train))}
        for target in spec.targets:
            value = predicted[fraction][target]
            fold_medians = [_median_error(value[fold == k], truth[target][fold == k])
                            for k in range(n_folds)]
            entry[target] = {
                "n": int(np.isfinite(truth[target]).sum()),
                "median_rel_error_all": _median_error(value, truth[target]),
                "fold_noise": float(np.std(fold_medians) / np.sqrt(n_folds)),
                **{f"median_rel_error_{s}": _median_error(value[states == s],
                                                          truth[target][states == s])
                   for s in ("RGB", "RC")},
            }
        say(f"fraction {fraction:g}: " + ", ".join(
            f"{target} {100 * entry[target]['median_rel_error_all']:.2f}%"
            for target in spec.targets))
        summary[f"{fraction:g}"] = entry
    return truth, predicted, summary


def doubling_rate(n_train, errors):
    """Least-squares change of the error per doubling of the training stars.

    A straight line in log2 N. Learning curves flatten as N grows, so extrapolating
    the line beyond the largest N is optimistic: the number of doublings it needs to
    reach a target error is a lower bound, as far as the curve's shape goes.
    """
    slope, _ = np.polyfit(np.log2(n_train), errors, 1)
    return float(slope)


def rate_with_bootstrap(n_train, predicted, truth, target_error, n_boot=500, seed=0):
    """`doubling_rate` of the median relative error, its bootstrap sigma, and the
    doublings beyond the largest N the line needs to reach ``target_error`` (None if
    the error does not fall by more than twice its sigma, or is already there).

    The bootstrap resamples stars, the same draw at every fraction (the fractions
    share their test stars, so their errors move together).
    """
    fractions = sorted(predicted)
    use = np.isfinite(truth) & np.all([np.isfinite(predicted[f]) for f in fractions], axis=0)
    relative = np.array([np.abs(predicted[f][use] / truth[use] - 1) for f in fractions])
    n_train = np.asarray(n_train, dtype=float)
    rate = doubling_rate(n_train, np.median(relative, axis=1))
    rng = np.random.default_rng(seed)
    draws = [doubling_rate(n_train, np.median(relative[:, rng.integers(0, use.sum(), use.sum())],
                                              axis=1))
             for _ in range(n_boot)]
    sigma = float(np.std(draws))
    current = float(np.median(relative[-1]))
    # No count of doublings for a curve that does not fall by more than twice its
    # bootstrap noise: it would say nothing but the noise.
    falling = rate < -max(2 * sigma, 1e-9)
    return {"per_doubling": rate, "per_doubling_sigma": sigma, "target": target_error,
            "doublings_to_target": (float((target_error - current) / rate)
                                    if falling and current > target_error else None)}


#: The #23 targets the rate is extrapolated to (median relative error, every star).
TARGETS = {"mass": 0.050, "age": 0.180}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--spec", default="giants")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                             / "stellar_ml_ages" / "data"
                                             / "learning_curve.json"))
    args = parser.parse_args(argv)
    spec = get_spec(args.spec)
    table = load_training_table(spec, args.data_dir)
    truth, predicted, summary = learning_curve(spec, table, sorted(args.fractions), args.folds)
    n_train = [summary[f"{f:g}"]["mean_training_stars"] for f in sorted(predicted)]
    results = {"spec": spec.name, "curve": summary, "rate": {}}
    for target in spec.targets:
        rate = rate_with_bootstrap(n_train, {f: predicted[f][target] for f in predicted},
                                   truth[target], TARGETS.get(target, 0.0))
        results["rate"][target] = rate
        reach = ("" if rate["doublings_to_target"] is None else
                 f"; {rate['doublings_to_target']:.1f} more doublings to reach "
                 f"{100 * rate['target']:.1f}%")
        print(f"{target}: {100 * rate['per_doubling']:+.3f} "
              f"+- {100 * rate['per_doubling_sigma']:.3f} points per doubling of the "
              f"training stars{reach}")
    results["generated"] = {"date": time.strftime("%Y-%m-%d"), "n_folds": args.folds,
                            "commit": git_commit(),
                            "command": "python tools/learning_curve.py --data-dir DATA"}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
