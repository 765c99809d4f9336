"""Robust intervals: the posterior and the prior-free (reference) distribution (#23).

The Gaussian case has a closed form: a prior N(0, tau^2) on theta and a measurement
x ~ N(theta, s^2) give the posterior N(x tau^2 / (tau^2 + s^2), tau^2 s^2 / (tau^2 + s^2));
dividing the prior out must give back N(x, s^2), whose intervals cover theta 68% of
the time for every theta, where the posterior's do not in the tails. The robust
intervals must hold both by true value and by measured (predicted) value.
"""

import numpy as np
import pytest
from scipy import stats

from stellar_ml_ages.reference_prior import (
    fit_reference_prior,
    group_robust_quantiles,
    levels_along,
    reference_cdf,
    reference_quantiles,
    robust_quantiles,
)
from stellar_ml_ages.training.pipeline import (
    CALIBRATION_PROBABILITIES,
    _equal_count_bins,
    choose_prior_power,
)

GRID = np.asarray(CALIBRATION_PROBABILITIES)
TAU, S = 0.30, 0.25  # shrinkage 0.59: the RGB's measured log slope


def _gaussian_prior(n_bins=80, width=6.0):
    edges = np.linspace(-width * TAU, width * TAU, n_bins + 1)
    mass = np.diff(stats.norm.cdf(edges, scale=TAU))
    return edges, mass / mass.sum() / np.diff(edges)


def _posterior_knots(x):
    shrink = TAU**2 / (TAU**2 + S**2)
    sd = np.sqrt(shrink) * S
    return (x * shrink)[:, None] + sd * stats.norm.ppf(GRID)[None, :]


def test_dividing_out_a_gaussian_prior_gives_the_likelihood():
    x = np.array([-0.3, -0.1, 0.0, 0.15, 0.3])
    edges, density = _gaussian_prior()
    out = reference_quantiles(_posterior_knots(x), GRID, edges, density, [0.16, 0.5, 0.84])
    # Exact up to the piecewise-linear CDF through 15 knots, the histogram prior and
    # the posterior's 0.5% tails, which the division cannot restore (intervals come out
    # 5-8% narrow; a fitted card's level recalibration takes that up).
    np.testing.assert_allclose(out[1], x, atol=0.02)
    np.testing.assert_allclose(out[2] - out[0], 2 * S, rtol=0.1)
    assert np.all(out[2] - out[0] < 2 * S)


def test_reference_intervals_hold_by_true_value_where_the_posterior_fails():
    rng = np.random.default_rng(5)
    theta = rng.normal(0, TAU, 20_000)
    x = theta + rng.normal(0, S, theta.size)
    knots = _posterior_knots(x)
    edges, density = _gaussian_prior()
    low, high = reference_quantiles(knots, GRID, edges, density, [0.16, 0.84])
    posterior_low, posterior_high = knots[:, 5], knots[:, 9]
    assert GRID[5] == 0.16 and GRID[9] == 0.84
    tail = theta > 1.5 * TAU
    covered = (theta >= low) & (theta <= high)
    posterior_covered = (theta >= posterior_low) & (theta <= posterior_high)
    assert posterior_covered.mean() == pytest.approx(0.68, abs=0.02)
    assert posterior_covered[tail].mean() < 0.45  # the compression the issue measured
    assert covered.mean() == pytest.approx(0.68, abs=0.03)
    assert covered[tail].mean() == pytest.approx(0.68, abs=0.05)


def _simulate(n, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, TAU, n)
    x = theta + rng.normal(0, S, theta.size)
    return theta, x, _posterior_knots(x)


def _coverage_in_tails(covered, values):
    low, high = np.quantile(values, [0.05, 0.95])
    return covered[values <= low].mean(), covered[values >= high].mean()


