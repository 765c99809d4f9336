"""Shared fixtures: demo stars, the packaged models, and the real catalogs when present."""

import pytest

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


@pytest.fixture(scope="session")
def training_table():
    """The real APOKASC-2 x APOGEE DR17 training table; skips when the catalogs are absent."""
    try:
        find_data_dir()
    except TrainingDataError as error:
        pytest.skip(f"real catalogs not available: {error}")
    return load_apogee_training_table()
