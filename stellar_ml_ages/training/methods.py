"""The six regressors the paper compares, with its hyperparameters."""

from functools import partial

__all__ = ["METHODS", "make_method"]

#: Short name -> description, in the paper's order.
METHODS = {
    "BYS": "Bayesian ridge regression (max_iter=30, tol=1e-3)",
    "GBDT": "gradient-boosted trees (2000 estimators, learning rate 0.1, squared error)",
    "MLP": "multi-layer perceptron, one hidden layer of 147 units",
    "MLR": "multiple linear regression",
    "RF": "random forest (all features per split)",
    "SVR": "support-vector regression (RBF kernel, C=15)",
}


def make_method(name, seed=0, quick=False, n_trees=300):
    """Return a factory of fresh, unfitted regressors for method ``name``.

    ``quick`` shrinks the ensembles (GBDT 200 estimators, RF 50 trees) and the MLP's
    iterations for a fast smoke run; the reported comparison uses ``quick=False``.
    """
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import BayesianRidge, LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.svm import SVR

    factories = {
        "BYS": partial(BayesianRidge, max_iter=30, tol=1e-3),
        "GBDT": partial(GradientBoostingRegressor, n_estimators=200 if quick else 2000,
                        learning_rate=0.1, loss="squared_error", random_state=seed),
        "MLP": partial(MLPRegressor, hidden_layer_sizes=(147,), max_iter=300 if quick else 2000,
                       early_stopping=True, random_state=seed),
        "MLR": LinearRegression,
        "RF": partial(RandomForestRegressor, n_estimators=50 if quick else n_trees,
                      max_features=1.0, n_jobs=2, random_state=seed),
        "SVR": partial(SVR, kernel="rbf", C=15),
    }
    try:
        return factories[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
