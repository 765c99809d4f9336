"""Population-level ages and masses: stacked predictive distributions and trends.

Population studies need the distribution of ages of a *group* of stars, not one
number per star. The histogram of point estimates is the wrong tool: each point
estimate is E[ln age | labels], pulled towards the middle of the training set, so
the histogram is too narrow and its tails too light (out of fold, the fraction of
α-poor stars older than 8 Gyr comes out about 0.6 times the truth). Averaging (stacking)
the stars' calibrated predictive distributions does not compress: for stars
selected by their labels, the average of p(age | labels) over the selection is
the selection's age distribution, *if* the stars follow the training set's
relation between labels and age (the Kepler field's, in the packaged models).
That assumption, and where it holds, is on the "Population ages" page of the docs.

Each result comes with a band (``band_for``): by default, where the distribution
of the *population* the stars were drawn from lies (the stars resampled, their
distributions stacked); or, with ``band_for="sample"``, where the true values of
*these* stars lie (one draw from each star's distribution). Neither includes the
model's own systematic error, measured out of fold on the "Population ages" page.
"""

import itertools
import numbers
import warnings

import astropy.units as u
import numpy as np
from astropy.table import QTable

from .annotate import quantile_suffix
from .distributions import PredictiveDistribution, predictive_distribution
from .exceptions import LabelNoiseWarning

__all__ = ["DECONVOLUTION_ITERATIONS", "deconvolve", "population_distribution",
           "population_trend"]

#: Grid points (in ln y) on which stacked quantiles are found.
_QUANTILE_GRID = 2000


def _distribution(table, target, distribution, model, options):
    if distribution is None:
        distribution = predictive_distribution(table, target, model, **options)
    if not isinstance(distribution, PredictiveDistribution):
        raise TypeError("distribution must be a PredictiveDistribution "
                        "(from stellar_ml_ages.distributions.predictive_distribution)")
    if len(distribution) != len(table):
        raise ValueError(f"distribution has {len(distribution)} rows for a table of {len(table)}")
    return distribution


def _warn_if_widened(distribution, stacked):
    """Warn if any of the ``stacked`` rows' distributions were widened by propagation.

    Propagation perturbs labels that already carry their noise: a widened star's
    distribution counts that noise once more, and so does the stack. Rows whose
    errors are within the training noise are not widened (their ERRORS_WIDENED bit
    is clear); only a table that cannot say which rows were widened warns for them.
    """
    if distribution.meta.get("propagate_errors") not in (True, "True", "T"):
        return
    widened = distribution.widened
    if widened is not None and not np.any(widened & stacked):
        return
    which = ("the distributions of stars whose errors exceed the model's training "
             "noise were" if widened is None else
             f"{int(np.sum(widened & stacked))} of the {int(np.sum(stacked))} stacked "
             "stars' distributions (mass_age_flag bit ERRORS_WIDENED) were")
    warnings.warn(
        f"these predictive distributions were made with propagate_errors=True: {which} "
        "widened by noise their labels already carry (labels noisier than DR17 for "
        "giants; SLAM labels below S/N 50 for giants-slam), and the stack is broader "
        "than the population (docs: 'Population ages', 'Noisy labels'). For population "
        "results, stack distributions made without propagate_errors (annotate again "
        "without it), from a model trained for the labels' noise",
        LabelNoiseWarning, stacklevel=3)  # the caller of the population function


def _column_values(table, name, what):
    if name not in table.colnames:
        raise KeyError(f"{what} column {name!r} is not in the table; it has: "
                       f"{', '.join(table.colnames[:20])}")
    column = table[name]
    unit = getattr(column, "unit", None)
    values = column.value if isinstance(column, u.Quantity) else column
    return np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan), unit


