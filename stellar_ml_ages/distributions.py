"""Each star's calibrated predictive distribution of mass or age.

A point estimate (the ``mass`` and ``age`` columns) is the forest's estimate of
E[ln y | labels]: it regresses towards the middle of the training set, so a
histogram of point estimates is narrower than the population it came from. The
whole predictive distribution of each star does not have that problem: it is the
one from which ``*_p16`` and ``*_p84`` are read, calibrated on out-of-bag training
stars per evolutionary state and predicted value, at the probabilities of the
model's calibration grid (0.005 ... 0.995 for the packaged models).

Between the grid's quantiles the distribution function is linear in ln y (as the
calibration interpolates the offsets), and beyond the outermost ones each tail
keeps the density of its last segment until its probability (0.5%) is used up, so
every row is a proper distribution with finite support.
"""

import copy

import astropy.units as u
import numpy as np
from astropy.table import Table

from .exceptions import ModelError
from .flags import MassAgeFlag

__all__ = ["PredictiveDistribution", "predictive_distribution"]

#: Rows handled at once when a distribution function is evaluated on a grid.
_ROWS_PER_BLOCK = 20_000
#: Prefix of the scratch columns a model run writes (on a shallow copy, never the caller's table).
_SCRATCH = "_pd_"


class PredictiveDistribution:
    """Calibrated predictive distributions of one target, one per table row.

    Build one with `predictive_distribution`; the constructor takes the quantiles
    directly.

    Parameters
    ----------
    target : str
        ``"mass"`` or ``"age"`` (or another target of a user model).
    probability : array-like, shape (n_levels,)
        Increasing probabilities in (0, 1) at which ``quantiles`` are given.
    quantiles : `~astropy.units.Quantity` or array-like, shape (n_rows, n_levels)
        Each row's quantiles, non-decreasing along a row; rows with any non-finite
        value have no prediction.
    point : `~astropy.units.Quantity` or array-like, shape (n_rows,), optional
        The point estimates (the ``mass``/``age`` column), kept for comparisons.
    unit : `~astropy.units.Unit`, optional
        Unit of plain-array ``quantiles``.
    log : bool
        Interpolate the distribution function linearly in ln y (True: what the
        packaged models' calibration does) or in y.
    meta : dict, optional
        Provenance (model name, state column, ...).
    prior : dict, optional
        The training set's distribution of ln y (a model card's ``prior``:
        ``log_edges`` and ``fraction``), under which the distributions were made;
        needed to deconvolve a population.
    widened : array-like of bool, shape (n_rows,), optional
        Rows whose distribution propagated input errors widened (their
        ``mass_age_flag`` has `~stellar_ml_ages.MassAgeFlag.ERRORS_WIDENED`); None
        (default) where that is not known.

    Examples
    --------
    >>> import astropy.units as u
    >>> from stellar_ml_ages.distributions import PredictiveDistribution
    >>> dist = PredictiveDistribution("age", [0.16, 0.5, 0.84], [[3.0, 4.0, 5.0]] * u.Gyr)
    >>> float(dist.quantile(0.5)[0].to_value(u.Gyr))
    4.0
    >>> round(float(dist.cdf(4.0 * u.Gyr)[0]), 3)
    0.5
    """

    def __init__(self, target, probability, quantiles, point=None, unit=None, log=True,
                 meta=None, prior=None, widened=None):
        self.target = str(target)
        probability = np.asarray(probability, dtype=np.float64)
        if probability.ndim != 1 or len(probability) < 2:
            raise ValueError("probability needs at least two levels")
        if not (np.all(np.diff(probability) > 0) and probability[0] > 0 and probability[-1] < 1):
            raise ValueError(f"probability levels must increase inside (0, 1), got {probability}")
        if isinstance(quantiles, u.Quantity):
            unit = quantiles.unit
            quantiles = quantiles.value
        self.unit = u.dimensionless_unscaled if unit is None else u.Unit(unit)
        quantiles = np.atleast_2d(np.ma.filled(np.ma.asarray(quantiles, dtype=np.float64),
                                               np.nan))
        if quantiles.shape[1] != len(probability):
            raise ValueError(f"quantiles have {quantiles.shape[1]} levels per row for "
                             f"{len(probability)} probabilities")
        self.log = bool(log)
        with np.errstate(invalid="ignore", divide="ignore"):
            knots = np.log(quantiles) if self.log else quantiles.copy()
        self.predicted = np.all(np.isfinite(knots), axis=1)
        if np.any(np.diff(knots[self.predicted], axis=1) < 0):
            raise ValueError("each row's quantiles must not decrease with probability")
        self.probability = probability
        self._knots = _with_tails(probability, knots)
        self._knot_probability = np.concatenate([[0.0], probability, [1.0]])
        if point is None:
            point = np.full(len(quantiles), np.nan)
        elif isinstance(point, u.Quantity):
            point = point.to_value(self.unit)
        self.point = np.ma.filled(np.ma.asarray(point, dtype=np.float64), np.nan)
        self.meta = dict(meta or {})
        self.prior = prior
        if widened is not None:
            widened = np.asarray(widened, dtype=bool)
            if widened.shape != (len(quantiles),):
                raise ValueError(f"widened has shape {widened.shape} for {len(quantiles)} rows")
        self.widened = widened

    def __len__(self):
        return len(self._knots)

    def __repr__(self):
        return (f"<PredictiveDistribution of {self.target} [{self.unit}]: {len(self)} rows, "
                f"{int(self.predicted.sum())} predicted, {len(self.probability)} levels>")

    def __getitem__(self, rows):
        """The distributions of a selection of rows (boolean mask, indices or slice)."""
        new = copy.copy(self)
        new._knots = self._knots[rows]
        new.predicted = self.predicted[rows]
        new.point = self.point[rows]
        if self.widened is not None:
            new.widened = self.widened[rows]
        if new._knots.ndim == 1:
            raise IndexError("select rows with a mask, a slice or an array of indices")
        return new

    # ------------------------------------------------------------ helpers
    def _to_space(self, values):
        values = values.to_value(self.unit) if isinstance(values, u.Quantity) else values
        values = np.asarray(values, dtype=np.float64)
        return _log_of_positive(values) if self.log else values

    def _from_space(self, values):
        return (np.exp(values) if self.log else values) * self.unit

    @staticmethod
    def _interpolate_cdf(knots, knot_probability, values):
        """CDF of each row of ``knots`` at ``values`` (same rows, shape (n, m))."""
        above = (knots[:, :, None] <= values[:, None, :]).sum(axis=1)
        segment = np.clip(above - 1, 0, knots.shape[1] - 2)
        left = np.take_along_axis(knots, segment, axis=1)
        right = np.take_along_axis(knots, segment + 1, axis=1)
        width = right - left
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(width > 0, (values - left) / np.where(width > 0, width, 1.0),
                                1.0)
        fraction = np.clip(fraction, 0.0, 1.0)
        p_left, p_right = knot_probability[segment], knot_probability[segment + 1]
        cdf = p_left + fraction * (p_right - p_left)
        cdf = np.where(values < knots[:, :1], 0.0, cdf)
        return np.where(values >= knots[:, -1:], 1.0, cdf)

    # ------------------------------------------------------------ public
    def quantile(self, probability):
        """Each row's quantile at ``probability`` (scalar in [0, 1]); NaN without prediction.

        Examples
        --------
        >>> import astropy.units as u
        >>> from stellar_ml_ages.distributions import PredictiveDistribution
        >>> dist = PredictiveDistribution("mass", [0.16, 0.84], [[1.0, 1.2]] * u.solMass)
        >>> dist.quantile(0.16)
        <Quantity [1.] solMass>
        """
        from .model import MassAgeModel

        probability = float(probability)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {probability!r}")
        # The interpolation in probability `add_mass_age` uses for its quantile columns.
        values = MassAgeModel._interp_probabilities(self._knot_probability, self._knots.T,
                                                    [probability])[0]
        return self._from_space(np.where(self.predicted, values, np.nan))

    def cdf(self, values):
        """Every row's distribution function at ``values``.

        Parameters
        ----------
        values : `~astropy.units.Quantity`, scalar or 1-D
            Points, in any unit convertible to the target's.

        Returns
        -------
        ndarray
            Shape (n_rows,) for a scalar, (n_rows, n_values) for a 1-D grid; NaN for
            rows without a prediction.
        """
        scalar = np.ndim(values) == 0
        grid = np.atleast_1d(self._to_space(values))
        out = np.full((len(self), len(grid)), np.nan)
        for start in range(0, len(self), _ROWS_PER_BLOCK):
            rows = slice(start, start + _ROWS_PER_BLOCK)
            knots = self._knots[rows]
            ok = self.predicted[rows]
            block = np.full((len(knots), len(grid)), np.nan)
            block[ok] = self._interpolate_cdf(knots[ok], self._knot_probability,
                                              np.broadcast_to(grid, (int(ok.sum()), len(grid))))
            out[rows] = block
        return out[:, 0] if scalar else out

    def pit(self, values):
        """Probability integral transform: each row's CDF at its own value.

        For calibrated distributions, the PIT of the true values is uniform on [0, 1].

        Parameters
        ----------
        values : `~astropy.units.Quantity`, shape (n_rows,)
        """
        values = np.broadcast_to(self._to_space(values), (len(self),))
        out = np.full(len(self), np.nan)
        ok = self.predicted & ~np.isnan(values)
        out[ok] = self._interpolate_cdf(self._knots[ok], self._knot_probability,
                                        values[ok][:, None])[:, 0]
        return out

    def bin_probabilities(self, edges):
        """Each row's probability in each bin between ``edges`` (shape (n_rows, n_bins))."""
        return np.diff(self.cdf(_as_1d(edges, "edges")), axis=1)

    def stacked_cdf(self, values):
        """The population's distribution function at ``values``: the mean of the rows'.

        Rows without a prediction are left out.
        """
        return np.mean(self[self.predicted].cdf(_as_1d(values, "values")), axis=0)

    def prior_fractions(self, edges):
        """The training prior's probability in each bin between ``edges``.

        Raises
        ------
        ValueError
            The distributions carry no prior (a model card without one).
        """
        if self.prior is None:
            raise ValueError("these predictive distributions carry no training prior (the "
                             "model card has none): train the model with cross-validation "
                             "(stellar-ml-ages train SPEC --folds 10, or "
                             "training.evaluation.train_and_validate), which records it")
        from scipy.interpolate import PchipInterpolator

        log_edges = np.asarray(self.prior["log_edges"], dtype=np.float64)
        cumulative = np.concatenate([[0.0], np.cumsum(self.prior["fraction"])])
        points = self._to_space(_as_1d(edges, "edges"))
        if not self.log:  # the prior is recorded in ln y whatever the interpolation
            points = _log_of_positive(points)
        # A smooth (monotone, continuously differentiable) distribution function through
        # the recorded one: a prior whose density jumps at its own bin edges would put
        # spurious steps into every likelihood (predictive / prior).
        smooth = PchipInterpolator(log_edges, cumulative, extrapolate=False)
        inside = np.clip(points, log_edges[0], log_edges[-1])
        return np.diff(np.clip(smooth(inside), 0.0, 1.0))

    def sample(self, rng=None, size=None):
        """Random draws from each row's distribution (inverse-CDF sampling).

        Parameters
        ----------
        rng : `numpy.random.Generator` or int, optional
        size : int, optional
            Draws per row; shape (n_rows,) without it, (n_rows, size) with it.
        """
        rng = np.random.default_rng(rng)
        shape = (len(self),) if size is None else (len(self), int(size))
        uniform = rng.random(shape).reshape(len(self), -1)
        p = self._knot_probability
        segment = np.clip(np.searchsorted(p, uniform, side="right") - 1, 0, len(p) - 2)
        left = np.take_along_axis(self._knots, segment, axis=1)
        right = np.take_along_axis(self._knots, segment + 1, axis=1)
        weight = (uniform - p[segment]) / (p[segment + 1] - p[segment])
        draws = np.where(self.predicted[:, None], left + weight * (right - left), np.nan)
        return self._from_space(draws.reshape(shape))


