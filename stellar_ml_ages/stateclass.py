"""Evolutionary state (RGB or red clump) from spectroscopic labels alone.

Users without asteroseismology have no state column, yet the state matters twice:
the intervals of ``giants`` are calibrated per state, and ``red-clump`` is meant for
clump stars only (it was trained on seismic clump stars; first-ascent giants given
to it get clump masses and ages). Clump stars burn helium in their cores and sit
hotter, at lower [C/N] for their mass, than first-ascent giants of the same log g
and metallicity: a smooth boundary in the giants' own six labels.

The packaged classifier is a logistic regression on the z-scores of those labels
and their products up to second order (28 terms), fitted on the seismic states of
the APOKASC-3 giants with APOGEE DR17-scale labels (the ``giants`` training table),
stored as plain numbers in a JSON card with its own sha256 (no pickle). Its card
records the out-of-fold completeness and contamination of the clump it selects
(10 KIC-hash folds); ``docs/models.rst`` has the numbers and what they do to
``red-clump``'s masses and ages.

Examples
--------
>>> from stellar_ml_ages import demo_table
>>> from stellar_ml_ages.stateclass import add_spectroscopic_state
>>> stars = add_spectroscopic_state(demo_table())
>>> sorted(set(stars["EVSTATE_SPEC"].tolist()) - {""})
['RC', 'RGB']
>>> bool(((stars["P_RC"] >= 0) & (stars["P_RC"] <= 1)).all())
True
"""

import json
from functools import cache
from pathlib import Path

import numpy as np

from .columns import resolve_columns
from .exceptions import ExistingColumnError, ModelChecksumError, ModelFormatError
from .model import card_checksum, row_products
from .units import feature_matrix

__all__ = ["STATE_CLASSIFIER", "StateClassifier", "add_spectroscopic_state",
           "clump_probability", "load_state_classifier", "polynomial_terms"]

#: The packaged classifier's card (in ``stellar_ml_ages/data/classifiers``).
STATE_CLASSIFIER = "state-apogee-dr17"


def polynomial_terms(standardized, powers):
    """The design matrix: one column per term, the product of z-scores to ``powers``.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.stateclass import polynomial_terms
    >>> polynomial_terms(np.array([[2.0, 3.0]]), [[0, 0], [1, 0], [1, 1], [0, 2]])
    array([[1., 2., 6., 9.]])
    """
    standardized = np.asarray(standardized, dtype=np.float64)
    powers = np.asarray(powers, dtype=np.int64)
    return np.prod(standardized[:, None, :] ** powers[None, :, :], axis=2)


def clump_probability(design, coefficients):
    """The logistic surface: P(clump) per row of ``design`` (`polynomial_terms`).

    The logit is summed row by row (``model.row_products``), so a
    star's probability does not depend on the rows it came with; a logit so negative
    that ``exp`` overflows is a probability of 0, not a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.stateclass import clump_probability
    >>> clump_probability(np.array([[1.0, 0.0], [1.0, -800.0]]), [0.0, 1.0])
    array([0.5, 0. ])
    """
    logit = row_products(design, coefficients)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logit))


class StateClassifier:
    """A logistic-regression RGB/clump classifier read from its JSON card.

    Attributes
    ----------
    card : dict
        Features (names, training means and deviations), polynomial ``powers``,
        ``coefficients``, ``threshold``, training set and out-of-fold metrics.
    """

    def __init__(self, card, where="state classifier card"):
        need_keys = ("name", "features", "powers", "coefficients", "threshold", "card_sha256")
        missing = [key for key in need_keys if key not in card]
        if missing:
            raise ModelFormatError(f"{where} lacks {missing}")
        if card_checksum(card) != card["card_sha256"]:
            raise ModelChecksumError(f"{where}: content sha256 differs from the recorded "
                                     "one; the card was edited or corrupted")
        powers = np.asarray(card["powers"])
        coefficients = np.asarray(card["coefficients"], dtype=np.float64)
        if powers.ndim != 2 or powers.shape != (len(coefficients), len(card["features"])) \
                or not np.all(np.isfinite(coefficients)):
            raise ModelFormatError(f"{where}: one finite coefficient per term and one power "
                                   "per feature and term are needed")
        self.card = card

    @property
    def name(self):
        return self.card["name"]

    @property
    def feature_names(self):
        return tuple(f["name"] for f in self.card["features"])

    def in_box(self, features):
        """Whether each row lies within the training labels' [min, max] (all rows where
        the card records no box)."""
        features = np.asarray(features, dtype=np.float64)
        entries = self.card["features"]
        if not all("min" in f and "max" in f for f in entries):
            return np.ones(len(features), dtype=bool)
        low = np.array([f["min"] for f in entries])
        high = np.array([f["max"] for f in entries])
        return np.all((features >= low) & (features <= high), axis=1)

    def probability(self, features):
        """P(red clump) per row of canonical-unit ``features``; NaN where any is missing."""
        features = np.asarray(features, dtype=np.float64)
        mean = np.array([f["mean"] for f in self.card["features"]])
        scale = np.array([f["std"] for f in self.card["features"]])
        design = polynomial_terms((features - mean) / scale, self.card["powers"])
        return clump_probability(design, self.card["coefficients"])

    def save(self, directory):
        directory = Path(directory)
        self.card["card_sha256"] = card_checksum(self.card)
        path = directory / f"{self.name}.json"
        path.write_text(json.dumps(self.card, indent=1, allow_nan=False) + "\n")
        return path


