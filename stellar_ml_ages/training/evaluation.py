"""Out-of-fold evaluation: every star predicted by a model that never saw it.

A single 25% test split leaves a few hundred red-clump stars inside the hull, so a
coverage fraction measured on it moves by about ±3% from split to split. K-fold
cross-validation by KIC hash predicts *every* star once, out of fold, which gives
coverage, PIT histograms and external comparisons on the whole sample.
"""

from itertools import pairwise

import numpy as np
from astropy.table import Table

from .pipeline import (
    CALIBRATION_PROBABILITIES,
    TRUE_VALUE_BINS,
    _canonical_matrix,
    _equal_count_bins,
    _select,
    add_input_noise,
    kic_uniform,
    paper_metrics,
    train_model,
    training_states,
)

__all__ = ["coverage", "cross_validated_predictions", "dilution", "group_coverage", "kic_folds",
           "label_coverage", "predicted_coverage", "stacked_prior", "state_bin_coverage",
           "train_and_validate"]

_QUANTILES = (0.025, 0.16, 0.84, 0.975)


def kic_folds(kic, n_folds, salt="stellar_ml_ages-cv"):
    """Fold number of each star, from a salted sha256 of its KIC (row-order independent)."""
    return np.minimum((kic_uniform(kic, salt) * n_folds).astype(int), n_folds - 1)


def cross_validated_predictions(spec, table, n_folds=4, progress=None, input_table=None):
    """Out-of-fold predictions of every usable star of ``table``.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
    table : `~astropy.table.Table`
        Catalog table as for `~stellar_ml_ages.training.train_model`.
    n_folds : int
        Folds; each trains on the other ``n_folds - 1``.
    progress : callable, optional
    input_table : `~astropy.table.Table`, optional
        Same rows as ``table`` with other input labels (e.g. the final DR17 values
        where a star has them), used only to *predict* the held-out fold: how the
        models do on the labels users have. Default: ``table`` itself.

    Returns
    -------
    `~astropy.table.Table`
        One row per usable star: ``KIC``, ``fold``, ``EVSTATE``, ``in_hull``, the
        features (with the spec's input noise, as predicted), and per target
        ``<t>_true`` (NaN where the star lacks it), ``<t>``, ``<t>_p2.5``, ``<t>_p16``,
        ``<t>_p84``, ``<t>_p97.5`` (the intervals users get: robust, where the model
        allows it) and ``<t>_pit`` with the star's evolutionary state given,
        ``<t>_p16_pooled``, ``<t>_p84_pooled`` without it, and
        ``<t>_quantiles`` (``<t>_quantiles_pooled`` without the state): the whole
        calibrated predictive distribution under the training prior (the quantiles at
        ``meta["probability"]``,
        the calibration grid), as
        `~stellar_ml_ages.distributions.PredictiveDistribution` reads it.
        For specs with ``reference_prior_powers``, ``meta["<t>_prior_powers"]`` is
        the power each fold's model chose for its robust intervals.
    """
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    features = add_input_noise(spec, features[keep], kic)
    if input_table is not None:
        inputs = add_input_noise(spec, _canonical_matrix(input_table, spec.features)[keep], kic)
        inputs = np.where(np.isfinite(inputs), inputs, features)
    else:
        inputs = features
    states = training_states(selected)
    fold = kic_folds(kic, n_folds)
    out = Table()
    out["KIC"] = kic
    out["fold"] = fold
    out["EVSTATE"] = states
    out["in_hull"] = np.zeros(len(selected), dtype=bool)
    for i, name in enumerate(spec.features):
        out[name] = inputs[:, i]
    for target in spec.targets:
        out[f"{target}_true"] = targets[target][keep]
        for suffix in ("", *(f"_p{100 * q:g}" for q in _QUANTILES), "_pit", "_p16_pooled",
                       "_p84_pooled"):
            out[f"{target}{suffix}"] = np.full(len(selected), np.nan)
        for suffix in ("_quantiles", "_quantiles_pooled"):
            out[f"{target}{suffix}"] = np.full(
                (len(selected), len(CALIBRATION_PROBABILITIES)), np.nan)
    powers = {target: [] for target in spec.targets}
    for k in range(n_folds):
        result = train_model(spec, selected, test_mask=fold == k, progress=progress)
        for entry in result.model.card["targets"]:
            choice = (entry.get("reference_prior") or {}).get("prior_power_choice")
            if choice is not None:
                powers[entry["name"]].append(choice["power"])
        rows = np.flatnonzero(fold == k)
        test_features = inputs[rows]
        out["in_hull"][rows] = result.model.in_hull(test_features)
        # Intervals as users get them (robust); the whole distributions, for
        # population stacking and the card's prior, under the training prior.
        predictions = result.model.predict(test_features, quantiles=_QUANTILES,
                                           states=states[rows])
        distributions = result.model.predict(test_features, quantiles=CALIBRATION_PROBABILITIES,
                                             states=states[rows], intervals="posterior")
        pooled = result.model.predict(test_features, quantiles=CALIBRATION_PROBABILITIES,
                                      intervals="posterior")
        # The intervals a table without a state column gets.
        stateless = result.model.predict(test_features, quantiles=(0.16, 0.84))
        for target in spec.targets:
            out[target][rows] = predictions[target]["value"]
            for q in _QUANTILES:
                out[f"{target}_p{100 * q:g}"][rows] = predictions[target][q]
            for suffix, source in (("_quantiles", distributions),
                                   ("_quantiles_pooled", pooled)):
                out[f"{target}{suffix}"][rows] = np.column_stack(
                    [source[target][q] for q in CALIBRATION_PROBABILITIES])
            out[f"{target}_p16_pooled"][rows] = stateless[target][0.16]
            out[f"{target}_p84_pooled"][rows] = stateless[target][0.84]
            truth = out[f"{target}_true"][rows]
            with np.errstate(invalid="ignore"):
                out[f"{target}_pit"][rows] = result.model.predictive_cdf(
                    target, test_features, np.where(np.isfinite(truth), truth, 1.0),
                    states=states[rows])
            out[f"{target}_pit"][rows[~np.isfinite(truth)]] = np.nan
    out.meta["n_folds"] = n_folds
    out.meta["probability"] = list(CALIBRATION_PROBABILITIES)
    for target, chosen in powers.items():
        if chosen:  # the power each fold's model chose for its robust intervals
            out.meta[f"{target}_prior_powers"] = chosen
    out.meta["model"] = spec.name
    return out


