"""Feature importance ranking and error-vs-number-of-features curves (paper Figs. 3-5)."""

import numpy as np

from .pipeline import _forest

__all__ = ["error_curve", "importance_ranking", "median_relative_error"]


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
        Target values.
    order : sequence of int
        Column indices, most important first.
    log_target : bool
        Fit on the natural log of the target (the packaged forests do).

    Returns
    -------
    list of dict
        ``{"n_features", "train", "test"}`` per k.
    """
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
