"""Model specifications: which stars, which features, which targets, which forest.

A `ModelSpec` is everything needed to train one model reproducibly from a
catalog table; the packaged models are built from `PACKAGED_SPECS`.
"""

from dataclasses import dataclass, field

__all__ = ["LAMOST_SPECS", "PACKAGED_SPECS", "ModelSpec", "get_spec"]

_CITATIONS = (
    "Li, Wang et al., ApJS: stellar mass and age of LAMOST giants and red clump stars "
    "with random forest",
    "Pinsonneault et al. 2018, ApJS 239, 32 (APOKASC-2)",
    "Pinsonneault et al. 2025, ApJS 276, 69 (APOKASC-3)",
    "Abdurro'uf et al. 2022, ApJS 259, 35 (APOGEE DR17)",
    "Leung & Bovy 2019, MNRAS 483, 3255 (astroNN; DR17 APOKASC-2 label file)",
)


@dataclass(frozen=True)
class ModelSpec:
    """How to train one model.

    Parameters
    ----------
    name : str
        Model name, also the artifact's file stem.
    aliases : tuple of str
        Short names accepted by ``add_mass_age(model=...)``.
    description : str
    features : tuple of str
        Canonical feature names (see `stellar_ml_ages.features`).
    targets : dict
        Target name (``"mass"``, ``"age"``) to ``(column, unit string)`` in the
        training table.
    evolutionary_states : tuple of str
        Values of the table's ``EVSTATE`` column to train on.
    cleaning : dict
        Target name to ``(max absolute error, max relative error)`` of the
        cleaning pass; stars whose out-of-bag prediction misses by more are
        dropped from the training split.
    n_estimators, min_samples_leaf, max_features :
        Final forest hyperparameters.
    cleaning_estimators : int
        Trees of the cleaning-pass forest (paper: 200).
    test_fraction : float
        Fraction of stars, chosen by a hash of KIC, held out for the card's metrics.
    seed : int
        Random seed of every forest.

    Examples
    --------
    >>> from stellar_ml_ages.training import get_spec
    >>> spec = get_spec("red-clump-age-lamost-dr5")
    >>> spec.features
    ('dnu', 'ti_fe', 'c_fe', 'n_fe', 'mn_fe', 'teff')
    """

    name: str
    aliases: tuple
    description: str
    features: tuple
    targets: dict
    evolutionary_states: tuple
    cleaning: dict
    n_estimators: int = 300
    min_samples_leaf: int = 5
    max_features: float = 1.0
    cleaning_estimators: int = 200
    test_fraction: float = 0.25
    seed: int = 20240601
    citation: tuple = field(default=_CITATIONS)
    label_source: str = "APOGEE DR17"

    @property
    def hyperparameters(self):
        return {
            "n_estimators": self.n_estimators,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "bootstrap": True,
            "criterion": "squared_error",
            "target_transform": "ln",
            "cleaning_estimators": self.cleaning_estimators,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
        }


PACKAGED_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="giants-apogee-dr17",
            aliases=("giants",),
            description=(
                "Mass of red giants (RGB and red clump together) from APOGEE DR17 "
                "[C/Fe], Teff, [Mg/Fe], [N/Fe], log g, [Fe/H]: the APOGEE-label analogue "
                "of the paper's LAMOST giants mass model, with [Fe/H] for [Ba/Fe]."
            ),
            features=("c_fe", "teff", "mg_fe", "n_fe", "logg", "fe_h"),
            targets={"mass": ("MASS", "solMass")},
            evolutionary_states=("RGB", "RC", "RGB(S)", "RC(S)"),
            cleaning={"mass": (1.0, 0.3)},
        ),
        ModelSpec(
            name="red-clump-apogee-dr17",
            aliases=("red-clump", "rc"),
            description=(
                "Mass and age of red-clump stars from asteroseismic Δν and APOGEE DR17 "
                "[C/Fe], Teff, [N/Fe], log g, [Fe/H], [Mg/Fe]: the APOGEE-label analogue of "
                "the paper's LAMOST red-clump models (ΔP and the heavier elements are not "
                "in the APOGEE training set)."
            ),
            features=("dnu", "c_fe", "teff", "n_fe", "logg", "fe_h", "mg_fe"),
            targets={"mass": ("MASS", "solMass"), "age": ("AGE", "Gyr")},
            evolutionary_states=("RC", "RC(S)"),
            cleaning={"mass": (1.0, 0.4), "age": (3.0, 0.4)},
        ),
    )
}


