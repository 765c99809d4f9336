"""Helpers shared by the tests."""

import numpy as np
from astropy.table import Table

from stellar_ml_ages.features import get_feature


def typical_star(model, n=1):
    """Rows at the training-set mean of ``model``, under APOGEE allStar names."""
    names = {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H", "mg_fe": "MG_FE",
             "c_fe": "C_FE", "n_fe": "N_FE", "dnu": "DNU"}
    table = Table()
    for entry in model.card["features"]:
        table[names[entry["name"]]] = np.full(n, entry["mean"])
        table[names[entry["name"]]].unit = get_feature(entry["name"]).unit
    return table
