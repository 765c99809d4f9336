"""Cross-match a label catalog with an asteroseismic catalog.

The paper matches LAMOST DD-Payne stars to APOKASC-2 by position. Positions are
compared on the sky (`~astropy.coordinates.SkyCoord`), each label star keeps its
nearest seismic star within ``radius``, and a seismic star claimed by two label
stars keeps only the closer one, so the match is one-to-one.
"""

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import hstack, join

from ..exceptions import MissingColumnError

__all__ = ["crossmatch", "sky_coordinates"]

_RA_NAMES = ("RA", "ra", "RAdeg", "RA_ICRS", "raj2000", "_RAJ2000")
_DEC_NAMES = ("DEC", "dec", "DEdeg", "DE_ICRS", "dej2000", "_DEJ2000")


def _find(table, names, what):
    lowered = {name.lower(): name for name in table.colnames}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    raise MissingColumnError(f"no {what} column; tried {', '.join(names)}")


def sky_coordinates(table, ra=None, dec=None):
    """ICRS coordinates from a table's RA/Dec columns (degrees if no unit; masked -> NaN).

    ``ra`` and ``dec`` name the columns; by default the usual names are looked for.
    """
    ra = ra or _find(table, _RA_NAMES, "right ascension")
    dec = dec or _find(table, _DEC_NAMES, "declination")

    def degrees(name):
        column = table[name]
        unit = getattr(column, "unit", None) or u.deg
        return u.Quantity(np.ma.filled(np.ma.asarray(column, dtype=float), np.nan), unit)

    return SkyCoord(degrees(ra), degrees(dec), frame="icrs")


@u.quantity_input(radius=u.arcsec)
def crossmatch(labels, seismic, radius=3 * u.arcsec, keys=None,
               table_names=("labels", "seismic")):
    """Match two catalogs one-to-one, by identifier or by sky position.

    Parameters
    ----------
    labels, seismic : `~astropy.table.Table`
        The spectroscopic catalog and the asteroseismic one.
    radius : `~astropy.units.Quantity`
        Largest separation of a positional match.
    keys : str or tuple of str, optional
        Join on these identifier columns (e.g. ``"KIC"``) instead of positions.
    table_names : tuple of str
        Suffixes for clashing column names, as in `~astropy.table.hstack`.

    Returns
    -------
    `~astropy.table.Table`
        Matched rows; for a positional match a ``separation`` column in arcsec.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.training.crossmatch import crossmatch
    >>> lamost = Table({"ra": [290.0, 291.0], "dec": [40.0, 41.0], "TEFF": [4700.0, 4800.0]})
    >>> apokasc = Table({"RA": [291.0 + 1e-4, 10.0], "DEC": [41.0, 10.0], "KIC": [1, 2]})
    >>> matched = crossmatch(lamost, apokasc, radius=2 * u.arcsec)
    >>> matched["KIC"].tolist(), round(float(matched["separation"][0]), 2)
    ([1], 0.27)
    """
    if keys is not None:
        return join(labels, seismic, keys=keys, join_type="inner", table_names=list(table_names))
    ours, theirs = sky_coordinates(labels), sky_coordinates(seismic)
    index, separation, _ = ours.match_to_catalog_sky(theirs)
    close = np.isfinite(separation.deg) & (separation < radius)
    # One-to-one: where two label stars claim a seismic star, the closer one keeps it.
    order = np.argsort(separation.deg)
    claimed = np.zeros(len(seismic), dtype=bool)
    keep = np.zeros(len(labels), dtype=bool)
    for row in order:
        if close[row] and not claimed[index[row]]:
            claimed[index[row]] = True
            keep[row] = True
    matched = hstack([labels[keep], seismic[index[keep]]], table_names=list(table_names))
    matched["separation"] = separation[keep].to(u.arcsec)
    return matched
