"""Find the table columns that hold each model feature.

This is the first step of the annotation pipeline: it looks only at column
*names*; units and values are checked afterwards by `stellar_ml_ages.units`.
Names are compared case-insensitively against the aliases in
`stellar_ml_ages.features`; an alias wins over a loose alias (APOGEE allStar's
calibrated ``TEFF`` over its uncalibrated ``TEFF_SPEC``), and the column passed
over is recorded; a feature with no column of its own may be derived
(``[Mg/Fe] = [Mg/H] - [Fe/H]``, SLAM's ``[C/N] = [C/M] - [N/M]``) or stood in for
(``[M/H]`` for ``[Fe/H]``), and such choices are recorded; an explicit ``mapping``
overrides everything.
"""

from dataclasses import dataclass, field

from .exceptions import AmbiguousColumnError, MissingColumnError
from .features import FEATURES, Relation, get_feature

__all__ = ["ColumnResolution", "ColumnSource", "DerivedSource", "SubstituteSource",
           "resolution_notes", "resolve_columns", "resolve_error_columns"]


@dataclass(frozen=True)
class ColumnSource:
    """A feature read directly from one column.

    ``passed_over`` names columns that also matched the feature, under a looser
    alias, and were not used (``TEFF_SPEC`` when ``TEFF`` is read).
    """

    column: str
    passed_over: tuple = field(default=(), compare=False)

    @property
    def columns(self):
        return (self.column,)

    def __str__(self):
        return self.column


@dataclass(frozen=True)
class DerivedSource:
    """A feature computed from other features' sources by a `~stellar_ml_ages.features.Relation`.

    ``parts`` holds one source per term of ``relation``, e.g. ``MG_H`` and ``FE_H``
    for ``[Mg/Fe] = [Mg/H] - [Fe/H]``.
    """

    relation: Relation
    parts: tuple

    @property
    def columns(self):
        return sum((part.columns for part in self.parts), ())

    def terms(self):
        """``(sign, feature name, source)`` of each term."""
        return tuple((sign, name, part)
                     for (sign, name), part in zip(self.relation.terms, self.parts, strict=True))

    def __str__(self):
        text = ""
        for i, (sign, _, part) in enumerate(self.terms()):
            if i == 0:
                text = str(part) if sign > 0 else f"-{part}"
            else:
                text += f" {'+' if sign > 0 else '-'} {part}"
        return text


@dataclass(frozen=True)
class SubstituteSource:
    """A feature read from another feature's source that stands in for it ([Mg/Fe] for [α/M]).

    ``feature`` is the canonical name of the stand-in, whose units and ranges apply.
    """

    source: object
    feature: str

    @property
    def columns(self):
        return self.source.columns

    def __str__(self):
        return f"{self.source} (as {get_feature(self.feature).label})"


def _names_by_lower(table):
    by_lower = {}
    for name in table.colnames:
        by_lower.setdefault(name.lower(), []).append(name)
    return by_lower


def _split_mapping(mapping):
    """``({feature: column}, {feature: error column})`` from a user's mapping.

    Keys are feature names, labels or aliases; ``"<feature>_err"`` keys name the
    feature's uncertainty column.
    """
    values, errors = {}, {}
    for key, column in (mapping or {}).items():
        if not isinstance(key, str):
            raise MissingColumnError(f"mapping key {key!r} must be a string")
        if key.lower().endswith("_err") and key not in FEATURES:
            try:
                errors[_feature_for_key(key[:-4])] = column
            except MissingColumnError:
                raise MissingColumnError(
                    f"mapping key {key!r} names the error column of {key[:-4]!r}, which is "
                    f"not a known feature; use one of {', '.join(sorted(FEATURES))} "
                    "followed by '_err'") from None
        else:
            values[_feature_for_key(key)] = column
    return values, errors


def _feature_for_key(key):
    """Map a mapping key (feature name, label or alias) to a feature name."""
    if key in FEATURES:
        return key
    lowered = key.lower()
    for feature in FEATURES.values():
        if lowered == feature.label.lower() or lowered in (a.lower() for a in feature.aliases):
            return feature.name
    raise MissingColumnError(
        f"mapping key {key!r} is not a known feature; use one of {', '.join(sorted(FEATURES))}"
    )


