"""SAMP with a real Aladin under Xvfb: the optional tier.

Runs when STELLAR_ML_AGES_ALADIN_LOCK names the lockfile of a hub that
``ci/samp/start_samp_peers.sh RUNDIR PYTHON --aladin`` started (Aladin
registered, offline with ``-local``); skipped otherwise, including in CI.
"""

import os

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from stellar_ml_ages import add_mass_age
from stellar_ml_ages.samp import point_at, send


@pytest.fixture(scope="module")
def aladin_hub():
    lock = os.environ.get("STELLAR_ML_AGES_ALADIN_LOCK")
    if not lock:
        pytest.skip("STELLAR_ML_AGES_ALADIN_LOCK is not set (start_samp_peers.sh --aladin)")
    return lock


def test_aladin_loads_an_annotated_table_with_positions(aladin_hub, stars):
    annotated = add_mass_age(stars, model="giants")
    rng = np.random.default_rng(5)  # demo stars get positions in the Kepler field
    annotated["RA"] = (290.5 + rng.normal(0, 0.5, len(annotated))) * u.deg
    annotated["DEC"] = (43.5 + rng.normal(0, 0.5, len(annotated))) * u.deg
    annotated["RA"].meta["ucd"] = "pos.eq.ra;meta.main"
    annotated["DEC"].meta["ucd"] = "pos.eq.dec;meta.main"
    delivery = send(annotated, to="aladin", hub=aladin_hub, name="kepler giants")
    assert [r["samp.status"] for r in delivery.replies.values()] == ["samp.ok"]
    assert [name.lower() for name in delivery.clients.values()] == ["aladin"]


def test_aladin_points_at_a_star(aladin_hub):
    replies = point_at(SkyCoord(291.0 * u.deg, 42.5 * u.deg), to="aladin", hub=aladin_hub)
    assert [r["samp.status"] for r in replies.values()] == ["samp.ok"]
