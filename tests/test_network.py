"""The neural-network ensemble beside the forest: arrays, kernels, training, model cards."""

import dataclasses

import numpy as np
import pytest
from sklearn.neural_network import MLPRegressor

from stellar_ml_ages.exceptions import ModelFormatError
from stellar_ml_ages.model import MassAgeModel, load_model
from stellar_ml_ages.network import CompactNetwork
from stellar_ml_ages.training import get_spec, make_synthetic_catalog, train_model
from stellar_ml_ages.training.pipeline import fit_network, kic_uniform

# Small members on small data may reach max_iter before early stopping: not what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def members():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 4))
    y = np.tanh(x[:, 0]) + 0.5 * x[:, 1] ** 2
    fitted = [MLPRegressor(hidden_layer_sizes=(8, 8, 8), max_iter=300, random_state=seed,
                           learning_rate_init=0.01).fit(x, y) for seed in (1, 2, 3)]
    return fitted, x


@pytest.fixture(scope="module")
def small_spec():
    return dataclasses.replace(
        get_spec("giants"), n_estimators=20, cleaning_estimators=10, spread_feature="",
        robust_levels_along="",
        network={"hidden": (8, 8), "alpha": 0.01, "members": 3, "weight": 0.7, "clean": 3.0})


@pytest.fixture(scope="module")
def trained(small_spec):
    return train_model(small_spec, make_synthetic_catalog(small_spec, 500, seed=2))


def test_compact_network_is_the_mean_of_the_scikit_learn_members(members):
    fitted, x = members
    net = CompactNetwork.from_sklearn(fitted, offset=2.0, scale=0.5)
    expected = 2.0 + 0.5 * np.mean([m.predict(x) for m in fitted], axis=0)
    np.testing.assert_allclose(net.predict(x), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net.predict_numpy(x), expected, rtol=0, atol=1e-12)
    assert net.shape == (4, 8, 8, 8, 1) and net.n_members == 3
    np.testing.assert_allclose(net.member(1).predict(x), 2.0 + 0.5 * fitted[1].predict(x),
                               atol=1e-12)


def test_a_row_does_not_depend_on_its_neighbours_or_the_threads(members):
    """The compiled kernel sums in a fixed order per row: bit-identical in any batch and
    for any thread count, and equal to the NumPy twin."""
    from stellar_ml_ages import conf

    # An offset and a scale that are not powers of two: the scaling's rounding counts.
    net = CompactNetwork.from_sklearn(members[0], offset=0.3, scale=0.68)
    x = members[1]
    with conf.set_temp("use_compiled_kernels", True):
        whole = net.predict(x)
        for start, stop in ((0, 1), (7, 8), (13, 190), (299, 300)):
            np.testing.assert_array_equal(net.predict(x[start:stop]), whole[start:stop])
        np.testing.assert_array_equal(net.predict(x[::-1]), whole[::-1])
        assert net.predict(x[:0]).shape == (0,)
        for threads in (1, 2):
            with conf.set_temp("threads", threads):
                np.testing.assert_array_equal(net.predict(x), whole)
    # The NumPy twin sums in the kernel's order: the same bits, and row by row too.
    np.testing.assert_array_equal(net.predict_numpy(x), whole)
    with conf.set_temp("use_compiled_kernels", False):
        np.testing.assert_array_equal(net.predict(x), whole)
        for start, stop in ((0, 1), (7, 8), (13, 190), (299, 300)):
            np.testing.assert_array_equal(net.predict(x[start:stop]), whole[start:stop])


def test_inputs_of_the_wrong_width_are_refused(members):
    net = CompactNetwork.from_sklearn(members[0])
    for bad in (members[1][:, :3], members[1][0]):
        with pytest.raises(ValueError, match="rows of 4 inputs, got an array of shape"):
            net.predict(bad)
        with pytest.raises(ValueError, match="rows of 4 inputs"):
            net.predict_numpy(bad)


def test_array_round_trip_and_validation(members):
    net = CompactNetwork.from_sklearn(members[0])
    restored = CompactNetwork.from_arrays(net.to_arrays(prefix="age.network."),
                                          prefix="age.network.")
    np.testing.assert_array_equal(restored.predict(members[1]), net.predict(members[1]))
    restored.validate(n_inputs=4)
    with pytest.raises(ValueError, match="takes 4 inputs, the model gives it 6"):
        restored.validate(n_inputs=6)
    restored.hidden_biases[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match="not all finite"):
        restored.validate(n_inputs=4)
    broken = net.to_arrays()
    broken["output_weights"] = broken["output_weights"][:, :5]
    with pytest.raises(ValueError, match="'output_weights' has shape"):
        CompactNetwork.from_arrays(broken).validate(n_inputs=4)


