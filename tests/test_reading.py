"""One reading of the input table per call: label source and columns looked up once.

The annotation reads what a table is (`stellar_ml_ages.reading`) once and every
later step (model choice, the label-source guard, error propagation, quality
flags, output names) asks that reading. These tests count the lookups.
"""

import collections

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import (
    add_mass_age,
    conf,
    get_model,
    labelsource,
    predictive_distribution,
    reading,
)
from stellar_ml_ages import columns as columns_module
from stellar_ml_ages.exceptions import (
    AmbiguousColumnError,
    MissingColumnError,
    ModelNotFoundError,
    OutputNameError,
    StreamingError,
)
from stellar_ml_ages.reading import read_table
from stellar_ml_ages.registry import select_model
from stellar_ml_ages.streaming import annotate_file
from tests.helpers import write_quietly


@pytest.fixture
def lookups(monkeypatch):
    """Counts of label-source detections and of top-level feature lookups."""
    counts = {"label_source": 0, "features": collections.Counter(), "error_lookups": 0,
              "flag_lookups": 0}
    detect = reading.table_label_source
    resolve_one = columns_module._resolve_one
    error_sources = columns_module._error_sources
    survey_flags = reading.SurveyFlags

    def counting_errors(*args):
        counts["error_lookups"] += 1
        return error_sources(*args)

    def counting_flags(*args):
        counts["flag_lookups"] += 1
        return survey_flags(*args)

    def counting_detect(table):
        counts["label_source"] += 1
        return detect(table)

    def counting_resolve(table, by_lower, feature, mapping, depth=0, seen=()):
        if depth == 0 and not seen:
            counts["features"][feature.name] += 1
        return resolve_one(table, by_lower, feature, mapping, depth, seen)

    def no_second_detection(table):
        raise AssertionError("the label source was detected outside the table's reading")

    monkeypatch.setattr(reading, "table_label_source", counting_detect)
    monkeypatch.setattr(columns_module, "_resolve_one", counting_resolve)
    monkeypatch.setattr(columns_module, "_error_sources", counting_errors)
    monkeypatch.setattr(reading, "SurveyFlags", counting_flags)
    # The guard and the model choice must ask the reading, never the table again.
    monkeypatch.setattr(labelsource, "table_label_source", no_second_detection)
    return counts


def _slam_like(stars):
    slam = Table(meta={"name": "J/ApJS/246/9/table"})
    for name in ("TEFF", "LOGG"):
        slam[name] = stars[name]
    slam["[M/H]"] = stars["FE_H"].value * u.dex
    slam["[alpha/M]"] = stars["ALPHA_M"].value * u.dex
    slam["[C/M]"] = (stars["C_FE"].value + 0.0) * u.dex
    slam["[N/M]"] = stars["N_FE"].value * u.dex
    return slam


@pytest.mark.parametrize("model", [None, "giants"])
def test_add_mass_age_reads_the_table_once(stars, lookups, model):
    stars = stars[:50]
    stars["TEFF_ERR"] = np.full(len(stars), 60.0) * u.K
    with conf.set_temp("chunk_size", 7):  # several blocks
        annotated = add_mass_age(stars, model=model, propagate_errors=True, n_draws=8)
    assert lookups["label_source"] == 1
    assert lookups["features"], "no feature was looked up"
    assert max(lookups["features"].values()) == 1, lookups["features"]
    # Error columns and the survey's flag columns: found once, for the chosen model.
    assert lookups["error_lookups"] == 1
    assert lookups["flag_lookups"] == 1
    # The model's own features were all among them, and the answer is the usual one.
    assert set(get_model("giants").feature_names) <= set(lookups["features"])
    assert annotated.meta["MLMODEL"] == get_model("giants").name
    assert np.all(annotated["mass"].filled(np.nan)[~annotated["mass"].mask] > 0.5)


def test_a_streamed_file_is_read_once(stars, lookups, tmp_path):
    path = tmp_path / "stars.fits"
    write_quietly(stars, path)
    with conf.set_temp("chunk_size", 10):
        summary = annotate_file(path, tmp_path / "out.fits", input_format="fits",
                                output_format="fits", block_rows=10)
    assert summary.n_blocks > 2
    assert lookups["label_source"] == 1
    assert max(lookups["features"].values()) == 1
    assert lookups["flag_lookups"] == 1