def _edges(edges, unit, what):
    """Bin edges as plain floats in ``unit``, checked."""
    if isinstance(edges, u.Quantity):
        # Temperatures in deg_C against a column in K, as add_mass_age reads them.
        try:
            edges = edges.to_value(unit if unit is not None else edges.unit,
                                   equivalencies=u.temperature())
        except u.UnitConversionError as error:
            raise u.UnitConversionError(f"{what} in {edges.unit} cannot be compared with "
                                        f"the column's {unit}: {error}") from None
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.isfinite(edges)) \
            or np.any(np.diff(edges) <= 0):
        raise ValueError(f"{what} must be at least two increasing finite edges, got {edges!r}")
    return edges


def _groups(table, by, by_bins):
    """[(label, boolean row mask)] of the groups asked for."""
    n_rows = len(table)
    if by is None:
        return [("all", np.ones(n_rows, dtype=bool))]
    if isinstance(by, dict):
        groups = []
        for label, mask in by.items():
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != (n_rows,):
                raise ValueError(f"group {label!r}: a mask needs {n_rows} booleans")
            groups.append((str(label), mask))
        return groups
    if not isinstance(by, str):
        mask = np.asarray(by)
        if mask.dtype != bool or mask.shape != (n_rows,):
            raise ValueError(f"by must be a column name, a boolean mask of {n_rows} rows or a "
                             "dict of such masks")
        return [("selected", mask)]
    if by_bins is None:
        column = table[by] if by in table.colnames else None
        if column is None:
            raise KeyError(f"grouping column {by!r} is not in the table")
        values = np.ma.asarray(column)
        present = ~np.ma.getmaskarray(values)
        return [(f"{by} = {value}", present & (np.ma.filled(values, value) == value))
                for value in np.unique(values.compressed())]
    values, unit = _column_values(table, by, "grouping")
    edges = _edges(by_bins, unit, "by_bins")
    groups = []
    for low, high in itertools.pairwise(edges):
        mask = (values >= low) & (values < high)
        groups.append((f"{low:g} <= {by} < {high:g}", mask))
    return groups


def _default_edges(dist, n_bins=30):
    """Edges over the stacked 0.5-99.5% range, rounded outwards."""
    rows = dist[dist.predicted]
    if not len(rows):
        raise ValueError("no row has a prediction: nothing to build a distribution from")
    low = np.nanmin(rows.quantile(0.005).value)
    high = np.nanmax(rows.quantile(0.995).value)
    return np.linspace(np.floor(low * 10) / 10, np.ceil(high * 10) / 10, n_bins + 1)


#: EM iterations of the deconvolution: stopping early is its regularisation (measured
#: out of fold: docs/population.rst).
DECONVOLUTION_ITERATIONS = 10
_METHODS = ("stacked", "deconvolved")


def deconvolve(bin_probability, prior, n_iterations=DECONVOLUTION_ITERATIONS, floor=1e-6):
    """Bin fractions of a population whose prior differs from the training set's.

    Each star's predictive probability per bin, divided by the training prior, is
    its likelihood; expectation-maximisation finds the population's bin fractions
    that maximise the product of the stars' likelihoods, starting from the prior
    (from which the first iteration is plain stacking). Stopping after
    ``n_iterations`` regularises.

    Parameters
    ----------
    bin_probability : ndarray, shape (n_stars, n_bins)
    prior : ndarray, shape (n_bins,)
        The training prior's fraction in each bin.

    Returns
    -------
    ndarray, shape (n_bins,)
        Fractions summing to 1.
    """
    prior = np.asarray(prior, dtype=np.float64)
    likelihood = bin_probability / np.maximum(prior, floor)
    fraction = prior / max(prior.sum(), 1e-300)
    for _ in range(int(n_iterations)):
        weights = likelihood * fraction
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        fraction = weights.mean(axis=0)
    return fraction / max(fraction.sum(), 1e-300)


#: What a band is for (`population_distribution`'s ``band_for``).
_BAND_KINDS = ("population", "sample")


def _check_band_for(band_for):
    if band_for not in _BAND_KINDS:
        raise ValueError(f"band_for must be one of {', '.join(map(repr, _BAND_KINDS))}; "
                         f"got {band_for!r}")


