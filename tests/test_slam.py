"""LAMOST giants with SLAM labels (Zhang, Liu & Deng 2020) through the packaged models.

Label equivalences ([C/N] = [C/M] - [N/M]; [X/Fe] = [X/M] + [M/H] - [Fe/H] with [Fe/H]
taken as [M/H] where absent), SLAM's noise by S/N, the label-scale note, the table
discovery and column choice of the SLAM fetcher (with recorded TAP_SCHEMA answers),
and the shipped measurements of tools/lamost_slam_report.py.
"""

import importlib
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from stellar_ml_ages import add_mass_age, demo_table
from stellar_ml_ages.columns import resolution_notes, resolve_columns, resolve_error_columns
from stellar_ml_ages.exceptions import LabelSourceWarning, MissingColumnError, TAPQueryError
from stellar_ml_ages.slam import (
    SCATTER_AT_REFERENCE,
    measurements,
    slam_scatter,
    slam_uncertainties,
)
from stellar_ml_ages.units import feature_matrix
from stellar_ml_ages.vo import CATALOGS, conf
from stellar_ml_ages.vo.adql import quote_table_name
from stellar_ml_ages.vo.catalogs import is_optional

# The package re-exports the function ``fetch`` under the submodule's name.
fetch_module = importlib.import_module("stellar_ml_ages.vo.fetch")


def slam_like(n=None, snr=100.0):
    """The demo giants written as a SLAM table: [C/M] = [C/Fe] etc. under [Fe/H] = [M/H]."""
    demo = demo_table()
    demo = demo[(demo["POPULATION"] == "giant")]
    if n is not None:
        demo = demo[:n]
    stars = Table()
    stars["obsid"] = np.arange(len(demo)) + 101001
    stars["Teff"] = demo["TEFF"]
    stars["logg"] = demo["LOGG"]
    stars["[M/H]"] = demo["FE_H"]
    stars["[alpha/M]"] = demo["ALPHA_M"]
    stars["[C/M]"] = demo["C_FE"]
    stars["[N/M]"] = demo["N_FE"]
    stars["snrg"] = np.full(len(demo), snr)
    return stars, demo


def test_slam_labels_resolve_to_the_giants_inputs_by_stated_relations():
    stars, _ = slam_like(5)
    resolved = resolve_columns(stars, ["c_n", "teff", "logg", "alpha_m", "n_fe", "fe_h"])
    assert str(resolved["c_n"]) == "[C/M] - [N/M]"
    assert str(resolved["fe_h"]) == "[M/H] (as [M/H])"
    notes = resolution_notes(resolved)
    assert "[C/N] = [C/M] - [N/M] ([C/M] - [N/M])" in notes
    assert any(note.startswith("[N/Fe] = [N/M] + [M/H] - [Fe/H]") for note in notes)
    assert "[Fe/H] taken as [M/H] ([M/H]), assumed equal" in notes
    matrix = feature_matrix(stars, resolved)
    # [N/Fe] = [N/M] + [M/H] - [M/H] is [N/M] exactly (the column cancels, no round-off).
    np.testing.assert_array_equal(matrix.values[:, 4], np.ma.filled(stars["[N/M]"], np.nan))
    np.testing.assert_allclose(matrix.values[:, 0],
                               np.ma.filled(stars["[C/M]"] - stars["[N/M]"], np.nan), atol=0)


def test_known_fe_h_enters_the_aspcap_relation():
    stars = Table({"N_M": [0.30, 0.10], "M_H": [0.00, -0.20], "FE_H": [0.05, -0.30],
                   "C_M": [0.0, 0.1]})
    resolved = resolve_columns(stars, ["n_fe", "c_fe", "fe_h"])
    assert str(resolved["n_fe"]) == "N_M + M_H - FE_H"
    values = feature_matrix(stars, resolved, warn=False).values
    np.testing.assert_allclose(values[:, 0], [0.30 + 0.00 - 0.05, 0.10 - 0.20 + 0.30])
    np.testing.assert_allclose(values[:, 1], [0.0 - 0.05, 0.1 + 0.10])
    np.testing.assert_allclose(values[:, 2], [0.05, -0.30])  # FE_H itself, no stand-in


