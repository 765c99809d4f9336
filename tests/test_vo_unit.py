"""VO helpers without a server: exact ADQL, positions, and recorded failures."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from regions import (
    CircleAnnulusSkyRegion,
    CircleSkyRegion,
    EllipseSkyRegion,
    PolygonSkyRegion,
    RectangleSkyRegion,
)

from stellar_ml_ages.exceptions import (
    RegionError,
    TAPOverflowError,
    TAPQueryError,
    TAPServiceError,
    TruncatedResultWarning,
)
from stellar_ml_ages.vo import conf, positions_from_2mass, region_to_adql, tap
from stellar_ml_ages.vo.adql import format_degrees, quote_identifier

CENTER = SkyCoord(290 * u.deg, 44 * u.deg)


def test_cone_adql_exact():
    assert region_to_adql(CircleSkyRegion(CENTER, 30 * u.arcmin), "RAJ2000", "DEJ2000") == (
        "1 = CONTAINS(POINT('ICRS', RAJ2000, DEJ2000), CIRCLE('ICRS', 290, 44, 0.5))")
    assert region_to_adql(CENTER, radius=36 * u.arcsec) == (
        "1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 290, 44, 0.01))")


def test_annulus_polygon_and_compound_adql_exact():
    annulus = CircleAnnulusSkyRegion(CENTER, 1 * u.deg, 2 * u.deg)
    assert region_to_adql(annulus) == (
        "(1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 290, 44, 2)) AND "
        "0 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 290, 44, 1)))")
    triangle = PolygonSkyRegion(SkyCoord([10, 11, 10] * u.deg, [0, 0, 1] * u.deg))
    assert region_to_adql(triangle) == (
        "1 = CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', 10, 0, 11, 0, 10, 1))")
    either = CircleSkyRegion(CENTER, 1 * u.deg) | triangle
    assert region_to_adql(either).startswith("((1 = CONTAINS(") and ") OR (" in region_to_adql(
        either)
    both = CircleSkyRegion(CENTER, 1 * u.deg) & CircleSkyRegion(CENTER, 2 * u.deg)
    assert ") AND (" in region_to_adql(both)
    assert "AND NOT" in region_to_adql(CircleSkyRegion(CENTER, 1 * u.deg) ^ triangle)


def test_frames_are_converted_to_icrs_and_ra_wraps():
    galactic_center = SkyCoord(0 * u.deg, 0 * u.deg, frame="galactic")
    assert "CIRCLE('ICRS', 266.404988286545, -28.936177761791, 1)" in region_to_adql(
        galactic_center, radius=1 * u.deg)
    assert "CIRCLE('ICRS', 350, 10, 1)" in region_to_adql(
        SkyCoord(-10 * u.deg, 10 * u.deg), radius=1 * u.deg)


def test_rectangle_corners_straddle_ra_zero():
    rectangle = RectangleSkyRegion(SkyCoord(0 * u.deg, 0 * u.deg), 2 * u.deg, 1 * u.deg)
    text = region_to_adql(rectangle)
    numbers = [float(v) for v in text.split("POLYGON('ICRS', ")[1].removesuffix("))").split(", ")]
    ras, decs = np.array(numbers[0::2]), np.array(numbers[1::2])
    np.testing.assert_allclose(np.sort(ras), [1, 1, 359, 359], atol=1e-9)
    np.testing.assert_allclose(np.sort(decs), [-0.5, -0.5, 0.5, 0.5], atol=1e-4)
    assert "e" not in text.lower().split("polygon")[1]  # plain decimals, never exponents


@pytest.mark.parametrize(("region", "radius", "message"), [
    (EllipseSkyRegion(CENTER, 1 * u.deg, 2 * u.deg), None, "not supported"),
    (CENTER, 0 * u.deg, "between 0 and 180"),
    (CENTER, -1 * u.deg, "between 0 and 180"),
    (CircleSkyRegion(CENTER, 200 * u.deg), None, "between 0 and 180"),
    (CENTER, None, "needs a radius"),
    (SkyCoord([1, 2] * u.deg, [0, 0] * u.deg), 1 * u.deg, "single center"),
    (CircleSkyRegion(CENTER, 1 * u.deg), 1 * u.deg, "radius goes with a SkyCoord"),
    ("290 44", None, "not supported"),
])
def test_bad_regions(region, radius, message):
    with pytest.raises(RegionError, match=message):
        region_to_adql(region, radius=radius)


def test_format_and_quote():
    assert format_degrees(1e-6 * u.deg) == "0.000001"
    with pytest.raises(RegionError):
        format_degrees(np.nan * u.deg)
    assert quote_identifier("e_[C/Fe]") == '"e_[C/Fe]"'
    assert quote_identifier('a"b') == '"a""b"'


def test_positions_from_2mass():
    ra, dec = positions_from_2mass(["2M19250937+3644599", "J00000000-0000001", "bad"])
    assert ra.unit == u.deg
    assert ra[0].value == pytest.approx(15 * (19 + 25 / 60 + 9.37 / 3600))
    assert dec[1].value == pytest.approx(-0.1 / 3600)
    assert np.isnan(ra[2])


@pytest.mark.shared_data
def test_positions_from_2mass_match_the_catalog(training_table):
    import warnings

    from stellar_ml_ages.training import find_data_dir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        table = Table.read(find_data_dir() / "apokasc2" / "apokasc2_table5_radec.fits")
    ra, dec = positions_from_2mass(table["TMASS_ID"])
    separation = SkyCoord(ra, dec).separation(SkyCoord(table["RA"], table["DEC"]))
    assert separation.max() < 0.01 * u.arcsec


class _RecordedService:
    """Replays recorded outcomes: exceptions to raise, then (table, status)."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, service, query, maxrec, mode, uploads):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def recorded(monkeypatch):
    def install(outcomes):
        replay = _RecordedService(outcomes)
        monkeypatch.setattr(tap, "_execute", replay)
        return replay

    with conf.set_temp("retry_backoff", 0.001):
        yield install


