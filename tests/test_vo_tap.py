"""VO helpers against a real TAP server (GAVO DaCHS on 127.0.0.1, see ci/tap/).

The mirror tables have the schemas of the VizieR tables; APOKASC-2 rows are real,
LAMOST rows synthetic with labels that follow from the stars' seismic masses.
"""

import dataclasses
import importlib
import re
import socket
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS
from regions import (
    CircleAnnulusSkyRegion,
    CircleSkyRegion,
    PolygonSkyRegion,
    RectangleSkyRegion,
)

from stellar_ml_ages import add_mass_age
from stellar_ml_ages.exceptions import (
    FlaggedRowsWarning,
    LabelSourceWarning,
    TAPOverflowError,
    TAPQueryError,
    TAPServiceError,
    TruncatedResultWarning,
)
from stellar_ml_ages.training import LAMOST_SPECS, train_model
from stellar_ml_ages.vo import (
    build_lamost_training_table,
    conf,
    fetch_apokasc,
    fetch_lamost,
    fetch_red_clump,
    fetch_slam,
    run_query,
    tap_crossmatch,
)

KEPLER = SkyCoord(290.5 * u.deg, 43.5 * u.deg)
ID_COLUMNS = ("source_id", "RAJ2000", "DEJ2000")


@pytest.fixture(scope="module")
def all_lamost(tap_url):
    """Every LAMOST mirror row's id and position, for client-side comparisons."""
    table = run_query(tap_url, "SELECT source_id, RAJ2000, DEJ2000 FROM smatest.ddpayne")
    assert len(table) > 5000
    return table


def _tangent_wcs(center):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [center.ra.deg, center.dec.deg]
    wcs.wcs.crpix = [0.0, 0.0]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    return wcs


def _inside(region, positions):
    """Exact spherical membership for circles, annuli and compounds of them; polygons
    through a gnomonic projection, which keeps great-circle edges straight."""
    if isinstance(region, CircleSkyRegion):
        return positions.separation(region.center) <= region.radius
    if isinstance(region, CircleAnnulusSkyRegion):
        separation = positions.separation(region.center)
        return (separation <= region.outer_radius) & (separation > region.inner_radius)
    if hasattr(region, "region1"):
        return region.operator(_inside(region.region1, positions),
                               _inside(region.region2, positions))
    center = getattr(region, "center", None)
    if center is None:
        center = SkyCoord(region.vertices.ra.mean(), region.vertices.dec.mean())
    return region.contains(positions, _tangent_wcs(center))


@pytest.mark.parametrize(("region", "exact"), [
    (CircleSkyRegion(KEPLER, 1.5 * u.deg), True),
    (CircleAnnulusSkyRegion(KEPLER, 1 * u.deg, 2 * u.deg), True),
    (PolygonSkyRegion(SkyCoord([289, 292, 291, 289.5] * u.deg, [42, 42.5, 45, 44.5] * u.deg)),
     True),
    (RectangleSkyRegion(KEPLER, 3 * u.deg, 1.5 * u.deg, angle=30 * u.deg), False),
    (CircleSkyRegion(KEPLER, 1 * u.deg) | CircleSkyRegion(
        SkyCoord(293 * u.deg, 45 * u.deg), 0.7 * u.deg), True),
    (CircleSkyRegion(KEPLER, 1.5 * u.deg) & RectangleSkyRegion(KEPLER, 2 * u.deg, 6 * u.deg),
     False),
])
def test_region_queries_agree_with_region_contains(local_vizier, all_lamost, region, exact):
    fetched = fetch_lamost(region, columns=ID_COLUMNS)
    positions = SkyCoord(all_lamost["RAJ2000"], all_lamost["DEJ2000"], unit=u.deg)
    expected = set(all_lamost["source_id"][_inside(region, positions)])
    got = set(fetched["source_id"])
    assert len(expected) > 20
    if exact:
        assert got == expected
    else:
        # Rectangles: the server's corners are exact, TAN pixels are not at the edges.
        assert len(got ^ expected) <= 0.01 * len(expected)


def test_sync_and_async_return_the_same_rows(local_vizier):
    cone = dict(coordinates=SkyCoord(150 * u.deg, 2 * u.deg), radius=0.5 * u.deg,
                columns=ID_COLUMNS)
    sync = fetch_lamost(**cone)
    asynchronous = fetch_lamost(**cone, mode="async")
    assert len(sync) >= 50
    assert sorted(sync["source_id"]) == sorted(asynchronous["source_id"])
    assert sync.meta["TRUNCATED"] is False and "CONTAINS" in sync.meta["QUERY"]


