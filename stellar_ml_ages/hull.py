"""Exact convex-hull membership: where a model may be applied.

The paper predicts only for stars inside the convex hull of the training
features. The hull is computed in the model's standardised feature space (so no
feature dominates the geometry through its unit) by Qhull. Only the hull's
vertices are stored in a model artifact (a few hundred points); the rest is
rebuilt from them on first use.

Membership is decided in two exact steps, fastest first:

1. up to 7 features and for large inputs, a Delaunay triangulation of the hull
   vertices: a point found in one of its simplices is inside (about 30 times
   faster than step 2 once built);
2. every other point gets the facet test ``A @ z + b <= tol`` against every
   facet, which is the definition of the hull, so no point is ever declared
   outside without having failed it.
"""

from functools import cached_property

import numpy as np
from scipy.spatial import ConvexHull, Delaunay

__all__ = ["ConvexHullDomain"]

# Delaunay triangulations grow like n**(d/2): measured here, 251 hull vertices in 7
# dimensions give 292,000 simplices in 3.5 s, while 9 dimensions did not finish in
# 15 minutes and 8 GB. Above this dimension only the facet test is used.
_DELAUNAY_MAX_DIM = 7
# Building the triangulation costs 1-4 s; below this many points the facet test is
# cheaper, unless the triangulation already exists.
_DELAUNAY_MIN_POINTS = 20_000

# Facets are unit-normal planes, so this is a distance in standard deviations:
# far below any measurement error, far above Qhull's round-off.
_TOLERANCE = 1e-9


class ConvexHullDomain:
    """Convex hull of a point set, with an exact membership test.

    Parameters
    ----------
    vertices : array-like, shape (n_vertices, n_dim)
        Points whose convex hull is the domain (typically the hull vertices of
        the standardised training features).

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.hull import ConvexHullDomain
    >>> square = ConvexHullDomain.from_points([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])
    >>> len(square.vertices)
    4
    >>> square.contains([[0.5, 0.2], [1.5, 0.5], [1.0, 1.0]]).tolist()
    [True, False, True]
    """

    def __init__(self, vertices):
        self.vertices = np.asarray(vertices, dtype=np.float64)
        if self.vertices.ndim != 2 or len(self.vertices) <= self.vertices.shape[1]:
            raise ValueError(
                f"a hull in {self.vertices.shape[-1]} dimensions needs more than "
                f"{self.vertices.shape[-1]} vertices, got {len(self.vertices)}"
            )

    @classmethod
    def from_points(cls, points):
        """Hull of ``points``, keeping only its vertices."""
        points = np.asarray(points, dtype=np.float64)
        hull = ConvexHull(points)
        return cls(points[np.sort(hull.vertices)])

    @property
    def n_dim(self):
        return self.vertices.shape[1]

    @cached_property
    def equations(self):
        """Facet planes ``[A | b]``, outward unit normals; rebuilt once per process.

        Ordered so that the facets outside points violate most often come first
        (measured on a fixed cloud of points around the hull): the facet test then
        rejects most outside points in its first block. Order does not change the
        result, only the time to reach it.
        """
        equations = ConvexHull(self.vertices).equations
        # A probe cloud sized so that probing costs about 2e8 multiply-adds whatever the
        # facet count (9 features can give two million facets), evaluated in blocks.
        n_probe = int(np.clip(2e8 / (len(equations) * self.n_dim), 64, 4096))
        rng = np.random.default_rng(0)
        spread = self.vertices.std(axis=0)
        cloud = self.vertices.mean(axis=0) + rng.standard_normal((n_probe, self.n_dim)) * 2 * spread
        violations = np.zeros(len(equations), dtype=np.int64)
        for start in range(0, len(equations), 65536):
            block = equations[start:start + 65536]
            violations[start:start + 65536] = (cloud @ block[:, :-1].T + block[:, -1] > 0).sum(0)
        return equations[np.argsort(-violations, kind="stable")]

    @cached_property
    def triangulation(self):
        """Delaunay triangulation of the vertices; rebuilt once per process."""
        return Delaunay(self.vertices)

    @cached_property
    def bounds(self):
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def contains(self, points, facet_block=4096):
        """Whether each point lies inside the hull or on its boundary.

        Parameters
        ----------
        points : array-like, shape (n_points, n_dim)
            Finite coordinates in the hull's space.
        facet_block : int
            Facets tested at a time in the facet test.

        Returns
        -------
        ndarray of bool, shape (n_points,)
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if points.shape[1] != self.n_dim:
            raise ValueError(f"points have {points.shape[1]} dimensions, the hull {self.n_dim}")
        low, high = self.bounds
        inside = np.all((points >= low - _TOLERANCE) & (points <= high + _TOLERANCE), axis=1)
        candidates = np.flatnonzero(inside)
        worth_it = len(candidates) >= _DELAUNAY_MIN_POINTS or "triangulation" in self.__dict__
        if self.n_dim <= _DELAUNAY_MAX_DIM and worth_it:
            certain = self.triangulation.find_simplex(points[candidates]) >= 0
            undecided = candidates[~certain]
        else:
            undecided = candidates
        inside[undecided] = self.facet_test(points[undecided], facet_block)
        return inside

    def facet_test(self, points, facet_block=4096):
        """The definition: inside if on the inner side of every facet (within 1e-9).

        Facets are tested in blocks that start small and double up to
        ``facet_block``; points found outside are dropped after each block, so
        the many points that the first facets reject never meet the rest.
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64)).reshape(-1, self.n_dim)
        inside = np.ones(len(points), dtype=bool)
        equations = self.equations
        normals, offsets = equations[:, :-1], equations[:, -1]
        candidates = np.flatnonzero(inside)
        start, size = 0, 32
        while start < len(equations) and len(candidates):
            block = slice(start, start + size)
            distance = points[candidates] @ normals[block].T + offsets[block]
            outside = np.any(distance > _TOLERANCE, axis=1)
            inside[candidates[outside]] = False
            candidates = candidates[~outside]
            start += size
            size = min(2 * size, facet_block)
        return inside