def test_members_of_different_shapes_are_refused(members):
    other = MLPRegressor(hidden_layer_sizes=(5,), max_iter=50).fit(members[1], members[1][:, 0])
    with pytest.raises(ValueError, match="one shape"):
        CompactNetwork.from_sklearn([members[0][0], other])


def test_fit_network_predicts_each_star_by_a_member_that_did_not_see_it():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 3))
    y = 0.3 * x[:, 0] - 0.2 * x[:, 1] ** 2 + 0.05 * rng.standard_normal(400)
    y[:4] += 3.0  # catalog outliers: left out by the cleaning, still predicted
    kic = np.arange(1000, 1400)
    settings = {"hidden": (16, 16), "alpha": 0.01, "members": 4, "weight": 0.5, "clean": 3.0}
    network, out_of_fold = fit_network(settings, x, y, kic, seed=11)
    assert network.n_members == 4
    in_sample = network.predict(x)
    residual_oof = np.median(np.abs(out_of_fold[4:] - y[4:]))
    residual_in = np.median(np.abs(in_sample[4:] - y[4:]))
    # Out of fold is the honest one: worse than in sample, better than the spread.
    assert residual_in < residual_oof < np.median(np.abs(y - np.median(y)))
    assert np.all(np.abs(out_of_fold[:4] - y[:4]) > 2.0)
    again, again_oof = fit_network(settings, x, y, kic, seed=11)
    for name, array in network.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[name], array, err_msg=name)
    np.testing.assert_array_equal(again_oof, out_of_fold)
    # No member trained on the outliers: even in sample, the networks follow the clean
    # trend there; without the cleaning the squared loss pulls them towards the outliers.
    trend = y[:4] - 3.0
    uncleaned, _ = fit_network({**settings, "clean": np.inf}, x, y, kic, seed=11)
    assert np.max(np.abs(network.predict(x[:4]) - trend)) < 0.25
    assert (np.mean(np.abs(uncleaned.predict(x[:4]) - trend))
            > 2 * np.mean(np.abs(network.predict(x[:4]) - trend)))


def test_fit_network_rounds_away_last_bit_noise():
    """What a different BLAS build changes (the last bits of the weights) does not reach
    the stored arrays or the out-of-fold predictions made from them."""
    from stellar_ml_ages.training.pipeline import NETWORK_WEIGHT_GRID

    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 3))
    y = 0.4 * x[:, 0] + 0.1 * rng.standard_normal(300)
    settings = {"hidden": (8,), "alpha": 0.01, "members": 3, "weight": 0.5, "clean": 3.0}
    network, out_of_fold = fit_network(settings, x, y, np.arange(300), seed=5)
    for name, array in network.to_arrays().items():
        steps = array / NETWORK_WEIGHT_GRID
        np.testing.assert_array_equal(steps, np.round(steps), err_msg=name)
        assert not np.any(np.signbit(array) & (array == 0)), f"{name} stores -0.0"
    # The calibration's out-of-fold predictions come from the rounded members.
    fold = np.minimum((kic_uniform(np.arange(300), "network-folds:5") * 3).astype(int), 2)
    for f in range(3):
        np.testing.assert_array_equal(out_of_fold[fold == f],
                                      network.member(f).predict(x[fold == f]))
    with pytest.raises(ValueError, match="power of two"):
        network.rounded(1e-6)
    # Weights off by a few ulps, as between two kinds of machine, round back to the
    # same bytes; so does a tiny weight on the other side of zero (no -0.0).
    noisy = CompactNetwork(*(a * (1 + 4e-16 * rng.choice([-1, 1], a.shape))
                             for a in network.to_arrays().values()))
    tiny = CompactNetwork(*(np.full_like(a, -1e-30) for a in network.to_arrays().values()))
    assert not any(np.signbit(a).any()
                   for a in tiny.rounded(NETWORK_WEIGHT_GRID).to_arrays().values())
    assert any(not np.array_equal(a, b) for a, b in
               zip(noisy.to_arrays().values(), network.to_arrays().values(), strict=True))
    again = noisy.rounded(NETWORK_WEIGHT_GRID)
    assert noisy.boundary_margin(NETWORK_WEIGHT_GRID) > 1e-12
    for name, array in network.to_arrays().items():
        assert again.to_arrays()[name].tobytes() == array.tobytes(), name
    np.testing.assert_array_equal(
        np.concatenate([again.member(f).predict(x[:5]) for f in range(3)]),
        np.concatenate([network.member(f).predict(x[:5]) for f in range(3)]))
    # The rounding is far below what the intervals resolve.
    assert NETWORK_WEIGHT_GRID < 1e-5
    assert np.isfinite(out_of_fold).all()