def _log_of_positive(values):
    """ln of ``values``, -inf for zero and negative ones (below any positive target)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), -np.inf)


def _with_tails(probability, knots):
    """Knots at probability 0 and 1: each tail keeps its outermost segment's density."""
    low_width = (knots[:, 1] - knots[:, 0]) * probability[0] / (probability[1] - probability[0])
    high_width = ((knots[:, -1] - knots[:, -2]) * (1 - probability[-1])
                  / (probability[-1] - probability[-2]))
    return np.column_stack([knots[:, 0] - low_width, knots, knots[:, -1] + high_width])


def _as_1d(values, what):
    if np.ndim(values) != 1 or len(values) < 1:
        raise ValueError(f"{what} must be a 1-D sequence, got shape {np.shape(values)}")
    return values


def _levels_in_table(table, target, prefix, suffix):
    """The quantile levels (MLQUANT) whose columns ``table`` carries, if they are the grid."""
    from .annotate import calibration_grid, quantile_suffix
    from .registry import get_model

    written = table.meta.get("MLQUANT")
    if not written or table.meta.get("MLINTVL", "posterior") != "posterior":
        # Robust intervals are not the posterior that stacking needs: the model is
        # run again instead.
        return None
    try:
        levels = [float(p) for p in str(written).split(",")]
    except ValueError:
        return None
    try:
        grid = calibration_grid(get_model(table.meta["MLMODEL"]))
    except (ModelError, KeyError):  # a model not installed here: the columns speak for it
        grid = levels if len(levels) >= 9 else None
    if grid is None or not set(np.round(grid, 9)) <= set(np.round(levels, 9)):
        return None
    names = [f"{prefix}{target}{quantile_suffix(p)}{suffix}" for p in grid]
    if not all(name in table.colnames for name in names):
        return None
    return list(grid), names


