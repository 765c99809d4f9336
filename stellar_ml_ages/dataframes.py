"""Annotate pandas and Dask data frames: one machine's cores, or a cluster.

`annotate_dask` maps `annotate_pandas` over the partitions of a
``dask.dataframe.DataFrame``; each worker process loads the model once (from
its name or card path, or from the card and arrays of a model object sent with
the graph; never a pickled model) and annotates its partitions
with `~stellar_ml_ages.add_mass_age`, so the result is row for row what the
in-memory path gives. Data frames carry no units: give them with ``units``,
otherwise each feature's documented default unit is assumed, as for a unitless
table (``MLUNITS`` of the annotation; an `~stellar_ml_ages.AssumedUnitWarning`
where the values do not look like that unit).

Predictions the model does not make are NaN here (data frames have no masks);
``mass_age_flag`` says why.

Dask is an optional dependency: ``pip install "stellar_ml_ages[dask]"``.
"""

import functools
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import Table

from .annotate import _output_names, _recorded_levels, add_mass_age, quantile_suffix
from .registry import get_model

__all__ = ["ShippedModel", "annotate_dask", "annotate_pandas"]


@dataclass(frozen=True)
class ShippedModel:
    """A model as plain parts (card JSON text and array bytes), sent to Dask workers.

    A model *object* is sent this way, not by name (a retrained model may keep a
    packaged name) and not pickled; each worker process checks both checksums
    and builds the model once (``load_model_payload``), keyed by the card's checksum.
    """

    card_text: str
    payload: bytes
    card_sha256: str

    @classmethod
    def of(cls, model):
        from .model import card_checksum

        card_text, payload = model.to_payload()
        # Format 1 and 2 cards carry no checksum of their own: the content names them.
        return cls(card_text, payload, model.card.get("card_sha256") or card_checksum(model.card))

    def __repr__(self):
        return f"ShippedModel(card_sha256={self.card_sha256[:12]}..., {len(self.payload)} bytes)"


@functools.lru_cache(maxsize=4)
def _load_shipped(card_sha256, card_text, payload):
    from .model import load_model_payload

    return load_model_payload(card_text, payload)


def _model_reference(model):
    """What workers receive: a name or card path as given, or a model object's parts."""
    from .model import MassAgeModel

    if isinstance(model, MassAgeModel):
        return ShippedModel.of(model)
    return model


def _resolve(model):
    if isinstance(model, ShippedModel):
        return _load_shipped(model.card_sha256, model.card_text, model.payload)
    return get_model(model) if model is not None else None


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
    resolved = _resolve(model)
    annotated = add_mass_age(table, resolved, mapping=mapping, **options)
    result = frame.copy()
    # Every column this run wrote, also those replaced in place with overwrite=True
    # (which keep their position, so they are not all after the frame's own columns),
    # extra quantiles included; and what it removed as left over from an earlier run.
    used = resolved if resolved is not None else get_model(annotated.meta["MLMODEL"])
    levels = {quantile_suffix(p): p for p in _recorded_levels(annotated.meta)}
    outputs = {name.lower() for name in _output_names(
        used, options.get("prefix", ""), options.get("suffix", ""), levels).values()}
    written = [name for name in annotated.colnames
               if name not in table.colnames or name.lower() in outputs]
    result = result.drop(columns=[name for name in table.colnames
                                  if name not in annotated.colnames])
    for name in written:
        column = annotated[name]
        if column.dtype.kind == "f":
            result[name] = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
        else:
            result[name] = np.asarray(column)
    return result


def _share(shipped):
    """The shipped model as one object every task refers to, not a copy per task.

    On a distributed cluster it is scattered to the workers once (the scheduler's
    graph then holds a key, not 10 MB of arrays); with the local schedulers it is
    one delayed node of the graph.
    """
    import dask

    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client: local scheduler
        return dask.delayed(shipped, pure=True)
    future = client.scatter(shipped, broadcast=True, hash=True)
    return dask.delayed(lambda model: model, pure=True)(future)


def annotate_dask(frame, model="giants", *, units=None, mapping=None, **options):
    """Add mass and age to every partition of a ``dask.dataframe.DataFrame``.

    Parameters
    ----------
    frame : ``dask.dataframe.DataFrame``
        E.g. ``dask.dataframe.read_parquet("survey/*.parquet")``.
    model : str, path-like or `~stellar_ml_ages.model.MassAgeModel`
        Model name, alias or card path, which each worker loads itself (once per
        process); or a model object (a retrained one, say), which is sent to the
        workers as its card and arrays (`ShippedModel`, checksums verified there).
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
    if isinstance(reference, ShippedModel):
        reference = _share(reference)
    return frame.map_partitions(annotate_pandas, reference, units=units, mapping=mapping,
                                meta=meta, **options)
