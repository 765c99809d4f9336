"""The stellar-ml-ages command: formats, exit codes, atomic output."""

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import add_mass_age, demo_table
from stellar_ml_ages.cli import EXIT_INTERRUPTED, EXIT_IO, EXIT_OK, EXIT_REFUSED, main
from tests.helpers import write_quietly


@pytest.fixture
def demo_file(tmp_path):
    path = tmp_path / "stars.ecsv"
    demo_table().write(path)
    return path


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".csv", ".parquet"])
def test_annotate_formats_match_library(demo_file, tmp_path, suffix, recwarn):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
        pytest.importorskip("pandas")
    output = tmp_path / f"out{suffix}"
    assert main(["annotate", str(demo_file), str(output), "--model", "red-clump",
                 "--no-progress"]) == EXIT_OK
    back = Table.read(output)
    expected = add_mass_age(demo_table(), model="red-clump")
    np.testing.assert_allclose(np.ma.filled(back["age"], np.nan),
                               np.ma.filled(expected["age"], np.nan), rtol=1e-12)
    if suffix != ".csv":
        assert u.Unit(back["age"].unit) == u.Gyr


def test_demo_command_and_list_models(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo.ecsv")]) == EXIT_OK
    assert "inside the domain of giants-apogee-dr17" in capsys.readouterr().out
    assert main(["list-models"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "red-clump-apogee-dr17 (aliases: red-clump, rc)" in out and "age [Gyr]" in out


def test_mapping_option(tmp_path, capsys):
    table = demo_table()
    table.rename_column("C_FE", "carbon")
    path = tmp_path / "renamed.ecsv"
    table.write(path)
    assert main(["annotate", str(path), str(tmp_path / "o.ecsv"), "--model", "giants",
                 "--map", "c_fe=carbon"]) == EXIT_OK
    assert main(["annotate", str(path), str(tmp_path / "p.ecsv"), "--model", "giants"]) \
        == EXIT_REFUSED
    assert "C_FE" in capsys.readouterr().err


@pytest.mark.parametrize(("arguments", "message"), [
    (["annotate", "missing.fits", "out.fits"], "does not exist"),
    (["annotate", "{demo}", "out.unknown"], "cannot tell the format"),
    (["annotate", "{demo}", "no/such/dir/out.fits"], "directory"),
])
def test_io_errors_exit_3(demo_file, tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    arguments = [a.replace("{demo}", str(demo_file)) for a in arguments]
    assert main(arguments) == EXIT_IO
    assert message in capsys.readouterr().err


def test_existing_output_needs_overwrite(demo_file, tmp_path):
    output = tmp_path / "out.ecsv"
    output.write_text("keep me")
    assert main(["annotate", str(demo_file), str(output)]) == EXIT_IO
    assert output.read_text() == "keep me"
    assert main(["annotate", str(demo_file), str(output), "--overwrite"]) == EXIT_OK
    assert "mass" in Table.read(output).colnames


def test_unreadable_input(tmp_path, capsys):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  = not really a FITS file")
    assert main(["annotate", str(broken), str(tmp_path / "out.fits")]) == EXIT_IO
    assert "could not read" in capsys.readouterr().err


def test_interrupted_write_leaves_nothing(demo_file, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Table, "write", interrupted)
    assert main(["annotate", str(demo_file), str(tmp_path / "out.fits")]) == EXIT_INTERRUPTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stars.ecsv"]


def test_bad_mapping_syntax_is_a_usage_error(demo_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["annotate", str(demo_file), str(tmp_path / "o.ecsv"), "--map", "c_fe"])
    assert info.value.code == 2
    # The annotate command's usage (item 9 of #26), not the top-level one.
    assert capsys.readouterr().err.startswith("usage: stellar-ml-ages annotate")


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])  # in-memory and streamed writers
def test_unwritable_output_directory_exits_3(tmp_path, capsys, suffix):
    """/proc accepts no new files, even for root (found by this test: a traceback before)."""
    source = tmp_path / f"stars{suffix}"
    write_quietly(demo_table(), source)
    assert main(["annotate", str(source), f"/proc/out{suffix}", "--model", "giants"]) == EXIT_IO
    assert "/proc" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".ecsv", ".fits"])