def test_predictive_distribution_reads_the_table_once(stars, lookups):
    distribution = predictive_distribution(stars[:20], "mass", model="giants")
    assert lookups["label_source"] == 1
    assert max(lookups["features"].values()) == 1
    low, high = distribution.quantile(0.16), distribution.quantile(0.84)
    predicted = np.isfinite(low)
    assert 0 < predicted.sum() < len(low)  # some demo stars lie outside the hull
    assert np.all(high[predicted] > low[predicted])


def test_the_guard_and_the_choice_use_the_reading(stars):
    slam = _slam_like(stars)
    read = read_table(slam)
    assert read.label_source.name.startswith("LAMOST DR5 SLAM")
    assert "VizieR J/ApJS/246/9" in read.label_source.evidence
    # A model trained for SLAM's noise is chosen for SLAM's labels, from the reading alone.
    assert select_model(read).name == get_model("giants-slam").name
    assert labelsource.label_noise_problem(read, get_model("giants"), False)
    assert labelsource.label_noise_problem(read, get_model("giants-slam"), False) is None


def test_reading_names_and_errors(stars):
    stars["Mass"] = 1.0 * u.Msun
    read = read_table(stars)
    assert read.same_name("MASS") == ["Mass"]
    assert read.same_name("age") == []
    read = read_table(stars, state_column="EVOL")
    with pytest.raises(MissingColumnError, match="state_column 'EVOL'"):
        _ = read.state_column
    both = stars.copy()
    both["Teff"] = both["TEFF"]
    read = read_table(both)
    # An ambiguity matters only to a model that needs the feature, and then every time.
    assert read.columns.has(["logg"])
    assert not read.columns.has(["teff"])
    for _ in range(2):
        with pytest.raises(AmbiguousColumnError, match="TEFF, Teff"):
            read.sources(["teff", "logg"])


def test_a_mapping_error_is_raised_for_a_model_that_needs_it(stars):
    read = read_table(stars, mapping={"c_fe": "NO_SUCH_COLUMN"})
    assert read.columns.has(["teff", "logg"])
    with pytest.raises(MissingColumnError, match="NO_SUCH_COLUMN"):
        read.sources(["c_fe"])
    read = read_table(stars, mapping={"no_such_feature": "TEFF"})
    assert not read.columns.has(["teff"])
    with pytest.raises(MissingColumnError, match="not a known feature"):
        read.sources(["teff"])


def test_an_ambiguous_state_column_matters_only_where_the_state_is_used(stars):
    """Choosing a model needs no state column: two candidates do not stop it."""
    stars["EVSTATE"] = "RGB"
    stars["CONS_EVSTATES"] = "RGB"
    assert select_model(stars).name == get_model("giants").name
    with pytest.raises(AmbiguousColumnError, match="EVSTATE, CONS_EVSTATES"):
        add_mass_age(stars)
    assert "mass" in add_mass_age(stars, state_column="EVSTATE").colnames


@pytest.mark.parametrize("option, error", [
    ({"model": "no-such-model"}, ModelNotFoundError),
    ({"prefix": "bad name!"}, OutputNameError),
    ({"propagate_errors": True, "n_draws": 0}, ValueError),
])
def test_the_call_checks_come_in_their_order(stars, option, error):
    """What is wrong with the call itself is named before a bad state column."""
    with pytest.raises(error):
        add_mass_age(stars, state_column="NOPE", **option)


def test_a_streamed_block_with_other_columns_is_refused(stars, tmp_path):
    path = tmp_path / "stars.fits"
    write_quietly(stars, path)
    seen = []

    def rename_later(block):
        seen.append(len(block))
        if len(seen) > 1:
            block.rename_column("TEFF", "T_EFF")
        return block

    with pytest.raises(StreamingError, match="T_EFF"):
        annotate_file(path, tmp_path / "out.fits", input_format="fits", output_format="fits",
                      block_rows=50, prepare=rename_later)
    assert not (tmp_path / "out.fits").exists()
