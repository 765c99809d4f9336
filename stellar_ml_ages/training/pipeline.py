"""Train one model from a catalog table, following the paper's recipe.

1. Select stars of the spec's evolutionary states with every feature and target.
2. Split by a hash of the KIC number: a test split that never depends on row
   order, and that no step below sees.
3. Cleaning pass, on the training split only: a ``cleaning_estimators``-tree
   forest predicts each training star out of bag; stars missed by more than the
   spec's absolute or relative limits are dropped. (The paper cleans both halves,
   which flatters its test metrics; this is the honest variant.)
4. Z-score standardisation with the cleaned training stars' means and deviations.
5. Final forest per target, on the natural log of the target; for specs with a
   ``network``, a neural-network ensemble on the same inputs too
   (`fit_network`), blended with the forest into the point estimate.
6. Uncertainty calibration on the whole training split: out-of-bag predictions
   of the final forest (blended with the networks' out-of-fold ones) for the kept
   stars, all-tree predictions for the stars the cleaning removed; the quantiles
   of ``(ln y - mean) / sigma`` become the card's calibration table. For specs
   with a ``spread_feature``, sigma is first scaled along that input
   (`spread_scale`).
7. Convex hull of the standardised training features.
8. Metrics on the untouched test split, for stars inside the hull, exactly as the
   paper defines them, plus the coverage of the [p16, p84] and [p2.5, p97.5] intervals.
"""

import datetime
import hashlib
import math
import platform
import warnings
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..columns import resolve_columns
from ..exceptions import StellarMLAgesWarning, TrainingDataError
from ..features import get_feature
from ..forest import CompactForest
from ..hull import ConvexHullDomain
from ..model import (
    _ALONG_VERSION,
    MassAgeModel,
    spread_factor,
    validate_card,
    with_oblique_inputs,
)
from ..reference_prior import fit_reference_prior, group_robust_quantiles, worst_cell_coverage
from ..units import feature_matrix

__all__ = ["CALIBRATION_PROBABILITIES", "TRUE_VALUE_BINS", "TrainingResult", "choose_prior_power",
           "kic_test_mask", "paper_metrics", "spread_scale", "train_model"]

#: Inner edges of the true-value bins in which coverage is reported per state (and
#: by which `choose_prior_power` judges the robust intervals): Msun, Gyr.
TRUE_VALUE_BINS = {"mass": (1.0, 1.4, 1.8), "age": (2.0, 5.0, 9.0)}
#: Fewest stars of a state and true-value bin that `choose_prior_power` judges.
MIN_STARS_PER_CELL = 50
#: The central 68.27% interval `choose_prior_power` judges each power by.
_CENTRAL_68 = ((1 - 0.68268949) / 2, (1 + 0.68268949) / 2)

#: Probabilities at which the predictive distribution is calibrated.
CALIBRATION_PROBABILITIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.16, 0.25, 0.5,
                             0.75, 0.84, 0.9, 0.95, 0.975, 0.99, 0.995)


def kic_uniform(kic, salt):
    """A number in [0, 1) per star from a salted sha256 of its KIC: row-order independent."""
    return np.array([
        int.from_bytes(hashlib.sha256(f"{salt}:{int(k)}".encode()).digest()[:8], "big") / 2.0**64
        for k in np.asarray(kic)
    ])


def kic_normal(kic, salt):
    """A standard normal deviate per star from `kic_uniform`: row-order independent."""
    from scipy.special import ndtri

    return ndtri(np.clip(kic_uniform(kic, salt), 1e-12, 1 - 1e-12))


def kic_test_mask(kic, fraction, salt="stellar_ml_ages-test-split"):
    """True for stars in the test split, chosen by a salted sha256 of the KIC number."""
    return kic_uniform(kic, salt) < fraction


def paper_metrics(predicted, true):
    """The paper's test metrics of a prediction.

    Returns
    -------
    dict
        ``dispersion`` (std of predicted - true), ``mean_abs_error``,
        ``median_abs_error``, ``mean_rel_error``, ``median_rel_error``
        (relative errors as fractions), and ``n``.

    Examples
    --------
    >>> from stellar_ml_ages.training.pipeline import paper_metrics
    >>> paper_metrics([1.1, 0.9], [1.0, 1.0])["median_rel_error"]
    0.1
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    difference = predicted - true
    relative = np.abs(difference) / true
    return {
        "n": len(true),
        "dispersion": float(np.std(difference)),
        "mean_abs_error": float(np.mean(np.abs(difference))),
        "median_abs_error": float(np.median(np.abs(difference))),
        "mean_rel_error": float(np.mean(relative)),
        "median_rel_error": float(round(np.median(relative), 12)),
    }


@dataclass
class TrainingResult:
    """What `train_model` produced.

    Attributes
    ----------
    model : `~stellar_ml_ages.model.MassAgeModel`
    test_table : `~astropy.table.Table`
        The held-out stars (every selected star not in the training split).
    train_kic : ndarray
        KIC numbers of the stars the final forests were trained on.
    n_removed : int
        Training stars dropped by the cleaning pass (summed over targets).
    predictions : `~astropy.table.Table` or None
        Out-of-fold predictions when cross-validated.
    """

    model: MassAgeModel
    test_table: object
    train_kic: np.ndarray
    n_removed: int
    #: Out-of-fold predictions, set by `~stellar_ml_ages.training.evaluation.train_and_validate`.
    predictions: object = None


def _forest(n_estimators, spec):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=n_estimators, min_samples_leaf=spec.min_samples_leaf,
        max_features=spec.max_features, bootstrap=True, n_jobs=2, random_state=spec.seed,
    )


def _oob_moments(forest, compact, features):
    """Out-of-bag mean and variance of the mixture, for the forest's own training rows."""
    leaves = compact.leaves(features)
    in_bag = np.zeros(leaves.shape, dtype=bool)
    for tree, rows in enumerate(forest.estimators_samples_):
        in_bag[rows, tree] = True
    weight = (~in_bag).astype(np.float64)
    count = weight.sum(axis=1)
    tree_mean = compact.value[leaves].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (tree_mean * weight).sum(axis=1) / count
        second = ((compact.variance[leaves] + tree_mean**2) * weight).sum(axis=1) / count
    return mean, np.maximum(second - mean**2, 0.0), count


