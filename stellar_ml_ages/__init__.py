"""Machine-learned stellar masses and ages, with calibrated uncertainties, for astropy tables.

The package reproduces and extends Li, Wang et al. (ApJS): random forests
trained on asteroseismic masses and ages (APOKASC-2 in the paper; preliminary
APOKASC-3 with APOGEE DR17 labels for the packaged models, some blended with neural
networks) predict them from spectroscopic labels, only for stars inside the convex
hull of the training set.

Importing the package loads no model; models are read on first use.
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only in a source tree never built
    __version__ = "0.0.0"

from .annotate import OUTPUT_COLUMNS, add_mass_age
from .config import conf
from .demo import demo_table
from .distributions import PredictiveDistribution, predictive_distribution
from .exceptions import (
    AmbiguousColumnError,
    AssumedUnitWarning,
    CatalogError,
    ColumnUnitError,
    ColumnValueError,
    ExistingColumnError,
    FlaggedRowsWarning,
    LabelNoiseWarning,
    LabelSourceWarning,
    MissingColumnError,
    ModelChecksumError,
    ModelError,
    ModelFormatError,
    ModelIntegrityWarning,
    ModelNotFoundError,
    ModelVersionError,
    OutputNameError,
    QuantileLevelError,
    RegionError,
    SAMPClientError,
    SAMPError,
    SAMPHubError,
    SAMPNoReplyWarning,
    StellarMLAgesError,
    StellarMLAgesWarning,
    StreamingError,
    TAPOverflowError,
    TAPQueryError,
    TAPServiceError,
    TAPTimeoutError,
    TrainingDataError,
    TruncatedResultWarning,
    VOError,
    VOTableReadError,
)
from .flags import MassAgeFlag
from .model import MassAgeModel, load_model
from .population import population_distribution, population_trend
from .registry import get_model, list_models
from .stateclass import add_spectroscopic_state

__all__ = [
    "OUTPUT_COLUMNS",
    "AmbiguousColumnError",
    "AssumedUnitWarning",
    "CatalogError",
    "ColumnUnitError",
    "ColumnValueError",
    "ExistingColumnError",
    "FlaggedRowsWarning",
    "LabelNoiseWarning",
    "LabelSourceWarning",
    "MassAgeFlag",
    "MassAgeModel",
    "MissingColumnError",
    "ModelChecksumError",
    "ModelError",
    "ModelFormatError",
    "ModelIntegrityWarning",
    "ModelNotFoundError",
    "ModelVersionError",
    "OutputNameError",
    "PredictiveDistribution",
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
    "__version__",
    "add_mass_age",
    "add_spectroscopic_state",
    "conf",
    "demo_table",
    "get_model",
    "list_models",
    "load_model",
    "population_distribution",
    "population_trend",
    "predictive_distribution",
]
