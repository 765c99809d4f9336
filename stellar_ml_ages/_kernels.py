"""Compiled numeric kernels (numba), compiled on first use and cached on disk.

Only plain arrays go in and out. Each kernel has a NumPy twin in the module that
uses it; the twin is the reference the tests compare against, and the fallback
when numba is missing or ``conf.use_compiled_kernels`` is False.
"""

import functools
import os

import numpy as np

#: Rows that descend a tree together in the compiled forest kernel.
LANES = 64

__all__ = ["forest_moments_kernel", "kernels_available", "network_kernel", "set_threads"]

#: True in a process forked from this one (``os.fork``, ``multiprocessing`` "fork").
_FORKED = False


def _mark_forked():
    global _FORKED
    _FORKED = True


# numba's GNU OpenMP threading layer kills a forked child that starts a parallel
# kernel ("fork() called from a process already using GNU OpenMP"): a forked child
# uses the serial compilation of the kernel instead, and never touches the pool.
# Spawned and forkserver processes start afresh and keep the parallel kernel.
os.register_at_fork(after_in_child=_mark_forked)


@functools.cache
def _numba():
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; kept for odd platforms
        return None
    return numba


def kernels_available():
    """True if numba imports and compiled kernels may be used."""
    from .config import conf

    return bool(conf.use_compiled_kernels) and _numba() is not None


def configured_threads():
    """``conf.threads`` checked: 0 (all cores) or a positive count."""
    from .config import conf

    value = conf.threads
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"stellar_ml_ages.conf.threads must be 0 (all cores) or a positive "
                         f"number of threads, got {value!r}")
    return value


def set_threads():
    """Apply ``conf.threads`` (0: all cores) to numba's thread pool (not in a forked child)."""

    wanted = configured_threads()
    if _FORKED:
        return
    numba = _numba()
    wanted = wanted or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(min(max(wanted, 1), numba.config.NUMBA_NUM_THREADS))


def forest_moments_kernel():
    """The forest kernel: parallel, or serial in a forked child (see `_build_kernel`)."""
    return _build_kernel(parallel=not _FORKED)


@functools.cache
def _build_kernel(parallel=True):
    """``kernel(x32, feature, threshold, left, value, variance, roots, tree_depth, mean, second)``.

    ``feature`` and ``left`` are unsigned (``uint16`` and ``uint32`` views of
    the forest's arrays). Rows go in blocks of `LANES`; every row of a block
    descends one tree in lockstep for exactly that tree's depth. Leaves point to
    themselves with an infinite threshold, so a row that reaches its leaf early
    stays there, and the inner loop has no branch: the compiler vectorises it
    and the memory loads of the lanes overlap. (A per-row ``while`` walk was 3x
    slower on the packaged forests: each step waits for the previous load.)
    Node indices are unsigned because numba wraps negative indices around:
    with signed ones every load in the inner loop carries that check (2.4x
    slower on one core, measured on the packaged giants forest). Each row's
    sums are in tree order, so the result does not depend on the number of
    threads. The serial compilation (``parallel=False``, for forked children) is
    not cached on disk, so the two never share a cache entry.
    """
    numba = _numba()
    lanes = LANES

    @numba.njit(parallel=parallel, cache=parallel, nogil=True, boundscheck=False)
    def kernel(x, feature, threshold, left, value, variance, roots, tree_depth, mean, second):
        n_rows, n_features = x.shape
        n_trees = roots.shape[0]
        n_blocks = (n_rows + lanes - 1) // lanes
        row_stride = np.uint64(n_features)
        for block in numba.prange(n_blocks):
            start = block * lanes
            width = min(lanes, n_rows - start)
            # A private, contiguous copy of the block's rows; unused lanes are
            # zeros and their results are discarded.
            xb = np.zeros(lanes * n_features, np.float32)
            for j in range(width):
                for k in range(n_features):
                    xb[j * n_features + k] = x[start + j, k]
            node = np.empty(lanes, np.uint32)
            total = np.zeros(lanes)
            total_second = np.zeros(lanes)
            for tree in range(n_trees):
                root = np.uint32(roots[tree])
                for j in range(lanes):
                    node[j] = root
                for _ in range(tree_depth[tree]):
                    for j in range(np.uint64(lanes)):
                        nd = np.uint64(node[j])
                        goes_right = xb[j * row_stride + np.uint64(feature[nd])] > threshold[nd]
                        node[j] = left[nd] + np.uint32(goes_right)
                for j in range(width):
                    leaf = np.uint64(node[j])
                    leaf_mean = np.float64(value[leaf])
                    total[j] += leaf_mean
                    total_second[j] += np.float64(variance[leaf]) + leaf_mean * leaf_mean
            for j in range(width):
                mean[start + j] = total[j] / n_trees
                second[start + j] = total_second[j] / n_trees

    return kernel


def network_kernel():
    """The network kernel: parallel, or serial in a forked child (see `_build_network_kernel`)."""
    return _build_network_kernel(parallel=not _FORKED)


@functools.cache
def _build_network_kernel(parallel=True):
    """``kernel(x, w_in, b_in, w_hidden, b_hidden, w_out, b_out, out)``.

    The mean over members of fully connected ReLU networks (shapes in
    `stellar_ml_ages.network.CompactNetwork`), one row at a time: every sum runs
    in the same fixed order for every row, so a row's result does not depend on
    its neighbours, the number of rows or threads (a BLAS product may change the
    last bits with the matrix's shape). The inner loop runs over a layer's output
    units, contiguous in the weights, which the compiler vectorises.
    """
    numba = _numba()

    # No fastmath: fused multiply-adds would break the bit-for-bit agreement with
    # `CompactNetwork.predict_numpy` (and between processors with and without FMA).
    @numba.njit(parallel=parallel, cache=parallel, nogil=True, boundscheck=False)
    def kernel(x, w_in, b_in, w_hidden, b_hidden, w_out, b_out, out):
        n_rows, n_inputs = x.shape
        n_members, _, width = w_in.shape
        n_hidden = w_hidden.shape[1]
        for row in numba.prange(n_rows):
            h = np.empty(width)
            g = np.empty(width)
            total = 0.0
            for m in range(n_members):
                for j in range(width):
                    h[j] = b_in[m, j]
                for k in range(n_inputs):
                    a = x[row, k]
                    for j in range(width):
                        h[j] += a * w_in[m, k, j]
                for j in range(width):
                    h[j] = max(h[j], 0.0)
                for layer in range(n_hidden):
                    for j in range(width):
                        g[j] = b_hidden[m, layer, j]
                    for k in range(width):
                        a = h[k]
                        for j in range(width):
                            g[j] += a * w_hidden[m, layer, k, j]
                    for j in range(width):
                        h[j] = max(g[j], 0.0)
                result = b_out[m]
                for j in range(width):
                    result += h[j] * w_out[m, j]
                total += result
            out[row] = total / n_members

    return kernel
