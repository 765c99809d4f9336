"""Sky regions as ADQL constraints.

`region_to_adql` turns `regions` sky regions (circle, annulus, polygon, rectangle,
and their compounds through ``|``, ``&`` and ``^``) or a `~astropy.coordinates.SkyCoord`
with a radius into an ADQL 2.1 geometry predicate, in ICRS, with every angle
written as a plain decimal number of degrees (no exponent, RA in [0, 360)).
"""

import operator

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, Angle, Longitude, SkyCoord

from ..exceptions import RegionError

__all__ = ["ADQL_RESERVED", "format_degrees", "quote_identifier", "quote_table_name",
           "region_to_adql"]


def format_degrees(angle):
    """A plain decimal string of degrees, e.g. ``'290.5'``; never an exponent.

    Examples
    --------
    >>> import astropy.units as u
    >>> from stellar_ml_ages.vo.adql import format_degrees
    >>> format_degrees(3.6 * u.arcsec), format_degrees(-0.5 * u.deg)
    ('0.001', '-0.5')
    """
    value = Angle(angle).to_value(u.deg)
    if not np.isfinite(value):
        raise RegionError(f"angle {angle!r} is not finite")
    return np.format_float_positional(float(value), precision=12, unique=True, trim="-")


#: ADQL 2.1 reserved words (its geometry and math functions, and the SQL words a
#: query parser stumbles on) that survey tables use as column names ("Size",
#: "Position", "Value", "Distance"...): such names must be delimited.
ADQL_RESERVED = frozenset("""
    ABS ACOS ALL AND ANY AREA AS ASC ASIN ATAN ATAN2 AVG BETWEEN BOX BY CASE CEILING
    CENTROID CHECK CIRCLE CONTAINS COORD1 COORD2 COORDSYS COS COT COUNT CROSS DATE DAY
    DEGREES DESC DISTANCE DISTINCT ELSE END ESCAPE EXISTS EXP FIRST FLOOR FROM FULL GROUP
    HAVING HOUR IN INNER INTERSECTS INTERVAL IS JOIN LAST LEFT LIKE LOG LOG10 MAX MIN MINUTE
    MOD MONTH NATURAL NOT NULL OFFSET ON OR ORDER OUTER PI POINT POLYGON POSITION POWER
    RADIANS RAND REGION RIGHT ROUND SECOND SELECT SIN SIZE SOME SQRT SUM TABLE TAN THEN TIME
    TIMESTAMP TOP TRUNCATE UNION USER USING VALUE VALUES WHEN WHERE YEAR ZONE
""".split())


def quote_identifier(name):
    """ADQL delimited identifier when ``name`` is not a regular one, e.g. ``"[Fe/H]"``.

    Regular identifiers that are ADQL reserved words (``ADQL_RESERVED``) are
    delimited too. (A delimited name is case-sensitive: ``"Size"`` is not ``size``.)

    Examples
    --------
    >>> from stellar_ml_ages.vo.adql import quote_identifier
    >>> quote_identifier("Teff"), quote_identifier("[Fe/H]"), quote_identifier("Size")
    ('Teff', '"[Fe/H]"', '"Size"')
    """
    if (name.replace("_", "a").isalnum() and name[0].isalpha() and name.isascii()
            and name.upper() not in ADQL_RESERVED):
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_table_name(name):
    """ADQL reference to a table: ``schema.table`` as is, anything else delimited.

    TAP_SCHEMA lists VizieR's tables by their plain names (``J/ApJS/246/9/table1``),
    which a query must delimit.

    Examples
    --------
    >>> from stellar_ml_ages.vo.adql import quote_table_name
    >>> quote_table_name("smatest.slam"), quote_table_name("J/ApJS/246/9/table1")
    ('smatest.slam', '"J/ApJS/246/9/table1"')
    """
    name = name.strip()
    if name.startswith('"'):
        return name
    parts = name.split(".")
    if all(part and quote_identifier(part) == part for part in parts):
        return name
    return '"' + name.replace('"', '""') + '"'


def _icrs(coordinates):
    if not isinstance(coordinates, SkyCoord):
        raise RegionError(f"expected sky coordinates, got {type(coordinates).__name__}")
    if not coordinates.isscalar and coordinates.ndim != 1:
        raise RegionError("coordinates must be a scalar or a 1-d array")
    icrs = coordinates.transform_to(ICRS())
    return Longitude(icrs.ra).wrap_at(360 * u.deg), icrs.dec


def _point(ra_column, dec_column):
    return f"POINT('ICRS', {quote_identifier(ra_column)}, {quote_identifier(dec_column)})"


def _radius(value, what="radius"):
    radius = Angle(value)
    if not (0 < radius.to_value(u.deg) <= 180):
        raise RegionError(f"{what} must be between 0 and 180 deg, got {radius}")
    return radius


def _circle(center, radius):
    ra, dec = _icrs(center)
    return (f"CIRCLE('ICRS', {format_degrees(ra)}, {format_degrees(dec)}, "
            f"{format_degrees(_radius(radius))})")


