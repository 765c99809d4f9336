"""The surveys' own quality flags: which input rows a survey itself marks as bad.

Part of the applicability step of the annotation pipeline (after columns and
units, before prediction). A survey file often carries a label value *and* a
flag saying the value should not be used; without this step such values would
be used as if good. Rows a rule marks bad get
`~stellar_ml_ages.MassAgeFlag.SURVEY_FLAGGED` and no prediction;
``add_mass_age(..., survey_flags=False)`` ignores every rule.

Rules, by the columns a table has (names compared case-insensitively). The
bit sets are the surveys' own "bad" masks, not a choice of this package:

====================  =====================================================================
column                a row is bad when
====================  =====================================================================
``ASPCAPFLAG``        APOGEE DR17 ``APOGEE_ASPCAPFLAG`` (64-bit): a bit of the pipeline's
                      BAD mask is set, ``ASPCAPFLAG_BAD_BITS`` (``STAR_BAD`` 23,
                      ``NO_ASPCAP_RESULT`` 31, ``TEFF_BAD`` 16, ...). A text column
                      (``ASPCAPFLAGS``, names separated by commas) is read by name.
``STARFLAG``          APOGEE DR17 ``APOGEE_STARFLAG`` BAD mask, ``STARFLAG_BAD_BITS``
                      (``BAD_PIXELS``, ``VERY_BRIGHT_NEIGHBOR``, ``BAD_RV_COMBINATION``,
                      ``RV_FAIL``).
``<COL>_FLAG``        APOGEE DR17 element flag of an input column ``<COL>`` (``C_FE_FLAG``,
                      ``FE_H_FLAG``..., ``APOGEE_ELEMFLAG``): ``ELEMFLAG_BAD_BITS``
                      (``GRIDEDGE_BAD`` 0, ``OTHER_BAD`` 2, ``FERRE_FAIL`` 3, ``TEFF_CUT`` 6).
``flag_sp``           GALAH DR3 spectroscopic flag: not 0.
``flag_<col>``        GALAH DR3 flag of an input column (``flag_fe_h``, ``flag_Mg_fe``):
                      not 0.
``qflag_chi2``        LAMOST DR5 DD-Payne (Xiang et al. 2019) fit quality: not ``good``.
``flag_singlestar``   LAMOST DR5 DD-Payne single-star flag: not ``YES``.
====================  =====================================================================

Warning bits (``*_WARN``, and DR17's informational bits such as ``M_H_BAD``) never
mark a row bad. A masked flag value is read as "not flagged". Sources: the SDSS
DR17 APOGEE bitmask page (https://www.sdss4.org/dr17/irspec/apogee-bitmasks/) and
the DR17 pipeline's bit levels (``sdss/apogee``, ``utils/bitmask.py``); the GALAH
DR3 flag page (https://www.galah-survey.org/dr3/flags/); Xiang et al. 2019, ApJS
245, 34, for DD-Payne. In DR17 the pipeline already blanks ``TEFF``, ``LOGG`` and
``X_FE`` where these bits are set; other tables (joins, re-runs, older releases)
need the flags read.
"""

from dataclasses import dataclass, field

import numpy as np

from .columns import _names_by_lower
from .exceptions import ColumnValueError

__all__ = ["ASPCAPFLAG_BAD_BITS", "ELEMFLAG_BAD_BITS", "STARFLAG_BAD_BITS", "QualityCheck",
           "SurveyFlags", "survey_quality"]

#: APOGEE DR17 ``APOGEE_ASPCAPFLAG`` bits of the pipeline's BAD mask (level 1).
ASPCAPFLAG_BAD_BITS = {16: "TEFF_BAD", 17: "LOGG_BAD", 23: "STAR_BAD", 25: "COLORTE_BAD",
                       26: "ROTATION_BAD", 28: "SPEC_HOLE_BAD", 31: "NO_ASPCAP_RESULT",
                       32: "MISSING_APSTAR", 33: "NO_GRID", 34: "BAD_FRAC_LOWSNR",
                       35: "BAD_FRAC_BADPIX", 36: "FERRE_FAIL", 40: "PROBLEM_TARGET",
                       41: "MULTIPLE_SUSPECT"}

