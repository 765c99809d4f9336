"""Synthetic catalogs shaped like the real ones, for tests, demos and benchmarks.

The stars follow a toy but physically motivated model: mass sets the depth of
the first dredge-up, so [C/Fe] falls and [N/Fe] rises with mass (Martig et al.
2016); age follows a red-giant mass-age relation, t ~ 10 Gyr (M / Msun)^-2.5;
Δν follows the seismic scaling Δν ∝ M^1/2 R^-3/2 at the clump radius. No row is
real: use it to exercise code paths, never to quote a measurement.
"""

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..features import get_feature

__all__ = ["make_synthetic_catalog"]

_TYPICAL = {  # feature -> (mean, scatter) of the label noise-free population
    "teff": (4750.0, 150.0), "logg": (2.5, 0.25), "fe_h": (-0.1, 0.2), "mg_fe": (0.05, 0.05),
    "ba_fe": (0.0, 0.15), "na_fe": (0.05, 0.1), "co_fe": (0.0, 0.08), "o_fe": (0.05, 0.06),
    "ti_fe": (0.02, 0.05), "mn_fe": (-0.05, 0.06), "dpi": (280.0, 40.0),
    "alpha_m": (0.05, 0.06),
}


def make_synthetic_catalog(spec, n_stars, seed=0):
    """A table with ``KIC``, ``EVSTATE``, ``MASS``, ``AGE`` and ``spec.features``.

    Parameters
    ----------
    spec : `~stellar_ml_ages.training.ModelSpec`
        Decides the feature columns (under their first alias, with units) and the
        evolutionary state.
    n_stars : int
    seed : int

    Returns
    -------
    `~astropy.table.Table`

    Examples
    --------
    >>> from stellar_ml_ages.training import get_spec, make_synthetic_catalog
    >>> stars = make_synthetic_catalog(get_spec("red-clump"), 5, seed=2)
    >>> stars["MASS"].unit, len(stars)
    (Unit("solMass"), 5)
    """
    rng = np.random.default_rng(seed)
    mass = np.exp(rng.normal(np.log(1.2), 0.25, n_stars))
    age = 10.0 * mass**-2.5 * np.exp(rng.normal(0.0, 0.05, n_stars))
    values = {name: rng.normal(*_TYPICAL[name], n_stars) for name in _TYPICAL}
    values["c_fe"] = -0.25 * (mass - 1.2) + rng.normal(0.0, 0.03, n_stars)
    values["n_fe"] = 0.35 * (mass - 1.2) + 0.25 + rng.normal(0.0, 0.03, n_stars)
    values["dnu"] = 4.0 * np.sqrt(mass / 1.2) * np.exp(rng.normal(0.0, 0.02, n_stars))
    values["c_n"] = values["c_fe"] - values["n_fe"]
    values["logg"] = values["logg"] + 0.1 * np.log10(mass)
    table = Table()
    table["KIC"] = np.arange(1_000_000, 1_000_000 + n_stars)
    table["EVSTATE"] = rng.choice(np.asarray(spec.evolutionary_states), n_stars)
    for name in spec.features:
        feature = get_feature(name)
        table[feature.aliases[0]] = values[name] * feature.unit
    table["MASS"] = mass * u.solMass
    table["AGE"] = age * u.Gyr
    return table
