"""Exceptions and warnings raised by `stellar_ml_ages`.

Every error the package raises on purpose derives from `StellarMLAgesError`, so a
caller can catch the package's problems in one ``except`` clause while still
telling them apart.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "AmbiguousColumnError",
    "AssumedUnitWarning",
    "ColumnUnitError",
    "ColumnValueError",
    "ExistingColumnError",
    "MissingColumnError",
    "ModelChecksumError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelVersionError",
    "StellarMLAgesError",
    "StellarMLAgesWarning",
    "TrainingDataError",
]


class StellarMLAgesError(Exception):
    """Base class of every error raised by `stellar_ml_ages`."""


class StellarMLAgesWarning(AstropyUserWarning):
    """Base class of every warning issued by `stellar_ml_ages`."""


class AssumedUnitWarning(StellarMLAgesWarning):
    """An input column had no unit, so the documented default unit was assumed."""


class ColumnError(StellarMLAgesError, KeyError):
    """Base class for problems finding an input column."""

    def __str__(self):
        # KeyError quotes its argument; a column error is a sentence.
        return str(self.args[0]) if self.args else ""


class MissingColumnError(ColumnError):
    """A feature the model needs was not found under any of its aliases."""


class AmbiguousColumnError(ColumnError):
    """More than one column of the table matches the aliases of one feature."""


class ExistingColumnError(StellarMLAgesError, ValueError):
    """An output column already exists and overwriting was not requested."""


class ColumnUnitError(StellarMLAgesError, ValueError):
    """An input column carries a unit that cannot be converted to the feature's unit."""


class ColumnValueError(StellarMLAgesError, ValueError):
    """An input column has a dtype or shape that cannot hold the feature."""


class ModelError(StellarMLAgesError):
    """Base class for problems with a model artifact."""


class ModelNotFoundError(ModelError, LookupError):
    """No packaged or on-disk model matches the requested name or path."""


class ModelFormatError(ModelError):
    """A model card or array file is malformed, truncated or inconsistent."""


class ModelChecksumError(ModelError):
    """The array file does not match the sha256 recorded in its model card."""


class ModelVersionError(ModelError):
    """The model card was written by a newer, unsupported format version."""


class TrainingDataError(StellarMLAgesError):
    """The training catalogs are missing or do not have the expected content."""
