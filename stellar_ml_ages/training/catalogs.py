"""Read the real training catalogs and join them into one table per star.

The packaged models are the APOGEE-label analogue of the paper's LAMOST models:

* APOKASC-2 (Pinsonneault et al. 2018, Table 5): asteroseismic mass, age, Δν and
  evolutionary state;
* APOGEE DR17 Teff, log g, [Fe/H], [Mg/H] for the same stars (the astroNN DR17
  APOKASC-2 training file);
* APOGEE DR17 [C/Fe], [N/Fe] from an APOKASC-3 Table 4 subset (α-poor gold stars,
  0.90 < M < 1.80 Msun, -0.45 < [Fe/H] < 0.45 by the APOKASC-3 values).

All three are joined on KIC. The files are read from a data directory given by
argument, configuration or environment; they are never shipped with the package.
"""

import os
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table, join

from ..config import conf
from ..exceptions import TrainingDataError

__all__ = ["CATALOG_FILES", "find_data_dir", "load_apogee_training_table"]

#: Files the APOGEE-label training set is built from, relative to the data directory.
CATALOG_FILES = {
    "labels": "apokasc2_apogee/apokasc2_apogee_dr17_labels.fits",
    "apokasc2": "apokasc2/apokasc2_table5_radec.fits",
    "apokasc3": "apokasc3/Table4_Apoor_RGB+RC_Gold.csv",
}


def find_data_dir(path=None):
    """Locate the training-data directory.

    Tried in order: ``path``; the ``training_data_dir`` configuration item; the
    ``STELLAR_ML_AGES_DATA`` environment variable; ``../shared/data`` next to the
    current directory and next to the source checkout.

    Raises
    ------
    TrainingDataError
        If none of them holds the APOKASC-2 files.

    Examples
    --------
    >>> from stellar_ml_ages.training import find_data_dir
    >>> find_data_dir("../shared/data")  # doctest: +SKIP
    PosixPath('/work/shared/data')
    """
    here = Path(__file__).resolve().parents[2]
    candidates = [path, conf.training_data_dir or None, os.environ.get("STELLAR_ML_AGES_DATA"),
                  Path.cwd().parent / "shared" / "data", here.parent / "shared" / "data"]
    tried = []
    for candidate in candidates:
        if not candidate:
            continue
        candidate = Path(candidate).expanduser()
        tried.append(str(candidate))
        if (candidate / CATALOG_FILES["apokasc2"]).is_file():
            return candidate
        if path is not None and candidate == Path(path).expanduser():
            break
    raise TrainingDataError(
        "training catalogs not found; looked for "
        f"{CATALOG_FILES['apokasc2']} under: {', '.join(tried) or '(nothing given)'}. "
        "Pass --data DIR, set STELLAR_ML_AGES_DATA, or conf.training_data_dir."
    )


def _read(data_dir, key):
    path = Path(data_dir) / CATALOG_FILES[key]
    if not path.is_file():
        raise TrainingDataError(f"missing training catalog {str(path)!r}")
    with warnings.catch_warnings():
        # VizieR-style files carry unit strings astropy warns about; values are unaffected.
        warnings.simplefilter("ignore", u.UnitsWarning)
        return Table.read(path)


def _text(column):
    values = np.asarray(column.filled("") if hasattr(column, "filled") else column)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "ascii")
    return np.char.strip(values.astype(str))


def _masked(column, unit=None):
    data = np.ma.masked_invalid(np.ma.asarray(column, dtype=np.float64))
    return MaskedColumn(data, unit=unit)


def load_apogee_training_table(data_dir=None):
    """One row per APOKASC-2 star with APOGEE labels, seismic targets and state.

    Parameters
    ----------
    data_dir : path-like, optional
        Directory with the catalogs (see `find_data_dir`).

    Returns
    -------
    `~astropy.table.Table`
        Columns ``KIC``, ``EVSTATE`` (APOKASC-2 state: RGB, RC, RGB(S), RC(S), ...),
        features under the names the column resolver knows (``TEFF`` [K],
        ``LOGG`` [dex(cm/s2)], ``FE_H``, ``MG_FE``, ``C_FE``, ``N_FE`` [dex],
        ``DNU`` [uHz], each with an ``_ERR`` column), and targets ``MASS`` [solMass]
        and ``AGE`` [Gyr]. Missing values are masked.

    Examples
    --------
    >>> from stellar_ml_ages.training import load_apogee_training_table
    >>> table = load_apogee_training_table("../shared/data")  # doctest: +SKIP
    >>> "KIC" in table.colnames and "MASS" in table.colnames  # doctest: +SKIP
    True
    """
    data_dir = find_data_dir(data_dir)
    labels = _read(data_dir, "labels")
    apokasc2 = _read(data_dir, "apokasc2")
    apokasc3 = _read(data_dir, "apokasc3")

    dex = u.dex
    logg_unit = u.dex(u.cm / u.s**2)
    table = Table()
    table["KIC"] = np.asarray(labels["KIC"], dtype=np.int64)
    table["TEFF"] = _masked(labels["TEFF"], u.K)
    table["TEFF_ERR"] = _masked(labels["TEFF_ERR"], u.K)
    table["LOGG"] = _masked(labels["LOGG"], logg_unit)
    table["LOGG_ERR"] = _masked(labels["LOGG_ERR"], dex)
    table["FE_H"] = _masked(labels["FE_H"], dex)
    table["FE_H_ERR"] = _masked(labels["FE_H_ERR"], dex)
    table["MG_FE"] = _masked(np.ma.asarray(labels["MG_H"]) - np.ma.asarray(labels["FE_H"]), dex)
    table["MG_FE_ERR"] = _masked(np.hypot(np.ma.asarray(labels["MG_H_ERR"]),
                                          np.ma.asarray(labels["FE_H_ERR"])), dex)

    seismic = Table()
    seismic["KIC"] = np.asarray(apokasc2["KIC"], dtype=np.int64)
    seismic["EVSTATE"] = _text(apokasc2["EVSTATE"])
    seismic["DNU"] = _masked(apokasc2["DNU"], u.uHz)
    seismic["DNU_ERR"] = _masked(
        np.ma.asarray(apokasc2["DNU"]) * np.ma.asarray(apokasc2["DNU_FRACERR"]), u.uHz)
    seismic["MASS"] = _masked(apokasc2["MASS"], u.solMass)
    seismic["AGE"] = _masked(apokasc2["AGE_GYR"], u.Gyr)

    carbon = Table()
    carbon["KIC"] = np.asarray(apokasc3["KIC"], dtype=np.int64)
    for element in ("C", "N"):
        carbon[f"{element}_FE"] = _masked(apokasc3[f"[{element}/Fe]"], dex)
        carbon[f"{element}_FE_ERR"] = _masked(apokasc3[f"S_[{element}/Fe]"], dex)

    for name, part in (("APOKASC-2", seismic), ("APOKASC-3", carbon), ("APOGEE", table)):
        if len(np.unique(part["KIC"])) != len(part):
            raise TrainingDataError(f"{name} catalog has duplicated KIC numbers")
    joined = join(table, seismic, keys="KIC", join_type="inner")
    joined = join(joined, carbon, keys="KIC", join_type="left")
    joined.sort("KIC")
    joined.meta = {"data_dir": str(data_dir), "files": dict(CATALOG_FILES)}
    return joined