def _ok(n=3):
    return Table({"x": np.arange(n)}), "OK"


def test_transient_http_errors_are_retried(recorded):
    from pyvo.dal import DALServiceError

    replay = recorded([DALServiceError("busy", code=503), DALServiceError("oops", code=500),
                       _ok()])
    table = tap.run_query("http://127.0.0.1:9/tap", "SELECT 1")
    assert len(table) == 3 and replay.calls == 3 and table.meta["TRUNCATED"] is False


def test_retries_give_up_with_the_service_and_query(recorded):
    from pyvo.dal import DALServiceError

    recorded([DALServiceError("busy", code=503)] * 4)
    with pytest.raises(TAPServiceError, match=r"(?s)HTTP 503.*after 4 attempts") as info:
        tap.run_query("http://127.0.0.1:9/tap", "SELECT 1")
    assert info.value.service == "http://127.0.0.1:9/tap" and info.value.query == "SELECT 1"


def test_permanent_errors_are_not_retried(recorded):
    from pyvo.dal import DALQueryError, DALServiceError

    replay = recorded([DALQueryError("syntax error near FROM")])
    with pytest.raises(TAPQueryError, match="syntax error"):
        tap.run_query("http://127.0.0.1:9/tap", "SELEC 1")
    assert replay.calls == 1
    replay = recorded([DALServiceError("not found", code=404)])
    with pytest.raises(TAPServiceError, match="HTTP 404"):
        tap.run_query("http://127.0.0.1:9/tap", "SELECT 1")
    assert replay.calls == 1


def test_truncated_answer_is_retried_then_reported(recorded):
    from pyvo.dal import DALFormatError

    replay = recorded([DALFormatError("unexpected end of VOTable"), _ok()])
    assert len(tap.run_query("http://127.0.0.1:9/tap", "SELECT 1")) == 3
    assert replay.calls == 2


