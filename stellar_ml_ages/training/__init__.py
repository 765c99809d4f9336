"""Training the models from catalog tables: the paper's recipe, seeded and reproducible.

Needs scikit-learn; annotation with the packaged models does not.
"""

from .catalogs import (
    find_data_dir,
    load_apogee_training_table,
    load_full_range_training_table,
    load_training_table,
)
from .crossmatch import crossmatch
from .pipeline import TrainingResult, train_model
from .specs import LAMOST_SPECS, LEGACY_SPECS, PACKAGED_SPECS, ModelSpec, get_spec
from .synthetic import make_synthetic_catalog

__all__ = [
    "LAMOST_SPECS",
    "LEGACY_SPECS",
    "PACKAGED_SPECS",
    "ModelSpec",
    "TrainingResult",
    "crossmatch",
    "find_data_dir",
    "get_spec",
    "load_apogee_training_table",
    "load_full_range_training_table",
    "load_training_table",
    "make_synthetic_catalog",
    "train_model",
]
