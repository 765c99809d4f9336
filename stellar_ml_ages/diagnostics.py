"""What one annotation call did: rows flagged per reason, and the likely cause.

A run in which most rows get no prediction usually has one cause: log g given
linearly, Teff in kK without a unit, a survey whose labels sit on another scale.
`RunSummary` gathers counts over every block of one call (in memory or streamed)
so that the user gets *one* warning per call, which names the counts per reason
and the most likely cause, instead of a silent table of masked values or the
same unit warning once per block.
"""

import functools
import operator
import warnings

import numpy as np

from .config import conf
from .exceptions import (
    AssumedUnitWarning,
    FlaggedRowsWarning,
    LabelNoiseWarning,
    LabelSourceWarning,
    StellarMLAgesWarning,
)
from .features import get_feature
from .flags import MassAgeFlag

__all__ = ["RunSummary", "count_reasons"]

#: The flag bits that explain a missing prediction, in the order they are tested.
_REASONS = (MassAgeFlag.MISSING_INPUT, MassAgeFlag.INVALID_INPUT, MassAgeFlag.SURVEY_FLAGGED,
            MassAgeFlag.OUTSIDE_RANGE, MassAgeFlag.OUTSIDE_HULL)
_WITHHELD = functools.reduce(operator.or_, _REASONS)
#: Values kept per feature to describe a typical input (medians of large tables).
_SAMPLE_SIZE = 5_000


def count_reasons(flags):
    """Rows carrying each bit that withholds a prediction.

    Parameters
    ----------
    flags : array-like of int
        A ``mass_age_flag`` column.

    Returns
    -------
    dict
        Bit name to number of rows, for the bits present (a row may count twice).

    Examples
    --------
    >>> from stellar_ml_ages.diagnostics import count_reasons
    >>> count_reasons([0, 1, 8, 9])
    {'MISSING_INPUT': 2, 'OUTSIDE_HULL': 2}
    """
    flags = np.asarray(flags, dtype=np.int64)
    counts = {}
    for reason in _REASONS:
        n = int(np.count_nonzero(flags & int(reason)))
        if n:
            counts[reason.name] = n
    return counts