def predictive_distribution(table, target="age", model=None, *, prefix="", suffix="",
                            **options):
    """Each row's calibrated predictive distribution of ``target``.

    The posterior under the training population's prior (what stacking needs).
    Read from the table when it carries the model's whole calibration grid of
    quantile columns under that prior (``add_mass_age(..., quantiles="all")``,
    ``--quantiles all``),
    otherwise computed by running the model on the table's inputs, exactly as
    `~stellar_ml_ages.add_mass_age` does (same rows predicted, same flags).

    Parameters
    ----------
    table : `~astropy.table.Table`
        Stars with the model's inputs, or a table annotated with ``quantiles="all"``.
        It is not modified.
    target : str
        ``"age"`` or ``"mass"``.
    model : str, path-like, `~stellar_ml_ages.model.MassAgeModel` or None
        The model to run; None reads the columns if present, else uses the model
        named in the table's ``MLMODEL`` (an annotated table), else chooses one as
        `~stellar_ml_ages.add_mass_age` does.
    prefix, suffix : str
        Affixes of the quantile columns to read.
    **options
        Further `~stellar_ml_ages.add_mass_age` keywords for a model run
        (``mapping``, ``state_column``, ``propagate_errors``, ...). Pass the state
        column the annotation used: the calibration differs by state.

    Returns
    -------
    PredictiveDistribution

    Examples
    --------
    >>> import astropy.units as u
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.distributions import predictive_distribution
    >>> dist = predictive_distribution(demo_table(), "age", model="giants")
    >>> dist.probability[[0, -1]]
    array([0.005, 0.995])
    >>> bool(((dist.cdf(100 * u.Gyr) == 1) | ~dist.predicted).all())
    True
    """
    if not isinstance(table, Table):
        raise TypeError(f"predictive_distribution needs an astropy Table, not "
                        f"{type(table).__name__}")
    if model is None:
        _check_meta_describes(table, target, prefix, suffix)
    found = _levels_in_table(table, target, prefix, suffix) if model is None else None
    if found is not None:
        grid, names = found
        quantiles = np.column_stack([_plain(table[name]) for name in names])
        point_name = f"{prefix}{target}{suffix}"
        point = _plain(table[point_name]) if point_name in table.colnames else None
        unit = table[names[0]].unit
        meta = {"source": "quantile columns", "model": table.meta.get("MLMODEL", ""),
                "propagate_errors": table.meta.get("MLERRPRP")}
        return PredictiveDistribution(target, grid, quantiles, point=point, unit=unit, meta=meta,
                                      prior=_card_prior(table.meta.get("MLMODEL"), target),
                                      widened=_widened_rows(table,
                                                            f"{prefix}mass_age_flag{suffix}"))
    return _run_model(table, target, model, options)