def _replicate_cdfs(dist, values, n_bootstrap, band_for, rng):
    """Distribution functions at ``values`` (in ``dist.unit``) of the band's replicates,
    shape (n_bootstrap, len(values)).

    ``"population"``: the stars resampled with replacement, each replicate the mean of
    the resampled stars' distribution functions (the uncertainty of the distribution
    of the population the stars were drawn from, given the model). ``"sample"``: the
    same stars, one draw from each star's distribution per replicate (where the true
    values of *these* stars lie, given the model).
    """
    n = len(dist)
    if band_for == "population":
        per_star = dist.cdf(np.asarray(values, dtype=np.float64) * dist.unit)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap) / n
        return weights @ per_star
    values = np.asarray(values, dtype=np.float64)
    return np.array([np.searchsorted(np.sort(dist.sample(rng).value), values) / n
                     for _ in range(n_bootstrap)])


def _band_levels(band):
    if isinstance(band, bool) or not isinstance(band, numbers.Real) or not 0 < band < 1:
        raise ValueError(f"band is the probability of the central bootstrap interval, in "
                         f"(0, 1); got {band!r}")
    return (0.5 - band / 2, 0.5 + band / 2)


def population_distribution(table, target="age", *, bins=None, by=None, by_bins=None,
                            method="stacked", n_bootstrap=200, band=0.68,
                            band_for="population", seed=0, distribution=None, model=None,
                            **options):
    """The distribution of ``target`` over groups of stars, from their predictive distributions.

    Each group's distribution is the average of its stars' calibrated predictive
    distributions (stacking), given per bin with a bootstrap band; the histogram
    of the point estimates is given beside it for comparison.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Stars with the model's inputs (or annotated with ``quantiles="all"``); rows
        without a prediction (out of domain, flagged) are left out and counted.
    target : str
        ``"age"`` or ``"mass"``.
    bins : `~astropy.units.Quantity` or array-like, optional
        Edges of the bins of ``target`` (plain numbers are in the target's unit).
        Default: 30 bins over the stars' 0.5-99.5% range.
    by : str, boolean array, dict or None
        Groups: a column name (with ``by_bins`` edges, e.g. ``by="FE_H",
        by_bins=[-1, -0.3, 0, 0.2, 0.6]``; without, one group per distinct value,
        e.g. ``"EVSTATE"``), a boolean mask, or ``{label: mask}``. None: all stars.
    by_bins : array-like or `~astropy.units.Quantity`, optional
        Edges for a numeric ``by`` column: ``low <= value < high``.
    method : {"stacked", "deconvolved"}
        ``"stacked"`` (default): the average of the stars' predictive
        distributions, right for groups selected by their labels from a population
        like the training set (out of fold: KS distance 0.01-0.04 from the truth in
        [Fe/H], [α/M] and state groups). ``"deconvolved"``: the training prior
        replaced by the group's own (`~stellar_ml_ages.population.deconvolve`),
        for populations whose age or mass distribution differs from the Kepler
        field's for reasons other than their labels (selected by age or mass,
        another part of the Galaxy); worse
        than stacking for label-selected groups. Fractions are then relative to the
        stars' probability inside the outer edges.
    n_bootstrap : int
        Replicates for the bands (0: no bands).
    band : float
        Probability of the central interval of the replicates given as the band (0.68:
        their 16th to 84th percentiles; 0.95 for 2.5 to 97.5).
    band_for : {"population", "sample"}
        What the band is an interval for. ``"population"`` (default): the
        distribution of the population the stars were drawn from (the thick disc,
        say, of which these are a random sample): the stars are resampled and each
        replicate stacks the resampled stars' distributions. ``"sample"``: the true
        values of *these* stars: one draw from each star's distribution per
        replicate, no resampling. Neither includes the model's own systematic error
        (docs: "Population ages"). The deconvolved method resamples the stars
        (``"population"`` only).
    seed : int
        Seed of the replicates.
    distribution : `~stellar_ml_ages.distributions.PredictiveDistribution`, optional
        Predictive distributions already computed for ``table``'s rows.
    model, **options
        As for `~stellar_ml_ages.distributions.predictive_distribution`.

    Returns
    -------
    `~astropy.table.QTable`
        One row per group and bin: ``group``, ``n_stars`` (with a prediction),
        ``n_without_prediction``, ``low``, ``high``, ``fraction`` (of the group's
        stars in the bin, stacked), ``fraction_low``/``fraction_high`` (bootstrap
        band), ``density`` (fraction per unit of ``target``), ``cumulative``
        (fraction below ``high``) with ``cumulative_low``/``cumulative_high``, and
        ``point_fraction`` (the histogram of point estimates). Fractions in a
        group sum to the probability inside the outer edges. ``meta["n_in_no_group"]``
        counts the rows in no group (a missing ``by`` value, or one outside
        ``by_bins``).

    Examples
    --------
    >>> import astropy.units as u
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.population import population_distribution
    >>> ages = population_distribution(demo_table(), "age", model="giants",
    ...                                bins=[0, 2, 4, 8, 14] * u.Gyr, n_bootstrap=50)
    >>> ages["low"].unit, len(ages)
    (Unit("Gyr"), 4)
    >>> bool(abs(ages["fraction"].sum() - 1) < 0.05)
    True
    """
    levels = _band_levels(band)
    _check_band_for(band_for)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    if method == "deconvolved" and band_for != "population":
        raise ValueError("the deconvolved distribution's band resamples the stars: "
                         "band_for='population' only")
    dist = _distribution(table, target, distribution, model, options)
    edges = _edges(_default_edges(dist) if bins is None else bins, dist.unit, "bins")
    prior = dist.prior_fractions(edges * dist.unit) if method == "deconvolved" else None
    rng = np.random.default_rng(seed)
    rows_out = []
    groups = _groups(table, by, by_bins)
    stacked = np.zeros(len(dist), dtype=bool)
    for _, mask in groups:
        stacked |= mask & dist.predicted
    _warn_if_widened(dist, stacked)
    for label, mask in groups:
        chosen = mask & dist.predicted
        group = dist[chosen]
        n_stars = int(chosen.sum())
        fraction_band = np.full((2, len(edges) - 1), np.nan)
        cumulative_band = np.full((2, len(edges) - 1), np.nan)
        if method == "deconvolved":
            fraction, below, fraction_band, cumulative_band = _deconvolved(
                group, edges, prior, n_bootstrap, levels, rng)
        else:
            below = group.stacked_cdf(edges) if n_stars else np.full(len(edges), np.nan)
            fraction = np.diff(below)
        if n_stars and n_bootstrap and method == "stacked":
            # Each replicate's distribution function at every edge.
            replicates = _replicate_cdfs(group, edges, int(n_bootstrap), band_for, rng)
            fraction_band = np.quantile(np.diff(replicates, axis=1), levels, axis=0)
            cumulative_band = np.quantile(replicates[:, 1:], levels, axis=0)
        points = group.point[np.isfinite(group.point)]
        point_fraction = (np.histogram(points, edges)[0] / len(points) if len(points)
                          else np.full(len(fraction), np.nan))
        for k in range(len(fraction)):
            rows_out.append((label, n_stars, int((mask & ~dist.predicted).sum()), edges[k],
                             edges[k + 1], fraction[k], fraction_band[0, k],
                             fraction_band[1, k],
                             fraction[k] / (edges[k + 1] - edges[k]), below[k + 1],
                             cumulative_band[0, k], cumulative_band[1, k], point_fraction[k]))
    names = ("group", "n_stars", "n_without_prediction", "low", "high", "fraction",
             "fraction_low", "fraction_high", "density", "cumulative", "cumulative_low",
             "cumulative_high", "point_fraction")
    out = QTable(rows=rows_out, names=names) if rows_out else QTable(names=names)
    for name in ("low", "high"):
        out[name] = u.Quantity(np.asarray(out[name], dtype=np.float64), dist.unit)
    out["density"] = u.Quantity(np.asarray(out["density"], dtype=np.float64), 1 / dist.unit)
    described = ("stacked predictive distributions" if method == "stacked" else
                 f"deconvolved: EM over per-star likelihoods (predictive / training prior), "
                 f"{DECONVOLUTION_ITERATIONS} iterations from the prior")
    out.meta.update(_meta(dist, target, described, n_bootstrap, band, band_for, seed))
    # Rows whose grouping value is missing or outside ``by_bins`` are in no group:
    # counted here, so that every input row is accounted for.
    in_a_group = np.zeros(len(table), dtype=bool)
    for _, mask in groups:
        in_a_group |= mask
    out.meta["n_in_no_group"] = int((~in_a_group).sum())
    if method == "deconvolved":
        out.meta["band"] = (f"{100 * levels[0]:g}th-{100 * levels[1]:g}th percentiles of "
                            "bootstrap replicates (stars resampled, EM repeated)")
    return out


