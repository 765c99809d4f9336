"""CDS XMatch and VizieR metadata through astroquery, against fake services on loopback.

The fake XMatch service answers as the real one does (``RESPONSEFORMAT=votable``:
``angDist``, then the uploaded columns, then the catalog's columns, one row per
pair within ``distMaxArcsec``), from a small synthetic catalog; the fake VizieR
serves HTTPS on 127.0.0.1 with a throwaway certificate, because astroquery
always builds ``https://<server>/viz-bin/votable``. Nothing leaves the machine
except in the ``remote_data`` tests.
"""

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import ascii
from astropy.table import MaskedColumn, Table

from stellar_ml_ages.exceptions import (
    RegionError,
    TAPQueryError,
    TAPServiceError,
    TAPTimeoutError,
    VOError,
)
from stellar_ml_ages.vo import CATALOGS, Catalog, conf
from stellar_ml_ages.vo.catalogs import is_optional
from stellar_ml_ages.vo.xmatch import vizier_columns, xmatch_vizier

LAMOST = "J/ApJS/245/34/catalog"
RED_CLUMP = "J/ApJ/858/L7/table1"
XMATCH_PATH = "/xmatch/api/v1/sync"

# The synthetic catalog: (name, VOTable datatype, unit).
FIELDS = [("RAJ2000", "double", "deg"), ("DEJ2000", "double", "deg"), ("Teff", "double", "K"),
          ("e_Teff", "double", "K"), ("logg", "double", "[cm/s2]"), ("[Fe/H]", "double", None),
          ("e_[Fe/H]", "double", None), ("[Mg/Fe]", "double", None), ("Name", "char", None)]


def _star(ra, dec, offset_arcsec, teff, feh, mgfe, name):
    return {"RAJ2000": ra, "DEJ2000": dec + offset_arcsec / 3600.0, "Teff": teff,
            "e_Teff": 50.0, "logg": 2.5, "[Fe/H]": feh, "e_[Fe/H]": 0.05, "[Mg/Fe]": mgfe,
            "Name": name}


# Around the user's stars below: two candidates for row 0 (the nearer listed second),
# one for rows 1 and 4, none within 3 arcsec of row 2.
CATALOG = [
    _star(290.0, 44.0, 2.0, 4900.0, -0.30, 0.20, "far"),
    _star(290.0, 44.0, 0.5, 4700.0, -0.10, 0.10, "near"),
    _star(291.0, 43.0, -1.0, 4800.0, 0.05, 0.02, "single"),
    _star(292.0, 42.0, 10.0, 5000.0, 0.00, 0.00, "outside"),
    _star(293.0, 41.0, 2.5, 4600.0, 0.20, None, ""),
]


def user_stars():
    """Five stars of a user: row 3 has no position."""
    ra = MaskedColumn([290.0, 291.0, 292.0, 0.0, 293.0], mask=[0, 0, 0, 1, 0], unit=u.deg)
    return Table({
        "ra": ra,
        "dec": [44.0, 43.0, 42.0, 0.0, 41.0] * u.deg,
        "KIC": [11, 12, 13, 14, 15],
        "TEFF": MaskedColumn([4650.0, 0.0, 5100.0, 4400.0, 4550.0], mask=[0, 1, 0, 0, 0],
                             unit=u.K),
    }, meta={"SOURCE": "mine"})


def _td(value):
    return "<TD/>" if value is None else f"<TD>{escape(str(value))}</TD>"


