"""Reliability, round 2: processes, shipped models, untrusted inputs (issue "Reliability").

Each test here failed on the main branch before its fix.
"""

import bz2
import copy
import gzip
import json
import multiprocessing
import os
import stat
import sys
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from stellar_ml_ages import (
    AssumedUnitWarning,
    ColumnValueError,
    MassAgeModel,
    ModelChecksumError,
    ModelFormatError,
    ModelIntegrityWarning,
    RegionError,
    StellarMLAgesWarning,
    StreamingError,
    TAPQueryError,
    add_mass_age,
    conf,
    demo_table,
    get_model,
)
from stellar_ml_ages.cli import main
from stellar_ml_ages.forest import CompactForest
from stellar_ml_ages.model import card_checksum, load_model
from tests.helpers import write_quietly


def _masses_of(start_stop):
    """Annotate a slice of the demo table in a worker process; module level for spawn."""
    start, stop = start_stop
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a slice may be mostly out of the hull
        annotated = add_mass_age(demo_table()[start:stop], model="giants")
    return np.ma.filled(annotated["mass"], np.nan)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_worker_processes_after_an_annotation(method):
    """A fork after the parallel kernel ran used to kill the child (GNU OpenMP)."""
    expected = np.ma.filled(add_mass_age(demo_table(), model="giants")["mass"], np.nan)
    context = multiprocessing.get_context(method)
    slices = [(0, 70), (70, 140), (140, 200)]
    with context.Pool(2) as pool:
        result = pool.map_async(_masses_of, slices)
        parts = result.get(timeout=240)  # a dead or hung worker fails here, not forever
    np.testing.assert_array_equal(np.concatenate(parts), expected)


def _recalibrated(model, factor=2.0):
    """The packaged model under its own name, with intervals ``factor`` times wider."""
    card = copy.deepcopy(model.card)
    for target in card["targets"]:
        calibration = target["calibration"]
        calibration["z"] = [factor * z for z in calibration["z"]]
        for group in calibration.get("bins", {}).values():
            group["z"] = [[factor * z for z in row] for row in group["z"]]
    card["arrays"] = {}
    return MassAgeModel.from_parts(card, model.forests, model.domain, model.networks)


def test_dask_workers_run_the_model_object_they_were_given(tmp_path):
    """A retrained model keeping the packaged name used to run as the packaged model."""
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    from stellar_ml_ages.dataframes import annotate_dask

    giants = get_model("giants")
    wider = _recalibrated(giants)
    assert wider.name == giants.name
    stars = demo_table()
    units = {name: stars[name].unit.to_string() for name in stars.colnames
             if stars[name].unit is not None}
    stars.to_pandas().to_parquet(tmp_path / "part.0.parquet", index=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster):
        frame = dd.read_parquet(tmp_path).repartition(npartitions=4)
        result = annotate_dask(frame, wider, units=units).compute().reset_index(drop=True)
    expected = add_mass_age(stars, model=wider)
    packaged = add_mass_age(stars, model=giants)
    for name in ("mass", "mass_p16", "age_p84"):
        np.testing.assert_array_equal(result[name].to_numpy(),
                                      np.ma.filled(expected[name], np.nan), err_msg=name)
    spread = np.ma.filled(expected["mass_p84"] - expected["mass_p16"], np.nan)
    packaged_spread = np.ma.filled(packaged["mass_p84"] - packaged["mass_p16"], np.nan)
    assert np.nanmedian(spread / packaged_spread) > 1.5  # the workers used the wider model


def test_models_from_cards_without_their_own_checksum_can_be_shipped(tmp_path):
    from stellar_ml_ages.dataframes import ShippedModel, _resolve

    card_text, payload = get_model("red-clump").to_payload()
    card = json.loads(card_text)
    card["format_version"] = 2
    del card["card_sha256"]
    (tmp_path / card["arrays"]["file"]).write_bytes(payload)
    (tmp_path / "old.json").write_text(json.dumps(card))
    with pytest.warns(ModelIntegrityWarning):
        old = load_model(tmp_path / "old.json")
    shipped = ShippedModel.of(old)
    with pytest.warns(ModelIntegrityWarning):
        assert _resolve(shipped).name == old.name