def test_robust_intervals_hold_by_true_and_by_predicted_value():
    """Fitted on one simulated training set, scored on another: 68% overall, and in
    the outer 5% of true *and* of predicted values; the posterior fails the first,
    the reference distribution the second."""
    theta, _, knots = _simulate(8000, 11)
    entry = fit_reference_prior(knots, GRID, theta, {"all": np.ones(theta.size, bool)})
    group = entry["groups"]["all"]
    for side in ("lower_level", "upper_level"):
        assert np.all(np.diff(group[side]) >= 0)
    theta, _, knots = _simulate(20_000, 12)
    shrunk = knots[:, 7]  # the posterior median: the point estimate
    low, high = robust_quantiles(knots, GRID, group["log_edges"], group["density"],
                                 group["lower_level"], group["upper_level"], [0.16, 0.84])
    covered = (theta >= low) & (theta <= high)
    assert covered.mean() == pytest.approx(0.68, abs=0.02)
    for tail in (*_coverage_in_tails(covered, theta), *_coverage_in_tails(covered, shrunk)):
        assert 0.55 < tail < 0.85
    assert np.all((shrunk >= low) & (shrunk <= high))
    # The other two fail one of the conditionings.
    ref_low, ref_high = reference_quantiles(knots, GRID, group["log_edges"], group["density"],
                                            [0.16, 0.84])
    reference_covered = (theta >= ref_low) & (theta <= ref_high)
    posterior_covered = (theta >= knots[:, 5]) & (theta <= knots[:, 9])
    assert min(_coverage_in_tails(posterior_covered, theta)) < 0.45
    assert min(_coverage_in_tails(reference_covered, shrunk)) < 0.5
    # 95% intervals too.
    low, high = robust_quantiles(knots, GRID, group["log_edges"], group["density"],
                                 group["lower_level"], group["upper_level"], [0.025, 0.975])
    assert np.mean((theta >= low) & (theta <= high)) == pytest.approx(0.95, abs=0.01)


