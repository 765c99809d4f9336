"""Model artifacts: checksums, formats, versions, and no pickle."""

import json
import shutil

import numpy as np
import pytest

from stellar_ml_ages import (
    ModelChecksumError,
    ModelError,
    ModelFormatError,
    ModelNotFoundError,
    ModelVersionError,
    get_model,
    list_models,
)
from stellar_ml_ages.model import card_checksum, load_model, sha256_of


@pytest.fixture
def artifact(tmp_path, giants):
    for suffix in (".json", ".npz"):
        source = giants.card_path.with_suffix(suffix)
        shutil.copy(source, tmp_path / source.name)
    return tmp_path / giants.card_path.name


def test_packaged_artifacts_are_small_plain_arrays():
    total = 0
    for name in list_models()["name"]:
        model = get_model(name)
        array_path = model.card_path.with_name(model.card["arrays"]["file"])
        total += array_path.stat().st_size
        with np.load(array_path, allow_pickle=False) as arrays:
            assert all(arrays[key].dtype != object for key in arrays.files)
        assert sha256_of(array_path) == model.card["arrays"]["sha256"]
    assert total < 25e6


def test_card_describes_features_targets_and_metrics(giants, red_clump):
    # Spectroscopic labels only: every input is in an APOGEE DR17 allStar file.
    assert set(giants.feature_names) == {"c_n", "teff", "logg", "alpha_m", "n_fe", "fe_h"}
    assert set(red_clump.feature_names) == set(giants.feature_names)
    assert "dnu" in get_model("red-clump-seismic").feature_names
    for model in (giants, red_clump):
        assert model.target_names == ("mass", "age")
        assert str(model.target_unit("age")) == "Gyr"
    for name in list_models()["name"]:
        card = get_model(name).card
        # Format 4 only where a target has networks (stellar_ml_ages.network), 5 where
        # its calibration has a spread (stellar_ml_ages.model.spread_factor), 6 where
        # its robust levels are recalibrated along a feature (reference_prior.levels_along).
        has_network = any("network" in target for target in card["targets"])
        has_spread = any("spread" in target["calibration"] for target in card["targets"])
        has_along = any("along" in group for target in card["targets"]
                        for group in target["reference_prior"]["groups"].values())
        assert card["format_version"] == (6 if has_along else 5 if has_spread
                                          else 4 if has_network else 3)
        assert has_along == has_spread
        assert has_spread == name.startswith("giants")
        assert len(card["card_sha256"]) == 64
        assert card["training_set"]["n_train"] > 1000
        assert set(card["software"]) >= {"numpy", "scikit-learn", "astropy"}
        assert set(card["training_set"]["label_scale"]) == {
            "teff", "logg", "fe_h", "c_fe", "n_fe", "alpha_m"}
        # A model trained for noisier labels (giants-slam) is measured on such labels.
        noisy = bool(card["training_set"].get("noise_model"))
        for target in card["targets"]:
            limit = {"mass": 0.12, "age": 0.35}[target["name"]] if noisy else 0.22
            assert 0 < target["metrics"]["median_rel_error"] < limit
            assert target["metrics"]["protocol"] == "10-fold out of fold"
            # The promise of every packaged model: 68% +- 3% and 95% +- 2%, out of fold.
            assert 0.65 <= target["coverage_cv"]["p16_p84"] <= 0.71
            assert 0.93 <= target["coverage_cv"]["p2.5_p97.5"] <= 0.97
            # A prior divided out at a power above 1 (giants-slam, models 3.5) reaches
            # further out at the ends and may over-cover a predicted tercile (its
            # youngest predicted ages: 73.1%); never under-cover one.
            powered = (target["reference_prior"].get("prior_power_choice") or {}).get(
                "power", 1.0) > 1.0
            for group in target["coverage_by_group"]:
                if group["group"].startswith(("state", "predicted")):
                    assert 0.63 <= group["p16_p84"] <= (0.75 if powered else 0.73), (
                        card["name"], group)
            z = target["calibration"]["z"]
            assert z == sorted(z) and z[0] < 0 < z[-1]
            # Per-group calibration tables, each monotonic in probability, and a
            # calibrated range inside the training range.
            for group in target["calibration"]["bins"].values():
                for offsets in group["z"]:
                    assert offsets == sorted(offsets)
            low, high = target["calibrated_range"]
            assert target["training_range"][0] < low < high < target["training_range"][1]
        for feature in card["features"]:
            assert feature["training_noise"] > 0


