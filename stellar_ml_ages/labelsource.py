"""Which survey a table's labels come from, and whether a model was trained on that scale.

Part of the applicability step. Every survey pipeline puts Teff, log g and
abundances on its own zero points; between APOGEE and LAMOST they differ by more
than the models' precision ([C/N] alone moves a giant's mass by ~10% per 0.05
dex). A model trained on APOGEE DR17 labels applied to LAMOST DD-Payne labels
therefore gives biased masses without any other sign of trouble. The guard
compares the model card's ``training_set.label_source`` with what the table says
about itself, and warns (`~stellar_ml_ages.LabelSourceWarning`) on a mismatch.

What a table says about itself, first match wins:

1. ``meta["LABELSRC"]``: set by the package's own fetchers, or by a user who has
   put labels on a model's scale (``meta["LABELSRC"] = "APOGEE DR17"``), which
   also silences the guard;
2. a VizieR catalog identifier anywhere in ``meta`` (VOTables from VizieR carry
   it as the table name, e.g. ``J/ApJS/245/34/catalog``);
3. a survey's column signature (APOGEE ``APOGEE_ID`` + ``ASPCAPFLAG``, GALAH
   ``sobject_id``, LAMOST DD-Payne's VizieR ``[C/Fe]``, ``[N/Fe]`` and ``[Ba/Fe]``,
   SLAM's ``[C/M]`` + ``[N/M]`` beside a LAMOST g-band S/N (``snrg``) or an
   ``obsid``, LAMOST ``obsid``).

A table that says nothing is not warned about.
"""

import re
import warnings
from dataclasses import dataclass

from .columns import _names_by_lower
from .exceptions import LabelSourceWarning
from .slam import SNR_ALIASES

__all__ = ["LabelSource", "check_label_source", "label_noise_problem", "label_source_problem",
           "mixed_source_problem", "scale_note", "table_label_source"]


@dataclass(frozen=True)
class LabelSource:
    """A survey label scale.

    Attributes
    ----------
    name : str
        E.g. ``"LAMOST DR5 DD-Payne"``.
    scale : str
        The label scale the survey's values are on: ``"APOGEE"`` for APOGEE and for
        LAMOST labels trained on APOGEE (SLAM), else the survey's own (``"LAMOST
        DD-Payne"``, ``"LAMOST LASP"``, ``"GALAH"``).
    evidence : str
        What in the table said so.
    """

    name: str
    scale: str
    evidence: str = ""


#: Known label sources: (name, scale, VizieR identifiers).
_KNOWN = (
    ("APOGEE DR17", "APOGEE", ("III/286",)),
    ("APOGEE DR16", "APOGEE", ("III/284",)),
    ("LAMOST DR5 DD-Payne", "LAMOST DD-Payne", ("J/ApJS/245/34",)),
    ("LAMOST DR5 LASP", "LAMOST LASP", ("V/164",)),
    # Zhang, Liu & Deng 2020: SLAM trained on LAMOST x APOGEE DR15 labels.
    ("LAMOST DR5 SLAM (APOGEE DR15 scale)", "APOGEE", ("J/ApJS/246/9",)),
    ("GALAH DR3", "GALAH", ("J/MNRAS/506/150",)),
)


def _scale_of(name):
    """The scale of a label-source name (a model card's or a table's own)."""
    for known, scale, _ in _KNOWN:
        if name == known:
            return scale
    text = name.upper()
    if "SLAM" in text or text.startswith("APOGEE"):
        return "APOGEE"
    for survey in ("DD-PAYNE", "LASP"):
        if survey in text:
            return f"LAMOST {'DD-Payne' if survey == 'DD-PAYNE' else 'LASP'}"
    if text.startswith("GALAH"):
        return "GALAH"
    return name


def _compatible(table_scale, model_scale):
    """Whether labels on ``table_scale`` suit a model trained on ``model_scale``.

    "LAMOST" alone (an obsid column) cannot tell DD-Payne from LASP: it suits any
    LAMOST-trained model, and only an APOGEE- or GALAH-trained one is a mismatch.
    """
    return table_scale == model_scale or (table_scale == "LAMOST"
                                          and model_scale.startswith("LAMOST"))


