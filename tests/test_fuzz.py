"""A bounded, seeded fuzz run in every test session (``tools/fuzz.py`` runs longer)."""

import collections

import numpy as np
import pytest

from stellar_ml_ages.features import get_feature

from .fuzz_targets import (
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

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_mutated_votables_are_read_or_refused_cleanly():
    rng = np.random.default_rng(2026)
    seed = seed_votable()
    outcomes = collections.Counter(votable_target(mutate(seed, rng)) for _ in range(400))
    assert votable_target(seed) == "read"
    # Both outcomes occur, and nothing else escaped (it would have raised here).
    assert outcomes["refused"] > 100 and outcomes["read"] > 0, outcomes


GIANT_ALIASES = [alias for name in ("teff", "logg", "fe_h", "mg_fe", "c_fe", "n_fe")
                 for alias in get_feature(name).aliases]
UNIT_STRINGS = ["", "K", "dex", "dex(cm/s2)", "[cm/s2]", "log(cm.s**-2)", "deg_C", "m", "Jy",
                "uHz", "km/s", "%", "mag", "nonsense", "[-]", "1/s"]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.one_of(st.sampled_from(GIANT_ALIASES), st.text(max_size=12)),
                          st.sampled_from(UNIT_STRINGS),
                          st.sampled_from(["float", "text", "int", "bytes", "2d"])),
                min_size=0, max_size=9),
       st.integers(0, 6))
def test_column_resolver_accepts_or_refuses_cleanly(columns, n_rows):
    rng = np.random.default_rng(n_rows)
    makers = {
        "float": lambda: rng.normal(0, 2000, n_rows),
        "text": lambda: np.array(["4800", "x", "", "nan", "1e3", "-"])[:n_rows],
        "int": lambda: rng.integers(-5, 5000, n_rows),
        "bytes": lambda: np.array([b"4750", b"2.5", b"", b"0.1", b"abc", b"-1"])[:n_rows],
        "2d": lambda: rng.normal(size=(n_rows, 2)),
    }
    names = [name for name, _, _ in columns]
    units = [unit for _, unit, _ in columns]
    values = [makers[kind]() for _, _, kind in columns]
    assert resolver_target(names, units, values, "giants") in ("refused", "annotated")


def test_mutated_files_stream_or_exit_with_a_documented_code():
    """FITS, gzip FITS, Parquet and CSV with flipped, cut or inserted bytes."""
    rng = np.random.default_rng(2027)
    seeds = seed_files()
    outcomes = collections.Counter()
    for suffix in STREAM_SUFFIXES:
        assert streaming_target(seeds[suffix], suffix) == "annotated", suffix
        for _ in range(6):
            outcomes[streaming_target(mutated_file(seeds, suffix, rng), suffix)] += 1
    assert outcomes["unreadable"] + outcomes["refused"] > 0, outcomes


def test_edited_model_cards_are_refused_or_still_give_finite_predictions():
    rng = np.random.default_rng(2028)
    card_text, payload = seed_card()
    assert card_target(card_text, payload, load_arrays=True) == "loaded"
    outcomes = collections.Counter(card_target(mutate_card(card_text, rng), payload)
                                   for _ in range(150))
    assert outcomes["refused"] > 100, outcomes
    # The few edits the schema lets through (a plausible re-stamped value) must still
    # load and predict finite numbers.
    rng = np.random.default_rng(7)
    loaded = collections.Counter(card_target(mutate_card(card_text, rng), payload, True)
                                 for _ in range(6))
    assert set(loaded) <= {"refused", "loaded"}