def test_overflow_never_passes_as_complete(recorded):
    recorded([(Table({"x": np.arange(5)}), "OVERFLOW")])
    with pytest.raises(TAPOverflowError, match="truncated at 5 rows"):
        tap.run_query("http://127.0.0.1:9/tap", "SELECT x FROM t", maxrec=5)
    recorded([(Table({"x": np.arange(5)}), "OVERFLOW")])
    with pytest.warns(TruncatedResultWarning, match="truncated at 5 rows"):
        table = tap.run_query("http://127.0.0.1:9/tap", "SELECT x FROM t", maxrec=5,
                              on_overflow="warn")
    assert table.meta["TRUNCATED"] is True


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        tap.run_query("http://127.0.0.1:9/tap", "SELECT 1", mode="batch")
    with pytest.raises(ValueError, match="on_overflow"):
        tap.run_query("http://127.0.0.1:9/tap", "SELECT 1", on_overflow="ignore")


def test_services_are_lazy_and_reused():
    first = tap.get_service("http://127.0.0.1:9/tap")
    assert tap.get_service("http://127.0.0.1:9/tap") is first


def test_complete_results_are_cached_and_reused(recorded, tmp_path):
    from astropy.config import set_temp_cache

    with set_temp_cache(tmp_path):
        replay = recorded([_ok(4)])
        first = tap.run_query("http://127.0.0.1:9/tap", "SELECT x FROM t", cache=True)
        again = tap.run_query("http://127.0.0.1:9/tap", "SELECT x FROM t", cache=True)
        assert replay.calls == 1  # the second answer came from the cache
        np.testing.assert_array_equal(again["x"], first["x"])
        # A different query, and a truncated result, are never served from the cache.
        replay = recorded([_ok(2), (Table({"x": np.arange(5)}), "OVERFLOW"),
                           (Table({"x": np.arange(5)}), "OVERFLOW")])
        assert len(tap.run_query("http://127.0.0.1:9/tap", "SELECT y FROM t", cache=True)) == 2
        for _ in range(2):
            with pytest.warns(TruncatedResultWarning):
                tap.run_query("http://127.0.0.1:9/tap", "SELECT z FROM t", cache=True,
                              on_overflow="warn")
        assert replay.calls == 3



def _as_tap_answers_come():
    """A service answer as pyvo reads it: VizieR names, CDS units, masks, column meta."""
    from astropy.table import MaskedColumn

    return Table([
        MaskedColumn([3, 4, 5], name="KIC", dtype=np.int32, mask=[False, True, False],
                     meta={"ucd": "meta.id", "values": {"null": -2147483648}}),
        MaskedColumn([-0.2, np.nan, 0.1], name="[Fe/H]", unit=u.Unit("[-]", parse_strict="silent"),
                     description="[Fe/H] abundance", mask=[False, False, True]),
        MaskedColumn([1.1, 1.5, 0.0], name="M(cor)", unit=u.solMass, mask=[False, False, True]),
        MaskedColumn(np.array(["RGB", "RC", None], dtype=object), name="ES",
                     mask=[False, False, True]),
    ], meta={"ID": "table5", "name": "J/ApJS/239/32/table5"})


def test_cached_answer_is_the_services_answer(recorded, tmp_path):
    from astropy.config import set_temp_cache

    with set_temp_cache(tmp_path):
        replay = recorded([(_as_tap_answers_come(), "OK")])
        first = tap.run_query("http://127.0.0.1:9/tap", "SELECT * FROM t5", cache=True)
        again = tap.run_query("http://127.0.0.1:9/tap", "SELECT * FROM t5", cache=True)
    assert replay.calls == 1  # the second one was read from the cache
    # VizieR's names must survive: the catalog renames look for [Fe/H] and M(cor).
    assert again.colnames == first.colnames == ["KIC", "[Fe/H]", "M(cor)", "ES"]
    assert dict(again.meta) == dict(first.meta)
    for name in first.colnames:
        assert type(again[name]) is type(first[name]), name
        assert str(again[name].unit) == str(first[name].unit), name
        assert again[name].description == first[name].description, name
        assert dict(again[name].meta) == dict(first[name].meta), name
        assert list(np.ma.getmaskarray(again[name])) == list(np.ma.getmaskarray(first[name]))
    assert again["M(cor)"][1] == 1.5 and np.isnan(again["[Fe/H]"][1])  # NaN is not missing
    assert list(again["ES"][:2]) == ["RGB", "RC"] and again["KIC"].dtype == np.int32