def _mapped_column(table, by_lower, feature, column):
    if column in table.colnames:
        return column
    matches = by_lower.get(str(column).lower(), [])
    if len(matches) == 1:
        return matches[0]
    raise MissingColumnError(
        f"mapping sends {feature.label} ({feature.name}) to column {column!r}, "
        f"which is not in the table (columns: {', '.join(table.colnames)})"
    )


def _columns_named(by_lower, aliases):
    found = []
    for alias in aliases:
        for name in by_lower.get(alias.lower(), []):
            if name not in found:
                found.append(name)
    return found


def _match_aliases(by_lower, feature):
    """The one column matching the feature's aliases, else its loose aliases."""
    loose = _columns_named(by_lower, feature.loose_aliases)
    for found in (_columns_named(by_lower, feature.aliases), loose):
        if len(found) > 1:
            raise AmbiguousColumnError(
                f"{feature.label} ({feature.name}) matches several columns: {', '.join(found)}; "
                f"choose one with mapping={{'{feature.name}': '<column>'}}"
            )
        if found:
            return ColumnSource(found[0], passed_over=tuple(n for n in loose if n != found[0]))
    return None


def _resolve_one(table, by_lower, feature, mapping, depth=0, seen=()):
    """A feature's source: its column, else (at the top level) a relation, else a stand-in.

    Terms of a relation are found by name or stand-in only, not by relations of
    their own, so derivations never chain; ``seen`` stops stand-in cycles.
    """
    if feature.name in mapping:
        return ColumnSource(_mapped_column(table, by_lower, feature, mapping[feature.name]))
    source = _match_aliases(by_lower, feature)
    if source is not None:
        return source
    if depth == 0:
        for relation in feature.derived_from:
            parts = [_resolve_one(table, by_lower, get_feature(name), mapping, depth + 1,
                                  (*seen, feature.name))
                     for name in relation.names]
            if all(parts):
                return DerivedSource(relation, tuple(parts))
    for stand_in in feature.substitutes:
        if stand_in in seen:
            continue
        source = _resolve_one(table, by_lower, get_feature(stand_in), mapping, depth,
                              (*seen, feature.name))
        if source is not None:
            return SubstituteSource(source, stand_in)
    return None


def _describe_aliases(feature):
    text = ", ".join(feature.aliases)
    for relation in feature.derived_from:
        first = get_feature(relation.names[0])
        text += f"; or derived as {relation} from {', '.join(first.aliases)}, ..."
    for stand_in in feature.substitutes:
        stand_in = get_feature(stand_in)
        text += f"; or {stand_in.label} in its place ({', '.join(stand_in.aliases)})"
    return text


