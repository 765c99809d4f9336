"""Models v2 mechanics on small synthetic data: label scale, group calibration,
evolutionary state, edge flags, excess-noise propagation, stand-in and derived inputs."""

import dataclasses
import json
import shutil

import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from stellar_ml_ages import MassAgeFlag, add_mass_age, get_model
from stellar_ml_ages.columns import resolve_columns
from stellar_ml_ages.evstate import normalize_states, resolve_state_column
from stellar_ml_ages.exceptions import (
    AmbiguousColumnError,
    LabelNoiseWarning,
    MissingColumnError,
    ModelIntegrityWarning,
    StellarMLAgesWarning,
)
from stellar_ml_ages.model import load_model
from stellar_ml_ages.training import get_spec, make_synthetic_catalog, train_model
from stellar_ml_ages.training.labelscale import fit_label_correction
from stellar_ml_ages.training.pipeline import add_input_noise
from tests.helpers import typical_star


# ------------------------------------------------------------------ label scale
def test_label_correction_recovers_offset_and_teff_trend():
    rng = np.random.default_rng(3)
    teff = rng.uniform(4000, 5200, 4000)
    truth = rng.normal(0.0, 0.15, 4000)
    prelim = truth + rng.normal(0, 0.015, 4000)  # two runs, comparable noise
    truth_shift = -0.04 + 0.05 * (teff - np.median(teff)) / 1000
    final = truth + truth_shift + rng.normal(0, 0.015, 4000)
    fit = fit_label_correction("c_fe", prelim, final,
                               {"teff": teff, "fe_h": rng.normal(0, 0.2, 4000)})
    assert set(fit.trends) == {"teff"}
    assert fit.trends["teff"]["slope"] == pytest.approx(0.05, abs=0.005)
    assert fit.offset == pytest.approx(-0.04, abs=0.003)
    assert fit.scatter_after == pytest.approx(0.015 * np.sqrt(2), rel=0.1)
    assert fit.scatter_after < fit.scatter_before
    corrected = fit.apply(prelim, {"teff": teff})
    assert np.median(final - corrected) == pytest.approx(0.0, abs=0.002)
    # Outside the overlap the trend is held at its edge, not extrapolated.
    far = fit.apply(np.zeros(2), {"teff": np.array([6000.0, 9000.0])})
    assert far[0] == far[1]


def test_label_scale_change_keeps_the_reference_spread():
    """A real change of scale is corrected without the attenuation of a least-squares slope:
    the corrected labels have the reference run's spread, not a compressed one."""
    rng = np.random.default_rng(4)
    truth = rng.normal(0.2, 0.12, 5000)
    prelim = truth + rng.normal(0, 0.03, 5000)
    final = 1.2 * truth + rng.normal(0, 0.03, 5000)
    fit = fit_label_correction("n_fe", prelim, final, {"teff": rng.uniform(4000, 5000, 5000)},
                               source_errors=np.full(5000, 0.03),
                               reference_errors=np.full(5000, 0.03))
    assert set(fit.trends) == {"self"}
    corrected = fit.apply(prelim, {})
    assert np.std(corrected) == pytest.approx(np.std(final), rel=0.02)
    # Least squares on the noisy source would have shrunk it by var(t) / var(x) = 0.94.
    ols = np.polyfit(prelim, final - prelim, 1)[0]
    assert np.std(prelim + ols * prelim) < 0.97 * np.std(final)


def test_label_correction_needs_an_overlap():
    with pytest.raises(ValueError, match="overlap stars"):
        fit_label_correction("teff", np.arange(10.0), np.arange(10.0), {})


# ------------------------------------------------------- evolutionary state
def test_state_values_and_column_resolution():
    states = normalize_states(MaskedColumn(["RGB", "RC(S)", "2", "AMB", "1", "RC"],
                                           mask=[0, 0, 0, 0, 0, 1]))
    assert states.tolist() == ["RGB", "RC", "RC", "", "RGB", ""]
    assert normalize_states(np.array([1.0, 2.0, np.nan])).tolist() == ["RGB", "RC", ""]
    assert resolve_state_column(Table(names=["TEFF", "evol_state"])) == "evol_state"
    assert resolve_state_column(Table(names=["TEFF", "EVSTATE"]), state_column=False) is None
    with pytest.raises(AmbiguousColumnError, match="EVSTATE, CONS_EVSTATES"):
        resolve_state_column(Table(names=["EVSTATE", "CONS_EVSTATES"]))
    with pytest.raises(MissingColumnError, match="'ES'"):
        resolve_state_column(Table(names=["TEFF"]), state_column="ES")


