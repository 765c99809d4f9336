"""`add_mass_age`: the annotation pipeline.

Data flow one way, each step in its own module:

1. read what the table is, once (`stellar_ml_ages.reading`): its label source,
   the columns of every feature a model asks for (`stellar_ml_ages.columns`), the
   state column, the survey's quality-flag columns, the existing column names;
2. choose the model (`stellar_ml_ages.registry`, from that reading), and find
   its inputs in the reading;
3. check units and read values, block by block (`stellar_ml_ages.units`);
4. applicability: the label-source guard (`stellar_ml_ages.labelsource`, on the
   reading), the survey's own flags (`stellar_ml_ages.quality`), invalid inputs,
   training range and convex hull (`stellar_ml_ages.model`);
5. predict (`stellar_ml_ages.forest` through the model);
6. annotate: output columns, flags and provenance (this module), and one
   summary of the call (`stellar_ml_ages.diagnostics`).
"""

from dataclasses import dataclass, replace

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from . import __version__
from ._kernels import configured_threads
from .columns import resolution_notes
from .config import conf
from .diagnostics import RunSummary
from .evstate import normalize_states
from .exceptions import (
    ColumnValueError,
    ExistingColumnError,
    ModelError,
    OutputNameError,
    QuantileLevelError,
)
from .flags import FLAG_DTYPE, MassAgeFlag, edge_flags, flag_description
from .labelsource import (
    label_noise_problem,
    label_source_problem,
    mixed_source_problem,
    scale_note,
)
from .reading import read_table
from .registry import get_model, select_model
from .units import feature_matrix

__all__ = ["OUTPUT_COLUMNS", "add_mass_age", "affix_pattern", "calibration_grid", "quantile_levels",
           "quantile_suffix"]

_TARGET_META = {
    "mass": {"ucd": "phys.mass", "what": "Stellar mass"},
    "age": {"ucd": "time.age", "what": "Stellar age"},
}
_QUANTILES = {"_p16": 0.16, "_p84": 0.84}

#: The columns `add_mass_age` writes by default (``quantiles=`` adds one per extra
#: probability, named by `quantile_suffix`: ``mass_p2_5``, ...).
OUTPUT_COLUMNS = ("mass", "mass_p16", "mass_p84", "age", "age_p16", "age_p84",
                  "in_hull", "mass_age_flag")


def quantile_suffix(probability):
    """Column-name ending of a predictive quantile: ``_p16`` for 0.16, ``_p2_5`` for 0.025.

    Examples
    --------
    >>> from stellar_ml_ages.annotate import quantile_suffix
    >>> quantile_suffix(0.025), quantile_suffix(0.5), quantile_suffix(0.995)
    ('_p2_5', '_p50', '_p99_5')
    """
    return "_p" + f"{round(100 * float(probability), 6):g}".replace(".", "_")


def quantile_levels(model, quantiles=()):
    """Probabilities of every quantile column a call writes: 0.16, 0.84, then ``quantiles``.

    ``quantiles`` is a sequence of probabilities inside the model's calibrated
    range (the outermost levels of its calibration grid, 0.005 and 0.995 for the
    packaged models), or ``"all"`` for the whole calibration grid, which is enough
    to rebuild each row's predictive distribution from the table alone
    (`~stellar_ml_ages.distributions.predictive_distribution`).

    Returns
    -------
    dict
        ``{column-name ending: probability}``, ``_p16`` and ``_p84`` first, the
        others in increasing probability.

    Raises
    ------
    QuantileLevelError
        A level outside the calibrated range, not a number, or two levels that
        would share a column name.
    """
    grid = calibration_grid(model)
    if isinstance(quantiles, str):
        if quantiles != "all":
            raise QuantileLevelError(f"quantiles must be probabilities or 'all', not {quantiles!r}")
        quantiles = grid
    elif quantiles is None:
        quantiles = ()
    elif np.ndim(quantiles) == 0:
        quantiles = (quantiles,)
    levels = dict(_QUANTILES)
    extra = {}
    for value in quantiles:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise QuantileLevelError(
                f"quantile levels are probabilities between 0 and 1; got {value!r}")
        probability = float(value)
        if not grid[0] - 1e-12 <= probability <= grid[-1] + 1e-12:
            raise QuantileLevelError(
                f"quantile level {probability!r} is outside the range model "
                f"{model.name!r} is calibrated for ({grid[0]:g} to {grid[-1]:g}); levels are "
                "probabilities (0.025 for the 2.5th percentile)")
        ending = quantile_suffix(probability)
        known = levels.get(ending, extra.get(ending))
        if known is not None and abs(known - probability) > 1e-9:
            raise QuantileLevelError(f"quantile levels {known!r} and {probability!r} would share "
                                     f"the column ending {ending!r}")
        if ending not in levels:
            extra[ending] = probability
    levels.update(sorted(extra.items(), key=lambda item: item[1]))
    return levels


