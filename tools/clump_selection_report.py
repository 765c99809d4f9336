"""Spectroscopic clump selection: the packaged state classifier and what it does downstream.

Trains the RGB/clump classifier (`stellar_ml_ages.stateclass`) on the full-range
training table and writes its card, then measures, out of fold (10 KIC-hash folds,
every model trained without the fold it predicts):

* the classifier's completeness and contamination (in its card too);
* on the clump it selects (P_RC > 0.5): ``red-clump`` (trained on seismic clump
  stars) against ``giants``, median relative error and [p16, p84] coverage of mass
  and age, for the whole selection and for its true clump stars and RGB
  contaminants apart, and how many contaminants ``red-clump``'s hull keeps;
* ``giants`` intervals per true state when the state column is the seismic one, the
  spectroscopic one, or absent.

Usage::

    python tools/clump_selection_report.py --data-dir ../shared/data

About 7 minutes on 2 cores. Writes ``stellar_ml_ages/data/classifiers/state-apogee-dr17.json``
and ``stellar_ml_ages/data/clump_selection.json`` (with the commit and date).
"""

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _provenance import git_commit  # tools/ is the script's directory

from stellar_ml_ages.training import get_spec
from stellar_ml_ages.training.catalogs import load_full_range_training_table
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import _canonical_matrix, _select, train_model
from stellar_ml_ages.training.stateclass import (
    out_of_fold_state_probability,
    train_state_classifier,
)

ROOT = Path(__file__).resolve().parents[1]


def _scores(value, low, high, truth, rows):
    use = rows & np.isfinite(value) & np.isfinite(truth)
    if not use.any():
        return {"n": 0}
    return {"n": int(use.sum()),
            "median_rel_error": float(np.median(np.abs(value[use] / truth[use] - 1))),
            "median_ln_bias": float(np.median(np.log(value[use] / truth[use]))),
            "coverage_p16_p84": float(np.mean((truth[use] >= low[use])
                                              & (truth[use] <= high[use])))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "stellar_ml_ages" / "data"
                                             / "clump_selection.json"))
    parser.add_argument("--card-dir", default=str(ROOT / "stellar_ml_ages" / "data"
                                                  / "classifiers"))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # catalog unit strings
    table = load_full_range_training_table(args.data_dir)
    classifier = train_state_classifier(table, n_folds=args.folds)
    card_path = classifier.save(args.card_dir)
    print(f"wrote {card_path}: {classifier.card['metrics']}")

    giants, clump = get_spec("giants"), get_spec("red-clump")
    keep, features, targets = _select(table, giants)
    selected = table[keep]
    probability, usable, states = out_of_fold_state_probability(selected, args.folds)
    spectroscopic = np.where(~usable, "", np.where(probability > 0.5, "RC", "RGB"))
    features = features[keep]
    rc_features = _canonical_matrix(selected, clump.features)
    truth = {name: targets[name][keep] for name in giants.targets}
    kic = np.asarray(selected["KIC"])
    fold = kic_folds(kic, args.folds)
    out = {name: {key: np.full(len(selected), np.nan) for key in
                  ("giants", "giants_p16", "giants_p84", "giants_nostate_p16",
                   "giants_nostate_p84", "giants_seis_p16", "giants_seis_p84", "clump",
                   "clump_p16", "clump_p84")} for name in giants.targets}
    clump_in_hull = np.zeros(len(selected), dtype=bool)
    for k in range(args.folds):
        started = time.perf_counter()
        rows = np.flatnonzero(fold == k)
        giants_model = train_model(giants, selected, test_mask=fold == k).model
        clump_keep = _select(selected, clump)[0]
        clump_model = train_model(clump, selected[clump_keep],
                                  test_mask=(fold == k)[clump_keep]).model
        inside = giants_model.in_hull(features[rows])
        for tag, given in (("", spectroscopic[rows]), ("_nostate", None),
                           ("_seis", states[rows])):
            result = giants_model.predict(features[rows], states=given)
            for name in giants.targets:
                values = np.where(inside, result[name]["value"], np.nan)
                if not tag:
                    out[name]["giants"][rows] = values
                out[name][f"giants{tag}_p16"][rows] = result[name][0.16]
                out[name][f"giants{tag}_p84"][rows] = result[name][0.84]
        clump_inside = clump_model.in_hull(rc_features[rows])
        clump_in_hull[rows] = clump_inside
        result = clump_model.predict(rc_features[rows], states=np.full(len(rows), "RC"))
        for name in giants.targets:
            out[name]["clump"][rows] = np.where(clump_inside, result[name]["value"], np.nan)
            out[name]["clump_p16"][rows] = result[name][0.16]
            out[name]["clump_p84"][rows] = result[name][0.84]
        print(f"fold {k + 1}/{args.folds}: {time.perf_counter() - started:.0f} s", flush=True)

    called_rc = spectroscopic == "RC"
    is_rc = states == "RC"
    report = {"commit": git_commit(), "date": datetime.date.today().isoformat(),
              "command": "python tools/clump_selection_report.py --data-dir DATA",
              "n_folds": args.folds, "classifier": classifier.card["metrics"],
              "selected_clump": {"n": int(called_rc.sum()),
                                 "n_rgb_contaminants": int((called_rc & ~is_rc).sum()),
                                 "rgb_contaminants_in_red_clump_hull": float(np.mean(
                                     clump_in_hull[called_rc & ~is_rc]))},
              "models_on_selected_clump": {}, "giants_intervals_by_state_column": {}}
    groups = {"selected clump": called_rc, "selected, seismic RC": called_rc & is_rc,
              "selected, seismic RGB": called_rc & ~is_rc}
    for name in giants.targets:
        entry = {}
        # Both models on the same stars: those both predict.
        both = np.isfinite(out[name]["clump"]) & np.isfinite(out[name]["giants"])
        for group, rows in groups.items():
            rows = rows & both
            entry[group] = {
                "red-clump": _scores(out[name]["clump"], out[name]["clump_p16"],
                                     out[name]["clump_p84"], truth[name], rows),
                "giants": _scores(out[name]["giants"], out[name]["giants_p16"],
                                  out[name]["giants_p84"], truth[name], rows)}
        report["models_on_selected_clump"][name] = entry
        by_state = {}
        for tag, label in (("_seis", "seismic"), ("", "spectroscopic"), ("_nostate", "none")):
            by_state[label] = {
                state: _scores(out[name]["giants"], out[name][f"giants{tag}_p16"],
                               out[name][f"giants{tag}_p84"], truth[name], states == state)
                ["coverage_p16_p84"] for state in ("RGB", "RC")}
        report["giants_intervals_by_state_column"][name] = by_state
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
