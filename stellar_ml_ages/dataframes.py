"""Annotate pandas and Dask data frames: one machine's cores, or a cluster.

`annotate_dask` maps `annotate_pandas` over the partitions of a
``dask.dataframe.DataFrame``; each worker process loads the model once (from
its name or card path, never a pickled model) and annotates its partitions
with `~stellar_ml_ages.add_mass_age`, so the result is row for row what the
in-memory path gives. Data frames carry no units: give them with ``units``,
otherwise each feature's documented default unit is assumed (with an
`~stellar_ml_ages.AssumedUnitWarning`), as for a unitless table.

Predictions the model does not make are NaN here (data frames have no masks);
``mass_age_flag`` says why.

Dask is an optional dependency: ``pip install "stellar_ml_ages[dask]"``.
"""

import numpy as np
from astropy import units as u
from astropy.table import Table

from .annotate import OUTPUT_COLUMNS, add_mass_age
from .registry import get_model

__all__ = ["annotate_dask", "annotate_pandas"]


def _model_reference(model):
    """What workers receive: a name or a card path, never the model's arrays."""
    from .model import MassAgeModel

    if model is None or not isinstance(model, MassAgeModel):
        return model
    return model.name


def annotate_pandas(frame, model=None, *, units=None, mapping=None, **options):
    """Add mass and age columns to a `pandas.DataFrame`.

    Parameters
    ----------
    frame : `pandas.DataFrame`
        One row per star, features under any of their aliases.
    model : str, path-like, `~stellar_ml_ages.model.MassAgeModel` or None
        As for `~stellar_ml_ages.add_mass_age`.
    units : dict, optional
        ``{column: unit}`` for the input columns, e.g. ``{"TEFF": "K"}``.
    mapping : dict, optional
        ``{feature: column}`` overrides, as for `~stellar_ml_ages.add_mass_age`.
    **options
        Passed to `~stellar_ml_ages.add_mass_age` (``allow_extrapolation``,
        ``propagate_errors``, ``overwrite``, ...).

    Returns
    -------
    `pandas.DataFrame`
        A new frame, same index and row order, with the output columns
        appended (float64 with NaN where not predicted; ``in_hull`` bool;
        ``mass_age_flag`` int16).

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.dataframes import annotate_pandas
    >>> stars = demo_table()
    >>> frame = stars.to_pandas()
    >>> units = {name: str(stars[name].unit) for name in stars.colnames if stars[name].unit}
    >>> annotated = annotate_pandas(frame, "giants", units=units)
    >>> bool((annotated["mass"].dropna() > 0).all())
    True
    """
    table = Table.from_pandas(frame, index=False)
    for name, unit in (units or {}).items():
        if name not in table.colnames:
            raise KeyError(f"units given for column {name!r}, which the frame does not have")
        table[name].unit = u.Unit(unit)
    annotated = add_mass_age(table, get_model(model) if model is not None else None,
                             mapping=mapping, **options)
    result = frame.copy()
    # Every output column, also those replaced in place with overwrite=True (which
    # keep their position, so they are not all after the frame's own columns).
    outputs = {options.get("prefix", "") + name + options.get("suffix", "")
               for name in OUTPUT_COLUMNS}
    written = [name for name in annotated.colnames
               if name not in table.colnames or name in outputs]
    for name in written:
        column = annotated[name]
        if column.dtype.kind == "f":
            result[name] = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
        else:
            result[name] = np.asarray(column)
    return result


def annotate_dask(frame, model="giants", *, units=None, mapping=None, **options):
    """Add mass and age to every partition of a ``dask.dataframe.DataFrame``.

    Parameters
    ----------
    frame : ``dask.dataframe.DataFrame``
        E.g. ``dask.dataframe.read_parquet("survey/*.parquet")``.
    model : str or path-like
        Model name, alias or card path; each worker loads it itself (once per
        process). A `~stellar_ml_ages.model.MassAgeModel` is sent by name.
    units, mapping, **options
        As for `annotate_pandas`.

    Returns
    -------
    ``dask.dataframe.DataFrame``
        Lazy; same partitions and index, with the output columns appended.
        Nothing is computed until you call ``.compute()``, ``.to_parquet()``...

    Notes
    -----
    On a multi-node cluster the call is the same: connect a
    ``distributed.Client`` to the scheduler first, and install
    ``stellar_ml_ages`` (which carries its models) in every worker's
    environment. Each partition must fit in a worker's memory; size them with
    ``frame.repartition(partition_size="100MB")``.

    Examples
    --------
    >>> import dask.dataframe as dd                                  # doctest: +SKIP
    >>> from stellar_ml_ages.dataframes import annotate_dask         # doctest: +SKIP
    >>> stars = dd.read_parquet("survey/")                           # doctest: +SKIP
    >>> annotate_dask(stars, "giants", units={"TEFF": "K"}).to_parquet("out/")  # doctest: +SKIP
    """
    reference = _model_reference(model)
    # The output schema, from the frame's empty metadata frame.
    meta = annotate_pandas(frame._meta, reference, units=units, mapping=mapping, **options)
    return frame.map_partitions(annotate_pandas, reference, units=units, mapping=mapping,
                                meta=meta, **options)