def _interval_kind(model, intervals, quantiles=()):
    """The kind of the quantile columns, checked against the model.

    ``quantiles="all"`` asks for the whole distribution, for stacking: the posterior,
    unless a kind is named."""
    available = model.interval_kinds
    if intervals is None:
        return "posterior" if isinstance(quantiles, str) else available[0]
    if intervals not in available:
        raise ModelError(
            f"intervals={intervals!r}: model {model.name!r} gives "
            f"{' or '.join(map(repr, available))} intervals (command line: --intervals); "
            "\"robust\" needs a card with a reference_prior (models of version 3.1 or later)")
    return intervals


def calibration_grid(model):
    """The probabilities at which ``model``'s predictive distribution is calibrated."""
    probability = []
    for target in model.target_names:
        calibration = model.target(target).get("calibration") or {}
        probability = calibration.get("probability", probability)
    if len(probability) < 2:
        return tuple(_QUANTILES.values())
    return tuple(float(p) for p in probability)


def _output_names(model, prefix="", suffix="", levels=None):
    """{base name: column name} of every output column, in writing order."""
    levels = _QUANTILES if levels is None else levels
    names = []
    for target in model.target_names:
        names += [target, *(target + ending for ending in levels)]
    names += ["in_hull", "mass_age_flag"]
    return {name: f"{prefix}{name}{suffix}" for name in names}


def _same_name(table, name):
    """The table's columns that ``name`` would clash with: FITS and VOTable readers do
    not tell ``MASS`` from ``mass``, so names are compared without case."""
    return [column for column in table.colnames if column.lower() == name.lower()]


def _check_existing(reading, names, overwrite):
    clash = [column for name in names for column in reading.same_name(name)]
    if clash and not overwrite:
        raise ExistingColumnError(
            f"the table already has column(s) {', '.join(clash)} (names compared without "
            "case, as FITS and VOTable readers compare them); pass prefix='...' or "
            "suffix='...' to write the new columns under other names, overwrite=True to "
            "replace them, or rename them first"
        )


def _stale_outputs(table, names, prefix, suffix):
    """Columns an earlier annotation with the same prefix and suffix wrote that this one
    will not: ``age*`` after a mass-only model, ``*_p2_5`` after a run with more
    quantiles. Left in place beside the new columns they would describe another run."""
    from .training.pipeline import CALIBRATION_PROBABILITIES

    levels = {*CALIBRATION_PROBABILITIES, *_QUANTILES.values(), *_recorded_levels(table.meta)}
    endings = ["", *(quantile_suffix(p) for p in sorted(levels) if 0 < p < 1)]
    written = {name.lower() for name in names}
    candidates = {f"{prefix}{target}{ending}{suffix}".lower()
                  for target in _TARGET_META for ending in endings}
    return [column for column in table.colnames
            if column.lower() in candidates and column.lower() not in written]