def votable(fields, rows):
    """A TABLEDATA VOTable; ``fields`` are (name, datatype, unit), ``rows`` are dicts."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">',
             '<RESOURCE type="results">', '<INFO name="QUERY_STATUS" value="OK"/>', "<TABLE>"]
    for i, (name, datatype, unit) in enumerate(fields):
        size = ' arraysize="*"' if datatype == "char" else ""
        unit = f' unit="{escape(unit)}"' if unit else ""
        lines.append(f'<FIELD ID="c{i}" name="{escape(name)}" datatype="{datatype}"{size}{unit}/>')
    lines.append("<DATA><TABLEDATA>")
    for row in rows:
        lines.append("<TR>" + "".join(_td(row.get(name)) for name, _, _ in fields) + "</TR>")
    lines += ["</TABLEDATA></DATA>", "</TABLE>", "</RESOURCE>", "</VOTABLE>"]
    return "\n".join(lines).encode()


def error_votable(message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results">\n'
        f'<INFO ID="QUERY_STATUS" name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n").encode()


class FakeService:
    """A threaded HTTP(S) server on 127.0.0.1; subclasses answer in ``respond``."""

    def __init__(self, faults=(), tls=None, delay=1.5):
        self.faults = list(faults)  # per request to the main endpoint: "ok", "500", "400", "slow"
        self.delay = delay
        self.requests = []
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body, content_type):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_GET(self):
                self._answer(*service.respond(self, b""))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(*service.respond(self, self.rfile.read(length)))

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hung up is not the test's failure

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def next_fault(self):
        with self._lock:
            return self.faults.pop(0) if self.faults else "ok"

    def fault_answer(self, fault):
        """The answer for a fault, or None for "ok"."""
        if fault == "slow":
            time.sleep(self.delay)
        if fault == "500":
            return 500, b"<html><body>Internal error</body></html>", "text/html"
        return None

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class FakeXMatch(FakeService):
    """The CDS XMatch sync API: the table list, and matches of an uploaded CSV."""

    def __init__(self, catalog=CATALOG, tables=(LAMOST, RED_CLUMP, "II/246/out"), **kwargs):
        super().__init__(**kwargs)
        self.catalog = catalog
        self.tables = list(tables)
        self.table_faults = []
        self.gets = []  # query parameters of table-list requests
        self.posts = []  # {"fields": {...}, "upload": Table, "user_agent": str}
        self.url = f"http://127.0.0.1:{self.port}{XMATCH_PATH}"

    def respond(self, handler, body):
        parts = urlsplit(handler.path)
        if handler.command == "GET" and parts.path == XMATCH_PATH + "/tables":
            self.gets.append({k: v[0] for k, v in parse_qs(parts.query).items()})
            if self.table_faults and self.table_faults.pop(0) == "500":
                return 500, b"<html>down</html>", "text/html"
            return 200, "\n".join(self.tables).encode(), "text/plain"
        if handler.command != "POST" or parts.path != XMATCH_PATH:
            return 404, b"not found", "text/plain"
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + handler.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        fields, upload = {}, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            content = part.get_payload(decode=True).decode()
            if part.get_filename():
                upload = ascii.read(content, format="csv")
            else:
                fields[name] = content
        self.posts.append({"fields": fields, "upload": upload,
                           "user_agent": handler.headers["User-Agent"]})
        fault = self.next_fault()
        answer = self.fault_answer(fault)
        if answer is not None:
            return answer
        if fault == "400":
            return 400, error_votable('Column name "DEC" not found in table metadata'), (
                "application/x-votable+xml")
        return 200, self.matches(upload, float(fields["distMaxArcsec"])), (
            "application/x-votable+xml")

    def matches(self, upload, radius_arcsec):
        """Every pair within the radius (the service's default selection), farthest first."""
        stars = SkyCoord(upload["xm_ra"] * u.deg, upload["xm_dec"] * u.deg)
        catalog = SkyCoord([row["RAJ2000"] for row in self.catalog] * u.deg,
                           [row["DEJ2000"] for row in self.catalog] * u.deg)
        pairs = []
        for i, star in enumerate(stars):
            distances = star.separation(catalog).to_value(u.arcsec)
            for j in np.flatnonzero(distances <= radius_arcsec):
                pairs.append({"angDist": round(float(distances[j]), 6),
                              **{name: upload[name][i] for name in upload.colnames},
                              **self.catalog[j]})
        pairs.sort(key=lambda pair: -pair["angDist"])
        fields = [("angDist", "double", "arcsec"), ("xm_row_id", "long", None),
                  ("xm_ra", "double", None), ("xm_dec", "double", None), *FIELDS]
        return votable(fields, pairs)


@pytest.fixture
def fast_retries():
    with conf.set_temp("retry_backoff", 0.01), conf.set_temp("max_retries", 1), \
            conf.set_temp("timeout", 10.0), conf.set_temp("cache", False):
        yield


@pytest.fixture
def xmatch_service(monkeypatch, fast_retries):
    """A fake XMatch service, and ``conf.xmatch_url`` pointing at it."""
    with FakeXMatch() as service:
        monkeypatch.setattr(conf, "xmatch_url", service.url)
        yield service


# --- xmatch_vizier -------------------------------------------------------------------------


def test_every_row_once_in_order_nearest_kept_and_renamed(xmatch_service):
    stars = user_stars()
    matched = xmatch_vizier(stars, "lamost", 3 * u.arcsec)

    assert len(matched) == len(stars)
    assert list(matched["KIC"]) == [11, 12, 13, 14, 15]
    # Row 0 had two candidates within 3 arcsec: the nearer one (0.5") is kept.
    assert list(matched["Name"].filled("?")) == ["near", "single", "?", "?", ""]
    np.testing.assert_allclose(matched["separation"][[0, 1, 4]], [0.5, 1.0, 2.5], atol=1e-3)
    assert matched["separation"].unit == u.arcsec
    # No neighbour within the radius (row 2), no position (row 3): every catalog value masked.
    for name in ("TEFF_lamost", "FE_H", "MG_FE", "LOGG", "RA", "DEC", "Name", "separation"):
        assert list(np.ma.getmaskarray(matched[name])[[2, 3]]) == [True, True], name
    # The package's names, with the service's name kept.
    assert {"RA", "DEC", "TEFF_ERR", "LOGG", "FE_H", "FE_H_ERR", "MG_FE"} <= set(matched.colnames)
    assert matched["FE_H"].meta["service_name"] == "[Fe/H]"
    assert not {"angDist", "xm_row_id", "xm_ra", "xm_dec", "Teff", "[Fe/H]"} & set(
        matched.colnames)


def test_units_attached(xmatch_service):
    matched = xmatch_vizier(user_stars(), "lamost")
    assert matched["TEFF_lamost"].unit == u.K and matched["TEFF_ERR"].unit == u.K
    for name in ("FE_H", "FE_H_ERR", "MG_FE"):
        assert matched[name].unit == u.dex, name
    assert matched["LOGG"].unit == u.dex(u.cm / u.s**2)
    assert matched["RA"].unit == u.deg


def test_users_columns_and_table_untouched(xmatch_service):
    stars = user_stars()
    before = stars.copy(copy_data=True)
    matched = xmatch_vizier(stars, "lamost")

    # The caller's table is as it was.
    assert stars.colnames == before.colnames and stars.meta == before.meta
    for name in stars.colnames:
        assert np.array_equal(np.ma.getmaskarray(stars[name]), np.ma.getmaskarray(before[name]))
        assert np.array_equal(np.ma.filled(stars[name], 0), np.ma.filled(before[name], 0))
    # The user's TEFF is theirs, with its mask; the catalog's went to TEFF_lamost.
    assert matched.colnames[:4] == ["ra", "dec", "KIC", "TEFF"]
    assert list(np.ma.getmaskarray(matched["TEFF"])) == [False, True, False, False, False]
    assert list(matched["TEFF"].filled(-1)) == [4650.0, -1, 5100.0, 4400.0, 4550.0]
    assert list(matched["TEFF_lamost"][[0, 1, 4]]) == [4700.0, 4800.0, 4600.0]
    assert matched.meta["SOURCE"] == "mine" and "CDS XMatch" in matched.meta["MATCHED"]
    # A null value of the service stays masked where the row did match.
    assert bool(np.ma.getmaskarray(matched["MG_FE"])[4]) and not matched["FE_H"].mask[4]


def test_request_sent(xmatch_service):
    stars = user_stars()
    xmatch_vizier(stars, "lamost", 2.5 * u.arcsec)

    assert xmatch_service.gets == [{"action": "getVizieRTableNames", "RESPONSEFORMAT": "txt"}]
    [post] = xmatch_service.posts
    fields = post["fields"]
    assert fields["request"] == "xmatch" and fields["RESPONSEFORMAT"] == "votable"
    assert fields["cat2"] == f"vizier:{LAMOST}"
    assert float(fields["distMaxArcsec"]) == 2.5
    assert (fields["colRA1"], fields["colDec1"]) == ("xm_ra", "xm_dec")
    assert fields["selection"] == "best" and fields["area"] == "allsky"
    upload = post["upload"]
    assert upload.colnames == ["xm_row_id", "xm_ra", "xm_dec"]
    # Only rows with a position, by index, with exactly the user's positions.
    assert list(upload["xm_row_id"]) == [0, 1, 2, 4]
    np.testing.assert_array_equal(upload["xm_ra"], stars["ra"][[0, 1, 2, 4]])
    np.testing.assert_array_equal(upload["xm_dec"], stars["dec"][[0, 1, 2, 4]])
    assert post["user_agent"].startswith("stellar_ml_ages/")


def test_chunks_give_the_same_answer(xmatch_service):
    whole = xmatch_vizier(user_stars(), "lamost")
    chunked = xmatch_vizier(user_stars(), "lamost", chunk_rows=3)
    assert [len(post["upload"]) for post in xmatch_service.posts] == [4, 3, 1]
    assert len(xmatch_service.gets) == 2  # the table list: once per call
    assert whole.colnames == chunked.colnames
    for name in whole.colnames:
        assert np.array_equal(np.ma.getmaskarray(whole[name]), np.ma.getmaskarray(chunked[name]))


def test_raw_identifier_explicit_columns_and_suffix(xmatch_service):
    stars = user_stars()
    stars["Teff"] = stars["TEFF"]
    matched = xmatch_vizier(stars, f"vizier:{LAMOST}", columns=["Teff", "[Fe/H]"])
    # No package renames for a raw identifier; a clash gets "_xm".
    assert matched.colnames == ["ra", "dec", "KIC", "TEFF", "Teff", "Teff_xm", "[Fe/H]",
                                "separation"]
    assert matched["Teff_xm"].unit == u.K and matched["[Fe/H]"].unit is None
    assert list(matched["Teff_xm"][[0, 1]]) == [4700.0, 4800.0]


def test_alternative_spellings_and_missing_column_named(xmatch_service):
    matched = xmatch_vizier(user_stars(), "lamost", columns=[("TEFF", "Teff"), "logg"])
    assert matched.colnames[-3:] == ["TEFF_lamost", "LOGG", "separation"]
    with pytest.raises(TAPQueryError, match=r"no column nonsense; Dnu or Deltanu; it has "
                                            r"RAJ2000, DEJ2000, Teff"):
        xmatch_vizier(user_stars(), "lamost", columns=["Teff", "nonsense", ("Dnu", "Deltanu")])


def test_matched_labels_carry_their_label_source(xmatch_service):
    from stellar_ml_ages.labelsource import table_label_source

    stars = user_stars()
    del stars["TEFF"]
    matched = xmatch_vizier(stars, "lamost")
    # The package's names hide VizieR's [Fe/H]: only meta can tell the guard the scale.
    assert "FE_H" in matched.colnames and "TEFF" in matched.colnames
    assert matched.meta["LABELSRC"] == "LAMOST DR5 DD-Payne"
    assert table_label_source(matched).scale == "LAMOST DD-Payne"
    assert matched.meta["CITATION"] == "Xiang et al. 2019, ApJS 245, 34"
    assert "LABELSRC" not in stars.meta


def test_no_match_at_all_and_own_separation_column(xmatch_service):
    stars = user_stars()
    stars["separation"] = np.arange(5.0)
    matched = xmatch_vizier(stars, "lamost", 0.1 * u.arcsec)
    assert len(xmatch_service.posts) == 1 and len(matched) == 5
    assert list(matched["separation"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert matched["separation_lamost"].mask.all() and matched["TEFF_lamost"].mask.all()


def test_no_positions_no_request(xmatch_service):
    stars = user_stars()[[3]]
    matched = xmatch_vizier(stars, "lamost")
    assert xmatch_service.posts == [] and xmatch_service.gets == []
    assert len(matched) == 1 and bool(matched["separation"].mask[0])


@pytest.mark.parametrize("radius", [0 * u.arcsec, -1 * u.arcsec, 181 * u.arcsec, 2 * u.deg,
                                    [1, 2] * u.arcsec])
def test_bad_radius_refused_before_any_request(xmatch_service, radius):
    with pytest.raises(RegionError, match=r"radius must be greater than 0 and at most 180"):
        xmatch_vizier(user_stars(), "lamost", radius)
    assert xmatch_service.posts == [] and xmatch_service.gets == []


def test_radius_needs_an_angle():
    with pytest.raises(u.UnitsError):
        xmatch_vizier(user_stars(), "lamost", 3 * u.kg)
    with pytest.raises(TypeError):
        xmatch_vizier(user_stars(), "lamost", 3.0)


def other_service_catalog():
    """A catalog of the package's kind that is not on VizieR."""
    return Catalog(key="elsewhere", title="A table on another TAP service",
                   service_item="elsewhere_tap_url", table_item="elsewhere_table", ra="ra",
                   dec="dec", columns=("ra", "dec"))


def test_catalogs_that_cannot_be_matched(xmatch_service):
    with pytest.raises(RegionError, match="no position columns"):
        xmatch_vizier(user_stars(), "apokasc2")
    with pytest.raises(ValueError, match="not a VizieR table"):
        xmatch_vizier(user_stars(), other_service_catalog())
    with pytest.raises(KeyError, match="unknown catalog"):
        xmatch_vizier(user_stars(), "lamst")
    with pytest.raises(TAPQueryError, match="does not hold J/ApJS/239/32/table5") as info:
        xmatch_vizier(user_stars(), "vizier:J/ApJS/239/32/table5")
    assert info.value.service == xmatch_service.url
    assert xmatch_service.posts == []


def test_http_500_retried_then_service_error(xmatch_service):
    xmatch_service.faults = ["500", "500"]
    with pytest.raises(TAPServiceError) as info:
        xmatch_vizier(user_stars(), "lamost")
    assert len(xmatch_service.posts) == 2  # the first attempt and conf.max_retries = 1 retry
    assert isinstance(info.value, VOError) and not isinstance(info.value, TAPQueryError)
    assert info.value.service == xmatch_service.url
    assert "HTTP 500" in str(info.value) and "after 2 attempts" in str(info.value)
    assert f"cat2=vizier:{LAMOST}" in info.value.query


def test_transient_failure_then_success(xmatch_service):
    xmatch_service.faults = ["500", "ok"]
    matched = xmatch_vizier(user_stars(), "lamost")
    assert len(xmatch_service.posts) == 2 and matched["Name"][0] == "near"


def test_error_votable_is_a_query_error_not_retried(xmatch_service):
    xmatch_service.faults = ["400"]
    with pytest.raises(TAPQueryError, match=r'HTTP 400: Column name "DEC" not found'):
        xmatch_vizier(user_stars(), "lamost")
    assert len(xmatch_service.posts) == 1


def test_table_list_failure(xmatch_service):
    xmatch_service.table_faults = ["500", "500"]
    with pytest.raises(TAPServiceError, match="HTTP 500"):
        xmatch_vizier(user_stars(), "lamost")
    assert xmatch_service.posts == []


def test_xmatch_url_without_scheme_is_a_configuration_error(monkeypatch, fast_retries):
    monkeypatch.setattr(conf, "xmatch_url", "127.0.0.1:9/xmatch/api/v1/sync")
    with pytest.raises(TAPServiceError, match=r"configuration error.*conf\.xmatch_url"):
        xmatch_vizier(user_stars(), "lamost")


def test_no_service_listening(monkeypatch, fast_retries):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(conf, "xmatch_url", f"http://127.0.0.1:{port}{XMATCH_PATH}")
    with pytest.raises(TAPServiceError, match="cannot connect"):
        xmatch_vizier(user_stars(), "lamost")


def test_slow_answer_times_out(xmatch_service):
    xmatch_service.faults = ["slow"]
    xmatch_service.delay = 1.0
    with conf.set_temp("timeout", 0.3), conf.set_temp("max_retries", 0):
        with pytest.raises(TAPTimeoutError, match=r"no answer within 0\.3 s"):
            xmatch_vizier(user_stars(), "lamost")


# --- vizier_columns ------------------------------------------------------------------------

VIZIER_FIELDS = [
    ("RAJ2000", "pos.eq.ra;meta.main", "double", "deg", "Right ascension (J2000)"),
    ("DEJ2000", "pos.eq.dec;meta.main", "double", "deg", "Declination (J2000)"),
    ("Teff", "phys.temperature.effective", "float", "K", "Effective temperature"),
    ("logg", "phys.gravity", "float", "[cm/s2]", "Surface gravity"),
    ("[Fe/H]", "phys.abund.Fe", "float", "[-]", "Iron abundance"),
    ("Flag", "meta.code", "char", None, "Quality flag"),
]


def vizier_votable(table_id, fields=VIZIER_FIELDS):
    """What VizieR's viz-bin/votable answers for one row of one table."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">',
             f'<RESOURCE ID="yCat" name="{table_id.rsplit("/", 1)[0]}">',
             "<DESCRIPTION>Synthetic test catalog</DESCRIPTION>",
             f'<TABLE ID="t1" name="{table_id}">']
    for i, (name, ucd, datatype, unit, description) in enumerate(fields):
        size = ' arraysize="*"' if datatype == "char" else ""
        unit = f' unit="{unit}"' if unit else ""
        lines.append(f'<FIELD ID="f{i}" name="{escape(name)}" ucd="{ucd}" '
                     f'datatype="{datatype}"{size}{unit}>'
                     f"<DESCRIPTION>{escape(description)}</DESCRIPTION></FIELD>")
    values = {"double": "1.5", "float": "2.5", "char": "A"}
    lines.append("<DATA><TABLEDATA><TR>" + "".join(
        f"<TD>{values[f[2]]}</TD>" for f in fields) + "</TR></TABLEDATA></DATA>")
    lines += ["</TABLE>", "</RESOURCE>", "</VOTABLE>"]
    return "\n".join(lines).encode()


def no_table_votable():
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            b'<RESOURCE ID="yCat" name="X">\n'
            b'<INFO name="Error" value="No catalogue or table was specified or found"/>\n'
            b"</RESOURCE>\n</VOTABLE>\n")


class FakeVizieR(FakeService):
    """viz-bin/votable over HTTPS: astroquery builds https://<server>/viz-bin/votable."""

    def __init__(self, tls, known=(LAMOST,), **kwargs):
        super().__init__(tls=tls, **kwargs)
        self.known = set(known)
        self.scripts = []
        self.server_name = f"127.0.0.1:{self.port}"

    def respond(self, handler, body):
        if handler.command != "POST" or handler.path != "/viz-bin/votable":
            return 404, b"not found", "text/plain"
        script = body.decode()
        self.scripts.append(script)
        answer = self.fault_answer(self.next_fault())
        if answer is not None:
            return answer
        source = next(line.split("=", 1)[1] for line in script.splitlines()
                      if line.startswith("-source="))
        if source in self.known:
            return 200, vizier_votable(source), "application/x-votable+xml"
        return 200, no_table_votable(), "application/x-votable+xml"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A throwaway self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stellar_ml_ages test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def vizier_service(certificate, monkeypatch, fast_retries):
    """A fake VizieR on loopback, trusted through REQUESTS_CA_BUNDLE, set as conf.vizier_server."""
    cert_file, key_file = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with FakeVizieR(tls) as service:
        monkeypatch.setattr(conf, "vizier_server", service.server_name)
        yield service


def test_vizier_columns_real_astroquery_path(vizier_service):
    columns = vizier_columns("lamost")
    assert list(columns["name"]) == [f[0] for f in VIZIER_FIELDS]
    assert columns.colnames == ["name", "unit", "description", "ucd"]
    by_name = {row["name"]: row for row in columns}
    assert by_name["Teff"]["unit"] == "K"
    assert by_name["Teff"]["description"] == "Effective temperature"
    assert by_name["logg"]["unit"] == "[cm/s2]"
    assert by_name["[Fe/H]"]["ucd"] == "phys.abund.Fe"
    assert by_name["Flag"]["unit"] == ""
    assert columns.meta["CATALOG"] == LAMOST
    assert columns.meta["SERVICE"] == f"https://{vizier_service.server_name}/viz-bin/votable"
    # The request: this table, every column, one row.
    [script] = vizier_service.scripts
    lines = script.splitlines()
    assert f"-source={LAMOST}" in lines and "-out.all" in lines and "-out.max=1" in lines


def test_vizier_columns_raw_identifiers(vizier_service):
    assert len(vizier_columns(f"vizier:{LAMOST}")) == len(vizier_columns(LAMOST))


def test_vizier_columns_unknown_table(vizier_service):
    with pytest.raises(TAPQueryError, match="VizieR has no table J/nowhere/1/table9") as info:
        vizier_columns("J/nowhere/1/table9")
    assert info.value.service.startswith(f"https://{vizier_service.server_name}/")


def test_vizier_columns_http_500(vizier_service):
    vizier_service.faults = ["500", "500"]
    with pytest.raises(TAPServiceError, match=r"HTTP 500.*after 2 attempts"):
        vizier_columns("lamost")
    assert len(vizier_service.scripts) == 2


def test_vizier_columns_not_for_other_services():
    with pytest.raises(ValueError, match="not a VizieR table"):
        vizier_columns(other_service_catalog())


# --- live checks of the package's default column names (tox -e online) ----------------------

VIZIER_CATALOGS = [key for key, catalog in CATALOGS.items()
                   if catalog.service_item == "vizier_tap_url"]


def _spellings(entry):
    return (entry,) if isinstance(entry, str) else tuple(s for s in entry if s is not None)


@pytest.mark.remote_data
@pytest.mark.parametrize("key", VIZIER_CATALOGS)
def test_default_columns_exist_in_vizier(key):
    catalog = CATALOGS[key]
    names = set(vizier_columns(key)["name"])
    if catalog.columns == "*":  # every column is fetched: each renamed column must exist
        targets = {}
        for service_name, package_name in catalog.rename.items():
            targets.setdefault(package_name, []).append(service_name)
        for package_name, spellings in targets.items():
            assert names & set(spellings), f"{key}: none of {spellings} for {package_name}"
    else:
        missing = [entry for entry in catalog.columns
                   if not is_optional(entry) and not names & set(_spellings(entry))]
        assert not missing, f"{key}: VizieR has no {missing}"