class ColumnResolution:
    """Every feature's source in one table, each feature looked up once.

    One object per table (per call of `~stellar_ml_ages.add_mass_age`): model
    selection asks it for each candidate model's features, the annotation for the
    chosen model's, and a feature already looked up is not looked up again; a
    feature that is missing or ambiguous raises only when a model needs it.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Only its column names are read (anything with ``colnames`` will do).
    mapping : dict, optional
        As for `resolve_columns`; ``"<feature>_err"`` keys name error columns.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.columns import ColumnResolution
    >>> resolution = ColumnResolution(Table(names=["TEFF", "LOGG", "DNU"]))
    >>> [str(source) for source in resolution.sources(["teff", "logg"]).values()]
    ['TEFF', 'LOGG']
    >>> resolution.has(["teff", "c_fe"])
    False
    """

    def __init__(self, table, mapping=None):
        self.colnames = tuple(table.colnames)
        try:
            self.mapping, self.error_mapping = _split_mapping(mapping)
            self._mapping_error = None
        except MissingColumnError as error:
            # Raised where a feature is first asked for, as resolve_columns raises it.
            self.mapping, self.error_mapping, self._mapping_error = {}, {}, error
        self._by_lower = _names_by_lower(self)
        self._found = {}  # feature name -> source, None (missing) or the error found
        self._errors = {}

    def _lookup(self, name):
        if self._mapping_error is not None:
            raise MissingColumnError(str(self._mapping_error))
        if name not in self._found:
            try:
                self._found[name] = _resolve_one(self, self._by_lower, get_feature(name),
                                                 self.mapping)
            except (AmbiguousColumnError, MissingColumnError) as error:
                # Two matching columns, or a mapping to a column the table lacks:
                # an error only for a model that needs the feature.
                self._found[name] = error
        return self._found[name]

    def has(self, features):
        """Whether every feature has a source (neither missing nor ambiguous)."""
        try:
            found = [self._lookup(name) for name in features]
        except MissingColumnError:
            return False
        return all(source is not None and not isinstance(source, Exception) for source in found)

    def sources(self, features):
        """Feature name to `ColumnSource`, `DerivedSource` or `SubstituteSource`.

        Raises
        ------
        MissingColumnError
            Listing every feature that was not found and the aliases tried.
        AmbiguousColumnError
            When two columns (e.g. ``TEFF`` and ``Teff``) match one feature.
        """
        resolved, missing = {}, []
        for name in features:
            source = self._lookup(name)
            if isinstance(source, Exception):
                raise type(source)(str(source))
            if source is None:
                missing.append(get_feature(name))
            else:
                resolved[name] = source
        if missing:
            lines = "\n".join(f"  {f.label} ({f.name}): tried {_describe_aliases(f)}"
                              for f in missing)
            raise MissingColumnError(
                f"the table lacks {len(missing)} required input column(s):\n{lines}\n"
                "Rename the columns or pass mapping={'<feature>': '<column>'}."
            )
        return resolved

    def error_sources(self, resolved):
        """`resolve_error_columns` for ``resolved``, looked up once per feature."""
        if self._mapping_error is not None:
            raise MissingColumnError(str(self._mapping_error))
        missing = {name: source for name, source in resolved.items() if name not in self._errors}
        if missing:
            self._errors.update(_error_sources(self, self._by_lower, missing,
                                               self.error_mapping))
        return {name: self._errors[name] for name in resolved}


def resolve_columns(table, features, mapping=None):
    """Find the column (or derivation) holding each feature.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Any astropy table; only its column names are read.
    features : sequence of str
        Canonical feature names, e.g. ``["teff", "logg", "c_fe"]``.
    mapping : dict, optional
        ``{feature: column}`` overrides. Keys may be canonical names, labels
        (``"[C/Fe]"``) or aliases; values are column names of ``table``.

    Returns
    -------
    dict
        Feature name to `ColumnSource`, `DerivedSource` or `SubstituteSource`, in
        the order of ``features``.

    Raises
    ------
    MissingColumnError
        Listing every feature that was not found and the aliases tried.
    AmbiguousColumnError
        When two columns (e.g. ``TEFF`` and ``Teff``) match one feature.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.columns import resolve_columns
    >>> t = Table(names=["Teff", "MG_H", "FE_H"])
    >>> resolved = resolve_columns(t, ["teff", "mg_fe"])
    >>> str(resolved["teff"]), str(resolved["mg_fe"])
    ('Teff', 'MG_H - FE_H')
    """
    return ColumnResolution(table, mapping).sources(features)


def _column_sources(source):
    if isinstance(source, SubstituteSource):
        return _column_sources(source.source)
    if isinstance(source, DerivedSource):
        return [column for part in source.parts for column in _column_sources(part)]
    return [source]


def _stand_ins(name, source):
    """(feature, stand-in feature, column text) of every stand-in inside a source."""
    if isinstance(source, SubstituteSource):
        return [(name, source.feature, str(source.source))]
    if isinstance(source, DerivedSource):
        return [found for _, part_name, part in source.terms()
                for found in _stand_ins(part_name, part)]
    return []