def test_slam_table_gives_the_allstar_masses_and_records_the_choices():
    stars, demo = slam_like()
    allstar = demo[["TEFF", "LOGG", "FE_H", "ALPHA_M", "C_FE", "N_FE"]]
    reference = add_mass_age(allstar, model="giants", survey_flags=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flagged-row warnings of the demo's bad rows
        annotated = add_mass_age(stars, model="giants")
    for name in ("mass", "mass_p16", "mass_p84", "age"):
        np.testing.assert_array_equal(np.ma.getmaskarray(annotated[name]),
                                      np.ma.getmaskarray(reference[name]))
        np.testing.assert_allclose(np.ma.filled(annotated[name], 0),
                                   np.ma.filled(reference[name], 0), rtol=1e-12)
    assert "[Fe/H] taken as [M/H]" in annotated.meta["MLCHOICE"]
    assert "c_n=[C/M] - [N/M]" in annotated.meta["MLINPUTS"]
    # obsid + [C/M]: LAMOST labels on the APOGEE (DR15) scale: no mismatch warning, a note.
    assert annotated.meta["MLSCALE"].startswith("SLAM labels are on the APOGEE DR15 scale")
    assert "not measured" in annotated.meta["MLSCALE"].lower()


def test_scale_note_only_for_slam_and_guard_still_warns_for_dd_payne():
    stars, _ = slam_like(5)
    stars.meta["LABELSRC"] = "LAMOST DR5 DD-Payne"
    with pytest.warns(LabelSourceWarning, match="DD-Payne"):
        annotated = add_mass_age(stars, model="giants")
    assert "MLSCALE" not in annotated.meta
    apogee = add_mass_age(demo_table()[:3], model="giants")
    assert "MLSCALE" not in apogee.meta


def test_error_design_of_the_relations():
    stars = Table({"[C/M]": [0.0], "e_[C/M]": [0.06], "[N/M]": [0.3], "e_[N/M]": [0.1],
                   "[M/H]": [0.0], "e_[M/H]": [0.04]})
    resolved = resolve_columns(stars, ["c_n", "n_fe", "fe_h"])
    errors = resolve_error_columns(stars, resolved)
    matrix = feature_matrix(stars, resolved, errors, warn=False)
    # [C/N] from two columns in quadrature; [N/Fe] = [N/M] (the [M/H] terms cancel);
    # [Fe/H] carries the [M/H] error.
    np.testing.assert_allclose(matrix.errors[0], [np.hypot(0.06, 0.1), 0.1, 0.04])
    design = dict(zip(matrix.column_labels, matrix.error_design.T, strict=True))
    np.testing.assert_array_equal(design["m_h"], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(design["n_m"], [-1.0, 1.0, 0.0])


def test_slam_scatter_grows_below_the_reference_snr_only():
    assert slam_scatter("teff", 100.0) == pytest.approx(49.0)
    assert slam_scatter("teff", 25.0) == pytest.approx(196.0)
    assert slam_scatter("n_m", 400.0) == pytest.approx(0.106)
    np.testing.assert_allclose(slam_scatter("c_m", [np.nan, -5.0, 50.0]), [0.058, 0.058, 0.116])
    assert set(SCATTER_AT_REFERENCE) == {"teff", "logg", "m_h", "alpha_m", "c_m", "n_m"}


def test_slam_uncertainties_keep_the_table_and_take_the_larger_error():
    stars, _ = slam_like(4)
    stars["snrg"] = [100.0, 50.0, 20.0, 200.0]
    stars["e_Teff"] = MaskedColumn([80.0, 10.0, 0.0, 30.0], mask=[False, False, True, False],
                                   unit=u.K)
    before = stars.copy()
    out = slam_uncertainties(stars)
    assert stars.colnames == before.colnames and all(
        np.array_equal(np.ma.getdata(stars[c]), np.ma.getdata(before[c])) for c in stars.colnames)
    np.testing.assert_allclose(out["e_Teff"], [80.0, 98.0, 245.0, 49.0])  # own 80 > 49
    assert out["e_Teff"].unit == u.K and out["e_[N/M]"].unit == u.dex
    np.testing.assert_allclose(out["e_[N/M]"], [0.106, 0.212, 0.53, 0.106])
    assert list(out["obsid"]) == list(stars["obsid"])
    assert "S/N from snrg" in out.meta["MLSLAMER"]
    del stars["snrg"]
    with pytest.raises(MissingColumnError, match="snrg"):
        slam_uncertainties(stars)
    fixed = slam_uncertainties(stars, snr=50)
    np.testing.assert_allclose(fixed["e_logg"], 0.2)


def test_intervals_widen_with_slam_noise_and_more_at_low_snr():
    widths = {}
    for snr in (100.0, 30.0):
        stars, _ = slam_like(60, snr=snr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = add_mass_age(slam_uncertainties(stars), model="giants",
                               propagate_errors=True, n_draws=64)
        widths[snr] = np.nanmedian(np.log(np.ma.filled(out["mass_p84"], np.nan)
                                          / np.ma.filled(out["mass_p16"], np.nan)))
    stars, _ = slam_like(60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = add_mass_age(stars, model="giants")
    base = np.nanmedian(np.log(np.ma.filled(plain["mass_p84"], np.nan)
                               / np.ma.filled(plain["mass_p16"], np.nan)))
    assert base < widths[100.0] < widths[30.0]


def test_shipped_measurements_are_physical():
    found = measurements()
    offsets = found["zero_points"]["dr14_minus_dr17"]
    assert offsets["teff"]["n"] > 3000 and abs(offsets["teff"]["median"]) < 50
    assert abs(offsets["fe_h"]["median"]) < 0.05 and abs(offsets["alpha_m"]["median"]) < 0.05
    # More nitrogen at fixed carbon means a more massive (younger) giant.
    nitrogen = found["sensitivity"]["[N/M] +0.05 dex"]
    assert nitrogen["mass_median_change"] > 0 > nitrogen["age_median_change"]
    levels = found["degraded"]["levels"]
    for target in ("mass", "age"):
        errors = [levels[name][target]["robust_scatter_ln"]
                  for name in ("APOGEE", "S/N 100", "S/N 50", "S/N 30")]
        assert errors == sorted(errors)  # worse labels, larger errors
        for name in ("S/N 100", "S/N 50", "S/N 30"):
            # With SLAM's noise propagated the intervals hold, for RGB and clump alike ...
            for group in ("coverage_p16_p84", "coverage_RGB", "coverage_RC"):
                assert 0.6 < levels[name][target][group] < 0.78, (name, target, group)
        # ... and without it they are too narrow at low S/N.
        assert levels["S/N 30, no propagation"][target]["coverage_p16_p84"] < 0.6


# --- fetcher: table discovery and column spellings, with recorded TAP_SCHEMA answers ---

def test_quote_table_name():
    assert quote_table_name("smatest.slam_giants") == "smatest.slam_giants"
    assert quote_table_name("J/ApJS/246/9/table1") == '"J/ApJS/246/9/table1"'
    assert quote_table_name('"J/ApJS/246/9/table1"') == '"J/ApJS/246/9/table1"'


@pytest.fixture
def recorded_vizier(monkeypatch):
    """TAP_SCHEMA answers of a VizieR-like service holding two tables under J/ApJS/246/9/."""
    columns = {
        "J/ApJS/246/9/table1": ["ObsID", "RAJ2000", "DEJ2000", "Teff", "e_Teff", "logg",
                                "e_logg", "[M/H]", "e_[M/H]", "[a/M]", "e_[a/M]", "[C/M]",
                                "e_[C/M]", "[N/M]", "e_[N/M]"],
        "J/ApJS/246/9/refs": ["Ref", "Author"],
    }
    queries = []

    def run_query(url, query, **kwargs):
        queries.append(query)
        if "TAP_SCHEMA.tables" in query:
            return Table({"table_name": list(columns)})
        for name, names in columns.items():
            if f"table_name = '{name}'" in query:
                return Table({"column_name": names})
        raise AssertionError(query)

    monkeypatch.setattr(fetch_module, "run_query", run_query)
    monkeypatch.setattr(fetch_module, "_SERVICE_COLUMNS", {})
    monkeypatch.setattr(fetch_module, "_SERVICE_TABLES", {})
    with conf.set_temp("vizier_tap_url", "http://127.0.0.1:9/tap"):
        yield columns, queries


def test_slam_table_is_found_and_spellings_chosen(recorded_vizier):
    _, queries = recorded_vizier
    catalog = CATALOGS["slam"]
    assert fetch_module.table_name(catalog) == '"J/ApJS/246/9/table1"'
    assert queries[0] == ("SELECT table_name FROM TAP_SCHEMA.tables "
                          "WHERE table_name LIKE 'J/ApJS/246/9/%'")
    chosen = fetch_module._choose_columns(catalog, catalog.columns)
    # The service's spellings; the optional S/N column it lacks is left out.
    assert chosen == ["ObsID", "RAJ2000", "DEJ2000", "Teff", "e_Teff", "logg", "e_logg",
                      "[M/H]", "e_[M/H]", "[a/M]", "e_[a/M]", "[C/M]", "e_[C/M]", "[N/M]",
                      "e_[N/M]"]
    assert fetch_module.position_columns(catalog) == ("RAJ2000", "DEJ2000")
    assert is_optional(("snrg", None)) and not is_optional("Teff")


def test_slam_table_discovery_explains_a_failure(recorded_vizier):
    columns, _ = recorded_vizier
    columns["J/ApJS/246/9/table1"].remove("[N/M]")
    with pytest.raises(TAPQueryError, match=r"no \[N/M\].*slam_table"):
        fetch_module.table_name(CATALOGS["slam"])


def test_configured_slam_table_is_used_as_is(recorded_vizier):
    _, queries = recorded_vizier
    with conf.set_temp("slam_table", "my.slam"):
        assert fetch_module.table_name(CATALOGS["slam"]) == "my.slam"
    assert not queries


def test_command_line_slam_errors_streamed_and_in_memory(tmp_path, capsys):
    from stellar_ml_ages.cli import main

    stars, _ = slam_like(40, snr=30.0)
    for label, portable in (("[M/H]", "M_H"), ("[alpha/M]", "ALPHA_M"), ("[C/M]", "C_M"),
                            ("[N/M]", "N_M"), ("Teff", "TEFF"), ("logg", "LOGG")):
        stars.rename_column(label, portable)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FITS cannot keep log g's dex(cm / s2)
        stars.write(tmp_path / "slam.fits")
    results = {}
    for mode, extra in (("streamed", ["--block-rows", "15"]), ("memory", ["--in-memory"])):
        out = tmp_path / f"out-{mode}.fits"
        assert main(["annotate", str(tmp_path / "slam.fits"), str(out), "--slam-errors",
                     "--no-progress", *extra]) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[mode] = Table.read(out)
    for table in results.values():
        np.testing.assert_allclose(table["TEFF_ERR"], 49.0 * 100 / 30)  # filled at S/N 30
        assert table.meta["MLERRPRP"] is True
    for name in ("N_M_ERR", "mass", "age"):  # (interval draws are seeded per block)
        np.testing.assert_array_equal(np.asarray(results["streamed"][name]),
                                      np.asarray(results["memory"][name]))
    assert "rows" in capsys.readouterr().out
