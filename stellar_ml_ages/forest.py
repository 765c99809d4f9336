"""A random forest stored as plain arrays, and its vectorised evaluator.

scikit-learn's forests are Python objects that can only be saved by pickling.
`CompactForest` keeps what prediction needs in a handful of NumPy arrays, in a
layout chosen so that one descent step for every (row, tree) pair is three
gathers and a comparison:

* nodes of all trees are concatenated; each internal node's two children are
  adjacent, so ``child = left[node] + (x[feature[node]] > threshold[node])``;
* a leaf points to itself with an infinite threshold, so walking ``max_depth``
  steps leaves every path at its leaf without a branch;
* thresholds are float32, rounded *down* from scikit-learn's float64 midpoints,
  which makes ``x32 > threshold32`` exactly scikit-learn's ``x32 > threshold64``.

Each leaf stores the mean and the variance of the (transformed) training targets
that reached it, so a prediction is a mixture over trees whose moments give both
the point estimate and its spread.
"""

import functools

import numpy as np

__all__ = ["CompactForest"]

_ARRAY_NAMES = ("feature", "threshold", "left", "value", "variance", "roots")


def _breadth_first_order(children_left, children_right):
    """Node order in which the two children of every internal node are adjacent."""
    order = [0]
    position = 0
    while position < len(order):
        node = order[position]
        if children_left[node] >= 0:
            order += [children_left[node], children_right[node]]
        position += 1
    return np.asarray(order)


def _float32_at_most(values):
    """Largest float32 not above each float64 value."""
    rounded = values.astype(np.float32)
    too_big = rounded.astype(np.float64) > values
    rounded[too_big] = np.nextafter(rounded[too_big], np.float32(-np.inf))
    return rounded