def _recorded_levels(meta):
    """The quantile levels an annotation recorded in ``MLQUANT`` (unreadable ones skipped)."""
    levels = []
    for text in str(meta.get("MLQUANT", "")).split(","):
        try:
            levels.append(float(text))
        except ValueError:
            continue
    return levels


def _check_affix(prefix, suffix):
    for what, text in (("prefix", prefix), ("suffix", suffix)):
        if not isinstance(text, str):
            raise TypeError(f"{what} must be a string, not {type(text).__name__}")
        if text and not all(ch.isalnum() or ch in "_-." for ch in text):
            raise OutputNameError(
                f"{what} {text!r} may hold only letters, digits, '_', '-' and '.': output "
                "column names must survive FITS, VOTable and ADQL")


def _set(flags, rows, flag):
    flags[rows] |= np.asarray(int(flag), dtype=flags.dtype)


@dataclass(frozen=True)
class _Inputs:
    """Where one call reads the chosen model's inputs, the same for every block of rows."""

    #: Feature name to its column, derivation or stand-in.
    resolved: dict
    #: Feature name to its error source (or None), when errors are propagated.
    errors: dict | None
    #: The survey's quality flags that apply, or None with ``survey_flags=False``.
    survey_flags: object
    state_column: str | None


def _input_columns(resolved):
    return [column for source in resolved.values() for column in source.columns]


def _inputs(reading, model, propagate_errors, survey_flags):
    """Step 2: where the chosen model's inputs are in the table that was read."""
    state_column = reading.state_column  # a bad state_column is named first, as always
    resolved = reading.sources(model.feature_names)
    return _Inputs(resolved, reading.error_sources(resolved) if propagate_errors else None,
                   reading.survey_flags(_input_columns(resolved)) if survey_flags else None,
                   state_column)


def _check_source(table, reading, model, propagate_errors, summary, survey_flags=True):
    """The label-source guard, on the reading (and on the first rows' error columns):
    its problems go to ``summary``."""
    resolved = reading.sources(model.feature_names)
    noise = label_noise_problem(reading, model, propagate_errors)
    if noise is None and not propagate_errors:
        noise = _error_column_problem(table, reading, model, survey_flags)
    for problem, where in ((label_source_problem(reading, model), summary.label_problems),
                           (mixed_source_problem(reading, _input_columns(resolved)),
                            summary.label_problems),
                           (noise, summary.noise_problems)):
        if problem:
            where.append(problem)


#: Rows on which unpropagated error columns are tried (the first ones of the table).
_NOISE_SAMPLE = 500
#: Error columns matter when propagating them widens the median interval this much.
_WIDER = 1.2


def _error_column_problem(table, reading, model, survey_flags=True):
    """The warning text when the table's own error columns, which nothing propagates,
    would widen its intervals noticeably, else None.

    Measured, not guessed from the errors' size: the first rows are predicted with and
    without their errors propagated, and the median widths compared (an error that
    matters for one label may not for another).
    """
    with_errors = _inputs(reading, model, True, survey_flags)
    if all(source is None for source in with_errors.errors.values()):
        return None
    sample = table[:_NOISE_SAMPLE]
    scratch = RunSummary(model)  # collects the sample's notes, so that nothing is warned
    kind = _interval_kind(model, None)
    without = _evaluate(sample, model, replace(with_errors, errors=None), False, 1, 0,
                        scratch, intervals=kind)
    propagated = _evaluate(sample, model, with_errors, False, 16, 0, scratch, intervals=kind)
    both = without.predicted & propagated.predicted  # an impossible error withholds a row
    if not both.any():
        return None

    def widths(block, target):
        width = np.full(len(sample), np.nan)
        result = block.predictions[target]
        width[block.predicted] = result[0.84] - result[0.16]
        return width[both]

    widening = {target: float(np.median(widths(propagated, target) / widths(without, target)))
                for target in model.target_names}
    if max(widening.values()) < _WIDER:
        return None
    columns = sorted({str(part) for source in with_errors.errors.values() if source is not None
                      for part in (source if isinstance(source, tuple) else (source,))
                      if part is not None})
    wider = ", ".join(f"{100 * (ratio - 1):.0f}% ({target})"
                      for target, ratio in widening.items())
    return (
        f"the table's error columns ({', '.join(columns)}) say its labels are noisier than "
        f"those model {model.name!r} was trained on, and no errors are propagated: "
        f"propagated, they widen the median 68% interval of its first {len(sample)} rows by "
        f"{wider}, so the intervals given hold the truth less often than 68%. Remedy: "
        "propagate_errors=True (only the part of each error beyond the training noise is "
        "added)")