def _compressed(n, seed, pull):
    """The Gaussian case predicted by a model that pulls towards the mean more than the
    posterior does (``pull`` < 1 times the posterior mean: a forest on noisy labels),
    with the spread that keeps its intervals right on average."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, TAU, n)
    x = theta + rng.normal(0, S, n)
    shrink = TAU**2 / (TAU**2 + S**2)
    sd = TAU * np.sqrt(1 - 2 * pull * shrink + pull**2 * shrink)
    return theta, (pull * shrink * x)[:, None] + sd * stats.norm.ppf(GRID)[None, :]


#: True-value bins for the Gaussian case: beyond one prior sigma on either side, and
#: the two halves of the middle (linear units, as the cards' mass and age bins).
_BINS = np.exp([-TAU, 0.0, TAU])


def _worst_bin(power, fitted_on, scored):
    """Worst true-value bin coverage of the robust [p16, p84] with the prior divided
    ``power`` times, levels fitted on one simulated set and scored on another."""
    theta, knots = fitted_on
    group = fit_reference_prior(knots, GRID, theta, {"RGB": np.ones(theta.size, bool)},
                                power=power)["groups"]["RGB"]
    theta, knots = scored
    low, high = group_robust_quantiles(group, knots, GRID, (0.15865525, 0.84134475))
    covered = (theta >= low) & (theta <= high)
    which = np.searchsorted(np.log(_BINS), theta)
    return min(covered[which == b].mean() for b in range(len(_BINS) + 1)), covered.mean()


def test_a_prior_power_of_one_is_the_default_and_others_are_recorded():
    theta, knots = _compressed(4000, 21, 0.6)
    everyone = {"RGB": np.ones(theta.size, bool)}
    default = fit_reference_prior(knots, GRID, theta, everyone)
    assert fit_reference_prior(knots, GRID, theta, everyone, power=1.0) == default
    assert "prior_power" not in default["groups"]["RGB"]
    squared = fit_reference_prior(knots, GRID, theta, everyone, power=2.0)["groups"]["RGB"]
    assert squared["prior_power"] == 2.0
    edges, density = np.asarray(squared["log_edges"]), np.asarray(squared["density"])
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0, abs=1e-9)
    once = np.asarray(default["groups"]["RGB"]["density"])
    np.testing.assert_allclose(density / density.max(), (once / once.max())**2, atol=1e-9)


def test_the_prior_power_is_one_for_a_posterior_and_more_for_a_compressed_model():
    """A model whose predictions are the posterior's keeps one division (its tails
    already hold); one that pulls towards the mean more (a forest on noisy labels)
    gets a larger power, and on a fresh sample its worst bin rises while every
    power keeps 68% overall."""
    one_state = np.array(["RGB"] * 8000)
    powers = (1.0, 1.5, 2.0, 3.0)
    theta, knots = _compressed(8000, 31, 1.0)
    chosen, scores = choose_prior_power(knots, GRID, theta, one_state, ("RGB",), powers,
                                        _BINS)
    assert chosen == 1.0
    assert [score["power"] for score in scores] == list(powers)
    training, fresh = _compressed(8000, 32, 0.6), _compressed(20_000, 33, 0.6)
    chosen, _ = choose_prior_power(training[1], GRID, training[0], one_state, ("RGB",),
                                   powers, _BINS)
    assert chosen > 1.0
    # Judged by predicted value too (tenths of the point estimate), the power is
    # still above one, and its score is the worse of the two conditionings.
    point = training[1][:, list(GRID).index(0.5)]
    both, scores = choose_prior_power(training[1], GRID, training[0], one_state, ("RGB",),
                                      powers, _BINS, log_predicted=point)
    assert both > 1.0
    assert all(score["worst_p16_p84"] == min(score["worst_true"], score["worst_predicted"])
               for score in scores)
    worst_once, overall_once = _worst_bin(1.0, training, fresh)
    worst_chosen, overall_chosen = _worst_bin(chosen, training, fresh)
    assert worst_once < 0.62
    assert worst_chosen > worst_once + 0.03
    assert overall_once == pytest.approx(0.68, abs=0.02)
    assert overall_chosen == pytest.approx(0.68, abs=0.02)


def _misjudged_spread(n, seed):
    """The Gaussian case with a feature g in [0, 1] along which the model misjudges
    its spread: the knots' width is right on average, about 40% too wide at g = 0 and
    25% too narrow at g = 1 (what the upper RGB and the base of the branch look like)."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(0, 1, n)
    theta = rng.normal(0, TAU, n)
    shrink = TAU**2 / (TAU**2 + S**2)
    x = theta + rng.normal(0, S, n) * (0.7 + 0.6 * g)
    knots = (x * shrink)[:, None] + np.sqrt(shrink) * S * stats.norm.ppf(GRID)[None, :]
    return g, theta, knots


def test_levels_recalibrated_along_a_feature_hold_along_it():
    """Levels recalibrated per bin of g (interpolated between the bins' centres) make
    the robust [p16, p84] hold 68% at both ends of g; the group's single levels hold
    on average only. Fitted on one simulated set, scored on another."""
    g, theta, knots = _misjudged_spread(12_000, 21)
    everyone = {"all": np.ones(theta.size, bool)}
    plain = fit_reference_prior(knots, GRID, theta, everyone)["groups"]["all"]
    along = fit_reference_prior(knots, GRID, theta, everyone,
                                along=("g", g, lambda v: _equal_count_bins(v, 6)))
    group = along["groups"]["all"]
    table = group["along"]
    assert table["feature"] == "g" and len(table["centre"]) == 6 and sum(table["n"]) == 12_000
    assert group["lower_level"] == plain["lower_level"]  # the group's own levels unchanged
    g, theta, knots = _misjudged_spread(30_000, 22)
    ends = (g < 0.15, g > 0.85)

    def coverage(lower, upper):
        low, high = robust_quantiles(knots, GRID, group["log_edges"], group["density"],
                                     lower, upper, [0.16, 0.84])
        covered = (theta >= low) & (theta <= high)
        return covered.mean(), [covered[end].mean() for end in ends]

    overall, at_ends = coverage(*levels_along(plain, g))
    assert overall == pytest.approx(0.68, abs=0.02)
    assert at_ends[0] > 0.76 and at_ends[1] < 0.60  # too wide, too narrow
    overall, at_ends = coverage(*levels_along(group, g))
    assert overall == pytest.approx(0.68, abs=0.02)
    for value in at_ends:
        assert value == pytest.approx(0.68, abs=0.035)