#: APOGEE DR17 ``APOGEE_STARFLAG`` bits of the BAD mask.
STARFLAG_BAD_BITS = {0: "BAD_PIXELS", 3: "VERY_BRIGHT_NEIGHBOR", 18: "BAD_RV_COMBINATION",
                     22: "RV_FAIL"}

#: APOGEE DR17 ``APOGEE_ELEMFLAG`` (per-element ``X_FE_FLAG``) bits that blank a value.
ELEMFLAG_BAD_BITS = {0: "GRIDEDGE_BAD", 2: "OTHER_BAD", 3: "FERRE_FAIL", 6: "TEFF_CUT"}

#: Text flags: (column, the value that means good), compared case-insensitively.
_GOOD_TEXT = (("qflag_chi2", "good"), ("flag_singlestar", "yes"))


@dataclass
class QualityCheck:
    """Which rows the survey's flags mark bad, and why.

    Attributes
    ----------
    bad : ndarray of bool
        One entry per row.
    counts : dict
        Rule description (``"ASPCAPFLAG STAR_BAD"``, ``"C_FE_FLAG"``) to the number of
        rows it marks bad (a row may count under several rules).
    used : list of str
        The flag columns read, with the bits tested, for the output's ``meta``.
    """

    bad: np.ndarray
    counts: dict = field(default_factory=dict)
    used: list = field(default_factory=list)


def _integer_flags(column, name):
    """int64 flag values (0 where masked) of an integer flag column."""
    data = np.ma.getdata(column)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if np.any(finite & (data != np.round(data))):
            raise ColumnValueError(f"flag column {name!r} holds non-integer values")
        data = np.where(finite, data, 0)
    elif data.dtype.kind not in "iub":
        raise ColumnValueError(
            f"flag column {name!r} has dtype {data.dtype}; a survey flag is an integer "
            "(bitmask); pass survey_flags=False to ignore the survey's flags")
    values = np.asarray(data, dtype=np.int64)
    mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else None
    if mask is not None:
        values = np.where(mask, 0, values)
    return values


def _named_flags(column):
    """Sets of flag names of a text flag column (``"STAR_BAD,TEFF_WARN"``)."""
    mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else np.zeros(len(column), bool)
    names = []
    for value, masked in zip(np.ma.getdata(column), mask, strict=True):
        text = "" if masked else (value.decode() if isinstance(value, bytes) else str(value))
        names.append({part for part in text.replace(",", " ").split() if part})
    return names


def _bits_set(table, name, bits):
    """{bit name: rows with that bit} of a bitmask (or flag-name text) column."""
    column = table[name]
    # VOTable text of variable length (TAP, SAMP) arrives as an object array.
    if np.ma.getdata(column).dtype.kind in "SUO":
        named = _named_flags(column)
        return {label: np.array([label in row for row in named], dtype=bool)
                for label in bits.values()}
    values = _integer_flags(column, name)
    return {label: (values >> bit) & 1 == 1 for bit, label in bits.items()}