# --- tap_crossmatch on recorded answers (no TAP_SCHEMA query: LAMOST's names are fixed) ---

LAMOST_LABELS = ["RAJ2000", "DEJ2000", "Teff", "logg", "[Fe/H]", "[C/Fe]", "[N/Fe]"]


def _lamost_rows(row_ids, teff=4700.0):
    """A recorded tap_crossmatch answer: one DD-Payne row per uploaded row id."""
    n = len(row_ids)
    return Table({
        "row_id": np.asarray(row_ids, dtype=np.int64),
        "RAJ2000": np.full(n, 290.0) * u.deg, "DEJ2000": np.full(n, 44.0) * u.deg,
        "Teff": np.full(n, teff) * u.K, "logg": np.full(n, 2.5),
        "[Fe/H]": np.zeros(n), "[C/Fe]": np.full(n, -0.1), "[N/Fe]": np.full(n, 0.3),
        "match_distance": np.full(n, 0.5 / 3600) * u.deg,
    })


def _mine(n=4):
    return Table({"ra": np.linspace(290, 291, n) * u.deg, "dec": np.full(n, 44.0) * u.deg,
                  "KIC": np.arange(n) + 100}, meta={"SOURCE": "mine"})


@pytest.fixture
def lamost_on_loopback():
    with conf.set_temp("vizier_tap_url", "http://127.0.0.1:9/tap"), \
            conf.set_temp("lamost_table", "smatest.ddpayne"):
        yield


def test_crossmatch_says_the_labels_are_lamost_so_the_annotation_warns(recorded,
                                                                        lamost_on_loopback):
    from stellar_ml_ages.labelsource import table_label_source
    from stellar_ml_ages.vo import tap_crossmatch

    recorded([(_lamost_rows([0, 2]), "OK")])
    mine = _mine()
    matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec, columns=LAMOST_LABELS)
    assert {"TEFF", "C_FE", "N_FE"} <= set(matched.colnames)  # the resolver's names
    # Renamed columns hide VizieR's spelling from the label guard: meta must say it.
    assert matched.meta["LABELSRC"] == "LAMOST DR5 DD-Payne"
    assert matched.meta["CITATION"] == "Xiang et al. 2019, ApJS 245, 34"
    assert table_label_source(matched).scale == "LAMOST DD-Payne"
    assert matched.meta["SOURCE"] == "mine" and "LABELSRC" not in mine.meta


def test_crossmatch_keeps_the_callers_label_source_when_its_own_labels_are_read(
        recorded, lamost_on_loopback):
    from stellar_ml_ages.vo import tap_crossmatch

    mine = _mine()
    mine["TEFF"], mine["LOGG"] = np.full(4, 4800.0) * u.K, np.full(4, 2.4)
    for name in ("FE_H", "C_FE", "N_FE"):
        mine[name] = np.zeros(4)
    mine.meta["LABELSRC"] = "APOGEE DR17"
    recorded([(_lamost_rows([1]), "OK")])
    matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec, columns=LAMOST_LABELS)
    # Every LAMOST label took the suffix: the annotation reads the caller's APOGEE labels.
    assert matched["TEFF_lamost"][1] == 4700.0 and matched["TEFF"][1] == 4800.0
    assert matched.meta["LABELSRC"] == "APOGEE DR17"
    # Without the caller's C/N, LAMOST's [C/Fe], [N/Fe] are read: the label source says so.
    del mine["C_FE"], mine["N_FE"]
    recorded([(_lamost_rows([1]), "OK")])
    mixed = tap_crossmatch(mine, "lamost", 2 * u.arcsec, columns=LAMOST_LABELS)
    assert "C_FE_lamost" not in mixed.colnames
    assert mixed.meta["LABELSRC"] == "LAMOST DR5 DD-Payne"