def _meta_strings(meta, depth=0):
    for key, value in meta.items():
        if isinstance(value, str):
            yield str(key), value
        elif isinstance(value, dict) and depth < 1:
            yield from _meta_strings(value, depth + 1)


def _vizier_pattern(identifier):
    # VizieR names appear with "/" (J/ApJS/245/34/catalog) or "_" (J_ApJS_245_34).
    parts = [re.escape(part) for part in identifier.split("/")]
    return re.compile(r"(?<![\w/])" + r"[/_]".join(parts) + r"(?![0-9A-Za-z])",
                      re.IGNORECASE)


def table_label_source(table):
    """What the table says about the survey its labels come from.

    Parameters
    ----------
    table : `~astropy.table.Table`

    Returns
    -------
    LabelSource or None
        None when neither ``meta`` nor the column names say.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.labelsource import table_label_source
    >>> stars = Table(names=["APOGEE_ID", "ASPCAPFLAG", "TEFF"])
    >>> table_label_source(stars).name
    'APOGEE'
    >>> stars.meta["name"] = "J/ApJS/245/34/catalog"
    >>> table_label_source(stars).scale
    'LAMOST DD-Payne'
    """
    meta = getattr(table, "meta", None) or {}
    declared = meta.get("LABELSRC")
    if isinstance(declared, str) and declared.strip():
        return LabelSource(declared.strip(), _scale_of(declared.strip()), "meta['LABELSRC']")
    for key, text in _meta_strings(meta):
        for name, scale, identifiers in _KNOWN:
            for identifier in identifiers:
                if _vizier_pattern(identifier).search(text):
                    return LabelSource(name, scale, f"meta[{key!r}] names VizieR {identifier}")
    names = set(_names_by_lower(table))
    if "apogee_id" in names and ({"aspcapflag", "aspcapflags"} & names):
        return LabelSource("APOGEE", "APOGEE", "columns APOGEE_ID and ASPCAPFLAG")
    if "sobject_id" in names or "flag_sp" in names:
        return LabelSource("GALAH", "GALAH", "column sobject_id / flag_sp")
    if {"[c/fe]", "[n/fe]", "[ba/fe]"} <= names and not {"c_m", "[c/m]"} & names:
        # VizieR's spelling of the DD-Payne catalog (J/ApJS/245/34): [Ba/Fe] beside the
        # C and N abundances is a LAMOST DR5 DD-Payne table, with or without its obsid.
        return LabelSource("LAMOST DR5 DD-Payne", "LAMOST DD-Payne",
                           "columns [C/Fe], [N/Fe] and [Ba/Fe] (VizieR J/ApJS/245/34 names)")
    slam_abundances = bool({"c_m", "[c/m]"} & names) and bool({"n_m", "[n/m]"} & names)
    if slam_abundances and {alias.lower() for alias in SNR_ALIASES} & names:
        # [C/M] and [N/M] (APOGEE writes C_FE, N_FE) beside LAMOST's g-band S/N: a SLAM
        # table that has lost its obsid (a VizieR column selection, a join).
        return LabelSource("LAMOST DR5 SLAM (APOGEE DR15 scale)", "APOGEE",
                           "columns [C/M], [N/M] and a g-band S/N (LAMOST's snrg)")
    if "obsid" in names:
        if {"c_m", "[c/m]", "n_m", "[n/m]"} & names:
            return LabelSource("LAMOST DR5 SLAM (APOGEE DR15 scale)", "APOGEE",
                               "columns obsid and [C/M]")
        return LabelSource("LAMOST", "LAMOST", "column obsid (LAMOST observation id)")
    return None


def _source_of(table):
    """The label source of a table, or of a `~stellar_ml_ages.reading.TableReading` of one
    (the annotation reads it once and asks the reading)."""
    from .reading import TableReading

    if isinstance(table, TableReading):
        return table.label_source
    return table_label_source(table)


