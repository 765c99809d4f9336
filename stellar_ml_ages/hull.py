"""Exact convex-hull membership: where a model may be applied.

The paper predicts only for stars inside the convex hull of the training
features. The hull is computed in the model's standardised feature space (so no
feature dominates the geometry through its unit) by Qhull. Only the hull's
vertices are stored in a model artifact (a few hundred points); the rest is
rebuilt from them on first use.

Membership means ``A @ z + b <= 1e-9`` for every facet ``(A, b)`` (unit
normals, so the tolerance is 1e-9 standard deviations). It is decided in two
steps, fastest first, each of which only gives answers it can certify:

1. up to 7 features and for large inputs, a Delaunay triangulation of the hull
   vertices: point location plus a short walk certifies "inside" (the point is
   in a simplex) or "outside" (beyond a boundary face, which lies on a facet,
   by more than the tolerance) for almost every point;
2. the rest (none in the packaged models' tests) gets the facet test against
   every facet, the definition itself.

Measured on 948,216 synthetic stars drawn from the training-feature
distribution (``benchmarks/bench_annotate.py --hull``, on a loaded machine):
the facet test alone took 91 s for the 6-feature giants hull (17,818 facets)
and 270 s for the 7-feature red-clump hull (48,148 facets), one linear program
per star about an hour, and the triangulation path 5 s and 20 s including its
one-off build.
"""

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import numpy as np
from scipy.spatial import ConvexHull, Delaunay

__all__ = ["ConvexHullDomain"]

# Delaunay triangulations grow like n**(d/2): measured here, 251 hull vertices in 7
# dimensions give 292,000 simplices in 3.5 s, while 9 dimensions did not finish in
# 15 minutes and 8 GB. Above this dimension only the facet test is used.
_DELAUNAY_MAX_DIM = 7
# Building the triangulation costs 1-4 s, about the facet test's time for this many
# points (measured: 40-70 us per point for the packaged hulls). The triangulation is
# built once the facet test has been given this many points in total, in one call or
# over many, so a session of many small tables pays for it once too.
_DELAUNAY_MIN_POINTS = 20_000