def _rows_with_truth(predictions, target, inside_only=True):
    rows = predictions[predictions["in_hull"]] if inside_only else predictions
    return rows[np.isfinite(np.asarray(rows[f"{target}_true"], dtype=np.float64))]


def _interval_stats(rows, target, pooled=False):
    truth = np.asarray(rows[f"{target}_true"])
    low, high = (f"{target}_p16_pooled", f"{target}_p84_pooled") if pooled else \
        (f"{target}_p16", f"{target}_p84")
    value = np.asarray(rows[target])
    entry = {"n": len(rows)}
    if not len(rows):
        return entry
    entry["p16_p84"] = float(np.mean((truth >= rows[low]) & (truth <= rows[high])))
    if not pooled:
        entry["p2.5_p97.5"] = float(np.mean((truth >= rows[f"{target}_p2.5"])
                                            & (truth <= rows[f"{target}_p97.5"])))
    entry["median_rel_error"] = float(np.median(np.abs(value - truth) / truth))
    entry["median_rel_bias"] = float(np.median((value - truth) / truth))
    return entry


def coverage(predictions, target, inside_only=True):
    """Coverage of the central 68% and 95% intervals, and the paper's metrics.

    Returns
    -------
    dict
        ``n``, ``p16_p84``, ``p2.5_p97.5`` (fractions of true values inside),
        ``p16_p84_pooled`` (without the evolutionary state) and the
        ``paper_metrics`` (see `~stellar_ml_ages.training.train_model`) of the point estimate.
    """
    rows = _rows_with_truth(predictions, target, inside_only)
    if not len(rows):
        raise ValueError(f"no {target} prediction with a true value to measure coverage on")
    truth = np.asarray(rows[f"{target}_true"])
    stats = _interval_stats(rows, target)
    return {
        "n": len(rows),
        "p16_p84": stats["p16_p84"],
        "p2.5_p97.5": stats["p2.5_p97.5"],
        "p16_p84_pooled": _interval_stats(rows, target, pooled=True)["p16_p84"],
        **{f"cv_{k}": v for k, v in paper_metrics(rows[target], truth).items() if k != "n"},
    }