def _remedy(model, source):
    if source.scale.startswith("LAMOST"):
        return (
            "train the paper's LAMOST models from VizieR x APOKASC-2 over TAP with "
            "'stellar-ml-ages train giants-lamost --from-vo' (it writes to "
            "stellar_ml_ages.conf.user_model_dir or $STELLAR_ML_AGES_MODELS), then use "
            "model='giants-lamost-dr5'; or use labels on the APOGEE scale (LAMOST SLAM, "
            "VizieR J/ApJS/246/9)")
    if source.scale == "APOGEE":
        return "use a model trained on APOGEE labels, e.g. model='giants'"
    return (
        f"put the labels on the {model.card['training_set'].get('label_source')} scale first "
        "(offsets from stars in common) and set meta['LABELSRC'] to say so, or train a model "
        "on this survey's labels with 'stellar-ml-ages train SPEC --table FILE'")


def _slam_note(model):
    from .slam import zero_point_note

    return zero_point_note(model)


#: What is known about a compatible source's zero points against a model's labels:
#: (table's label source, model's label source) -> a function giving the note.
_SCALE_NOTES = {
    ("LAMOST DR5 SLAM (APOGEE DR15 scale)", "APOGEE DR17"): _slam_note,
}


def scale_note(table, model):
    """What is known of the zero points between the table's labels and the model's, or None.

    For a source on the model's scale but from another release (SLAM's LAMOST
    labels, on the APOGEE DR15 scale, with a DR17 model): the offsets measured and
    those not. `~stellar_ml_ages.add_mass_age` writes it to ``meta["MLSCALE"]``.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages import get_model
    >>> from stellar_ml_ages.labelsource import scale_note
    >>> stars = Table(names=["obsid", "[C/M]", "[N/M]"])
    >>> scale_note(stars, get_model("giants")).startswith("SLAM labels are on the APOGEE DR15")
    True
    """
    source = _source_of(table)
    trained_on = model.card.get("training_set", {}).get("label_source")
    if source is None or not trained_on:
        return None
    note = _SCALE_NOTES.get((source.name, trained_on))
    return None if note is None else note(model)


def label_source_problem(table, model):
    """The warning text when the table's labels are not on the model's scale, else None.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~stellar_ml_ages.reading.TableReading`
    model : `~stellar_ml_ages.model.MassAgeModel`

    Returns
    -------
    str or None
        Names both surveys and the remedy.
    """
    source = _source_of(table)
    trained_on = model.card.get("training_set", {}).get("label_source")
    if source is None or not trained_on:
        return None
    if _compatible(source.scale, _scale_of(trained_on)):
        return None
    return (
        f"the table's labels come from {source.name} ({source.evidence}), but model "
        f"{model.name!r} was trained on {trained_on} labels: survey zero points differ by "
        f"more than the model's precision, so masses and ages would be biased. Remedy: "
        f"{_remedy(model, source)}. If the labels are already on the {trained_on} scale, "
        f"set table.meta['LABELSRC'] = {trained_on!r}.")


#: Columns of per-[Fe] and [Fe/H] labels (DD-Payne's, allStar's) that a SLAM table does not
#: have: SLAM gives [C/M], [N/M], [M/H].
_NOT_SLAM = {"[c/fe]", "[n/fe]", "[fe/h]", "c_fe", "n_fe", "fe_h"}


