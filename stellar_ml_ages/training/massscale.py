"""The training masses' scale: which temperature the seismic masses were computed with.

Scaling-relation masses depend on the effective temperature,
``M ∝ νmax^3 Δν^-4 Teff^1.5``, and the seismic surface gravity on
``g ∝ νmax Teff^0.5``. Given a catalog's seismic log g and νmax, the temperature it
used is therefore fixed to within the rounding of the printed log g, and a
candidate temperature column either reproduces it star by star or it does not.
For the preliminary APOKASC-3 masses (the ``giants`` models' targets) this says
whether a star's spectroscopic Teff error is shared by its training label and its
training mass, and how the masses' scale relates to the final APOKASC-3 one.
"""

import numpy as np

from .catalogs import CATALOG_FILES, _by_kic, _lookup, _read, find_data_dir
from .labelscale import robust_scatter

__all__ = ["seismic_mass_scale", "temperature_consistency"]


def temperature_consistency(logg_seismic, numax, temperatures):
    """How well each candidate temperature reproduces a seismic log g from its νmax.

    From ``g ∝ νmax Teff^0.5``, the temperature a catalog used satisfies
    ``ln Teff = 2 (ln(10) log g - ln νmax) + constant`` for every star. For each
    candidate, the residual ``ln Teff_implied - ln Teff`` less its median (the
    constant: solar reference values) is summarised; the column the catalog used
    leaves only the rounding of its printed log g.

    Parameters
    ----------
    logg_seismic : array-like
        Seismic log g (dex, cgs).
    numax : array-like
        νmax, in any fixed unit (only its logarithm's differences matter).
    temperatures : dict of str to array-like
        Candidate temperatures (K), one array per name.

    Returns
    -------
    dict
        Per name: ``n`` (stars with all three values), ``median_ln_ratio`` (the
        constant), ``robust_sigma`` and ``max_abs`` of the residual about it.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.training.massscale import temperature_consistency
    >>> numax = np.array([30.0, 60.0, 120.0])
    >>> teff = np.array([4600.0, 4800.0, 4900.0])
    >>> logg = np.log10(numax / 3076.0 * np.sqrt(teff / 5772.0)) + 4.438
    >>> another = teff * np.array([1.0, 1.02, 0.99])
    >>> found = temperature_consistency(logg, numax, {"used": teff, "other": another})
    >>> found["used"]["max_abs"] < 1e-12, found["other"]["max_abs"] > 1e-3
    (True, True)
    """
    implied = 2.0 * (np.log(10.0) * np.asarray(logg_seismic, dtype=np.float64)
                     - np.log(np.asarray(numax, dtype=np.float64)))
    out = {}
    for name, teff in temperatures.items():
        residual = implied - np.log(np.asarray(teff, dtype=np.float64))
        residual = residual[np.isfinite(residual)]
        if residual.size == 0:
            out[name] = {"n": 0}
            continue
        centre = float(np.median(residual))
        out[name] = {"n": int(residual.size), "median_ln_ratio": centre,
                     "robust_sigma": robust_scatter(residual),
                     "max_abs": float(np.max(np.abs(residual - centre)))}
    return out