def _rgb_and_clump(model, n=4):
    table = typical_star(model, n)
    table["EVSTATE"] = ["RGB", "RC", "", "AMB"][:n]
    return table


def test_a_clump_model_on_rows_the_table_calls_rgb_warns(giants):
    """#23 item 7: red-clump is trained on clump stars; rows the table's own state
    column calls RGB are predicted (not dropped) and the call says so, once."""
    clump = get_model("red-clump")
    table = _rgb_and_clump(clump)
    with pytest.warns(StellarMLAgesWarning) as caught:
        annotated = add_mass_age(table, model=clump)
    texts = [str(w.message) for w in caught if "state column" in str(w.message)]
    assert len(texts) == 1 and texts[0].startswith("1 predicted rows are RGB stars")
    assert "'EVSTATE'" in texts[0] and "giants" in texts[0]
    assert not np.ma.is_masked(annotated["mass"][0])  # flagged by the warning, kept
    # No warning without a state column, or for a model trained on both states.
    add_mass_age(table, model=clump, state_column=False)
    add_mass_age(_rgb_and_clump(giants), model=giants)


def test_state_selects_the_interval_calibration(giants):
    table = _rgb_and_clump(giants)
    with_state = add_mass_age(table, model=giants)
    pooled = add_mass_age(table, model=giants, state_column=False)
    assert with_state.meta["MLSTATE"] == "EVSTATE"
    assert pooled.meta["MLSTATE"].startswith("none")
    # Same point estimates: the state never changes the prediction, only its interval.
    np.testing.assert_array_equal(with_state["mass"], pooled["mass"])
    width = np.asarray(with_state["mass_p84"] - with_state["mass_p16"])
    pooled_width = np.asarray(pooled["mass_p84"] - pooled["mass_p16"])
    assert width[0] != width[1]  # RGB and clump calibrations differ
    # Unknown states fall back to the pooled calibration exactly.
    np.testing.assert_allclose(width[2:], pooled_width[2:], rtol=1e-12)


# --------------------------------------------------------- group calibration
def _heteroscedastic_catalog(n, seed):
    """Two states with the same labels-to-mass relation but 3x different target noise."""
    spec = get_spec("giants")
    table = make_synthetic_catalog(spec, n, seed=seed)
    rng = np.random.default_rng(seed)
    noisy = np.asarray(table["EVSTATE"]) == "RC"
    scatter = np.where(noisy, 0.2, 0.03)
    table["MASS"] = table["MASS"] * np.exp(rng.normal(0, scatter))
    table["AGE"] = table["AGE"] * np.exp(rng.normal(0, scatter))
    return table


def test_calibration_by_state_holds_where_pooled_fails():
    spec = dataclasses.replace(get_spec("giants"), n_estimators=60, cleaning_estimators=30,
                               test_fraction=0.0, network=None)  # the forest's calibration
    model = train_model(spec, _heteroscedastic_catalog(4000, seed=5)).model
    test = _heteroscedastic_catalog(3000, seed=6)
    states = np.asarray(test["EVSTATE"])
    truth = np.asarray(test["MASS"])
    # The catalog carries the true MASS: the predictions go beside it, prefixed.
    # The calibration's own property, on the posterior's quantiles.
    grouped = add_mass_age(test, model=model, allow_extrapolation=True, prefix="ml_",
                           intervals="posterior")
    pooled = add_mass_age(test, model=model, allow_extrapolation=True, state_column=False,
                          prefix="ml_", intervals="posterior")
    robust = add_mass_age(test, model=model, allow_extrapolation=True, prefix="ml_")

    def covered(table, rows):
        return np.mean((truth[rows] >= table["ml_mass_p16"][rows])
                       & (truth[rows] <= table["ml_mass_p84"][rows]))

    for state in ("RGB", "RC"):
        assert 0.62 < covered(grouped, states == state) < 0.74, state
        assert 0.62 < covered(robust, states == state) < 0.74, state
    # One pooled table over-covers the quiet group and under-covers the noisy one.
    quiet, noisy = covered(pooled, states == "RGB"), covered(pooled, states == "RC")
    assert quiet > 0.74 and noisy < 0.66 and quiet - noisy > 0.1