def test_list_models_table(giants):
    models = list_models()
    assert list(models["name"]) == ["giants-apogee-dr17", "red-clump-apogee-dr17",
                                    "red-clump-seismic-apogee-dr17", "giants-slam-apogee-dr17"]
    assert "[C/N] [dex]" in models["features"][0] and "age [Gyr]" in models["targets"][0]
    assert models["n_train"][0] == giants.card["training_set"]["n_train"]


def test_aliases_and_unknown_names(giants):
    assert get_model("giants-apogee-dr17") is giants
    assert get_model("rc").name == "red-clump-apogee-dr17"
    with pytest.raises(ModelNotFoundError, match="giants-apogee-dr17 \\(aliases: giants\\)"):
        get_model("dwarfs")


def test_loads_from_a_card_path(artifact, giants):
    model = get_model(str(artifact))
    assert model.name == giants.name and model is not giants


def test_tampered_arrays_fail_checksum(artifact):
    array_path = artifact.with_suffix(".npz")
    data = bytearray(array_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    array_path.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumError, match="sha256"):
        load_model(artifact)


def test_truncated_arrays_fail_before_prediction(artifact):
    array_path = artifact.with_suffix(".npz")
    array_path.write_bytes(array_path.read_bytes()[:1000])
    with pytest.raises(ModelChecksumError):
        load_model(artifact)
    card = json.loads(artifact.read_text())
    card["arrays"]["sha256"] = sha256_of(array_path)  # a card that vouches for a broken file
    card["card_sha256"] = card_checksum(card)
    artifact.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="unreadable"):
        load_model(artifact)


def test_newer_format_and_broken_cards(artifact):
    card = json.loads(artifact.read_text())
    artifact.write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(ModelVersionError, match="format version 99"):
        load_model(artifact)
    artifact.write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(artifact)
    artifact.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelFormatError, match="lacks required keys"):
        load_model(artifact)


def _restamped(artifact, edit):
    """The card edited by ``edit`` and re-stamped, as a deliberate edit would be."""
    card = json.loads(artifact.read_text())
    edit(card)
    card["card_sha256"] = card_checksum(card)
    artifact.write_text(json.dumps(card))


def test_semantic_edits_of_a_restamped_card_are_refused(artifact):
    """L6 (#26): what a checksum cannot catch once re-stamped, the schema does."""
    original = artifact.read_text()

    def negate(card):
        calibration = card["targets"][0]["calibration"]
        calibration["z"] = [-z for z in calibration["z"]]

    _restamped(artifact, negate)
    with pytest.raises(ModelFormatError, match="non-decreasing, <= 0 below the median"):
        load_model(artifact)

    def negate_bins(card):
        bins = card["targets"][1]["calibration"]["bins"]["RGB"]
        bins["z"][0] = [-z for z in bins["z"][0]]

    artifact.write_text(original)
    _restamped(artifact, negate_bins)
    with pytest.raises(ModelFormatError, match="bins 'RGB' offsets"):
        load_model(artifact)

    def swap(card):
        card["features"][1], card["features"][2] = card["features"][2], card["features"][1]

    artifact.write_text(original)
    _restamped(artifact, swap)
    with pytest.raises(ModelFormatError, match="feature_distribution"):
        load_model(artifact)

    def swap_everywhere(card):  # the training distribution edited to match
        swap(card)
        mean = card["training_set"]["feature_distribution"]["mean"]
        mean[1], mean[2] = mean[2], mean[1]
        card["training_set"]["feature_distribution"].pop("covariance")

    artifact.write_text(original)
    _restamped(artifact, swap_everywhere)
    with pytest.raises(ModelFormatError, match="hull vertices lie outside"):
        load_model(artifact)


def test_a_card_without_its_own_checksum_loads_with_a_warning(tmp_path, red_clump):
    from stellar_ml_ages import ModelIntegrityWarning

    # A forest-only model: format 2 had no networks (format 4).
    for suffix in (".json", ".npz"):
        source = red_clump.card_path.with_suffix(suffix)
        shutil.copy(source, tmp_path / source.name)
    artifact = tmp_path / red_clump.card_path.name
    card = json.loads(artifact.read_text())
    card["format_version"] = 2
    del card["card_sha256"]
    artifact.write_text(json.dumps(card))
    with pytest.warns(ModelIntegrityWarning, match="format version 2, without a checksum"):
        assert load_model(artifact).name == card["name"]


