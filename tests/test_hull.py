import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial import Delaunay

from stellar_ml_ages.hull import ConvexHullDomain


def in_hull_by_linear_programming(points, query):
    """Reference: x is inside iff it is a convex combination of the points."""
    n = len(points)
    equality = np.vstack([points.T, np.ones(n)])
    result = []
    for x in query:
        solution = linprog(np.zeros(n), A_eq=equality, b_eq=np.append(x, 1.0),
                           bounds=(0, None), method="highs")
        result.append(solution.status == 0)
    return np.array(result)


def test_unit_cube_membership():
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * 3)).reshape(3, -1).T
    cube = ConvexHullDomain.from_points(np.vstack([corners, [[0.5, 0.5, 0.5]]]))
    assert len(cube.vertices) == 8
    query = [[0.5, 0.5, 0.5], [1.0, 1.0, 1.0], [0.5, 0.5, 1.0 + 1e-6], [0.999, 0.001, 0.5],
             [-1e-6, 0.5, 0.5]]
    assert cube.contains(query).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("dimensions", [3, 6])
def test_agrees_with_linear_programming_and_delaunay(dimensions):
    rng = np.random.default_rng(dimensions)
    points = rng.standard_normal((150, dimensions))
    domain = ConvexHullDomain.from_points(points)
    # Query points straddling the boundary: the hardest case for any approximation.
    query = rng.standard_normal((200, dimensions)) * 1.1
    expected = in_hull_by_linear_programming(points, query)
    assert 0.1 < expected.mean() < 0.9
    np.testing.assert_array_equal(domain.contains(query), expected)
    np.testing.assert_array_equal(domain.contains(query),
                                  Delaunay(points).find_simplex(query) >= 0)


def test_training_points_are_inside_and_small_blocks_agree():
    rng = np.random.default_rng(7)
    points = rng.standard_normal((300, 5))
    domain = ConvexHullDomain.from_points(points)
    assert domain.contains(points).all()
    query = rng.standard_normal((500, 5)) * 1.3
    np.testing.assert_array_equal(domain.contains(query, facet_block=7), domain.contains(query))


def test_rejects_wrong_dimension_and_degenerate_hulls():
    domain = ConvexHullDomain.from_points(np.random.default_rng(0).standard_normal((20, 2)))
    with pytest.raises(ValueError, match="3 dimensions, the hull 2"):
        domain.contains(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="needs more than 3 vertices"):
        ConvexHullDomain(np.zeros((3, 3)))


def test_delaunay_shortcut_agrees_with_the_facet_definition():
    rng = np.random.default_rng(11)
    points = rng.standard_normal((400, 6))
    domain = ConvexHullDomain.from_points(points)
    query = rng.standard_normal((25_000, 6)) * 1.2  # enough to take the Delaunay path
    np.testing.assert_array_equal(domain.contains(query), domain.facet_test(query))
    assert "triangulation" in domain.__dict__
    # Points exactly at vertices and on facets count as inside either way.
    on_facet = domain.vertices[domain.triangulation.convex_hull[:20]].mean(axis=1)
    assert domain.contains(on_facet).all() and domain.facet_test(on_facet).all()


def test_high_dimensions_skip_the_triangulation():
    """Nine features (the paper's red-clump mass model) must not build a Delaunay."""
    rng = np.random.default_rng(12)
    domain = ConvexHullDomain.from_points(rng.standard_normal((120, 9)))
    query = rng.standard_normal((200, 9))
    np.testing.assert_array_equal(domain.contains(query), domain.facet_test(query))
    assert "triangulation" not in domain.__dict__


def test_walk_certifies_points_just_inside_and_outside_facets():
    """Points pushed off facet centroids along the outward normal by +-d.

    Beyond 1e-9 (the tolerance) is outside, within it inside. The triangulation
    certifies points clearly inside or outside itself and leaves the band just
    beyond a facet, inside only by the tolerance, to the facet definition.
    """
    rng = np.random.default_rng(13)
    domain = ConvexHullDomain.from_points(rng.standard_normal((300, 5)))
    facets = domain.triangulation.convex_hull[:300]
    centroids = domain.vertices[facets].mean(axis=1)
    equations = domain.equations
    # Outward normal of the facet each centroid lies on (distance ~0 to it).
    on_plane = np.abs(centroids @ equations[:, :-1].T + equations[:, -1]).argmin(axis=1)
    normals = equations[on_plane, :-1]
    for offset, expected, certified in [(1e-6, False, -1), (1e-8, False, -1),
                                        (1e-10, True, 0), (-1e-6, True, 1)]:
        query = centroids + offset * normals
        assert np.all(domain._triangulation_verdict(query) == certified), offset
        assert np.all(domain.contains(query) == expected)
        assert np.all(domain.facet_test(query) == expected)


def test_threaded_point_location_agrees_with_single_thread():
    from stellar_ml_ages import conf

    rng = np.random.default_rng(14)
    domain = ConvexHullDomain.from_points(rng.standard_normal((200, 4)))
    query = rng.standard_normal((60_000, 4)) * 1.3  # above the threading threshold
    with conf.set_temp("threads", 1):
        single = domain.contains(query)
    with conf.set_temp("threads", 2):
        threaded = domain.contains(query)
    np.testing.assert_array_equal(single, threaded)
    assert 0.2 < single.mean() < 0.9
    np.testing.assert_array_equal(single[:3000], domain.facet_test(query[:3000]))
