"""The survey tables the package reads over TAP, and how their columns map.

Each `Catalog` names its service and table through ``stellar_ml_ages.vo.conf``, the
columns fetched by default, and the renames that give the package's column
resolver names it understands (VizieR's ``Teff``, ``[C/Fe]`` and ``e_[C/Fe]``
already are). Change them through ``conf`` or pass ``columns=`` when a service
differs.

Where a column's VizieR label could not be confirmed from a stored ReadMe (the
Ting et al. 2018 red clump, the DD-Payne abundances), the entry lists the known
spellings and `~stellar_ml_ages.vo.fetch` picks the one the service's own
``TAP_SCHEMA.columns`` has, before the query; ``verified`` on each catalog says
what was confirmed, and from which source.
"""

import re
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np

from .config import conf

__all__ = ["CATALOGS", "Catalog", "column_spellings", "is_optional", "positions_from_2mass"]

_ELEMENTS = ("C", "N", "O", "Na", "Mg", "Ti", "Mn", "Co", "Ba")


@dataclass(frozen=True)
class Catalog:
    """A table served over TAP.

    Parameters
    ----------
    key : str
        Short name (``"lamost"``, ``"apokasc2"``, ``"red_clump"``, ``"lasp"``).
    title : str
    service_item, table_item : str
        Names of the ```stellar_ml_ages.vo.conf``` items holding the service URL and
        the ADQL table name.
    ra, dec : str or None
        Position columns; None when the table has none (APOKASC-2 Table 5).
    columns : tuple
        Columns fetched by default; an entry that is itself a tuple lists
        alternative spellings, the first one the service has is used.
    rename : dict
        Service column to package column; the service's name is kept in the
        column's ``meta["service_name"]``.
    units : dict
        Package column to the unit to assume when the service gives none.
    citation : str
    label_source : str or None
        The survey label scale of the catalog's labels, written to the fetched
        table's ``meta["LABELSRC"]`` (`stellar_ml_ages.labelsource`).
    verified : str
        Which names were confirmed, and the source.
    table_prefix_item : str or None
        Name of a ``conf`` item with a table-name prefix: when the table item is
        empty, the table is the one under this prefix, in the service's
        TAP_SCHEMA, that has every required column.
    prepare : callable or None
        Applied to every fetched table (and catalog page) after the renames, e.g.
        `stellar_ml_ages.slam.slam_uncertainties` for SLAM.

    Notes
    -----
    An entry of ``columns`` that is a tuple containing None is optional: the first
    spelling the service has is fetched, and none is fetched when it has none.
    """

    key: str
    title: str
    service_item: str
    table_item: str
    ra: str | None
    dec: str | None
    columns: tuple
    rename: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    citation: str = ""
    label_source: str | None = None
    verified: str = ""
    table_prefix_item: str | None = None
    prepare: object = None

    @property
    def url(self):
        return getattr(conf, self.service_item)

    @property
    def table(self):
        return getattr(conf, self.table_item)

    @property
    def table_prefix(self):
        return getattr(conf, self.table_prefix_item) if self.table_prefix_item else None


def _portable_names():
    """VizieR label -> allStar-style name: FITS- and VOTable-safe, and read by the resolver."""
    names = {"RAJ2000": "RA", "DEJ2000": "DEC", "Teff": "TEFF", "e_Teff": "TEFF_ERR",
             "logg": "LOGG", "e_logg": "LOGG_ERR", "[Fe/H]": "FE_H", "e_[Fe/H]": "FE_H_ERR"}
    for element in _ELEMENTS:
        names[f"[{element}/Fe]"] = f"{element.upper()}_FE"
        names[f"e_[{element}/Fe]"] = f"{element.upper()}_FE_ERR"
    return names


def _abundance_columns():
    names = ["[Fe/H]", "e_[Fe/H]"]
    for element in _ELEMENTS:
        names += [f"[{element}/Fe]", f"e_[{element}/Fe]"]
    return tuple(names)


def column_spellings(entry):
    """The alternative spellings of one ``Catalog.columns`` entry, preferred first."""
    return (entry,) if isinstance(entry, str) else tuple(s for s in entry if s is not None)


def is_optional(entry):
    """Whether a ``Catalog.columns`` entry may be absent from the service's table."""
    return not isinstance(entry, str) and None in entry


def _slam_columns():
    """Spellings of the SLAM table's columns (VizieR's conventions; see ``verified``)."""
    labels = {"Teff": ("Teff",), "logg": ("logg",), "[M/H]": ("[M/H]",),
              "[alpha/M]": ("[alpha/M]", "[a/M]"), "[C/M]": ("[C/M]",), "[N/M]": ("[N/M]",)}
    columns = [("ObsID", "obsid", None), ("RAJ2000", "RAdeg"), ("DEJ2000", "DEdeg")]
    for spellings in labels.values():
        columns.append(spellings if len(spellings) > 1 else spellings[0])
        columns.append((*(f"e_{name}" for name in spellings), None))
    columns.append(("snrg", "S/Ng", "SNRg", "snr_g", None))
    return tuple(columns)