def _deconvolved(group, edges, prior, n_bootstrap, levels, rng):
    """Fractions, CDF at the edges and bootstrap bands of the deconvolved distribution."""
    n_bins = len(edges) - 1
    if not len(group):
        empty = np.full((2, n_bins), np.nan)
        return np.full(n_bins, np.nan), np.full(len(edges), np.nan), empty, empty.copy()
    probability = group.bin_probabilities(edges * group.unit)
    fraction = deconvolve(probability, prior)
    below = np.concatenate([[0.0], np.cumsum(fraction)])
    fraction_band = cumulative_band = np.full((2, n_bins), np.nan)
    if n_bootstrap:
        replicates = np.array([deconvolve(probability[rng.integers(0, len(group), len(group))],
                                          prior) for _ in range(int(n_bootstrap))])
        fraction_band = np.quantile(replicates, levels, axis=0)
        cumulative_band = np.quantile(np.cumsum(replicates, axis=1), levels, axis=0)
    return fraction, below, fraction_band, cumulative_band


def _quantile_grid(dist):
    """Values (in ``dist.unit``) spanning every row's distribution, for stacked quantiles."""
    low = np.nanmin(dist.quantile(0.0).value)
    high = np.nanmax(dist.quantile(1.0).value)
    return (np.geomspace(low, high, _QUANTILE_GRID) if dist.log and low > 0
            else np.linspace(low, high, _QUANTILE_GRID))