class CompactForest:
    """Regression forest in flat arrays, evaluated by a compiled kernel or NumPy.

    Parameters
    ----------
    feature : ndarray of int16
        Split feature of each node (0 for leaves).
    threshold : ndarray of float32
        Split threshold of each node (+inf for leaves).
    left : ndarray of int32
        Index of each node's left child; the right child is ``left + 1``.
        A leaf's ``left`` is its own index.
    value : ndarray of float32
        Mean training target of the node (used at leaves).
    variance : ndarray of float32
        Variance of the training targets in the node (used at leaves).
    roots : ndarray of int32
        Index of each tree's root.
    max_depth : int
        Depth of the deepest tree.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import RandomForestRegressor
    >>> from stellar_ml_ages.forest import CompactForest
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 3))
    >>> forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(x, x[:, 0])
    >>> compact = CompactForest.from_sklearn(forest)
    >>> mean, variance = compact.predict_moments(x[:5])
    >>> bool(np.allclose(mean, forest.predict(x[:5]), atol=1e-6))
    True
    """

    def __init__(self, feature, threshold, left, value, variance, roots, max_depth):
        self.feature = np.asarray(feature, dtype=np.int16)
        self.threshold = np.asarray(threshold, dtype=np.float32)
        self.left = np.asarray(left, dtype=np.int32)
        self.value = np.asarray(value, dtype=np.float32)
        self.variance = np.asarray(variance, dtype=np.float32)
        self.roots = np.asarray(roots, dtype=np.int32)
        self.max_depth = int(max_depth)
        sizes = {len(self.feature), len(self.threshold), len(self.left),
                 len(self.value), len(self.variance)}
        if len(sizes) != 1:
            raise ValueError(f"forest arrays have different lengths: {sorted(sizes)}")

    @property
    def n_trees(self):
        return len(self.roots)

    @property
    def n_nodes(self):
        return len(self.feature)

    @classmethod
    def from_sklearn(cls, forest):
        """Convert a fitted single-output `~sklearn.ensemble.RandomForestRegressor`."""
        parts = {name: [] for name in _ARRAY_NAMES}
        offset, max_depth = 0, 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            order = _breadth_first_order(tree.children_left, tree.children_right)
            new_index = np.empty(len(order), dtype=np.int64)
            new_index[order] = np.arange(len(order))
            is_leaf = tree.children_left[order] < 0
            left = np.where(is_leaf, np.arange(len(order)), new_index[tree.children_left[order]])
            right = new_index[tree.children_right[order]]
            if np.any(right[~is_leaf] != left[~is_leaf] + 1):
                raise AssertionError("breadth-first order did not keep siblings adjacent")
            parts["feature"].append(np.where(is_leaf, 0, tree.feature[order]))
            parts["threshold"].append(
                np.where(is_leaf, np.float32(np.inf), _float32_at_most(tree.threshold[order]))
            )
            parts["left"].append(left + offset)
            parts["value"].append(tree.value[order, 0, 0])
            parts["variance"].append(np.maximum(tree.impurity[order], 0.0))
            parts["roots"].append([offset])
            offset += len(order)
            max_depth = max(max_depth, tree.max_depth)
        arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
        return cls(**arrays, max_depth=max_depth)

    @functools.cached_property
    def tree_depths(self):
        """Depth of each tree (edges from root to deepest leaf), int32."""
        depth = np.zeros(self.n_nodes, dtype=np.int32)
        internal = np.isfinite(self.threshold)
        frontier = self.roots
        level = 0
        # Breadth-first, one vectorised step per level: children of the
        # frontier's internal nodes form the next frontier.
        while len(frontier):
            depth[frontier] = level
            parents = frontier[internal[frontier]]
            frontier = np.concatenate([self.left[parents], self.left[parents] + 1])
            level += 1
        return np.maximum.reduceat(depth, self.roots).astype(np.int32)

    def to_arrays(self, prefix=""):
        """Arrays for `numpy.savez`, keys prefixed with ``prefix``."""
        arrays = {prefix + name: getattr(self, name) for name in _ARRAY_NAMES}
        arrays[prefix + "max_depth"] = np.asarray(self.max_depth, dtype=np.int32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays, prefix=""):
        """Inverse of `to_arrays`."""
        kwargs = {name: arrays[prefix + name] for name in _ARRAY_NAMES}
        return cls(**kwargs, max_depth=int(arrays[prefix + "max_depth"]))

    def validate(self, n_features):
        """Check the arrays so a corrupted or hand-built forest fails here, not in a kernel.

        Indices in range, every child after its parent and inside its own tree (so a
        walk cannot cycle or cross into another tree), leaves pointing to
        themselves, finite leaf values and variances, and ``max_depth`` the depth
        of the deepest tree.
        """
        n = self.n_nodes
        if n == 0 or self.n_trees == 0:
            raise ValueError("forest has no nodes")
        if self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0) or self.roots[-1] >= n:
            raise ValueError("forest roots are not increasing indices inside the node arrays")
        if np.any(np.isnan(self.threshold)):
            raise ValueError("forest split threshold is NaN")
        internal = np.isfinite(self.threshold)
        nodes = np.flatnonzero(internal)
        if self.left.min() < 0 or np.any(self.left[internal] + 1 >= n):
            raise ValueError("forest child index out of range")
        if np.any(self.left[internal] <= nodes):
            raise ValueError("forest child index does not come after its parent (a cycle)")
        tree_end = np.append(self.roots[1:], n)[np.searchsorted(self.roots, nodes, "right") - 1]
        if np.any(self.left[internal] + 1 >= tree_end):
            raise ValueError("forest child index points into another tree")
        if np.any(self.left[~internal] != np.flatnonzero(~internal)):
            raise ValueError("forest leaf does not point to itself")
        if self.feature.min() < 0 or self.feature.max() >= n_features:
            raise ValueError("forest split feature out of range")
        if not (np.all(np.isfinite(self.value)) and np.all(np.isfinite(self.variance))
                and np.all(self.variance >= 0)):
            raise ValueError("forest leaf values or variances are not finite and >= 0")
        if self.max_depth != int(self.tree_depths.max()):
            raise ValueError(f"forest max_depth is {self.max_depth}, but its deepest tree has "
                             f"depth {int(self.tree_depths.max())}")

    def leaves(self, features):
        """Leaf index reached in every tree, shape (n_rows, n_trees)."""
        x = np.asarray(features, dtype=np.float32)
        node = np.broadcast_to(self.roots, (len(x), self.n_trees)).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.max_depth):
            node = self.left[node] + (x[rows, self.feature[node]] > self.threshold[node])
        return node

    def predict_moments(self, features, chunk_size=20_000):
        """Mean and variance of the forest's predictive mixture.

        Parameters
        ----------
        features : array-like, shape (n_rows, n_features)
            Finite inputs in the space the forest was trained in.
        chunk_size : int
            Rows per block of the NumPy evaluator; memory is about
            ``chunk_size * n_trees * 12`` bytes. The compiled evaluator needs no
            blocks.

        Returns
        -------
        mean, variance : ndarray of float64, shape (n_rows,)
            ``mean`` is the forest prediction (average over trees); ``variance``
            is that of the mixture of the trees' leaf distributions: the spread
            between trees plus the average spread inside leaves.

        Notes
        -----
        With numba available (and ``conf.use_compiled_kernels``), a compiled
        kernel walks each tree to its leaf, on all cores (``conf.threads``), with
        no per-(row, tree) intermediate arrays. Otherwise `predict_moments_numpy`
        is used. Both give the same numbers to within float64 round-off.
        """
        from ._kernels import forest_moments_kernel, kernels_available, set_threads

        if not kernels_available():
            return self.predict_moments_numpy(features, chunk_size)
        x = np.ascontiguousarray(features, dtype=np.float32)
        mean = np.empty(len(x))
        second = np.empty(len(x))
        if len(x):
            set_threads()
            # Unsigned views, no copies: indices are never negative (see `validate`).
            forest_moments_kernel()(x, self.feature.view(np.uint16), self.threshold,
                                    self.left.view(np.uint32), self.value, self.variance,
                                    self.roots, self.tree_depths, mean, second)
        return mean, np.maximum(second - mean**2, 0.0)

    def predict_moments_numpy(self, features, chunk_size=20_000):
        """`predict_moments` in vectorised NumPy: the reference implementation."""
        features = np.asarray(features, dtype=np.float64)
        mean = np.empty(len(features))
        variance = np.empty(len(features))
        for start in range(0, len(features), chunk_size):
            block = slice(start, start + chunk_size)
            node = self.leaves(features[block])
            tree_mean = self.value[node].astype(np.float64)
            mean[block] = tree_mean.mean(axis=1)
            second = (self.variance[node] + tree_mean**2).mean(axis=1)
            variance[block] = np.maximum(second - mean[block] ** 2, 0.0)
        return mean, variance
