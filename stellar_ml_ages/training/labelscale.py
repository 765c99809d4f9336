"""Put labels from another ASPCAP run on the APOGEE DR17 allStar scale.

The full-range training set (preliminary APOKASC-3) comes with labels from a
preliminary DR17 ASPCAP run. Users annotate final DR17 allStar values, whose zero
points differ by a few hundredths of a dex (and tens of kelvin). For every label a
linear correction is measured on the stars that have both:

.. math::

    y_{\\rm DR17} - x = a + \\sum_k b_k\\, t_k

where the candidate trend terms :math:`t_k` are Teff, [Fe/H] and the label itself
(each centred on the overlap's median and clipped to the overlap's 1-99% range,
so that stars outside the overlap get no extrapolated trend), plus a red-clump
indicator. A trend is kept only where it matters: where it moves the correction by
more than a quarter of the offset-only robust scatter across the overlap's 5-95%
range of its variable.

The label's own trend is a change of scale, and it is identified by the overlap
only where the two runs' noise levels are known: a least-squares slope of
``reference - source`` on the noisy source value is attenuated, the reverse
regression is inflated the other way, and the truth lies between them at a point
set by the ratio of the two runs' noise variances. It is therefore fitted as a
Deming (errors-in-variables) regression with that ratio taken from the runs' own
reported errors, and kept only where (a) both runs report errors, (b) the forward
and reverse regressions lie on the same side of 1 (whatever the noise split, the
data say the scale differs) and (c) it matters as above. A label whose source run
reports no errors ([C/M], [N/M] of the preliminary APOKASC-3 run) gets no scale
term: its slope is bracketed by the data, not determined.

The other trends are then fitted by least squares with iterative 3-sigma
clipping, and kept only where they matter and their slope is at least three times
its standard error. Teff and [Fe/H] are not offered as separate trends of
themselves. ``method="symmetric"`` restores the version 2 rule (scale slope from
the ratio of the runs' clipped deviations, which assumes equal noise in both;
trends kept on size alone), for comparison.

The fitted corrections are plain numbers (`LabelCorrection.as_dict`), recorded in
the model cards and the reproduction report.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LabelCorrection", "deming_slope", "fit_label_correction", "robust_scatter"]

#: Candidate trend variables of every correction, by name.
TREND_VARIABLES = ("teff", "fe_h", "self", "is_rc")
_TREND_UNITS = {"teff": 1000.0, "fe_h": 1.0, "self": 1.0, "is_rc": 1.0}


def robust_scatter(values):
    """1.4826 times the median absolute deviation of the finite values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass
class LabelCorrection:
    """A fitted correction of one label onto the reference scale.

    Attributes
    ----------
    label : str
        Canonical feature name (``"teff"``, ``"c_fe"``, ...).
    source, reference : str
        Column of the preliminary run, and of the DR17 reference it is matched to.
    offset : float
        Constant term :math:`a`, in the label's unit.
    trends : dict
        Kept trend terms: variable name to ``{"slope", "centre", "low", "high", "scale"}``
        (slope per ``scale`` units of the variable, clipped to [low, high]).
    n_overlap : int
        Stars used in the fit after clipping.
    scatter_before, scatter_after : float
        Robust scatter of reference minus source, before and after the correction.
    median_before : float
        Median of reference minus source (the plain zero-point offset).
    """

    label: str
    source: str
    reference: str
    offset: float
    trends: dict = field(default_factory=dict)
    n_overlap: int = 0
    scatter_before: float = float("nan")
    scatter_after: float = float("nan")
    median_before: float = float("nan")
    #: Why no scale term was kept, with the forward and reverse slopes (Deming rule).
    scale_note: dict = field(default_factory=dict)

    def apply(self, values, variables):
        """Corrected values: ``values + offset + trends``.

        Parameters
        ----------
        values : array-like
            The label in the source run.
        variables : dict
            Trend variable name to array (``"self"`` may be omitted: ``values`` is used).
        """
        values = np.asarray(values, dtype=np.float64)
        corrected = values + self.offset
        for name, trend in self.trends.items():
            variable = values if name == "self" else np.asarray(variables[name], dtype=np.float64)
            clipped = np.clip(variable, trend["low"], trend["high"])
            corrected = corrected + trend["slope"] * (clipped - trend["centre"]) / trend["scale"]
        return corrected

    def as_dict(self):
        """Plain-number summary for a model card or report."""
        return {
            "label": self.label, "source": self.source, "reference": self.reference,
            "offset": self.offset, "trends": self.trends, "n_overlap": self.n_overlap,
            "median_offset_before": self.median_before,
            "robust_scatter_before": self.scatter_before,
            "robust_scatter_after": self.scatter_after,
            **({"scale_not_kept": self.scale_note} if self.scale_note else {}),
        }


