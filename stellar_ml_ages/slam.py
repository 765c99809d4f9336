"""LAMOST DR5 giants with SLAM labels, which are on the APOGEE label scale.

Zhang, Liu & Deng 2020 (ApJS 246, 9; VizieR J/ApJS/246/9) trained the Stellar LAbel
Machine on LAMOST DR5 spectra of stars in common with APOGEE DR15 and derived Teff,
log g, [M/H], [α/M], [C/M] and [N/M] for about a million LAMOST K giants. Those are
the packaged giants models' inputs, on the scale they were trained on, at a known,
larger noise. This module holds what the package knows about them:

*Label equivalences* (applied by the column resolver, `stellar_ml_ages.features`, and
recorded in the output's ``meta["MLCHOICE"]``):

- ``[C/N] = [C/M] - [N/M]``: exact, whatever the metallicity scale;
- ``[X/Fe] = [X/M] + [M/H] - [Fe/H]``: ASPCAP's definition; where the table has no
  [Fe/H] (SLAM's does not), [Fe/H] is taken as [M/H], which makes ``[N/Fe] = [N/M]``
  and the [Fe/H] input the [M/H] column. How far that assumption can move masses and
  ages is measured in docs/lamost.rst.

*Noise*: the cross-validated scatters of SLAM against APOGEE at S/N_g ~ 100
(``SCATTER_AT_REFERENCE``, the paper's abstract). Below S/N 100 the scatter is taken to
grow as 100 / S/N (photon noise; an assumption: the paper gives the scatter at
S/N ~ 100 only), and is not taken to shrink above it (`slam_scatter`). That scatter
is SLAM *minus APOGEE*: it contains APOGEE's own label noise, so SLAM's error against
the noise-free label is ``sqrt(scatter**2 - apogee**2)`` (`slam_error`), with APOGEE's
noise taken as that of the APOKASC training labels (``APOGEE_LABEL_NOISE``; the APOGEE
labels of SLAM's fainter training stars are noisier, which would make SLAM's own
error smaller: this choice errs towards wider intervals). `slam_uncertainties`
writes, for each label, the larger of the star's own uncertainty (where the table
has one) and `slam_error`, so that ``add_mass_age(..., propagate_errors=True)``
widens the intervals by SLAM's noise in excess of the training labels' own.
"""

import warnings

import astropy.units as u
import numpy as np
from astropy.table import Column

from .columns import ColumnResolution, _column_sources
from .exceptions import ColumnValueError, LabelNoiseWarning, MissingColumnError
from .features import get_feature
from .units import _read_error

__all__ = ["APOGEE_LABEL_NOISE", "REFERENCE_SNR", "SCATTER_AT_REFERENCE", "SLAM_LABELS",
           "SNR_ALIASES", "measurements", "noise_to_add", "slam_error", "slam_error_columns",
           "slam_scatter", "slam_uncertainties", "zero_point_note"]

#: The labels SLAM gives for LAMOST giants, as feature names.
SLAM_LABELS = ("teff", "logg", "m_h", "alpha_m", "c_m", "n_m")

#: S/N_g at which `SCATTER_AT_REFERENCE` was measured.
REFERENCE_SNR = 100.0

#: Cross-validated scatter of SLAM against APOGEE DR15 at S/N_g ~ 100 (Zhang, Liu &
#: Deng 2020, abstract): 49 K, 0.10, 0.037, 0.026, 0.058 and 0.106 dex.
SCATTER_AT_REFERENCE = {
    "teff": 49.0 * u.K,
    "logg": 0.10 * u.dex,
    "m_h": 0.037 * u.dex,
    "alpha_m": 0.026 * u.dex,
    "c_m": 0.058 * u.dex,
    "n_m": 0.106 * u.dex,
}

#: APOGEE's own 1-sigma label noise, taken as the median reported errors of the
#: APOKASC-3 training labels (the giants model card's ``training_set.label_noise``, to
#: two figures; [C/M], [N/M], [M/H] as [C/Fe], [N/Fe], [Fe/H]).
APOGEE_LABEL_NOISE = {
    "teff": 28.0 * u.K,
    "logg": 0.058 * u.dex,
    "m_h": 0.024 * u.dex,
    "alpha_m": 0.022 * u.dex,
    "c_m": 0.040 * u.dex,
    "n_m": 0.044 * u.dex,
}

#: Names of the g-band S/N column in LAMOST tables (VizieR's LAMOST DR5 uses ``snrg``).
SNR_ALIASES = ("snrg", "S/Ng", "SNRG", "snr_g", "SNR_G", "SNg")