def _stacked_quantiles(dist, probabilities):
    """Quantiles of the average of the rows' distribution functions."""
    grid = _quantile_grid(dist)
    return np.interp(probabilities, dist.stacked_cdf(grid * dist.unit), grid)


def population_trend(table, x, target="age", *, bins, quantiles=(0.16, 0.5, 0.84),
                     n_bootstrap=200, band=0.68, band_for="population", seed=0,
                     distribution=None, model=None, **options):
    """How the population's ``target`` changes with another quantity ``x``.

    For each bin of ``x``, the quantiles (by default median, 16th and 84th
    percentiles) of the bin's stacked predictive distribution, with bootstrap
    errors on each, and the median of the point estimates for comparison.

    Parameters
    ----------
    table : `~astropy.table.Table`
    x : str
        Column binned along (e.g. ``"FE_H"``, ``"ALPHA_M"``).
    target : str
    bins : array-like or `~astropy.units.Quantity`
        Edges of the ``x`` bins (``low <= x < high``).
    quantiles : sequence of float
        Probabilities of the population quantiles per bin.
    n_bootstrap, band, band_for, seed, distribution, model, **options
        As for `population_distribution`: with ``band_for="population"`` each
        replicate's quantiles are those of the resampled stars' stacked
        distribution, with ``"sample"`` those of one draw from each star.

    Returns
    -------
    `~astropy.table.QTable`
        One row per ``x`` bin: ``low``, ``high``, ``x_median``, ``n_stars``, and
        per quantile ``q`` (named by percent, ``p50`` for the median) the value
        ``p50`` and its bootstrap band ``p50_low``, ``p50_high``; ``point_median``
        (the median of the point estimates, for comparison).

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.population import population_trend
    >>> trend = population_trend(demo_table(), "FE_H", "age", model="giants",
    ...                          bins=[-1.0, -0.3, 0.0, 0.5], n_bootstrap=50)
    >>> trend["p50"].unit
    Unit("Gyr")
    >>> bool((trend["p16"] <= trend["p50"]).all() and (trend["p50"] <= trend["p84"]).all())
    True
    """
    if not isinstance(x, str):
        raise TypeError(f"x must be a column name, not {type(x).__name__}")
    probabilities = np.asarray(quantiles, dtype=np.float64)
    if probabilities.ndim != 1 or not np.all((probabilities > 0) & (probabilities < 1)):
        raise ValueError(f"quantiles must be probabilities in (0, 1), got {quantiles!r}")
    levels = _band_levels(band)
    _check_band_for(band_for)
    dist = _distribution(table, target, distribution, model, options)
    x_values, x_unit = _column_values(table, x, "x")
    edges = _edges(bins, x_unit, "bins")
    rng = np.random.default_rng(seed)
    names = [quantile_suffix(p)[1:] for p in probabilities]
    out = QTable()
    columns = {key: [] for key in ("low", "high", "x_median", "n_stars", "point_median")}
    for name in names:
        for key in (name, f"{name}_low", f"{name}_high"):
            columns[key] = []
    _warn_if_widened(dist, (x_values >= edges[0]) & (x_values < edges[-1]) & dist.predicted)
    for low, high in itertools.pairwise(edges):
        chosen = (x_values >= low) & (x_values < high) & dist.predicted
        group = dist[chosen]
        n_stars = int(chosen.sum())
        values = _stacked_quantiles(group, probabilities) if n_stars else \
            np.full(len(probabilities), np.nan)
        interval = np.full((2, len(probabilities)), np.nan)
        if n_stars and n_bootstrap and band_for == "sample":
            # One draw per star: each replicate's quantiles are its draws' own.
            replicates = np.array([np.quantile(group.sample(rng).value, probabilities)
                                   for _ in range(int(n_bootstrap))])
            interval = np.quantile(replicates, levels, axis=0)
        elif n_stars and n_bootstrap:
            grid = _quantile_grid(group)
            cdfs = _replicate_cdfs(group, grid, int(n_bootstrap), band_for, rng)
            replicates = np.array([np.interp(probabilities, cdf, grid) for cdf in cdfs])
            interval = np.quantile(replicates, levels, axis=0)
        columns["low"].append(low)
        columns["high"].append(high)
        columns["x_median"].append(np.median(x_values[chosen]) if n_stars else np.nan)
        columns["n_stars"].append(n_stars)
        points = group.point[np.isfinite(group.point)]
        columns["point_median"].append(np.median(points) if len(points) else np.nan)
        for k, name in enumerate(names):
            columns[name].append(values[k])
            columns[f"{name}_low"].append(interval[0, k])
            columns[f"{name}_high"].append(interval[1, k])
    for key, values in columns.items():
        values = np.asarray(values, dtype=np.int64 if key == "n_stars" else np.float64)
        if key in ("low", "high", "x_median"):
            out[key] = values * x_unit if x_unit is not None else values
        elif key == "n_stars":
            out[key] = values
        else:
            out[key] = values * dist.unit
    out.meta.update(_meta(dist, target, "quantiles of stacked predictive distributions",
                          n_bootstrap, band, band_for, seed))
    out.meta["x"] = x
    return out


def _meta(dist, target, method, n_bootstrap, band, band_for, seed):
    low, high = _band_levels(band)
    how = ("stars resampled, their predictive distributions stacked" if band_for == "population"
           else "one draw from each star's predictive distribution")
    return {"target": target, "method": method, "model": dist.meta.get("model", ""),
            "n_bootstrap": int(n_bootstrap), "seed": int(seed) if isinstance(
                seed, numbers.Integral) else str(seed),
            "band_for": band_for,
            "band": f"{100 * low:g}th-{100 * high:g}th percentiles of {int(n_bootstrap)} "
                    f"replicates ({how})",
            "prior": "the training set's (Kepler field) relation between labels and target"}

