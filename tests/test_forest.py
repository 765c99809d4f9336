import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from stellar_ml_ages.forest import CompactForest


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((400, 4))
    target = features[:, 0] ** 2 + np.sin(3 * features[:, 1]) + 0.1 * rng.standard_normal(400)
    forest = RandomForestRegressor(n_estimators=25, min_samples_leaf=3, random_state=1)
    return forest.fit(features, target), features


def test_matches_scikit_learn_prediction(fitted):
    forest, features = fitted
    compact = CompactForest.from_sklearn(forest)
    rng = np.random.default_rng(4)
    query = np.vstack([rng.standard_normal((300, 4)) * 1.5, features])
    mean, _ = compact.predict_moments(query, chunk_size=97)
    np.testing.assert_allclose(mean, forest.predict(query), rtol=0, atol=1e-6)


def test_exact_at_split_thresholds(fitted):
    """Inputs equal to a threshold must take scikit-learn's branch (x <= t goes left)."""
    forest, _ = fitted
    compact = CompactForest.from_sklearn(forest)
    tree = forest.estimators_[0].tree_
    internal = tree.children_left >= 0
    query = np.zeros((internal.sum(), 4))
    query[np.arange(internal.sum()), tree.feature[internal]] = tree.threshold[internal]
    leaves_ours = compact.leaves(query)[:, 0]
    leaves_sklearn = forest.estimators_[0].apply(query.astype(np.float32))
    np.testing.assert_allclose(compact.value[leaves_ours], tree.value[leaves_sklearn, 0, 0],
                               rtol=1e-6)


def test_variance_is_spread_between_trees_plus_within_leaves(fitted):
    forest, features = fitted
    compact = CompactForest.from_sklearn(forest)
    query = features[:20]
    _, variance = compact.predict_moments(query)
    per_tree = np.array([tree.predict(query) for tree in forest.estimators_])
    leaf_variance = np.array([
        tree.tree_.impurity[tree.apply(query.astype(np.float32))] for tree in forest.estimators_
    ])
    expected = per_tree.var(axis=0) + leaf_variance.mean(axis=0)
    np.testing.assert_allclose(variance, expected, rtol=1e-4, atol=1e-7)


def test_array_round_trip_and_validation(fitted):
    forest, features = fitted
    compact = CompactForest.from_sklearn(forest)
    restored = CompactForest.from_arrays(compact.to_arrays(prefix="mass."), prefix="mass.")
    np.testing.assert_array_equal(restored.predict_moments(features)[0],
                                  compact.predict_moments(features)[0])
    restored.validate(n_features=4)
    with pytest.raises(ValueError, match="split feature out of range"):
        restored.validate(n_features=2)
    broken = CompactForest.from_arrays(compact.to_arrays())
    broken.left[np.flatnonzero(np.isfinite(broken.threshold))[0]] = broken.n_nodes
    with pytest.raises(ValueError, match="child index"):
        broken.validate(n_features=4)


def test_compiled_kernel_matches_numpy_reference_whatever_the_threads(fitted):
    """The numba kernel and the NumPy twin: same means, variances to round-off.

    Row counts that are not multiples of the kernel's lane width exercise the
    partial last block; the result must not depend on the thread count.
    """
    from stellar_ml_ages import conf
    from stellar_ml_ages._kernels import LANES

    forest, _ = fitted
    compact = CompactForest.from_sklearn(forest)
    rng = np.random.default_rng(5)
    for n_rows in (0, 1, LANES - 1, LANES + 1, 1000):
        query = rng.standard_normal((n_rows, 4)) * 1.5
        expected_mean, expected_variance = compact.predict_moments_numpy(query)
        results = []
        for threads in (1, 2):
            with conf.set_temp("threads", threads):
                results.append(compact.predict_moments(query))
        for mean, variance in results:
            np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-12)
            np.testing.assert_allclose(variance, expected_variance, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(results[0][0], results[1][0])
    with conf.set_temp("use_compiled_kernels", False):
        np.testing.assert_array_equal(compact.predict_moments(query)[0], expected_mean)


@pytest.mark.parametrize("model_name", ["giants", "red-clump"])
def test_compiled_kernel_on_the_packaged_forests(model_name):
    """The shipped forests are far larger than the fitted fixture (over 10^5 nodes,
    depths up to 20-odd): the compiled kernel, reading them through unsigned
    views, must still equal the NumPy reference there, for every target, inside
    and far outside the training range."""
    from stellar_ml_ages import conf, get_model

    model = get_model(model_name)
    rng = np.random.default_rng(11)
    # What the forests split on: the z-scores and any oblique inputs.
    query = model.forest_inputs(rng.standard_normal((700, len(model.feature_names))) * 2.0)
    for target, forest in model.forests.items():
        assert forest.n_nodes > np.iinfo(np.int16).max, target
        mean, variance = forest.predict_moments(query)
        with conf.set_temp("use_compiled_kernels", False):
            expected_mean, expected_variance = forest.predict_moments(query)
        np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(variance, expected_variance, rtol=0, atol=1e-12)
        assert np.all(variance > 0)


def test_tree_depths_are_scikit_learns(fitted):
    forest, _ = fitted
    compact = CompactForest.from_sklearn(forest)
    expected = [tree.tree_.max_depth for tree in forest.estimators_]
    np.testing.assert_array_equal(compact.tree_depths, expected)
    assert compact.tree_depths.max() == compact.max_depth