def _check_meta_describes(table, target, prefix, suffix):
    """Refuse to read columns whose run the table's ``ML*`` keys do not describe.

    The keys describe the last annotation (``MLAFFIX`` names its columns); columns
    of an earlier run under other affixes would otherwise be read, or their model
    rerun, as the last run's model. Tables written before ``MLAFFIX`` existed are
    taken as they are.
    """
    from .annotate import affix_pattern

    described = table.meta.get("MLAFFIX")
    wanted = affix_pattern(prefix, suffix)
    if described is None or described == wanted:
        return
    stem, end = f"{prefix}{target}".lower(), suffix.lower()
    if any(name == stem + end or (name.startswith(stem + "_p") and name.endswith(end))
           for name in map(str.lower, table.colnames)):
        raise ModelError(
            f"the table's {table.meta.get('MLMODEL', '?')!r} annotation wrote columns "
            f"{described.format(target)!r}, ...; the {wanted.format(target)!r} columns come "
            "from an earlier run the table's metadata no longer describes: pass model=... "
            "(the model that wrote them), or annotate again with this prefix and suffix")


def _widened_rows(table, flag_name):
    """Rows with `~stellar_ml_ages.MassAgeFlag.ERRORS_WIDENED`; None if unknown.

    Tables annotated before the bit existed (their ``MLFLAGS`` does not name it), or
    without their flag column, cannot say which rows propagation widened.
    """
    if table.meta.get("MLERRPRP") not in (True, "True", "T"):
        return np.zeros(len(table), dtype=bool)
    if ("ERRORS_WIDENED" not in str(table.meta.get("MLFLAGS", ""))
            or flag_name not in table.colnames):
        return None
    flags = np.ma.filled(np.ma.asarray(table[flag_name]), 0).astype(np.int64)
    return (flags & int(MassAgeFlag.ERRORS_WIDENED)) != 0


