"""Feature importance ranking and error-vs-number-of-features curves (paper Figs. 3-5).

`importance_ranking` and `error_curve` follow the paper (impurity importance, one
split); `permutation_ranking` and `feature_count_curve` are the cross-validated
selection that chooses the packaged models' features.
"""

import numpy as np

from .pipeline import _forest

__all__ = ["error_curve", "feature_count_curve", "importance_ranking", "median_relative_error",
           "permutation_ranking"]


def median_relative_error(predicted, true):
    """Median of ``|predicted - true| / true``."""
    return float(np.median(np.abs(np.asarray(predicted) - true) / true))


def importance_ranking(spec, standardized, target_values, n_estimators=None):
    """Features ordered by the forest's impurity importance, most important first.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
    standardized : ndarray, shape (n_stars, n_features)
        z-scored training features, columns in ``spec.features`` order.
    target_values : ndarray
        The target (not its logarithm).

    Returns
    -------
    list of (str, float)
        ``(feature, importance)`` with importances summing to 1.
    """
    forest = _forest(n_estimators or spec.n_estimators, spec)
    forest.fit(standardized, np.log(target_values))
    order = np.argsort(forest.feature_importances_)[::-1]
    return [(spec.features[i], float(forest.feature_importances_[i])) for i in order]


def error_curve(make_regressor, train_x, train_y, test_x, test_y, order, log_target=False):
    """Median relative error on train and test using the top-k ranked features, k = 1..n.

    Parameters
    ----------
    make_regressor : callable
        Returns a fresh, unfitted scikit-learn regressor.
    train_x, test_x : ndarray
        Standardised features, columns in the spec's order.
    train_y, test_y : ndarray
        Target values; stars without one (NaN) are left out.
    order : sequence of int
        Column indices, most important first.
    log_target : bool
        Fit on the natural log of the target (the packaged forests do).

    Returns
    -------
    list of dict
        ``{"n_features", "train", "test"}`` per k.
    """
    train_rows, test_rows = np.isfinite(train_y), np.isfinite(test_y)
    train_x, train_y = train_x[train_rows], train_y[train_rows]
    test_x, test_y = test_x[test_rows], test_y[test_rows]
    curve = []
    for k in range(1, len(order) + 1):
        columns = list(order[:k])
        regressor = make_regressor()
        fit_y = np.log(train_y) if log_target else train_y
        regressor.fit(train_x[:, columns], fit_y)
        predict = (lambda x, r=regressor: np.exp(r.predict(x))) if log_target else regressor.predict
        curve.append({
            "n_features": k,
            "train": median_relative_error(predict(train_x[:, columns]), train_y),
            "test": median_relative_error(predict(test_x[:, columns]), test_y),
        })
    return curve


def _cv_forest_predictions(spec, features, log_target, folds, columns, n_estimators):
    predicted = np.full(len(log_target), np.nan)
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        forest = _forest(n_estimators, spec).fit(features[train][:, columns], log_target[train])
        predicted[test] = forest.predict(features[test][:, columns])
    return predicted


def _median_log_error(predicted, log_target):
    return float(np.median(np.abs(predicted - log_target)))


