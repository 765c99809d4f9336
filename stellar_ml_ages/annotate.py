"""`add_mass_age`: the annotation pipeline.

Data flow one way, each step in its own module:

1. resolve columns (`stellar_ml_ages.columns`),
2. check units and read values (`stellar_ml_ages.units`),
3. applicability: invalid inputs, training range, convex hull (`stellar_ml_ages.model`),
4. predict (`stellar_ml_ages.forest` through the model),
5. annotate: output columns, flags and provenance (this module).
"""

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from . import __version__
from .columns import resolve_columns, resolve_error_columns
from .config import conf
from .evstate import normalize_states, resolve_state_column
from .exceptions import ExistingColumnError
from .flags import FLAG_DTYPE, MassAgeFlag, edge_flags, flag_description
from .registry import get_model, select_model
from .units import feature_matrix

__all__ = ["OUTPUT_COLUMNS", "add_mass_age"]

_TARGET_META = {
    "mass": {"ucd": "phys.mass", "what": "Stellar mass"},
    "age": {"ucd": "time.age", "what": "Stellar age"},
}
_QUANTILES = {"_p16": 0.16, "_p84": 0.84}

#: Every column `add_mass_age` may write.
OUTPUT_COLUMNS = ("mass", "mass_p16", "mass_p84", "age", "age_p16", "age_p84",
                  "in_hull", "mass_age_flag")


def _output_names(model):
    names = []
    for target in model.target_names:
        names += [target, *(target + suffix for suffix in _QUANTILES)]
    return [*names, "in_hull", "mass_age_flag"]


def _check_existing(table, names, overwrite):
    clash = [name for name in names if name in table.colnames]
    if clash and not overwrite:
        raise ExistingColumnError(
            f"the table already has column(s) {', '.join(clash)}; pass overwrite=True to "
            "replace them, or rename them first"
        )


def _set(flags, rows, flag):
    flags[rows] |= np.asarray(int(flag), dtype=flags.dtype)


def _evaluate(table, model, mapping, allow_extrapolation, propagate_errors, n_draws, seed,
              state_column=None):
    """Steps 1-4 for one block of rows: arrays of predictions, flags and hull membership."""
    resolved = resolve_columns(table, model.feature_names, mapping)
    errors = resolve_error_columns(table, resolved, mapping) if propagate_errors else None
    features = feature_matrix(table, resolved, errors)
    states = None if state_column is None else normalize_states(table[state_column])

    flags = np.zeros(len(table), dtype=FLAG_DTYPE)
    _set(flags, features.missing, MassAgeFlag.MISSING_INPUT)
    _set(flags, features.invalid, MassAgeFlag.INVALID_INPUT)
    usable = ~(features.missing | features.invalid)
    in_range = np.zeros(len(table), dtype=bool)
    in_range[usable] = model.in_range(features.values[usable])
    in_hull = np.zeros(len(table), dtype=bool)
    # The hull lies inside the training box, so only in-range rows need the facet test.
    in_hull[in_range] = model.in_hull(features.values[in_range])
    _set(flags, usable & ~in_range, MassAgeFlag.OUTSIDE_RANGE)
    _set(flags, usable & ~in_hull, MassAgeFlag.OUTSIDE_HULL)

    predicted = usable if allow_extrapolation else in_hull
    _set(flags, predicted & ~in_hull, MassAgeFlag.EXTRAPOLATED)
    row_errors = None if errors is None else features.input_errors(predicted)
    predictions = model.predict(
        features.values[predicted], quantiles=tuple(_QUANTILES.values()),
        feature_errors=row_errors, n_draws=n_draws, seed=seed,
        states=None if states is None else states[predicted],
    )
    rows = np.flatnonzero(predicted)
    for target, result in predictions.items():
        calibrated = model.target(target).get("calibrated_range")
        if calibrated is None or target not in ("mass", "age"):
            continue  # edge bits exist for mass and age only
        low_bit, high_bit = edge_flags(target)
        _set(flags, rows[result["value"] < calibrated[0]], low_bit)
        _set(flags, rows[result["value"] > calibrated[1]], high_bit)
    return predictions, predicted, flags, in_hull, usable, features.sources


