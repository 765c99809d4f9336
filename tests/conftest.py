"""Shared fixtures: demo stars, the packaged models, the real catalogs and local services."""

import os

import pytest

from stellar_ml_ages import demo_table, get_model
from stellar_ml_ages.exceptions import TrainingDataError
from stellar_ml_ages.training import (
    find_data_dir,
    load_apogee_training_table,
    load_full_range_training_table,
)


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


def _from_catalogs(loader):
    """``loader()`` on the real catalogs; skips the test when they are absent."""
    try:
        find_data_dir()
    except TrainingDataError as error:
        pytest.skip(f"real catalogs not available: {error}")
    return loader()


@pytest.fixture(scope="session")
def training_table():
    """The real APOKASC-2 x APOGEE DR17 training table (version 1 models)."""
    return _from_catalogs(load_apogee_training_table)


@pytest.fixture(scope="session")
def full_range_table():
    """The real full-range training table (preliminary APOKASC-3, labels on the DR17 scale)."""
    return _from_catalogs(load_full_range_training_table)


def _local_service(variable, require_variable, how_to_start):
    """Value of ``variable``; skip if unset, fail if ``require_variable`` is set (CI)."""
    value = os.environ.get(variable)
    if not value:
        if os.environ.get(require_variable):
            pytest.fail(f"{require_variable} is set but {variable} is not")
        pytest.skip(f"{variable} is not set ({how_to_start})")
    return value


@pytest.fixture(scope="session")
def tap_url():
    """URL of the local DaCHS TAP server that ci/tap/start_tap.sh starts.

    Skips when STELLAR_ML_AGES_TAP_URL is unset, unless STELLAR_ML_AGES_REQUIRE_TAP is
    set (as in CI), where a missing server is a failure, not a skip.
    """
    return _local_service("STELLAR_ML_AGES_TAP_URL", "STELLAR_ML_AGES_REQUIRE_TAP",
                          "run ci/tap/start_tap.sh")


@pytest.fixture(scope="session")
def topcat_hub():
    """Lockfile of the hub that ci/samp/start_samp_peers.sh runs, with TOPCAT registered.

    Skips when STELLAR_ML_AGES_SAMP_LOCK is unset, unless STELLAR_ML_AGES_REQUIRE_SAMP
    is set (as in CI).
    """
    return _local_service("STELLAR_ML_AGES_SAMP_LOCK", "STELLAR_ML_AGES_REQUIRE_SAMP",
                          "run ci/samp/start_samp_peers.sh")


@pytest.fixture
def local_vizier(tap_url):
    """Point the VizieR catalogs at the local mirror tables for one test."""
    from stellar_ml_ages.vo import conf

    with conf.set_temp("vizier_tap_url", tap_url), \
            conf.set_temp("lamost_table", "smatest.ddpayne"), \
            conf.set_temp("apokasc2_table", "smatest.apokasc2"), \
            conf.set_temp("red_clump_table", "smatest.ting2018"), \
            conf.set_temp("slam_table", ""), \
            conf.set_temp("slam_table_prefix", "smatest.slam"), \
            conf.set_temp("retry_backoff", 0.05):
        yield tap_url


@pytest.fixture
def hub(tmp_path):
    """A private in-process SAMP hub on 127.0.0.1: ``(server, lockfile)``."""
    from .samp_peers import start_private_hub

    lockfile = tmp_path / "samp-lock"
    server = start_private_hub(lockfile)
    yield server, lockfile
    server.stop()