def _evaluate(table, model, inputs, allow_extrapolation, n_draws, seed, summary=None,
              levels=None, intervals=None):
    """Steps 3-5 for one block of rows: arrays of predictions, flags and hull membership."""
    features = feature_matrix(table, inputs.resolved, inputs.errors, warn=summary is None)
    states = None if inputs.state_column is None else normalize_states(table[inputs.state_column])
    quality = None if inputs.survey_flags is None else inputs.survey_flags.check(table)

    flags = np.zeros(len(table), dtype=FLAG_DTYPE)
    _set(flags, features.missing, MassAgeFlag.MISSING_INPUT)
    _set(flags, features.invalid, MassAgeFlag.INVALID_INPUT)
    usable = ~(features.missing | features.invalid)
    if quality is not None:
        _set(flags, quality.bad, MassAgeFlag.SURVEY_FLAGGED)
        usable &= ~quality.bad
    in_range = np.zeros(len(table), dtype=bool)
    in_range[usable] = model.in_range(features.values[usable])
    in_hull = np.zeros(len(table), dtype=bool)
    # The hull lies inside the training box, so only in-range rows need the facet test.
    in_hull[in_range] = model.in_hull(features.values[in_range])
    _set(flags, usable & ~in_range, MassAgeFlag.OUTSIDE_RANGE)
    _set(flags, usable & ~in_hull, MassAgeFlag.OUTSIDE_HULL)

    predicted = usable if allow_extrapolation else in_hull  # the hull lies in usable
    _set(flags, predicted & ~in_hull, MassAgeFlag.EXTRAPOLATED)
    row_errors = None if inputs.errors is None else features.input_errors(predicted)
    if row_errors is not None:
        rows = np.flatnonzero(predicted)
        _set(flags, rows[model.widened_rows(features.values[predicted], row_errors)],
             MassAgeFlag.ERRORS_WIDENED)
    predictions = model.predict(
        features.values[predicted], quantiles=tuple((levels or _QUANTILES).values()),
        feature_errors=row_errors, n_draws=n_draws, seed=seed,
        states=None if states is None else states[predicted], intervals=intervals,
    )
    rows = np.flatnonzero(predicted)
    for target, result in predictions.items():
        calibrated = model.target(target).get("calibrated_range")
        if calibrated is None or target not in ("mass", "age"):
            continue  # edge bits exist for mass and age only
        low_bit, high_bit = edge_flags(target)
        _set(flags, rows[result["value"] < calibrated[0]], low_bit)
        _set(flags, rows[result["value"] > calibrated[1]], high_bit)
    if summary is not None:
        summary.add_block(flags, features, predicted, quality, states=states,
                          state_column=inputs.state_column)
    return _Block(predictions, predicted, flags, in_hull, features.sources)


@dataclass
class _Block:
    predictions: dict
    predicted: np.ndarray
    flags: np.ndarray
    in_hull: np.ndarray
    sources: dict


def _masked(values, predicted, n_rows):
    full = np.zeros(n_rows, dtype=np.float64)
    full[predicted] = values
    return full, ~predicted


