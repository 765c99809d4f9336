"""Training the spectroscopic RGB/clump classifier (`stellar_ml_ages.stateclass`)."""

import datetime
import itertools

import numpy as np

from ..features import get_feature
from ..stateclass import StateClassifier, clump_probability, polynomial_terms
from .evaluation import kic_folds
from .pipeline import _canonical_matrix, _software, training_states

__all__ = ["STATE_FEATURES", "fit_state_classifier", "out_of_fold_state_probability",
           "quadratic_powers", "train_state_classifier"]

#: The giants model's inputs: whatever ``giants`` can annotate can be classified.
STATE_FEATURES = ("c_n", "teff", "logg", "alpha_m", "n_fe", "fe_h")
#: Inverse regularisation strength of the logistic regression (sklearn's ``C``).
_C = 1.0


def quadratic_powers(n_features):
    """Exponents of the degree-2 terms, in scikit-learn's ``PolynomialFeatures`` order.

    The constant, each z-score, then each product ``z_i z_j`` with ``i <= j``: the
    order the packaged classifier card's ``powers`` were fitted in.

    Parameters
    ----------
    n_features : int

    Returns
    -------
    powers : ndarray of int, shape (1 + n_features + n_features * (n_features + 1) / 2, n_features)
        One row per term, for `stellar_ml_ages.stateclass.polynomial_terms`.

    Examples
    --------
    >>> quadratic_powers(2).tolist()
    [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    """
    unit = np.eye(n_features, dtype=np.int64)
    pairs = [unit[i] + unit[j] for i, j in itertools.combinations_with_replacement(
        range(n_features), 2)]
    return np.vstack([np.zeros((1, n_features), dtype=np.int64), unit, *pairs])


def _design(features, mean, scale):
    # The terms prediction uses (StateClassifier.probability), so training and the
    # out-of-fold probabilities see the same numbers.
    powers = quadratic_powers(features.shape[1])
    return polynomial_terms((features - mean) / scale, powers), powers


def fit_state_classifier(features, is_clump):
    """(mean, scale, powers, coefficients) of a degree-2 logistic regression.

    Newton's method (scikit-learn's ``newton-cholesky``) to the optimum of the
    convex, L2-penalised likelihood; coefficients are rounded to 10 decimals, so
    retraining gives the same card on any machine. (L-BFGS stopped 1e-5 short of the
    optimum, at a point that another machine's rounding of the same design moved by
    as much: measured 5e-5 for a 1e-15 perturbation, 2e-14 with Newton's method.)
    """
    from sklearn.linear_model import LogisticRegression

    mean, scale = features.mean(axis=0), features.std(axis=0)
    design, powers = _design(features, mean, scale)
    # The bias is a column of the design (power 0 everywhere), so one coefficient
    # vector says everything.
    fit = LogisticRegression(C=_C, fit_intercept=False, solver="newton-cholesky",
                             max_iter=100, tol=1e-10)
    fit.fit(design, is_clump.astype(int))
    return mean, scale, powers, np.round(fit.coef_[0], 10)


def _usable(table):
    states = training_states(table)
    features = _canonical_matrix(table, STATE_FEATURES)
    rows = np.isin(states, ("RGB", "RC")) & np.all(np.isfinite(features), axis=1)
    return rows, features, states


def out_of_fold_state_probability(table, n_folds=10):
    """Each usable star's P(clump) from the classifier of the KIC-hash fold that did not
    see it; NaN for the others. Returns (probability, usable rows, states)."""
    rows, features, states = _usable(table)
    kic = np.asarray(table["KIC"])
    fold = kic_folds(kic, n_folds, salt="stellar_ml_ages-state")
    probability = np.full(len(table), np.nan)
    for k in range(n_folds):
        train, test = rows & (fold != k), rows & (fold == k)
        mean, scale, _, coefficients = fit_state_classifier(features[train],
                                                            states[train] == "RC")
        design = _design(features[test], mean, scale)[0]
        probability[test] = clump_probability(design, coefficients)
    return probability, rows, states


def selection_metrics(probability, states, threshold=0.5):
    """Completeness and contamination of the clump (and of the RGB) a threshold selects."""
    called_rc = probability > threshold
    is_rc = states == "RC"
    return {"threshold": threshold, "n": len(states),
            "accuracy": float(np.mean(called_rc == is_rc)),
            "rc_completeness": float(np.mean(called_rc[is_rc])),
            "rc_contamination": float(np.mean(~is_rc[called_rc])),
            "rgb_completeness": float(np.mean(~called_rc[~is_rc])),
            "rgb_contamination": float(np.mean(is_rc[~called_rc]))}


def train_state_classifier(table, n_folds=10, threshold=0.5,
                           name="state-apogee-dr17", source="APOKASC-3 x APOGEE DR17"):
    """The packaged classifier, fitted on every usable star, with out-of-fold metrics.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The full-range training table (``KIC``, ``EVSTATE`` seismic states, the six
        labels): `~stellar_ml_ages.training.load_full_range_training_table`.

    Returns
    -------
    `~stellar_ml_ages.stateclass.StateClassifier`
    """
    probability, rows, states = out_of_fold_state_probability(table, n_folds)
    metrics = selection_metrics(probability[rows], states[rows], threshold)
    metrics["protocol"] = f"{n_folds}-fold out of fold (KIC hash)"
    training = _canonical_matrix(table, STATE_FEATURES)[rows]
    mean, scale, powers, coefficients = fit_state_classifier(training, states[rows] == "RC")
    card = {
        "name": name,
        "kind": "state classifier",
        "description": ("Red clump (core helium burning) against first-ascent red giant "
                        "from spectroscopic labels: logistic regression on the z-scores "
                        "of the features and their products up to second order (28 "
                        "terms); no state outside the training labels' box. P_RC is for "
                        "a population with the training set's clump fraction (n_rc / n)"),
        "created": datetime.date.today().isoformat(),
        # The box of the training labels: outside it the logistic surface extrapolates
        # (dwarfs, AGB stars, very metal-poor giants) and no state is given.
        "features": [{"name": n, "unit": get_feature(n).unit.to_string(),
                      "mean": round(float(m), 10), "std": round(float(s), 10),
                      "min": round(float(lo), 10), "max": round(float(hi), 10)}
                     for n, m, s, lo, hi in zip(STATE_FEATURES, mean, scale,
                                                training.min(axis=0), training.max(axis=0),
                                                strict=True)],
        "powers": powers.astype(int).tolist(),
        "coefficients": [float(c) for c in coefficients],
        "threshold": threshold,
        "training_set": {"source": f"{source}; seismic states (EVSTATE)",
                         "n": int(rows.sum()), "n_rc": int(np.sum(states[rows] == "RC")),
                         "label_origin": table.meta.get("label_choice", "")},
        "metrics": metrics,
        "software": _software(),
        "card_sha256": "",
    }
    from ..model import card_checksum

    card["card_sha256"] = card_checksum(card)
    return StateClassifier(card)
