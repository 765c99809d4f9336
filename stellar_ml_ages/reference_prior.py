"""Intervals that hold by true value as well as by prediction.

A calibrated predictive distribution p(ln y | labels) is a posterior under the
training set's distribution of ln y. Its intervals hold for stars of a given
*predicted* value, but by *true* value they hold far less often than 68% at the
ends of the range (out of fold, RGB stars above 1.8 Msun: about 20%; RGB stars
younger than 2 Gyr: about 30%): the posterior is pulled towards the middle of the
training population.

Dividing each star's predictive density by the prior it was made under (the
training stars' stacked predictive distribution, per evolutionary state) leaves
the likelihood of the star's labels as a function of ln y; normalised, that is the
distribution under a flat prior in ln y (the *reference* distribution), whose
intervals hold for every true value but fail the other way: for stars whose
prediction is at the ends they reach too far out.

The package's intervals (``intervals="robust"``) take both: the lower end of the
central interval at level ``p`` is the lower of the two distributions' quantiles,
the upper end the higher, each at a recalibrated level chosen on the training
stars (out of bag) so that a fraction ``p`` of them falls below the lower end and
``1 - p`` above the upper one, per state. The recalibrated levels move inwards
(a union is wider than either part), so in the middle of the range an end can sit
slightly inside the posterior's; at the ends the interval reaches out on the side
the truth is likely to be. The median width grows a few per cent; by true value the
middle of the range is covered less often than by the posterior, the ends far more.

Everything here works on plain float arrays of ln y; the piecewise-linear CDF of a
star's predictive distribution through its quantile knots is the package's own
(`~stellar_ml_ages.distributions.PredictiveDistribution`), so the division is exact
for a piecewise-constant (histogram) prior.
"""

import numpy as np

__all__ = ["MIN_STARS_ALONG", "REFERENCE_PRIOR_BINS", "fit_reference_prior",
           "group_robust_quantiles", "interp_levels", "levels_along", "reference_cdf",
           "reference_quantiles", "robust_quantiles", "worst_cell_coverage"]

#: Bins of the stacked training prior in ln y.
REFERENCE_PRIOR_BINS = 40
#: Fewest stars a bin of levels recalibrated along a feature is fitted on.
MIN_STARS_ALONG = 100
#: Prior density floor, as a fraction of its peak: beyond the training range the
#: prior is not zero (that would put all of a star's probability there), but rare.
_FLOOR = 1e-3


class _Prior:
    """A histogram density in ln y with a floor, and H(l), the integral of 1/density."""

    def __init__(self, log_edges, density):
        self.edges = np.asarray(log_edges, dtype=np.float64)
        density = np.asarray(density, dtype=np.float64)
        self.floor = _FLOOR * density.max()
        self.density = np.maximum(density, self.floor)
        self.cumulative = np.concatenate([[0.0], np.cumsum(np.diff(self.edges) / self.density)])

    def inverse_density(self, log_values):
        which = np.searchsorted(self.edges, log_values, side="right") - 1
        inside = (which >= 0) & (which < len(self.density))
        out = np.full(np.shape(log_values), 1.0 / self.floor)
        out[inside] = 1.0 / self.density[which[inside]]
        return out

    def integral(self, log_values):
        """H(l): piecewise linear, increasing; linear with slope 1/floor beyond the edges."""
        low, high = self.edges[0], self.edges[-1]
        inside = np.interp(log_values, self.edges, self.cumulative)
        below = (np.minimum(log_values, low) - low) / self.floor
        above = (np.maximum(log_values, high) - high) / self.floor
        return inside + below + above

    def inverse_integral(self, h):
        low_h, high_h = self.cumulative[0], self.cumulative[-1]
        inside = np.interp(h, self.cumulative, self.edges)
        below = (np.minimum(h, low_h) - low_h) * self.floor
        above = (np.maximum(h, high_h) - high_h) * self.floor
        return inside + below + above