def add_mass_age(table, model=None, *, copy=True, mapping=None, overwrite=False,
                 allow_extrapolation=False, propagate_errors=False, n_draws=32, seed=0,
                 progress=False, state_column=None, survey_flags=True, prefix="", suffix="",
                 quantiles=(), intervals=None):
    """Add machine-learned stellar mass and age, with uncertainties, to a table.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~astropy.table.QTable`
        One row per star, with the model's input columns (found by name through
        aliases, case-insensitively; see `stellar_ml_ages.features`). An APOGEE
        allStar table works as it is: its calibrated ``TEFF``/``LOGG`` are read, not
        ``TEFF_SPEC``/``LOGG_SPEC``.
    model : str, path-like, `~stellar_ml_ages.model.MassAgeModel` or None
        ``"giants"`` (mass and age of RGB and red-clump giants), ``"red-clump"``
        (red-clump stars), a name from `list_models` (packaged, or trained by the
        user into ``conf.user_model_dir``), or a model card path. `None` takes the
        first model whose inputs the table has, from the most general, preferring
        models trained on the table's own survey.
    copy : bool
        If True (default) the input table is left untouched and an annotated
        copy is returned; if False, columns are added to ``table`` in place and
        it is returned.
    mapping : dict, optional
        ``{feature: column}`` overrides, e.g. ``{"c_fe": "A3_C_Fe"}``; keys
        ``"<feature>_err"`` name uncertainty columns.
    overwrite : bool
        Replace output columns that already exist instead of raising; output
        columns of an earlier run (same prefix and suffix) that this run does not
        write, such as ``age*`` when the model now gives mass only, are removed.
    allow_extrapolation : bool
        Also predict for stars outside the training hull or range (never for
        missing, invalid or survey-flagged inputs); such rows get the
        ``EXTRAPOLATED`` flag.
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
    survey_flags : bool
        Honour the survey's own quality flags (APOGEE ``ASPCAPFLAG`` bad bits and
        ``X_FE_FLAG`` element flags, GALAH ``flag_sp``/``flag_x_fe``; see
        `stellar_ml_ages.quality`): flagged rows get ``SURVEY_FLAGGED`` and no
        prediction. False ignores them.
    prefix, suffix : str
        Added to every output column name (``prefix="ml_"`` writes ``ml_mass``,
        ``ml_mass_p16``, ..., ``ml_mass_age_flag``), so a table's own ``mass`` or
        ``age`` column is kept.
    quantiles : sequence of float or "all"
        Further quantiles of each row's calibrated predictive distribution to write
        beside ``*_p16`` and ``*_p84``, as probabilities: ``(0.025, 0.975)`` adds
        ``mass_p2_5``, ``mass_p97_5``, ``age_p2_5``, ``age_p97_5``. ``"all"`` writes
        the model's whole calibration grid (15 levels from 0.005 to 0.995), from
        which `~stellar_ml_ages.distributions.predictive_distribution` rebuilds each
        row's distribution without the model's inputs (``"all"`` gives every
        quantile column of the posterior unless ``intervals`` says otherwise).
        Levels must lie inside that grid's range.
    intervals : {"robust", "posterior"}, optional
        What the quantile columns describe (recorded as ``MLINTVL``). ``"robust"``
        (default, for models whose card allows it, except with ``quantiles="all"``):
        intervals that hold by true value as well as by prediction, at the ends
        of the range as in the middle, for RGB and clump stars alike (see Notes).
        ``"posterior"``: quantiles of the calibrated posterior under the training
        population's distribution of mass and age, what population stacking
        needs; its intervals hold for stars of a given predicted value but, by
        true value, rarely at the ends (the young and the massive RGB stars). The
        point estimate is the same for both.

    Returns
    -------
    `~astropy.table.Table`
        Same class as ``table``, rows in the same order, with columns ``mass``,
        ``mass_p16``, ``mass_p84`` (solMass), and, for models that predict it,
        ``age``, ``age_p16``, ``age_p84`` (Gyr); ``in_hull`` and the bitmask
        ``mass_age_flag`` (`~stellar_ml_ages.MassAgeFlag`), each with ``prefix``
        and ``suffix``. Predictions are masked where the flag says the model does
        not apply. ``meta`` records the model name, version, sha256, citation, the
        columns read (``MLINPUTS``), choices between matching columns, relations
        and stand-ins (``MLCHOICE``), the survey flags honoured (``MLQUAL``) and,
        for labels on the model's scale from another release (SLAM's LAMOST
        labels), what is known of the zero points (``MLSCALE``), and the probabilities
        of the quantile columns written (``MLQUANT``).

    Raises
    ------
    MissingColumnError, AmbiguousColumnError
        A feature is not found, or found twice.
    ColumnUnitError, ColumnValueError
        A column's unit or content cannot express its feature.
    ExistingColumnError
        Output columns exist and ``overwrite`` is False.

    Warns
    -----
    LabelSourceWarning
        The table says its labels come from another survey than the model's
        (see `stellar_ml_ages.labelsource`).
    FlaggedRowsWarning
        More than ``conf.flagged_warning_fraction`` of the rows got no prediction:
        counts per reason and the likely cause (once per call).
    AssumedUnitWarning
        Input columns without units whose values do not look like the documented
        unit (e.g. Teff in kK; once per call). Columns read in the documented unit
        without a warning are named in ``meta["MLUNITS"]``.

    Notes
    -----
    ``mass`` is the model's point estimate of the logarithm, exponentiated: the
    forest's mean over trees, blended with a small neural-network ensemble where
    the card says so (``giants``, models 3.2;
    `~stellar_ml_ages.model.MassAgeModel.point_and_variance`):
    the best single value for a star of the training population, and so pulled
    towards the middle of its range. ``*_p16`` and ``*_p84`` come from the
    calibrated predictive distribution (the spread of the trees' leaf
    distributions about the point estimate, scaled along log g where the card has
    a spread (``giants``, ``giants-slam``, models 3.3), and rescaled so that on
    out-of-bag training stars the stated fractions of true values fall inside). With the
    default ``intervals="robust"`` each end is the further of that posterior's
    quantile and the quantile with the training population's prior divided out,
    both at a level recalibrated so that 68% of training stars fall inside (an end
    may sit slightly inside the posterior's):
    for a star at the ends of the range (a young RGB star, say) the interval
    reaches out on the side where its truth is likely to be. See the
    "Uncertainties and flags" page of the docs.

    Examples
    --------
    >>> from stellar_ml_ages import add_mass_age, demo_table
    >>> stars = demo_table()
    >>> annotated = add_mass_age(stars, model="giants")
    >>> annotated["mass"].unit
    Unit("solMass")
    >>> bool((annotated["mass_p16"] < annotated["mass_p84"]).all())
    True
    >>> "mass" in stars.colnames
    False
    >>> add_mass_age(stars, model="giants", prefix="ml_")["ml_mass"].unit
    Unit("solMass")
    """
    if not isinstance(table, Table):
        hint = (" for a pandas DataFrame use stellar_ml_ages.dataframes.annotate_pandas, or "
                "astropy.table.Table.from_pandas;" if type(table).__module__.startswith(
                    ("pandas", "dask")) else "")
        raise TypeError(
            f"add_mass_age needs an astropy Table or QTable, not {type(table).__name__};"
            f"{hint} see the 'Annotate a table' page of the docs")
    summary = _annotate_call(table, model, copy=copy, mapping=mapping, overwrite=overwrite,
                             allow_extrapolation=allow_extrapolation,
                             propagate_errors=propagate_errors, n_draws=n_draws, seed=seed,
                             progress=progress, state_column=state_column,
                             survey_flags=survey_flags, prefix=prefix, suffix=suffix,
                             quantiles=quantiles, intervals=intervals)
    summary.warn(stacklevel=2)
    return summary.table