def permutation_ranking(spec, table, candidates, n_folds=4, n_repeats=3, n_estimators=150,
                        seed=0):
    """Rank candidate labels by permutation importance under cross-validation.

    For each fold a forest is trained on the other folds with every candidate; on
    the held-out fold each candidate in turn is shuffled and the rise of the median
    absolute ln error is recorded (``n_repeats`` shuffles, averaged). Unlike
    impurity importance this is measured on stars the forest never saw and does not
    favour labels with many distinct values; correlated labels share importance
    rather than one of them taking it all.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
        Stars, targets and forest settings (its ``features`` are ignored).
    table : `~astropy.table.Table`
        Training catalog.
    candidates : sequence of str
        Feature names to rank.
    n_folds, n_repeats, n_estimators, seed : int

    Returns
    -------
    dict
        ``"importance"``: target -> {feature: mean rise of the median absolute ln error};
        ``"order"``: candidates by importance summed over targets (each target's
        importances normalised to sum 1), most important first;
        ``"folds"``, ``"n_stars"``: what was used.
    """
    from dataclasses import replace

    from .evaluation import kic_folds
    from .pipeline import _select, add_input_noise

    spec = replace(spec, features=tuple(candidates))
    keep, features, targets = _select(table, spec)
    kic = np.asarray(table["KIC"])[keep]
    features = add_input_noise(spec, features[keep], kic)
    folds = kic_folds(kic, n_folds)
    rng = np.random.default_rng(seed)
    importance = {}
    for target, values in targets.items():
        values = values[keep]
        has = np.isfinite(values)
        x, log_y, fold = features[has], np.log(values[has]), folds[has]
        rise = np.zeros(len(candidates))
        for k in range(n_folds):
            train, test = fold != k, fold == k
            forest = _forest(n_estimators, spec).fit(x[train], log_y[train])
            base = _median_log_error(forest.predict(x[test]), log_y[test])
            for j in range(len(candidates)):
                for _ in range(n_repeats):
                    shuffled = x[test].copy()
                    shuffled[:, j] = rng.permutation(shuffled[:, j])
                    rise[j] += (_median_log_error(forest.predict(shuffled), log_y[test])
                                - base) / (n_folds * n_repeats)
        importance[target] = dict(zip(candidates, (float(v) for v in rise), strict=True))
    score = np.zeros(len(candidates))
    for values in importance.values():
        rises = np.maximum(np.array([values[c] for c in candidates]), 0.0)
        score += rises / rises.sum() if rises.sum() > 0 else rises
    order = [candidates[i] for i in np.argsort(-score, kind="stable")]
    return {"importance": importance, "order": order, "folds": n_folds,
            "n_stars": int(keep.sum())}


def feature_count_curve(spec, table, order, n_folds=4, n_estimators=150, tolerance=0.01):
    """Cross-validated error against the number of ranked features, and the choice.

    Features are added in ``order``; one that is a linear combination of those
    already chosen (e.g. [C/N] after [C/Fe] and [N/Fe]) is skipped, since the
    applicability hull needs independent inputs. The chosen set is the shortest
    prefix whose median relative error is within ``tolerance`` (relative) of the
    best prefix, for every target (or, if no prefix is, the one whose largest
    relative excess over a target's best is smallest).

    Returns
    -------
    dict
        ``"curve"``: list of ``{"n_features", "features", <target>: median relative
        error}``; ``"skipped"``: dependent features; ``"chosen"``: tuple of features.
    """
    from dataclasses import replace

    from .evaluation import kic_folds
    from .pipeline import _select, add_input_noise

    spec = replace(spec, features=tuple(order))
    keep, features, targets = _select(table, spec)
    kic = np.asarray(table["KIC"])[keep]
    features = add_input_noise(spec, features[keep], kic)
    folds = kic_folds(kic, n_folds)
    standardized = (features - features.mean(axis=0)) / features.std(axis=0)
    columns, skipped, curve = [], [], []
    for j, name in enumerate(order):
        trial = [*columns, j]
        if np.linalg.matrix_rank(standardized[:, trial], tol=1e-6) < len(trial):
            skipped.append(name)
            continue
        columns = trial
        point = {"n_features": len(columns), "features": [order[c] for c in columns]}
        for target, values in targets.items():
            values = values[keep]
            has = np.isfinite(values)
            predicted = _cv_forest_predictions(spec, features[has], np.log(values[has]),
                                               folds[has], columns, n_estimators)
            point[target] = median_relative_error(np.exp(predicted), values[has])
        curve.append(point)
    best = {target: min(point[target] for point in curve) for target in targets}

    def worst_excess(point):
        return max(point[t] / best[t] - 1 for t in targets)

    # The shortest prefix within tolerance for every target; if the targets' best
    # prefixes disagree so that none is, the prefix whose worst excess is smallest.
    within = [point for point in curve if worst_excess(point) <= tolerance]
    chosen = (within[0] if within else min(curve, key=worst_excess))["features"]
    return {"curve": curve, "skipped": skipped, "chosen": tuple(chosen),
            "tolerance": tolerance}
