"""Evolutionary state (first-ascent red giant or red clump) from a user's column.

The models do not need the state as an input: they predict from spectroscopic
labels alone. Their *intervals* are calibrated separately for red-giant-branch
(RGB) and red-clump (RC) stars, so a table that carries a reliable state (from
asteroseismology, or a spectroscopic classification) gets the intervals of its
own group; rows without one get the pooled calibration, which holds for RGB and
RC stars on average.

The column is found by name (``STATE_ALIASES``, case-insensitively) or given
explicitly; its values are read as ``RGB``/``RC`` strings (with the APOKASC
``(S)`` suffixes and a few synonyms) or as the APOKASC codes 1 (RGB) and 2 (RC).
Anything else (masked, ``AMB``, ``-1``, ...) counts as unknown.
"""

import numpy as np

from .exceptions import AmbiguousColumnError, MissingColumnError

__all__ = ["STATE_ALIASES", "UNKNOWN_STATE", "normalize_states", "resolve_state_column"]

#: Column names searched for an evolutionary state (case-insensitive).
STATE_ALIASES = ("EVSTATE", "EV_STATE", "evol_state", "evolstate", "CONS_EVSTATES",
                 "evolutionary_state")

#: The value used for rows whose state is unknown.
UNKNOWN_STATE = ""

_RGB_WORDS = {"RGB", "RGB(S)", "1", "1.0", "RGB/AGB", "FIRST-ASCENT", "SHELL-H"}
_RC_WORDS = {"RC", "RC(S)", "2", "2.0", "CLUMP", "RED CLUMP", "HEB", "2CL", "RC/2CL", "CHEB"}


def resolve_state_column(table, state_column=None):
    """The name of the table's evolutionary-state column, or `None`.

    Parameters
    ----------
    table : `~astropy.table.Table`
    state_column : str, False or None
        A column name to use; ``False`` to ignore any state column; `None` to look
        for one of ``STATE_ALIASES``.

    Raises
    ------
    MissingColumnError
        If ``state_column`` names a column the table does not have.
    AmbiguousColumnError
        If two columns match the aliases.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.evstate import resolve_state_column
    >>> resolve_state_column(Table(names=["TEFF", "EVSTATE"]))
    'EVSTATE'
    >>> resolve_state_column(Table(names=["TEFF"])) is None
    True
    """
    if state_column is False:
        return None
    if state_column is not None:
        if state_column not in table.colnames:
            raise MissingColumnError(
                f"state_column {state_column!r} is not in the table "
                f"(columns: {', '.join(table.colnames)})")
        return state_column
    wanted = {alias.lower() for alias in STATE_ALIASES}
    found = [name for name in table.colnames if name.lower() in wanted]
    if len(found) > 1:
        raise AmbiguousColumnError(
            f"several columns could hold the evolutionary state: {', '.join(found)}; "
            "choose one with state_column='<column>' (or state_column=False)")
    return found[0] if found else None


def normalize_states(column):
    """``"RGB"``, ``"RC"`` or ``""`` (unknown) for every row of a state column.

    Examples
    --------
    >>> from stellar_ml_ages.evstate import normalize_states
    >>> normalize_states(["RGB", "rc(s)", 2, "AMB", 1]).tolist()
    ['RGB', 'RC', 'RC', '', 'RGB']
    """
    mask = np.ma.getmaskarray(column) if np.ndim(column) else np.zeros(0, dtype=bool)
    values = np.asarray(np.ma.getdata(column) if np.ma.isMaskedArray(column) else column)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    if values.dtype.kind == "f":
        # Only exact codes: 1.5 is not a state.
        whole = np.isfinite(values) & (values == np.round(values))
        values = np.where(whole, values, -1).astype(np.int64)
    text = np.char.upper(np.char.strip(values.astype(str)))
    states = np.full(len(text), UNKNOWN_STATE, dtype="<U3")
    states[np.isin(text, list(_RGB_WORDS))] = "RGB"
    states[np.isin(text, list(_RC_WORDS))] = "RC"
    states[mask] = UNKNOWN_STATE
    return states