def _slam_renames():
    names = {"ObsID": "OBSID", "obsid": "OBSID", "RAJ2000": "RA", "RAdeg": "RA",
             "DEJ2000": "DEC", "DEdeg": "DEC", "Teff": "TEFF", "e_Teff": "TEFF_ERR",
             "logg": "LOGG", "e_logg": "LOGG_ERR", "snrg": "SNRG", "S/Ng": "SNRG",
             "SNRg": "SNRG", "snr_g": "SNRG"}
    for label, portable in (("[M/H]", "M_H"), ("[alpha/M]", "ALPHA_M"), ("[a/M]", "ALPHA_M"),
                            ("[C/M]", "C_M"), ("[N/M]", "N_M")):
        names[label] = portable
        names[f"e_{label}"] = f"{portable}_ERR"
    return names


def _slam_prepare(table):
    from ..slam import slam_uncertainties

    # A table without an S/N column gets the reference S/N's error, with a warning
    # (and "assumed" in MLSLAMER): the service decides which columns there are.
    return slam_uncertainties(table, missing_snr="warn")


_DEX_UNITS = {_portable_names()[name]: u.dex for name in _abundance_columns()}

CATALOGS = {
    catalog.key: catalog
    for catalog in (
        Catalog(
            key="lamost",
            title="LAMOST DR5 DD-Payne abundances (Xiang et al. 2019)",
            service_item="vizier_tap_url",
            table_item="lamost_table",
            ra="RAJ2000",
            dec="DEJ2000",
            columns=("RAJ2000", "DEJ2000", "Teff", "e_Teff", "logg", "e_logg",
                     *_abundance_columns()),
            rename=_portable_names(),
            units={"RA": u.deg, "DEC": u.deg, "TEFF": u.K, "TEFF_ERR": u.K,
                   "LOGG": u.dex(u.cm / u.s**2), "LOGG_ERR": u.dex, **_DEX_UNITS},
            citation="Xiang et al. 2019, ApJS 245, 34",
            label_source="LAMOST DR5 DD-Payne",
            verified=("table J/ApJS/245/34/catalog, RAJ2000, DEJ2000, Teff, e_Teff, logg: "
                      "public scripts querying it through CDS XMatch; the [X/Fe] and e_[X/Fe] "
                      "labels follow VizieR's convention and are checked by the online tests"),
        ),
        Catalog(
            key="apokasc2",
            title="APOKASC-2 asteroseismic masses and ages (Pinsonneault et al. 2018)",
            service_item="vizier_tap_url",
            table_item="apokasc2_table",
            ra=None,
            dec=None,
            # Table 5 is small (6,676 rows): fetch every column, and rename whichever
            # spelling of a column the service uses.
            columns="*",
            rename={"2MASS": "TMASS_ID", "FeH": "FE_H_APOKASC", "Teff": "TEFF_APOKASC",
                    "Numax": "NUMAX", "Dnu": "DNU", "ES": "EVSTATE", "M(cor)": "MASS",
                    "M_cor_": "MASS", "Mcor": "MASS", "LogAge": "LOGAGE_MYR",
                    "logAge": "LOGAGE_MYR"},
            units={"TEFF_APOKASC": u.K, "FE_H_APOKASC": u.dex, "NUMAX": u.uHz,
                   "DNU": u.uHz, "MASS": u.solMass},
            citation="Pinsonneault et al. 2018, ApJS 239, 32",
            verified=("table J/ApJS/239/32/table5 and labels 2MASS (no 2M prefix), KIC, Teff, "
                      "FeH, Numax, Dnu, ES, M(cor), LogAge (log10 age/Myr): public code "
                      "reading it through astroquery.vizier"),
        ),
        Catalog(
            key="red_clump",
            title="LAMOST red clump with Δν and ΔP (Ting, Hawkins & Rix 2018)",
            service_item="vizier_tap_url",
            table_item="red_clump_table",
            ra="RAJ2000",
            dec="DEJ2000",
            # Spectroscopic Δν and ΔP: "Deltanu"/"DeltaP" as reported by code reading the
            # table; the former defaults as fallbacks. The service's TAP_SCHEMA decides.
            columns=("RAJ2000", "DEJ2000", ("Deltanu", "Dnu"), ("DeltaP", "DPi1")),
            rename={"RAJ2000": "RA", "DEJ2000": "DEC", "Deltanu": "DNU", "Dnu": "DNU",
                    "DeltaP": "DPI", "DPi1": "DPI"},
            units={"RA": u.deg, "DEC": u.deg, "DNU": u.uHz, "DPI": u.s},
            citation="Ting, Hawkins & Rix 2018, ApJL 858, L7",
            label_source="LAMOST DR3 (Ting et al. 2018 data-driven Δν, ΔP)",
            verified=("not confirmed from a stored ReadMe: the Δν/ΔP labels are chosen at "
                      "query time from the service's TAP_SCHEMA.columns"),
        ),
        Catalog(
            key="lasp",
            title="LAMOST DR5 LASP stellar parameters (VizieR V/164/stellar5)",
            service_item="vizier_tap_url",
            table_item="lasp_table",
            ra="RAJ2000",
            dec="DEJ2000",
            columns=("ObsID", "RAJ2000", "DEJ2000", "Teff", "e_Teff", "logg", "e_logg",
                     "[Fe/H]", "e_[Fe/H]", "snrg"),
            rename={"ObsID": "OBSID", "RAJ2000": "RA", "DEJ2000": "DEC", "Teff": "TEFF",
                    "e_Teff": "TEFF_ERR", "logg": "LOGG", "e_logg": "LOGG_ERR",
                    "[Fe/H]": "FE_H", "e_[Fe/H]": "FE_H_ERR", "snrg": "SNRG"},
            units={"RA": u.deg, "DEC": u.deg, "TEFF": u.K, "TEFF_ERR": u.K,
                   "LOGG": u.dex(u.cm / u.s**2), "LOGG_ERR": u.dex, "FE_H": u.dex,
                   "FE_H_ERR": u.dex},
            citation="Luo et al. 2019, VizieR V/164 (LAMOST DR5)",
            label_source="LAMOST DR5 LASP",
            verified=("tables of V/164 (dr5, stellar5, astars5, mstars5, dr5_plan) from its "
                      "VizieR ReadMe; stellar5 labels ObsID, RAJ2000, DEJ2000, Teff, e_Teff, "
                      "logg, e_logg, [Fe/H], e_[Fe/H], snrg from several public TAP and "
                      "astroquery scripts"),
        ),
        Catalog(
            key="slam",
            title="LAMOST DR5 K giants, SLAM labels on the APOGEE DR15 scale "
                  "(Zhang, Liu & Deng 2020)",
            service_item="vizier_tap_url",
            table_item="slam_table",
            table_prefix_item="slam_table_prefix",
            ra=("RAJ2000", "RAdeg"),
            dec=("DEJ2000", "DEdeg"),
            columns=_slam_columns(),
            rename=_slam_renames(),
            units={"RA": u.deg, "DEC": u.deg, "TEFF": u.K, "TEFF_ERR": u.K,
                   "LOGG": u.dex(u.cm / u.s**2), "LOGG_ERR": u.dex,
                   **{f"{name}{end}": u.dex for name in ("M_H", "ALPHA_M", "C_M", "N_M")
                      for end in ("", "_ERR")}},
            citation="Zhang, Liu & Deng 2020, ApJS 246, 9",
            label_source="LAMOST DR5 SLAM (APOGEE DR15 scale)",
            verified=("catalog J/ApJS/246/9 and its labels Teff, log g, [M/H], [alpha/M], "
                      "[C/M], [N/M] with their scatters: the VizieR ReadMe's abstract; the "
                      "table name and column labels are NOT confirmed (the stored ReadMe stops "
                      "before its byte-by-byte description): the table is the one under "
                      "J/ApJS/246/9/ whose TAP_SCHEMA columns hold the labels, and each "
                      "label's spelling is chosen from that service's column list"),
            prepare=_slam_prepare,
        ),
    )
}