@cache
def load_state_classifier(name=STATE_CLASSIFIER):
    """The packaged classifier (checked against its sha256 once per process)."""
    path = Path(__file__).parent / "data" / "classifiers" / f"{name}.json"
    if not path.is_file():
        raise ModelFormatError(f"no state classifier {name!r} at {path}")
    return StateClassifier(json.loads(path.read_text()), where=str(path))


def add_spectroscopic_state(table, *, mapping=None, column="EVSTATE_SPEC",
                            probability_column="P_RC", threshold=None, copy=True):
    """Add each star's evolutionary state classified from its spectroscopic labels.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Stars with the ``giants`` model's inputs (Teff, log g, [Fe/H], [C/Fe] and
        [N/Fe] or [C/N], [α/M]), found as `~stellar_ml_ages.add_mass_age` finds them.
    mapping : dict, optional
        ``{feature: column}`` overrides, as for `~stellar_ml_ages.add_mass_age`.
    column, probability_column : str
        Names of the new columns: ``"RC"``, ``"RGB"`` or ``""`` (inputs missing,
        invalid, or outside the box of the training labels, where the classifier
        would extrapolate), and the probability of the clump (masked where unknown).
        The probability is for a population with the training set's clump
        fraction (APOKASC-3: 46%); for another, scale the odds.
    threshold : float, optional
        Probability above which a star is called a clump star; default the card's
        (0.5).
    copy : bool
        Return an annotated copy (default) or add the columns in place.

    Returns
    -------
    `~astropy.table.Table`
        With the two columns; ``meta["MLSTATEC"]`` names the classifier. Pass
        ``state_column="EVSTATE_SPEC"`` to `~stellar_ml_ages.add_mass_age` for the
        intervals of each star's state, or select ``table["EVSTATE_SPEC"] == "RC"``
        for ``red-clump``.

    Raises
    ------
    ExistingColumnError
        If the table already has either column (names compared without case).
    """
    from astropy.table import MaskedColumn

    classifier = load_state_classifier()
    clash = [name for name in table.colnames
             if name.lower() in (column.lower(), probability_column.lower())]
    if clash:
        raise ExistingColumnError(f"the table already has column(s) {', '.join(clash)}; "
                                  "pass column=/probability_column= to use other names")
    threshold = classifier.card["threshold"] if threshold is None else float(threshold)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold is a probability between 0 and 1, got {threshold!r}")
    resolved = resolve_columns(table, classifier.feature_names, mapping)
    matrix = feature_matrix(table, resolved)
    usable = ~(matrix.missing | matrix.invalid)
    usable[usable] = classifier.in_box(matrix.values[usable])
    probability = np.full(len(table), np.nan)
    probability[usable] = classifier.probability(matrix.values[usable])
    states = np.where(~usable, "", np.where(probability > threshold, "RC", "RGB"))
    out = table.copy(copy_data=True) if copy else table
    out[column] = states.astype("U3")
    out[column].description = "Evolutionary state from the spectroscopic labels"
    out[probability_column] = MaskedColumn(np.where(usable, probability, 0.0),
                                           mask=~usable, dtype=np.float64)
    out[probability_column].description = "Probability of a red-clump star"
    out.meta["MLSTATEC"] = (f"{classifier.name}: {column} from "
                            f"{', '.join(classifier.feature_names)}; clump above "
                            f"P_RC = {threshold:g}")
    return out