def test_input_noise_is_seeded_per_star_and_fractional():
    spec = get_spec("red-clump-seismic")
    kic = np.arange(1000, 3000)
    features = np.ones((len(kic), len(spec.features)))
    features[:, spec.features.index("dnu")] = 4.0
    noisy = add_input_noise(spec, features, kic)
    reversed_rows = add_input_noise(spec, features[::-1], kic[::-1])[::-1]
    np.testing.assert_array_equal(noisy, reversed_rows)  # independent of row order
    dnu = noisy[:, spec.features.index("dnu")]
    assert np.std(dnu / 4.0 - 1) == pytest.approx(0.02, rel=0.1)
    others = np.delete(noisy, spec.features.index("dnu"), axis=1)
    assert np.all(others == 1.0)


# ------------------------------------------------------------------ flags
def test_edge_flags_mark_predictions_beyond_the_calibrated_range(giants):
    low, high = giants.target("mass")["calibrated_range"]
    table = typical_star(giants, 1)
    annotated = add_mass_age(table, model=giants)
    value = float(annotated["mass"][0])
    flag = MassAgeFlag(int(annotated["mass_age_flag"][0]))
    assert (MassAgeFlag.MASS_NEAR_LOW_EDGE in flag) == (value < low)
    assert (MassAgeFlag.MASS_NEAR_HIGH_EDGE in flag) == (value > high)
    # Move the range so the typical star lies beyond it: bit set, prediction kept.
    model = get_model("giants")
    edited = json.loads(json.dumps(model.card))
    for target in edited["targets"]:
        target["calibrated_range"] = [target["calibrated_range"][1] * 10,
                                      target["calibrated_range"][1] * 20]
    shifted = type(model)(edited, model.forests, model.domain, model.networks)
    flagged = add_mass_age(table, model=shifted)
    flag = MassAgeFlag(int(flagged["mass_age_flag"][0]))
    assert MassAgeFlag.MASS_NEAR_LOW_EDGE in flag and MassAgeFlag.AGE_NEAR_LOW_EDGE in flag
    assert not flagged["mass"].mask[0] and flagged["mass_age_flag"].dtype == np.int16


# --------------------------------------------------------- propagate_errors
def test_errors_at_training_noise_change_nothing_larger_ones_widen(giants):
    table = typical_star(giants, 2)
    plain = add_mass_age(table, model=giants)
    noise = {f["name"]: f["training_noise"] for f in giants.card["features"]}
    column_noise = {"TEFF": noise["teff"], "LOGG": noise["logg"], "FE_H": noise["fe_h"],
                    "N_FE": noise["n_fe"], "ALPHA_M": noise["alpha_m"], "C_FE": 0.0}
    for name, level in column_noise.items():
        table[f"{name}_ERR"] = [level, 10 * max(level, 0.02)]
        table[f"{name}_ERR"].unit = u.K if name == "TEFF" else u.dex
    propagated = add_mass_age(table, model=giants, propagate_errors=True)
    width = np.asarray(propagated["mass_p84"] - propagated["mass_p16"])
    plain_width = np.asarray(plain["mass_p84"] - plain["mass_p16"])
    assert width[0] == pytest.approx(plain_width[0], rel=1e-9)
    assert width[1] > 1.3 * plain_width[1]


