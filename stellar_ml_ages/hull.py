"""Exact convex-hull membership: where a model may be applied.

The paper predicts only for stars inside the convex hull of the training
features. The hull is computed in the model's standardised feature space (so no
feature dominates the geometry through its unit) by Qhull, and membership is the
exact facet test ``A @ z + b <= tol`` for every facet: no sampling, no
approximation. Only the hull's vertices are stored in a model artifact (a few
hundred points); the facet equations are rebuilt from them on first use.
"""

from functools import cached_property

import numpy as np
from scipy.spatial import ConvexHull

__all__ = ["ConvexHullDomain"]

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
        """Facet planes ``[A | b]``, outward unit normals; rebuilt once per process."""
        return ConvexHull(self.vertices).equations

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
            Facets tested at a time; points found outside are dropped before the
            next block, so far-away stars cost little.

        Returns
        -------
        ndarray of bool, shape (n_points,)
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if points.shape[1] != self.n_dim:
            raise ValueError(f"points have {points.shape[1]} dimensions, the hull {self.n_dim}")
        low, high = self.bounds
        inside = np.all((points >= low - _TOLERANCE) & (points <= high + _TOLERANCE), axis=1)
        equations = self.equations
        normals, offsets = equations[:, :-1], equations[:, -1]
        candidates = np.flatnonzero(inside)
        for start in range(0, len(equations), facet_block):
            if len(candidates) == 0:
                break
            block = slice(start, start + facet_block)
            distance = points[candidates] @ normals[block].T + offsets[block]
            outside = np.any(distance > _TOLERANCE, axis=1)
            inside[candidates[outside]] = False
            candidates = candidates[~outside]
        return inside
