"""Paired comparisons of out-of-fold predictions, shared by the report tools."""

import numpy as np

__all__ = ["median_rel_error", "paired_bootstrap"]


def median_rel_error(predicted, truth):
    """Median of ``|predicted / truth - 1|`` over the stars with both, or None."""
    use = np.isfinite(predicted) & np.isfinite(truth)
    return float(np.median(np.abs(predicted[use] / truth[use] - 1))) if use.any() else None


def paired_bootstrap(candidate, reference, truth, n=400, seed=0):
    """Mean and spread of the change in median relative error, in percentage points.

    The same stars are resampled for both predictions (``n`` bootstrap draws), so
    what the two share (the stars, their labels' noise) cancels in the change.
    """
    ok = np.isfinite(candidate) & np.isfinite(reference) & np.isfinite(truth)
    a = np.abs(candidate[ok] / truth[ok] - 1)
    b = np.abs(reference[ok] / truth[ok] - 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ok.sum(), size=(n, ok.sum()))
    change = 100 * (np.median(a[draws], axis=1) - np.median(b[draws], axis=1))
    return round(float(change.mean()), 2), round(float(change.std()), 2)
