"""The catalogue of input features the models understand.

A `Feature` is a physical quantity a model can take as input (Teff, log g, an
abundance ratio, an asteroseismic spacing): its canonical name, the unit the
models are trained in, the column names it is known by in the surveys' own files
(aliases), and the physical range outside which a value is not a measurement.
Column resolution (`stellar_ml_ages.columns`) and unit checking
(`stellar_ml_ages.units`) both read this catalogue, so adding a survey's column
name is a one-line change here.
"""

from dataclasses import dataclass, field

import astropy.units as u

__all__ = ["FEATURES", "Feature", "get_feature"]


@dataclass(frozen=True)
class Feature:
    """An input quantity of the models.

    Parameters
    ----------
    name : str
        Canonical lower-case name, e.g. ``"teff"`` or ``"c_fe"``.
    label : str
        Human-readable label, e.g. ``"[C/Fe]"``.
    kind : {"temperature", "log_gravity", "abundance", "frequency", "period"}
        Selects the unit rules in `stellar_ml_ages.units`.
    unit : `~astropy.units.UnitBase` or `~astropy.units.FunctionUnitBase`
        The unit the models are trained in.
    aliases : tuple of str
        Column names the feature is found under (compared case-insensitively).
    loose_aliases : tuple of str, optional
        Names of related but less preferred columns (APOGEE's uncalibrated
        ``TEFF_SPEC`` next to the calibrated ``TEFF``): used only when no alias
        matches, so a survey file holding both resolves to the calibrated one.
    derived_from : tuple of (str, str), optional
        Pairs ``(minuend, subtrahend)`` of feature names whose difference gives this
        feature, e.g. ``[Mg/Fe] = [Mg/H] - [Fe/H]``; used when no alias is present.
    substitutes : tuple of str, optional
        Features that stand in for this one when neither an alias nor a derivation
        is found, e.g. [Mg/Fe] for [α/M] (in APOGEE DR17 the two agree to 0.02 dex
        for giants); the substitution is recorded in the output's ``meta``.
    valid_range : tuple of float
        Open interval, in the canonical unit, outside which a value cannot be a
        measurement (e.g. a negative Δν); such rows are flagged as invalid input.
    ucd : str
        IVOA UCD of the quantity.

    Examples
    --------
    >>> from stellar_ml_ages.features import get_feature
    >>> teff = get_feature("teff")
    >>> teff.label, teff.unit, teff.aliases[:2]
    ('Teff', Unit("K"), ('TEFF', 'Teff'))
    """

    name: str
    label: str
    kind: str
    unit: object
    aliases: tuple
    loose_aliases: tuple = ()
    derived_from: tuple = ()
    substitutes: tuple = ()
    valid_range: tuple = (float("-inf"), float("inf"))
    ucd: str = ""
    description: str = field(default="", compare=False)

    @property
    def error_aliases(self):
        """Column names of the feature's 1-sigma uncertainty, in priority order."""
        names = []
        for alias in (*self.aliases, *self.loose_aliases):
            names += [f"{alias}_ERR", f"e_{alias}", f"S_{alias}", f"{alias}_error"]
        return tuple(names)


def _abundance(element, *, ucd="phys.abund"):
    tag = element.upper()
    label = f"[{element}/Fe]"
    return Feature(
        name=f"{element.lower()}_fe",
        label=label,
        kind="abundance",
        unit=u.dex,
        aliases=(f"{tag}_FE", label, f"{element}_Fe", f"{tag}FE", f"{element}/Fe"),
        derived_from=((f"{element.lower()}_h", "fe_h"),),
        valid_range=(-5.0, 5.0),
        ucd=ucd,
        description=f"{label} abundance ratio",
    )


def _abundance_h(element):
    tag = element.upper()
    label = f"[{element}/H]"
    return Feature(
        name=f"{element.lower()}_h",
        label=label,
        kind="abundance",
        unit=u.dex,
        aliases=(f"{tag}_H", label, f"{element}_H", f"{tag}H"),
        valid_range=(-10.0, 5.0),
        ucd="phys.abund",
        description=f"{label} abundance",
    )


_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Ti", "Mn", "Co", "Ba")

_BASE_FEATURES = (
    Feature(
        name="teff",
        label="Teff",
        kind="temperature",
        unit=u.K,
        aliases=("TEFF", "Teff", "T_eff"),
        # allStar's TEFF is calibrated (what the models are trained on), TEFF_SPEC not.
        loose_aliases=("TEFF_SPEC",),
        valid_range=(1000.0, 100000.0),
        ucd="phys.temperature.effective",
        description="Spectroscopic effective temperature",
    ),
    Feature(
        name="logg",
        label="log g",
        kind="log_gravity",
        unit=u.dex(u.cm / u.s**2),
        aliases=("LOGG", "logg", "log_g", "log(g)"),
        loose_aliases=("LOGG_SPEC",),
        valid_range=(-2.0, 7.0),
        ucd="phys.gravity",
        description="Spectroscopic surface gravity",
    ),
    Feature(
        name="fe_h",
        label="[Fe/H]",
        kind="abundance",
        unit=u.dex,
        aliases=("FE_H", "[Fe/H]", "Fe_H", "FEH", "Fe/H"),
        valid_range=(-10.0, 5.0),
        ucd="phys.abund.Fe",
        description="[Fe/H] iron abundance",
    ),
    Feature(
        name="dnu",
        label="Δν",
        kind="frequency",
        unit=u.uHz,
        aliases=("DNU", "Deltanu", "Delta_nu", "Dnu_seis", "delta_nu", "Δν"),
        valid_range=(0.0, 1000.0),
        ucd="phys.freq",
        description="Asteroseismic large frequency separation",
    ),
    Feature(
        name="dpi",
        label="ΔP",
        kind="period",
        unit=u.s,
        aliases=("DPI", "DPi1", "DeltaP", "Delta_P", "DP", "ΔP", "DeltaPi"),
        valid_range=(0.0, 1000.0),
        ucd="time.period",
        description="Asymptotic g-mode period spacing",
    ),
)

_ALPHA = Feature(
    name="alpha_m",
    label="[α/M]",
    kind="abundance",
    unit=u.dex,
    aliases=("ALPHA_M", "[alpha/M]", "alpha_M", "[a/M]", "alpha_m", "[α/M]", "alpham"),
    substitutes=("mg_fe",),
    valid_range=(-5.0, 5.0),
    ucd="phys.abund",
    description="[α/M] abundance ratio (ASPCAP α; [Mg/Fe] stands in where it is absent)",
)

_CARBON_NITROGEN = Feature(
    name="c_n",
    label="[C/N]",
    kind="abundance",
    unit=u.dex,
    aliases=("C_N", "[C/N]", "C/N", "C_N_FE"),
    derived_from=(("c_fe", "n_fe"),),
    valid_range=(-5.0, 5.0),
    ucd="phys.abund",
    description="[C/N] abundance ratio, the first-dredge-up mass indicator",
)

FEATURES = {f.name: f for f in (*_BASE_FEATURES, _ALPHA, _CARBON_NITROGEN)}
FEATURES.update({f.name: f for f in map(_abundance, _ELEMENTS)})
FEATURES.update({f.name: f for f in map(_abundance_h, _ELEMENTS)})


def get_feature(name):
    """Return the `Feature` called ``name``.

    Examples
    --------
    >>> from stellar_ml_ages.features import get_feature
    >>> get_feature("c_fe").label
    '[C/Fe]'
    """
    try:
        return FEATURES[name]
    except KeyError:
        raise KeyError(
            f"unknown feature {name!r}; known features: {', '.join(sorted(FEATURES))}"
        ) from None
