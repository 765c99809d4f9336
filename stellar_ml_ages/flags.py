"""The ``mass_age_flag`` bitmask written next to every prediction."""

import enum

__all__ = ["FLAG_DTYPE", "NEAR_EDGE", "MassAgeFlag", "edge_flags", "flag_description"]


class MassAgeFlag(enum.IntFlag):
    """Why a row's prediction is masked or should be treated with care.

    A row with flag 0 is inside the model's domain and has a prediction. Rows with
    any of ``MISSING_INPUT``, ``INVALID_INPUT``, ``SURVEY_FLAGGED``, ``OUTSIDE_RANGE``
    or ``OUTSIDE_HULL`` have masked predictions, unless ``allow_extrapolation=True``
    was asked for, in which case the prediction is given and ``EXTRAPOLATED`` is
    set too (never for the first three). The ``*_NEAR_LOW_EDGE`` /
    ``*_NEAR_HIGH_EDGE`` and ``ERRORS_WIDENED`` bits mask nothing. The edge bits
    mark a prediction beyond the range of predicted values the intervals were
    calibrated on (the model card's ``calibrated_range``), where a forest's
    estimate is pulled toward the middle of the training set (see the
    "Uncertainties" page of the docs): the true value is likely further out.

    Examples
    --------
    >>> from stellar_ml_ages import MassAgeFlag
    >>> flag = MassAgeFlag(10)
    >>> MassAgeFlag.OUTSIDE_HULL in flag, MassAgeFlag.MISSING_INPUT in flag
    (True, False)
    """

    #: At least one input feature is masked, NaN or infinite.
    MISSING_INPUT = 1
    #: At least one input is physically impossible (e.g. Δν <= 0, Teff < 1000 K).
    INVALID_INPUT = 2
    #: At least one input lies outside the training set's [min, max] of that feature.
    OUTSIDE_RANGE = 4
    #: The star lies outside the convex hull of the standardised training features.
    OUTSIDE_HULL = 8
    #: The prediction was made outside the domain because extrapolation was asked for.
    EXTRAPOLATED = 16
    #: Predicted mass below the model's calibrated range (true mass likely lower).
    MASS_NEAR_LOW_EDGE = 32
    #: Predicted mass above the model's calibrated range (true mass likely higher).
    MASS_NEAR_HIGH_EDGE = 64
    #: Predicted age below the model's calibrated range (true age likely lower).
    AGE_NEAR_LOW_EDGE = 128
    #: Predicted age above the model's calibrated range (true age likely higher).
    AGE_NEAR_HIGH_EDGE = 256
    #: The survey's own quality flags mark the star or one of its input labels as bad
    #: (APOGEE ASPCAPFLAG STAR_BAD, a ``*_FLAG`` element flag, GALAH ``flag_sp``...;
    #: see `stellar_ml_ages.quality`).
    SURVEY_FLAGGED = 512
    #: The star's input errors exceed the training labels' noise and their excess was
    #: propagated (``propagate_errors=True``): its intervals are wider than the model's
    #: own. For one star that is the point; stacked for a population it counts noise
    #: the labels already carry once more (see the "Population ages" page of the docs).
    ERRORS_WIDENED = 1024


#: Flags that mask a prediction unless extrapolation is asked for.
OUT_OF_DOMAIN = MassAgeFlag.OUTSIDE_RANGE | MassAgeFlag.OUTSIDE_HULL
#: Flags that always mask a prediction.
NO_PREDICTION = (MassAgeFlag.MISSING_INPUT | MassAgeFlag.INVALID_INPUT
                 | MassAgeFlag.SURVEY_FLAGGED)
#: Flags that warn without masking: a prediction beyond the calibrated range.
# (ERRORS_WIDENED masks nothing either: it describes the interval, not the value.)
NEAR_EDGE = (MassAgeFlag.MASS_NEAR_LOW_EDGE | MassAgeFlag.MASS_NEAR_HIGH_EDGE
             | MassAgeFlag.AGE_NEAR_LOW_EDGE | MassAgeFlag.AGE_NEAR_HIGH_EDGE)
#: Storage type of the flag column: a signed short, which FITS and VOTable both have.
FLAG_DTYPE = "int16"


def edge_flags(target):
    """The (low, high) edge bits of a target name."""
    return (MassAgeFlag[f"{target.upper()}_NEAR_LOW_EDGE"],
            MassAgeFlag[f"{target.upper()}_NEAR_HIGH_EDGE"])


def flag_description():
    """One-line description of every bit, for column metadata.

    Examples
    --------
    >>> from stellar_ml_ages.flags import flag_description
    >>> flag_description().split("; ")[0]
    '1=MISSING_INPUT'
    """
    return "; ".join(f"{int(flag)}={flag.name}" for flag in MassAgeFlag)
