"""Exceptions and warnings raised by `stellar_ml_ages`.

Every error the package raises on purpose derives from `StellarMLAgesError`, so a
caller can catch the package's problems in one ``except`` clause while still
telling them apart.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "AmbiguousColumnError",
    "AssumedUnitWarning",
    "CatalogError",
    "ColumnUnitError",
    "ColumnValueError",
    "ExistingColumnError",
    "FlaggedRowsWarning",
    "LabelNoiseWarning",
    "LabelSourceWarning",
    "MissingColumnError",
    "ModelChecksumError",
    "ModelError",
    "ModelFormatError",
    "ModelIntegrityWarning",
    "ModelNotFoundError",
    "ModelVersionError",
    "OutputNameError",
    "QuantileLevelError",
    "RegionError",
    "SAMPClientError",
    "SAMPError",
    "SAMPHubError",
    "SAMPNoReplyWarning",
    "StellarMLAgesError",
    "StellarMLAgesWarning",
    "StreamingError",
    "TAPOverflowError",
    "TAPQueryError",
    "TAPServiceError",
    "TAPTimeoutError",
    "TrainingDataError",
    "TruncatedResultWarning",
    "VOError",
    "VOTableReadError",
]


class StellarMLAgesError(Exception):
    """Base class of every error raised by `stellar_ml_ages`."""


class StellarMLAgesWarning(AstropyUserWarning):
    """Base class of every warning issued by `stellar_ml_ages`."""


class AssumedUnitWarning(StellarMLAgesWarning):
    """An input column had no unit, so the documented default unit was assumed."""


class FlaggedRowsWarning(StellarMLAgesWarning):
    """Most rows of a table got no prediction; the message gives counts and the likely cause.

    The fraction is ``stellar_ml_ages.conf.flagged_warning_fraction``.
    """


class LabelSourceWarning(StellarMLAgesWarning):
    """The table's labels come from another survey than the model's training labels.

    Survey zero points differ by more than the models' precision, so predictions
    from such labels are biased; the message names both surveys and the remedy.
    """


class ModelIntegrityWarning(StellarMLAgesWarning):
    """A model card that cannot be checked as fully as a current one (no own checksum)."""


class LabelNoiseWarning(StellarMLAgesWarning):
    """The labels' noise is not what the intervals account for.

    E.g. SLAM's scatter at the reference S/N assumed for stars without a usable S/N
    (`stellar_ml_ages.slam.slam_uncertainties`): it understates fainter stars' errors;
    SLAM labels given to a model trained for APOGEE's noise without propagating
    their errors; or any table whose own error columns, propagated, would widen
    the intervals by more than 20% and are not propagated.
    """


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


class OutputNameError(StellarMLAgesError, ValueError):
    """A prefix or suffix would make output column names that files and ADQL cannot hold."""


class QuantileLevelError(StellarMLAgesError, ValueError):
    """A requested predictive quantile is not a probability the model is calibrated at."""


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


class VOTableReadError(StellarMLAgesError, ValueError):
    """A VOTable could not be parsed (malformed XML, bad values, truncated file...)."""


class CatalogError(StellarMLAgesError):
    """A survey catalog cannot be built or resumed as asked (see `stellar_ml_ages.catalog`)."""


class StreamingError(StellarMLAgesError):
    """A table file cannot be annotated block by block (format, or a block unlike the first)."""


class RegionError(StellarMLAgesError, ValueError):
    """A sky region cannot be turned into an ADQL constraint."""


class VOError(StellarMLAgesError):
    """Base class for failures talking to a Virtual Observatory service.

    Attributes
    ----------
    service : str
        URL of the service.
    query : str or None
        The ADQL query, when there was one.
    """

    def __init__(self, message, service=None, query=None):
        details = f"{message} [service: {service}]" if service else message
        if query:
            details += f"\nquery: {query}"
        super().__init__(details)
        self.message = message  # without the service and query, for combining errors
        self.service = service
        self.query = query


class TAPServiceError(VOError):
    """The TAP service could not be reached or answered with an HTTP error."""


class TAPTimeoutError(TAPServiceError):
    """The TAP service did not answer within the configured timeout."""


class TAPQueryError(VOError):
    """The service rejected the query (ADQL error, unknown table or column)."""


class TAPOverflowError(VOError):
    """The result was truncated at MAXREC and ``on_overflow="raise"`` was in force."""


class SAMPError(VOError):
    """Base class for failures exchanging messages over SAMP.

    ``service`` is the hub's XML-RPC URL when known.
    """


class SAMPHubError(SAMPError):
    """No SAMP hub is running, it is not on a loopback address, or it stopped answering."""


class SAMPClientError(SAMPError):
    """A SAMP client is not registered, did not answer in time, or replied ``samp.error``.

    Attributes
    ----------
    client : str or None
        Public id of the client, when one was found.
    reply : dict or None
        The client's SAMP response, when it sent one.
    """

    def __init__(self, message, service=None, client=None, reply=None):
        super().__init__(message, service=service)
        self.client = client
        self.reply = reply


class SAMPNoReplyWarning(StellarMLAgesWarning):
    """A SAMP client loaded the table but sent no reply (Aladin's first table);
    ``Delivery.unanswered`` (`stellar_ml_ages.samp`) says how the arrival was checked."""


class TruncatedResultWarning(StellarMLAgesWarning):
    """The result was truncated at MAXREC; the returned table is incomplete."""
