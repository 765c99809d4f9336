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


# ------------------------------------------------------------------ streaming reader
STREAM_SUFFIXES = (".fits", ".fits.gz", ".parquet", ".csv")


def seed_files():
    """The demo table as each streamable file kind, as bytes: {suffix: bytes}."""
    import gzip
    import tempfile
    from pathlib import Path

    table = demo_table()[:120]
    seeds = {}
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for suffix in (".fits", ".parquet", ".csv"):
            path = Path(directory) / f"seed{suffix}"
            table.write(path, format={".fits": "fits", ".parquet": "parquet",
                                      ".csv": "ascii.csv"}[suffix])
            seeds[suffix] = path.read_bytes()
    seeds[".fits.gz"] = gzip.compress(seeds[".fits"])
    return seeds


def mutated_file(seeds, suffix, rng):
    """A damaged file of a kind: for gzip, half of the time a valid gzip of a damaged
    FITS (a flipped compressed byte almost always just fails the CRC check)."""
    import gzip

    if suffix == ".fits.gz" and rng.random() < 0.5:
        return gzip.compress(mutate(seeds[".fits"], rng), compresslevel=1)
    return mutate(seeds[suffix], rng)


def streaming_target(data, suffix, block_rows=40):
    """``stellar-ml-ages annotate`` streaming arbitrary bytes: a documented exit code.

    Returns "annotated" (0), "refused" (1: the package refused the content) or
    "unreadable" (3); a traceback or any other exit is a bug.
    """
    import contextlib
    import tempfile
    from pathlib import Path

    from stellar_ml_ages.cli import EXIT_IO, EXIT_OK, EXIT_REFUSED, main

    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = Path(directory) / f"in{suffix}"
        source.write_bytes(data)
        output = Path(directory) / ("out.parquet" if suffix == ".parquet" else "out.fits")
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            code = main(["annotate", str(source), str(output), "--model", "giants",
                         "--block-rows", str(block_rows), "--no-progress"])
        outcome = {EXIT_OK: "annotated", EXIT_REFUSED: "refused", EXIT_IO: "unreadable"}
        assert code in outcome, f"exit code {code}"
        # A refused or unreadable input leaves no output behind.
        assert (code == EXIT_OK) == output.exists()
    return outcome[code]


# ------------------------------------------------------------------ model cards
def seed_card():
    """The red-clump model's card text and array bytes."""
    from stellar_ml_ages import get_model

    return get_model("red-clump").to_payload()


def mutate_card(card_text, rng):
    """A JSON-level edit of a card (a value made odd, a key dropped, entries swapped),
    re-stamped with a matching checksum half of the time, so the schema is what
    stands between the edit and a prediction."""
    import copy
    import json

    from stellar_ml_ages.model import card_checksum

    card = copy.deepcopy(json.loads(card_text))
    odd = [float("nan"), float("inf"), -1.0, 0.0, 1e300, "x", None, [], {}, True, -5e3]
    features = card["features"]
    choice = rng.integers(7)
    entry = features[int(rng.integers(len(features)))]
    if choice == 0:
        entry[str(rng.choice(["mean", "std", "min", "max", "training_noise"]))] = odd[
            int(rng.integers(len(odd)))]
    elif choice == 1:
        entry["name"] = str(rng.choice(["teff", "logg", "c_n", "bogus", "", "dnu"]))
    elif choice == 2:
        i, j = rng.integers(len(features), size=2)
        features[i], features[j] = features[j], features[i]
    elif choice == 3:
        del card[str(rng.choice(["features", "targets", "arrays", "name",
                                 "format_version"]))]
    elif choice == 4:
        target = card["targets"][0]
        target["calibration"]["z"][int(rng.integers(len(target["calibration"]["z"])))] = odd[
            int(rng.integers(len(odd)))]
    elif choice == 5:
        card["arrays"]["file"] = str(rng.choice(["../x.npz", "/etc/passwd", "a.txt", ""]))
    else:
        card["format_version"] = odd[int(rng.integers(len(odd)))]
    if rng.random() < 0.5 and isinstance(card, dict):
        with contextlib_suppress():
            card["card_sha256"] = card_checksum(card)
    return json.dumps(card, allow_nan=True)


def contextlib_suppress():
    import contextlib

    return contextlib.suppress(Exception)


def card_target(card_text, payload, load_arrays=False):
    """The card loader on an edited card: "loaded" (then it predicts finite values)
    or "refused" with a `~stellar_ml_ages.ModelError`."""
    from stellar_ml_ages import ModelError
    from stellar_ml_ages.model import _parse_card, load_model_payload

    try:
        if not load_arrays:
            _parse_card(card_text, "fuzzed card")
            return "parsed"
        model = load_model_payload(card_text, payload)
    except ModelError:
        return "refused"
    means = np.array([[entry["mean"] for entry in model.card["features"]]])
    predictions = model.predict(means)
    assert all(np.all(np.isfinite(result["value"])) for result in predictions.values())
    return "loaded"
