"""Fuzz targets shared by the bounded test run and ``tools/fuzz.py``.

Each target takes raw input and either succeeds or raises one of the package's
own errors; anything else escaping is a bug (the fuzzer reports it).
"""

import io
import warnings

import numpy as np
from astropy.table import Table

from stellar_ml_ages import StellarMLAgesError, VOTableReadError, add_mass_age, demo_table
from stellar_ml_ages.votable import read_votable, votable_bytes


def seed_votable():
    """A valid annotated VOTable to mutate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return votable_bytes(add_mass_age(demo_table()[:5], model="giants"))


def mutate(data, rng):
    """Flip, delete or insert a few bytes."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 9)):
        position = int(rng.integers(len(data)))
        choice = rng.random()
        if choice < 0.4:
            data[position] = int(rng.integers(256))
        elif choice < 0.7:
            del data[position:position + int(rng.integers(1, 60))]
        else:
            data[position:position] = rng.integers(0, 256, int(rng.integers(1, 12))).astype(
                np.uint8).tobytes()
    return bytes(data)


def votable_target(data):
    """read_votable on arbitrary bytes: a Table or VOTableReadError."""
    try:
        table = read_votable(io.BytesIO(data))
    except VOTableReadError:
        return "refused"
    assert isinstance(table, Table)
    return "read"


def resolver_target(names, units, values, model):
    """add_mass_age on a table with arbitrary column names, unit strings and values."""
    table = Table()
    for name, unit, column in zip(names, units, values, strict=True):
        if not name or name in table.colnames:
            continue  # astropy tables need distinct, non-empty names
        table[name] = column
        try:
            table[name].unit = unit or None
        except ValueError:
            table[name].unit = None  # astropy refused the unit string itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unparseable units, assumed units: expected here
        try:
            annotated = add_mass_age(table, model=model)
        except StellarMLAgesError:
            return "refused"
    assert len(annotated) == len(table)
    return "annotated"