def test_levels_along_skip_unknown_values_and_tiny_bins():
    """Stars without the feature's value do not enter the bins; a bin of fewer than
    MIN_STARS_ALONG stars gets no levels of its own (its stars take the neighbours'),
    and a group with no such bin gets no ``along`` entry."""
    from stellar_ml_ages.reference_prior import MIN_STARS_ALONG

    g, theta, knots = _misjudged_spread(3000, 23)
    g[:50] = np.nan
    everyone = {"all": np.ones(theta.size, bool)}
    entry = fit_reference_prior(knots, GRID, theta, everyone,
                                along=("g", g, lambda v: _equal_count_bins(v, 3)))
    along = entry["groups"]["all"]["along"]
    assert sum(along["n"]) == 2950 and np.all(np.isfinite(along["centre"]))

    def lopsided(values):  # a bin of 20 stars beside two large ones
        edges = np.quantile(values, [0, 20 / len(values), 0.5, 1])
        return edges, np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 2)

    entry = fit_reference_prior(knots, GRID, theta, everyone, along=("g", g, lopsided))
    assert min(entry["groups"]["all"]["along"]["n"]) >= MIN_STARS_ALONG
    assert len(entry["groups"]["all"]["along"]["n"]) == 2
    small = {"few": np.arange(theta.size) < 150}
    entry = fit_reference_prior(knots, GRID, theta, small,
                                along=("g", g, lambda v: _equal_count_bins(v, 4)))
    assert "along" not in entry["groups"]["few"]


def test_a_card_with_levels_along_needs_the_rows_features():
    from stellar_ml_ages import get_model
    from stellar_ml_ages.exceptions import ModelError

    giants = get_model("giants")
    with pytest.raises(ModelError, match="follow 'logg': pass the rows' features"):
        giants._robust_quantiles("mass", np.zeros(2), np.full(2, 0.1), None, [0.16, 0.84])


def test_per_row_levels_equal_to_shared_ones_change_nothing():
    _, _, knots = _simulate(200, 4)
    edges, density = _gaussian_prior()
    lower = np.clip(GRID * 1.1, GRID[0], GRID[-1])
    upper = np.clip(GRID * 0.95, GRID[0], GRID[-1])
    shared = robust_quantiles(knots, GRID, edges, density, lower, upper, [0.025, 0.16, 0.84])
    rows = robust_quantiles(knots, GRID, edges, density, np.tile(lower, (200, 1)),
                            np.tile(upper, (200, 1)), [0.025, 0.16, 0.84])
    np.testing.assert_allclose(rows, shared, rtol=0, atol=1e-15)


def test_levels_along_are_held_beyond_the_outer_centres():
    entry = {"lower_level": [0.1, 0.5], "upper_level": [0.5, 0.9],
             "along": {"feature": "logg", "centre": [2.0, 3.0],
                       "lower_level": [[0.2, 0.5], [0.1, 0.5]],
                       "upper_level": [[0.5, 0.8], [0.5, 0.9]]}}
    lower, upper = levels_along(entry, [1.0, 2.0, 2.5, 3.0, 4.0])
    np.testing.assert_allclose(lower[:, 0], [0.2, 0.2, 0.15, 0.1, 0.1])
    np.testing.assert_allclose(upper[:, 1], [0.8, 0.8, 0.85, 0.9, 0.9])
    del entry["along"]
    lower, upper = levels_along(entry, [1.0])
    assert lower.tolist() == [0.1, 0.5]