def test_fetched_columns_have_units_the_resolver_reads(local_vizier):
    stars = fetch_lamost(coordinates=SkyCoord(150 * u.deg, 2 * u.deg), radius=0.5 * u.deg)
    assert stars["TEFF"].unit == u.K and stars["RA"].unit == u.deg
    assert {"C_FE", "C_FE_ERR", "BA_FE", "LOGG"} <= set(stars.colnames)
    assert stars["C_FE"].meta["service_name"] == "[C/Fe]"
    assert stars.meta["LABELSRC"] == "LAMOST DR5 DD-Payne"
    # The names resolve and the units convert, but the packaged model is APOGEE's:
    # the guard says so, names both surveys, and gives the LAMOST training command.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotated = add_mass_age(stars, model="giants")
    guard = [str(w.message) for w in caught if issubclass(w.category, LabelSourceWarning)]
    assert len(guard) == 1 and re.search(r"LAMOST DR5 DD-Payne.*APOGEE DR17.*"
                                         r"train giants-lamost --from-vo", guard[0])
    # Labels on another scale leave many stars outside the hull: said, not an error.
    assert all(issubclass(w.category, (LabelSourceWarning, FlaggedRowsWarning)) for w in caught)
    assert len(annotated) == len(stars)
    assert annotated.meta["MLINPUTS"].startswith("c_n=C_FE - N_FE, teff=TEFF")


def test_red_clump_labels_are_chosen_from_the_services_tap_schema(local_vizier):
    """The mirror spells Δν/ΔP as Deltanu/DeltaP; TAP_SCHEMA says so before the query."""
    fetch_module = importlib.import_module("stellar_ml_ages.vo.fetch")
    fetch_module._SERVICE_COLUMNS.clear()
    clump = fetch_red_clump(coordinates=KEPLER, radius=2 * u.deg)
    assert clump["DNU"].meta["service_name"] == "Deltanu"
    assert clump["DPI"].meta["service_name"] == "DeltaP"
    assert clump["DPI"].unit == u.s and clump["DNU"].unit == u.uHz
    # DaCHS lists regular identifiers in lower case: the choice is case-insensitive.
    key = next(iter(fetch_module._SERVICE_COLUMNS))
    listed = {name.lower() for name in fetch_module._SERVICE_COLUMNS[key]}
    assert {"deltanu", "deltap", "raj2000"} <= listed and "dnu" not in listed


def test_apokasc_has_real_rows_with_positions_and_ages(local_vizier):
    apokasc = fetch_apokasc()
    assert len(apokasc) > 5000
    assert apokasc["MASS"].unit == u.solMass and apokasc["AGE"].unit == u.Gyr
    good = ~np.ma.getmaskarray(apokasc["AGE"])
    assert np.all((apokasc["AGE"][good] > 0.1) & (apokasc["AGE"][good] < 20))
    assert np.all(np.isfinite(apokasc["RA"]))
    near = fetch_apokasc(coordinates=KEPLER, radius=1 * u.deg)
    assert 0 < len(near) < len(apokasc)
    assert SkyCoord(near["RA"], near["DEC"]).separation(KEPLER).max() <= 1 * u.deg


def test_upload_crossmatch_keeps_every_row_in_order(local_vizier):
    apokasc = fetch_apokasc()[:400]
    before = apokasc.copy()
    matched = tap_crossmatch(apokasc, "lamost", 2 * u.arcsec)
    assert len(matched) == 400
    np.testing.assert_array_equal(matched["KIC"], before["KIC"])
    assert apokasc.colnames == before.colnames  # the caller's table is untouched
    found = ~np.ma.getmaskarray(matched["separation"])
    assert 0.5 < found.mean() < 0.9  # the mirror observed ~70% of the stars
    assert matched["separation"].unit == u.arcsec and matched["separation"][found].max() <= 1.01
    assert np.all(np.ma.getmaskarray(matched["C_FE"])[~found])
    # Nothing beyond the radius comes back.
    tight = tap_crossmatch(apokasc, "lamost", 0.3 * u.arcsec)
    assert (~np.ma.getmaskarray(tight["separation"])).sum() < found.sum()


def test_upload_crossmatch_never_overwrites_the_users_columns(local_vizier):
    mine = fetch_apokasc()[:200]
    mine["TEFF"] = np.full(len(mine), 1234.0) * u.K  # the user's own, e.g. photometric
    mine["separation"] = np.full(len(mine), -1.0)
    matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec)
    np.testing.assert_array_equal(matched["TEFF"], mine["TEFF"])
    np.testing.assert_array_equal(matched["separation"], mine["separation"])
    found = ~np.ma.getmaskarray(matched["separation_lamost"])
    assert found.any() and matched["separation_lamost"].unit == u.arcsec
    assert np.all(np.asarray(matched["TEFF_lamost"])[found] > 3000)


