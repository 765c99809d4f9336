"""How much would more training stars buy? The giants model's learning curve.

Each fold model of the packaged recipe (`train_model` with the ``giants`` spec:
labels, cleaning, forest, networks, calibration) is trained on a fraction of the
other KIC-hash folds' stars and predicts the held-out fold; every held-out star with
a seismic value is scored (inside or outside the hull, as the models report's
``median_rel_error_all``). The fractions are nested: a star kept at 50% is kept at
71% and 100%. Which stars a fraction keeps is one salted hash of KIC; the curve is
drawn again with other salts ("draws"), so that the rate says how much it depends on
which stars were kept. Fraction 1 is the packaged recipe itself (the same in every
draw), so its numbers are the models report's.

Why: every learner tried on the six labels ends at 5.2-5.3% in mass
(docs/models.rst, "Where the mass error comes from"). If the error still falls
steeply with the number of stars, more stars (a bigger seismic sample) are the
route; if it has flattened, the labels' information is. The rate per doubling of the
training stars (a straight line in log N, with a bootstrap over stars) says how many
more stars the 5.0% / 18.0% of issue #23 would take if the curve did not flatten.

Written to ``stellar_ml_ages/data/learning_curve.json``.

Usage::

    python tools/learning_curve.py --data-dir ../shared/data

About 30 minutes on 2 cores (four fractions, two draws, 10 folds).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _paired import median_rel_error  # tools/ is the script's directory
from _provenance import git_commit

from stellar_ml_ages.training import get_spec, load_training_table
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import _select, add_input_noise, train_model, training_states

#: Fractions of each fold's training stars (a quarter to all, roughly evenly in log N).
FRACTIONS = (0.25, 0.5, 0.71, 1.0)
#: Draws of the stars each fraction keeps (salts of the hash).
DRAWS = (0, 1)
#: The #23 targets the rate is extrapolated to (median relative error, every star).
TARGETS = {"mass": 0.050, "age": 0.180}
#: Resolution of the per-star number that decides which stars a fraction keeps.
_SUBSAMPLE_BINS = 1000


def subsample_key(kic, draw=0):
    """A per-star number in [0, 1) from a salted hash of KIC, one salt per draw.

    A fraction f keeps the stars whose number is below f, so the subsets of one draw
    are nested. The salt differs from the folds' (`kic_folds`), so the number does not
    follow the fold.
    """
    salt = "stellar_ml_ages-learning-curve" + (f"-{draw}" if draw else "")
    return kic_folds(kic, _SUBSAMPLE_BINS, salt=salt) / _SUBSAMPLE_BINS


def learning_curve(spec, table, fractions=FRACTIONS, n_folds=10, draws=DRAWS, say=print):
    """Out-of-fold predictions with each fraction of the training stars.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
    table : `~astropy.table.Table`
        The spec's training table (`~stellar_ml_ages.training.load_training_table`).
    fractions : sequence of float
        Fractions of each fold's training stars, in (0, 1].
    n_folds : int
        KIC-hash folds (`~stellar_ml_ages.training.evaluation.kic_folds`).
    draws : sequence of int
        Salts of the hash that picks the stars a fraction keeps; fraction 1 keeps
        every star and is trained once for all draws.
    say : callable
        Progress messages.

    Returns
    -------
    truth : dict
        Per target, the seismic value of every usable star (NaN where it has none).
    predicted : dict
        Per ``(draw, fraction)``, per target, every star's out-of-fold point estimate.
    n_train : dict
        Per ``(draw, fraction)``, the mean number of training stars of the fold models.
    states : `~numpy.ndarray`
        Every usable star's evolutionary state.
    fold : `~numpy.ndarray`
        Every usable star's fold.
    """
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    features = add_input_noise(spec, features[keep], kic)
    states = training_states(selected)
    fold = kic_folds(kic, n_folds)
    truth = {target: np.asarray(targets[target][keep], dtype=float) for target in spec.targets}
    predicted, n_train = {}, {}
    for draw in draws:
        key = subsample_key(kic, draw)
        for fraction in fractions:
            if fraction >= 1 and draw != draws[0]:
                predicted[draw, fraction] = predicted[draws[0], fraction]
                n_train[draw, fraction] = n_train[draws[0], fraction]
                continue
            predicted[draw, fraction] = {target: np.full(len(selected), np.nan)
                                         for target in spec.targets}
            counts = []
            for k in range(n_folds):
                start = time.time()
                held_out = fold == k
                # Left-out training stars join the test mask: train_model never
                # trains on them, and only fold k's stars are scored.
                not_trained = held_out | (key >= fraction)
                counts.append(int((~not_trained).sum()))
                model = train_model(spec, selected, test_mask=not_trained).model
                rows = np.flatnonzero(held_out)
                prediction = model.predict(features[rows], states=states[rows])
                for target in spec.targets:
                    predicted[draw, fraction][target][rows] = prediction[target]["value"]
                say(f"  draw {draw} fraction {fraction:g} fold {k + 1}/{n_folds}: "
                    f"{counts[-1]} training stars, {time.time() - start:.0f} s")
            n_train[draw, fraction] = float(np.mean(counts))
            errors = {target: median_rel_error(predicted[draw, fraction][target], truth[target])
                      for target in spec.targets}
            say(f"draw {draw} fraction {fraction:g}: "
                + ", ".join(f"{target} {100 * error:.2f}%" for target, error in errors.items()))
    return truth, predicted, n_train, states, fold


def summarize(truth, predicted, n_train, states, fold):
    """Per draw and fraction: training stars and, per target, the median relative
    error over every scored star, by state, and the fold-to-fold noise (standard
    error of the fold medians)."""
    n_folds = int(fold.max()) + 1
    out = {}
    for (draw, fraction), values in predicted.items():
        entry = {"mean_training_stars": n_train[draw, fraction]}
        for target, value in values.items():
            fold_medians = [median_rel_error(value[fold == k], truth[target][fold == k])
                            for k in range(n_folds)]
            entry[target] = {
                "n": int(np.isfinite(truth[target]).sum()),
                "median_rel_error_all": median_rel_error(value, truth[target]),
                "fold_noise": float(np.std(fold_medians, ddof=1) / np.sqrt(n_folds)),
                **{f"median_rel_error_{s}": median_rel_error(value[states == s],
                                                          truth[target][states == s])
                   for s in ("RGB", "RC")},
            }
        out.setdefault(str(draw), {})[f"{fraction:g}"] = entry
    return out


def doubling_rate(n_train, errors):
    """Least-squares change of the error per doubling of the training stars.

    A straight line in log2 N, the simplest description of four points that show no
    clear flattening. Learning curves are expected to flatten as N grows, so
    extrapolating the line beyond the largest N is, if anything, optimistic.

    Parameters
    ----------
    n_train, errors : array-like
        Training stars and the error at each point of the curve.

    Returns
    -------
    float
        The slope, in units of ``errors`` per doubling (negative if it falls).
    """
    slope, _ = np.polyfit(np.log2(n_train), errors, 1)
    return float(slope)


def rate_with_bootstrap(curve, truth, target_error, n_boot=500, seed=0):
    """`doubling_rate` of the median relative error, with a bootstrap over stars.

    Parameters
    ----------
    curve : dict
        Per fraction, ``(n_train, predicted)``: the mean number of training stars and
        every star's point estimate.
    truth : `~numpy.ndarray`
        The seismic values.
    target_error : float or None
        The median relative error to count doublings to.
    n_boot : int
    seed : int

    Returns
    -------
    dict
        ``per_doubling`` (the rate), ``per_doubling_sigma`` (its bootstrap sigma: the
        stars scored are resampled, the same draw at every fraction, since the
        fractions share their test stars; which stars were trained on is not
        resampled), ``target`` and ``doublings_to_target``: the doublings beyond the
        largest N the line needs, counted from the measured error there, or None if
        the error does not fall by more than twice its sigma or is already there.
    """
    fractions = sorted(curve)
    n_train = np.array([curve[f][0] for f in fractions], dtype=float)
    predicted = [curve[f][1] for f in fractions]
    use = np.isfinite(truth) & np.all([np.isfinite(p) for p in predicted], axis=0)
    relative = np.array([np.abs(p[use] / truth[use] - 1) for p in predicted])
    rate = doubling_rate(n_train, np.median(relative, axis=1))
    rng = np.random.default_rng(seed)
    draws = [doubling_rate(n_train, np.median(relative[:, rng.integers(0, use.sum(), use.sum())],
                                              axis=1))
             for _ in range(n_boot)]
    sigma = float(np.std(draws))
    return {"per_doubling": rate, "per_doubling_sigma": sigma, "target": target_error,
            "doublings_to_target": doublings_to_target(target_error,
                                                       float(np.median(relative[-1])),
                                                       rate, sigma)}


def doublings_to_target(target_error, current, rate, sigma):
    """Doublings of the training stars a line of slope ``rate`` (error per doubling)
    needs from the error ``current`` to ``target_error``; None without a target, if
    the target is already reached, or if the line does not fall by more than twice
    its ``sigma`` (a count that would say nothing but the noise)."""
    falling = rate < -max(2 * sigma, 1e-9)
    if target_error is None or not falling or current <= target_error:
        return None
    return float((target_error - current) / rate)


def combine_draws(rates):
    """The draws' rates together: their mean, and a sigma that adds the spread
    between draws (which stars were trained on) to the bootstrap's (which were
    scored).

    Parameters
    ----------
    rates : list of dict
        `rate_with_bootstrap` results, one per draw.

    Returns
    -------
    dict
        ``per_doubling``, ``per_doubling_sigma`` (the root of the mean bootstrap
        variance plus the variance between draws, ddof 1; the bootstrap's alone for a
        single draw) and ``per_doubling_by_draw``.
    """
    values = np.array([rate["per_doubling"] for rate in rates])
    bootstrap = np.mean([rate["per_doubling_sigma"] ** 2 for rate in rates])
    between = float(np.var(values, ddof=1)) if len(values) > 1 else 0.0
    return {"per_doubling": float(values.mean()),
            "per_doubling_sigma": float(np.sqrt(bootstrap + between)),
            "per_doubling_by_draw": values.tolist()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--spec", default="giants")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    parser.add_argument("--draws", type=int, nargs="+", default=DRAWS)
    parser.add_argument("--out", default=None,
                        help="default: stellar_ml_ages/data/learning_curve.json for giants, "
                             "learning_curve_<spec>.json otherwise")
    args = parser.parse_args(argv)
    spec = get_spec(args.spec)
    out = args.out or str(Path(__file__).resolve().parent.parent / "stellar_ml_ages" / "data"
                          / ("learning_curve.json" if spec.name == get_spec("giants").name
                             else f"learning_curve_{args.spec}.json"))
    table = load_training_table(spec, args.data_dir)
    fractions = sorted(args.fractions)
    truth, predicted, n_train, states, fold = learning_curve(spec, table, fractions,
                                                             args.folds, args.draws)
    results = {"spec": spec.name, "draws": list(args.draws),
               "curve": summarize(truth, predicted, n_train, states, fold), "rate": {}}
    for target in spec.targets:
        by_draw = [rate_with_bootstrap({f: (n_train[draw, f], predicted[draw, f][target])
                                        for f in fractions},
                                       truth[target], TARGETS.get(target))
                   for draw in args.draws]
        combined = combine_draws(by_draw)
        target_error = TARGETS.get(target)
        combined["target"] = target_error
        combined["doublings_to_target"] = doublings_to_target(
            target_error, median_rel_error(predicted[args.draws[0], fractions[-1]][target],
                                           truth[target]),
            combined["per_doubling"], combined["per_doubling_sigma"])
        combined["by_draw"] = by_draw
        results["rate"][target] = combined
        reach = ("" if combined["doublings_to_target"] is None else
                 f"; {combined['doublings_to_target']:.1f} more doublings to reach "
                 f"{100 * target_error:.1f}%")
        print(f"{target}: {100 * combined['per_doubling']:+.3f} "
              f"+- {100 * combined['per_doubling_sigma']:.3f} points per doubling of the "
              f"training stars (draws: "
              f"{', '.join(f'{100 * r:+.3f}' for r in combined['per_doubling_by_draw'])}){reach}")
    results["generated"] = {"date": time.strftime("%Y-%m-%d"), "n_folds": args.folds,
                            "commit": git_commit(),
                            "command": "python tools/learning_curve.py --data-dir DATA"}
    Path(out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