def _reference_knots(knots, probability, prior):
    """The reference CDF at each row's knots, and H at the knots.

    ``knots``: (n_rows, n_levels) quantiles in ln y at ``probability`` (increasing).
    Between knots the predictive density is constant (piecewise-linear CDF), so its
    reference mass there is that density times the integral of 1/prior.
    """
    h = prior.integral(knots)
    width = np.diff(knots, axis=1)
    step = np.diff(h, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(width > 1e-12, step / width,
                         prior.inverse_density(knots[:, :-1]))
    mass = np.diff(probability)[None, :] * ratio
    total = mass.sum(axis=1, keepdims=True)
    span = probability[-1] - probability[0]
    cdf = probability[0] + span * np.concatenate(
        [np.zeros((len(knots), 1)), np.cumsum(mass, axis=1) / total], axis=1)
    cdf[:, -1] = probability[-1]  # exact, whatever the rounding of the sum
    return cdf, h


def reference_quantiles(knots, probability, log_edges, density, levels):
    """Quantiles in ln y at ``levels`` of each row's distribution with the prior divided out.

    Parameters
    ----------
    knots : ndarray, shape (n_rows, n_levels)
        Each row's calibrated quantiles in ln y at ``probability``.
    probability : array-like, shape (n_levels,)
        Increasing probabilities of the knots (a card's calibration grid).
    log_edges, density : array-like
        The prior as a histogram density in ln y.
    levels : array-like, shape (n_levels_wanted,) or (n_levels_wanted, n_rows)
        Probabilities wanted, clipped to the knots' range: the same for every row, or
        one per row.

    Returns
    -------
    ndarray, shape (n_levels_wanted, n_rows)

    Examples
    --------
    A flat prior changes nothing:

    >>> import numpy as np
    >>> from stellar_ml_ages.reference_prior import reference_quantiles
    >>> p = np.array([0.1, 0.5, 0.9])
    >>> knots = np.log([[1.0, 1.2, 1.5]])
    >>> out = reference_quantiles(knots, p, [-5.0, 5.0], [1.0], [0.1, 0.5, 0.9])
    >>> bool(np.allclose(out[:, 0], knots[0]))
    True
    """
    knots = np.atleast_2d(np.asarray(knots, dtype=np.float64))
    probability = np.asarray(probability, dtype=np.float64)
    levels = _per_row(levels, len(knots))
    levels = np.clip(levels, probability[0], probability[-1])
    out = np.full((len(levels), len(knots)), np.nan)
    finite = np.all(np.isfinite(knots), axis=1)
    if not finite.any():
        return out
    prior = _Prior(log_edges, density)
    knots = knots[finite]
    cdf, h = _reference_knots(knots, probability, prior)
    rows = np.arange(len(knots))
    for k, level in enumerate(levels[:, finite]):
        j = np.clip((cdf <= level[:, None]).sum(axis=1) - 1, 0, knots.shape[1] - 2)
        low, high = cdf[rows, j], cdf[rows, j + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(high > low, (level - low) / (high - low), 0.0)
        target = h[rows, j] + np.clip(fraction, 0.0, 1.0) * (h[rows, j + 1] - h[rows, j])
        value = prior.inverse_integral(target)
        # Zero-width steps (tied knots) stay at the knot.
        out[k, finite] = np.clip(value, knots[rows, j], knots[rows, j + 1])
    return out


def _per_row(levels, n_rows):
    """Levels as an (n_levels, n_rows) array: one row of levels per row of knots."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim <= 1:
        levels = np.atleast_1d(levels)[:, None]
    return np.broadcast_to(levels, (levels.shape[0], n_rows))


def _interp_rows(probability, knots, levels):
    """Each row's knots (n_rows, n_levels) interpolated at a level: one for every row
    (a number) or each row's own (shape (n_rows,))."""
    levels = np.asarray(levels, dtype=np.float64)
    k = np.clip(np.searchsorted(probability, levels, side="right") - 1, 0, len(probability) - 2)
    weight = np.clip((levels - probability[k]) / (probability[k + 1] - probability[k]), 0, 1)
    if levels.ndim == 0:  # one level: whole columns, no per-row indexing
        return (1 - weight) * knots[:, int(k)] + weight * knots[:, int(k) + 1]
    rows = np.arange(len(knots))
    return (1 - weight) * knots[rows, k] + weight * knots[rows, k + 1]


def levels_along(entry, values):
    """A reference-prior group's recalibrated levels at each row's value of its feature.

    Without an ``along`` entry, the group's levels (the same for every row). With
    one, each calibration probability's level is interpolated linearly in the
    feature between the bins' centres and held beyond the outer ones (as the spread
    factor and the calibration by predicted value are).

    Parameters
    ----------
    entry : dict
        One group of a card's ``reference_prior``.
    values : array-like, shape (n_rows,)
        The ``along`` feature's values (canonical units); unused without ``along``.

    Returns
    -------
    lower, upper : ndarray, shape (n_levels,) or (n_rows, n_levels)

    Examples
    --------
    >>> from stellar_ml_ages.reference_prior import levels_along
    >>> entry = {"lower_level": [0.1, 0.5], "upper_level": [0.5, 0.9],
    ...          "along": {"feature": "logg", "centre": [2.0, 3.0],
    ...                    "lower_level": [[0.2, 0.5], [0.1, 0.5]],
    ...                    "upper_level": [[0.5, 0.8], [0.5, 0.9]]}}
    >>> lower, upper = levels_along(entry, [2.5])
    >>> [round(float(v), 3) for v in lower[0]], [round(float(v), 3) for v in upper[0]]
    ([0.15, 0.5], [0.5, 0.85])
    """
    along = entry.get("along")
    if not along:
        return (np.asarray(entry["lower_level"], dtype=np.float64),
                np.asarray(entry["upper_level"], dtype=np.float64))
    values = np.asarray(values, dtype=np.float64)
    centre = np.asarray(along["centre"], dtype=np.float64)

    def interpolated(table):
        table = np.asarray(table, dtype=np.float64)
        return np.column_stack([np.interp(values, centre, table[:, j])
                                for j in range(table.shape[1])])

    return interpolated(along["lower_level"]), interpolated(along["upper_level"])


def interp_levels(probability, table, probabilities):
    """Linear interpolation of each column of ``table`` (n_levels, n_rows), given at the
    increasing ``probability``, at ``probabilities``: shape (n_probabilities, n_rows).

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.reference_prior import interp_levels
    >>> interp_levels(np.array([0.1, 0.5]), np.array([[1.0, 10.0], [3.0, 30.0]]), [0.3])
    array([[ 2., 20.]])
    """
    probabilities = np.atleast_1d(np.asarray(probabilities, dtype=np.float64))
    out = np.empty((len(probabilities), table.shape[1]))
    for j, p in enumerate(probabilities):
        out[j] = _interp_rows(probability, table.T, p)
    return out


def _cdf_between_knots(knots, cdf, position, value_position, log_values, lowest):
    """Each row's CDF at its own ``log_values``, between its knots.

    ``cdf`` holds the CDF at the knots; within a knot interval it grows in proportion
    to ``position`` (ln y itself for the posterior, H(ln y) for the reference), whose
    value at ``log_values`` is ``value_position``. Below the lowest knot (tied lowest
    knots too) the CDF is ``lowest``; beyond the highest, its value there. NaN for
    rows without finite knots or value.
    """
    rows = np.arange(len(knots))
    j = np.clip((knots <= log_values[:, None]).sum(axis=1) - 1, 0, knots.shape[1] - 2)
    step = position[rows, j + 1] - position[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(step > 0, (value_position - position[rows, j]) / step, 1.0)
    fraction = np.clip(fraction, 0.0, 1.0)
    out = cdf[rows, j] + fraction * (cdf[rows, j + 1] - cdf[rows, j])
    out = np.where(log_values < knots[:, 0], lowest, out)
    return np.where(np.all(np.isfinite(knots), axis=1) & np.isfinite(log_values), out, np.nan)


def reference_cdf(knots, probability, log_edges, density, log_values):
    """Each row's reference CDF at its own ``log_values`` (clipped to the knots' range)."""
    knots = np.atleast_2d(np.asarray(knots, dtype=np.float64))
    probability = np.asarray(probability, dtype=np.float64)
    prior = _Prior(log_edges, density)
    cdf, h = _reference_knots(knots, probability, prior)
    log_values = np.asarray(log_values, dtype=np.float64)
    return _cdf_between_knots(knots, cdf, h, prior.integral(log_values), log_values,
                              probability[0])


def _posterior_cdf(knots, probability, log_values):
    """Each row's own (piecewise-linear) CDF at its ``log_values``, clipped to the knots."""
    cdf = np.broadcast_to(probability, knots.shape)
    return _cdf_between_knots(knots, cdf, knots, log_values, log_values, probability[0])


def robust_quantiles(knots, probability, log_edges, density, lower_level, upper_level,
                     levels, log_range=None):
    """The ``intervals="robust"`` quantiles (ln y) at ``levels``, shape (n_levels, n_rows).

    At a probability ``p <= 0.5`` the lower of the posterior's and the reference
    distribution's quantiles at the recalibrated level ``lower_level(p)``; above 0.5
    the higher of the two at ``upper_level(p)``. Non-decreasing in ``p`` per row.
    ``log_range`` (the training stars' true ln y range) bounds the reference
    quantiles: a flat prior *on the range the model was trained on*, so an interval
    reaches beyond it only as far as the posterior itself does (the reference alone
    makes no 25 Gyr giants; a posterior wide enough still can). Where the reference's
    quantile is the further one and reaches the bound, the interval's end *is* the
    bound: an upper end equal to the training maximum means "not excluded up to the
    oldest (heaviest) training star", not a measured limit. ``lower_level`` and
    ``upper_level`` are one per calibration probability, shared by every row, or
    (n_rows, n_probabilities): each row's own (`levels_along`).

    Examples
    --------
    With a flat prior the two distributions coincide, and identity levels change
    nothing:

    >>> import numpy as np
    >>> from stellar_ml_ages.reference_prior import robust_quantiles
    >>> p = np.array([0.1, 0.5, 0.9])
    >>> knots = np.log([[1.0, 1.2, 1.5]])
    >>> out = robust_quantiles(knots, p, [-5.0, 5.0], [1.0], p, p, [0.1, 0.9])
    >>> bool(np.allclose(out[:, 0], knots[0, [0, 2]]))
    True
    """
    knots = np.atleast_2d(np.asarray(knots, dtype=np.float64))
    probability = np.asarray(probability, dtype=np.float64)
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    lower = levels <= 0.5
    # Per row: (n_rows, n_grid) tables of levels (`levels_along`) or one shared row.
    lower_level = np.atleast_2d(np.asarray(lower_level, dtype=np.float64))
    upper_level = np.atleast_2d(np.asarray(upper_level, dtype=np.float64))
    recalibrated = np.empty((len(levels), len(knots)))
    for k, level in enumerate(levels):
        table = lower_level if lower[k] else upper_level
        recalibrated[k] = (np.interp(level, probability, table[0]) if len(table) == 1
                           else _interp_rows(probability, table, level))
    # One pass over the rows' reference CDFs for every level asked for.
    reference = reference_quantiles(knots, probability, log_edges, density, recalibrated)
    if log_range is not None:
        reference = np.clip(reference, log_range[0], log_range[1])
    out = np.empty((len(levels), len(knots)))
    for k, u in enumerate(recalibrated):
        posterior = _interp_rows(probability, knots, u)
        out[k] = np.fmin(posterior, reference[k]) if lower[k] else np.fmax(posterior,
                                                                            reference[k])
        out[k][~np.isfinite(posterior)] = np.nan
    # Guard the order across the two branches (and ties of recalibrated levels).
    order = np.argsort(levels, kind="stable")
    out[order] = np.fmax.accumulate(out[order], axis=0)
    return out


def _stacked_density(knots, probability, log_edges):
    """The average of the rows' predictive densities, per bin of ln y (sums to 1 x width)."""
    cdf_at_edges = np.array([np.interp(log_edges, row, probability, left=0.0, right=1.0)
                             for row in knots])
    mass = np.diff(cdf_at_edges, axis=1).mean(axis=0)
    mass = mass / mass.sum()
    return mass / np.diff(log_edges)


def fit_reference_prior(knots, probability, log_truth, groups, n_bins=REFERENCE_PRIOR_BINS,
                        log_range=None, along=None, power=1.0):
    """The card entry: per group, the stacked prior and the recalibrated levels.

    Parameters
    ----------
    knots : ndarray, shape (n_stars, n_levels)
        Calibrated out-of-bag quantiles (ln y) of the training stars.
    probability : array-like
        The calibration grid.
    log_truth : ndarray
        The stars' true ln y.
    groups : dict
        Group name (``"all"``, ``"RGB"``, ``"RC"``) to a boolean row mask.
    log_range : (float, float), optional
        Bounds of the reference quantiles (ln y): the range the model was trained
        on. Default: the group's true values' range.
    along : (str, ndarray, callable), optional
        ``(feature, values, bins)``: also recalibrate the levels in bins of one input
        feature, per group. ``values`` is the feature per star (canonical units);
        ``bins(values)`` returns a group's bin edges and each of its stars' bin. The
        group gets an ``along`` entry (``feature``, the bins' median values as
        ``centre``, their ``lower_level`` and ``upper_level`` tables and star counts
        ``n``), which `levels_along` interpolates between the centres.
    power : float
        Divide the predictive densities by the prior raised to this power (>= 1).
        At 1 the reference distribution is the likelihood under a flat prior. A
        forest's predictive distribution is pulled towards the training mean by more
        than a posterior under the training prior is, the more so the noisier the
        labels, so one division can leave the ends of the range under-covered;
        ``power`` > 1 undoes more of that pull
        (``stellar_ml_ages.training.pipeline.choose_prior_power`` picks it on the
        training stars). The group's ``density`` is then the prior raised to
        ``power`` and renormalised (the density the model divides by), and the
        group records ``prior_power``.

    Returns
    -------
    dict
        ``{"method", "groups": {name: {"log_edges", "density", "lower_level",
        "upper_level", "log_range", "n"}}}`` (and ``"along"`` with ``along``: bins
        with fewer than ``MIN_STARS_ALONG`` stars, or values that are not finite, are
        left out of it). A star's true value is below the robust lower end
        at level ``u`` exactly when ``u`` exceeds the larger of its two CDFs at the
        truth, and above the upper end when ``u`` is below the smaller: the
        quantiles of those two numbers over the training stars are the levels that
        make each nominal probability hold (``lower_level``, ``upper_level``, one per
        calibration probability).
    """
    probability = np.asarray(probability, dtype=np.float64)
    knots = np.asarray(knots, dtype=np.float64)
    entry = {"method": "central intervals reaching the further of the posterior's and the "
                       "reference distribution's quantiles (the state's training prior, the "
                       "stacked out-of-bag predictive density, divided out), at levels "
                       "recalibrated on the training stars",
             "groups": {}}
    for name, rows in groups.items():
        usable = rows & np.all(np.isfinite(knots), axis=1) & np.isfinite(log_truth)
        if usable.sum() < 100:
            continue
        sample, truth = knots[usable], log_truth[usable]
        log_edges = np.linspace(sample.min(), sample.max(), n_bins + 1)
        density = _stacked_density(sample, probability, log_edges)
        if power != 1.0:
            density = density ** power
            density = density / np.sum(density * np.diff(log_edges))
        bounds = (truth.min(), truth.max()) if log_range is None else log_range
        posterior = _posterior_cdf(sample, probability, truth)
        # The reference quantiles are clipped to the bounds: their CDF is 0 below, 1 above.
        reference = np.where(truth < bounds[0], 0.0, np.where(
            truth > bounds[1], 1.0,
            reference_cdf(sample, probability, log_edges, density, truth)))

        def levels(scores):
            level = np.maximum.accumulate(np.quantile(scores, probability))
            return [round(float(v), 12) for v in np.clip(level, probability[0],
                                                         probability[-1])]

        below, above = np.maximum(posterior, reference), np.minimum(posterior, reference)
        entry["groups"][name] = {
            "log_edges": [round(float(v), 12) for v in log_edges],
            "density": [round(float(v), 12) for v in density],
            "lower_level": levels(below),
            "upper_level": levels(above),
            "log_range": [round(float(bounds[0]), 12), round(float(bounds[1]), 12)],
            "n": int(usable.sum()),
            # Only where it is not 1: cards fitted with one division stay byte-identical.
            **({"prior_power": float(power)} if power != 1.0 else {}),
        }
        if along is not None:
            feature, values, bins = along
            values = np.asarray(values, dtype=np.float64)[usable]
            known = np.isfinite(values)
            edges, which = bins(values[known])
            table = {"feature": feature, "centre": [], "lower_level": [], "upper_level": [],
                     "n": []}
            for b in range(max(len(edges) - 1, 1)):
                rows = which == b
                # A bin's outer levels rest on a few of its stars: none on fewer than
                # MIN_STARS_ALONG (its stars take the neighbouring bins' levels).
                if rows.sum() < MIN_STARS_ALONG:
                    continue
                table["centre"].append(round(float(np.median(values[known][rows])), 12))
                table["lower_level"].append(levels(below[known][rows]))
                table["upper_level"].append(levels(above[known][rows]))
                table["n"].append(int(rows.sum()))
            if table["n"]:
                entry["groups"][name]["along"] = table
    return entry


def group_robust_quantiles(entry, knots, probability, levels, values=None):
    """`robust_quantiles` of rows under one fitted group: shape (n_levels, n_rows).

    ``entry`` is a group of a card's ``reference_prior`` (`fit_reference_prior`'s
    output): its density, range and levels, the latter at each row's ``values`` of
    the group's ``along`` feature if it has one (`levels_along`).
    """
    lower_level, upper_level = levels_along(entry, values)
    return robust_quantiles(knots, probability, entry["log_edges"], entry["density"],
                            lower_level, upper_level, levels, entry.get("log_range"))


def worst_cell_coverage(inside, cells, min_stars=50):
    """The lowest coverage over cells of at least ``min_stars`` stars, and that cell's size.

    ``inside``: whether each star's truth is inside its interval; ``cells``: a label
    per star (None for stars in no cell). Returns ``(coverage, n)``; ``(nan, 0)``
    without a cell that large. Of cells with the same coverage, the smaller.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.reference_prior import worst_cell_coverage
    >>> inside = np.array([True] * 60 + [False] * 40 + [True] * 30 + [False] * 30)
    >>> cells = np.array(["a"] * 100 + ["b"] * 60)
    >>> worst_cell_coverage(inside, cells)
    (0.5, 60)
    """
    inside = np.asarray(inside, dtype=bool)
    cells = np.asarray(cells, dtype=object)
    worst, size = np.nan, 0
    for cell in sorted({c for c in cells if c is not None}):
        rows = cells == cell
        n = int(rows.sum())
        if n >= min_stars:
            coverage = float(np.mean(inside[rows]))
            # NaN (no cell yet) compares False.
            if not coverage >= worst or (coverage == worst and n < size):
                worst, size = coverage, n
    return worst, size