def test_shipped_model_is_checked_on_arrival():
    from stellar_ml_ages.dataframes import ShippedModel, _resolve

    shipped = ShippedModel.of(get_model("red-clump"))
    tampered = ShippedModel(shipped.card_text, shipped.payload[:-10] + b"0" * 10,
                            shipped.card_sha256)
    with pytest.raises(ModelChecksumError):
        _resolve(tampered)
    assert _resolve(shipped).name == "red-clump-apogee-dr17"


# ------------------------------------------------------------------ model cards
@pytest.fixture
def card_file(tmp_path):
    """A copy of the packaged giants model to edit."""
    card_text, payload = get_model("giants").to_payload()
    (tmp_path / "giants-apogee-dr17.npz").write_bytes(payload)
    path = tmp_path / "giants-apogee-dr17.json"
    path.write_text(card_text)
    return path


def _edit(path, change, restamp=False):
    card = json.loads(path.read_text())
    change(card)
    if restamp:
        card["card_sha256"] = card_checksum(card)
    path.write_text(json.dumps(card))


def test_an_edited_card_is_refused(card_file):
    def shift_mean(card):
        card["features"][1]["mean"] += 100.0

    _edit(card_file, shift_mean)
    with pytest.raises(ModelChecksumError, match="card was edited"):
        load_model(card_file)


def _swap_statistics(card, first, second):
    keys = ("mean", "std", "min", "max")
    a, b = card["features"][first], card["features"][second]
    for key in keys:
        a[key], b[key] = b[key], a[key]


def test_reordered_features_are_caught_by_the_card_checksum(card_file):
    _edit(card_file, lambda c: c["features"].reverse())
    with pytest.raises(ModelChecksumError):
        load_model(card_file)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["features"][1].update(name="teff_spec"), "unknown feature 'teff_spec'"),
    (lambda c: _swap_statistics(c, 1, 2), "not a possible"),  # Teff's and log g's
    (lambda c: c["features"][2].update(std=0.0), "std must be positive"),
    (lambda c: c["features"][0].update(min=1.0), "outside its"),
    (lambda c: c["targets"][0]["calibration"].update(z=[1.0, "x"]), "must be numbers"),
    (lambda c: c["arrays"].update(file="../../etc/passwd.npz"), "plain NAME.npz"),
])
def test_cards_that_do_not_fit_the_schema_are_refused_by_field(card_file, change, message):
    _edit(card_file, change, restamp=True)  # even with a matching checksum
    with pytest.raises(ModelFormatError, match=message):
        load_model(card_file)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_refused(card_file, literal):
    text = card_file.read_text()
    head, _, tail = text.partition('"std": ')
    number_end = min(i for i in (tail.find(","), tail.find("}")) if i >= 0)
    card_file.write_text(head + '"std": ' + literal + tail[number_end:])
    with pytest.raises(ModelFormatError, match=f"{literal} is not a JSON number"):
        load_model(card_file)


def _forest_with(giants, **changes):
    forest = giants.forests["mass"]
    arrays = {name: getattr(forest, name).copy() for name in
              ("feature", "threshold", "left", "value", "variance", "roots")}
    max_depth = changes.pop("max_depth", forest.max_depth)
    for name, edit in changes.items():
        edit(arrays[name])
    return CompactForest(**arrays, max_depth=max_depth)


@pytest.mark.parametrize(("changes", "message"), [
    ({"left": lambda a: a.__setitem__(0, 0) or None, "threshold": lambda a: None},
     "leaf does not point to itself|cycle"),
    ({"left": lambda a: a.__setitem__(1, 0)}, "cycle"),  # node 1's child is the root
    ({"variance": lambda a: a.__setitem__(-1, np.inf)}, "not finite"),
    ({"left": lambda a: a.__setitem__(0, 10**8)}, "out of range"),
    ({"max_depth": 3}, "max_depth"),
])
def test_hand_built_forests_are_validated(giants, changes, message):
    forest = _forest_with(giants, **changes)
    with pytest.raises(ModelFormatError, match=message):
        MassAgeModel.from_parts(giants.card, {**giants.forests, "mass": forest}, giants.domain,
                                giants.networks)