@pytest.mark.parametrize("intervals", ["robust", "posterior"])
def test_more_input_noise_never_narrows_an_interval_or_crosses_quantiles(giants, intervals):
    """Teff errors of 80 K (training noise 28 K) on the demo table: every propagated
    interval contains the unpropagated one, and every row's quantiles stay ordered,
    ends at the training range included. Before the variance floor, stars whose own
    spread exceeds their neighbours' came out narrower (the mixture of the draws'
    variances), and a robust end held at the training range could pass the next
    quantile out."""
    from stellar_ml_ages import demo_table

    table = demo_table()
    table["TEFF_ERR"] = 80 * u.K
    table["N_FE_ERR"] = 0.1 * u.dex
    levels = (0.025, 0.16, 0.84, 0.975)
    with pytest.warns(LabelNoiseWarning, match="propagate_errors=True"):
        plain = add_mass_age(table, model=giants, intervals=intervals, quantiles=levels)
    noisy = add_mass_age(table, model=giants, intervals=intervals, quantiles=levels,
                         propagate_errors=True)
    predicted = ~np.ma.getmaskarray(plain["mass"])
    assert predicted.sum() > 100
    for target in ("mass", "age"):
        columns = [f"{target}_p2_5", f"{target}_p16", f"{target}_p84", f"{target}_p97_5"]
        values = {c: np.ma.filled(noisy[c], np.nan)[predicted] for c in columns}
        before = {c: np.ma.filled(plain[c], np.nan)[predicted] for c in columns}
        np.testing.assert_array_equal(np.ma.filled(noisy[target], np.nan)[predicted],
                                      np.ma.filled(plain[target], np.nan)[predicted])
        for low, high in ((columns[0], columns[1]), (columns[2], columns[3])):
            assert np.all(values[low] <= values[high]), (target, low, high)
            assert np.all(before[low] <= before[high]), (target, low, high)
        assert np.all(values[columns[0]] <= before[columns[0]] * (1 + 1e-12))
        assert np.all(values[columns[1]] <= before[columns[1]] * (1 + 1e-12))
        assert np.all(values[columns[2]] >= before[columns[2]] * (1 - 1e-12))
        assert np.all(values[columns[3]] >= before[columns[3]] * (1 - 1e-12))
        widened = np.log(values[columns[2]] / values[columns[1]]) \
            > np.log(before[columns[2]] / before[columns[1]]) * (1 + 1e-9)
        assert widened.mean() > 0.5  # the errors are three times the training noise


def test_excess_errors_subtract_training_noise_in_quadrature(giants):
    features = np.array([[f["mean"] for f in giants.card["features"]]])
    noise = np.array([f["training_noise"] for f in giants.card["features"]])
    excess = giants.excess_errors(features, np.array([noise * 5 / 3]))
    np.testing.assert_allclose(excess[0], noise * 4 / 3)
    assert np.all(giants.excess_errors(features, np.array([noise / 2])) == 0)


def test_widened_rows_are_those_with_an_error_beyond_the_training_noise(giants):
    """What ERRORS_WIDENED marks: one feature's error above its training noise is
    enough; errors at or below it everywhere, or an error column that no feature is
    made from, widen nothing."""
    from stellar_ml_ages.units import InputErrors

    features = np.tile([f["mean"] for f in giants.card["features"]], (4, 1))
    noise = np.array([f["training_noise"] for f in giants.card["features"]])
    errors = np.tile(noise, (4, 1))
    errors[1, 2] *= 1.5
    errors[2] /= 3
    errors[3, :] = np.nan  # unknown: nothing propagated
    assert list(giants.widened_rows(features, errors)) == [False, True, False, False]
    n = len(noise)
    design = np.column_stack([np.eye(n), np.zeros(n)])  # the last column reaches nothing
    columns = np.column_stack([np.tile(noise, (2, 1)), [0.0, 10.0]])
    columns[0, 0] *= 2
    labels = (*giants.feature_names, "unused")
    assert list(giants.widened_rows(features[:2], InputErrors(columns, design, labels))) == [
        True, False]


# ------------------------------------------------ derived and stand-in inputs
def test_mg_fe_stands_in_for_alpha_m_and_is_recorded(giants):
    table = typical_star(giants, 1)
    table["MG_FE"] = table["ALPHA_M"]
    with_alpha = add_mass_age(table, model=giants)
    del table["ALPHA_M"]
    with_mg = add_mass_age(table, model=giants)
    assert float(with_mg["mass"][0]) == float(with_alpha["mass"][0])
    assert "alpha_m=MG_FE (as [Mg/Fe])" in with_mg.meta["MLINPUTS"]
    assert "c_n=C_FE - N_FE" in with_mg.meta["MLINPUTS"]
    resolved = resolve_columns(Table(names=["MG_H", "FE_H"]), ["alpha_m"])
    assert str(resolved["alpha_m"]) == "MG_H - FE_H (as [Mg/Fe])"


def test_allstar_minimal_columns_are_enough(giants):
    """TEFF, LOGG, FE_H, C_FE, N_FE, ALPHA_M: nothing else is needed for mass and age."""
    table = typical_star(giants, 1)
    assert set(table.colnames) == {"TEFF", "LOGG", "FE_H", "C_FE", "N_FE", "ALPHA_M"}
    annotated = add_mass_age(table)  # model=None picks giants
    assert annotated.meta["MLMODEL"] == "giants-apogee-dr17"
    assert 0.5 < float(annotated["mass"][0]) < 3.0 and 0.5 < float(annotated["age"][0]) < 14