def test_crossmatched_lamost_labels_warn_like_fetched_ones(local_vizier):
    lamost = run_query(local_vizier, "SELECT TOP 40 RAJ2000, DEJ2000 FROM smatest.ddpayne")
    mine = Table({"ra": lamost["RAJ2000"], "dec": lamost["DEJ2000"]})
    matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec)
    assert not np.ma.getmaskarray(matched["separation"]).any()
    assert matched.meta["LABELSRC"] == "LAMOST DR5 DD-Payne"
    # An APOGEE-trained model on DD-Payne labels: the same warning as for fetch_lamost.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_mass_age(matched, model="giants")
    assert any(issubclass(w.category, LabelSourceWarning)
               and "LAMOST DR5 DD-Payne" in str(w.message) for w in caught)


def test_crossmatch_cut_by_maxrec_is_marked_truncated(local_vizier):
    lamost = run_query(local_vizier, "SELECT TOP 30 RAJ2000, DEJ2000 FROM smatest.ddpayne")
    mine = Table({"ra": lamost["RAJ2000"], "dec": lamost["DEJ2000"]})
    with pytest.warns(TruncatedResultWarning):
        matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec, maxrec=10, on_overflow="warn",
                                 chunk_rows=20)
    # Every one of the 30 stars is in the mirror; only the cut leaves some unmatched.
    assert (~np.ma.getmaskarray(matched["separation"])).sum() == 20
    assert matched.meta["TRUNCATED"] is True


def test_cached_fetches_are_the_fetches(local_vizier, tmp_path, monkeypatch):
    from astropy.config import set_temp_cache

    from stellar_ml_ages.vo import tap

    region = CircleSkyRegion(KEPLER, 1 * u.deg)
    with set_temp_cache(tmp_path):
        first = fetch_lamost(region, cache=True), fetch_apokasc(cache=True)

        def offline(*args):
            raise AssertionError("the service was asked again")

        monkeypatch.setattr(tap, "_execute", offline)
        again = fetch_lamost(region, cache=True), fetch_apokasc(cache=True)
    for fetched, cached in zip(first, again, strict=True):
        assert cached.colnames == fetched.colnames and dict(cached.meta) == dict(fetched.meta)
        for name in fetched.colnames:
            assert cached[name].unit == fetched[name].unit, name
            np.testing.assert_array_equal(np.ma.getmaskarray(cached[name]),
                                          np.ma.getmaskarray(fetched[name]))
    lamost, apokasc = again
    assert {"FE_H", "C_FE", "N_FE"} <= set(lamost.colnames)  # VizieR's [X/Fe], renamed
    masses = np.ma.filled(np.ma.asarray(apokasc["MASS"], dtype=float), np.nan)
    assert apokasc["MASS"].unit == u.solMass and np.nanmedian(masses) > 0.8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotated = add_mass_age(lamost, model="giants")
    assert np.mean(~np.ma.getmaskarray(annotated["mass"])) > 0.3
    assert any(issubclass(w.category, LabelSourceWarning) for w in caught)


def test_maxrec_overflow_raises_or_warns(local_vizier):
    region = CircleSkyRegion(KEPLER, 3 * u.deg)
    with pytest.raises(TAPOverflowError, match="truncated at 25 rows"):
        fetch_lamost(region, columns=ID_COLUMNS, maxrec=25)
    with pytest.warns(TruncatedResultWarning):
        partial = fetch_lamost(region, columns=ID_COLUMNS, maxrec=25, on_overflow="warn")
    assert len(partial) == 25 and partial.meta["TRUNCATED"] is True
    complete = fetch_lamost(region, columns=ID_COLUMNS)
    assert len(complete) > 25 and complete.meta["TRUNCATED"] is False


def test_adql_errors_name_service_and_query(local_vizier):
    with pytest.raises(TAPQueryError, match=r"smatest\.ddpayne") as info:
        run_query(local_vizier, "SELECT no_such_column FROM smatest.ddpayne")
    assert info.value.service == local_vizier
    with pytest.raises(TAPQueryError):
        run_query(local_vizier, "SELECT FROM WHERE")


def test_connection_refused_is_a_clear_error():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with conf.set_temp("max_retries", 1), conf.set_temp("retry_backoff", 0.01):
        with pytest.raises(TAPServiceError, match=r"(?s)cannot connect.*127\.0\.0\.1"):
            run_query(f"http://127.0.0.1:{port}/tap", "SELECT 1")