def _offsets(z):
    """Calibrated z offsets at `CALIBRATION_PROBABILITIES` from standardised residuals."""
    offsets = np.quantile(z, CALIBRATION_PROBABILITIES)
    probabilities = np.asarray(CALIBRATION_PROBABILITIES)
    # Keep the point estimate inside every central interval, and the table monotonic.
    offsets = np.where(probabilities < 0.5, np.minimum(offsets, 0.0), offsets)
    offsets = np.where(probabilities > 0.5, np.maximum(offsets, 0.0), offsets)
    return np.maximum.accumulate(offsets)


#: Calibration stars per bin of predicted value (at most `_MAX_BINS` bins per group):
#: enough that the 0.5% and 99.5% quantiles rest on a few stars each.
_STARS_PER_BIN = 500
_MAX_BINS = 5


def _equal_count_bins(values, n_bins, assign=None):
    """Up to ``n_bins`` bins of equal count in ``values``, and the bin of each value.

    Tied values can make quantile edges coincide: only distinct edges are kept, so
    there may be fewer bins. Returns the edges and, for each value of ``assign``
    (default ``values``), its bin (the outer bins take what lies beyond the edges).
    """
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    which = np.searchsorted(edges, values if assign is None else assign, side="right") - 1
    return edges, np.clip(which, 0, max(len(edges) - 1, 1) - 1)


