"""Shared fixtures: demo stars, the packaged models, and the real catalogs when present."""

import numpy as np
import pytest
from astropy.table import Table

from stellar_ml_ages import demo_table, get_model
from stellar_ml_ages.exceptions import TrainingDataError
from stellar_ml_ages.training import find_data_dir, load_apogee_training_table


@pytest.fixture
def stars():
    """The bundled synthetic demo table (fresh copy per test)."""
    return demo_table()


@pytest.fixture
def giants():
    return get_model("giants")


@pytest.fixture
def red_clump():
    return get_model("red-clump")


def typical_star(model, n=1):
    """Rows at the training-set mean of ``model``, under APOGEE allStar names."""
    names = {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H", "mg_fe": "MG_FE",
             "c_fe": "C_FE", "n_fe": "N_FE", "dnu": "DNU"}
    from stellar_ml_ages.features import get_feature

    table = Table()
    for entry in model.card["features"]:
        table[names[entry["name"]]] = np.full(n, entry["mean"])
        table[names[entry["name"]]].unit = get_feature(entry["name"]).unit
    return table


@pytest.fixture(scope="session")
def training_table():
    """The real APOKASC-2 x APOGEE DR17 training table; skips when the catalogs are absent."""
    try:
        find_data_dir()
    except TrainingDataError as error:
        pytest.skip(f"real catalogs not available: {error}")
    return load_apogee_training_table()