def test_a_child_in_another_tree_is_refused(giants):
    forest = giants.forests["mass"]
    second_root = int(forest.roots[1])
    internal = np.flatnonzero(np.isfinite(forest.threshold[:second_root]))
    node = int(internal[-1])

    def into_next_tree(left):
        left[node] = second_root + 1

    with pytest.raises(ModelFormatError, match="another tree"):
        MassAgeModel.from_parts(giants.card, {**giants.forests,
                                              "mass": _forest_with(giants, left=into_next_tree)},
                                giants.domain, giants.networks)


# ------------------------------------------------------------------ small things
def test_n_draws_must_be_positive_and_missing_errors_are_said(stars):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_draws"):
            add_mass_age(stars, model="giants", propagate_errors=True, n_draws=bad)
    with pytest.warns(StellarMLAgesWarning, match="no input has an error column"):
        add_mass_age(stars, model="giants", propagate_errors=True)


def test_row_numbers_count_from_the_top_of_the_table(stars, tmp_path):
    table = stars.copy()
    teff = np.asarray(table["TEFF"].value).astype(str).astype(object)
    teff[157] = "n/a"
    table["TEFF"] = teff.astype(str)
    with conf.set_temp("chunk_size", 50), pytest.raises(
            ColumnValueError, match=r"row 157 \(counting the first as 0\) is"):
        add_mass_age(table, model="giants")
    from stellar_ml_ages.streaming import annotate_file

    source = tmp_path / "stars.fits"
    write_quietly(table, source)
    with pytest.raises(ColumnValueError, match=r"row 157 \(counting the first as 0\) is 'n/a'"):
        annotate_file(source, tmp_path / "out.fits", input_format="fits", output_format="fits",
                      model="giants", block_rows=40)


def test_none_in_an_object_column_is_a_missing_value_not_text(stars):
    """As pandas reads it (and as annotate_pandas already treated it): flagged
    MISSING_INPUT, the other rows predicted as before."""
    from astropy.table import Column

    from stellar_ml_ages import MassAgeFlag

    table = stars.copy()
    table["TEFF"] = Column(np.array([None, *np.asarray(stars["TEFF"])[1:]], dtype=object),
                           unit="K")
    annotated = add_mass_age(table, model="giants")
    reference = add_mass_age(stars, model="giants")
    assert annotated["mass_age_flag"][0] & MassAgeFlag.MISSING_INPUT
    assert np.ma.is_masked(annotated["mass"][0])
    assert np.array_equal(np.ma.getmaskarray(annotated["mass"][1:]),
                          np.ma.getmaskarray(reference["mass"][1:]))
    assert np.ma.allequal(annotated["mass"][1:], reference["mass"][1:])


@pytest.mark.parametrize("threads", [-1, -8])
def test_bad_thread_counts_are_refused(stars, threads):
    with conf.set_temp("threads", threads), pytest.raises(ValueError, match=r"conf\.threads"):
        add_mass_age(stars, model="giants")


@pytest.mark.parametrize("name", ["out.ecsv", "out.fits"])  # in-memory and streamed writers
def test_output_files_keep_the_umask_or_the_replaced_files_mode(stars, tmp_path, name):
    source = tmp_path / "stars.fits"
    write_quietly(stars, source)
    output = tmp_path / name
    old = os.umask(0o022)
    try:
        assert main(["annotate", str(source), str(output), "--model", "giants"]) == 0
        assert stat.S_IMODE(output.stat().st_mode) == 0o644
        os.chmod(output, 0o640)
        assert main(["annotate", str(source), str(output), "--model", "giants",
                     "--overwrite"]) == 0
        assert stat.S_IMODE(output.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("in_memory", [True, False])
def test_fits_checksums_of_the_input_are_not_carried_over(stars, tmp_path, in_memory):
    source = tmp_path / "stars.fits"
    write_quietly(stars, source)
    with fits.open(source, mode="update") as hdul:
        hdul[1].add_checksum()
    output = tmp_path / "out.fits"
    options = ["--in-memory"] if in_memory else []
    assert main(["annotate", str(source), str(output), "--model", "giants", *options]) == 0
    with fits.open(output, checksum=True) as hdul:  # a wrong checksum warns, here an error
        header = hdul[1].header
        assert "mass" in hdul[1].columns.names
    # Either no checksum, or a true one (astropy would have warned above otherwise).
    assert header.get("CHECKSUM") is None or header.get("DATASUM") is not None


def test_hdf5_without_h5py_is_refused_before_the_work(stars, tmp_path, capsys, monkeypatch):
    source = tmp_path / "stars.ecsv"
    stars.write(source)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    assert main(["annotate", str(source), str(tmp_path / "out.hdf5"), "--model", "giants"]) == 3
    assert "needs h5py" in capsys.readouterr().err


# ------------------------------------------------------------------ streaming
def test_gzip_fits_streams_and_gz_output_is_compressed(stars, tmp_path):
    from stellar_ml_ages.streaming import annotate_file

    plain = tmp_path / "stars.fits"
    write_quietly(stars, plain)
    packed = tmp_path / "stars.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    disguised = tmp_path / "gzip_named.fits"  # gzip bytes under a plain name
    disguised.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedUnitWarning)  # FITS lost log g's unit
        expected = add_mass_age(Table.read(plain), model="giants")
    for source in (packed, disguised):
        output = tmp_path / f"out_{source.stem}.fits.gz"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AssumedUnitWarning)
            annotate_file(source, output, input_format="fits", output_format="fits",
                          model="giants", block_rows=64)
        assert output.read_bytes()[:2] == b"\x1f\x8b"
        back = Table.read(output)
        np.testing.assert_array_equal(np.ma.filled(back["mass"], -1),
                                      np.ma.filled(expected["mass"], -1))