def test_a_file_where_a_directory_is_expected_is_one_line(tmp_path, capsys, suffix):
    """L3 (#26): NotADirectoryError (and any other OSError) as a one-line error."""
    source = tmp_path / f"stars{suffix}"
    write_quietly(demo_table(), source)
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file")
    output = blocker / f"out{suffix}"
    assert main(["annotate", str(source), str(output), "--model", "giants"]) == EXIT_IO
    err = capsys.readouterr().err
    assert "not_a_directory" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_prefix_that_files_cannot_hold_is_refused_in_one_line(demo_file, tmp_path, capsys):
    """L3 (#26): ``--prefix "a b"`` is the package's error, not a traceback."""
    assert main(["annotate", str(demo_file), str(tmp_path / "o.ecsv"), "--model", "giants",
                 "--prefix", "a b"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "prefix 'a b' may hold only letters" in err and "Traceback" not in err


def test_help_and_messages_say_what_applies(demo_file, tmp_path, capsys):
    """Item 9 of #26: every preset listed, no --slam-errors on demo, and an untrained
    LAMOST model says how to train it."""
    from stellar_ml_ages.catalog import PRESETS

    with pytest.raises(SystemExit):
        main(["catalog", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in PRESETS)
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--slam-errors" not in capsys.readouterr().out
    assert main(["annotate", str(demo_file), str(tmp_path / "o.ecsv"), "--model",
                 "giants-lamost-dr5"]) != EXIT_OK
    err = capsys.readouterr().err
    assert "stellar-ml-ages train giants-lamost --from-vo" in err


def test_interrupted_streaming_run_keeps_the_old_output(tmp_path, monkeypatch):
    """Ctrl-C after some blocks: the previous OUT is untouched and no partial file is left."""
    from stellar_ml_ages import streaming

    source = tmp_path / "stars.fits"
    write_quietly(demo_table(), source)
    output = tmp_path / "out.fits"
    output.write_bytes(b"previous result")
    blocks_done = []
    real = streaming._annotate_call

    def interrupt_on_third_block(*args, **kwargs):
        if len(blocks_done) == 2:
            raise KeyboardInterrupt
        blocks_done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(streaming, "_annotate_call", interrupt_on_third_block)
    assert main(["annotate", str(source), str(output), "--model", "giants", "--overwrite",
                 "--block-rows", "50"]) == EXIT_INTERRUPTED
    assert output.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits", "stars.fits"]


def test_state_column_options(tmp_path, capsys):
    from stellar_ml_ages import get_model
    from tests.helpers import typical_star

    table = typical_star(get_model("giants"), 2)
    table["PHASE"] = ["RGB", "RC"]
    source = tmp_path / "stars.ecsv"
    table.write(source)
    for options, expected in ((["--state-column", "PHASE"], "PHASE"),
                              (["--ignore-state"], "none: pooled interval calibration")):
        output = tmp_path / f"out{len(options)}.ecsv"
        assert main(["annotate", str(source), str(output), "--model", "giants", "--in-memory",
                     "--no-progress", *options]) == EXIT_OK
        assert Table.read(output).meta["MLSTATE"] == expected
    assert main(["annotate", str(source), str(tmp_path / "x.ecsv"), "--state-column",
                 "NOPE", "--in-memory"]) != EXIT_OK
    assert "NOPE" in capsys.readouterr().err


def test_a_votable_output_with_a_sky_position_column_names_it(tmp_path, capsys):
    from astropy.coordinates import SkyCoord

    table = demo_table()
    table["where"] = SkyCoord(np.linspace(280, 300, len(table)) * u.deg,
                              np.full(len(table), 44.0) * u.deg)
    path = tmp_path / "positions.ecsv"  # ECSV holds a SkyCoord; VOTable cannot
    table.write(path)
    output = tmp_path / "out.vot"
    assert main(["annotate", str(path), str(output), "--model", "giants",
                 "--no-progress"]) == EXIT_IO
    assert "column 'where' is a SkyCoord" in capsys.readouterr().err
    assert not output.exists() and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("name", ["out.csv.gz", "out.ecsv.gz", "out.vot.gz", "out.fits.gz"])
@pytest.mark.parametrize("in_memory", [True, False])
def test_gz_outputs_are_gzip_on_every_path(tmp_path, name, in_memory, recwarn):
    """FITS in, so that CSV and FITS outputs go block by block unless --in-memory."""
    import gzip
    import io

    from stellar_ml_ages.votable import read_votable

    source = tmp_path / "stars.fits"
    write_quietly(demo_table(), source)
    output = tmp_path / name
    assert main(["annotate", str(source), str(output), "--model", "giants", "--no-progress",
                 *(["--in-memory"] if in_memory else [])]) == EXIT_OK
    packed = output.read_bytes()
    assert packed[:2] == b"\x1f\x8b"  # what gunzip, TOPCAT and pandas expect of a .gz
    plain = io.BytesIO(gzip.decompress(packed))
    back = read_votable(plain) if name.startswith("out.vot") else Table.read(
        plain, format={"out.csv.gz": "ascii.csv", "out.ecsv.gz": "ascii.ecsv",
                       "out.fits.gz": "fits"}[name])
    expected = add_mass_age(demo_table(), model="giants")
    np.testing.assert_allclose(np.ma.filled(back["mass"], np.nan),
                               np.ma.filled(expected["mass"], np.nan), rtol=1e-6)


@pytest.mark.parametrize("in_memory", [True, False])
def test_gzipped_parquet_is_refused_before_any_work(demo_file, tmp_path, capsys, in_memory):
    output = tmp_path / "out.parquet.gz"
    assert main(["annotate", str(demo_file), str(output), "--model", "giants", "--no-progress",
                 *(["--in-memory"] if in_memory else [])]) == EXIT_IO
    assert "write 'out.parquet'" in capsys.readouterr().err
    assert not output.exists()