def _annotate_call(table, model, *, copy=True, mapping=None, overwrite=False,
                   allow_extrapolation=False, propagate_errors=False, n_draws=32, seed=0,
                   progress=False, state_column=None, survey_flags=True, prefix="", suffix="",
                   summary=None, check_source=True, row_offset=0, quantiles=(),
                   intervals=None, reading=None):
    """`add_mass_age` without its warnings: they go to ``summary``, which is returned.

    A streamed run passes one ``summary`` for all of its blocks (and checks the
    label source on the first block only), so each warning is given once per file;
    it also passes the first block's ``reading`` (`stellar_ml_ages.reading`) to the
    others, which have its columns and meta (``mapping`` and ``state_column`` are
    then the reading's).
    """
    if reading is None:
        reading = read_table(table, mapping, state_column)
    model = select_model(reading) if model is None else get_model(model)
    _check_affix(prefix, suffix)
    configured_threads()  # a bad conf.threads fails before any work
    if propagate_errors and (isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer)
                             or n_draws < 1):
        raise ValueError(f"n_draws must be a positive integer with propagate_errors=True, "
                         f"got {n_draws!r}")
    intervals = _interval_kind(model, intervals, quantiles)
    levels = quantile_levels(model, quantiles)
    names = _output_names(model, prefix, suffix, levels)
    _check_existing(reading, names.values(), overwrite)
    inputs = _inputs(reading, model, propagate_errors, survey_flags)
    if summary is None:
        summary = RunSummary(model)
    if inputs.errors is not None:
        summary.note_error_sources(inputs.errors)
    if check_source:
        _check_source(table, reading, model, propagate_errors, summary, survey_flags)

    n_rows = len(table)
    step = max(int(conf.chunk_size), 1)
    starts = range(0, n_rows, step) if n_rows else [0]
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{model.name}", unit="block", total=len(starts))
    columns = {name: [] for name in names}
    masks = {name: [] for name in names}
    block = None
    for start in starts:
        rows = table[start:start + step] if n_rows else table
        try:
            block = _evaluate(rows, model, inputs, allow_extrapolation, n_draws, seed, summary,
                              levels, intervals)
        except ColumnValueError as error:
            if getattr(error, "row", None) is None:
                raise
            # Row numbers in messages count from the top of the caller's table.
            raise ColumnValueError(error.describe(error.row + row_offset + start)) from None
        for target, result in block.predictions.items():
            for name, key in ((target, "value"), *((target + s, q) for s, q in levels.items())):
                values, mask = _masked(result[key], block.predicted, len(rows))
                columns[name].append(values)
                masks[name].append(mask)
        columns["in_hull"].append(block.in_hull)
        # A plain bool: FITS cannot store a masked logical (it reads back as True).
        masks["in_hull"].append(np.zeros(len(rows), dtype=bool))
        columns["mass_age_flag"].append(block.flags)
        masks["mass_age_flag"].append(np.zeros(len(rows), dtype=bool))

    out = table.copy(copy_data=True) if copy else table
    # The input HDU's checksums describe other bytes than the annotated table's:
    # written again they would fail verification (astropy recomputes on request).
    for key in ("CHECKSUM", "DATASUM"):
        out.meta.pop(key, None)
    if overwrite:
        for column in _stale_outputs(out, names.values(), prefix, suffix):
            out.remove_column(column)
    for name, column_name in names.items():
        _add_column(out, name, column_name, np.concatenate(columns[name]),
                    np.concatenate(masks[name]), model, intervals)
    out.meta.update(_provenance(model, block, inputs, allow_extrapolation, propagate_errors))
    # Which predictive quantiles the table carries, for reading them back.
    out.meta["MLQUANT"] = ", ".join(f"{p:g}" for p in sorted(levels.values()))
    # ... and what they describe (robust intervals or the posterior's quantiles).
    out.meta["MLINTVL"] = intervals
    # The keys describe this run only, and a table can carry several runs under
    # other prefixes: say which columns they describe ...
    out.meta["MLAFFIX"] = affix_pattern(prefix, suffix)
    # ... and drop what an earlier run noted that this one does not.
    for key in ("MLSCALE", "MLUNITS"):
        out.meta.pop(key, None)
    # What is known of the zero points: a fact of the reading and the model, written
    # to every block and page (also where the guard is not run again).
    note = scale_note(reading, model)
    if note:
        out.meta["MLSCALE"] = note
    if summary.unit_note():
        out.meta["MLUNITS"] = summary.unit_note()
    summary.table = out
    return summary