def _masked(values, predicted, n_rows):
    full = np.zeros(n_rows, dtype=np.float64)
    full[predicted] = values
    return full, ~predicted


def add_mass_age(table, model=None, *, copy=True, mapping=None, overwrite=False,
                 allow_extrapolation=False, propagate_errors=False, n_draws=32, seed=0,
                 progress=False, state_column=None):
    """Add machine-learned stellar mass and age, with uncertainties, to a table.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~astropy.table.QTable`
        One row per star, with the model's input columns (found by name through
        aliases, case-insensitively; see `stellar_ml_ages.features`).
    model : str, path-like, `~stellar_ml_ages.model.MassAgeModel` or None
        ``"giants"`` (mass of RGB and red-clump giants), ``"red-clump"`` (mass
        and age of red-clump stars, needs Δν), a name from `list_models`, or a
        model card path. `None` takes the first packaged model whose inputs the
        table has, from the most general.
    copy : bool
        If True (default) the input table is left untouched and an annotated
        copy is returned; if False, columns are added to ``table`` in place and
        it is returned.
    mapping : dict, optional
        ``{feature: column}`` overrides, e.g. ``{"c_fe": "A3_C_Fe"}``; keys
        ``"<feature>_err"`` name uncertainty columns.
    overwrite : bool
        Replace output columns that already exist instead of raising.
    allow_extrapolation : bool
        Also predict for stars outside the training hull or range (never for
        missing or invalid inputs); such rows get the ``EXTRAPOLATED`` flag.
    propagate_errors : bool
        Add the spread caused by the inputs' uncertainties (``*_ERR``, ``e_*``
        columns) by Monte Carlo, ``n_draws`` draws with random ``seed``. Only the
        part of each error beyond the noise the training labels already had (the
        model card's ``training_noise``) is added: the calibrated intervals already
        include that much, so errors typical of APOGEE DR17 change nothing.
    progress : bool
        Show a progress bar over blocks of ``stellar_ml_ages.conf.chunk_size`` rows.
    state_column : str, False or None
        Column with each star's evolutionary state (``RGB``/``RC``, or the APOKASC
        codes 1/2), used only to pick the interval calibration of the star's group.
        `None` (default) looks for a column named ``EVSTATE``, ``evol_state``, ...
        (see `stellar_ml_ages.evstate`); ``False`` ignores any. Rows without a
        known state get the pooled calibration, which holds for both groups on
        average.

    Returns
    -------
    `~astropy.table.Table`
        Same class as ``table``, rows in the same order, with columns ``mass``,
        ``mass_p16``, ``mass_p84`` (solMass), and, for models that predict it,
        ``age``, ``age_p16``, ``age_p84`` (Gyr); ``in_hull`` and the bitmask
        ``mass_age_flag`` (`~stellar_ml_ages.MassAgeFlag`). Predictions are
        masked where the flag says the model does not apply. ``meta`` records the
        model name, version, sha256 and citation.

    Raises
    ------
    MissingColumnError, AmbiguousColumnError
        A feature is not found, or found twice.
    ColumnUnitError, ColumnValueError
        A column's unit or content cannot express its feature.
    ExistingColumnError
        Output columns exist and ``overwrite`` is False.

    Notes
    -----
    ``mass`` is the forest's prediction (the mean over trees of the logarithm,
    exponentiated). ``*_p16`` and ``*_p84`` are the 16th and 84th percentiles of
    the calibrated predictive distribution: the trees' leaf distributions,
    rescaled so that on out-of-bag training stars 68% of true values fall
    between them. See the "Uncertainties and flags" page of the docs.

    Examples
    --------
    >>> from stellar_ml_ages import add_mass_age, demo_table
    >>> stars = demo_table()
    >>> annotated = add_mass_age(stars, model="giants")
    >>> annotated["mass"].unit
    Unit("solMass")
    >>> bool((annotated["mass_p16"] <= annotated["mass"]).all())
    True
    >>> "mass" in stars.colnames
    False
    """
    if not isinstance(table, Table):
        raise TypeError(
            f"add_mass_age needs an astropy Table or QTable, not {type(table).__name__}")
    model = select_model(table, mapping) if model is None else get_model(model)
    names = _output_names(model)
    _check_existing(table, names, overwrite)
    state_column = resolve_state_column(table, state_column)

    n_rows = len(table)
    step = max(int(conf.chunk_size), 1)
    starts = range(0, n_rows, step) if n_rows else [0]
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{model.name}", unit="block", total=len(starts))
    columns = {name: [] for name in names}
    masks = {name: [] for name in names}
    sources = {}
    for start in starts:
        block = table[start:start + step] if n_rows else table
        predictions, predicted, flags, in_hull, _usable, sources = _evaluate(
            block, model, mapping, allow_extrapolation, propagate_errors, n_draws, seed,
            state_column)
        for target, result in predictions.items():
            for name, key in ((target, "value"), *((target + s, q) for s, q in _QUANTILES.items())):
                values, mask = _masked(result[key], predicted, len(block))
                columns[name].append(values)
                masks[name].append(mask)
        columns["in_hull"].append(in_hull)
        # A plain bool: FITS cannot store a masked logical (it reads back as True).
        masks["in_hull"].append(np.zeros(len(block), dtype=bool))
        columns["mass_age_flag"].append(flags)
        masks["mass_age_flag"].append(np.zeros(len(block), dtype=bool))

    out = table.copy(copy_data=True) if copy else table
    for name in names:
        _add_column(out, name, np.concatenate(columns[name]), np.concatenate(masks[name]), model)
    out.meta.update(_provenance(model, sources, allow_extrapolation, propagate_errors,
                                state_column))
    return out