# Facets are unit-normal planes, so this is a distance in standard deviations:
# far below any measurement error, far above Qhull's round-off.
_TOLERANCE = 1e-9
# Barycentric round-off allowed when certifying "inside" (scipy's own default).
_ROUND_OFF = 100 * np.finfo(np.float64).eps


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
        self._points_seen = 0

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

    @cached_property
    def _face_heights(self):
        """Height of every simplex over each of its faces, shape (n_simplices, n_dim + 1).

        Barycentric coordinate ``k`` of a point is its signed distance from the
        face opposite vertex ``k`` divided by this height; the gradient of that
        coordinate is row ``k`` of the barycentric transform (the last one is
        minus the sum of the others).
        """
        gradients = self.triangulation.transform[:, :-1, :]
        gradients = np.concatenate([gradients, -gradients.sum(axis=1, keepdims=True)], axis=1)
        return 1.0 / np.linalg.norm(gradients, axis=2)

    @cached_property
    def _walk_tolerance(self):
        # A barycentric tolerance that is at least _TOLERANCE in distance for
        # every simplex face: a point that find_simplex rejects with it lies
        # more than _TOLERANCE beyond a boundary face, hence beyond a facet plane.
        return _TOLERANCE / self._face_heights.min()

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
            True inside the hull; points within 1e-9 (standard deviations) of
            the boundary count as inside.
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        if points.shape[1] != self.n_dim:
            raise ValueError(f"points have {points.shape[1]} dimensions, the hull {self.n_dim}")
        low, high = self.bounds
        inside = np.all((points >= low - _TOLERANCE) & (points <= high + _TOLERANCE), axis=1)
        candidates = np.flatnonzero(inside)
        self._points_seen += len(candidates)
        worth_it = self._points_seen >= _DELAUNAY_MIN_POINTS or "triangulation" in self.__dict__
        if self.n_dim <= _DELAUNAY_MAX_DIM and worth_it:
            verdict = self._triangulation_verdict(points[candidates])
            inside[candidates] = verdict == 1
            undecided = candidates[verdict == 0]
        else:
            undecided = candidates
        inside[undecided] = self.facet_test(points[undecided], facet_block)
        return inside

    def _triangulation_verdict(self, points, max_steps=64):
        """+1 certainly inside, -1 certainly outside, 0 for the facet test.

        Qhull's point location runs with a tolerance of ``_TOLERANCE`` in
        distance, so "not found" means beyond a boundary face, hence beyond a
        hull facet, by more than that. A found simplex is only near the point,
        so a short walk follows, one vectorised step for all points at a time:
        non-negative barycentric coordinates (to round-off) certify "inside";
        otherwise the walk crosses the face with the most negative coordinate,
        and if that face is on the boundary and the point lies beyond it by
        more than ``_TOLERANCE``, "outside" is certified. Points still walking
        after ``max_steps``, or stopped within ``_TOLERANCE`` of the boundary,
        are left to the facet test.
        """
        triangulation = self.triangulation
        # Walks are short when consecutive queries are neighbours in space.
        cells = np.floor(points * 2).astype(np.int64)
        order = np.lexsort(cells.T[::-1])
        simplex = np.empty(len(points), dtype=np.intp)
        simplex[order] = self._find_simplices(points[order])
        verdict = np.where(simplex < 0, -1, 0).astype(np.int8)
        walking = np.flatnonzero(simplex >= 0)
        for _ in range(max_steps):
            if not len(walking):
                break
            here = simplex[walking]
            transform = triangulation.transform[here]
            partial = np.einsum("nij,nj->ni", transform[:, :-1], points[walking] - transform[:, -1])
            coordinates = np.concatenate([partial, 1 - partial.sum(axis=1, keepdims=True)], axis=1)
            inside = np.all(coordinates >= -_ROUND_OFF, axis=1)
            face = np.argmin(coordinates, axis=1)
            rows = np.arange(len(walking))
            beyond = -coordinates[rows, face] * self._face_heights[here, face]
            neighbour = triangulation.neighbors[here, face]
            outside = ~inside & (neighbour < 0) & (beyond > _TOLERANCE)
            verdict[walking[inside]] = 1
            verdict[walking[outside]] = -1
            step = ~inside & (neighbour >= 0)
            simplex[walking[step]] = neighbour[step]
            walking = walking[step]
        return verdict

    def _find_simplices(self, points):
        """`scipy.spatial.Delaunay.find_simplex` on contiguous chunks, one per thread.

        Qhull's point location releases the GIL, so threads scale.
        """
        from ._kernels import configured_threads

        find = functools.partial(self.triangulation.find_simplex, tol=self._walk_tolerance)
        threads = configured_threads() or os.cpu_count() or 1
        if threads == 1 or len(points) < 50_000:
            return find(points)
        chunks = np.array_split(points, threads)
        with ThreadPoolExecutor(threads) as pool:
            return np.concatenate(list(pool.map(find, chunks)))

    def facet_test(self, points, facet_block=4096, point_block=2048):
        """The definition: inside if on the inner side of every facet (within 1e-9).

        Points go in blocks of ``point_block``; within a block, facets are
        tested in blocks that start small and double up to ``facet_block``, and
        points found outside are dropped after each, so the many points that
        the first facets reject never meet the rest. Memory stays below
        ``point_block * facet_block`` distances (64 MB by default).
        """
        points = np.atleast_2d(np.asarray(points, dtype=np.float64)).reshape(-1, self.n_dim)
        inside = np.ones(len(points), dtype=bool)
        equations = self.equations
        normals, offsets = equations[:, :-1], equations[:, -1]
        for first in range(0, len(points), point_block):
            candidates = np.arange(first, min(first + point_block, len(points)))
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
