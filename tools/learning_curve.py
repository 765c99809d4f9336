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
route; if it has flattened, the labels' information is.

Written to ``stellar_ml_ages/data/learning_curve.json``.

Usage::

    python tools/learning_curve.py --data-dir ../shared/data

About 25 minutes on 2 cores (four fractions, 10 folds).
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
    """Out-of-fold median relative errors with each fraction of the training stars.

    Returns
    -------
    dict
        Per fraction (as a string): per target the median relative error over every
        scored star, by state, the fold-to-fold noise (standard deviation of the fold
        medians over sqrt(n_folds)), and the mean number of training stars.
    """
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    features = add_input_noise(spec, features[keep], kic)
    states = training_states(selected)
    fold = kic_folds(kic, n_folds)
    key = subsample_key(kic)
    out = {}
    for fraction in fractions:
        predicted = {target: np.full(len(selected), np.nan) for target in spec.targets}
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
                predicted[target][rows] = prediction[target]["value"]
            say(f"  fraction {fraction:g} fold {k + 1}/{n_folds}: {n_train[-1]} training stars, "
                f"{time.time() - start:.0f} s")
        entry = {"mean_training_stars": float(np.mean(n_train))}
        for target in spec.targets:
            truth = targets[target][keep]
            fold_medians = [_median_error(predicted[target][fold == k], truth[fold == k])
                            for k in range(n_folds)]
            entry[target] = {
                "n": int(np.isfinite(truth).sum()),
                "median_rel_error_all": _median_error(predicted[target], truth),
                "fold_noise": float(np.std(fold_medians) / np.sqrt(n_folds)),
                **{f"median_rel_error_{s}": _median_error(predicted[target][states == s],
                                                          truth[states == s])
                   for s in ("RGB", "RC")},
            }
        say(f"fraction {fraction:g}: " + ", ".join(
            f"{target} {100 * entry[target]['median_rel_error_all']:.2f}%"
            for target in spec.targets))
        out[f"{fraction:g}"] = entry
    return out


def power_law_fits(curve, target):
    """``error = floor + b N^-c`` through the curve's points, for a few fixed ``c``.

    Four points do not pin three parameters; the exponent is scanned instead
    (least squares in floor and b at each), and the best and the flattest
    acceptable fits are reported by the caller.
    """
    n = np.array([entry["mean_training_stars"] for entry in curve.values()])
    error = np.array([entry[target]["median_rel_error_all"] for entry in curve.values()])
    fits = []
    for c in np.arange(0.1, 2.01, 0.05):
        design = np.column_stack([np.ones_like(n), n ** -c])
        (floor, b), *_ = np.linalg.lstsq(design, error, rcond=None)
        rms = float(np.sqrt(np.mean((design @ [floor, b] - error) ** 2)))
        fits.append({"exponent": round(float(c), 2), "floor": float(floor), "b": float(b),
                     "rms": rms,
                     "error_at_2n": float(floor + b * (2 * n.max()) ** -c)})
    return fits


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
    curve = learning_curve(spec, table, sorted(args.fractions), args.folds)
    results = {"spec": spec.name, "curve": curve, "fits": {}}
    for target in spec.targets:
        fits = power_law_fits(curve, target)
        best = min(fits, key=lambda fit: fit["rms"])
        results["fits"][target] = {"best": best, "scan": fits}
        print(f"{target}: best power law exponent {best['exponent']}, floor "
              f"{100 * best['floor']:.2f}%, at twice the stars {100 * best['error_at_2n']:.2f}% "
              f"(rms {100 * best['rms']:.3f} points)")
    results["generated"] = {"date": time.strftime("%Y-%m-%d"), "n_folds": args.folds,
                            "commit": git_commit(),
                            "command": "python tools/learning_curve.py --data-dir DATA"}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