def _column_info(name, model):
    """Unit, UCD and description of an output column.

    Descriptions stay under 60 characters: longer ones are folded by astropy's FITS
    header serialisation and come back altered.
    """
    if name == "in_hull":
        return None, "meta.code", "Inside the convex hull of the model training set"
    if name == "mass_age_flag":
        return None, "meta.code.qual", "Bitmask of stellar_ml_ages.MassAgeFlag (see MLFLAGS)"
    target, _, percentile = name.partition("_p")
    meta = _TARGET_META.get(target, {"ucd": "", "what": target})
    unit = model.target_unit(target)
    if not percentile:
        return unit, meta["ucd"], f"{meta['what']}, random-forest estimate"
    # No UCD word exists for a percentile; the quantity's own UCD keeps TOPCAT's plots sensible.
    return unit, meta["ucd"], f"{meta['what']}, {percentile}th percentile of prediction"


def _add_column(out, name, values, mask, model):
    unit, ucd, description = _column_info(name, model)
    if mask.any() or values.dtype.kind == "f":
        column = MaskedColumn(values, mask=mask, name=name, unit=unit,
                              description=description, meta={"ucd": ucd})
    else:
        column = Column(values, name=name, unit=unit, description=description, meta={"ucd": ucd})
    if name in out.colnames:
        out.remove_column(name)
    out[name] = column
    out[name].info.description = description
    out[name].info.meta = {"ucd": ucd}


def _provenance(model, sources, allow_extrapolation, propagate_errors, state_column=None):
    card = model.card
    citation = "; ".join(card.get("citation", []))
    return {
        "MLMODEL": model.name,
        "MLMODVER": card.get("model_version", ""),
        "MLSHA256": card["arrays"].get("sha256", ""),
        "MLPKGVER": __version__,
        "MLCITE": citation,
        "MLINPUTS": ", ".join(f"{name}={source}" for name, source in sources.items()),
        "MLEXTRAP": bool(allow_extrapolation),
        "MLERRPRP": bool(propagate_errors),
        "MLSTATE": state_column or "none: pooled interval calibration",
        "MLFLAGS": flag_description(),
    }
