"""Training: the paper's recipe on synthetic LAMOST-shaped catalogs and on the real ones."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import FlaggedRowsWarning, add_mass_age, get_model
from stellar_ml_ages.cli import EXIT_OK, main
from stellar_ml_ages.training import LAMOST_SPECS, get_spec, make_synthetic_catalog, train_model
from stellar_ml_ages.training.methods import METHODS, make_method
from stellar_ml_ages.training.pipeline import paper_metrics

_VIZIER_NAMES = {"C_FE": "[C/Fe]", "N_FE": "[N/Fe]", "MG_FE": "[Mg/Fe]", "BA_FE": "[Ba/Fe]",
                 "TEFF": "Teff", "LOGG": "logg", "DNU": "Dnu", "DPI": "DPi1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAMOST_SPECS))
def test_lamost_specs_train_from_vizier_shaped_tables(name):
    spec = dataclasses.replace(LAMOST_SPECS[name], n_estimators=60, cleaning_estimators=40)
    # Nine features: 600 training stars already give ~2 million hull facets.
    table = make_synthetic_catalog(spec, 1200 if len(spec.features) < 9 else 500, seed=2)
    for old, new in _VIZIER_NAMES.items():
        if old in table.colnames:
            table.rename_column(old, new)
    result = train_model(spec, table)
    for target in result.model.card["targets"]:
        limit = {"mass": 0.06, "age": 0.12}[target["name"]]
        assert target["metrics"]["median_rel_error"] < limit
        assert 0.55 < target["coverage"]["p16_p84"] < 0.8
    # The trained model annotates a table with the same survey column names.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotated = add_mass_age(result.test_table, model=result.model, prefix="ml_")
    inside = ~np.ma.getmaskarray(annotated["ml_" + result.model.target_names[0]])
    # The hull gets stricter with dimension and sparser training sets: 9 features and
    # 250 training stars hold about a fifth of a comparable test set...
    assert inside.mean() > (0.1 if len(spec.features) >= 9 else 0.5)
    # ... and when most rows are outside, the call says so once, naming the hull.
    summaries = [str(w.message) for w in caught if w.category is FlaggedRowsWarning]
    assert len(summaries) == int(inside.mean() < 0.5) == len(caught)
    assert all("outside the convex hull" in text for text in summaries)


def test_trained_model_learns_the_dredge_up_relation():
    spec = dataclasses.replace(LAMOST_SPECS["giants-lamost-dr5"], n_estimators=60,
                               cleaning_estimators=40)
    result = train_model(spec, make_synthetic_catalog(spec, 1500, seed=3))
    test = result.test_table
    annotated = add_mass_age(test, model=result.model, prefix="ml_")
    ok = ~annotated["ml_mass"].mask
    carbon_to_nitrogen = np.asarray(test["C_FE"] - test["N_FE"])[ok]
    assert np.corrcoef(carbon_to_nitrogen, annotated["ml_mass"][ok])[0, 1] < -0.8


def test_paper_protocol_also_cleans_the_test_split():
    spec = dataclasses.replace(LAMOST_SPECS["red-clump-age-lamost-dr5"], n_estimators=40,
                               cleaning_estimators=40)
    table = make_synthetic_catalog(spec, 1000, seed=4)
    table["AGE"][:40] *= 3.0  # outliers the cleaning pass must catch
    honest = train_model(spec, table)
    paper = train_model(spec, table, protocol="paper")
    assert paper.model.card["training_set"]["protocol"] == "paper"
    assert paper.model.card["training_set"]["n_test"] < honest.model.card["training_set"]["n_test"]
    assert (paper.model.card["targets"][0]["metrics"]["median_rel_error"]
            <= honest.model.card["targets"][0]["metrics"]["median_rel_error"])
    with pytest.raises(ValueError, match="protocol"):
        train_model(spec, table, protocol="optimistic")


def test_six_methods_with_paper_hyperparameters():
    assert list(METHODS) == ["BYS", "GBDT", "MLP", "MLR", "RF", "SVR"]
    gbdt = make_method("GBDT")()
    assert (gbdt.n_estimators, gbdt.learning_rate, gbdt.loss) == (2000, 0.1, "squared_error")
    assert make_method("MLP")().hidden_layer_sizes == (147,)
    assert (make_method("SVR")().kernel, make_method("SVR")().C) == ("rbf", 15)
    assert (make_method("BYS")().max_iter, make_method("BYS")().tol) == (30, 1e-3)
    with pytest.raises(KeyError, match="unknown method"):
        make_method("XGB")


def test_paper_metrics_definitions():
    metrics = paper_metrics([1.0, 2.2, 2.7], [1.0, 2.0, 3.0])
    assert metrics["median_abs_error"] == pytest.approx(0.2)
    assert metrics["mean_rel_error"] == pytest.approx((0 + 0.1 + 0.1) / 3)
    assert metrics["dispersion"] == pytest.approx(np.std([0.0, 0.2, -0.3]))


def test_cli_trains_from_a_catalog_table(tmp_path, capsys):
    spec = LAMOST_SPECS["giants-lamost-dr5"]
    path = tmp_path / "lamost_x_apokasc2.ecsv"
    make_synthetic_catalog(spec, 600, seed=5).write(path)
    assert main(["train", "giants-lamost", "--table", str(path), "--out", str(tmp_path)]) \
        == EXIT_OK
    assert "median relative error" in capsys.readouterr().out
    model = get_model(str(tmp_path / "giants-lamost-dr5.json"))
    assert model.feature_names == spec.features
    # The card records the prior its distributions are made under, centred where the
    # training masses are.
    prior = model.target("mass")["prior"]
    assert sum(prior["fraction"]) == pytest.approx(1.0)
    centres = np.exp(np.convolve(prior["log_edges"], [0.5, 0.5], mode="valid"))
    median = centres[np.searchsorted(np.cumsum(prior["fraction"]), 0.5)]
    masses = Table.read(path)["MASS"]
    assert median == pytest.approx(np.median(masses), rel=0.1)


@pytest.mark.slow
@pytest.mark.shared_data
def test_reproduce_quick_writes_the_whole_report(full_range_table, tmp_path):
    from stellar_ml_ages.training.report import REPORT_MODELS, reproduce

    messages = []
    results = reproduce(out_dir=tmp_path, quick=True, progress=messages.append)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["models"]) == set(REPORT_MODELS)
    text = (tmp_path / "report.md").read_text()
    # Which code ran: the version, and the commit where the package is a checkout.
    assert report["software"]["stellar_ml_ages"] in text.splitlines()[2]
    if "stellar_ml_ages_commit" in report["software"]:
        assert f"(commit {report['software']['stellar_ml_ages_commit']})" in text
    for heading in ("Label scale", "Feature selection", "Out-of-fold metrics",
                    "paper's protocol", "Six methods", "External checks"):
        assert heading in text
    # Every label has its measured correction, with a scatter that the correction lowers.
    for correction in report["label_scale"].values():
        assert correction["n_overlap"] > 3000
        assert correction["robust_scatter_after"] <= correction["robust_scatter_before"]
    for model in results["models"].values():
        for name in model["figures"].values():
            assert (tmp_path / "figures" / name).read_bytes()[:4] == b"\x89PNG"
        assert set(model["methods"][model["targets"][0]]) == set(METHODS)
        selection = model["selection"]
        assert set(selection["ranking"]["order"]) == set(get_spec(model["name"]).candidate_features)
        # [C/N] carries the mass and age information of giants (first dredge-up).
        assert selection["ranking"]["order"][0] == "c_n"
        labels = [g["group"] for g in model["groups"]["mass"]]
        assert "predicted tercile 3" in labels and "state RC" in labels
        assert (tmp_path / f"{model['name'].split('-apogee')[0]}_out_of_fold.ecsv").is_file()
    giants = results["models"]["giants"]
    assert giants["cv_coverage"]["mass"]["cv_median_rel_error"] < 0.09


@pytest.mark.shared_data
def test_packaged_specs_match_packaged_models(full_range_table):
    from stellar_ml_ages.training import PACKAGED_SPECS

    for name, spec in PACKAGED_SPECS.items():
        model = get_model(name)
        assert model.feature_names == spec.features
        assert model.card["hyperparameters"]["n_estimators"] == spec.n_estimators
        assert model.card["hyperparameters"]["min_samples_leaf"] == spec.min_samples_leaf
        assert model.card["training_set"]["label_scale"].keys() == \
            full_range_table.meta["label_scale"].keys()
        for target in model.target_names:
            assert model.target(target)["prior"]["n"] > 1000


def test_crossmatch_is_one_to_one_within_radius():
    import astropy.units as u
    from astropy.table import Table

    from stellar_ml_ages.training import crossmatch

    seismic = Table({"RA": [10.0, 20.0, 30.0], "DEC": [0.0, 0.0, 0.0], "KIC": [1, 2, 3]})
    labels = Table({"ra": [10.0, 10.0 + 0.5 / 3600, 20.0 + 5 / 3600, 30.0 + 1 / 3600],
                    "dec": [0.0, 0.0, 0.0, 0.0], "TEFF": [4500.0, 4600.0, 4700.0, 4800.0]})
    matched = crossmatch(labels, seismic, radius=2 * u.arcsec)
    # Two label stars claim KIC 1: the exact one keeps it; 5" is too far for KIC 2.
    assert matched["TEFF"].tolist() == [4500.0, 4800.0]
    assert matched["KIC"].tolist() == [1, 3]
    assert matched["separation"].unit == u.arcsec
    with pytest.raises(u.UnitsError):
        crossmatch(labels, seismic, radius=2 * u.K)
    by_id = crossmatch(Table({"KIC": [3, 1], "x": [0, 1]}), seismic, keys="KIC")
    assert sorted(by_id["KIC"].tolist()) == [1, 3]


@pytest.mark.shared_data
def test_positional_match_recovers_kic_identities_on_real_catalogs(training_table):
    import warnings

    import astropy.units as u
    from astropy.table import Table

    from stellar_ml_ages.training import crossmatch, find_data_dir

    data = find_data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        apokasc = Table.read(data / "apokasc2" / "apokasc2_table5_radec.fits")
    clump = Table.read(data / "yu2018_rc_hall2019" / "rcxyuxapokasc2.csv")
    # Hall+2019 positions are Gaia DR2, APOKASC-2's come from 2MASS designations.
    matched = crossmatch(clump, apokasc["KIC", "RA", "DEC"], radius=2 * u.arcsec)
    assert len(matched) / len(clump) > 0.99
    assert np.mean(matched["KICID"] == matched["KIC"]) > 0.999
    assert np.median(matched["separation"]) < 0.5


def test_cards_from_a_checkout_name_its_commit(monkeypatch):
    """An editable install's version string is frozen at install time: the card names
    the commit the source is at, and nothing where there is no checkout of it."""
    import subprocess
    from pathlib import Path

    from stellar_ml_ages.training import pipeline

    commit = pipeline._source_commit()
    if commit is None:
        pytest.skip("the package is not running from a git checkout")
    package = Path(pipeline.__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True, cwd=package).stdout.strip()
    assert head.startswith(commit.removesuffix("-dirty")) and len(head) == 40
    assert pipeline._software()["stellar_ml_ages_commit"] == commit

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert pipeline._source_commit() is None
    assert "stellar_ml_ages_commit" not in pipeline._software()