def test_the_reference_cdf_inverts_the_reference_quantiles():
    _, _, knots = _simulate(50, 3)
    edges, density = _gaussian_prior()
    values = reference_quantiles(knots, GRID, edges, density, [0.3])
    back = reference_cdf(knots, GRID, edges, density, values[0])
    np.testing.assert_allclose(back, 0.3, atol=1e-9)


def test_rows_with_missing_knots_stay_missing():
    knots = _posterior_knots(np.array([0.1, 0.2]))
    knots[1, 3] = np.nan
    edges, density = _gaussian_prior()
    out = reference_quantiles(knots, GRID, edges, density, [0.16, 0.84])
    assert np.all(np.isfinite(out[:, 0])) and np.all(np.isnan(out[:, 1]))


# ---------------------------------------------------------------- packaged models
@pytest.fixture(scope="module")
def annotated():
    from stellar_ml_ages import add_mass_age, demo_table

    return add_mass_age(demo_table(), model="giants")


def test_packaged_giants_give_robust_intervals_by_default(annotated):
    from stellar_ml_ages import add_mass_age, demo_table, get_model

    assert get_model("giants").interval_kinds == ("robust", "posterior")
    assert annotated.meta["MLINTVL"] == "robust"
    training = add_mass_age(demo_table(), model="giants", intervals="posterior")
    assert training.meta["MLINTVL"] == "posterior"
    # Same point estimates, inside both intervals; the robust ones reach further out
    # for stars predicted far from the middle of the training range.
    np.testing.assert_array_equal(np.asarray(annotated["age"]), np.asarray(training["age"]))
    predicted = ~np.ma.getmaskarray(annotated["mass"])
    assert predicted.sum() > 100

    def values(table, name):
        return np.ma.filled(table[name], np.nan).astype(float)[predicted]

    for target in ("mass", "age"):
        low, high = values(annotated, f"{target}_p16"), values(annotated, f"{target}_p84")
        point = values(annotated, target)
        assert np.all((low < point) & (point < high))
        width = np.log(high / low)
        posterior_width = np.log(values(training, f"{target}_p84")
                                 / values(training, f"{target}_p16"))
        # Never narrower than the posterior by much; wider in the tails only.
        assert 0.95 < np.median(width / posterior_width) < 1.2
        assert np.percentile(width / posterior_width, 95) < 2.5


def test_an_unknown_interval_kind_is_refused_naming_the_choices():
    from stellar_ml_ages import add_mass_age, demo_table
    from stellar_ml_ages.exceptions import ModelError

    with pytest.raises(ModelError, match=r"'robust' or 'posterior'.*--intervals"):
        add_mass_age(demo_table(), model="giants", intervals="flat")


def test_population_tools_use_the_training_posterior(annotated):
    """Stacking needs p(y | labels) under the training prior: a table annotated with
    robust intervals is not read as that, the model is run again."""
    from stellar_ml_ages import add_mass_age, demo_table
    from stellar_ml_ages.distributions import predictive_distribution

    every = add_mass_age(demo_table(), model="giants", quantiles="all")
    assert every.meta["MLINTVL"] == "posterior"
    from_columns = predictive_distribution(every, "age")
    assert from_columns.meta["source"] == "quantile columns"
    rerun = predictive_distribution(annotated, "age")
    assert rerun.meta["source"] == "model run"
    np.testing.assert_array_equal(rerun.predicted, from_columns.predicted)
    for level in (0.05, 0.16, 0.5, 0.84, 0.95):
        np.testing.assert_allclose(rerun.quantile(level)[rerun.predicted].value,
                                   from_columns.quantile(level)[rerun.predicted].value,
                                   rtol=1e-6)