def _design(variables, names, stats):
    columns = [np.ones(len(next(iter(variables.values()))))]
    for name in names:
        low, high, centre, scale = stats[name]
        columns.append((np.clip(variables[name], low, high) - centre) / scale)
    return np.column_stack(columns)


def _clipped_fit(design, residual, n_iterations=5):
    use = np.ones(len(residual), dtype=bool)
    for _ in range(n_iterations):
        coefficients, *_ = np.linalg.lstsq(design[use], residual[use], rcond=None)
        misfit = residual - design @ coefficients
        limit = 3.0 * max(robust_scatter(misfit[use]), 1e-12)
        new_use = np.abs(misfit) < limit
        if np.array_equal(new_use, use):
            break
        use = new_use
    return coefficients, use


def _standard_errors(design, residual, coefficients, use):
    """Formal standard errors of least-squares coefficients on the rows in ``use``."""
    design, residual = design[use], residual[use]
    dof = max(len(residual) - design.shape[1], 1)
    variance = float(np.sum((residual - design @ coefficients) ** 2)) / dof
    return np.sqrt(np.diag(np.linalg.pinv(design.T @ design)) * variance)


def _clipped_pairs(source, reference, n_iterations=5):
    """Pairs whose difference lies within 3 robust sigma of its median."""
    use = np.ones(len(source), dtype=bool)
    for _ in range(n_iterations):
        difference = reference - source
        limit = 3.0 * max(robust_scatter(difference[use]), 1e-12)
        new_use = np.abs(difference - np.median(difference[use])) < limit
        if np.array_equal(new_use, use):
            break
        use = new_use
    return use


def _scale_ratio(source, reference):
    """std(reference) / std(source) over pairs whose difference is within 3 sigma."""
    use = _clipped_pairs(source, reference)
    return float(np.std(reference[use]) / np.std(source[use]))


def deming_slope(source, reference, variance_ratio):
    """Errors-in-variables slope of ``reference`` on ``source``.

    ``variance_ratio`` is the noise variance of ``reference`` over that of
    ``source``: 0 gives the reverse regression, infinity the forward (ordinary
    least-squares) one.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.labelscale import deming_slope
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(0, 1, 20000)
    >>> x = truth + rng.normal(0, 0.5, 20000)
    >>> y = 1.2 * truth + rng.normal(0, 0.25, 20000)
    >>> round(deming_slope(x, y, 0.25), 2), round(float(np.polyfit(x, y, 1)[0]), 2)
    (1.2, 0.95)
    """
    x = np.asarray(source, dtype=np.float64) - np.mean(source)
    y = np.asarray(reference, dtype=np.float64) - np.mean(reference)
    sxx, syy, sxy = np.mean(x * x), np.mean(y * y), np.mean(x * y)
    spread = syy - variance_ratio * sxx
    return float((spread + np.sqrt(spread**2 + 4 * variance_ratio * sxy**2)) / (2 * sxy))


def _median_error(errors, usable):
    if errors is None:
        return float("nan")
    errors = np.asarray(errors, dtype=np.float64)[usable]
    errors = errors[np.isfinite(errors) & (errors > 0)]
    return float(np.median(errors)) if len(errors) else float("nan")