def test_other_compressions_are_refused_by_name(stars, tmp_path):
    from stellar_ml_ages.streaming import annotate_file

    plain = tmp_path / "stars.fits"
    write_quietly(stars, plain)
    source = tmp_path / "stars.fits.bz2"
    source.write_bytes(bz2.compress(plain.read_bytes()))
    with pytest.raises(StreamingError, match="bzip2-compressed"):
        annotate_file(source, tmp_path / "o.fits", input_format="fits", output_format="fits",
                      model="giants")
    with pytest.raises(StreamingError, match=r"'\.parquet', not '\.parquet\.gz'"):
        annotate_file(plain, tmp_path / "o.parquet.gz", input_format="fits",
                      output_format="parquet", model="giants")


def test_dictionary_encoded_parquet_strings_stream(stars, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from stellar_ml_ages.streaming import annotate_file

    frame = stars.to_pandas()
    frame["POPULATION"] = frame["POPULATION"].astype("category")
    frame = frame.iloc[::-1].reset_index(drop=True)  # the longest label in the first block
    stars = stars[::-1]
    source = tmp_path / "stars.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert pa.types.is_dictionary(table.schema.field("POPULATION").type)
    pq.write_table(table, source, row_group_size=50)
    output = tmp_path / "out.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedUnitWarning)
        annotate_file(source, output, input_format="parquet", output_format="parquet",
                      model="giants", block_rows=50)
    back = Table.read(output)
    assert list(back["POPULATION"]) == list(stars["POPULATION"])
    assert np.sum(~np.ma.getmaskarray(back["mass"])) > 100


@pytest.mark.parametrize("output", ["out.parquet", "out.fits"])
def test_longer_text_in_a_later_block_is_refused_by_column(stars, tmp_path, output):
    """Was: Parquet silently cut 'red_clump' to 'giant''s width; FITS said 'header differs'."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from stellar_ml_ages.streaming import annotate_file

    # Written by pandas/pyarrow, not astropy: no recorded text widths, so each block
    # is as wide as its longest value; giants come first, the longer red_clump later.
    source = tmp_path / "stars.parquet"
    pq.write_table(pa.Table.from_pandas(stars.to_pandas(), preserve_index=False), source)
    with pytest.raises(StreamingError, match=r"column 'POPULATION' .*--in-memory"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AssumedUnitWarning)
            annotate_file(source, tmp_path / output, input_format="parquet",
                          output_format="parquet" if output.endswith("parquet") else "fits",
                          model="giants", block_rows=50)
    assert not (tmp_path / output).exists()


def test_csv_with_a_byte_order_mark_is_refused_when_streaming(stars, tmp_path):
    from stellar_ml_ages.streaming import annotate_file

    source = tmp_path / "stars.csv"
    stars.write(source)
    source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    with pytest.raises(StreamingError, match="byte-order mark"):
        annotate_file(source, tmp_path / "o.csv", input_format="ascii.csv",
                      output_format="ascii.csv", model="giants")


# ------------------------------------------------------------------ VO
@pytest.mark.parametrize("radius", [0 * u.arcsec, -1 * u.arcsec, 2 * u.deg, 3 * u.m])
def test_crossmatch_radius_must_be_a_sensible_angle(radius):
    from stellar_ml_ages.vo import tap_crossmatch

    mine = Table({"ra": [290.1] * u.deg, "dec": [43.9] * u.deg})
    with pytest.raises((RegionError, u.UnitsError), match="radius"):
        tap_crossmatch(mine, "lamost", radius)


def test_reserved_words_are_delimited_and_wide_rectangles_refused():
    from astropy.coordinates import SkyCoord
    from regions import RectangleSkyRegion

    from stellar_ml_ages.vo.adql import quote_identifier, region_to_adql

    assert [quote_identifier(n) for n in ("Size", "value", "Teff", "DISTANCE")] == [
        '"Size"', '"value"', "Teff", '"DISTANCE"']
    wide = RectangleSkyRegion(SkyCoord(10 * u.deg, 0 * u.deg), 200 * u.deg, 10 * u.deg)
    with pytest.raises(RegionError, match="narrower than 180 deg"):
        region_to_adql(wide)


def test_a_rejected_query_mentioning_timeout_is_not_retried_as_one():
    import pyvo

    from stellar_ml_ages.vo.tap import _classify

    error = pyvo.dal.DALQueryError("column 'timeout' does not exist")
    classified, retry = _classify(error, "http://127.0.0.1:1/tap", "SELECT timeout FROM t")
    assert isinstance(classified, TAPQueryError) and not retry


@pytest.mark.parametrize("packed", [False, True])
def test_a_fits_header_promising_more_rows_than_the_file_holds_is_refused(stars, tmp_path,
                                                                         packed):
    """Found by the fuzzer: a damaged NAXIS2 made the streamed read loop for ever."""
    from stellar_ml_ages.streaming import annotate_file

    plain = tmp_path / "stars.fits"
    write_quietly(stars, plain)
    data = bytearray(plain.read_bytes())
    at = data.index(b"NAXIS2  = ")
    data[at:at + 80] = fits.Card("NAXIS2", 10**9).image.encode("ascii")
    source = tmp_path / ("damaged.fits.gz" if packed else "damaged.fits")
    source.write_bytes(gzip.compress(bytes(data)) if packed else bytes(data))
    with pytest.raises(StreamingError, match="truncated"):
        annotate_file(source, tmp_path / "out.fits", input_format="fits",
                      output_format="fits", model="giants", block_rows=64)


def test_nulls_first_appearing_in_a_later_block_are_named(stars, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from stellar_ml_ages.streaming import annotate_file

    frame = stars.to_pandas().drop(columns=["POPULATION"])
    frame["QUALITY"] = pd_nullable_ints(len(frame), null_from=150)
    source = tmp_path / "stars.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)
    with pytest.raises(StreamingError, match=r"column 'QUALITY' has format D in a later block "
                                             r"but K in the first .*nulls.*--in-memory"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AssumedUnitWarning)
            annotate_file(source, tmp_path / "out.fits", input_format="parquet",
                          output_format="fits", model="giants", block_rows=50)


def pd_nullable_ints(n_rows, null_from):
    pd = pytest.importorskip("pandas")
    values = pd.array(np.arange(n_rows), dtype="Int64")
    values[null_from:null_from + 3] = pd.NA
    return values


def test_shorter_text_in_a_later_block_is_padded_in_fits(stars, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from stellar_ml_ages.streaming import annotate_file

    reversed_stars = stars[::-1]  # red_clump (9 characters) first, then giant (5)
    source = tmp_path / "stars.parquet"
    pq.write_table(pa.Table.from_pandas(reversed_stars.to_pandas(), preserve_index=False),
                   source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedUnitWarning)
        annotate_file(source, tmp_path / "out.fits", input_format="parquet",
                      output_format="fits", model="giants", block_rows=50)
    back = Table.read(tmp_path / "out.fits")
    assert [str(v).strip() for v in back["POPULATION"]] == list(reversed_stars["POPULATION"])
