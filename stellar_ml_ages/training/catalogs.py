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

__all__ = ["CATALOG_FILES", "find_data_dir", "load_apogee_training_table",
           "load_full_range_training_table", "load_training_table"]

#: Files the APOGEE-label training set is built from, relative to the data directory.
CATALOG_FILES = {
    "labels": "apokasc2_apogee/apokasc2_apogee_dr17_labels.fits",
    "apokasc2": "apokasc2/apokasc2_table5_radec.fits",
    "apokasc3": "apokasc3/Table4_Apoor_RGB+RC_Gold.csv",
    "prelim_labels": "apokasc3_prelim/apokasc3_prelim_labels.fits",
    "prelim_masses": "apokasc3_prelim/apokasc3_prelim_masses.ecsv",
    "prelim_ages": "apokasc3_prelim/apokasc705_ages_tayar.fits",
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


def _difference(minuend, subtrahend):
    """A derived label (``[Mg/Fe] = [Mg/H] - [Fe/H]``) in float64, as prediction derives it.

    float32 FITS columns subtracted in float32 differ from the float64 difference the
    annotation pipeline takes (`stellar_ml_ages.units`) in the last bits, enough to
    move a star on the hull boundary across it.
    """
    return (np.ma.asarray(minuend, dtype=np.float64)
            - np.ma.asarray(subtrahend, dtype=np.float64))


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
    table["MG_FE"] = _masked(_difference(labels["MG_H"], labels["FE_H"]), dex)
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


#: Labels of the preliminary APOKASC-3 run, each matched to its DR17 reference:
#: canonical feature -> (preliminary column, reference file key, reference column, unit).
#: Teff, log g and [Fe/H] are matched to the DR17 allStar values of the astroNN file;
#: [C/Fe], [N/Fe] and [α/M] to the DR17 values of APOKASC-3 Table 4 (its [Alp/Fe] is
#: the ASPCAP α abundance, the allStar ALPHA_M).
PRELIM_LABELS = {
    "teff": ("TEFF_COR", "labels", "TEFF", u.K),
    "logg": ("LOGG_COR", "labels", "LOGG", u.dex(u.cm / u.s**2)),
    "fe_h": ("FE_H_ADOP_COR", "labels", "FE_H", u.dex),
    "c_fe": ("C_M_RAW", "apokasc3", "[C/Fe]", u.dex),
    "n_fe": ("N_M_RAW", "apokasc3", "[N/Fe]", u.dex),
    "alpha_m": ("ALP_FE_ADOP_COR", "apokasc3", "[Alp/Fe]", u.dex),
}
#: The DR17 reference's own error column of each label: their median over the
#: overlap is the training labels' noise level, in the errors DR17 reports.
_REFERENCE_ERRORS = {"teff": "TEFF_ERR", "logg": "LOGG_ERR", "fe_h": "FE_H_ERR",
                     "c_fe": "S_[C/Fe]", "n_fe": "S_[N/Fe]", "alpha_m": "S_[Alp/Fe]"}
_PRELIM_ERRORS = {"teff": "TEFF_COR_ERR", "logg": "LOGG_COR_ERR", "fe_h": "FE_H_ADOP_COR_ERR",
                  "alpha_m": "ALP_FE_ADOP_COR_ERR"}
#: Column names the full-range table gives each feature (the DR17 allStar names).
TABLE_NAMES = {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H", "c_fe": "C_FE", "n_fe": "N_FE",
               "alpha_m": "ALPHA_M"}


def _by_kic(table, kic_column):
    kic = np.asarray(table[kic_column], dtype=np.int64)
    if len(np.unique(kic)) != len(kic):
        raise TrainingDataError(f"duplicated KIC numbers in column {kic_column!r}")
    return {k: i for i, k in enumerate(kic)}


def _lookup(index, kic, column):
    """Values of ``column`` for each KIC in ``kic`` (NaN where the star is absent)."""
    values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    out = np.full(len(kic), np.nan)
    for row, k in enumerate(kic):
        position = index.get(int(k))
        if position is not None:
            out[row] = values[position]
    return out


#: Decimals the mapped (fitted) labels are rounded to, far below their noise: the
#: last bits of a least-squares fit can differ between runs (threaded BLAS), and a
#: last-bit change may flip a cleaning decision; rounded, retraining is byte-identical.
_MAPPED_DECIMALS = {"teff": 3, "logg": 6, "fe_h": 6, "c_fe": 6, "n_fe": 6, "alpha_m": 6}


def load_full_range_training_table(data_dir=None, *, prefer_final=True, scale_method="deming",
                                   map_fit_excluding=()):
    """Preliminary APOKASC-3 giants at every mass, labels on the DR17 allStar scale.

    Joins, by KIC, the preliminary APOKASC-3 labels (Teff, log g, [Fe/H], [α/Fe],
    [C/M], [N/M] and the consensus evolutionary state), the APOKASC-3 seismic masses
    and the APOKASC v7.0.5 ages (``apokasc3_prelim/``), and Δν from APOKASC-2 where the
    star has one. Each label is the final DR17 value where the star has one (the
    astroNN DR17 file for Teff, log g, [Fe/H]; APOKASC-3 Table 4 for [C/Fe], [N/Fe],
    [α/M]), and elsewhere the preliminary value put on the DR17 allStar scale with a
    correction measured on the stars that have both (see
    `stellar_ml_ages.training.labelscale`: offsets, and trends only where the overlap
    identifies them; the red-clump term uses the *spectroscopic* state ``ES_SP``, the
    one the two runs' differences follow). The corrections are in ``meta``.

    Parameters
    ----------
    data_dir : path-like, optional
        Directory with the catalogs (see `find_data_dir`).
    prefer_final : bool
        Use the final DR17 value where a star has one (default). ``False`` maps every
        preliminary value (the version 2 training labels, for comparison).
    scale_method : {"deming", "symmetric"}
        How a label's own scale term is identified
        (`~stellar_ml_ages.training.labelscale.fit_label_correction`); ``"symmetric"``
        with ``prefer_final=False`` rebuilds the version 2 table, whose ``is_rc``
        term followed the seismic state.
    map_fit_excluding : sequence of int, optional
        KIC numbers whose final DR17 labels the corrections are *not* fitted on (their
        labels are still the final ones with ``prefer_final``): with
        ``prefer_final=False``, their mapped labels are then out of sample for the
        map, for testing it (``tools/models_report.py`` leaves out each fold's stars).

    Returns
    -------
    `~astropy.table.Table`
        One row per star with a label row and a seismic mass: ``KIC``, ``EVSTATE``
        (``RGB``, ``RC``, or empty where the consensus state is unknown), the features
        under their allStar names (``TEFF`` [K], ``LOGG`` [dex(cm/s2)], ``FE_H``,
        ``C_FE``, ``N_FE``, ``ALPHA_M`` [dex]) with ``_ERR`` columns where the run gives
        errors, ``DNU``/``DNU_ERR`` [uHz] (masked where APOKASC-2 has none), targets
        ``MASS`` [solMass] and ``AGE`` [Gyr] (masked where no age), and, for stars in
        the overlap, the DR17 reference labels as ``<NAME>_DR17``. ``meta["label_scale"]``
        holds every correction as plain numbers, ``meta["label_origin"]`` how many
        stars have each label from the final DR17 values and how many mapped.

    Examples
    --------
    >>> from stellar_ml_ages.training import load_full_range_training_table
    >>> table = load_full_range_training_table("../shared/data")  # doctest: +SKIP
    >>> sorted(table.meta["label_scale"])  # doctest: +SKIP
    ['alpha_m', 'c_fe', 'fe_h', 'logg', 'n_fe', 'teff']
    """
    from .labelscale import fit_label_correction

    data_dir = find_data_dir(data_dir)
    labels = _read(data_dir, "prelim_labels")
    masses = _read(data_dir, "prelim_masses")
    ages = _read(data_dir, "prelim_ages")
    references = {"labels": _read(data_dir, "labels"), "apokasc3": _read(data_dir, "apokasc3")}
    apokasc2 = _read(data_dir, "apokasc2")

    kic = np.asarray(labels["KIC_ID"], dtype=np.int64)
    mass_index = _by_kic(masses, "KIC")
    has_mass = np.array([int(k) in mass_index for k in kic])
    labels, kic = labels[has_mass], kic[has_mass]
    order = np.argsort(kic)
    labels, kic = labels[order], kic[order]
    _by_kic(labels, "KIC_ID")  # refuses duplicated stars

    state = _text(labels["CONS_EVSTATES"])
    state = np.where(np.isin(state, ("RGB", "RC")), state, "")
    if scale_method == "symmetric" and not prefer_final:
        is_rc = state == "RC"  # the version 2 rule
    else:
        # ASPCAP's differences between runs follow what the spectrum looks like.
        is_rc = np.ma.filled(np.ma.asarray(labels["ES_SP"], dtype=np.float64), np.nan) == 2
    raw = {name: np.ma.filled(np.ma.asarray(labels[column], dtype=np.float64), np.nan)
           for name, (column, *_rest) in PRELIM_LABELS.items()}
    trend_variables = {"teff": raw["teff"], "fe_h": raw["fe_h"],
                       "is_rc": is_rc.astype(np.float64)}

    fitted_on = ~np.isin(kic, np.asarray(map_fit_excluding, dtype=np.int64))
    table = Table()
    table["KIC"] = kic
    table["EVSTATE"] = state
    corrections, noise, origin = {}, {}, {}
    for name, (column, reference_key, reference_column, unit) in PRELIM_LABELS.items():
        reference = references[reference_key]
        reference_index = _by_kic(reference, "KIC")
        reference_values = _lookup(reference_index, kic, reference[reference_column])
        reference_errors = _lookup(reference_index, kic, reference[_REFERENCE_ERRORS[name]])
        source_errors = (np.ma.filled(np.ma.asarray(labels[_PRELIM_ERRORS[name]],
                                                    dtype=np.float64), np.nan)
                         if name in _PRELIM_ERRORS else None)
        noise[name] = float(np.nanmedian(np.where(reference_errors > 0, reference_errors,
                                                  np.nan)))
        correction = fit_label_correction(
            name, raw[name], np.where(fitted_on, reference_values, np.nan), trend_variables,
            source=column,
            reference=f"{CATALOG_FILES[reference_key]}:{reference_column}",
            source_errors=source_errors, reference_errors=reference_errors,
            method=scale_method)
        corrections[name] = correction.as_dict()
        values = np.round(correction.apply(raw[name], trend_variables), _MAPPED_DECIMALS[name])
        final = np.isfinite(reference_values) if prefer_final else np.zeros(len(kic), bool)
        values = np.where(final, reference_values, values)
        origin[name] = {"final_dr17": int(final.sum()),
                        "mapped": int((~final & np.isfinite(values)).sum())}
        table_name = TABLE_NAMES[name]
        table[table_name] = _masked(values, unit)
        if source_errors is not None:
            error_unit = u.dex if name == "logg" else unit
            table[f"{table_name}_ERR"] = _masked(np.where(final, reference_errors, source_errors),
                                                 error_unit)
        table[f"{table_name}_DR17"] = _masked(reference_values, unit)

    seismic_index = _by_kic(apokasc2, "KIC")
    dnu = _lookup(seismic_index, kic, apokasc2["DNU"])
    table["DNU"] = _masked(dnu, u.uHz)
    table["DNU_ERR"] = _masked(dnu * _lookup(seismic_index, kic, apokasc2["DNU_FRACERR"]), u.uHz)
    table["MASS"] = _masked(_lookup(mass_index, kic, masses["M_S"]), u.solMass)
    table["MASS_ERR"] = _masked(_lookup(mass_index, kic, masses["SIG_M_S"]), u.solMass)
    table["AGE"] = _masked(_lookup(_by_kic(ages, "KEPLER_ID"), kic, ages["AGE_JT"]), u.Gyr)
    table.meta = {
        "data_dir": str(data_dir),
        "files": {key: CATALOG_FILES[key] for key in
                  ("prelim_labels", "prelim_masses", "prelim_ages", "labels", "apokasc3",
                   "apokasc2")},
        "label_scale": corrections,
        "label_scale_reference": "APOGEE DR17 allStar",
        "label_origin": origin,
        "label_choice": ("final DR17 value where the star has one, else the preliminary value "
                         "mapped" if prefer_final else "every preliminary value mapped")
                        + f" ({scale_method} scale rule"
                        + (f"; map fitted without {int((~fitted_on).sum())} given stars)"
                           if not fitted_on.all() else ")"),
        # Median DR17-reported 1-sigma error of each label over the overlap stars.
        "label_noise": noise,
    }
    return table


def load_training_table(spec, data_dir=None):
    """The training table a spec is built from (its ``training_table`` loader).

    Examples
    --------
    >>> from stellar_ml_ages.training import get_spec, load_training_table
    >>> table = load_training_table(get_spec("giants"), "../shared/data")  # doctest: +SKIP
    >>> table.meta["label_scale_reference"]  # doctest: +SKIP
    'APOGEE DR17 allStar'
    """
    loaders = {"full_range": load_full_range_training_table,
               "apokasc2": load_apogee_training_table}
    try:
        loader = loaders[spec.training_table]
    except KeyError:
        raise TrainingDataError(
            f"spec {spec.name!r} asks for training table {spec.training_table!r}; "
            f"known: {', '.join(loaders)}") from None
    return loader(data_dir)