def group_coverage(predictions, target, true_bins=None):
    """Coverage and error of out-of-fold predictions in groups (inside the hull).

    Groups: every star; each evolutionary state; each tercile of the predicted
    value; bins of the true value (``true_bins`` edges, default: 10th and 90th
    percentiles, i.e. the low tail, the middle and the high tail).

    Returns
    -------
    list of dict
        ``group``, ``n``, ``p16_p84``, ``p2.5_p97.5``, ``median_rel_error``,
        ``median_rel_bias`` (median of (predicted - true) / true), and
        ``p16_p84_pooled`` (intervals computed without the star's state).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.training.evaluation import group_coverage
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(1, 2, 600)
    >>> t = Table({"in_hull": np.ones(600, bool), "EVSTATE": np.repeat(["RGB", "RC"], 300),
    ...            "mass_true": truth, "mass": truth * 1.01})
    >>> for name, z in (("p2.5", -2), ("p16", -1), ("p84", 1), ("p97.5", 2)):
    ...     t[f"mass_{name}"] = t["mass"] + 0.02 * z
    >>> t["mass_p16_pooled"], t["mass_p84_pooled"] = t["mass_p16"], t["mass_p84"]
    >>> rows = group_coverage(t, "mass")
    >>> [row["group"] for row in rows][:3]
    ['all', 'state RC', 'state RGB']
    """
    rows = _rows_with_truth(predictions, target)
    truth = np.asarray(rows[f"{target}_true"], dtype=np.float64)
    value = np.asarray(rows[target], dtype=np.float64)
    groups = [("all", np.ones(len(rows), dtype=bool))]
    states = np.asarray(rows["EVSTATE"]).astype(str)
    groups += [(f"state {s}", states == s) for s in np.unique(states) if s]
    edges = np.quantile(value, [1 / 3, 2 / 3]) if len(value) else [0, 0]
    groups += [("predicted tercile 1", value < edges[0]),
               ("predicted tercile 2", (value >= edges[0]) & (value < edges[1])),
               ("predicted tercile 3", value >= edges[1])]
    if true_bins is None:
        true_bins = np.quantile(truth, [0.1, 0.9]) if len(truth) else [0, 0]
    true_bins = [-np.inf, *true_bins, np.inf]
    for low, high in pairwise(true_bins):
        label = (f"true < {high:.3g}" if not np.isfinite(low) else
                 f"true >= {low:.3g}" if not np.isfinite(high) else
                 f"{low:.3g} <= true < {high:.3g}")
        groups.append((label, (truth >= low) & (truth < high)))
    out = []
    for label, selected in groups:
        part = rows[selected]
        entry = {"group": label, **_interval_stats(part, target)}
        if len(part):
            entry["p16_p84_pooled"] = _interval_stats(part, target, pooled=True)["p16_p84"]
        out.append(entry)
    return out