def _card_prior(model_name, target):
    """The named model's training prior of ``target``, or None if unknown here."""
    from .registry import get_model

    try:
        return get_model(model_name).target(target).get("prior")
    except (ModelError, KeyError, TypeError):  # not installed here, unnamed, or no such target
        return None


def _plain(column):
    values = column.value if isinstance(column, u.Quantity) else column
    return np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)


def _run_model(table, target, model, options):
    from .annotate import _annotate_call, calibration_grid, quantile_suffix
    from .reading import read_table_for_call
    from .registry import get_model, select_model

    for forbidden in ("prefix", "suffix", "quantiles", "copy", "overwrite", "intervals"):
        if forbidden in options:
            raise TypeError(f"predictive_distribution() sets {forbidden!r} itself")
    if model is None and "MLMODEL" in table.meta:
        model = table.meta["MLMODEL"]
    # Read once, as add_mass_age reads it, and the model checked before any work.
    reading = read_table_for_call(table, options)
    model = select_model(reading) if model is None else get_model(model)
    if target not in model.target_names:
        raise ModelError(f"model {model.name!r} does not predict {target!r}; it "
                         f"predicts {', '.join(model.target_names)}")
    # A shallow copy with its own meta: the caller's table and meta stay as they were.
    view = table.__class__(table, copy=False)
    view.meta = copy.deepcopy(table.meta)
    # The posterior under the training prior: what stacking and deconvolution need.
    summary = _annotate_call(view, model, copy=False, overwrite=True, prefix=_SCRATCH,
                             quantiles="all", intervals="posterior", reading=reading, **options)
    summary.warn(stacklevel=3)
    annotated = summary.table
    grid = calibration_grid(model)
    names = [f"{_SCRATCH}{target}{quantile_suffix(p)}" for p in grid]
    quantiles = np.column_stack([_plain(annotated[name]) for name in names])
    transform = model.target(target).get("transform", "identity")
    meta = {"source": "model run", "model": model.name, "state": annotated.meta.get("MLSTATE"),
            "propagate_errors": annotated.meta.get("MLERRPRP")}
    return PredictiveDistribution(target, grid, quantiles,
                                  point=_plain(annotated[f"{_SCRATCH}{target}"]),
                                  unit=annotated[names[0]].unit, log=transform == "ln",
                                  meta=meta, prior=model.target(target).get("prior"),
                                  widened=_widened_rows(annotated, f"{_SCRATCH}mass_age_flag"))