class SurveyFlags:
    """A table's survey quality-flag columns and the rules they carry, found by name once.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Only its column names are read (anything with ``colnames`` will do).
    input_columns : sequence of str
        The columns the model's inputs are read from (their element flags apply).

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.quality import SurveyFlags
    >>> flags = SurveyFlags(Table(names=["TEFF", "C_FE", "ASPCAPFLAG", "C_FE_FLAG"]), ["C_FE"])
    >>> flags.used
    ['ASPCAPFLAG (BAD mask)', 'C_FE_FLAG (BAD mask)']
    """

    def __init__(self, table, input_columns):
        # The first column of each name, compared without case.
        names = {lower: found[0] for lower, found in _names_by_lower(table).items()}
        #: (kind, column, what): "bits" with {bit: name}, "good" with the good text
        #: value, "nonzero" with None.
        self.rules = []
        #: The flag columns read, with the bits tested, for the output's ``meta``.
        self.used = []
        for lower, bits in (("aspcapflag", ASPCAPFLAG_BAD_BITS), ("starflag", STARFLAG_BAD_BITS)):
            column = names.get(lower) or names.get(lower + "s")
            if column is not None:
                self.rules.append(("bits", column, bits))
                self.used.append(f"{column} (BAD mask)")
        for lower, good in _GOOD_TEXT:
            if lower in names:
                self.rules.append(("good", names[lower], good))
                self.used.append(f"{names[lower]} ({good!r} is good)")
        if "flag_sp" in names:
            self.rules.append(("nonzero", names["flag_sp"], None))
            self.used.append(f"{names['flag_sp']} (not 0)")
        for column in dict.fromkeys(input_columns):
            element_flag = names.get(f"{column.lower()}_flag")
            if element_flag is not None:
                self.rules.append(("bits", element_flag, ELEMFLAG_BAD_BITS))
                self.used.append(f"{element_flag} (BAD mask)")
            galah_flag = names.get(f"flag_{column.lower()}")
            if galah_flag is not None:
                self.rules.append(("nonzero", galah_flag, None))
                self.used.append(f"{galah_flag} (not 0)")

    def check(self, table):
        """The rows of ``table`` (these columns, any block of rows) the flags mark bad.

        Returns
        -------
        QualityCheck

        Raises
        ------
        ColumnValueError
            A flag column is neither integer nor text.
        """
        check = QualityCheck(np.zeros(len(table), dtype=bool), used=list(self.used))

        def record(rule, rows):
            check.bad |= rows
            if rows.any():
                check.counts[rule] = check.counts.get(rule, 0) + int(rows.sum())

        for kind, column, what in self.rules:
            if kind == "bits":
                for label, rows in _bits_set(table, column, what).items():
                    record(f"{column} {label}", rows)
            elif kind == "good":
                if np.ma.getdata(table[column]).dtype.kind not in "SUO":
                    raise ColumnValueError(
                        f"flag column {column!r} holds numbers; DD-Payne's {column.lower()} is "
                        f"text ({what!r} is good): pass survey_flags=False to ignore the flags")
                rows = np.array([bool(found) and found != {what} for found in
                                 ({part.lower() for part in row} for row in
                                  _named_flags(table[column]))], dtype=bool)
                record(f"{column} not {what!r}", rows)
            else:
                record(f"{column} != 0", _integer_flags(table[column], column) != 0)
        return check


def survey_quality(table, input_columns):
    """Rows the survey's own quality flags mark as bad.

    Parameters
    ----------
    table : `~astropy.table.Table`
    input_columns : sequence of str
        The columns the model's inputs are read from (a derived feature lists all
        of its columns), e.g. ``["TEFF", "LOGG", "C_FE", "N_FE"]``.

    Returns
    -------
    QualityCheck

    Raises
    ------
    ColumnValueError
        A flag column is neither integer nor text.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.quality import survey_quality
    >>> stars = Table({"TEFF": [4700.0, 4800.0], "C_FE": [0.1, 0.0],
    ...                "ASPCAPFLAG": [0, 2**23], "C_FE_FLAG": [1, 0]})
    >>> check = survey_quality(stars, ["TEFF", "C_FE"])
    >>> check.bad.tolist(), check.counts
    ([True, True], {'ASPCAPFLAG STAR_BAD': 1, 'C_FE_FLAG GRIDEDGE_BAD': 1})
    >>> check.used
    ['ASPCAPFLAG (BAD mask)', 'C_FE_FLAG (BAD mask)']
    """
    return SurveyFlags(table, input_columns).check(table)