def test_model_blends_forest_and_network_and_keeps_the_forest_spread(trained):
    model = trained.model
    assert model.card["format_version"] == 4
    inputs = model.forest_inputs(model.standardize(
        np.array([[f["mean"] for f in model.card["features"]]]) + 0.1))
    for target in model.target_names:
        entry = model.target(target)["network"]
        assert entry == {"weight": 0.7, "members": 3, "shape": [len(inputs[0]), 8, 8, 1]}
        forest_mean, forest_variance = model.forests[target].predict_moments(inputs)
        mean, variance = model.point_and_variance(target, inputs)
        expected = 0.3 * forest_mean + 0.7 * model.networks[target].predict(inputs)
        np.testing.assert_allclose(mean, expected, rtol=1e-12)
        np.testing.assert_array_equal(variance, forest_variance)


def test_saved_model_with_networks_round_trips(trained, tmp_path):
    model = trained.model
    card_path = model.save(tmp_path)
    loaded = load_model(card_path)
    rng = np.random.default_rng(1)
    means = np.array([f["mean"] for f in model.card["features"]])
    stds = np.array([f["std"] for f in model.card["features"]])
    x = means + 0.3 * stds * rng.standard_normal((50, len(means)))
    first, second = model.predict(x), loaded.predict(x)
    for target in model.target_names:
        for key in ("value", 0.16, 0.84):
            np.testing.assert_array_equal(first[target][key], second[target][key])


def test_card_and_arrays_must_agree_on_networks(trained):
    model = trained.model
    card = dict(model.card)
    with pytest.raises(ModelFormatError, match="card names a network, the arrays have none"):
        MassAgeModel(card, model.forests, model.domain)
    stripped = {**card, "targets": [{k: v for k, v in t.items() if k != "network"}
                                    for t in card["targets"]]}
    with pytest.raises(ModelFormatError, match="does not name a network, the arrays have one"):
        MassAgeModel(stripped, model.forests, model.domain, model.networks)
    old = {**card, "format_version": 3}
    from stellar_ml_ages.model import validate_card

    with pytest.raises(ModelFormatError, match="needs format_version >= 4"):
        validate_card(old)
    first = card["targets"][0]

    def with_network(**entry):
        return {**card, "targets": [{**first, "network": {**first["network"], **entry}},
                                    *card["targets"][1:]]}

    with pytest.raises(ModelFormatError, match="network weight must be in"):
        validate_card(with_network(weight=1.5))
    with pytest.raises(ModelFormatError, match="network members must be a positive integer"):
        validate_card(with_network(members=None))
    with pytest.raises(ModelFormatError, match="network shape must list its layer widths"):
        validate_card(with_network(shape=[9, 8, 8, 2]))
    with pytest.raises(ModelFormatError, match="the card's network has 4 members"):
        MassAgeModel(with_network(members=4), model.forests, model.domain, model.networks)
    with pytest.raises(ModelFormatError, match=r"networks for \['radius'\]"):
        MassAgeModel(card, model.forests, model.domain,
                     {**model.networks, "radius": model.networks["mass"]})


def test_network_arrays_the_card_does_not_name_are_refused_on_load(trained):
    import hashlib
    import json

    from stellar_ml_ages.model import _from_bytes

    model = trained.model
    _, payload = model.to_payload()
    card = json.loads(json.dumps(model.card))
    del card["targets"][1]["network"]  # the age networks stay in the arrays
    card["arrays"]["sha256"] = hashlib.sha256(payload).hexdigest()
    with pytest.raises(ModelFormatError, match=r"networks for \['age'\], which the card does"):
        _from_bytes(card, payload, "edited model")


def test_models_without_networks_keep_format_3(small_spec):
    spec = dataclasses.replace(small_spec, network=None)
    model = train_model(spec, make_synthetic_catalog(spec, 300, seed=3)).model
    assert model.card["format_version"] == 3 and not model.networks
    assert all("network" not in target for target in model.card["targets"])