def fit_label_correction(label, source_values, reference_values, variables, *,
                         source="", reference="", candidates=TREND_VARIABLES,
                         source_errors=None, reference_errors=None, method="deming"):
    """Fit the correction of one label from a preliminary run onto the reference scale.

    Parameters
    ----------
    label : str
        Canonical feature name.
    source_values, reference_values : array-like
        The label in the preliminary run and in the reference (DR17) run, for the
        same stars; non-finite pairs are ignored.
    variables : dict
        Trend variable name (``"teff"``, ``"fe_h"``, ``"is_rc"``) to arrays of the
        same stars, in the source run.
    source, reference : str
        Column names, recorded in the result.
    candidates : sequence of str
        Trend variables to try.
    source_errors, reference_errors : array-like, optional
        Each run's reported 1-sigma errors of the label for the same stars: their
        medians set the noise ratio of the Deming fit of the label's own scale.
        Without both, no scale term is fitted (``method="deming"``).
    method : {"deming", "symmetric"}
        How the scale term is identified (see the module docstring); ``"symmetric"``
        is the version 2 rule.

    Returns
    -------
    LabelCorrection

    Examples
    --------
    A pure zero-point offset is found as such, with no trend kept:

    >>> import numpy as np
    >>> from stellar_ml_ages.training.labelscale import fit_label_correction
    >>> rng = np.random.default_rng(1)
    >>> teff = rng.uniform(4200, 5100, 2000)
    >>> truth = rng.normal(0.0, 0.1, 2000)
    >>> prelim = truth + rng.normal(0, 0.015, 2000)
    >>> final = truth - 0.05 + rng.normal(0, 0.015, 2000)
    >>> fit = fit_label_correction("c_fe", prelim, final,
    ...                            {"teff": teff, "fe_h": rng.normal(0, 0.2, 2000)})
    >>> round(fit.offset, 2), fit.trends
    (-0.05, {})
    """
    if method not in ("deming", "symmetric"):
        raise ValueError(f"method must be 'deming' or 'symmetric', not {method!r}")
    source_values = np.asarray(source_values, dtype=np.float64)
    reference_values = np.asarray(reference_values, dtype=np.float64)
    variables = {name: np.asarray(values, dtype=np.float64) for name, values in variables.items()}
    variables["self"] = source_values
    # A label is not its own separate trend variable: "self" covers it, symmetrically.
    candidates = [name for name in candidates if name in variables and name != label]
    usable = np.isfinite(source_values) & np.isfinite(reference_values)
    for name in candidates:
        usable &= np.isfinite(variables[name])
    if usable.sum() < 50:
        raise ValueError(f"only {int(usable.sum())} overlap stars to calibrate {label}")
    noise = (_median_error(source_errors, usable), _median_error(reference_errors, usable))
    residual = (reference_values - source_values)[usable]
    variables = {name: values[usable] for name, values in variables.items()}

    stats = {}
    for name in [*candidates, "self"]:
        values = variables[name]
        low, high = np.percentile(values, [1, 99])
        if name == "is_rc":
            low, high = 0.0, 1.0
        stats[name] = (float(low), float(high), float(np.median(values)) if name != "is_rc"
                       else 0.0, _TREND_UNITS[name])
    scatter_before = robust_scatter(residual)

    # The label's own scale.
    source_part = variables["self"]
    reference_part = source_part + residual
    low5, high95 = np.percentile(source_part, [5, 95])
    self_note = {}
    if method == "symmetric":
        scale_slope = _scale_ratio(source_part, reference_part) - 1.0
        identified = True
        self_note["method"] = "ratio of clipped standard deviations (symmetric)"
    else:
        pairs = _clipped_pairs(source_part, reference_part)
        x, y = source_part[pairs], reference_part[pairs]
        forward = float(np.polyfit(x, y, 1)[0])
        reverse = 1.0 / float(np.polyfit(y, x, 1)[0])
        identified = bool(np.all(np.isfinite(noise)) and (forward - 1) * (reverse - 1) > 0)
        scale_slope = deming_slope(x, y, (noise[1] / noise[0]) ** 2) - 1.0 if identified else 0.0
        self_note.update({"method": "Deming fit, noise ratio from the runs' reported errors",
                          "forward_slope": forward - 1.0, "reverse_slope": reverse - 1.0,
                          # None where a run reports no errors (JSON has no NaN).
                          "source_error": noise[0] if np.isfinite(noise[0]) else None,
                          "reference_error": noise[1] if np.isfinite(noise[1]) else None})
    self_kept = ("self" in candidates and identified
                 and abs(scale_slope) * (high95 - low5) > 0.25 * scatter_before)
    rescaled = residual
    if self_kept:
        centre = stats["self"][2]
        rescaled = residual - scale_slope * (np.clip(source_part, *stats["self"][:2]) - centre)

    kept = []
    others = [name for name in candidates if name != "self"]
    if others:
        design = _design(variables, others, stats)
        coefficients, use = _clipped_fit(design, rescaled)
        errors = _standard_errors(design, rescaled, coefficients, use)
        for name, slope, error in zip(others, coefficients[1:], errors[1:], strict=True):
            low5, high95 = np.percentile(variables[name], [5, 95])
            span = 1.0 if name == "is_rc" else (high95 - low5) / stats[name][3]
            significant = method == "symmetric" or abs(slope) > 3.0 * error
            if abs(slope) * span > 0.25 * scatter_before and significant:
                kept.append(name)
    coefficients, use = _clipped_fit(_design(variables, kept, stats), rescaled)
    trends = {
        name: {"slope": float(slope), "centre": stats[name][2], "low": stats[name][0],
               "high": stats[name][1], "scale": stats[name][3]}
        for name, slope in zip(kept, coefficients[1:], strict=True)
    }
    if self_kept:
        trends["self"] = {"slope": float(scale_slope), "centre": stats["self"][2],
                          "low": stats["self"][0], "high": stats["self"][1], "scale": 1.0,
                          **self_note}
    correction = LabelCorrection(
        label=label, source=source, reference=reference, offset=float(coefficients[0]),
        trends=trends, n_overlap=int(use.sum()), scatter_before=scatter_before,
        median_before=float(np.median(residual)),
    )
    if method == "deming" and not self_kept:
        correction.scale_note = {**self_note, "kept": False,
                            "reason": ("no reported errors in both runs: not identified"
                                       if not np.all(np.isfinite(noise)) else
                                       "forward and reverse slopes bracket 1"
                                       if not identified else "too small to matter")}
    after = reference_values[usable] - correction.apply(source_values[usable], variables)
    correction.scatter_after = robust_scatter(after)
    return correction