def resolution_notes(resolved):
    """Sentences on the choices `resolve_columns` made.

    Columns passed over for a better one, relations other than a feature's usual
    one (SLAM's ``[C/N] = [C/M] - [N/M]``), and stand-ins with what they assume.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.columns import resolution_notes, resolve_columns
    >>> allstar = Table(names=["TEFF", "TEFF_SPEC", "LOGG"])
    >>> resolution_notes(resolve_columns(allstar, ["teff", "logg"]))
    ['Teff: TEFF used, TEFF_SPEC passed over']
    >>> slam = Table(names=["[C/M]", "[N/M]", "[M/H]"])
    >>> for note in resolution_notes(resolve_columns(slam, ["c_n", "n_fe"])):
    ...     print(note)
    [C/N] = [C/M] - [N/M] ([C/M] - [N/M])
    [N/Fe] = [N/M] + [M/H] - [Fe/H] ([N/M] + [M/H] - [M/H] (as [M/H]))
    [Fe/H] taken as [M/H] ([M/H]), assumed equal
    """
    notes, stand_ins = [], []
    for name, source in resolved.items():
        for part in _column_sources(source):
            if part.passed_over:
                notes.append(f"{get_feature(name).label}: {part.column} used, "
                             f"{', '.join(part.passed_over)} passed over")
        feature = get_feature(name)
        # The usual derivation (C_FE - N_FE) shows in MLINPUTS; another one is a choice.
        if isinstance(source, DerivedSource) and source.relation != feature.derived_from[0]:
            notes.append(f"{feature.label} = {source.relation} ({source})")
        stand_ins += _stand_ins(name, source)
    for name, stand_in, column in dict.fromkeys(stand_ins):
        notes.append(f"{get_feature(name).label} taken as {get_feature(stand_in).label} "
                     f"({column}), assumed equal")
    return notes


def _error_column(by_lower, candidates):
    for candidate in candidates:
        names = by_lower.get(candidate.lower(), [])
        if names:
            return ColumnSource(names[0])
    return None


def resolve_error_columns(table, resolved, mapping=None):
    """Find the 1-sigma uncertainty column of each resolved feature, if any.

    The error of ``COL`` is looked for as ``COL_ERR``, ``e_COL``, ``S_COL`` and
    ``COL_error`` (case-insensitively), then under the feature's other aliases.
    A derived feature gets a tuple with each term's error source (None for a
    term without one); its error is the quadrature sum over the columns that do
    not cancel (`~stellar_ml_ages.units.feature_matrix`).

    Parameters
    ----------
    table : `~astropy.table.Table`
    resolved : dict
        The output of `resolve_columns`.
    mapping : dict, optional
        ``{"<feature>_err": column}`` overrides.

    Returns
    -------
    dict
        Feature name to a source, or to `None` where no error column exists.

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.columns import resolve_columns, resolve_error_columns
    >>> stars = demo_table()
    >>> stars["TEFF_ERR"] = 50.0 * stars["TEFF"].unit
    >>> resolved = resolve_columns(stars, ["teff", "logg"])
    >>> errors = resolve_error_columns(stars, resolved)
    >>> str(errors["teff"]), errors["logg"]
    ('TEFF_ERR', None)
    """
    return _error_sources(table, _names_by_lower(table), resolved, _split_mapping(mapping)[1])


def _error_sources(table, by_lower, resolved, error_mapping):
    """`resolve_error_columns` on a table's lower-cased names and a split mapping."""

    def lookup(source, feature):
        if isinstance(source, SubstituteSource):
            return lookup(source.source, get_feature(source.feature))
        if isinstance(source, DerivedSource):
            # Each term's own error, None where it has none: a term whose column
            # cancels ([M/H] - [M/H]) needs none, and another feature may supply it.
            parts = [lookup(part, get_feature(name)) for _, name, part in source.terms()]
            return tuple(parts) if any(part is not None for part in parts) else None
        if feature.name in error_mapping:
            # "<label>_err" names the error of that label wherever it is read, also as
            # a term of a derived feature ([C/M] in [C/N] = [C/M] - [N/M]).
            return ColumnSource(_mapped_column(table, by_lower, feature,
                                               error_mapping[feature.name]))
        candidates = [
            f"{source.column}_ERR", f"e_{source.column}", f"S_{source.column}",
            f"{source.column}_error", *feature.error_aliases,
        ]
        return _error_column(by_lower, candidates)

    errors = {}
    for name, source in resolved.items():
        if name in error_mapping:
            errors[name] = ColumnSource(
                _mapped_column(table, by_lower, get_feature(name), error_mapping[name])
            )
        else:
            errors[name] = lookup(source, get_feature(name))
    return errors