# --------------------------------------------------------------- card format
def test_format_1_card_still_loads_with_pooled_calibration(tmp_path):
    # A forest-only model: format 1 had no networks (they came with format 4).
    forest_only = get_model("red-clump")
    for suffix in (".json", ".npz"):
        source = forest_only.card_path.with_suffix(suffix)
        shutil.copy(source, tmp_path / source.name)
    card_path = tmp_path / forest_only.card_path.name
    card = json.loads(card_path.read_text())
    card["format_version"] = 1
    del card["card_sha256"]  # format 1 and 2 cards had no checksum of their own
    for target in card["targets"]:
        target.pop("reference_prior", None)  # version 3.1 (robust intervals)
        del target["calibration"]["bins"]
    card_path.write_text(json.dumps(card))
    with pytest.warns(ModelIntegrityWarning, match="format version 1, without a checksum"):
        old = load_model(card_path)
    table = _rgb_and_clump(forest_only)
    with pytest.warns(StellarMLAgesWarning, match="RGB stars by the table's state column"):
        annotated = add_mass_age(table, model=old)
    # Without bins every row gets the pooled offsets, whatever its state.
    sigma_ratio = np.log(np.asarray(annotated["mass_p84"]) / np.asarray(annotated["mass"]))
    np.testing.assert_allclose(sigma_ratio, sigma_ratio[0], rtol=1e-9)


def test_shared_columns_are_drawn_once_for_every_feature_they_feed(giants):
    """N_FE feeds [C/N] (with a minus sign) and [N/Fe]: its draws move both, oppositely."""
    from stellar_ml_ages.columns import resolve_error_columns
    from stellar_ml_ages.units import feature_matrix

    table = typical_star(giants, 3)
    table["N_FE_ERR"] = [0.3, 0.3, 0.3] * u.dex
    table["C_FE_ERR"] = [0.0, 0.0, 0.0] * u.dex
    resolved = resolve_columns(table, giants.feature_names)
    matrix = feature_matrix(table, resolved, resolve_error_columns(table, resolved))
    errors = matrix.input_errors()
    assert set(errors.labels) >= {"c_fe", "n_fe"}
    shifts = giants._perturbations(matrix.values, errors, 1, 50)
    c_n, n_fe = giants.feature_names.index("c_n"), giants.feature_names.index("n_fe")
    for shift in shifts:
        np.testing.assert_allclose(shift[:, c_n], -shift[:, n_fe])
    spread = np.std([shift[:, n_fe] for shift in shifts])
    noise = giants._label_noise("n_fe", matrix.values)[0]
    assert spread == pytest.approx(np.sqrt(0.3**2 - noise**2), rel=0.25)


def test_quantiles_and_predictive_cdf_are_inverse(giants):
    features = np.array([[f["mean"] for f in giants.card["features"]]] * 3)
    features[1, giants.feature_names.index("c_n")] -= 0.1  # a heavier star: another bin
    states = np.array(["RGB", "RC", ""])
    probabilities = (0.025, 0.16, 0.5, 0.84, 0.975)
    predicted = giants.predict(features, quantiles=probabilities, states=states,
                               intervals="posterior")
    for target in giants.target_names:
        for p in probabilities:
            cdf = giants.predictive_cdf(target, features, predicted[target][p], states=states)
            np.testing.assert_allclose(cdf, p, atol=1e-9)


def test_high_edge_bit(giants):
    model = get_model("giants")
    edited = json.loads(json.dumps(model.card))
    for target in edited["targets"]:
        target["calibrated_range"] = [1e-3, 2e-3]
    shifted = type(model)(edited, model.forests, model.domain, model.networks)
    flag = MassAgeFlag(int(add_mass_age(typical_star(giants, 1), model=shifted)
                           ["mass_age_flag"][0]))
    assert MassAgeFlag.MASS_NEAR_HIGH_EDGE in flag and MassAgeFlag.AGE_NEAR_HIGH_EDGE in flag
    assert MassAgeFlag.MASS_NEAR_LOW_EDGE not in flag


def test_predict_reads_state_codes_and_masks(giants):
    features = np.array([[f["mean"] for f in giants.card["features"]]] * 4)
    coded = giants.predict(features, states=np.ma.MaskedArray([1, 2, 2, 7], mask=[0, 0, 1, 0]))
    named = giants.predict(features, states=np.array(["RGB", "RC", "", ""]))
    for key in (0.16, 0.84):
        np.testing.assert_array_equal(coded["mass"][key], named["mass"][key])
