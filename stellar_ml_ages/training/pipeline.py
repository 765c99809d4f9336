"""Train one model from a catalog table, following the paper's recipe.

1. Select stars of the spec's evolutionary states with every feature and target.
2. Split by a hash of the KIC number: a test split that never depends on row
   order, and that no step below sees.
3. Cleaning pass, on the training split only: a ``cleaning_estimators``-tree
   forest predicts each training star out of bag; stars missed by more than the
   spec's absolute or relative limits are dropped. (The paper cleans both halves,
   which flatters its test metrics; this is the honest variant.)
4. Z-score standardisation with the cleaned training stars' means and deviations.
5. Final forest per target, on the natural log of the target.
6. Uncertainty calibration on the whole training split: out-of-bag predictions
   of the final forest for the kept stars, all-tree predictions for the stars the
   cleaning removed; the quantiles of ``(ln y - mean) / sigma`` become the card's
   calibration table.
7. Convex hull of the standardised training features.
8. Metrics on the untouched test split, for stars inside the hull, exactly as the
   paper defines them, plus the coverage of the [p16, p84] and [p2.5, p97.5] intervals.
"""

import datetime
import hashlib
import platform
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..columns import resolve_columns
from ..exceptions import TrainingDataError
from ..features import get_feature
from ..forest import CompactForest
from ..hull import ConvexHullDomain
from ..model import MassAgeModel
from ..units import feature_matrix

__all__ = ["CALIBRATION_PROBABILITIES", "TrainingResult", "kic_test_mask", "paper_metrics",
           "train_model"]

#: Probabilities at which the predictive distribution is calibrated.
CALIBRATION_PROBABILITIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.16, 0.25, 0.5,
                             0.75, 0.84, 0.9, 0.95, 0.975, 0.99, 0.995)


def kic_uniform(kic, salt):
    """A number in [0, 1) per star from a salted sha256 of its KIC: row-order independent."""
    return np.array([
        int.from_bytes(hashlib.sha256(f"{salt}:{int(k)}".encode()).digest()[:8], "big") / 2.0**64
        for k in np.asarray(kic)
    ])


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
        Training stars dropped by the cleaning pass.
    """

    model: MassAgeModel
    test_table: object
    train_kic: np.ndarray
    n_removed: int


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


def _calibration(log_target, mean, variance, count):
    usable = (count > 0) & (variance > 0)
    z = (log_target[usable] - mean[usable]) / np.sqrt(variance[usable])
    offsets = np.quantile(z, CALIBRATION_PROBABILITIES)
    probabilities = np.asarray(CALIBRATION_PROBABILITIES)
    # Keep the point estimate inside every central interval, and the table monotonic.
    offsets = np.where(probabilities < 0.5, np.minimum(offsets, 0.0), offsets)
    offsets = np.where(probabilities > 0.5, np.maximum(offsets, 0.0), offsets)
    offsets = np.maximum.accumulate(offsets)
    return {"probability": list(CALIBRATION_PROBABILITIES), "z": [float(v) for v in offsets],
            "n_out_of_bag": int(usable.sum())}


def _canonical_matrix(table, names):
    """Features in canonical units, found by the same resolver users' tables go through."""
    return feature_matrix(table, resolve_columns(table, names)).values


def _target_values(table, spec):
    import astropy.units as u

    values = {}
    for target, (column, unit) in spec.targets.items():
        quantity = table[column]
        converted = np.ma.filled(np.ma.asarray(quantity, dtype=np.float64), np.nan)
        if quantity.unit is not None:
            converted = quantity.unit.to(u.Unit(unit), converted)
        values[target] = converted
    return values


def _software():
    import astropy
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "astropy": astropy.__version__, "stellar_ml_ages": __version__}


def _select(table, spec):
    state = np.char.strip(np.asarray(table["EVSTATE"]).astype(str))
    features = _canonical_matrix(table, spec.features)
    targets = _target_values(table, spec)
    keep = np.isin(state, spec.evolutionary_states) & np.all(np.isfinite(features), axis=1)
    for values in targets.values():
        keep &= np.isfinite(values) & (values > 0)
    if keep.sum() < 10 * (len(spec.features) + 1):
        raise TrainingDataError(
            f"only {int(keep.sum())} usable stars for {spec.name}; check the catalogs")
    return keep, features, targets


def _within_limits(predicted, true, max_abs, max_rel):
    error = np.abs(predicted - true)
    return (error < max_abs) & (error / true < max_rel)


