"""Reliability, round 2: processes, shipped models, untrusted inputs (issue "Reliability").

Each test here failed on the main branch before its fix.
"""

import multiprocessing

import numpy as np
import pytest

from stellar_ml_ages import add_mass_age, demo_table


def _masses_of(start_stop):
    """Annotate a slice of the demo table in a worker process; module level for spawn."""
    start, stop = start_stop
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a slice may be mostly out of the hull
        annotated = add_mass_age(demo_table()[start:stop], model="giants")
    return np.ma.filled(annotated["mass"], np.nan)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_worker_processes_after_an_annotation(method):
    """A fork after the parallel kernel ran used to kill the child (GNU OpenMP)."""
    expected = np.ma.filled(add_mass_age(demo_table(), model="giants")["mass"], np.nan)
    context = multiprocessing.get_context(method)
    slices = [(0, 70), (70, 140), (140, 200)]
    with context.Pool(2) as pool:
        result = pool.map_async(_masses_of, slices)
        parts = result.get(timeout=240)  # a dead or hung worker fails here, not forever
    np.testing.assert_array_equal(np.concatenate(parts), expected)
