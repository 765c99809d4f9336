"""Sharper RGB ages? Out-of-fold comparison of models on the RGB stars.

Each variant is trained with the package's pipeline (`train_model`: cleaning,
forest, calibration, hull) on the other KIC-hash folds and predicts the held-out
fold; RGB stars inside the fold model's hull are scored against the seismic ages
(preliminary APOKASC-3). Variants:

``giants``
    The giants spec (RGB and clump stars, six labels) with the version 2 learner and
    training labels (the forest alone, every preliminary label mapped: what the
    experiment measured), scored on RGB stars.
``rgb-only``
    The same labels, trained and calibrated on RGB stars only (what a user with a
    state column could use).
``giants, [C/H] basis`` / ``rgb-only, [C/H] basis``
    The labels of the gradient-boosted APOKASC-2 RGB models: [C/Fe], [N/Fe], [C/H],
    [α/M], Teff, log g. They span the same space as the packaged six ([C/H] =
    [C/Fe] + [Fe/H]; adding [C/H] and [N/H] to the six makes the training set flat,
    which no hull can hold), so only the axes the trees split along change.

Fold-to-fold noise: the standard deviation of the per-fold median relative error
over sqrt(n_folds). Each variant is also scored on the RGB stars every variant
predicts (inside every fold model's hull), so that a smaller domain does not pass
for a sharper model. Written to ``stellar_ml_ages/data/rgb_age_experiment.json``.

Usage::

    python tools/rgb_age_experiment.py --data-dir ../shared/data

About 8 minutes on 2 cores.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from _provenance import git_commit  # tools/ is the script's directory
from models_report import V2_LABELS, V2_LEARNER

from stellar_ml_ages.training import get_spec
from stellar_ml_ages.training.catalogs import find_data_dir, load_full_range_training_table
from stellar_ml_ages.training.evaluation import kic_folds
from stellar_ml_ages.training.pipeline import _select, train_model, training_states


def variants():
    # The experiment ran on the version 2 learner and labels (docs/population.rst):
    # the forest alone on the six labels, every preliminary value mapped.
    giants = dataclasses.replace(get_spec("giants"), **V2_LEARNER)
    extra = ("c_fe", "n_fe", "c_h", "alpha_m", "teff", "logg")
    return {
        "giants": giants,
        "rgb-only": dataclasses.replace(giants, name="rgb-only", aliases=(),
                                        evolutionary_states=("RGB",),
                                        calibration_groups=("RGB",)),
        "giants, [C/H] basis": dataclasses.replace(giants, name="giants-ch", aliases=(),
                                                  features=extra),
        "rgb-only, [C/H] basis": dataclasses.replace(giants, name="rgb-only-ch", aliases=(),
                                                     features=extra,
                                                     evolutionary_states=("RGB",),
                                                     calibration_groups=("RGB",)),
    }


def evaluate(spec, table, n_folds, say=print):
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    kic = np.asarray(selected["KIC"])
    states = training_states(selected)
    features = features[keep]
    fold = kic_folds(kic, n_folds)
    scores = {"age": [], "mass": []}
    per_fold = {"age": [], "mass": []}
    stars = {"age": [], "mass": []}
    for k in range(n_folds):
        start = time.time()
        model = train_model(spec, selected, test_mask=fold == k).model
        rows = np.flatnonzero((fold == k) & (states == "RGB"))
        inside = model.in_hull(features[rows])
        rows = rows[inside]
        predictions = model.predict(features[rows], quantiles=(0.16, 0.84), states=states[rows])
        for target in ("age", "mass"):
            truth = targets[target][keep][rows]
            ok = np.isfinite(truth)
            value = predictions[target]["value"][ok]
            low, high = predictions[target][0.16][ok], predictions[target][0.84][ok]
            relative = np.abs(value - truth[ok]) / truth[ok]
            covered = (truth[ok] >= low) & (truth[ok] <= high)
            scores[target].append(np.column_stack([relative, covered]))
            stars[target].append(kic[rows][ok])
            per_fold[target].append(float(np.median(relative)))
        say(f"  {spec.name} fold {k + 1}/{n_folds}: {time.time() - start:.0f} s")
    out = {}
    for target in ("age", "mass"):
        joined = np.concatenate(scores[target])
        out[target] = {"n_rgb": len(joined),
                       "median_rel_error": float(np.median(joined[:, 0])),
                       "fold_noise": float(np.std(per_fold[target]) / np.sqrt(n_folds)),
                       "coverage_68": float(np.mean(joined[:, 1]))}
    per_star = {target: dict(zip(np.concatenate(stars[target]).tolist(),
                                 np.concatenate(scores[target])[:, 0], strict=True))
                for target in scores}
    return out, per_star


def with_abundances_on_h(table):
    """[C/H] from [C/Fe] + [Fe/H], the table's own columns (a copy)."""
    table = table.copy(copy_data=False)
    for element in ("C",):
        if f"{element}_H" not in table.colnames:
            table[f"{element}_H"] = table[f"{element}_FE"] + table["FE_H"]
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                             / "stellar_ml_ages" / "data"
                                             / "rgb_age_experiment.json"))
    args = parser.parse_args(argv)
    data_dir = find_data_dir(args.data_dir)
    results, per_star = {}, {}
    for label, spec in variants().items():
        table = with_abundances_on_h(load_full_range_training_table(data_dir, **V2_LABELS))
        results[label], per_star[label] = evaluate(spec, table, args.folds)
        age, mass = results[label]["age"], results[label]["mass"]
        print(f"{label}: RGB age {100 * age['median_rel_error']:.2f}% "
              f"(+- {100 * age['fold_noise']:.2f}), mass {100 * mass['median_rel_error']:.2f}%, "
              f"68% coverage {100 * age['coverage_68']:.1f} / {100 * mass['coverage_68']:.1f}, "
              f"n = {age['n_rgb']}")
    for target in ("age", "mass"):
        common = set.intersection(*(set(stars[target]) for stars in per_star.values()))
        for label in per_star:
            errors = np.array([per_star[label][target][kic] for kic in sorted(common)])
            results[label][target]["n_common"] = len(common)
            results[label][target]["median_rel_error_common"] = float(np.median(errors))
            print(f"  common {target} stars ({len(common)}): {label} "
                  f"{100 * np.median(errors):.2f}%")
    commit = git_commit()
    results["generated"] = {"date": time.strftime("%Y-%m-%d"), "n_folds": args.folds,
                            "commit": commit,
                            "command": "python tools/rgb_age_experiment.py --data-dir DATA"}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