def measurements():
    """The measurements of ``tools/lamost_slam_report.py``, shipped with the package (dict).

    ``zero_points``: APOGEE DR14 (= DR15) minus DR17 labels of the APOKASC giants;
    ``zero_point_effect`` and ``sensitivity``: the median mass and age change of the
    packaged giants model under those offsets and under assumed ones; ``degraded``:
    out-of-fold errors and interval coverage with SLAM's noise by S/N.
    """
    import json
    from importlib.resources import files

    return json.loads(files("stellar_ml_ages").joinpath("data/lamost_slam.json").read_text())


def zero_point_note(model="giants"):
    """One paragraph on what is known of SLAM's DR15 -> DR17 zero point (for ``meta``).

    The mass and age changes are those of ``model`` (``"giants"`` or ``"giants-slam"``,
    or a model of that name), measured out of fold.

    Examples
    --------
    >>> from stellar_ml_ages.slam import zero_point_note
    >>> "DR17" in zero_point_note("giants-slam")
    True
    """
    found = measurements()
    name = getattr(model, "name", model)
    suffix = "_giants_slam" if str(name).startswith("giants-slam") else ""
    offsets = found["zero_points"]["dr14_minus_dr17"]
    effect = found[f"zero_point_effect{suffix}"]["all three"]
    assumption = found[f"sensitivity{suffix}"]["[Fe/H] - [M/H] = +0.05 dex"]
    which = "giants-slam" if suffix else "giants"
    return (
        "SLAM labels are on the APOGEE DR15 scale (DR15 re-released DR14's ASPCAP values). "
        f"DR14 - DR17 on {offsets['teff']['n']} APOKASC giants: Teff "
        f"{offsets['teff']['median']:+.0f} K, [Fe/H] {offsets['fe_h']['median']:+.3f} dex, "
        f"[alpha/Fe] {offsets['alpha_m']['median']:+.3f} dex; together they change masses by "
        f"{100 * effect['mass_median_change']:+.1f}% and ages by "
        f"{100 * effect['age_median_change']:+.1f}% (median, {which} model). Not measured: "
        "log g, [C/M], [N/M] and DR17's [Fe/H] - [M/H]; [Fe/H] is taken as [M/H] (a 0.05 dex "
        f"difference moves masses by {100 * assumption['mass_median_change']:+.1f}%, ages by "
        f"{100 * assumption['age_median_change']:+.1f}%). Offsets not applied; see the "
        "LAMOST page of the documentation.")


def slam_scatter(label, snr):
    """SLAM's 1-sigma scatter of one label at g-band S/N ``snr`` (canonical unit, float).

    ``SCATTER_AT_REFERENCE[label] * max(1, 100 / snr)``; NaN or non-positive S/N
    gives the reference scatter (the least the label can be off by).

    Examples
    --------
    >>> from stellar_ml_ages.slam import slam_scatter
    >>> float(slam_scatter("teff", 50.0)), float(slam_scatter("n_m", 200.0))
    (98.0, 0.106)
    """
    reference = SCATTER_AT_REFERENCE[label].value
    snr = np.asarray(snr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(np.isfinite(snr) & (snr > 0), np.maximum(1.0, REFERENCE_SNR / snr), 1.0)
    return reference * factor


def slam_error(label, snr):
    """SLAM's 1-sigma error of one label against the noise-free label, at S/N ``snr``.

    ``sqrt(slam_scatter(label, snr)**2 - APOGEE_LABEL_NOISE[label]**2)``: the published
    scatter is SLAM minus APOGEE, whose own noise is taken out.

    Examples
    --------
    >>> from stellar_ml_ages.slam import slam_error
    >>> round(float(slam_error("teff", 100.0)), 1), round(float(slam_error("teff", 50.0)), 1)
    (40.2, 93.9)
    """
    apogee = APOGEE_LABEL_NOISE[label].value
    return np.sqrt(np.maximum(slam_scatter(label, snr) ** 2 - apogee**2, 0.0))


def noise_to_add(label, snr, full_scatter=False):
    """Noise that puts an APOGEE label as far from the truth as SLAM's, at S/N ``snr``.

    An APOGEE label already carries ``APOGEE_LABEL_NOISE``: it needs
    ``sqrt(slam_error**2 - apogee**2)`` more (or, with ``full_scatter``, taking the
    whole published scatter as SLAM's error: the upper bound). Used to train
    ``giants-slam`` and to test it.

    Examples
    --------
    >>> from stellar_ml_ages.slam import noise_to_add
    >>> round(noise_to_add("n_m", 50.0), 3)
    0.203
    """
    apogee = APOGEE_LABEL_NOISE[label].value
    target = slam_scatter(label, snr) if full_scatter else float(slam_error(label, snr))
    return float(np.sqrt(max(target**2 - apogee**2, 0.0)))


def _snr_column(column, name):
    """An S/N column as float64 ratios (NaN where masked); a clear error for anything else."""
    unit = getattr(column, "unit", None)
    if unit is not None and u.Unit(unit) != u.dimensionless_unscaled:
        raise ColumnValueError(
            f"S/N column {name!r} has the unit {u.Unit(unit).to_string()!r}; SLAM's errors "
            "scale with the plain signal-to-noise ratio: give it without a unit (a value "
            "in dB is 10 or 20 log10 of the ratio, depending on convention)")
    kind = np.asarray(column).dtype.kind
    if kind not in "iuf":
        what = "boolean" if kind == "b" else "not numeric"
        raise ColumnValueError(f"S/N column {name!r} is {what} (dtype {column.dtype}); "
                               "pass snr='<column>' naming the g-band S/N, or a number")
    return np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)