_LAMOST_CITATIONS = (
    _CITATIONS[0], _CITATIONS[1],
    "Xiang et al. 2019, ApJS 245, 34 (LAMOST DR5 DD-Payne abundances)",
    "Ting, Hawkins & Rix 2018, ApJL 858, L7 (LAMOST red clump, Δν and ΔP)",
)

#: The paper's own LAMOST models. Their training table (LAMOST DD-Payne labels x
#: APOKASC-2, and the Ting+2018 red clump for Δν/ΔP) is built with the VO helpers;
#: `train_model` takes any table with KIC, EVSTATE, MASS, AGE and the features.
LAMOST_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="giants-lamost-dr5",
            aliases=("giants-lamost",),
            description="Mass of LAMOST DR5 giants (RGB and red clump) from DD-Payne "
                        "[C/Fe], Teff, [Mg/Fe], [N/Fe], log g, [Ba/Fe] (the paper's LS-mass).",
            features=("c_fe", "teff", "mg_fe", "n_fe", "logg", "ba_fe"),
            targets={"mass": ("MASS", "solMass")},
            evolutionary_states=("RGB", "RC", "RGB(S)", "RC(S)"),
            cleaning={"mass": (1.0, 0.3)},
            test_fraction=0.5,
            citation=_LAMOST_CITATIONS,
            label_source="LAMOST DR5 DD-Payne",
        ),
        ModelSpec(
            name="red-clump-mass-lamost-dr5",
            aliases=("red-clump-mass-lamost",),
            description="Mass of LAMOST red-clump stars from Δν, [C/Fe], Teff, [N/Fe], ΔP, "
                        "[Na/Fe], [Ba/Fe], [Co/Fe], [O/Fe] (the paper's RC mass model).",
            features=("dnu", "c_fe", "teff", "n_fe", "dpi", "na_fe", "ba_fe", "co_fe", "o_fe"),
            targets={"mass": ("MASS", "solMass")},
            evolutionary_states=("RC", "RC(S)"),
            cleaning={"mass": (1.0, 0.4)},
            test_fraction=0.5,
            citation=_LAMOST_CITATIONS,
            label_source="LAMOST DR5 DD-Payne + Ting+2018",
        ),
        ModelSpec(
            name="red-clump-age-lamost-dr5",
            aliases=("red-clump-age-lamost",),
            description="Age of LAMOST red-clump stars from Δν, [Ti/Fe], [C/Fe], [N/Fe], "
                        "[Mn/Fe], Teff (the paper's RC age model).",
            features=("dnu", "ti_fe", "c_fe", "n_fe", "mn_fe", "teff"),
            targets={"age": ("AGE", "Gyr")},
            evolutionary_states=("RC", "RC(S)"),
            cleaning={"age": (3.0, 0.4)},
            test_fraction=0.5,
            citation=_LAMOST_CITATIONS,
            label_source="LAMOST DR5 DD-Payne + Ting+2018",
        ),
    )
}


def get_spec(name):
    """The spec called ``name`` or carrying it as an alias (packaged or LAMOST).

    Examples
    --------
    >>> from stellar_ml_ages.training import get_spec
    >>> get_spec("giants").features
    ('c_fe', 'teff', 'mg_fe', 'n_fe', 'logg', 'fe_h')
    """
    for spec in (*PACKAGED_SPECS.values(), *LAMOST_SPECS.values()):
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join([*PACKAGED_SPECS, *LAMOST_SPECS])
    raise KeyError(f"no model spec {name!r}; known: {known}")