def test_spec_refuses_incomplete_network_settings():
    with pytest.raises(ValueError, match="network needs hidden, alpha, members"):
        dataclasses.replace(get_spec("giants"), network={"hidden": (8,), "weight": 0.5})


@pytest.mark.parametrize("model_name", ["giants", "giants-slam"])
def test_compiled_kernel_on_the_packaged_networks(model_name):
    """The shipped networks (five members of 64-unit layers, output scales that are
    not powers of two): the compiled kernel and the NumPy twin give the same bits,
    inside and far outside the training range, a row alone as in a table."""
    from stellar_ml_ages import conf, get_model

    model = get_model(model_name)
    rng = np.random.default_rng(13)
    inputs = model.forest_inputs(rng.standard_normal((2000, len(model.feature_names))) * 2.0)
    for target, network in model.networks.items():
        assert network.n_members == 5 and network.output_scaling[1] != 1.0, target
        with conf.set_temp("use_compiled_kernels", True):
            compiled = network.predict(inputs)
        np.testing.assert_array_equal(network.predict_numpy(inputs), compiled)
        np.testing.assert_array_equal(network.predict_numpy(inputs[17:18]), compiled[17:18])
        # Blocks of rows change no bit.
        np.testing.assert_array_equal(network.predict_numpy(inputs, chunk_size=7), compiled)


def test_packaged_giants_networks_agree_with_their_forests():
    """The shipped networks and forests model the same function of the same inputs: on
    stars drawn from the training distribution (the card's mean and covariance) their
    ln mass and ln age agree to within the models' own errors, and correlate closely. A
    network fed its inputs in another order, or the wrong target's weights, fails."""
    from stellar_ml_ages import get_model

    giants = get_model("giants")
    assert giants.card["model_version"] == "3.5.0" and set(giants.networks) == {"mass", "age"}
    distribution = giants.card["training_set"]["feature_distribution"]
    rng = np.random.default_rng(12)
    stars = rng.multivariate_normal(distribution["mean"], distribution["covariance"], 4000)
    stars = stars[giants.in_hull(stars)]
    assert len(stars) > 2000
    inputs = giants.forest_inputs(giants.standardize(stars))
    for target, tolerance in (("mass", 0.06), ("age", 0.2)):
        forest, _ = giants.forests[target].predict_moments(inputs)
        network = giants.networks[target].predict(inputs)
        assert np.median(np.abs(network - forest)) < tolerance
        assert np.corrcoef(network, forest)[0, 1] > 0.9
    # Mass and age anticorrelate (heavier giants are younger), in the networks too.
    mass, age = (giants.networks[t].predict(inputs) for t in ("mass", "age"))
    assert np.corrcoef(mass, age)[0, 1] < -0.8


def test_propagated_errors_move_the_networks_too(trained):
    """With input errors, the spread added is that of the blended point estimates over
    the draws (forest and networks), as the point estimate itself is the blend."""
    model = trained.model
    rng = np.random.default_rng(4)
    means = np.array([f["mean"] for f in model.card["features"]])
    stds = np.array([f["std"] for f in model.card["features"]])
    x = means + 0.2 * stds * rng.standard_normal((40, len(means)))
    errors = np.tile(0.3 * stds, (len(x), 1))
    plain = model.predict(x, intervals="posterior")
    noisy = model.predict(x, feature_errors=errors, n_draws=16, seed=3, intervals="posterior")
    draws = [model.forest_inputs(model.standardize(x + shift))
             for shift in model._perturbations(x, errors, 3, 16)]
    for target in model.target_names:
        inputs = model.forest_inputs(model.standardize(x))
        mean, variance = model.point_and_variance(target, inputs)
        moments = [model.point_and_variance(target, z) for z in draws]
        expected = np.sqrt(np.mean([v for _, v in moments], axis=0)
                           + np.var([m for m, _ in moments], axis=0))
        # Posterior quantiles are mean + offset * sigma with the same offsets: the
        # ratio of the upper half-widths is that of the sigmas.
        ratio = (np.log(noisy[target][0.84]) - mean) / (np.log(plain[target][0.84]) - mean)
        np.testing.assert_allclose(ratio, expected / np.sqrt(variance), rtol=1e-9)
        np.testing.assert_allclose(noisy[target]["value"], plain[target]["value"])
        forest_only = np.var([model.forests[target].predict_moments(z)[0] for z in draws],
                             axis=0)
        blended = np.var([m for m, _ in moments], axis=0)
        assert not np.allclose(blended, forest_only)
