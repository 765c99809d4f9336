"""Block-by-block annotation of files must give what the in-memory path gives."""

import tracemalloc

import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import StreamingError, add_mass_age, get_model, streaming
from stellar_ml_ages.cli import EXIT_IO, EXIT_OK, main
from stellar_ml_ages.flags import NEAR_EDGE
from stellar_ml_ages.streaming import annotate_file

from .helpers import survey_like_table

pytestmark = [
    # log g in dex(cm/s2) has no FITS/CSV spelling, so it comes back without a unit
    # and the package assumes the documented one, the same in both paths.
    pytest.mark.filterwarnings("ignore::stellar_ml_ages.AssumedUnitWarning"),
    pytest.mark.filterwarnings("ignore:The unit 'dex:astropy.utils.exceptions.AstropyUserWarning"),
    pytest.mark.filterwarnings("ignore:'dex:astropy.units.UnitsWarning"),  # astropy < 7 says so
]

EXTENSIONS = {"fits": "fits", "parquet": "parquet", "ascii.csv": "csv"}


@pytest.fixture(scope="module")
def catalog():
    return survey_like_table(get_model("giants"), 3000, seed=21)


def write_input(catalog, directory, fmt):
    path = directory / f"input.{EXTENSIONS[fmt]}"
    catalog.write(path, format=fmt)
    return path


def in_memory(path, fmt, out_fmt, directory):
    """The reference: whole-table read, add_mass_age, whole-table write, read back."""
    reference = directory / f"reference.{EXTENSIONS[out_fmt]}"
    add_mass_age(Table.read(path, format=fmt)).write(reference, format=out_fmt)
    return reference


def assert_same_table(streamed, reference):
    assert streamed.colnames == reference.colnames
    assert streamed.meta == reference.meta
    for name in reference.colnames:
        ours, theirs = streamed[name], reference[name]
        assert ours.unit == theirs.unit, name
        assert ours.description == theirs.description, name
        mask = np.ma.getmaskarray(theirs)
        # A masked column with nothing masked may be stored without its mask.
        np.testing.assert_array_equal(np.ma.getmaskarray(ours), mask, err_msg=name)
        np.testing.assert_array_equal(np.asarray(ours)[~mask], np.asarray(theirs)[~mask],
                                      err_msg=name)


@pytest.mark.parametrize("out_fmt", list(EXTENSIONS))
@pytest.mark.parametrize("fmt", list(EXTENSIONS))
def test_streamed_output_equals_in_memory(catalog, tmp_path, fmt, out_fmt, monkeypatch):
    monkeypatch.setattr(streaming, "_CSV_MIN_CHUNK_BYTES", 20_000)  # several CSV blocks
    path = write_input(catalog, tmp_path, fmt)
    output = tmp_path / f"streamed.{EXTENSIONS[out_fmt]}"
    summary = annotate_file(path, output, input_format=fmt, output_format=out_fmt,
                            block_rows=257)
    assert summary.n_rows == len(catalog)
    assert summary.n_blocks > 3
    reference = in_memory(path, fmt, out_fmt, tmp_path)
    streamed_table = Table.read(output, format=out_fmt)
    assert_same_table(streamed_table, Table.read(reference, format=out_fmt))
    flags = np.asarray(streamed_table["mass_age_flag"])
    assert summary.n_in_domain == int((flags & ~np.int16(NEAR_EDGE) == 0).sum())
    assert 0.3 < summary.n_in_domain / len(catalog) < 0.95  # a realistic mix, not all or none
    if out_fmt != "parquet":  # FITS and CSV writers are deterministic: same bytes
        assert output.read_bytes() == reference.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_masked_values_and_row_order_survive(catalog, tmp_path):
    path = write_input(catalog, tmp_path, "fits")
    output = tmp_path / "out.fits"
    annotate_file(path, output, input_format="fits", output_format="fits", block_rows=100)
    result = Table.read(output)
    np.testing.assert_array_equal(result["ID"].astype(str), catalog["ID"])
    np.testing.assert_array_equal(result["QUALITY"].mask, catalog["QUALITY"].mask)
    missing = np.isnan(catalog["TEFF"]) | np.isnan(catalog["LOGG"])
    assert missing.any()
    assert np.all(result["mass"].mask[missing])
    assert np.all(result["mass_age_flag"][missing] & 1)  # MISSING_INPUT


def test_memory_is_bounded_by_the_block_not_the_file(tmp_path):
    catalog = survey_like_table(get_model("giants"), 60_000, seed=3)
    path = tmp_path / "big.parquet"
    catalog.write(path)
    whole = sum(column.nbytes for column in catalog.itercols())
    add_mass_age(catalog[:10])  # load the model outside the measurement
    peaks = {}
    for rows in (2_000, 60_000):
        tracemalloc.start()
        annotate_file(path, tmp_path / f"out{rows}.parquet", input_format="parquet",
                      output_format="parquet", block_rows=rows)
        peaks[rows] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # One block at a time: the small-block run needs a fraction of the whole-file one.
    assert peaks[2_000] < 0.25 * peaks[60_000]
    assert peaks[2_000] < whole


def test_refuses_what_it_cannot_stream(catalog, tmp_path, monkeypatch):
    path = write_input(catalog, tmp_path, "fits")
    with pytest.raises(StreamingError, match=r"'ascii.ecsv' cannot be streamed"):
        annotate_file(path, tmp_path / "o.ecsv", input_format="fits", output_format="ascii.ecsv")
    (tmp_path / "exists.fits").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"exists.fits"):
        annotate_file(path, tmp_path / "exists.fits", input_format="fits", output_format="fits")

    # A CSV column that is numeric in the first block and text later.
    lines = ["TEFF,LOGG,FE_H,MG_FE,C_FE,N_FE"] + ["4800,2.5,0.0,0.05,0.0,0.2"] * 3000
    lines[2500] = "hot,2.5,0.0,0.05,0.0,0.2"
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(streaming, "_CSV_MIN_CHUNK_BYTES", 20_000)
    with pytest.raises(StreamingError,
                       match=r"column 'TEFF'.*int64 in the first block but <U4 later"):
        annotate_file(mixed, tmp_path / "mixed_out.csv", input_format="ascii.csv",
                      output_format="ascii.csv", model="giants", block_rows=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.fits", "input.fits",
                                                          "mixed.csv"]


def test_command_line_streams_and_in_memory_agrees(catalog, tmp_path, capsys):
    path = write_input(catalog, tmp_path, "parquet")
    streamed, whole = tmp_path / "streamed.fits", tmp_path / "whole.fits"
    assert main(["annotate", str(path), str(streamed), "--block-rows", "500"]) == EXIT_OK
    assert "(6 blocks)" in capsys.readouterr().out
    assert main(["annotate", str(path), str(whole), "--in-memory"]) == EXIT_OK
    assert streamed.read_bytes() == whole.read_bytes()
    assert main(["annotate", str(path), str(streamed), "--block-rows", "500"]) == EXIT_IO
    assert "exists" in capsys.readouterr().err


def test_progress_bar_counts_rows(catalog, tmp_path, capsys):
    path = write_input(catalog, tmp_path, "fits")
    annotate_file(path, tmp_path / "o.fits", input_format="fits", output_format="fits",
                  block_rows=1000, progress=True)
    assert "3000/3000" in capsys.readouterr().err