def affix_pattern(prefix="", suffix=""):
    """The ``MLAFFIX`` value of a run: its column names with ``{}`` for the output name.

    Examples
    --------
    >>> from stellar_ml_ages.annotate import affix_pattern
    >>> affix_pattern("g_"), affix_pattern()
    ('g_{}', '{}')
    """
    return f"{prefix}{{}}{suffix}"


def _column_info(name, model, intervals="posterior"):
    """Unit, UCD and description of an output column.

    Descriptions stay under 60 characters: longer ones are folded by astropy's FITS
    header serialisation and come back altered.
    """
    if name == "in_hull":
        return None, "meta.code", "Usable inputs inside the training set convex hull"
    if name == "mass_age_flag":
        return None, "meta.code.qual", "Bitmask of stellar_ml_ages.MassAgeFlag (see MLFLAGS)"
    target, _, percentile = name.partition("_p")
    meta = _TARGET_META.get(target, {"ucd": "", "what": target})
    unit = model.target_unit(target)
    if not percentile:
        return unit, meta["ucd"], f"{meta['what']}, machine-learned estimate"
    # No UCD word exists for a percentile; the quantity's own UCD keeps TOPCAT's plots sensible.
    percentile = percentile.replace("_", ".")
    if intervals == "robust":
        # Not a quantile of one distribution: the further of two, recalibrated.
        return unit, meta["ucd"], f"{meta['what']}, robust {percentile}th percentile bound"
    return unit, meta["ucd"], f"{meta['what']}, {percentile}th percentile of prediction"