def _snr_values(table, snr, missing_snr):
    """Per-row S/N and where it came from; rows without a usable one get the reference."""
    if isinstance(snr, bool | np.bool_):
        raise ColumnValueError(f"snr={snr!r}: give the g-band S/N column's name or a number")
    if snr is not None and not isinstance(snr, str):
        values = np.broadcast_to(np.asarray(u.Quantity(snr).to_value(u.dimensionless_unscaled),
                                            dtype=np.float64), (len(table),))
        source = f"{float(np.median(values)):g} (given)"
    else:
        names = (snr,) if isinstance(snr, str) else SNR_ALIASES
        lowered = {name.lower(): name for name in table.colnames}
        column = next((name if name in table.colnames else lowered[name.lower()]
                       for name in names
                       if name in table.colnames or name.lower() in lowered), None)
        if column is None:
            message = (f"no g-band S/N column (tried {', '.join(names)}); SLAM's noise "
                       "depends on it: pass snr='<column>' or a number")
            if missing_snr == "raise":
                raise MissingColumnError(message)
            warnings.warn(f"{message}. SLAM's scatter at S/N {REFERENCE_SNR:g} is assumed for "
                          f"all {len(table)} rows, which understates the errors of fainter "
                          "stars", LabelNoiseWarning, stacklevel=3)
            return np.full(len(table), REFERENCE_SNR), f"{REFERENCE_SNR:g} (assumed: no column)"
        values = _snr_column(table[column], column)
        source = column
    unusable = ~(np.isfinite(values) & (values > 0))
    if unusable.any():
        warnings.warn(f"{int(unusable.sum())} of {len(table)} rows have no usable S/N "
                      f"({source}: masked, NaN or not positive); SLAM's scatter at S/N "
                      f"{REFERENCE_SNR:g} is assumed for them, which understates the errors "
                      "of fainter stars", LabelNoiseWarning, stacklevel=3)
    return values, source


def _own_errors(table, source, label):
    """The star's own errors of one label, in its canonical unit (NaN where none)."""
    if source is None:
        return np.full(len(table), np.nan)
    # Read as the pipeline reads errors: log g's may be in dex(cm / s2), a column
    # without a unit is in the canonical one.
    return _read_error(table, source, get_feature(label), [])


def slam_error_columns(table, mapping=None, keep_own_columns=False):
    """Where `slam_uncertainties` writes each SLAM label's error: ``{label: column}``.

    A label without an error column gets ``<COLUMN>_ERR`` (allStar-style names) or
    ``e_<column>``; one with its own error column gets that column, or with
    ``keep_own_columns=True`` a new ``<error column>_slam`` beside it.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.slam import slam_error_columns
    >>> stars = Table(names=["Teff", "e_Teff", "logg", "[M/H]", "[alpha/M]", "[C/M]", "[N/M]"])
    >>> columns = slam_error_columns(stars, keep_own_columns=True)
    >>> columns["teff"], columns["c_m"]
    ('e_Teff_slam', 'e_[C/M]')
    """
    return _error_column_names(*_slam_sources(table, mapping), keep_own_columns)


def _slam_sources(table, mapping):
    """SLAM's labels' sources and error sources, found in one reading of the names."""
    columns = ColumnResolution(table, mapping)
    resolved = columns.sources(SLAM_LABELS)
    return resolved, columns.error_sources(resolved)


def _error_column_names(resolved, errors, keep_own_columns):
    names = {}
    for label in SLAM_LABELS:
        source = errors[label]
        if isinstance(source, tuple):  # not a SLAM label column: its error is its own
            source = None
        if source is None:
            # The column the label is read from (a stand-in's own, not "X (as Y)").
            column = _column_sources(resolved[label])[0].column
            # Each survey's own convention: allStar's TEFF_ERR, VizieR's e_Teff.
            portable = column.replace("_", "").isalnum() and column.isupper()
            names[label] = f"{column}_ERR" if portable else f"e_{column}"
        else:
            names[label] = f"{source.column}_slam" if keep_own_columns else source.column
    return names