def state_bin_coverage(predictions, target, true_bins=None):
    """Coverage of the 68% interval and bias by bin of the true value, per state.

    The ends of the range are where a forest's conditional mean is pulled towards the
    training mean, and the pull differs between RGB and clump stars: pooling the
    states in one bin hides an RGB tail that the clump stars make up for.

    Parameters
    ----------
    predictions : `~astropy.table.Table` or mapping
        Out-of-fold predictions with ``EVSTATE``, ``in_hull``, ``<target>_true``,
        ``<target>``, ``<target>_p16`` and ``<target>_p84`` (as from
        `cross_validated_predictions`); stars inside the hull with a true value count.
    target : str
    true_bins : sequence of float, optional
        Inner bin edges; default ``TRUE_VALUE_BINS`` of this module, for the target.

    Returns
    -------
    list of dict
        One row per state (``"all"``, then each state) and bin (``"all"``, then
        ``"< a"``, ``"a-b"``, ``"> c"``): ``state``, ``bin``, ``n``, ``p16_p84``
        (fraction of true values inside), ``median_log_bias`` (median of
        ln(predicted / true)) and ``median_ln_width`` (median of ln(p84 / p16): what
        the coverage costs); all three are None for empty cells.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.evaluation import state_bin_coverage
    >>> truth = np.array([0.9, 1.2, 1.5, 2.0])
    >>> rows = state_bin_coverage({"EVSTATE": np.array(["RGB"] * 4), "in_hull": np.ones(4, bool),
    ...                            "mass_true": truth, "mass": truth, "mass_p16": truth * 0.9,
    ...                            "mass_p84": truth * 1.1}, "mass")
    >>> [(row["state"], row["bin"], row["n"]) for row in rows][:3]
    [('all', 'all', 4), ('all', '< 1', 1), ('all', '1-1.4', 1)]
    """
    edges = [-np.inf, *(TRUE_VALUE_BINS[target] if true_bins is None else true_bins), np.inf]
    states = np.char.strip(np.asarray(predictions["EVSTATE"]).astype(str))
    truth = np.asarray(predictions[f"{target}_true"], dtype=np.float64)
    usable = np.asarray(predictions["in_hull"], dtype=bool) & np.isfinite(truth)
    value = np.asarray(predictions[target], dtype=np.float64)
    low = np.asarray(predictions[f"{target}_p16"], dtype=np.float64)
    high = np.asarray(predictions[f"{target}_p84"], dtype=np.float64)
    bins = [("all", -np.inf, np.inf)] + [
        (f"< {b:g}" if not np.isfinite(a) else f"> {a:g}" if not np.isfinite(b) else f"{a:g}-{b:g}",
         a, b) for a, b in pairwise(edges)]
    rows = []
    for state in ("all", *sorted({s for s in states[usable] if s})):
        in_state = usable & ((states == state) if state != "all" else True)
        for label, a, b in bins:
            cell = in_state & (truth >= a) & (truth < b)
            n = int(cell.sum())
            rows.append({
                "state": state, "bin": label, "n": n,
                "p16_p84": float(np.mean((truth[cell] >= low[cell]) & (truth[cell] <= high[cell])))
                if n else None,
                "median_log_bias": float(np.median(np.log(value[cell] / truth[cell])))
                if n else None,
                "median_ln_width": float(np.median(np.log(high[cell] / low[cell])))
                if n else None,
            })
    return rows


#: Bins of equal count per label in the card's ``coverage_by_label``.
LABEL_COVERAGE_BINS = 10


def label_coverage(predictions, target, labels, n_bins=LABEL_COVERAGE_BINS):
    """Coverage of the 68% interval in bins of each input label (inside the hull).

    The calibration is by state and predicted value; a group chosen by a label
    (upper-RGB giants by log g, cool stars by Teff, the α-rich) is where that can
    still fail. Both the intervals users get (robust, where the model gives them)
    and the posterior's (what population stacking uses) are counted.

    Parameters
    ----------
    predictions : `~astropy.table.Table`
        Out-of-fold predictions from `cross_validated_predictions` (the labels as
        predicted, ``<target>_p16``/``_p84`` and ``<target>_quantiles`` at
        ``meta["probability"]``).
    target : str
    labels : sequence of str
        Canonical feature names (columns of ``predictions``).
    n_bins : int
        Bins of equal count per label.

    Returns
    -------
    dict
        Label to ``{"edges", "n", "p16_p84", "p16_p84_posterior"}``, one entry per bin
        (the outer edges are the smallest and largest values).
    """
    truth = np.asarray(predictions[f"{target}_true"], dtype=np.float64)
    usable = np.asarray(predictions["in_hull"], dtype=bool) & np.isfinite(truth)
    probability = list(predictions.meta["probability"])
    quantiles = np.asarray(predictions[f"{target}_quantiles"], dtype=np.float64)
    posterior = (quantiles[:, probability.index(0.16)], quantiles[:, probability.index(0.84)])
    robust = (np.asarray(predictions[f"{target}_p16"], dtype=np.float64),
              np.asarray(predictions[f"{target}_p84"], dtype=np.float64))
    with np.errstate(invalid="ignore"):
        inside = {kind: (truth >= low) & (truth <= high)
                  for kind, (low, high) in (("p16_p84", robust),
                                            ("p16_p84_posterior", posterior))}
    out = {}
    for label in labels:
        values = np.asarray(predictions[label], dtype=np.float64)
        rows = usable & np.isfinite(values)
        if not rows.any():
            continue
        edges, which = _equal_count_bins(values[rows], n_bins, assign=values)
        entry = {"edges": [float(e) for e in edges], "n": [], "p16_p84": [],
                 "p16_p84_posterior": []}
        for b in range(len(edges) - 1):
            cell = rows & (which == b)
            entry["n"].append(int(cell.sum()))
            for kind in ("p16_p84", "p16_p84_posterior"):
                entry[kind].append(float(np.mean(inside[kind][cell])) if cell.any() else None)
        out[label] = entry
    return out