class RunSummary:
    """Counts accumulated over the blocks of one call, and the warnings they call for.

    Parameters
    ----------
    model : `~stellar_ml_ages.model.MassAgeModel`
    """

    def __init__(self, model):
        self.model = model
        self.n_rows = 0
        self.n_predicted = 0
        self.n_in_domain = 0
        self.reasons = {}
        self.survey_flags = {}
        self.assumed_units = {}
        #: Error columns with impossible values: column -> rows.
        self.bad_errors = {}
        #: With propagate_errors: whether any input had an error column (None: not asked).
        self.found_error_columns = None
        #: Texts of the call's `~stellar_ml_ages.LabelSourceWarning`, issued by `warn`.
        self.label_problems = []
        #: Texts of the call's `~stellar_ml_ages.LabelNoiseWarning` (noise not accounted for).
        self.noise_problems = []
        #: Predicted rows whose state (the table's state column, named in
        #: ``state_column``) the model was not trained on: state -> rows.
        self.untrained_states = {}
        self.state_column = None
        #: The annotated table, once the call has finished.
        self.table = None
        n = len(model.feature_names)
        self._outside_low = np.zeros(n, dtype=np.int64)
        self._outside_high = np.zeros(n, dtype=np.int64)
        self._missing = np.zeros(n, dtype=np.int64)
        self._samples = [[] for _ in range(n)]
        self._n_sampled = np.zeros(n, dtype=np.int64)

    # ------------------------------------------------------------ gathering
    def add_block(self, flags, features, predicted, quality=None, states=None,
                  state_column=None):
        """Fold one block's flags, feature values, survey-flag and state counts in."""
        self.n_rows += len(flags)
        trained_on = self.model.card.get("evolutionary_state", {}).get("trained_on")
        if states is not None and trained_on:
            self.state_column = state_column
            for state in ("RGB", "RC"):
                if state in trained_on:
                    continue
                n = int(np.count_nonzero(np.asarray(predicted) & (states == state)))
                if n:
                    self.untrained_states[state] = self.untrained_states.get(state, 0) + n
        self.n_predicted += int(np.count_nonzero(predicted))
        self.n_in_domain += int(np.count_nonzero(
            (np.asarray(flags, dtype=np.int64) & int(_WITHHELD)) == 0))
        # Reasons of the rows left without a prediction (extrapolated rows have one).
        for name, n in count_reasons(np.asarray(flags)[~np.asarray(predicted)]).items():
            self.reasons[name] = self.reasons.get(name, 0) + n
        if quality is not None:
            for rule, n in quality.counts.items():
                self.survey_flags[rule] = self.survey_flags.get(rule, 0) + n
        for text in features.assumed_units:
            self.assumed_units[text] = None
        for column, n in features.bad_errors:
            self.bad_errors[column] = self.bad_errors.get(column, 0) + n
        low, high = self.model.feature_bounds
        values = features.values
        finite = np.isfinite(values)
        self._missing += np.count_nonzero(~finite, axis=0)
        with np.errstate(invalid="ignore"):
            self._outside_low += np.count_nonzero(finite & (values < low), axis=0)
            self._outside_high += np.count_nonzero(finite & (values > high), axis=0)
        for j in range(values.shape[1]):
            room = _SAMPLE_SIZE - self._n_sampled[j]
            if room > 0:
                taken = values[finite[:, j], j][:room]
                self._samples[j].append(taken)
                self._n_sampled[j] += len(taken)

    def note_error_sources(self, error_sources):
        """Record whether ``propagate_errors`` found any error column to propagate."""
        found = any(source is not None for source in error_sources.values())
        self.found_error_columns = bool(self.found_error_columns) or found

    def implausible_units(self):
        """Hints for features whose typical value does not fit their assumed unit."""
        return [hint for j, name in enumerate(self.model.feature_names)
                if (hint := _unit_hint(get_feature(name), self._median(j)))]

    def unit_note(self):
        """``meta["MLUNITS"]``: the columns read without a unit, in which unit."""
        if not self.assumed_units:
            return None
        return "no unit on column(s), read as: " + "; ".join(self.assumed_units)

    @property
    def n_without_prediction(self):
        return self.n_rows - self.n_predicted

    # ------------------------------------------------------------ reading
    def _median(self, j):
        values = np.concatenate(self._samples[j]) if self._samples[j] else np.empty(0)
        return float(np.median(values)) if len(values) else float("nan")

    def likely_causes(self):
        """Sentences naming what most probably withheld the predictions, worst first.

        Only causes behind at least a tenth of the rows without prediction are given.
        """
        weighted = []
        low, high = self.model.feature_bounds
        for j, name in enumerate(self.model.feature_names):
            feature = get_feature(name)
            median = self._median(j)
            n_out = int(self._outside_low[j] + self._outside_high[j])
            unit = feature.unit.to_string()
            hint = _unit_hint(feature, median)
            if hint:
                weighted.append((max(n_out, 1), hint))
            elif n_out:
                weighted.append((n_out, (
                    f"{feature.label} is outside the training range [{low[j]:.4g}, "
                    f"{high[j]:.4g}] {unit} in {n_out} rows (median of the values read: "
                    f"{median:.4g} {unit})")))
            if self._missing[j]:
                weighted.append((int(self._missing[j]), (
                    f"{feature.label} is missing (masked, NaN or inf) in "
                    f"{int(self._missing[j])} rows")))
        if self.survey_flags:
            rules = ", ".join(f"{rule}: {n}" for rule, n in
                              sorted(self.survey_flags.items(), key=lambda item: -item[1]))
            weighted.append((self.reasons.get("SURVEY_FLAGGED", 0), (
                f"the survey's own quality flags mark rows bad ({rules}); "
                "survey_flags=False ignores them")))
        only_hull = self.reasons.get("OUTSIDE_HULL", 0) - self.reasons.get("OUTSIDE_RANGE", 0)
        if only_hull > 0:
            weighted.append((only_hull, (
                f"{only_hull} rows have every label inside its training range but a "
                "combination unlike the training stars (outside the convex hull): labels "
                "on another survey's scale, or stars that are not giants, look like this")))
        floor = 0.1 * max(self.n_without_prediction, 1)
        weighted = [item for item in weighted if item[0] >= floor]
        return [text for _, text in sorted(weighted, key=lambda item: -item[0])]

    def text(self):
        """The summary as a few lines, as the command line prints it."""
        lines = [f"{self.n_rows} rows, {self.n_predicted} with predictions from "
                 f"{self.model.name}"]
        if self.reasons:
            lines.append("no prediction: " + ", ".join(
                f"{n} {name}" for name, n in self.reasons.items()))
        return "\n".join(lines)

    def messages(self):
        """The call's warnings as (warning class, text), in the order `warn` gives them.

        For callers that cannot show Python warnings (a SAMP sender), and safe in
        threads: nothing touches the global warning filters.
        """
        found = [(LabelSourceWarning, text) for text in self.label_problems]
        found += [(LabelNoiseWarning, text) for text in self.noise_problems]
        if self.found_error_columns is False:
            found.append((StellarMLAgesWarning, (
                "propagate_errors=True, but no input has an error column (looked for "
                "<COLUMN>_ERR, e_<COLUMN>, ...; mapping={'<feature>_err': '<column>'} names "
                "one): the intervals are the calibrated ones alone")))
        if self.assumed_units and self.implausible_units():
            # Only when the values do not look like the assumed unit: allStar files and
            # CSVs carry no units at all, and a warning there asks for nothing useful
            # (the assumption is recorded in meta["MLUNITS"] either way).
            found.append((AssumedUnitWarning,
                          "no unit on column(s): " + "; ".join(self.assumed_units)
                          + ". Give the columns units to silence this warning."))
        for state, n in self.untrained_states.items():
            trained_on = " and ".join(self.model.card["evolutionary_state"]["trained_on"])
            found.append((StellarMLAgesWarning, (
                f"{n} predicted rows are {state} stars by the table's state column "
                f"{self.state_column!r}, but model {self.model.name!r} is trained on "
                f"{trained_on} stars only: their predictions and intervals are not "
                f"calibrated for them (docs: models, red-clump models). Use a model trained "
                f"on both states (giants) for them, or select {trained_on} stars first")))
        for column, n in self.bad_errors.items():
            # A defect of the data, however few rows: said whatever the fraction withheld.
            found.append((FlaggedRowsWarning, (
                f"error column {column!r} is negative, infinite or wider than every possible "
                f"value in {n} rows: they are flagged INVALID_INPUT and get no prediction; "
                "fix or mask those errors")))
        threshold = _fraction(conf.flagged_warning_fraction)
        if self.n_rows and self.n_without_prediction > threshold * self.n_rows:
            causes = self.likely_causes()
            message = (
                f"{self.n_without_prediction} of {self.n_rows} rows "
                f"({100 * self.n_without_prediction / self.n_rows:.0f}%) got no prediction "
                f"from {self.model.name} (" + ", ".join(
                    f"{n} {name}" for name, n in self.reasons.items()) + ")")
            if causes:
                message += ". Most likely cause: " + causes[0]
                if len(causes) > 1:
                    message += ". Also: " + "; ".join(causes[1:3])
            found.append((FlaggedRowsWarning, message + "."))
        return found

    def warn(self, stacklevel=2):
        """Issue the call's warnings, each once."""
        for category, text in self.messages():
            warnings.warn(text, category, stacklevel=stacklevel + 1)


def _unit_hint(feature, median):
    """A sentence when a typical value says the column is in another unit or scale."""
    if not np.isfinite(median):
        return ""
    if feature.kind == "log_gravity" and median > 10:
        return (f"{feature.label} values look linear (median {median:.4g}): log g is "
                "log10(g / cm s-2), about 1-3.5 for giants; take log10, or give the column "
                "a linear acceleration unit (cm / s2) and it is converted")
    if feature.kind == "log_gravity" and median > 3.8:
        return (f"{feature.label} values (median {median:.3g}) are those of dwarfs; the "
                "models are for red giants")
    if feature.kind == "temperature" and median < 100:
        return (f"{feature.label} values look like kK (median {median:.4g}); give the column "
                "the unit kK, or multiply by 1000")
    if feature.kind == "abundance" and abs(median) > 3:
        return (f"{feature.label} values (median {median:.4g}) are not an abundance ratio in "
                "dex relative to the Sun: absolute abundances (log eps) or a linear ratio?")
    return ""


def _fraction(value):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"flagged_warning_fraction must be within [0, 1], got {value}")
    return value