_TWO_MASS = re.compile(
    r"^(?:2MASS\s*J|2M|J)?(\d{2})(\d{2})(\d{2})(\d{2})([+-])(\d{2})(\d{2})(\d{2})(\d)")


def positions_from_2mass(designations):
    """RA and Dec (degrees) from 2MASS designations such as ``2M19250937+3644599``.

    The designation truncates the position, so this is good to about 0.1 arcsec:
    enough for a cross-match within a few arcsec.

    Returns
    -------
    ra, dec : `~astropy.units.Quantity`
        NaN where a designation cannot be parsed.

    Examples
    --------
    >>> from stellar_ml_ages.vo.catalogs import positions_from_2mass
    >>> ra, dec = positions_from_2mass(["2M19250937+3644599"])
    >>> round(float(ra[0].value), 5), round(float(dec[0].value), 5)
    (291.28904, 36.74997)
    """
    ra = np.full(len(designations), np.nan)
    dec = np.full(len(designations), np.nan)
    for i, name in enumerate(designations):
        text = name.decode() if isinstance(name, bytes) else str(name)
        match = _TWO_MASS.match(text.strip())
        if not match:
            continue
        hh, mm, ss, cs, sign, dd, am, asec, ds = match.groups()
        ra[i] = 15.0 * (int(hh) + int(mm) / 60 + (int(ss) + int(cs) / 100) / 3600)
        value = int(dd) + int(am) / 60 + (int(asec) + int(ds) / 10) / 3600
        dec[i] = -value if sign == "-" else value
    return ra * u.deg, dec * u.deg
