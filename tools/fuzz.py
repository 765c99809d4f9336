"""Fuzz the readers and loaders for a bounded time.

    python tools/fuzz.py --seconds 120

Targets (``tests/fuzz_targets.py``): the VOTable reader, the column resolver,
the streaming reader of ``stellar-ml-ages annotate`` (FITS, gzip FITS, Parquet,
CSV with flipped, cut or inserted bytes: a documented exit code, never a
traceback) and the model-card loader (edited cards, re-stamped half of the time:
refused with a ModelError, or loaded and predicting finite numbers). Anything
else is printed with the input that caused it and makes the exit status 1.
Randomness is fresh unless ``--seed``.
"""

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stellar_ml_ages.features import get_feature
from tests.fuzz_targets import (
    STREAM_SUFFIXES,
    card_target,
    mutate,
    mutate_card,
    mutated_file,
    resolver_target,
    seed_card,
    seed_files,
    seed_votable,
    streaming_target,
    votable_target,
)

ALIASES = [alias for name in ("teff", "logg", "fe_h", "mg_fe", "c_fe", "n_fe")
           for alias in get_feature(name).aliases]
UNITS = ["", "K", "dex", "dex(cm/s2)", "[cm/s2]", "deg_C", "m", "uHz", "%", "mag", "bogus"]


def random_columns(rng):
    """Mostly the giants model's aliases, sometimes garbage; random kinds of values."""
    n_rows = int(rng.integers(0, 8))
    names, units, values = [], [], []
    if rng.random() < 0.5:  # a complete set of inputs, so annotation itself is reached
        for name, unit, center in (("teff", "K", 4700), ("logg", "dex(cm/s2)", 2.5),
                                   ("fe_h", "dex", 0), ("mg_fe", "dex", 0.05),
                                   ("c_fe", "dex", -0.1), ("n_fe", "dex", 0.3)):
            names.append(str(rng.choice(get_feature(name).aliases)))
            units.append(unit if rng.random() < 0.8 else str(rng.choice(UNITS)))
            values.append(center + rng.normal(0, 0.05 * abs(center) + 0.05, n_rows))
    for _ in range(int(rng.integers(0, 4))):
        names.append(str(rng.choice(ALIASES)) if rng.random() < 0.8
                     else "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, 5)))
        units.append(str(rng.choice(UNITS)))
        kind = rng.integers(4)
        values.append([rng.normal(3000, 2000, n_rows),
                       np.where(rng.random(n_rows) < 0.5, np.nan, rng.normal(0, 1, n_rows)),
                       np.array(["4800", "", "x", "2.5", "nan", "1e9", "-3", "0"])[:n_rows],
                       rng.normal(size=(n_rows, 2))][kind])
    return names, units, values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    seed = seed_votable()
    files = seed_files()
    card_text, payload = seed_card()
    outcomes = collections.Counter()
    failures = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        draw = rng.random()
        if draw < 0.3:
            data = mutate(seed, rng)
            try:
                outcomes["votable " + votable_target(data)] += 1
            except Exception:
                failures += 1
                print(f"VOTable reader failure on {data[:200]!r}...\n{traceback.format_exc()}")
        elif draw < 0.55:
            columns = random_columns(rng)
            try:
                outcomes["resolver " + resolver_target(*columns, "giants")] += 1
            except Exception:
                failures += 1
                print(f"resolver failure on {columns[:2]}\n{traceback.format_exc()}")
        elif draw < 0.8:
            suffix = str(rng.choice(STREAM_SUFFIXES))
            data = mutated_file(files, suffix, rng)
            try:
                outcomes[f"stream{suffix} " + streaming_target(data, suffix)] += 1
            except Exception:
                failures += 1
                print(f"streaming failure on a mutated {suffix}\n{traceback.format_exc()}")
        else:
            edited = mutate_card(card_text, rng)
            try:
                outcomes["card " + card_target(edited, payload, rng.random() < 0.1)] += 1
            except Exception:
                failures += 1
                print(f"card loader failure on {edited[:300]!r}\n{traceback.format_exc()}")
    total = sum(outcomes.values()) + failures
    print(f"{total} inputs in {args.seconds:.0f} s: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
          + f"; unexpected exceptions: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