def test_missing_files(artifact):
    artifact.with_suffix(".npz").unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_model(artifact)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(artifact.with_name("nothing.json"))


def test_pickled_object_arrays_are_refused(artifact, giants):
    array_path = artifact.with_suffix(".npz")
    with np.load(array_path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["hull_vertices"] = np.array([object()], dtype=object)
    np.savez(array_path, **arrays)
    card = json.loads(artifact.read_text())
    card["arrays"]["sha256"] = sha256_of(array_path)
    card["card_sha256"] = card_checksum(card)
    artifact.write_text(json.dumps(card))
    with pytest.raises(ModelFormatError, match="unreadable"):
        load_model(artifact)


def test_import_loads_no_model_and_models_are_cached():
    """``import stellar_ml_ages`` reads no artifact and compiles nothing; the first
    get_model reads and verifies once, later calls return the same object."""
    import subprocess
    import sys

    probe = (
        "import sys, stellar_ml_ages\n"
        "from stellar_ml_ages.registry import _load_cached\n"
        "print(_load_cached.cache_info().currsize, 'numba' in sys.modules, "
        "'sklearn' in sys.modules)\n"
        "model = stellar_ml_ages.get_model('giants')\n"
        "print(_load_cached.cache_info().currsize, stellar_ml_ages.get_model('giants') is model)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split("\n")[:2] == ["0 False False", "1 True"]


@pytest.mark.parametrize("name", ["red-clump", "giants"])
def test_rows_with_a_missing_feature_get_nan_and_leave_the_others_alone(name):
    """A forest sends NaN down one side of every split and returns a number; the model
    returns NaN for such a row (the network already did), and the other rows' values
    are those they get without it."""
    model = get_model(name)
    rng = np.random.default_rng(3)
    mean = np.array([f["mean"] for f in model.card["features"]])
    std = np.array([f["std"] for f in model.card["features"]])
    features = mean + 0.3 * std * rng.standard_normal((5, len(mean)))
    holed = features.copy()
    holed[2, 1] = np.nan
    holed[4, 0] = np.inf
    full = model.predict(features)
    with_holes = model.predict(holed)
    for target in model.target_names:
        for key, values in with_holes[target].items():
            assert np.isnan(values[[2, 4]]).all(), (target, key)
            assert np.array_equal(values[[0, 1, 3]], full[target][key][[0, 1, 3]])
            assert np.all(np.isfinite(full[target][key]))
    # A masked entry is a missing one; one star's features still need a row.
    masked = np.ma.masked_array(features, mask=np.isnan(holed) | np.isinf(holed))
    assert np.array_equal(model.predict(masked)[model.target_names[0]]["value"],
                          with_holes[model.target_names[0]]["value"], equal_nan=True)
    with pytest.raises(ModelError, match=r"shape \(n_rows, 6\)"):
        model.predict(features[0])
    target = model.target_names[0]
    cdf = model.predictive_cdf(target, holed, full[target]["value"])
    assert np.isnan(cdf[[2, 4]]).all()
    assert np.all((cdf[[0, 1, 3]] > 0.2) & (cdf[[0, 1, 3]] < 0.8))  # at the point estimate


def test_the_readme_model_table_quotes_the_shipped_cards():
    """The README's table of packaged models (errors and [p16, p84] coverage, out of
    fold, inside the hull) is the cards' numbers to the printed digit: a retrained card
    must not leave the front page behind."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| `[\w-]+` \|.*\| mass, age \| ([\d.]+)%, ([\d.]+)%.*?"
                      r"\| ([\d.]+)%, ([\d.]+)% \|$", readme, flags=re.MULTILINE)
    assert {name for name, *_ in rows} == set(list_models()["name"])
    for name, *numbers in rows:
        card = get_model(name).card
        mass, age = (card["targets"][0], card["targets"][1])
        assert (mass["name"], age["name"]) == ("mass", "age")
        expected = [100 * mass["metrics"]["median_rel_error"],
                    100 * age["metrics"]["median_rel_error"],
                    100 * mass["coverage"]["p16_p84"], 100 * age["coverage"]["p16_p84"]]
        assert [float(n) for n in numbers] == [round(v, 1) for v in expected], name