def mixed_source_problem(table, input_columns):
    """The warning text when a table recognised as SLAM had features read from another
    pipeline's columns beside SLAM's own, else None.

    A table with both SLAM's [C/M], [N/M] and, say, DD-Payne's [C/Fe], [N/Fe] is read
    from the [C/Fe] columns (a direct match beats a stand-in); mixing two pipelines'
    zero points is never what the user wants silently.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.labelsource import mixed_source_problem
    >>> both = Table(names=["obsid", "[C/M]", "[N/M]", "[C/Fe]", "[N/Fe]"])
    >>> mixed_source_problem(both, ["[C/Fe]", "[N/Fe]"]).startswith("the table is read as "
    ...                                                         "LAMOST DR5 SLAM")
    True
    >>> mixed_source_problem(both, ["[C/M]", "[N/M]"]) is None
    True
    """
    source = _source_of(table)
    if source is None or "SLAM" not in source.name.upper():
        return None
    others = [column for column in dict.fromkeys(input_columns) if column.lower() in _NOT_SLAM]
    if not others:
        return None
    slam_own = [name for name in table.colnames if name.lower() in ("[c/m]", "[n/m]", "[m/h]",
                                                                     "c_m", "n_m", "m_h")]
    if not slam_own:
        # Recognised as SLAM (by meta, say) with no [C/M]-style columns: the columns read
        # are SLAM's own under other names, so nothing is mixed.
        return None
    return (
        f"the table is read as {source.name} ({source.evidence}), but the features were read "
        f"from {', '.join(others)} beside SLAM's own {', '.join(slam_own)}: if "
        "those columns come from another pipeline (DD-Payne, LASP), two zero points are mixed. "
        "Remedy: remove them, or name SLAM's columns with mapping={'c_fe': '[C/M]', ...} "
        "(command line: --map); if they are SLAM's after all, set "
        "table.meta['LABELSRC'] to say which survey the labels come from.")


def label_noise_problem(table, model, propagate_errors):
    """The warning text when a table's labels are noisier than the model was trained for
    and nothing propagates it, else None.

    SLAM's LAMOST labels carry errors several times APOGEE's: ``giants`` given them
    as they are gives [p16, p84] intervals that hold about half the time (47%
    measured), not 68%. A model trained for that noise (its card's
    ``noise_model.label_source`` is the table's source: ``giants-slam``) or error
    propagation is what makes them hold.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from stellar_ml_ages import get_model
    >>> from stellar_ml_ages.labelsource import label_noise_problem
    >>> slam = Table(names=["obsid", "[C/M]", "[N/M]"])
    >>> label_noise_problem(slam, get_model("giants"), False)[:39]
    "the table's labels come from LAMOST DR5"
    >>> label_noise_problem(slam, get_model("giants-slam"), False) is None
    True
    """
    source = _source_of(table)
    if source is None or "SLAM" not in source.name.upper() or propagate_errors:
        return None
    noise_model = model.card.get("training_set", {}).get("noise_model", {})
    if noise_model.get("label_source") == source.name:
        return None
    return (
        f"the table's labels come from {source.name} ({source.evidence}), whose errors are "
        f"several times those of the labels model {model.name!r} was trained on, and no "
        "errors are propagated: its [p16, p84] intervals would hold the truth about half the "
        "time, not 68%. Remedy: model='giants-slam' (trained for SLAM's errors at S/N 50), "
        "or propagate_errors=True with SLAM's errors in the table "
        "(stellar_ml_ages.slam.slam_uncertainties; command line: --slam-errors)")


def check_label_source(table, model, stacklevel=2):
    """Warn when the table's labels are not on the scale the model was trained on.

    Parameters
    ----------
    table : `~astropy.table.Table`
    model : `~stellar_ml_ages.model.MassAgeModel`

    Returns
    -------
    LabelSource or None
        What the table says about itself.

    Warns
    -----
    LabelSourceWarning
        Naming both surveys and the remedy.

    Examples
    --------
    >>> import warnings
    >>> from stellar_ml_ages import demo_table, get_model
    >>> from stellar_ml_ages.labelsource import check_label_source
    >>> stars = demo_table()
    >>> stars.meta["LABELSRC"] = "GALAH DR3"
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     source = check_label_source(stars, get_model("giants"))
    >>> source.scale, caught[0].category.__name__
    ('GALAH', 'LabelSourceWarning')
    """
    problem = label_source_problem(table, model)
    if problem:
        warnings.warn(problem, LabelSourceWarning, stacklevel=stacklevel + 1)
    return _source_of(table)
