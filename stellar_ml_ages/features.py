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

__all__ = ["FEATURES", "Feature", "Relation", "get_feature"]


@dataclass(frozen=True)
class Relation:
    """A feature as a signed sum of other features, e.g. ``[C/Fe] = [C/M] + [M/H] - [Fe/H]``.

    Parameters
    ----------
    terms : tuple of (int, str)
        ``(sign, feature name)`` pairs, sign +1 or -1.
    note : str, optional
        Where the relation comes from, for the docs and error messages.

    Examples
    --------
    >>> from stellar_ml_ages.features import Relation
    >>> print(Relation(((1, "c_m"), (1, "m_h"), (-1, "fe_h"))))
    [C/M] + [M/H] - [Fe/H]
    """

    terms: tuple
    note: str = field(default="", compare=False)

    @classmethod
    def difference(cls, minuend, subtrahend, note=""):
        """``minuend - subtrahend``, the common case (``[Mg/Fe] = [Mg/H] - [Fe/H]``)."""
        return cls(((1, minuend), (-1, subtrahend)), note)

    @property
    def names(self):
        """The feature names of the terms, in order."""
        return tuple(name for _, name in self.terms)

    def __str__(self):
        text = ""
        for i, (sign, name) in enumerate(self.terms):
            label = get_feature(name).label
            if i == 0:
                text = label if sign > 0 else f"-{label}"
            else:
                text += f" {'+' if sign > 0 else '-'} {label}"
        return text


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
    derived_from : tuple of `Relation`, optional
        Relations that give this feature from others, tried in order when no alias
        is present, e.g. ``[Mg/Fe] = [Mg/H] - [Fe/H]`` or, for SLAM's labels,
        ``[N/Fe] = [N/M] + [M/H] - [Fe/H]``. A plain pair ``(minuend, subtrahend)``
        is read as their difference.
    substitutes : tuple of str, optional
        Features that stand in for this one when neither an alias nor a derivation
        is found, e.g. [Mg/Fe] for [α/M] (in APOGEE DR17 the two agree to 0.02 dex
        for giants), or [M/H] for [Fe/H]; the substitution is recorded in the
        output's ``meta``.
    counterpart : str, optional
        The training label this quantity is measured as where it stands in for it
        (SLAM's [N/M] for [N/Fe], [M/H] for [Fe/H]): its training noise is the
        counterpart's when input errors are propagated.
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
    counterpart: str = ""
    valid_range: tuple = (float("-inf"), float("inf"))
    ucd: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self):
        relations = tuple(
            entry if isinstance(entry, Relation) else Relation.difference(*entry)
            for entry in self.derived_from)
        object.__setattr__(self, "derived_from", relations)

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
        derived_from=(
            Relation.difference(f"{element.lower()}_h", "fe_h"),
            # ASPCAP defines [X/Fe] from [X/M] this way; SLAM's LAMOST labels are [X/M].
            Relation(((1, f"{element.lower()}_m"), (1, "m_h"), (-1, "fe_h")),
                     note="ASPCAP: [X/Fe] = [X/M] + [M/H] - [Fe/H]"),
        ),
        valid_range=(-5.0, 5.0),
        ucd=ucd,
        description=f"{label} abundance ratio",
    )


def _abundance_over(element, reference, *, joined_alias, valid_range, description,
                    counterpart=""):
    """[X/M] or [X/H]: aliases ``X_M``, ``[X/M]``, ``X_M`` (element's case), ``X/M``."""
    tag = element.upper()
    label = f"[{element}/{reference}]"
    aliases = (f"{tag}_{reference}", label, f"{element}_{reference}",
               f"{tag}{reference}" if joined_alias else f"{element}/{reference}")
    return Feature(
        name=f"{element.lower()}_{reference.lower()}",
        label=label,
        kind="abundance",
        unit=u.dex,
        aliases=aliases,
        valid_range=valid_range,
        counterpart=counterpart,
        ucd="phys.abund",
        description=f"{label} {description}",
    )


def _abundance_m(element):
    return _abundance_over(element, "M", joined_alias=False, valid_range=(-5.0, 5.0),
                           description="abundance ratio relative to the overall metallicity",
                           counterpart=f"{element.lower()}_fe")


def _abundance_h(element):
    return _abundance_over(element, "H", joined_alias=True, valid_range=(-10.0, 5.0),
                           description="abundance")


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
        # SLAM's LAMOST labels have [M/H] only; the stand-in is recorded in meta.
        substitutes=("m_h",),
        valid_range=(-10.0, 5.0),
        ucd="phys.abund.Fe",
        description="[Fe/H] iron abundance",
    ),
    Feature(
        name="m_h",
        label="[M/H]",
        kind="abundance",
        unit=u.dex,
        aliases=("M_H", "[M/H]", "M/H"),
        counterpart="fe_h",
        valid_range=(-10.0, 5.0),
        ucd="phys.abund.Z",
        description="[M/H] overall metallicity",
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
    derived_from=(Relation.difference("c_fe", "n_fe"),
                  # Exact: [C/N] = [C/M] - [N/M] = [C/Fe] - [N/Fe] whatever [M/H] is.
                  Relation.difference("c_m", "n_m")),
    valid_range=(-5.0, 5.0),
    ucd="phys.abund",
    description="[C/N] abundance ratio, the first-dredge-up mass indicator",
)

FEATURES = {f.name: f for f in (*_BASE_FEATURES, _ALPHA, _CARBON_NITROGEN)}
FEATURES.update({f.name: f for f in map(_abundance, _ELEMENTS)})
FEATURES.update({f.name: f for f in map(_abundance_h, _ELEMENTS)})
FEATURES.update({f.name: f for f in map(_abundance_m, _ELEMENTS)})


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