def _binned_offsets(z, mean):
    """Offsets in bins of the predicted value, with the bins' median predictions as centres.

    Prediction interpolates the offsets linearly between centres (and holds them
    beyond the outer centres), so intervals change smoothly with the prediction.
    """
    edges, which = _equal_count_bins(
        mean, int(np.clip(len(z) // _STARS_PER_BIN, 1, _MAX_BINS)))
    centres, table, counts = [], [], []
    for b in range(max(len(edges) - 1, 1)):
        rows = which == b
        if not rows.any():
            continue
        centres.append(float(np.median(mean[rows])))
        table.append([float(v) for v in _offsets(z[rows])])
        counts.append(int(rows.sum()))
    return {"centre": centres, "z": table, "n": counts}


#: Calibration stars per bin of the spread feature (`spread_scale`), and at most so
#: many bins: the 68% quantile of each bin rests on hundreds of stars.
_STARS_PER_SPREAD_BIN = 1000
_MAX_SPREAD_BINS = 8
#: Calibration stars per bin of the robust levels' feature (within a state), and at
#: most so many bins: the outer levels (0.5%, 99.5%) rest on about five stars a bin.
_STARS_PER_LEVEL_BIN = 1000
_MAX_LEVEL_BINS = 4
#: The probability inside one sigma of a normal distribution's mean.
_ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))


def spread_scale(log_target, mean, variance, count, values, feature):
    """How the predictive spread changes along one input: the card's calibration ``spread``.

    The calibration stars are split into bins of equal count in ``values`` (the
    feature, canonical units); a bin's factor is its 68.27% quantile of
    ``|ln y - mean| / sigma`` over that of all the stars. The model multiplies its
    sigma by the factor, interpolated between the bins' median values
    (``stellar_ml_ages.model.spread_factor``), before the calibration by state and
    predicted value, which is fitted on residuals standardised by the scaled sigma.

    Parameters
    ----------
    log_target, mean, variance, count : ndarray
        The calibration stars (as `_calibration` takes them).
    values : ndarray
        The feature's value per star.
    feature : str
        Its canonical name, recorded in the entry.

    Returns
    -------
    dict
        ``{"feature", "centre", "factor", "n"}``.
    """
    usable = (count > 0) & (variance > 0) & np.isfinite(values)
    z = np.abs(log_target[usable] - mean[usable]) / np.sqrt(variance[usable])
    values = values[usable]
    edges, which = _equal_count_bins(
        values, int(np.clip(len(z) // _STARS_PER_SPREAD_BIN, 1, _MAX_SPREAD_BINS)))
    overall = np.quantile(z, _ONE_SIGMA)
    centres, factors, counts = [], [], []
    for b in range(max(len(edges) - 1, 1)):
        rows = which == b
        if not rows.any():
            continue
        centres.append(float(np.median(values[rows])))
        factors.append(float(np.quantile(z[rows], _ONE_SIGMA) / overall))
        counts.append(int(rows.sum()))
    return {"feature": feature, "centre": centres, "factor": factors, "n": counts}


def _calibration(log_target, mean, variance, count, states=None, groups=()):
    """The card's calibration: pooled offsets, and offsets by group and predicted value.

    Split-conformal in spirit: the standardised out-of-bag residuals
    ``(ln y - mean) / sigma`` of training stars give the quantile offsets. Computing
    them separately per evolutionary state and per bin of the predicted value
    (Mondrian calibration) makes the intervals hold in each group, not only on
    average. Stars of a state not listed in ``groups`` (or of unknown state) use
    the pooled ``"all"`` bins.
    """
    usable = (count > 0) & (variance > 0)
    z = (log_target[usable] - mean[usable]) / np.sqrt(variance[usable])
    predicted = mean[usable]
    bins = {"all": _binned_offsets(z, predicted)}
    if states is not None:
        states = np.asarray(states)[usable]
        for group in groups:
            rows = states == group
            if rows.sum() >= _STARS_PER_BIN // 2:
                bins[group] = _binned_offsets(z[rows], predicted[rows])
    return {"probability": list(CALIBRATION_PROBABILITIES),
            "z": [float(v) for v in _offsets(z)],
            "n_out_of_bag": int(usable.sum()),
            "bins": bins,
            # Predicted values (ln) between which every bin has calibration stars.
            "calibrated_log_range": [float(np.quantile(predicted, 0.025)),
                                     float(np.quantile(predicted, 0.975))]}


def choose_prior_power(knots, probability, log_truth, states, groups, powers, bins,
                       log_predicted=None, log_range=None, along=None):
    """The power of the prior the robust intervals divide by, chosen on the training stars.

    For each candidate power the reference prior is fitted per state
    (`~stellar_ml_ages.reference_prior.fit_reference_prior`, levels recalibrated as
    the card's are) and the robust [p16, p84] of every star taken. The score of a
    power is the lowest coverage of those intervals over the cells of state and bin
    of the *true* value and, with ``log_predicted``, of state and tenth of the
    *predicted* value (cells of at least ``MIN_STARS_PER_CELL`` stars): robust
    intervals are meant to hold given either. The answer is the smallest power
    whose score is within one standard deviation of the best score, that of the
    difference of two binomial fractions of those two cells' sizes: a wider
    interval is not bought for a difference the cells cannot tell. The
    recalibration keeps each state's coverage at 68% whatever the power; a larger
    power moves coverage from the middle of the true range to its ends, and, past
    some power, away from the stars predicted at the ends. Without a cell of
    ``MIN_STARS_PER_CELL`` stars the answer is 1 (one division, the likelihood).

    Parameters
    ----------
    knots : ndarray, shape (n_stars, n_levels)
        The stars' calibrated predictive quantiles (ln y) at ``probability``.
    probability : array-like
    log_truth : ndarray
        True ln y.
    states : ndarray of str
    groups : sequence of str
        The states fitted separately.
    powers : sequence of float
        Candidates, each >= 1.
    bins : sequence of float
        Inner edges of the true-value bins (linear units of the target).
    log_predicted : ndarray, optional
        The stars' point estimates (ln y), for the cells of predicted value; stars
        without a finite one are in no such cell.
    log_range, along
        As for ``fit_reference_prior``.

    Returns
    -------
    power : float
    scores : list of dict
        Per candidate: ``power``, the worst cell's coverage by true value
        (``worst_true``), by predicted value (``worst_predicted``, with
        ``log_predicted``; None where no cell is large enough), the lower of the
        two (``worst_p16_p84``) and the size ``n`` of that cell.
    """
    knots = np.asarray(knots, dtype=np.float64)
    log_truth = np.asarray(log_truth, dtype=np.float64)
    states = np.asarray(states)
    if len(powers) == 0 or any(not (np.isfinite(p) and p >= 1) for p in powers):
        raise ValueError(f"candidate powers must be finite numbers >= 1; got {list(powers)}")
    edges = np.log(np.asarray(bins, dtype=np.float64))
    which_bin = np.searchsorted(edges, log_truth, side="right")
    true_cells = np.array([f"{state} {b}" for state, b in zip(states, which_bin, strict=True)],
                          dtype=object)
    predicted_cells = np.full(len(knots), None, dtype=object)
    if log_predicted is not None:
        log_predicted = np.asarray(log_predicted, dtype=np.float64)
        for group in groups:
            rows = np.flatnonzero((states == group) & np.isfinite(log_predicted))
            if len(rows):
                _, tenth = _equal_count_bins(log_predicted[rows], 10)
                predicted_cells[rows] = [f"{group} {b}" for b in tenth]
    usable = np.all(np.isfinite(knots), axis=1) & np.isfinite(log_truth)
    scores = []
    for power in powers:
        fitted = fit_reference_prior(knots, probability, log_truth,
                                     {group: states == group for group in groups},
                                     log_range=log_range, along=along, power=power)
        inside = np.zeros(len(knots), dtype=bool)
        judged = np.zeros(len(knots), dtype=bool)
        for group, entry in fitted["groups"].items():
            rows = states == group
            values = None if along is None else np.asarray(along[1], dtype=np.float64)[rows]
            low, high = group_robust_quantiles(entry, knots[rows], probability, _CENTRAL_68,
                                               values)
            with np.errstate(invalid="ignore"):
                inside[rows] = (log_truth[rows] >= low) & (log_truth[rows] <= high)
            judged[rows] = usable[rows]
        cells = [worst_cell_coverage(inside, np.where(judged, labels, None), MIN_STARS_PER_CELL)
                 for labels in (true_cells, predicted_cells)]
        found = [cell for cell in cells if cell[1] > 0]
        worst, n = min(found) if found else (None, 0)
        scores.append({
            "power": float(power),
            "worst_true": round(cells[0][0], 12) if cells[0][1] else None,
            **({"worst_predicted": round(cells[1][0], 12) if cells[1][1] else None}
               if log_predicted is not None else {}),
            "worst_p16_p84": None if worst is None else round(worst, 12), "n": n})
    judged_scores = [score for score in scores if score["n"]]
    if not judged_scores:
        return 1.0, scores
    best = max(judged_scores, key=lambda score: score["worst_p16_p84"])

    def noise(score):  # one sigma of the difference of the two cells' fractions
        return math.sqrt(0.6827 * 0.3173 * (1 / best["n"] + 1 / score["n"]))

    chosen = min(score["power"] for score in judged_scores
                 if score["worst_p16_p84"] >= best["worst_p16_p84"] - noise(score))
    return chosen, scores


def _reference_prior(model, target, stars, groups, along=None, powers=()):
    """The card's ``reference_prior`` of one target, from the calibration stars.

    Their calibrated predictive distributions (out of bag, as the calibration's) are
    stacked into each state's prior, and the levels recalibrated on them
    (`~stellar_ml_ages.reference_prior.fit_reference_prior`). The ``"all"`` group,
    used for stars of unknown state, is fitted on the distributions those stars get:
    the pooled calibration's. The reference is bounded by the range of the true
    values the forests were trained on (the card's ``training_range``). With
    ``along`` (feature name, its value per calibration star), the levels are
    recalibrated in bins of that feature too, within each group. With candidate
    ``powers``, the power of the prior divided out is chosen by
    `choose_prior_power` (on the state groups, judged by true and by predicted
    value) and used for every group; the choice and its scores are the entry's
    ``prior_power_choice``.
    """
    log_target, mean, variance, count, states = stars
    usable = (count > 0) & (variance > 0)
    grid = np.asarray(model.target(target)["calibration"]["probability"], dtype=np.float64)
    mean, sigma, states = mean[usable], np.sqrt(variance[usable]), states[usable]
    log_range = np.log(model.target(target)["training_range"])
    if along is not None:
        along = (along[0], along[1][usable], lambda values: _equal_count_bins(
            values, int(np.clip(len(values) // _STARS_PER_LEVEL_BIN, 1, _MAX_LEVEL_BINS))))
    knots = (mean + model._offset_table(target, mean, states, grid) * sigma).T
    power, scores = 1.0, None
    if powers:
        power, scores = choose_prior_power(knots, grid, log_target[usable], states, groups,
                                           powers, TRUE_VALUE_BINS[target],
                                           log_predicted=mean, log_range=log_range,
                                           along=along)
    by_state = fit_reference_prior(
        knots, grid, log_target[usable], {group: states == group for group in groups},
        log_range=log_range, along=along, power=power)
    pooled = fit_reference_prior(
        (mean + model._offset_table(target, mean, None, grid) * sigma).T, grid,
        log_target[usable], {"all": np.ones(len(mean), dtype=bool)}, log_range=log_range,
        along=along, power=power)
    by_state["groups"] = {**pooled["groups"], **by_state["groups"]}
    if scores is not None:
        by_state["prior_power_choice"] = {
            "power": power, "rule": "smallest power whose worst [p16, p84] coverage over "
            "the cells of state x true-value bin and state x tenth of the predicted value "
            f"(cells of >= {MIN_STARS_PER_CELL} calibration stars) is within one sigma of "
            "the best (binomial, of the difference of the two cells' fractions); 1 without "
            "such a cell", "bins": list(TRUE_VALUE_BINS[target]),
            "scores": scores}
    return by_state


def _canonical_matrix(table, names):
    """Features in canonical units, found by the same resolver users' tables go through."""
    return feature_matrix(table, resolve_columns(table, names)).values


def _target_values(table, spec):
    """Each target in its unit, NaN where missing or outside ``spec.target_limits``."""
    import astropy.units as u

    values = {}
    for target, (column, unit) in spec.targets.items():
        quantity = table[column]
        converted = np.ma.filled(np.ma.asarray(quantity, dtype=np.float64), np.nan)
        if quantity.unit is not None:
            converted = quantity.unit.to(u.Unit(unit), converted)
        low, high = spec.target_limits.get(target, (0.0, np.inf))
        with np.errstate(invalid="ignore"):
            converted = np.where((converted > low) & (converted < high), converted, np.nan)
        values[target] = converted
    return values


def _software():
    import astropy
    import scipy
    import sklearn

    software = {"python": platform.python_version(), "numpy": np.__version__,
                "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                "astropy": astropy.__version__, "stellar_ml_ages": __version__}
    commit = _source_commit()
    if commit is not None:
        software["stellar_ml_ages_commit"] = commit
    return software


def _checkout_commit(directory):
    """``(top, commit)`` of the git checkout around ``directory``, or None outside one.

    ``commit`` is the short hash of HEAD, with ``-dirty`` if a tracked ``.py`` file of
    the repository differs from it (any of them, not only the package's: tools, tests
    and docs scripts too, since the report tools stamp their results with this).
    """
    import subprocess
    from pathlib import Path

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=directory, timeout=30).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        commit = git("rev-parse", "--short=9", "HEAD")
        modified = git("status", "--porcelain", "--untracked-files=no", "--", ":/*.py")
    except (OSError, subprocess.SubprocessError):
        return None
    return top, commit + ("-dirty" if modified else "")


def _source_commit():
    """The git commit the running package's source is at, or None if not a checkout.

    An editable install's version string is frozen when it was installed, so a card
    trained from a checkout names the commit too (`_checkout_commit`: ``-dirty`` if a
    tracked ``.py`` file of the repository differs from it). None for an installed
    package, or if the git repository around it is not this package's.

    Examples
    --------
    >>> from stellar_ml_ages.training.pipeline import _source_commit
    >>> commit = _source_commit()
    >>> commit is None or len(commit.removesuffix("-dirty")) >= 7
    True
    """
    from pathlib import Path

    package = Path(__file__).resolve().parents[1]
    checkout = _checkout_commit(package)
    if checkout is None:
        return None
    top, commit = checkout
    if (top / package.name / "__init__.py").resolve() != package / "__init__.py":
        return None
    return commit


def training_states(table):
    """The ``EVSTATE`` column as stripped strings."""
    return np.char.strip(np.asarray(table["EVSTATE"]).astype(str))


_SEISMIC_SOURCES = {"full_range": "APOKASC-3 (preliminary)", "apokasc2": "APOKASC-2"}


def _select(table, spec):
    """Stars of the spec's states with every feature and at least one target.

    Returns the row mask, the canonical feature matrix and the target arrays (NaN
    where a star lacks that target) of the whole table.
    """
    state = training_states(table)
    features = _canonical_matrix(table, spec.features)
    targets = _target_values(table, spec)
    keep = np.isin(state, spec.evolutionary_states) & np.all(np.isfinite(features), axis=1)
    keep &= np.any([np.isfinite(values) for values in targets.values()], axis=0)
    if keep.sum() < 10 * (len(spec.features) + 1):
        raise TrainingDataError(
            f"only {int(keep.sum())} usable stars for {spec.name}; check the catalogs")
    return keep, features, targets


def add_input_noise(spec, features, kic, labels=True):
    """Features with the spec's training input noise added, one seeded draw per star.

    ``labels=False`` leaves out ``spec.label_noise`` (the fractional ``input_noise``
    stays).

    The draw of a star depends only on its KIC and the spec's seed (not on row
    order), so cross-validation folds and the final model see the same noisy value.
    """
    noisy = np.array(features, dtype=np.float64, copy=True)
    for name, fraction in spec.input_noise.items():
        if name not in spec.features:  # e.g. a selection run without that candidate
            continue
        column = spec.features.index(name)
        noisy[:, column] *= 1.0 + fraction * kic_normal(kic, f"input-noise:{spec.seed}:{name}")
    if labels and spec.label_noise:
        # One draw per star and *label*: a feature made of several labels ([C/N] =
        # [C/Fe] - [N/Fe]) moves with the features that share them ([N/Fe]).
        draws = {label: sigma * kic_normal(kic, f"label-noise:{spec.seed}:{label}")
                 for label, sigma in spec.label_noise.items()}
        if spec.label_noise_shrinkage > 0:
            shrinking = (kic_uniform(kic, f"label-shrinkage:{spec.seed}")
                         < spec.label_noise_shrinkage)
            for label, sigma in spec.label_noise.items():
                values = _label_values(spec.features, features, label)
                if values is None or not shrinking.any():
                    continue
                draws[label] = np.where(shrinking, _shrinkage_draw(values, sigma,
                                                                   draws[label] / sigma
                                                                   if sigma else 0.0),
                                        draws[label])
        for column, name in enumerate(spec.features):
            for sign, label in _label_terms(name, draws):
                noisy[:, column] += sign * draws[label]
    return noisy


def _label_values(feature_names, features, label):
    """A label's values from the feature matrix: its own column, or solved from a
    feature made of it and other features ([C/Fe] = [C/N] + [N/Fe]); None if neither."""
    if label in feature_names:
        return features[:, list(feature_names).index(label)]
    for k, name in enumerate(feature_names):
        derived = get_feature(name).derived_from
        if not derived:
            continue
        terms = dict((term, sign) for sign, term in derived[0].terms)
        if label in terms and all(t == label or t in feature_names for t in terms):
            rest = sum(sign * features[:, list(feature_names).index(term)]
                       for term, sign in terms.items() if term != label)
            return (features[:, k] - rest) / terms[label]
    return None


def _shrinkage_draw(values, sigma, deviates):
    """Noise of a data-driven label of error ``sigma``: the change that takes ``values``
    to ``mean + lam (values - mean) + sqrt(lam) sigma e``, ``lam = 1 - sigma^2 / var``.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.pipeline import _shrinkage_draw
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(0.0, 0.2, 200_000)
    >>> noisy = x + _shrinkage_draw(x, 0.1, rng.normal(size=x.size))
    >>> round(float(np.std(noisy - x)), 3), round(float(np.std(noisy)), 3)
    (0.1, 0.173)
    """
    mean, variance = float(np.nanmean(values)), float(np.nanvar(values))
    shrink = max(1.0 - sigma**2 / variance, 0.0) if variance > 0 else 0.0
    return (shrink - 1.0) * (values - mean) + np.sqrt(shrink) * sigma * deviates


def _label_terms(name, labels):
    """(sign, label) of the noisy labels a feature is made of: itself, or those of its
    usual relation that are noisy ([C/N] with noise on [N/Fe] only gets that draw, as
    the card's quadrature sum assumes)."""
    if name in labels:
        return ((1, name),)
    derived = get_feature(name).derived_from
    if derived:
        return tuple((sign, label) for sign, label in derived[0].terms if label in labels)
    return ()


def label_noise_levels(spec, noise):
    """Each feature's training noise once ``spec.label_noise`` is added (canonical units).

    ``noise`` maps a label to the noise it had in the catalog; the added noise goes in
    quadrature, through a feature's labels ([C/N]: both [C/Fe]'s and [N/Fe]'s).
    """
    levels = dict(noise)
    for label, sigma in spec.label_noise.items():
        levels[label] = float(np.hypot(noise.get(label, 0.0), sigma))
    return levels


def fit_oblique_inputs(names, feature_names, standardized):
    """Card entries of oblique inputs: each named feature less its linear fit on the others.

    Fitted by least squares on the training stars' z-scores (inside each
    cross-validation fold, as all of training is); coefficients are rounded to 12
    decimals so that last-bit differences cannot change a split.
    """
    entries = []
    for name in names:
        k = feature_names.index(name)
        others = [j for j in range(len(feature_names)) if j != k]
        design = np.column_stack([np.ones(len(standardized)), standardized[:, others]])
        coefficients, *_ = np.linalg.lstsq(design, standardized[:, k], rcond=None)
        weights = np.zeros(len(feature_names))
        weights[k] = 1.0
        weights[others] = -coefficients[1:]
        weights = np.round(weights, 12)
        offset = round(float(-coefficients[0]), 12)
        residual = with_oblique_inputs(
            standardized, [{"weights": weights, "offset": offset, "scale": 1.0}])[:, -1]
        others_names = ", ".join(feature_names[j] for j in others)
        entries.append({"name": f"{name} | {others_names}", "of": name,
                        "weights": [float(w) for w in weights], "offset": offset,
                        "scale": round(float(np.std(residual)), 12),
                        "explained_variance": round(float(1 - np.var(residual)), 6)})
    return entries


def fit_target_directions(training_sets):
    """Card entries of supervised oblique inputs: each target's linear fit on the features.

    ``training_sets`` maps a target name to the (z-scores, ln target) of its training
    stars. The least-squares direction of ln(target) in feature space is the one along
    which the target changes most; given to every forest as one more input, a split on
    it does at once what axis-aligned splits can only approach by staircases, which
    compresses the predictions less. Stored like `fit_oblique_inputs`' entries (weights
    on the z-scores, an offset and a scale that centre and standardise it on the
    training stars), so that prediction needs nothing new; coefficients are rounded to
    12 decimals for byte-identical retraining.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.pipeline import fit_target_directions
    >>> z = np.random.default_rng(1).normal(size=(200, 2))
    >>> entry, = fit_target_directions({"mass": (z, 0.3 * z[:, 0] - 0.1 * z[:, 1])})
    >>> entry["of"], np.round(entry["weights"], 2).tolist(), entry["explained_variance"]
    ('ln mass', [0.3, -0.1], 1.0)
    """
    entries = []
    for name, (standardized, log_target) in training_sets.items():
        design = np.column_stack([np.ones(len(standardized)), standardized])
        coefficients, *_ = np.linalg.lstsq(design, log_target, rcond=None)
        weights = np.round(coefficients[1:], 12)
        fitted = standardized @ weights
        offset = round(float(-fitted.mean()), 12)
        entries.append({"name": f"ln {name} | linear fit on the features", "of": f"ln {name}",
                        "weights": [float(w) for w in weights], "offset": offset,
                        "scale": round(float(np.std(fitted)), 12),
                        "explained_variance": round(float(
                            1 - np.var(log_target - fitted) / np.var(log_target)), 6)})
    return entries


#: What `fit_network` rounds the networks' arrays to (`CompactNetwork.rounded`).
NETWORK_WEIGHT_GRID = 2.0 ** -20


def fit_network(settings, inputs, log_target, kic, seed):
    """The neural-network ensemble of one target, and its out-of-fold predictions.

    The training stars are split in ``settings["members"]`` folds by a hash of
    their KIC; member ``f`` is a scikit-learn ``MLPRegressor`` (ReLU, Adam, early
    stopping, L2 penalty ``settings["alpha"]``) fitted on the standardised
    ``log_target`` of the other folds. A first network on all stars marks the
    residuals beyond ``settings["clean"]`` robust sigmas (1.4826 x the median
    absolute residual; the squared loss is not robust to a bad seismic value),
    which no member trains on. Every star is then predicted by the member that
    did not see it: what the interval calibration needs, as the forest's
    out-of-bag predictions. (One member's prediction is a little noisier than the
    members' mean that prediction uses, so the calibration errs on the wide side,
    as the forest's out-of-bag one does.) Single-threaded BLAS, fixed seeds: the
    same stars give the same weights whatever the core count. BLAS builds for other
    processors round differently (measured between two kinds of machine: weights
    off by up to 6e-15 after training); the stored arrays are rounded to multiples
    of ``NETWORK_WEIGHT_GRID`` (2**-20), so that noise does not reach them unless
    a weight lies within it of a rounding boundary (warned about below 1e-13, 16
    times the noise measured: about one model in fifty; the packaged weights are at
    least 6.5e-12 away). The cleaning network is not rounded: only a residual within
    that noise of its threshold could change, and training warns when one lies
    within 1e-10 of it (`_robust_cleaning`).

    Parameters
    ----------
    settings : dict
        A spec's ``network`` (`~stellar_ml_ages.training.ModelSpec`).
    inputs : ndarray, shape (n_stars, n_inputs)
        What the forest splits on (z-scores and oblique inputs).
    log_target : ndarray, shape (n_stars,)
    kic : ndarray
        KIC numbers, for the folds.
    seed : int

    Returns
    -------
    network : `~stellar_ml_ages.network.CompactNetwork`
    out_of_fold : ndarray, shape (n_stars,)
        Each star's prediction (ln target) by the member that did not train on it.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    from ..network import CompactNetwork

    offset, scale = float(np.mean(log_target)), float(np.std(log_target))
    standardized = (log_target - offset) / scale

    def fitted(rows, member_seed):
        regressor = MLPRegressor(hidden_layer_sizes=tuple(settings["hidden"]),
                                 alpha=settings["alpha"], batch_size=128, max_iter=400,
                                 early_stopping=True, n_iter_no_change=20,
                                 random_state=member_seed)
        return regressor.fit(inputs[rows], standardized[rows])

    n_members = int(settings["members"])
    fold = np.minimum((kic_uniform(kic, f"network-folds:{seed}") * n_members).astype(int),
                      n_members - 1)
    # Early stopping ends the members' training; a small training set can reach
    # max_iter first, which changes nothing for the result but warns.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        everyone = np.ones(len(inputs), dtype=bool)
        residual = standardized - fitted(everyone, seed).predict(inputs)
        trusted, cleaning_margin = _robust_cleaning(residual, settings["clean"])
        members = [fitted(trusted & (fold != f), seed + 1 + f) for f in range(n_members)]
    if cleaning_margin < 1e-10:
        warnings.warn(f"a star's residual lies {cleaning_margin:.1e} from the networks' "
                      "cleaning threshold: another kind of machine may clean it differently",
                      StellarMLAgesWarning, stacklevel=2)
    # Rounded before anything uses it (the calibration's out-of-fold predictions
    # too): last-bit differences between BLAS builds must not reach the arrays.
    unrounded = CompactNetwork.from_sklearn(members, offset, scale)
    margin = unrounded.boundary_margin(NETWORK_WEIGHT_GRID)
    if margin < 1e-13:
        warnings.warn(f"a network weight lies {margin:.1e} from a rounding boundary: "
                      "another kind of machine may not retrain the same arrays",
                      StellarMLAgesWarning, stacklevel=2)
    network = unrounded.rounded(NETWORK_WEIGHT_GRID)
    out_of_fold = np.empty(len(inputs))
    for f in range(n_members):
        rows = fold == f
        out_of_fold[rows] = network.member(f).predict(inputs[rows])
    return network, out_of_fold


def _robust_cleaning(residual, n_sigmas):
    """Rows whose residual is within ``n_sigmas`` robust sigmas, and the closest call.

    The robust sigma is 1.4826 x the median absolute residual. The margin is the
    smallest distance of an absolute residual from the threshold: a star closer than
    last-bit noise could be cleaned differently by another BLAS build.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.pipeline import _robust_cleaning
    >>> kept, margin = _robust_cleaning(np.array([0.5, -1.0, 1.0, 4.0, -4.5]), 2.0)
    >>> kept.tolist(), round(margin, 4)
    ([True, True, True, False, False], 1.0348)
    """
    absolute = np.abs(residual)
    threshold = n_sigmas * 1.4826 * np.median(absolute)
    return absolute <= threshold, float(np.min(np.abs(absolute - threshold)))


def rarity_weights(log_target, states, cap, n_bins=12):
    """Per-star weights: inverse density of ``log_target`` within the star's state.

    The density is a histogram of ``n_bins`` equal bins over each state's range;
    weights are normalised to a mean of 1 per state and capped at ``cap``.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.pipeline import rarity_weights
    >>> y = np.log(np.r_[np.full(90, 1.0), np.full(10, 3.0)])
    >>> w = rarity_weights(y, np.array(["RGB"] * 100), cap=10.0, n_bins=2)
    >>> float(w[0]), float(w[-1])
    (0.5555555555555556, 5.0)
    """
    weights = np.ones(len(log_target))
    for state in np.unique(states):
        rows = states == state
        values = log_target[rows]
        edges = np.linspace(values.min(), values.max(), n_bins + 1)
        which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
        counts = np.bincount(which, minlength=n_bins).astype(np.float64)
        w = 1.0 / counts[which]
        w /= w.mean()
        w = np.minimum(w, cap)
        weights[rows] = w / w.mean()
    return weights


def _within_limits(predicted, true, max_abs, max_rel):
    error = np.abs(predicted - true)
    return (error < max_abs) & (error / true < max_rel)


def _clean(spec, target, features, log_target, other_features=None, other_log_target=None):
    """Cleaning pass of one target: out-of-bag residual limits on its training stars.

    With ``other_features`` (the paper's protocol) the same forest also predicts
    those stars, and a second mask says which of them pass the same limits.
    """
    max_abs, max_rel = spec.cleaning.get(target, (np.inf, np.inf))
    forest = _forest(spec.cleaning_estimators, spec).fit(features, log_target)
    compact = CompactForest.from_sklearn(forest)
    mean, _, count = _oob_moments(forest, compact, features)
    true = np.exp(log_target)
    predicted = np.where(count > 0, np.exp(mean), true)
    keep = _within_limits(predicted, true, max_abs, max_rel)
    if other_features is None:
        return keep
    predicted_other = np.exp(compact.predict_moments(other_features)[0])
    return keep, _within_limits(predicted_other, np.exp(other_log_target), max_abs, max_rel)


def feature_noise_levels(table, names):
    """Typical 1-sigma noise of each training label: median of its ``_ERR`` column.

    These are the errors the survey itself reports for the training stars; what a
    user's table reports beyond them is the excess `propagate_errors` adds.
    NaN where the training table has no error column for a feature.
    """
    from ..columns import resolve_error_columns
    from ..units import feature_matrix as read_matrix

    resolved = resolve_columns(table, names)
    matrix = read_matrix(table, resolved, resolve_error_columns(table, resolved))
    levels = []
    for column in matrix.errors.T:
        finite = column[np.isfinite(column) & (column > 0)]
        levels.append(float(np.median(finite)) if len(finite) else float("nan"))
    return levels


def train_model(spec, table, *, test_mask=None, protocol="honest", progress=None):
    """Train the model described by ``spec`` on ``table``.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
    table : `~astropy.table.Table`
        Catalog table with a ``KIC`` and an ``EVSTATE`` column, the features under
        their first alias (``TEFF``, ``LOGG``, ``C_FE``, ...) and the target columns
        named in the spec, e.g. from
        `~stellar_ml_ages.training.load_apogee_training_table`.
    test_mask : array of bool, optional
        Which rows of ``table`` form the test split; default: a salted hash of
        KIC with ``spec.test_fraction`` (cross-validation passes its folds here).
    protocol : {"honest", "paper"}
        ``"honest"``: the cleaning pass sees only the training split, and the
        metrics use every test star. ``"paper"``: as Li, Wang et al., the cleaning
        forest also removes badly predicted *test* stars before the metrics, which
        flatters them; reported for comparison with the paper only.
    progress : callable, optional
        Called with a short message at each step.

    Returns
    -------
    TrainingResult

    Examples
    --------
    A small forest on a synthetic catalog (use the real catalogs for science):


    >>> from dataclasses import replace
    >>> from stellar_ml_ages.training import get_spec, make_synthetic_catalog, train_model
    >>> spec = replace(get_spec("giants"), n_estimators=20, cleaning_estimators=10)
    >>> result = train_model(spec, make_synthetic_catalog(spec, 400, seed=1))
    >>> result.model.target_names
    ('mass', 'age')
    """
    if protocol not in ("honest", "paper"):
        raise ValueError(f"protocol must be 'honest' or 'paper', not {protocol!r}")
    say = progress or (lambda message: None)
    keep, all_features, all_targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    states = training_states(selected)
    features = add_input_noise(spec, all_features[keep], kic)
    # The cleaning pass looks for catalog outliers (a bad seismic mass), not for stars
    # whose added label noise happened to mislead: it sees the labels without it.
    cleaning_features = add_input_noise(spec, all_features[keep], kic, labels=False) \
        if spec.label_noise else features
    targets = {name: values[keep] for name, values in all_targets.items()}
    if test_mask is None:
        is_test = kic_test_mask(kic, spec.test_fraction)
    else:
        is_test = np.asarray(test_mask, dtype=bool)[keep]
    train = ~is_test
    say(f"{spec.name}: {int(train.sum())} training, {int(is_test.sum())} test stars")

    # Cleaning, per target, on that target's training stars. The paper's protocol also
    # drops that target's badly predicted test stars (from that target's metrics only).
    kept, n_removed = {}, 0
    scored = {name: is_test & np.isfinite(values) for name, values in targets.items()}
    for name, values in targets.items():
        rows = train & np.isfinite(values)
        test_rows = scored[name]
        if protocol == "paper":
            kept_rows, test_kept = _clean(spec, name, cleaning_features[rows],
                                          np.log(values[rows]), cleaning_features[test_rows],
                                          np.log(values[test_rows]))
            scored[name][np.flatnonzero(test_rows)[~test_kept]] = False
            say(f"{spec.name}: paper protocol removed {int((~test_kept).sum())} {name} "
                "test stars")
        else:
            kept_rows = _clean(spec, name, cleaning_features[rows], np.log(values[rows]))
        kept[name] = np.zeros(len(selected), dtype=bool)
        kept[name][np.flatnonzero(rows)[kept_rows]] = True
        removed = int(rows.sum() - kept_rows.sum())
        n_removed += removed
        say(f"{spec.name}: cleaning pass removed {removed} {name} training stars")
    any_kept = np.any(list(kept.values()), axis=0)
    # Test stars scored for at least one target (the paper protocol drops some).
    is_test = np.any(list(scored.values()), axis=0)
    train_features = features[any_kept]
    mean = train_features.mean(axis=0)
    scale = train_features.std(axis=0)
    oblique = fit_oblique_inputs(spec.oblique_features, list(spec.features),
                                 (train_features - mean) / scale)
    if spec.target_directions:
        oblique += fit_target_directions(
            {name: ((features[kept[name]] - mean) / scale, np.log(targets[name][kept[name]]))
             for name in spec.targets})

    def standardize(rows):
        return with_oblique_inputs((features[rows] - mean) / scale, oblique)

    forests, networks, target_cards, calibration_stars = {}, {}, [], {}
    calibration_values = {}
    for name, (_, unit) in spec.targets.items():
        rows = kept[name]
        removed = train & np.isfinite(targets[name]) & ~rows
        log_target = np.log(targets[name][rows])
        kept_x = standardize(rows)
        weights = (rarity_weights(log_target, states[rows], spec.rarity_weight_cap)
                   if spec.rarity_weight_cap > 0 else None)
        forest = _forest(spec.n_estimators, spec).fit(kept_x, log_target, sample_weight=weights)
        compact = CompactForest.from_sklearn(forest)
        forests[name] = compact
        # Calibrate on the whole training split, as the test split is not cleaned either:
        # out of bag for the kept stars, all trees for the stars cleaning removed.
        oob_mean, oob_variance, count = _oob_moments(forest, compact, kept_x)
        removed_x = standardize(removed)
        removed_mean, removed_variance = compact.predict_moments(removed_x)
        if spec.network:
            # The point estimate blends in the networks; the forest keeps the spread.
            network, network_oof = fit_network(spec.network, kept_x, log_target,
                                               kic[rows], spec.seed)
            networks[name] = network
            share = spec.network["weight"]
            oob_mean = (1 - share) * oob_mean + share * network_oof
            removed_mean = (1 - share) * removed_mean + share * network.predict(removed_x)
        calibration_stars[name] = (
            np.concatenate([log_target, np.log(targets[name][removed])]),
            np.concatenate([oob_mean, removed_mean]),
            np.concatenate([oob_variance, removed_variance]),
            np.concatenate([count, np.full(int(removed.sum()), spec.n_estimators)]),
            np.concatenate([states[rows], states[removed]]),
        )
        # The calibration stars' features, in the order of calibration_stars.
        calibration_values[name] = {
            feature: np.concatenate([features[rows, k], features[removed, k]])
            for k, feature in enumerate(spec.features)}
        spread = None
        if spec.spread_feature:
            # The calibration, the reference prior and prediction all see the scaled
            # variance (MassAgeModel.point_and_variance applies the same factor).
            values = calibration_values[name][spec.spread_feature]
            stars = calibration_stars[name]
            spread = spread_scale(*stars[:4], values, spec.spread_feature)
            calibration_stars[name] = (*stars[:2], stars[2] * spread_factor(spread, values) ** 2,
                                       *stars[3:])
        calibration = _calibration(*calibration_stars[name][:4],
                                   states=calibration_stars[name][4],
                                   groups=spec.calibration_groups)
        if spread is not None:
            calibration["spread"] = spread
        low, high = np.exp(calibration.pop("calibrated_log_range"))
        target_cards.append({
            "name": name, "unit": unit, "transform": "ln",
            "calibration": calibration,
            "training_range": [float(np.exp(log_target.min())), float(np.exp(log_target.max()))],
            # Point predictions between these values are inside the span of predictions
            # the intervals were calibrated on (2.5-97.5% of the training stars'); beyond,
            # the NEAR_*_EDGE flag bits are set.
            "calibrated_range": [float(low), float(high)],
            "n_train": int(rows.sum()),
            **({"network": {"weight": spec.network["weight"],
                            "members": networks[name].n_members,
                            "shape": list(networks[name].shape)}} if spec.network else {}),
        })
        say(f"{spec.name}: {name} forest has {compact.n_nodes} nodes, depth {compact.max_depth}")

    noise = label_noise_levels(spec, table.meta.get("label_noise") or {})
    measured_noise = feature_noise_levels(selected[any_kept], spec.features)
    feature_cards = []
    for i, (n, m, sd, lo, hi) in enumerate(zip(
            spec.features, mean, scale, train_features.min(axis=0),
            train_features.max(axis=0), strict=True)):
        entry = {"name": n, "label": get_feature(n).label, "unit": get_feature(n).unit.to_string(),
                 "mean": float(m), "std": float(sd), "min": float(lo), "max": float(hi)}
        level = noise.get(n, measured_noise[i])
        derived = get_feature(n).derived_from
        if n not in noise and derived and all(part in noise for part in derived[0].names):
            # A difference of two labels: their noise in quadrature, as for users' errors.
            level = float(np.sqrt(sum(noise[part] ** 2 for part in derived[0].names)))
        if np.isfinite(level):
            entry["training_noise"] = float(level)
        if n in spec.input_noise:
            entry["training_noise_fraction"] = float(spec.input_noise[n])
        feature_cards.append(entry)

    card = {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "model_version": spec.model_version,
        "description": spec.description,
        "created": datetime.date.today().isoformat(),
        "features": feature_cards,
        **({"oblique_inputs": oblique} if oblique else {}),
        "targets": target_cards,
        "domain": {"kind": "convex_hull", "space": "standardised features"},
        "evolutionary_state": {
            "trained_on": list(spec.evolutionary_states),
            "calibration_groups": list(spec.calibration_groups),
            "input": "optional column (EVSTATE, evol_state, ...: RGB/RC or APOKASC codes "
                     "1/2); where absent or unknown the intervals use the pooled calibration",
        },
        "training_set": {
            "description": (f"{_SEISMIC_SOURCES.get(spec.training_table, 'APOKASC-2')} x "
                            f"{spec.label_source} labels, states "
                            f"{', '.join(spec.evolutionary_states)}"),
            "label_source": spec.label_source,
            "catalogs": dict(table.meta.get("files", {})),
            "label_scale": table.meta.get("label_scale", {}),
            **({"label_origin": table.meta["label_origin"],
                "label_choice": table.meta["label_choice"]}
               if "label_origin" in table.meta else {}),
            # Median reported 1-sigma error of each training label (canonical units),
            # with any noise the spec adds: what propagate_errors counts as already
            # included, per input column.
            "label_noise": noise,
            **({"noise_model": dict(spec.noise_model)} if spec.noise_model else {}),
            "evolutionary_states": list(spec.evolutionary_states),
            "n_selected": len(selected),
            "n_train": int(any_kept.sum()),
            "n_removed_by_cleaning": n_removed,
            "n_test": int(is_test.sum()),
            "split": (("none: trained on every star; metrics are out of fold"
                       if spec.test_fraction == 0 else
                       f"sha256 of KIC, test fraction {spec.test_fraction}")
                      if test_mask is None else "given test mask"),
            "protocol": protocol,
            "feature_distribution": {
                "mean": [float(v) for v in mean],
                "covariance": np.cov(train_features, rowvar=False).tolist(),
            },
        },
        "hyperparameters": spec.hyperparameters,
        "software": _software(),
        "citation": list(spec.citation),
    }
    domain = ConvexHullDomain.from_points((train_features - mean) / scale)
    card["domain"]["n_vertices"] = len(domain.vertices)
    model = MassAgeModel.from_parts(card, forests, domain, networks)
    for entry in model.card["targets"]:
        along = None
        if spec.robust_levels_along:
            along = (spec.robust_levels_along,
                     calibration_values[entry["name"]][spec.robust_levels_along])
        entry["reference_prior"] = _reference_prior(model, entry["name"],
                                                    calibration_stars[entry["name"]],
                                                    spec.calibration_groups, along,
                                                    spec.reference_prior_powers)
    if spec.robust_levels_along:
        model.card["format_version"] = max(model.card["format_version"], _ALONG_VERSION)
    validate_card(model.card, f"model {spec.name!r}")  # with its reference priors

    if is_test.any():
        test_features = features[is_test]
        in_hull = model.in_hull(test_features)
        predictions = model.predict(test_features, quantiles=(0.025, 0.16, 0.84, 0.975),
                                    states=states[is_test])
        for entry in card["targets"]:
            truth = targets[entry["name"]][is_test]
            result = predictions[entry["name"]]
            inside = in_hull & scored[entry["name"]][is_test]
            entry["metrics"] = paper_metrics(result["value"][inside], truth[inside])
            entry["metrics_all_test"] = paper_metrics(result["value"][np.isfinite(truth)],
                                                      truth[np.isfinite(truth)])
            entry["coverage"] = {
                "p16_p84": float(np.mean((truth[inside] >= result[0.16][inside])
                                         & (truth[inside] <= result[0.84][inside]))),
                "p2.5_p97.5": float(np.mean((truth[inside] >= result[0.025][inside])
                                            & (truth[inside] <= result[0.975][inside]))),
            }
        card["training_set"]["test_fraction_in_hull"] = float(in_hull.mean())
        say(f"{spec.name}: {100 * in_hull.mean():.0f}% of test stars inside the hull")
    return TrainingResult(model=model, test_table=selected[is_test],
                          train_kic=np.asarray(kic[any_kept]), n_removed=n_removed)
