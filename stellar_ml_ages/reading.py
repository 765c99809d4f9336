"""What a table is, read once: the first step of the annotation pipeline.

`read_table` looks at a table's column names and ``meta`` (never its values) and
records, once per call of `~stellar_ml_ages.add_mass_age`, everything the later
steps ask about:

- the survey its labels come from, with the evidence (`stellar_ml_ages.labelsource`),
- the column, derivation or stand-in of every feature a model asks for, and their
  error columns (`stellar_ml_ages.columns`, each feature looked up once),
- the evolutionary-state column (`stellar_ml_ages.evstate`),
- the survey's quality-flag columns (`stellar_ml_ages.quality`),
- the existing columns an output name would clash with, compared without case as
  FITS and VOTable readers compare them.

Model selection, the label-source guard, error propagation, the quality flags and
the output columns all use this one reading; the blocks of a streamed file or the
pages of a catalog share the reading of the first (they have its columns and meta).
"""

from dataclasses import dataclass, field

from .columns import ColumnResolution
from .evstate import resolve_state_column
from .exceptions import ColumnError
from .labelsource import LabelSource, table_label_source
from .quality import SurveyFlags

__all__ = ["TableReading", "read_table", "read_table_for_call"]


@dataclass(frozen=True)
class TableReading:
    """The result of `read_table`.

    Attributes
    ----------
    colnames : tuple of str
        The table's column names.
    label_source : `~stellar_ml_ages.labelsource.LabelSource` or None
        The survey the labels come from and what said so, None if nothing does.
    state_column : str or None
        The evolutionary-state column used for the interval calibration.
    columns : `~stellar_ml_ages.columns.ColumnResolution`
        Every feature's source, looked up on first request.
    """

    colnames: tuple
    label_source: LabelSource | None
    #: The state column's name, None, or the error naming it (raised when asked:
    #: a table whose state column is ambiguous can still choose a model).
    _state: object
    columns: ColumnResolution
    _flags: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def state_column(self):
        """The evolutionary-state column used for the interval calibration, or None.

        Raises
        ------
        MissingColumnError, AmbiguousColumnError
            As `~stellar_ml_ages.evstate.resolve_state_column`, when first asked.
        """
        if isinstance(self._state, Exception):
            raise type(self._state)(str(self._state))
        return self._state

    def column_difference(self, table):
        """How ``table``'s column names differ from the ones read, or None.

        The blocks of a file and the pages of a catalog are annotated as their first
        was read: each must have its columns, in its order.
        """
        columns = tuple(table.colnames)
        if columns == self.colnames:
            return None
        missing = [name for name in self.colnames if name not in columns]
        extra = [name for name in columns if name not in self.colnames]
        differences = ([f"without {', '.join(missing)}"] if missing else []) + (
            [f"with {', '.join(extra)}"] if extra else [])
        return "; ".join(differences) or "in another order"

    def sources(self, features):
        """Feature name to its source (see `~stellar_ml_ages.columns.resolve_columns`)."""
        return self.columns.sources(features)

    def error_sources(self, resolved):
        """Each resolved feature's error source, or None (see `~stellar_ml_ages.columns.resolve_error_columns`)."""  # noqa: E501
        return self.columns.error_sources(resolved)

    def survey_flags(self, input_columns):
        """The survey quality flags that apply to these input columns."""
        key = tuple(dict.fromkeys(input_columns))
        if key not in self._flags:
            self._flags[key] = SurveyFlags(self, key)
        return self._flags[key]

    def same_name(self, name):
        """The table's columns that ``name`` would clash with (compared without case)."""
        return [column for column in self.colnames if column.lower() == name.lower()]


def read_table(table, mapping=None, state_column=None):
    """Read what a table is, from its column names and meta.

    Parameters
    ----------
    table : `~astropy.table.Table`
    mapping : dict, optional
        ``{feature: column}`` overrides; ``"<feature>_err"`` keys name error columns.
    state_column : str, False or None
        As for `~stellar_ml_ages.add_mass_age`.

    Returns
    -------
    TableReading

    Nothing is raised here: a mapping key that is not a feature, a ``state_column``
    the table lacks or two columns that could hold the state raise their
    `~stellar_ml_ages.MissingColumnError` or `~stellar_ml_ages.AmbiguousColumnError`
    when a later step asks for what they spoil, so that a call's checks come in the
    order they always came.

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.reading import read_table
    >>> stars = demo_table()
    >>> stars.meta["LABELSRC"] = "APOGEE DR17"
    >>> reading = read_table(stars)
    >>> reading.label_source.scale, reading.state_column
    ('APOGEE', None)
    >>> str(reading.sources(["teff"])["teff"])
    'TEFF'
    """
    try:
        state = resolve_state_column(table, state_column)
    except ColumnError as error:
        state = error
    return TableReading(colnames=tuple(table.colnames), label_source=table_label_source(table),
                        _state=state, columns=ColumnResolution(table, mapping))


def read_table_for_call(table, options):
    """`read_table` with the column options of an `~stellar_ml_ages.add_mass_age` call.

    ``options`` is the call's keyword arguments; only ``mapping`` and
    ``state_column`` are read. For the callers that pass those options on
    (`~stellar_ml_ages.predictive_distribution`, streamed blocks, catalog pages).
    """
    return read_table(table, options.get("mapping"), options.get("state_column"))