def slam_uncertainties(table, snr=None, mapping=None, missing_snr="raise",
                       keep_own_columns=False):
    """A copy of a SLAM table whose label uncertainties include SLAM's own error.

    For each SLAM label (Teff, log g, [M/H], [α/M], [C/M], [N/M]) the error column
    becomes the larger of the star's own uncertainty and `slam_error` at its S/N;
    a label without an error column gets one (``<COLUMN>_ERR`` for allStar-style
    names, else ``e_<column>``). With ``keep_own_columns=True`` the star's own error
    columns stay as they are and the combined errors go to new ``<column>_slam``
    columns (`slam_error_columns`; name them to `~stellar_ml_ages.add_mass_age` with
    ``mapping={"<label>_err": column}``, as the command line's ``--slam-errors``
    does). The caller's table is not changed; rows, order and masks are kept.

    Parameters
    ----------
    table : `~astropy.table.Table`
        LAMOST stars with SLAM labels (VizieR J/ApJS/246/9, the author's release, or
        a user's file): the column resolver finds ``Teff``, ``logg``, ``[M/H]``,
        ``[alpha/M]``, ``[C/M]``, ``[N/M]`` and their ``e_`` columns.
    snr : str, float or None
        The g-band S/N column name, or one value for every star; default: the first
        of ``SNR_ALIASES`` in the table.
    mapping : dict, optional
        ``{feature: column}`` as for `~stellar_ml_ages.add_mass_age`.
    missing_snr : {"raise", "warn"}
        Without an S/N column: raise, or assume the reference S/N with a warning.
    keep_own_columns : bool
        Write the combined errors to new columns instead of the star's own.

    Returns
    -------
    `~astropy.table.Table`
        With ``meta["MLSLAMER"]`` naming the error columns written and the rule.

    Raises
    ------
    MissingColumnError
        A SLAM label, or (with ``missing_snr="raise"``) the S/N column, is missing.

    Warns
    -----
    LabelNoiseWarning
        Rows without a usable S/N (masked, NaN, not positive), or no S/N column with
        ``missing_snr="warn"``: the reference S/N is assumed for them.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.slam import slam_uncertainties
    >>> stars = Table({"Teff": [4700.0, 4650.0] * u.K, "e_Teff": [60.0, 150.0] * u.K,
    ...                "logg": [2.5, 2.4], "[M/H]": [0.0, -0.2], "[alpha/M]": [0.05, 0.1],
    ...                "[C/M]": [0.0, -0.1], "[N/M]": [0.2, 0.3], "snrg": [100.0, 25.0]})
    >>> out = slam_uncertainties(stars)
    >>> out["e_Teff"].round(1).tolist(), out["e_[N/M]"].round(3).tolist()
    ([60.0, 194.0], [0.096, 0.422])
    """
    return _with_slam_errors(table, snr, mapping, missing_snr, keep_own_columns)[0]


def _with_slam_errors(table, snr=None, mapping=None, missing_snr="raise",
                     keep_own_columns=False):
    """`slam_uncertainties` and the ``{label: column}`` it wrote, from one reading of
    the table's names (what `slam_error_columns` would say, without a second)."""
    if missing_snr not in ("raise", "warn"):
        raise ValueError(f"missing_snr must be 'raise' or 'warn', not {missing_snr!r}")
    mapping = dict(mapping or {})
    resolved, errors = _slam_sources(table, mapping)
    snr_values, snr_source = _snr_values(table, snr, missing_snr)
    out = table.copy(copy_data=True)
    written = []
    names = _error_column_names(resolved, errors, keep_own_columns)
    for label in SLAM_LABELS:
        floor = slam_error(label, snr_values)
        source = errors[label]
        if isinstance(source, tuple):  # not a SLAM label column: its error is its own
            source = None
        name = names[label]
        own = _own_errors(table, source, label)
        combined = np.where(np.isfinite(own), np.fmax(own, floor), floor)
        out[name] = Column(combined, unit=u.K if label == "teff" else u.dex,
                           description="max(own error, SLAM error at the star's S/N)")
        written.append(name)
    # The same text for every block of a streamed file (FITS fixes its header).
    out.meta["MLSLAMER"] = (
        f"{', '.join(written)} = max(own error, SLAM error: sqrt(scatter**2 - APOGEE "
        f"noise**2), scatter at S/N_g {REFERENCE_SNR:g} x max(1, {REFERENCE_SNR:g}/S/N)); "
        f"S/N from {snr_source}")
    return out, names