def test_a_card_with_decreasing_robust_levels_is_refused():
    import copy

    from stellar_ml_ages import get_model
    from stellar_ml_ages.exceptions import ModelFormatError
    from stellar_ml_ages.model import validate_card

    card = copy.deepcopy(get_model("giants").card)
    group = card["targets"][0]["reference_prior"]["groups"]["all"]
    group["upper_level"] = group["upper_level"][::-1]
    with pytest.raises(ModelFormatError,
                       match=r"reference_prior group 'all'.*non-decreasing upper_level"):
        validate_card(card, "test card")


def test_a_card_with_bad_levels_along_a_feature_is_refused():
    import copy

    from stellar_ml_ages import get_model
    from stellar_ml_ages.exceptions import ModelFormatError
    from stellar_ml_ages.model import _ALONG_VERSION, validate_card

    card = copy.deepcopy(get_model("giants").card)
    card["format_version"] = _ALONG_VERSION
    group = card["targets"][0]["reference_prior"]["groups"]["RGB"]
    good = {"feature": "logg", "centre": [2.0, 2.8], "n": [10, 10],
            "lower_level": [group["lower_level"]] * 2,
            "upper_level": [group["upper_level"]] * 2}
    group["along"] = good
    validate_card(card, "test card")
    for change, message in (({"feature": "dnu"}, "naming one of the card's features"),
                            ({"feature": ["logg"]}, "naming one of the card's features"),
                            ({"n": [10]}, "one positive star count"),
                            ({"n": [10, 0]}, "one positive star count"),
                            ({"centre": [2.8, 2.0]}, "increasing centres"),
                            ({"upper_level": [group["upper_level"]]}, "one upper_level row"),
                            ({"lower_level": [group["lower_level"][::-1]] * 2},
                             "rows of one non-decreasing lower_level")):
        group["along"] = {**good, **change}
        with pytest.raises(ModelFormatError, match=message):
            validate_card(card, "test card")
    # A format-5 reader would ignore the levels: such a card must say format 6.
    group["along"] = good
    card["format_version"] = _ALONG_VERSION - 1
    with pytest.raises(ModelFormatError, match="needs format_version >= 6"):
        validate_card(card, "test card")


def test_a_card_whose_prior_powers_disagree_is_refused():
    """One power per target, the one its recorded choice names; the packaged giants-slam
    card's power is its choice's, and every fold of its evaluation chose one too."""
    import copy

    from stellar_ml_ages import get_model
    from stellar_ml_ages.exceptions import ModelFormatError
    from stellar_ml_ages.model import validate_card

    shipped = get_model("giants-slam").card
    for target in shipped["targets"]:
        reference = target["reference_prior"]
        choice = reference["prior_power_choice"]
        assert {g.get("prior_power", 1.0) for g in reference["groups"].values()} == {
            choice["power"]}
        assert choice["power"] > 1.0
        assert len(target["coverage_cv"]["prior_power_by_fold"]) == 10
    for target in get_model("giants").card["targets"]:
        assert target["reference_prior"]["prior_power_choice"]["power"] == 1.0
        assert all("prior_power" not in g for g in target["reference_prior"]["groups"].values())
    card = copy.deepcopy(shipped)
    reference = card["targets"][0]["reference_prior"]
    reference["prior_power_choice"]["power"] = 2.0
    with pytest.raises(ModelFormatError, match="one prior_power"):
        validate_card(card, "test card")
    card = copy.deepcopy(shipped)
    card["targets"][0]["reference_prior"]["groups"]["RC"]["prior_power"] = 1.25
    with pytest.raises(ModelFormatError, match="one prior_power"):
        validate_card(card, "test card")
    card["targets"][0]["reference_prior"]["groups"]["RC"]["prior_power"] = 0.5
    with pytest.raises(ModelFormatError, match="prior_power"):
        validate_card(card, "test card")