def seismic_mass_scale(data_dir=None):
    """The preliminary APOKASC-3 masses against their temperatures and the final masses.

    Two measurements on the shared catalogs:

    * which temperature column of the preliminary labels (the calibrated
      ``TEFF_COR``, the raw ``TEFF_FIT``) or the final DR17 Teff (astroNN DR17 file)
      reproduces the preliminary seismic log g (``LOGG_S``) from the preliminary
      νmax (``NUMAX_WTCOR``), see `temperature_consistency`;
    * on the stars of APOKASC-3 Table 4 (final masses, computed with final DR17
      Teff), the median and robust scatter of ln(final / preliminary) mass, of
      ln(final Teff / ``TEFF_COR``), and the part ``1.5 ln(Teff ratio)`` of the mass
      ratio that the temperatures alone explain, for all stars and per state;
    * per seismic state, the slope of ln age on ln mass at fixed [Fe/H] among the
      training stars of 0.7-2.5 Msun (preliminary masses and APOKASC v7.0.5 ages):
      what a mass-scale offset means for the ages, if the ages follow the masses.

    Parameters
    ----------
    data_dir : path-like, optional
        Directory with the catalogs (`~stellar_ml_ages.training.find_data_dir`).

    Returns
    -------
    dict
        ``temperature_used`` (name of the column reproducing every star's log g to
        ``1e-4`` in ln Teff, or ``None``), ``temperature_consistency`` and
        ``final_against_preliminary`` (per group: ``n``, ``median_ln_mass_ratio``,
        ``robust_sigma_ln_mass_ratio``, ``median_ln_teff_ratio``,
        ``robust_sigma_ln_teff_ratio``, ``median_ln_mass_ratio_from_teff``,
        ``median_ln_mass_ratio_at_same_teff``) and ``ln_age_per_ln_mass`` (per
        state: ``n`` and ``slope``).
    """
    data_dir = find_data_dir(data_dir)
    labels = _read(data_dir, "prelim_labels")
    masses = _read(data_dir, "prelim_masses")
    ages = _read(data_dir, "prelim_ages")
    final_labels = _read(data_dir, "labels")
    table4 = _read(data_dir, "apokasc3")

    kic = np.asarray(masses["KIC"], dtype=np.int64)
    label_index = _by_kic(labels, "KIC_ID")
    logg_seismic = np.ma.filled(np.ma.asarray(masses["LOGG_S"], dtype=np.float64), np.nan)
    numax = _lookup(label_index, kic, labels["NUMAX_WTCOR"])
    candidates = {column: _lookup(label_index, kic, labels[column])
                  for column in ("TEFF_COR", "TEFF_FIT")}
    candidates["TEFF (final DR17)"] = _lookup(_by_kic(final_labels, "KIC"), kic,
                                              final_labels["TEFF"])
    consistency = temperature_consistency(logg_seismic, numax, candidates)
    used = [name for name, found in consistency.items()
            if found["n"] and found["max_abs"] < 1e-4]

    final_kic = np.asarray(table4["KIC"], dtype=np.int64)
    mass_index = _by_kic(masses, "KIC")
    preliminary_mass = _lookup(mass_index, final_kic, masses["M_S"])
    preliminary_teff = _lookup(label_index, final_kic, labels["TEFF_COR"])
    ln_mass = np.log(np.asarray(table4["Mass"], dtype=np.float64) / preliminary_mass)
    ln_teff = np.log(np.asarray(table4["Teff"], dtype=np.float64) / preliminary_teff)
    state = np.char.strip(np.asarray(table4["Evol_State"]).astype(str))
    groups = {"all": np.ones(len(final_kic), dtype=bool)}
    groups.update({value: state == value for value in ("RGB", "RC")})
    comparison = {}
    for name, rows in groups.items():
        rows = rows & np.isfinite(ln_mass) & np.isfinite(ln_teff)
        comparison[name] = {
            "n": int(rows.sum()),
            "median_ln_mass_ratio": float(np.median(ln_mass[rows])),
            "robust_sigma_ln_mass_ratio": robust_scatter(ln_mass[rows]),
            "median_ln_teff_ratio": float(np.median(ln_teff[rows])),
            "robust_sigma_ln_teff_ratio": robust_scatter(ln_teff[rows]),
            "median_ln_mass_ratio_from_teff": float(np.median(1.5 * ln_teff[rows])),
            "median_ln_mass_ratio_at_same_teff": float(
                np.median(ln_mass[rows] - 1.5 * ln_teff[rows])),
        }
    # d ln(age) / d ln(mass) at fixed [Fe/H], per seismic state (ES_AST 1 RGB, 2 RC).
    age = _lookup(_by_kic(ages, "KEPLER_ID"), kic, ages["AGE_JT"])
    fe_h = _lookup(label_index, kic, labels["FE_H_ADOP_COR"])
    seismic_state = _lookup(label_index, kic, labels["ES_AST"])
    mass = np.ma.filled(np.ma.asarray(masses["M_S"], dtype=np.float64), np.nan)
    slopes = {}
    for name, code in (("RGB", 1), ("RC", 2)):
        rows = ((seismic_state == code) & (mass > 0.7) & (mass < 2.5) & (age > 0)
                & np.isfinite(fe_h))
        design = np.column_stack([np.log(mass[rows]), fe_h[rows], np.ones(rows.sum())])
        coefficients = np.linalg.lstsq(design, np.log(age[rows]), rcond=None)[0]
        slopes[name] = {"n": int(rows.sum()), "slope": float(coefficients[0])}

    return {"temperature_used": used[0] if len(used) == 1 else None,
            "temperature_consistency": consistency,
            "final_against_preliminary": comparison,
            "ln_age_per_ln_mass": slopes,
            "files": {key: CATALOG_FILES[key] for key in
                      ("prelim_labels", "prelim_masses", "prelim_ages", "labels", "apokasc3")}}