def predicted_coverage(predictions, target, states, n_bins=LABEL_COVERAGE_BINS):
    """Coverage of the 68% interval in bins of the predicted value, per state.

    What the calibration by state and predicted value promises; robust ends that
    reach further at the ends of the true range take coverage from somewhere, and
    this says where (inside the hull, as `label_coverage`).

    Returns
    -------
    dict
        State to ``{"edges", "n", "p16_p84", "p16_p84_posterior"}`` over bins of
        equal count of the point estimate.
    """
    of_state = training_states(predictions)
    out = {}
    for state in states:
        rows = of_state == state
        entry = label_coverage(predictions[rows], target, [target], n_bins)
        if target in entry:
            out[state] = entry[target]
    return out


def dilution(predictions, target, bins=None):
    """Regression dilution of out-of-fold predictions (inside the hull).

    Returns
    -------
    dict
        ``slope_predicted_on_true``: least-squares slope of ln(predicted) on
        ln(true) (1 for no dilution; a forest's conditional mean gives less);
        ``slope_true_on_predicted``: the reverse regression (1 when predictions are
        unbiased given their own value); ``bias_by_true``: median (predicted -
        true) / true in bins of the true value (``bins`` edges; default quintiles).
    """
    rows = _rows_with_truth(predictions, target)
    if len(rows) < 3:
        raise ValueError(f"dilution of {target} needs at least 3 stars inside the hull "
                         f"with a true value, got {len(rows)}")
    truth = np.log(np.asarray(rows[f"{target}_true"], dtype=np.float64))
    value = np.log(np.asarray(rows[target], dtype=np.float64))
    slope = float(np.polyfit(truth, value, 1)[0])
    reverse = float(np.polyfit(value, truth, 1)[0])
    edges = np.exp(np.quantile(truth, np.linspace(0, 1, 6))) if bins is None else np.asarray(bins)
    bias = []
    last = len(edges) - 2
    for k, (low, high) in enumerate(pairwise(edges)):
        # Half-open bins (the last one closed): each star is counted once.
        inside = (np.exp(truth) >= low) & ((np.exp(truth) < high) if k < last
                                           else (np.exp(truth) <= high))
        if inside.any():
            ratio = np.exp(value[inside] - truth[inside]) - 1
            bias.append({"low": float(low), "high": float(high), "n": int(inside.sum()),
                         "median_rel_bias": float(np.median(ratio))})
    return {"slope_predicted_on_true": slope, "slope_true_on_predicted": reverse,
            "bias_by_true": bias}


#: Bins (equal widths in ln y) of the prior recorded in the card.
PRIOR_BINS = 48