def test_choosing_a_power_without_enough_stars_keeps_one():
    """Cells of fewer than 50 stars judge nothing: a tiny training set keeps one
    division (and records no score), whatever the candidates; stars without a finite
    prediction are in no cell of predicted value."""
    theta, knots = _compressed(300, 41, 0.6)
    states = np.array(["RGB"] * 300)
    point = knots[:, list(GRID).index(0.5)]
    chosen, scores = choose_prior_power(knots, GRID, theta, states, ("RGB",), (1.0, 2.0),
                                        np.exp([-2.0, 2.0]), log_predicted=point)
    # One true-value cell of 300 stars; tenths of predicted value of 30: too few.
    assert all(score["worst_predicted"] is None and score["worst_true"] is not None
               for score in scores)
    chosen, scores = choose_prior_power(knots[:40], GRID, theta[:40], states[:40], ("RGB",),
                                        (1.0, 2.0), _BINS, log_predicted=point[:40])
    assert chosen == 1.0 and all(score["n"] == 0 for score in scores)
    with pytest.raises(ValueError, match="finite numbers >= 1"):
        choose_prior_power(knots, GRID, theta, states, ("RGB",), (0.5,), _BINS)
    theta, knots = _compressed(8000, 42, 0.6)
    point = knots[:, list(GRID).index(0.5)].copy()
    point[::2] = np.nan  # half the stars: tenths of the other half
    _, scores = choose_prior_power(knots, GRID, theta, np.array(["RGB"] * 8000), ("RGB",),
                                   (1.0,), _BINS, log_predicted=point)
    assert scores[0]["worst_predicted"] is not None


def test_a_spec_refuses_powers_below_one_or_not_numbers():
    import dataclasses

    from stellar_ml_ages.training import get_spec

    spec = get_spec("giants-slam")
    assert spec.reference_prior_powers[0] == 1.0
    assert dataclasses.replace(spec, reference_prior_powers=[1, 2]).reference_prior_powers \
        == (1.0, 2.0)
    for bad in ((0.5,), (float("inf"),), (True,), 1.5, ("1.5",)):
        with pytest.raises(ValueError, match="reference_prior_powers must be a tuple"):
            dataclasses.replace(spec, reference_prior_powers=bad)


@pytest.mark.parametrize("name", ["giants", "giants-slam", "red-clump", "red-clump-seismic"])
def test_cards_record_coverage_by_predicted_value_and_cell_widths(name):
    """The cards' tenths of the predicted value per state count every state's stars
    once, and hold 57-82% each (the robust intervals: 68% on average); each state and
    true-value cell records what its coverage costs, a positive median ln width that
    is wider for the giants-slam card's noisier labels."""
    from stellar_ml_ages import get_model

    card = get_model(name).card
    widths = {}
    for target in card["targets"]:
        cells = {(row["state"], row["bin"]): row
                 for row in target["coverage_by_state_and_true_value"]}
        for state, entry in target["coverage_by_predicted"].items():
            assert sum(entry["n"]) == cells[(state, "all")]["n"]
            assert min(entry["p16_p84"]) > 0.57 and max(entry["p16_p84"]) < 0.82
            assert np.average(entry["p16_p84"], weights=entry["n"]) == pytest.approx(
                cells[(state, "all")]["p16_p84"], abs=1e-9)
        assert all(row["median_ln_width"] > 0 for row in cells.values() if row["n"])
        widths[target["name"]] = cells[("all", "all")]["median_ln_width"]
    if name == "giants-slam":
        giants = {t["name"]: next(r for r in t["coverage_by_state_and_true_value"]
                                  if r["state"] == "all" and r["bin"] == "all")
                  for t in get_model("giants").card["targets"]}
        for target, width in widths.items():
            assert width > 1.5 * giants[target]["median_ln_width"]