def test_crossmatch_with_a_cut_chunk_is_marked_truncated(recorded, lamost_on_loopback):
    from stellar_ml_ages.vo import tap_crossmatch

    replay = recorded([(_lamost_rows([0, 1]), "OK"), (_lamost_rows([2]), "OVERFLOW")])
    with pytest.warns(TruncatedResultWarning, match="truncated at 1 rows"):
        matched = tap_crossmatch(_mine(), "lamost", 2 * u.arcsec, columns=LAMOST_LABELS,
                                 maxrec=1, on_overflow="warn", chunk_rows=2)
    assert replay.calls == 2
    # Row 3 "has no match" only because its chunk was cut: the table must say so.
    assert matched.meta["TRUNCATED"] is True
    assert list(np.ma.getmaskarray(matched["separation"])) == [False, False, False, True]
    recorded([(_lamost_rows([0, 1]), "OK"), (_lamost_rows([2]), "OK")])
    complete = tap_crossmatch(_mine(), "lamost", 2 * u.arcsec, columns=LAMOST_LABELS,
                              chunk_rows=2)
    assert complete.meta["TRUNCATED"] is False


def test_crossmatch_without_any_position_returns_every_row_unasked(recorded,
                                                                   lamost_on_loopback):
    from stellar_ml_ages.vo import tap_crossmatch

    mine = _mine(3)
    mine["ra"] = np.ma.masked_all(3)
    mine["dec"][1] = np.nan
    before = mine.copy()
    replay = recorded([])
    matched = tap_crossmatch(mine, "lamost", 2 * u.arcsec)
    assert replay.calls == 0  # an empty upload is not sent to the service
    assert list(matched["KIC"]) == [100, 101, 102]
    assert np.all(np.ma.getmaskarray(matched["separation"]))
    assert matched["separation"].unit == u.arcsec
    assert np.all(np.ma.getmaskarray(mine["ra"])) and mine.colnames == before.colnames


@pytest.mark.parametrize("chunk_rows", [0, -5])
def test_crossmatch_refuses_an_empty_chunk_size_before_asking(recorded, lamost_on_loopback,
                                                              chunk_rows):
    from stellar_ml_ages.vo import tap_crossmatch

    replay = recorded([])
    with pytest.raises(ValueError, match=f"chunk_rows must be at least 1, not {chunk_rows}"):
        tap_crossmatch(_mine(), "lamost", 2 * u.arcsec, chunk_rows=chunk_rows)
    assert replay.calls == 0


@pytest.mark.parametrize("url", ["127.0.0.1:9/tap", "localhost:9/tap", "ftp://127.0.0.1/tap"])
def test_a_url_without_http_is_a_configuration_error_not_retried(recorded, url):
    from stellar_ml_ages.vo import fetch_lamost

    replay = recorded([])
    with pytest.raises(TAPServiceError, match=rf"configuration error: the service URL "
                                              rf"'{url}' .*not an http:// or https:// URL"):
        tap.run_query(url, "SELECT 1")
    with conf.set_temp("vizier_tap_url", url), pytest.raises(
            TAPServiceError, match=r"conf\.vizier_tap_url"):
        fetch_lamost(maxrec=3)
    assert replay.calls == 0  # nothing sent, nothing retried


def test_a_url_without_scheme_says_which_one_was_meant(recorded):
    recorded([])
    with pytest.raises(TAPServiceError, match=r"did you mean 'http://127\.0\.0\.1:9/tap'"):
        tap.run_query("127.0.0.1:9/tap", "SELECT 1")


def test_crossmatch_radius_limits_are_the_documented_ones(recorded, lamost_on_loopback):
    """docs/vo.rst: tap_crossmatch takes radii above 0 and below 1 deg (200 arcsec too,
    unlike CDS XMatch's 180 arcsec)."""
    from stellar_ml_ages.vo import tap_crossmatch

    replay = recorded([(_lamost_rows([0]), "OK")])
    matched = tap_crossmatch(_mine(1), "lamost", 200 * u.arcsec, columns=LAMOST_LABELS)
    assert replay.calls == 1 and matched["separation"][0] == pytest.approx(0.5)
    for radius in (1 * u.deg, 0 * u.arcsec):
        with pytest.raises(RegionError, match=r"above 0 and below 1\.0 deg"):
            tap_crossmatch(_mine(1), "lamost", radius)
    assert replay.calls == 1