def _polygon(vertices):
    ra, dec = _icrs(vertices)
    if ra.size < 3:
        raise RegionError(f"a polygon needs at least 3 vertices, got {ra.size}")
    numbers = ", ".join(f"{format_degrees(a)}, {format_degrees(d)}"
                        for a, d in zip(ra, dec, strict=True))
    return f"POLYGON('ICRS', {numbers})"


def _rectangle_vertices(region):
    """Corners of a sky rectangle, in the tangent frame of its center."""
    width = _radius(region.width / 2, "width / 2")
    height = _radius(region.height / 2, "height / 2")
    if max(width.deg, height.deg) >= 90:
        # The corners are placed in the tangent frame of the centre, which cannot
        # hold a side of 180 deg or more; such a "rectangle" is not one on the sky.
        raise RegionError(f"a rectangle must be narrower than 180 deg on each side, got "
                          f"{region.width} x {region.height}; use a polygon or a compound "
                          "of smaller regions")
    # regions: width along longitude at angle 0, rotated anticlockwise *as displayed*,
    # north up and east left, i.e. from west towards north: east towards south.
    angle = -Angle(region.angle).to_value(u.rad)
    corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
    lon = corners[:, 0] * width.deg * np.cos(angle) - corners[:, 1] * height.deg * np.sin(angle)
    lat = corners[:, 0] * width.deg * np.sin(angle) + corners[:, 1] * height.deg * np.cos(angle)
    frame = region.center.skyoffset_frame()
    return SkyCoord(lon * u.deg, lat * u.deg, frame=frame).transform_to(ICRS())


def region_to_adql(region, ra_column="ra", dec_column="dec", radius=None):
    """ADQL predicate selecting the rows whose position lies in ``region``.

    Parameters
    ----------
    region : `regions.SkyRegion` or `~astropy.coordinates.SkyCoord`
        A `~regions.CircleSkyRegion`, `~regions.CircleAnnulusSkyRegion`,
        `~regions.PolygonSkyRegion`, `~regions.RectangleSkyRegion`, or a compound
        of them (``a | b``, ``a & b``, ``a ^ b``); or a scalar ``SkyCoord``, in
        which case ``radius`` is required.
    ra_column, dec_column : str
        Position columns of the queried table (quoted when not regular).
    radius : `~astropy.units.Quantity`, optional
        Cone radius, with a ``SkyCoord``.

    Returns
    -------
    str
        A boolean ADQL expression for a WHERE clause.

    Raises
    ------
    RegionError
        For unsupported region types, non-finite or out-of-range angles.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from stellar_ml_ages.vo.adql import region_to_adql
    >>> region_to_adql(SkyCoord(-70 * u.deg, 44 * u.deg), "RAJ2000", "DEJ2000", 6 * u.arcmin)
    "1 = CONTAINS(POINT('ICRS', RAJ2000, DEJ2000), CIRCLE('ICRS', 290, 44, 0.1))"
    """
    from regions import (
        CircleAnnulusSkyRegion,
        CircleSkyRegion,
        CompoundSkyRegion,
        PolygonSkyRegion,
        RectangleSkyRegion,
    )

    point = _point(ra_column, dec_column)
    if isinstance(region, SkyCoord):
        if radius is None:
            raise RegionError("a SkyCoord needs a radius to make a cone")
        if not region.isscalar:
            raise RegionError("a cone needs a single center; use a polygon for several points")
        return f"1 = CONTAINS({point}, {_circle(region, radius)})"
    if radius is not None:
        raise RegionError("radius goes with a SkyCoord, not with a region")
    if isinstance(region, CircleSkyRegion):
        return f"1 = CONTAINS({point}, {_circle(region.center, region.radius)})"
    if isinstance(region, CircleAnnulusSkyRegion):
        if not region.inner_radius < region.outer_radius:
            raise RegionError("an annulus needs inner_radius < outer_radius")
        return (f"(1 = CONTAINS({point}, {_circle(region.center, region.outer_radius)}) AND "
                f"0 = CONTAINS({point}, {_circle(region.center, region.inner_radius)}))")
    if isinstance(region, PolygonSkyRegion):
        return f"1 = CONTAINS({point}, {_polygon(region.vertices)})"
    if isinstance(region, RectangleSkyRegion):
        return f"1 = CONTAINS({point}, {_polygon(_rectangle_vertices(region))})"
    if isinstance(region, CompoundSkyRegion):
        first = region_to_adql(region.region1, ra_column, dec_column)
        second = region_to_adql(region.region2, ra_column, dec_column)
        if region.operator is operator.or_:
            return f"(({first}) OR ({second}))"
        if region.operator is operator.and_:
            return f"(({first}) AND ({second}))"
        if region.operator is operator.xor:
            return (f"((({first}) AND NOT ({second})) OR "
                    f"(({second}) AND NOT ({first})))")
        raise RegionError(f"compound operator {region.operator!r} has no ADQL equivalent")
    raise RegionError(
        f"{type(region).__name__} is not supported; use a circle, annulus, polygon, "
        "rectangle, or a compound of those"
    )