def _add_column(out, name, column_name, values, mask, model, intervals="posterior"):
    unit, ucd, description = _column_info(name, model, intervals)
    if mask.any() or values.dtype.kind == "f":
        column = MaskedColumn(values, mask=mask, name=column_name, unit=unit,
                              description=description, meta={"ucd": ucd})
    else:
        column = Column(values, name=column_name, unit=unit, description=description,
                        meta={"ucd": ucd})
    for existing in _same_name(out, column_name):
        out.remove_column(existing)
    out[column_name] = column
    out[column_name].info.description = description
    out[column_name].info.meta = {"ucd": ucd}


def _provenance(model, block, inputs, allow_extrapolation, propagate_errors):
    card = model.card
    citation = "; ".join(card.get("citation", []))
    sources = block.sources
    if inputs.survey_flags is None:
        quality = "ignored (survey_flags=False)"
    else:
        quality = "; ".join(inputs.survey_flags.used) or "none found"
    return {
        "MLMODEL": model.name,
        "MLMODVER": card.get("model_version", ""),
        "MLSHA256": card["arrays"].get("sha256", ""),
        "MLPKGVER": __version__,
        "MLCITE": citation,
        "MLINPUTS": ", ".join(f"{name}={source}" for name, source in sources.items()),
        "MLEXTRAP": bool(allow_extrapolation),
        "MLERRPRP": bool(propagate_errors),
        "MLCHOICE": "; ".join(resolution_notes(inputs.resolved)) or "no alternatives",
        "MLQUAL": quality,
        "MLSTATE": inputs.state_column or "none: pooled interval calibration",
        "MLFLAGS": flag_description(),
    }
