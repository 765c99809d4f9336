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


@pytest.fixture(scope="session")
def tap_url():
    """URL of the local DaCHS TAP server that ci/tap/start_tap.sh starts.

    Skips when STELLAR_ML_AGES_TAP_URL is unset, unless STELLAR_ML_AGES_REQUIRE_TAP is
    set (as in CI), where a missing server is a failure, not a skip.
    """
    import os

    url = os.environ.get("STELLAR_ML_AGES_TAP_URL")
    if not url:
        if os.environ.get("STELLAR_ML_AGES_REQUIRE_TAP"):
            pytest.fail("STELLAR_ML_AGES_REQUIRE_TAP is set but no STELLAR_ML_AGES_TAP_URL")
        pytest.skip("no local TAP server (run ci/tap/start_tap.sh, set STELLAR_ML_AGES_TAP_URL)")
    return url


@pytest.fixture
def local_vizier(tap_url):
    """Point the VizieR catalogs at the local mirror tables for one test."""
    from stellar_ml_ages.vo import conf

    with conf.set_temp("vizier_tap_url", tap_url), \
            conf.set_temp("lamost_table", "smatest.ddpayne"), \
            conf.set_temp("apokasc2_table", "smatest.apokasc2"), \
            conf.set_temp("red_clump_table", "smatest.ting2018"), \
            conf.set_temp("retry_backoff", 0.05):
        yield tap_url