def stacked_prior(predictions, target, n_bins=PRIOR_BINS):
    """The prior the model's predictive distributions are made under, for the card.

    The average of the training stars' out-of-fold predictive distributions (stars
    inside the hull, with a true value): the distribution of ln y that a calibrated
    model implies for its training population. Recorded as ``prior`` so that
    `~stellar_ml_ages.population.population_distribution` can replace it by a
    population's own (``method="deconvolved"``): each star's likelihood is its
    predictive distribution over *this* prior, which makes the training population a
    fixed point of the deconvolution (the histogram of true values is not exactly
    that, and its empty tails turn into spurious likelihood peaks).

    Returns
    -------
    dict
        ``log_edges`` (ln of the target in its unit), ``fraction`` per bin (summing
        to 1), ``n`` stars, ``source``.
    """
    from ..distributions import PredictiveDistribution

    truth = np.asarray(predictions[f"{target}_true"], dtype=np.float64)
    rows = np.asarray(predictions["in_hull"]) & np.isfinite(truth)
    dist = PredictiveDistribution(target, predictions.meta["probability"],
                                  np.asarray(predictions[f"{target}_quantiles"])[rows])
    low = np.nanmin(np.log(dist.quantile(0.0).value))
    high = np.nanmax(np.log(dist.quantile(1.0).value))
    log_edges = np.linspace(low, high, n_bins + 1)
    cdf = dist.stacked_cdf(np.exp(log_edges))
    fraction = np.diff(cdf) / (cdf[-1] - cdf[0])
    return {"log_edges": [float(round(e, 12)) for e in log_edges],
            "fraction": [float(round(f, 12)) for f in fraction / fraction.sum()],
            "n": int(rows.sum()),
            "source": f"average of the training stars' {predictions.meta['n_folds']}-fold "
                      "out-of-fold predictive distributions, inside the hull"}


def train_and_validate(spec, table, n_folds=4, progress=None):
    """Train on the spec's split and add out-of-fold metrics to the model card.

    With ``spec.test_fraction == 0`` (the packaged models) the final forests see
    every star, and the card's ``metrics`` and ``coverage`` are the pooled
    out-of-fold ones; otherwise ``coverage_cv`` is added next to the split's.
    Either way every target gets ``coverage_cv``, ``coverage_by_group``,
    ``coverage_by_state_and_true_value``, ``coverage_by_label`` (`label_coverage`),
    ``coverage_by_predicted`` (`predicted_coverage`), ``dilution`` and the
    ``prior`` its distributions are made under (`stacked_prior`).

    Returns
    -------
    `~stellar_ml_ages.training.TrainingResult`
    """
    result = train_model(spec, table, progress=progress)
    predictions = cross_validated_predictions(spec, table, n_folds, progress=progress)
    for target in result.model.card["targets"]:
        name = target["name"]
        measured = coverage(predictions, name)
        target["coverage_cv"] = {"n_folds": n_folds, "n": measured["n"],
                                 "p16_p84": measured["p16_p84"],
                                 "p2.5_p97.5": measured["p2.5_p97.5"],
                                 "p16_p84_pooled": measured["p16_p84_pooled"],
                                 "median_rel_error": measured["cv_median_rel_error"]}
        if f"{name}_prior_powers" in predictions.meta:
            target["coverage_cv"]["prior_power_by_fold"] = [
                float(p) for p in predictions.meta[f"{name}_prior_powers"]]
        target["coverage_by_group"] = group_coverage(predictions, name)
        target["dilution"] = dilution(predictions, name)
        target["coverage_by_state_and_true_value"] = state_bin_coverage(predictions, name)
        target["coverage_by_label"] = label_coverage(predictions, name, spec.features)
        target["coverage_by_predicted"] = predicted_coverage(predictions, name,
                                                             spec.calibration_groups)
        target["dilution_by_state"] = {
            state: dilution(predictions[training_states(predictions) == state],
                            name)["slope_predicted_on_true"]
            for state in spec.calibration_groups}
        target["prior"] = stacked_prior(predictions, name)
        if spec.test_fraction == 0:
            target["metrics"] = {"n": measured["n"], "protocol": f"{n_folds}-fold out of fold",
                                 **{k[3:]: v for k, v in measured.items() if k.startswith("cv_")}}
            target["coverage"] = {"p16_p84": measured["p16_p84"],
                                  "p2.5_p97.5": measured["p2.5_p97.5"]}
    result.model.card["training_set"]["cv_fraction_in_hull"] = float(
        np.mean(predictions["in_hull"]))
    result.predictions = predictions
    return result