def test_training_table_from_the_vo_and_the_documented_flow(local_vizier, tmp_path):
    """Build LAMOST x APOKASC-2 over TAP, train the paper's model, annotate a TAP region."""
    table = build_lamost_training_table(radius=2 * u.arcsec, mode="sync")
    assert {"KIC", "EVSTATE", "MASS", "AGE", "C_FE", "BA_FE"} <= set(table.colnames)
    spec = dataclasses.replace(LAMOST_SPECS["giants-lamost-dr5"], n_estimators=60,
                               cleaning_estimators=40)
    result = train_model(spec, table)
    metrics = result.model.card["targets"][0]["metrics"]
    assert metrics["median_rel_error"] < 0.08  # mirror labels track the real seismic masses

    # The few lines of the docs: region query, annotate, save.
    stars = fetch_lamost(CircleSkyRegion(KEPLER, 2 * u.deg))
    annotated = add_mass_age(stars, model=result.model)
    # ECSV keeps every unit; FITS cannot store logarithmic ones such as dex(cm / s2).
    path = tmp_path / "kepler_field.ecsv"
    annotated.write(path)
    back = Table.read(path)
    assert back["mass"].unit == u.solMass and len(back) == len(stars)
    inside = ~np.ma.getmaskarray(back["mass"])
    assert inside.mean() > 0.5


def test_red_clump_training_table_uses_spectroscopic_seismology(local_vizier):
    table = build_lamost_training_table(radius=2 * u.arcsec, red_clump=True, mode="sync")
    clump = ~np.ma.getmaskarray(table["DPI"])
    assert clump.sum() > 100
    assert table["DPI"].unit == u.s and table["DNU"].unit == u.uHz
    # Spectroscopic Δν scatters about the seismic one by the mirror's 3%.
    ratio = np.asarray(table["DNU"][clump] / table["DNU_SEISMIC"][clump])
    assert abs(np.median(ratio) - 1) < 0.01 and 0.01 < np.std(ratio) < 0.06


def test_slam_fetch_finds_its_table_and_gives_annotatable_giants(local_vizier, recwarn):
    cluster = SkyCoord(150 * u.deg, 2 * u.deg)
    giants = fetch_slam(coordinates=cluster, radius=0.6 * u.deg)
    positions = run_query(local_vizier, "SELECT RAdeg, DEdeg FROM smatest.slam_giants")
    inside = SkyCoord(positions["RAdeg"], positions["DEdeg"], unit="deg").separation(
        cluster) < 0.6 * u.deg
    assert len(giants) == inside.sum() > 50
    # Portable names (RAdeg/[a/M] were the mirror's spellings), units, label source.
    for name, unit in (("RA", u.deg), ("TEFF", u.K), ("TEFF_ERR", u.K), ("C_M", u.dex),
                       ("ALPHA_M", u.dex), ("ALPHA_M_ERR", u.dex)):
        assert giants[name].unit == unit, name
    assert giants["ALPHA_M"].meta["service_name"] == "[a/M]"
    assert giants.meta["LABELSRC"] == "LAMOST DR5 SLAM (APOGEE DR15 scale)"
    assert "S/N from SNRG" in giants.meta["MLSLAMER"]
    annotated = add_mass_age(giants, model="giants", propagate_errors=True)
    assert not [w for w in recwarn if issubclass(w.category, LabelSourceWarning)]
    assert "c_n=C_M - N_M" in annotated.meta["MLINPUTS"]
    assert annotated.meta["MLSCALE"].startswith("SLAM labels are on the APOGEE DR15 scale")
    assert np.mean(~np.ma.getmaskarray(annotated["mass"])) > 0.8


@pytest.mark.remote_data
def test_live_vizier_cone():
    stars = fetch_lamost(coordinates=KEPLER, radius=2 * u.arcmin, maxrec=500,
                         on_overflow="warn")
    assert "TEFF" in stars.colnames and stars["TEFF"].unit == u.K


@pytest.mark.remote_data
def test_live_red_clump_and_apokasc():
    assert len(fetch_red_clump(coordinates=KEPLER, radius=10 * u.arcmin)) >= 0
    assert len(fetch_apokasc()) > 6000


@pytest.mark.remote_data
def test_live_slam_table_has_the_labels():
    """The SLAM table under J/ApJS/246/9/ and its label spellings, from VizieR itself."""
    giants = fetch_slam(coordinates=KEPLER, radius=10 * u.arcmin)
    for name in ("RA", "DEC", "TEFF", "LOGG", "M_H", "ALPHA_M", "C_M", "N_M"):
        assert name in giants.colnames, name
    assert len(giants) > 0 and np.nanmedian(np.asarray(giants["LOGG"], dtype=float)) < 3.8