def _clean(spec, features, log_targets, other_features=None, other_log_targets=None):
    """Cleaning pass: out-of-bag residual limits per target on the training stars.

    With ``other_features`` (the paper's protocol) the same forest also predicts
    those stars, and a second mask says which of them pass the same limits.
    """
    keep = np.ones(len(features), dtype=bool)
    keep_other = None if other_features is None else np.ones(len(other_features), dtype=bool)
    for target, (max_abs, max_rel) in spec.cleaning.items():
        forest = _forest(spec.cleaning_estimators, spec).fit(features, log_targets[target])
        compact = CompactForest.from_sklearn(forest)
        mean, _, count = _oob_moments(forest, compact, features)
        true = np.exp(log_targets[target])
        predicted = np.where(count > 0, np.exp(mean), true)
        keep &= _within_limits(predicted, true, max_abs, max_rel)
        if other_features is not None:
            predicted_other = np.exp(compact.predict_moments(other_features)[0])
            keep_other &= _within_limits(predicted_other, np.exp(other_log_targets[target]),
                                         max_abs, max_rel)
    return keep if other_features is None else (keep, keep_other)


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
    ('mass',)
    """
    if protocol not in ("honest", "paper"):
        raise ValueError(f"protocol must be 'honest' or 'paper', not {protocol!r}")
    say = progress or (lambda message: None)
    keep, all_features, all_targets = _select(table, spec)
    selected = table[keep]
    features = all_features[keep]
    targets = {name: values[keep] for name, values in all_targets.items()}
    if test_mask is None:
        is_test = kic_test_mask(selected["KIC"], spec.test_fraction)
    else:
        is_test = np.asarray(test_mask, dtype=bool)[keep]
    train = ~is_test
    log_train = {name: np.log(values[train]) for name, values in targets.items()}
    say(f"{spec.name}: {int(train.sum())} training, {int(is_test.sum())} test stars")

    if protocol == "paper":
        log_test = {name: np.log(values[is_test]) for name, values in targets.items()}
        cleaned, test_kept = _clean(spec, features[train], log_train, features[is_test], log_test)
        is_test[np.flatnonzero(is_test)[~test_kept]] = False
        say(f"{spec.name}: paper protocol removed {int((~test_kept).sum())} test stars")
    else:
        cleaned = _clean(spec, features[train], log_train)
    n_removed = int((~cleaned).sum())
    say(f"{spec.name}: cleaning pass removed {n_removed} training stars")
    train_features = features[train][cleaned]
    mean = train_features.mean(axis=0)
    scale = train_features.std(axis=0)
    standardized = (train_features - mean) / scale

    forests, target_cards = {}, []
    for name, (_, unit) in spec.targets.items():
        log_target = log_train[name][cleaned]
        forest = _forest(spec.n_estimators, spec).fit(standardized, log_target)
        compact = CompactForest.from_sklearn(forest)
        forests[name] = compact
        # Calibrate on the whole training split, as the test split is not cleaned either:
        # out of bag for the kept stars, all trees for the stars cleaning removed.
        oob_mean, oob_variance, count = _oob_moments(forest, compact, standardized)
        removed_mean, removed_variance = compact.predict_moments(
            (features[train][~cleaned] - mean) / scale)
        calibration = _calibration(
            np.concatenate([log_target, log_train[name][~cleaned]]),
            np.concatenate([oob_mean, removed_mean]),
            np.concatenate([oob_variance, removed_variance]),
            np.concatenate([count, np.full(n_removed, spec.n_estimators)]),
        )
        target_cards.append({
            "name": name, "unit": unit, "transform": "ln",
            "calibration": calibration,
            "training_range": [float(np.exp(log_target.min())), float(np.exp(log_target.max()))],
        })
        say(f"{spec.name}: {name} forest has {compact.n_nodes} nodes, depth {compact.max_depth}")

    card = {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "model_version": "1.0.0",
        "description": spec.description,
        "created": datetime.date.today().isoformat(),
        "features": [
            {"name": n, "label": get_feature(n).label, "unit": get_feature(n).unit.to_string(),
             "mean": float(m), "std": float(s), "min": float(lo), "max": float(hi)}
            for n, m, s, lo, hi in zip(spec.features, mean, scale, train_features.min(axis=0),
                                       train_features.max(axis=0), strict=True)
        ],
        "targets": target_cards,
        "domain": {"kind": "convex_hull", "space": "standardised features"},
        "training_set": {
            "description": f"APOKASC-2 x {spec.label_source} labels, states "
                           f"{', '.join(spec.evolutionary_states)}",
            "label_source": spec.label_source,
            "catalogs": dict(table.meta.get("files", {})),
            "evolutionary_states": list(spec.evolutionary_states),
            "n_selected": len(selected),
            "n_train": int(cleaned.sum()),
            "n_removed_by_cleaning": n_removed,
            "n_test": int(is_test.sum()),
            "split": (f"sha256 of KIC, test fraction {spec.test_fraction}" if test_mask is None
                      else "given test mask"),
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
    domain = ConvexHullDomain.from_points(standardized)
    card["domain"]["n_vertices"] = len(domain.vertices)
    model = MassAgeModel.from_parts(card, forests, domain)

    test_features = features[is_test]
    in_hull = model.in_hull(test_features)
    predictions = model.predict(test_features, quantiles=(0.025, 0.16, 0.84, 0.975))
    for entry in card["targets"]:
        truth = targets[entry["name"]][is_test]
        result = predictions[entry["name"]]
        inside = in_hull
        entry["metrics"] = paper_metrics(result["value"][inside], truth[inside])
        entry["metrics_all_test"] = paper_metrics(result["value"], truth)
        entry["coverage"] = {
            "p16_p84": float(np.mean((truth[inside] >= result[0.16][inside])
                                     & (truth[inside] <= result[0.84][inside]))),
            "p2.5_p97.5": float(np.mean((truth[inside] >= result[0.025][inside])
                                        & (truth[inside] <= result[0.975][inside]))),
        }
    card["training_set"]["test_fraction_in_hull"] = float(in_hull.mean())
    say(f"{spec.name}: {100 * in_hull.mean():.0f}% of test stars inside the hull")
    return TrainingResult(model=model, test_table=selected[is_test],
                          train_kic=np.asarray(selected["KIC"][train][cleaned]),
                          n_removed=n_removed)
