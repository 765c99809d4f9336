"""The stellar-ml-ages command: formats, exit codes, atomic output."""

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import add_mass_age, demo_table
from stellar_ml_ages.cli import EXIT_INTERRUPTED, EXIT_IO, EXIT_OK, EXIT_REFUSED, main


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


def test_bad_mapping_syntax_is_a_usage_error(demo_file, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["annotate", str(demo_file), str(tmp_path / "o.ecsv"), "--map", "c_fe"])
    assert info.value.code == 2
