"""Model specifications: which stars, which features, which targets, which forest.

A `ModelSpec` is everything needed to train one model reproducibly from a
catalog table; the packaged models are built from `PACKAGED_SPECS`.
"""

import math
from dataclasses import dataclass, field

__all__ = ["DEFAULT_TARGET_LIMITS", "LAMOST_SPECS", "LEGACY_SPECS", "PACKAGED_SPECS",
           "PRIOR_POWERS", "ModelSpec", "get_spec"]

_CITATIONS = (
    "Li, Wang et al., ApJS: stellar mass and age of LAMOST giants and red clump stars "
    "with random forest",
    "Pinsonneault et al. 2018, ApJS 239, 32 (APOKASC-2)",
    "Pinsonneault et al. 2025, ApJS 276, 69 (APOKASC-3)",
    "Abdurro'uf et al. 2022, ApJS 259, 35 (APOGEE DR17)",
    "Leung & Bovy 2019, MNRAS 483, 3255 (astroNN; DR17 APOKASC-2 label file)",
)


#: Target values accepted as physical by default (mass in Msun, age in Gyr).
DEFAULT_TARGET_LIMITS = {"mass": (0.3, 5.0), "age": (0.05, 20.0)}


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
        training table. Each target's forest is trained on the selected stars that
        have that target.
    evolutionary_states : tuple of str
        Values of the table's ``EVSTATE`` column to train on.
    cleaning : dict
        Target name to ``(max absolute error, max relative error)`` of the
        cleaning pass; stars whose out-of-bag prediction misses by more are
        dropped from that target's training stars.
    n_estimators, min_samples_leaf, max_features :
        Final forest hyperparameters.
    cleaning_estimators : int
        Trees of the cleaning-pass forest (paper: 200).
    test_fraction : float
        Fraction of stars, chosen by a hash of KIC, held out for the card's metrics;
        0 trains on every star (the packaged models, whose metrics are out of fold).
    seed : int
        Random seed of every forest and of the input-noise draws.
    training_table : {"full_range", "apokasc2"}
        Which catalog loader builds the training table from the data directory:
        `~stellar_ml_ages.training.load_full_range_training_table` or
        `~stellar_ml_ages.training.load_apogee_training_table`.
    input_noise : dict
        Feature name to a fractional 1-sigma noise added to that training input (one
        seeded draw per star) so that the forest and its intervals are built for
        inputs of that quality, e.g. ``{"dnu": 0.02}``.
    label_noise : dict
        Label name (``"teff"``, ``"c_fe"``, ...) to an absolute 1-sigma noise, in
        canonical units, added to that training label (one seeded draw per star and
        label; features made of several labels, like [C/N], get their labels' draws):
        a model for another survey's noisier labels, e.g. SLAM's (``giants-slam``).
        The card's training noise includes it, so ``propagate_errors`` adds only what
        a user's errors exceed it by.
    label_noise_shrinkage : float
        Fraction of the training stars (chosen by KIC hash) whose ``label_noise`` is of
        the kind a data-driven label has: ``mean + lam (label - mean) + sqrt(lam)
        sigma e`` with ``lam = 1 - sigma^2 / variance`` over the training stars (the
        label shrinks towards the population's mean, its error uncorrelated with the
        reported value); the others get independent noise ``sigma e``. Both kinds
        have the same size; 0 (default): independent noise only.
    noise_model : dict
        Where ``label_noise`` comes from (recorded in the card's ``training_set``).
    calibration_groups : tuple of str
        Evolutionary states calibrated separately (besides all stars pooled).
    candidate_features : tuple of str
        Labels ranked by the feature-selection step (`features` is its result).
    rarity_weight_cap : float
        If positive, the final forests weight each training star by the inverse
        density of its ln(target) among stars of its evolutionary state (capped at
        this many times the mean weight): the rare ends of the range pull on the
        splits as much as the crowded middle, which reduces the compression of the
        point estimates there. 0 (default): unweighted.
    oblique_features : tuple of str
        Features (of ``features``) whose residual from a linear fit on the other
        features is given to the forests as an extra input, fitted on each training
        set (``training.pipeline.fit_oblique_inputs``) and stored in
        the card; the hull stays on ``features``.
    target_directions : bool
        If true, each target's least-squares linear fit on the features (z-scores of
        the target's training stars) is given to every forest as one more oblique
        input (``training.pipeline.fit_target_directions``), stored in the card
        after the ``oblique_features``' entries.
    network : dict
        If given, each target's point estimate is the forest's averaged (in ln of the
        target) with an ensemble of small neural networks on the same inputs
        (``training.pipeline.fit_network``, `stellar_ml_ages.network`): keys
        ``"hidden"`` (layer widths), ``"alpha"`` (L2 penalty), ``"members"`` (one
        network per KIC-hash fold of the training stars, each predicting its own
        fold for the calibration), ``"weight"`` (the networks' share) and
        ``"clean"`` (residuals beyond this many robust sigmas of a first network
        are left out of the members' training). None (default): the forest alone.
    spread_feature : str
        If given (a name of ``features``), the predictive sigma is scaled along that
        input before the interval calibration: by bins of it, the ratio of the
        calibration stars' 68.27% quantile of ``|ln y - mean| / sigma`` to that of
        all of them (``training.pipeline.spread_scale``; the card's
        ``calibration["spread"]``, ``stellar_ml_ages.model.spread_factor``). The
        calibration by state and predicted value alone holds on average over the
        input, not along it: upper-RGB giants (low log g) are predicted less well
        than their forest spread says. "" (default): no scaling.
    robust_levels_along : str
        If given (a name of ``features``), the levels of ``intervals="robust"`` are
        recalibrated per state *and* in bins of that input, interpolated between the
        bins (the card's ``reference_prior`` groups' ``along`` entry,
        `stellar_ml_ages.reference_prior.levels_along`): the robust ends take the
        further of two distributions, which the spread along the input does not
        make hold along it. "" (default): per state only.
    reference_prior_powers : tuple of float
        Candidate powers (each >= 1) of the prior the robust intervals divide out;
        training picks one per target on the calibration stars
        (``training.pipeline.choose_prior_power``: the smallest whose worst coverage
        over the state x true-value cells and the state x predicted-value tenths is
        within binomial noise of the best). The noisier
        the labels, the more a forest pulls its predictions towards the training
        mean and the more one division leaves the ends of the range uncovered.
        () (default): one division (power 1).
    model_version : str
        The card's ``model_version``: which version of its recipe a model is (the
        package's models change recipe one at a time).
    target_limits : dict
        Target name to the (low, high) values accepted as physical: catalog
        outliers beyond them (a 0.015 Msun or a 30 Gyr "giant") are not selected.
        Default: ``DEFAULT_TARGET_LIMITS`` of this module.

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
    training_table: str = "apokasc2"
    input_noise: dict = None
    label_noise: dict = None
    label_noise_shrinkage: float = 0.0
    noise_model: dict = None
    calibration_groups: tuple = ()
    candidate_features: tuple = ()
    oblique_features: tuple = ()
    rarity_weight_cap: float = 0.0
    target_directions: bool = False
    target_limits: dict = None
    network: dict = None
    spread_feature: str = ""
    robust_levels_along: str = ""
    reference_prior_powers: tuple = ()
    model_version: str = "3.1.0"

    def __post_init__(self):
        # Plain None defaults (not default factories) keep the documented signature simple.
        if self.input_noise is None:
            object.__setattr__(self, "input_noise", {})
        if self.label_noise is None:
            object.__setattr__(self, "label_noise", {})
        if self.noise_model is None:
            object.__setattr__(self, "noise_model", {})
        if self.target_limits is None:
            object.__setattr__(self, "target_limits", dict(DEFAULT_TARGET_LIMITS))
        if self.network is not None:
            missing = {"hidden", "alpha", "members", "weight", "clean"} - set(self.network)
            if missing or not 0 < self.network["weight"] <= 1 or self.network["members"] < 2:
                raise ValueError(f"spec {self.name!r}: network needs hidden, alpha, members "
                                 f"(>= 2), weight (0-1] and clean; got {self.network}")
        for option in ("spread_feature", "robust_levels_along"):
            value = getattr(self, option)
            if value and value not in self.features:
                raise ValueError(f"spec {self.name!r}: {option} {value!r} is not among its "
                                 f"features {list(self.features)}")
        powers = self.reference_prior_powers
        if not isinstance(powers, (tuple, list)) or any(
                isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p)
                or p < 1 for p in powers):
            raise ValueError(f"spec {self.name!r}: reference_prior_powers must be a tuple of "
                             f"finite numbers >= 1; got {powers!r}")
        object.__setattr__(self, "reference_prior_powers", tuple(float(p) for p in powers))
        unknown = [name for name in self.oblique_features if name not in self.features]
        if unknown:
            raise ValueError(f"spec {self.name!r}: oblique_features {unknown} are not among "
                             f"its features {list(self.features)}")

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
            "input_noise": dict(self.input_noise),
            **({"oblique_features": list(self.oblique_features)} if self.oblique_features
               else {}),
            **({"rarity_weight_cap": self.rarity_weight_cap} if self.rarity_weight_cap
               else {}),
            **({"target_directions": True} if self.target_directions else {}),
            **({"spread_feature": self.spread_feature} if self.spread_feature else {}),
            **({"robust_levels_along": self.robust_levels_along}
               if self.robust_levels_along else {}),
            **({"reference_prior_powers": list(self.reference_prior_powers)}
               if self.reference_prior_powers else {}),
            **({"network": {**self.network, "hidden": list(self.network["hidden"])}}
               if self.network else {}),
            **({"label_noise": dict(self.label_noise)} if self.label_noise else {}),
            **({"label_noise_shrinkage": self.label_noise_shrinkage}
               if self.label_noise_shrinkage else {}),
        }


_FULL_RANGE_CITATIONS = (
    _CITATIONS[0],
    "Pinsonneault et al. 2025, ApJS 276, 69 (APOKASC-3; preliminary labels, masses and "
    "ages as released in the sdss/apogee repository, 2021)",
    "Pinsonneault et al. 2018, ApJS 239, 32 (APOKASC-2)",
    "Abdurro'uf et al. 2022, ApJS 259, 35 (APOGEE DR17)",
    "Leung & Bovy 2019, MNRAS 483, 3255 (astroNN; DR17 APOKASC-2 label file)",
)
#: The spectroscopic labels every APOGEE DR17 allStar file has, ranked by the
#: feature-selection step for the full-range models.
SPECTROSCOPIC_LABELS = ("teff", "logg", "fe_h", "c_fe", "n_fe", "alpha_m")
#: What the selection ranks: the labels, and [C/N] (C_FE - N_FE, the dredge-up mass
#: indicator), which a forest's axis-aligned splits cannot form from the two.
CANDIDATE_LABELS = (*SPECTROSCOPIC_LABELS, "c_n")
#: Fractional Δν noise the seismic red-clump model is trained and calibrated for.
SEISMIC_DNU_NOISE = 0.02

#: S/N_g of the SLAM errors the giants-slam model is trained with: inputs noisier
#: than that are propagated; cleaner ones get intervals on the safe (wide) side.
SLAM_TRAINING_SNR = 50.0
def _slam_label_noise(snr):
    """Noise to add to APOGEE training labels so they are off as SLAM's are at ``snr``,
    keyed by the training label each SLAM label stands for ([N/M] -> [N/Fe])."""
    from ..features import get_feature
    from ..slam import SLAM_LABELS, noise_to_add

    return {get_feature(label).counterpart or label: noise_to_add(label, snr)
            for label in SLAM_LABELS}


def _full_range(**settings):
    """A packaged v2 spec: both targets, the full-range table, every star trained on."""
    common = {
        "targets": {"mass": ("MASS", "solMass"), "age": ("AGE", "Gyr")},
        "cleaning": {"mass": (1.0, 0.3), "age": (5.0, 0.6)},
        "test_fraction": 0.0,
        "citation": _FULL_RANGE_CITATIONS,
        "training_table": "full_range",
        "candidate_features": CANDIDATE_LABELS,
    }
    return ModelSpec(**{**common, **settings})


#: The giants' network ensemble (``ModelSpec.network``): five members of three ReLU
#: layers, each trained on four fifths of the stars, blended 0.7 : 0.3 with the forest
#: in ln of the target (docs/models.rst, "Networks beside the forest").
GIANTS_NETWORK = {"hidden": (64, 64, 64), "alpha": 0.01, "members": 5, "weight": 0.7,
                  "clean": 3.0}

#: Candidate powers of the prior the robust intervals divide out
#: (``training.pipeline.choose_prior_power``).
PRIOR_POWERS = (1.0, 1.25, 1.5, 1.75, 2.0)

#: What both giants models learn from: the cross-validated selection's features and
#: order (docs/reproduce.rst), RGB and clump stars, intervals calibrated per state.
_GIANTS = {"features": ("c_n", "teff", "logg", "alpha_m", "n_fe", "fe_h"),
           "evolutionary_states": ("RGB", "RC"), "calibration_groups": ("RGB", "RC"),
           # Teff, [C/N] and log g at fixed other labels (models v3, docs/models.rst).
           "oblique_features": ("teff", "c_n", "logg")}

PACKAGED_SPECS = {
    spec.name: spec
    for spec in (
        _full_range(
            name="giants-apogee-dr17",
            aliases=("giants",),
            description=(
                "Mass and age of red giants (RGB and red clump, 0.5-3.5 Msun, alpha-poor "
                "and alpha-rich) from APOGEE DR17 [C/N], Teff, log g, [alpha/M], [N/Fe], "
                "[Fe/H] ([C/N] = C_FE - N_FE); no seismic input. Point estimate: forest "
                "and neural networks blended (models 3.2); spread scaled along log g "
                "(models 3.3); robust interval levels recalibrated along log g (models "
                "3.4); the power of the prior its robust intervals divide out chosen on "
                "the training stars (models 3.5)."
            ),
            **_GIANTS,
            network=GIANTS_NETWORK,
            # Intervals that hold along the giant branch (models 3.3 and 3.4,
            # docs/uncertainties.rst).
            spread_feature="logg",
            robust_levels_along="logg",
            # The rule giants-slam needs (models 3.5); on these labels it keeps 1.
            reference_prior_powers=PRIOR_POWERS,
            model_version="3.5.0",
        ),
        _full_range(
            name="giants-slam-apogee-dr17",
            aliases=("giants-slam",),
            description=(
                "Mass and age of red giants, as giants-apogee-dr17, trained on APOGEE DR17 "
                "labels given the errors of LAMOST SLAM labels (Zhang+2020) at S/N_g 50: "
                "for LAMOST DR5 giants with SLAM's [C/M], [N/M], [M/H], [alpha/M], Teff, "
                "log g. Spread and robust interval levels along log g, as giants-apogee-dr17 "
                "(models 3.3 and 3.4); the robust intervals divide out a power of the prior "
                "chosen on the training stars (models 3.5)."
            ),
            **_GIANTS,
            label_noise=_slam_label_noise(SLAM_TRAINING_SNR),
            noise_model={
                "label_source": "LAMOST DR5 SLAM (APOGEE DR15 scale)",
                "snr_g": SLAM_TRAINING_SNR,
                "description": ("SLAM's error against the true label at S/N_g 50: its "
                                "cross-validated scatter against APOGEE (Zhang, Liu & Deng "
                                "2020) x 100/50, less APOGEE's own noise "
                                "(stellar_ml_ages.slam.slam_error), added to the training "
                                "labels less the noise they already had"),
            },
            # Noisy inputs leave fine leaves nothing to resolve (measured: the same errors
            # as 5-star leaves and 300 trees, at a fifth of the size).
            min_samples_leaf=15,
            n_estimators=200,
            # The giants recipe's networks (measured: docs/lamost.rst, models 3.2).
            network=GIANTS_NETWORK,
            # As giants' (models 3.3): out of fold its lowest tenth of log g held 54%
            # (age) and 62% (mass) in its robust [p16, p84] without it.
            spread_feature="logg",
            robust_levels_along="logg",
            # Out of fold, one division left its RGB stars above 1.8 Msun inside their
            # robust [p16, p84] 37% of the time and those below 2 Gyr 40% (models 3.4;
            # docs/lamost.rst).
            reference_prior_powers=PRIOR_POWERS,
            model_version="3.5.0",
        ),
        _full_range(
            name="red-clump-apogee-dr17",
            aliases=("red-clump", "rc"),
            description=(
                "Mass and age of red-clump stars from APOGEE DR17 spectroscopic labels "
                "only ([C/N], log g, Teff, [N/Fe], [alpha/M], [Fe/H]), trained on "
                "clump stars; no seismic input."
            ),
            features=("c_n", "logg", "teff", "n_fe", "alpha_m", "fe_h"),
            evolutionary_states=("RC",),
            calibration_groups=("RC",),
            # As the giants models' (measured: docs/models.rst, red-clump models).
            oblique_features=("teff", "c_n", "logg"),
        ),
        _full_range(
            name="red-clump-seismic-apogee-dr17",
            aliases=("red-clump-seismic", "rc-seismic"),
            description=(
                "Mass and age of red-clump stars from asteroseismic Δν and APOGEE DR17 "
                "[C/N], log g, Teff, [N/Fe], [alpha/M], [Fe/H], trained and calibrated for "
                "Δν with a 2% (1-sigma) error."
            ),
            features=("c_n", "dnu", "logg", "teff", "n_fe", "alpha_m", "fe_h"),
            evolutionary_states=("RC",),
            input_noise={"dnu": SEISMIC_DNU_NOISE},
            calibration_groups=("RC",),
            candidate_features=("dnu", *CANDIDATE_LABELS),
            oblique_features=("teff", "c_n", "logg"),
        ),
    )
}

#: The version 1 packaged models (APOKASC-2 x DR17, 0.9-1.8 Msun C/N subset), kept
#: trainable for comparison with earlier results.
LEGACY_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="giants-apogee-dr17-v1",
            aliases=("giants-v1",),
            description=(
                "Version 1: mass of red giants from APOGEE DR17 [C/Fe], Teff, [Mg/Fe], "
                "[N/Fe], log g, [Fe/H], trained on an APOKASC-3 C/N subset cut to "
                "0.9-1.8 Msun."
            ),
            features=("c_fe", "teff", "mg_fe", "n_fe", "logg", "fe_h"),
            targets={"mass": ("MASS", "solMass")},
            evolutionary_states=("RGB", "RC", "RGB(S)", "RC(S)"),
            cleaning={"mass": (1.0, 0.3)},
        ),
        ModelSpec(
            name="red-clump-apogee-dr17-v1",
            aliases=("red-clump-v1",),
            description=(
                "Version 1: mass and age of red-clump stars from Δν and APOGEE DR17 "
                "[C/Fe], Teff, [N/Fe], log g, [Fe/H], [Mg/Fe]."
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
    ('c_n', 'teff', 'logg', 'alpha_m', 'n_fe', 'fe_h')
    """
    for spec in (*PACKAGED_SPECS.values(), *LAMOST_SPECS.values(), *LEGACY_SPECS.values()):
        if name == spec.name or name in spec.aliases:
            return spec
    known = ", ".join([*PACKAGED_SPECS, *LAMOST_SPECS, *LEGACY_SPECS])
    raise KeyError(f"no model spec {name!r}; known: {known}")
