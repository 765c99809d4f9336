"""``stellar-ml-ages reproduce``: the paper's analysis on the real catalogs, as a report.

Writes into the output directory:

``report.json``
    Every number below, machine-readable.
``report.md``
    The metrics next to the paper's, the six-method table, the coverage table and
    the external comparisons, with links to the figures.
``figures/*.png``
    Feature importance, error vs number of features, predicted vs true with
    residuals, test relative error vs Teff / log g / [Fe/H], Kiel diagrams coloured
    by the prediction, and PIT histograms.
"""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import numpy as np

from .catalogs import find_data_dir, load_apogee_training_table
from .evaluation import coverage, cross_validated_predictions
from .methods import METHODS, make_method
from .pipeline import _select, kic_test_mask, train_model
from .ranking import error_curve, importance_ranking
from .specs import get_spec

__all__ = ["PAPER_METHODS_RC_AGE", "PAPER_METRICS", "reproduce"]

#: Li, Wang et al.: test metrics after their cleaning pass (dispersion and absolute
#: errors in Msun or Gyr, relative errors as fractions).
PAPER_METRICS = {
    ("giants", "mass"): {"dispersion": 0.13, "mean_abs_error": 0.08, "median_abs_error": 0.05,
                         "mean_rel_error": 0.06, "median_rel_error": 0.03},
    ("red-clump", "mass"): {"dispersion": 0.14, "mean_abs_error": 0.09,
                            "median_abs_error": 0.05, "mean_rel_error": 0.06,
                            "median_rel_error": 0.04},
    ("red-clump", "age"): {"dispersion": 0.68, "mean_abs_error": 0.42, "median_abs_error": 0.21,
                           "mean_rel_error": 0.11, "median_rel_error": 0.07},
}
#: The paper's method comparison for red-clump age (median relative error; RF best).
PAPER_METHODS_RC_AGE = {"BYS": 0.28, "MLR": 0.28, "MLP": 0.13, "SVR": 0.14, "GBDT": 0.10}

_METRIC_KEYS = ("dispersion", "mean_abs_error", "median_abs_error", "mean_rel_error",
                "median_rel_error")
_UNITS = {"mass": "Msun", "age": "Gyr"}


def _settings(quick):
    if quick:
        return {"quick": True, "n_estimators": 40, "cleaning_estimators": 40, "n_folds": 2,
                "methods_quick": True}
    return {"quick": False, "n_estimators": None, "cleaning_estimators": None, "n_folds": 4,
            "methods_quick": False}


def _spec(name, settings):
    spec = get_spec(name)
    changes = {k: settings[k] for k in ("n_estimators", "cleaning_estimators") if settings[k]}
    return dataclasses.replace(spec, **changes)


def _split_arrays(spec, table, result):
    """Standardised features and targets of the honest split, as the final forest saw them."""
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    features = features[keep]
    is_test = kic_test_mask(selected["KIC"], spec.test_fraction)
    train_kic = set(np.asarray(result.train_kic).tolist())
    train = np.array([int(k) in train_kic for k in selected["KIC"]])
    model = result.model
    return {
        "train_x": model.standardize(features[train]),
        "test_x": model.standardize(features[is_test]),
        "test_features": features[is_test],
        "train_y": {t: v[keep][train] for t, v in targets.items()},
        "test_y": {t: v[keep][is_test] for t, v in targets.items()},
    }


def _method_comparison(spec, arrays, order, settings, say):
    from sklearn.exceptions import ConvergenceWarning

    table = {}
    for target in spec.targets:
        rows = {}
        for method in METHODS:
            factory = make_method(method, seed=spec.seed, quick=settings["methods_quick"],
                                  n_trees=spec.n_estimators)
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                curve = error_curve(factory, arrays["train_x"], arrays["train_y"][target],
                                    arrays["test_x"], arrays["test_y"][target], order[target])
            best = min(curve, key=lambda point: point["test"])
            rows[method] = {"curve": curve, "all_features": curve[-1]["test"],
                            "best": best["test"], "best_n_features": best["n_features"],
                            "seconds": time.perf_counter() - started}
            say(f"{spec.name} {target} {method}: all features {100 * curve[-1]['test']:.1f}%, "
                f"best {100 * best['test']:.1f}% with {best['n_features']}")
        table[target] = rows
    return table


def _configurations(spec, table, packaged, quick, say):
    """The packaged forest configuration against the paper's, on the same honest split."""
    import tempfile

    paper_trees = 100 if quick else 2000
    paper = train_model(dataclasses.replace(spec, n_estimators=paper_trees, min_samples_leaf=1),
                        table)
    rows = {}
    for label, result in (("packaged", packaged), ("paper", paper)):
        with tempfile.TemporaryDirectory() as directory:
            result.model.save(directory)
            size = result.model.card["arrays"]["bytes"]
        hyper = result.model.card["hyperparameters"]
        rows[label] = {
            "n_estimators": hyper["n_estimators"], "min_samples_leaf": hyper["min_samples_leaf"],
            "artifact_bytes": size,
            "metrics": {t["name"]: t["metrics"] for t in result.model.card["targets"]},
        }
        say(f"{spec.name} {label} configuration: {hyper['n_estimators']} trees, leaf "
            f"{hyper['min_samples_leaf']}, {size / 1e6:.1f} MB")
    return rows


def _external_checks(data_dir, cv_by_model):
    """Median relative differences against catalogs not used for training."""
    from astropy.table import Table

    checks = []
    data_dir = Path(data_dir)

    def compare(label, model, target, kic, values, note):
        predictions = cv_by_model.get(model)
        if predictions is None:
            return
        inside = predictions[predictions["in_hull"]]
        lookup = dict(zip(np.asarray(kic).tolist(), np.asarray(values, dtype=float).tolist(),
                          strict=True))
        ours, theirs, truth = [], [], []
        for row_kic, predicted, true in zip(inside["KIC"], inside[target],
                                            inside[f"{target}_true"], strict=True):
            value = lookup.get(int(row_kic))
            if value is not None and np.isfinite(value) and value > 0:
                ours.append(predicted)
                theirs.append(value)
                truth.append(true)
        ours, theirs, truth = np.asarray(ours), np.asarray(theirs), np.asarray(truth)
        entry = {"catalog": label, "model": model, "target": target, "n": len(ours),
                 "note": note}
        if len(ours):
            relative = (ours - theirs) / theirs
            entry.update({"median_rel_difference": float(np.median(relative)),
                          "median_abs_rel_difference": float(np.median(np.abs(relative))),
                          # The same for the training truth: an offset shared by both is
                          # between the catalogs' scales, not an error of the model.
                          "apokasc2_median_rel_difference":
                              float(np.median((truth - theirs) / theirs))})
        checks.append(entry)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VizieR unit strings; values are unaffected
        matched = data_dir / "matched" / "apokasc2_x_apokasc3_x_miglio2021.fits"
        if matched.is_file():
            miglio = Table.read(matched)
            rc = np.ma.filled(np.ma.asarray(miglio["M21_evstate"], dtype=float), 0) == 2
            compare("Miglio+2021 ages (RC)", "red-clump", "age", miglio["KIC"][rc],
                    np.ma.filled(np.ma.asarray(miglio["M21_Age"][rc], dtype=float), np.nan),
                    "Bayesian model ages from Kepler+APOGEE; different age scale")
            compare("Miglio+2021 masses (RC)", "red-clump", "mass", miglio["KIC"][rc],
                    np.ma.filled(np.ma.asarray(miglio["M21_Mass"][rc], dtype=float), np.nan),
                    "")
            compare("Miglio+2021 masses (all)", "giants", "mass", miglio["KIC"],
                    np.ma.filled(np.ma.asarray(miglio["M21_Mass"], dtype=float), np.nan), "")
        montalban = data_dir / "miglio2021" / "Montalban2021.csv"
        if montalban.is_file():
            stars = Table.read(montalban)
            compare("Montalban+2021 individual-mode masses", "giants", "mass", stars["KIC"],
                    stars["mass"], "95 low-luminosity RGB stars, individual modes")
        yu = data_dir / "yu2018_rc_hall2019" / "rcxyuxapokasc2.csv"
        if yu.is_file():
            clump = Table.read(yu)
            compare("Yu+2018/Hall+2019 clump masses", "red-clump", "mass", clump["KICID"],
                    clump["M_Clump"], "scaling masses with Hall+2019 clump corrections")
    return checks


def _figures(out, key, spec, result, arrays, ranking, rf_curves, methods, cv):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    labels = {name: result.model.card["features"][i]["label"]
              for i, name in enumerate(spec.features)}
    test_x = arrays["test_features"]
    in_hull = result.model.in_hull(test_x)
    predictions = result.model.predict(test_x[in_hull], quantiles=(0.16, 0.84))

    for target in spec.targets:
        unit = _UNITS[target]
        # Feature importance.
        fig, ax = plt.subplots(figsize=(5, 3.2))
        names, values = zip(*ranking[target], strict=True)
        ax.barh([labels[n] for n in names][::-1], list(values)[::-1], color="tab:blue")
        ax.set_xlabel("impurity importance")
        ax.set_title(f"{spec.name}: {target}")
        paths[f"importance_{target}"] = _save(fig, out / f"{key}_{target}_importance.png")

        # Error vs number of features.
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ks = [p["n_features"] for p in rf_curves[target]]
        ax.plot(ks, [100 * p["train"] for p in rf_curves[target]], "k--", label="RF train")
        ax.plot(ks, [100 * p["test"] for p in rf_curves[target]], "k-", lw=2, label="RF test")
        for method, row in methods[target].items():
            if method != "RF":
                ax.plot(ks, [100 * p["test"] for p in row["curve"]], marker=".", label=method)
        ax.set_xlabel("number of ranked features")
        ax.set_ylabel("median relative error [%]")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"{spec.name}: {target}")
        paths[f"error_curve_{target}"] = _save(fig, out / f"{key}_{target}_error_curve.png")

        # Predicted vs true with residuals.
        truth = arrays["test_y"][target][in_hull]
        value = predictions[target]["value"]
        low, high = predictions[target][0.16], predictions[target][0.84]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
        top.errorbar(truth, value, yerr=[value - low, high - value], fmt=".", ms=3,
                     alpha=0.5, elinewidth=0.5)
        lims = [min(truth.min(), value.min()), max(truth.max(), value.max())]
        top.plot(lims, lims, "k-", lw=1)
        top.set_ylabel(f"predicted {target} [{unit}]")
        top.set_title(f"{spec.name}: held-out stars")
        bottom.plot(truth, (value - truth) / truth * 100, ".", ms=3, alpha=0.5)
        bottom.axhline(0, color="k", lw=1)
        bottom.set_xlabel(f"APOKASC-2 {target} [{unit}]")
        bottom.set_ylabel("residual [%]")
        paths[f"predicted_vs_true_{target}"] = _save(fig, out / f"{key}_{target}_pred_true.png")

        # Relative error vs stellar parameters.
        relative = np.abs(value - truth) / truth * 100
        fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
        for ax, name in zip(axes, ("teff", "logg", "fe_h"), strict=True):
            column = spec.features.index(name)
            ax.plot(test_x[in_hull][:, column], relative, ".", ms=3, alpha=0.5)
            ax.set_xlabel(labels[name])
        axes[0].set_ylabel(f"|relative error| of {target} [%]")
        paths[f"error_vs_labels_{target}"] = _save(fig, out / f"{key}_{target}_error_labels.png")

        # Kiel diagram coloured by the prediction.
        fig, ax = plt.subplots(figsize=(4.8, 4))
        teff = test_x[in_hull][:, spec.features.index("teff")]
        logg = test_x[in_hull][:, spec.features.index("logg")]
        points = ax.scatter(teff, logg, c=value, s=6, cmap="viridis")
        ax.invert_xaxis()
        ax.invert_yaxis()
        ax.set_xlabel("Teff [K]")
        ax.set_ylabel("log g [dex]")
        fig.colorbar(points, label=f"predicted {target} [{unit}]")
        paths[f"kiel_{target}"] = _save(fig, out / f"{key}_{target}_kiel.png")

        # PIT histogram of out-of-fold predictions.
        fig, ax = plt.subplots(figsize=(4.5, 3))
        pit = np.asarray(cv[cv["in_hull"]][f"{target}_pit"])
        ax.hist(pit, bins=20, range=(0, 1), color="tab:green", alpha=0.8)
        ax.axhline(len(pit) / 20, color="k", ls="--", lw=1)
        ax.set_xlabel("predictive CDF at the true value (PIT)")
        ax.set_ylabel("stars")
        ax.set_title(f"{spec.name}: {target}, {cv.meta['n_folds']}-fold out of fold")
        paths[f"pit_{target}"] = _save(fig, out / f"{key}_{target}_pit.png")
    return paths


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _percent(value):
    return f"{100 * value:.1f}%"


def _markdown(results):
    lines = ["# Reproduction of Li, Wang et al. with APOGEE DR17 labels", "",
             f"Settings: {json.dumps(results['settings'])}; data: `{results['data_dir']}`; "
             f"run time {results['seconds']:.0f} s.", "",
             "## Test metrics next to the paper's", "",
             "Honest: the cleaning pass never sees the test stars (25% of stars by KIC hash). "
             "Paper protocol: a 50/50 split whose cleaning pass also removes badly predicted "
             "test stars, as in the paper. CV: pooled out-of-fold predictions of every star. "
             "All inside the convex hull.", "",
             "| model | target | protocol | n | dispersion | mean abs | median abs | mean rel "
             "| median rel |", "|---|---|---|---|---|---|---|---|---|"]
    for key, model in results["models"].items():
        for target in model["targets"]:
            rows = [("honest", model["honest"][target]), ("paper protocol",
                                                           model["paper_protocol"][target])]
            cv = model["cv_coverage"][target]
            rows.append(("CV honest", {"n": cv["n"], **{k: cv[f"cv_{k}"] for k in _METRIC_KEYS}}))
            if (key, target) in PAPER_METRICS:
                rows.append(("Li, Wang et al.", {"n": "", **PAPER_METRICS[(key, target)]}))
            for protocol, m in rows:
                lines.append(
                    f"| {key} | {target} | {protocol} | {m['n']} | {m['dispersion']:.3f} "
                    f"| {m['mean_abs_error']:.3f} | {m['median_abs_error']:.3f} "
                    f"| {_percent(m['mean_rel_error'])} | {_percent(m['median_rel_error'])} |")
    lines += ["", "## Six methods (median relative error on the honest test split)", "",
              "| model | target | " + " | ".join(METHODS) + " |",
              "|---|---|" + "---|" * len(METHODS)]
    for key, model in results["models"].items():
        for target, rows in model["methods"].items():
            cells = [f"{_percent(rows[m]['all_features'])} (best {_percent(rows[m]['best'])}, "
                     f"k={rows[m]['best_n_features']})" for m in METHODS]
            lines.append(f"| {key} | {target} | " + " | ".join(cells) + " |")
    lines += ["", "Paper, red-clump age: " + ", ".join(
        f"{m} {_percent(v)}" for m, v in PAPER_METHODS_RC_AGE.items()) + ", RF best.", "",
        "## Calibration of the uncertainties (out of fold, inside the hull)", "",
        "Target: 68% ± 3% inside [p16, p84] and 95% ± 2% inside [p2.5, p97.5].", "",
        "| model | target | n | [p16, p84] | [p2.5, p97.5] |", "|---|---|---|---|---|"]
    for key, model in results["models"].items():
        for target, c in model["cv_coverage"].items():
            lines.append(f"| {key} | {target} | {c['n']} | {_percent(c['p16_p84'])} "
                         f"| {_percent(c['p2.5_p97.5'])} |")
    lines += ["", "## External checks (out-of-fold predictions, inside the hull)", "",
              "| catalog | model | target | n | median (ours - theirs)/theirs | median abs "
              "| APOKASC-2 truth: median (true - theirs)/theirs |",
              "|---|---|---|---|---|---|---|"]
    for check in results["external"]:
        if check["n"]:
            lines.append(f"| {check['catalog']} | {check['model']} | {check['target']} "
                         f"| {check['n']} | {_percent(check['median_rel_difference'])} "
                         f"| {_percent(check['median_abs_rel_difference'])} "
                         f"| {_percent(check['apokasc2_median_rel_difference'])} |")
        else:
            lines.append(f"| {check['catalog']} | {check['model']} | {check['target']} | 0 "
                         "| - | - | - |")
    lines += ["", "## Packaged forests against the paper's configuration (honest split)", "",
              "| model | configuration | trees | min leaf | artifact | median rel. error "
              "| dispersion |", "|---|---|---|---|---|---|---|"]
    for key, model in results["models"].items():
        for label, row in model["configurations"].items():
            errors = ", ".join(f"{t} {_percent(m['median_rel_error'])}"
                               for t, m in row["metrics"].items())
            spread = ", ".join(f"{t} {m['dispersion']:.3f}" for t, m in row["metrics"].items())
            lines.append(f"| {key} | {label} | {row['n_estimators']} | {row['min_samples_leaf']} "
                         f"| {row['artifact_bytes'] / 1e6:.1f} MB | {errors} | {spread} |")
    lines += ["", "## Feature ranking", ""]
    for key, model in results["models"].items():
        for target, ranking in model["ranking"].items():
            lines.append(f"- {key} {target}: " + ", ".join(f"{n} {v:.2f}" for n, v in ranking))
    lines += ["", "## Figures", ""]
    for key, model in results["models"].items():
        for name, path in model["figures"].items():
            lines.append(f"- {key} {name}: ![{name}](figures/{path})")
    return "\n".join(lines) + "\n"


def reproduce(data_dir=None, out_dir="report", quick=False, progress=print):
    """Run the paper's analysis on the catalogs and write the report.

    Parameters
    ----------
    data_dir : path-like, optional
        Training catalogs (see `~stellar_ml_ages.training.find_data_dir`).
    out_dir : path-like
        Where ``report.json``, ``report.md`` and ``figures/`` are written.
    quick : bool
        Small forests, two folds and shrunken method ensembles: a smoke run of every
        step in a few minutes, not numbers to quote.
    progress : callable
        Called with one-line progress messages.

    Returns
    -------
    dict
        The content of ``report.json``.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    settings = _settings(quick)
    data_dir = find_data_dir(data_dir)
    table = load_apogee_training_table(data_dir)
    out = Path(out_dir)
    figures = out / "figures"
    results = {"settings": settings, "data_dir": str(data_dir), "models": {}}
    cv_by_model = {}
    for key in ("giants", "red-clump"):
        spec = _spec(key, settings)
        honest = train_model(spec, table, progress=say)
        paper = train_model(dataclasses.replace(spec, test_fraction=0.5), table,
                            protocol="paper", progress=say)
        cv = cross_validated_predictions(spec, table, settings["n_folds"], progress=say)
        cv_by_model[key] = cv
        arrays = _split_arrays(spec, table, honest)
        ranking, order, rf_curves = {}, {}, {}
        for target in spec.targets:
            ranking[target] = importance_ranking(spec, arrays["train_x"],
                                                 arrays["train_y"][target])
            order[target] = [spec.features.index(name) for name, _ in ranking[target]]
            rf_curves[target] = error_curve(
                make_method("RF", seed=spec.seed, quick=quick, n_trees=spec.n_estimators),
                arrays["train_x"], arrays["train_y"][target], arrays["test_x"],
                arrays["test_y"][target], order[target], log_target=True)
        methods = _method_comparison(spec, arrays, order, settings, say)
        configurations = _configurations(spec, table, honest, quick, say)
        figure_paths = _figures(figures, key, spec, honest, arrays, ranking, rf_curves,
                                methods, cv)
        honest_cards = {t["name"]: t for t in honest.model.card["targets"]}
        paper_cards = {t["name"]: t for t in paper.model.card["targets"]}
        results["models"][key] = {
            "targets": list(spec.targets),
            "honest": {t: {**c["metrics"], "coverage": c["coverage"]}
                       for t, c in honest_cards.items()},
            "paper_protocol": {t: c["metrics"] for t, c in paper_cards.items()},
            "paper_values": {t: PAPER_METRICS.get((key, t)) for t in spec.targets},
            "cv_coverage": {t: coverage(cv, t) for t in spec.targets},
            "ranking": ranking,
            "rf_curves": rf_curves,
            "methods": methods,
            "figures": figure_paths,
            "n_removed_by_cleaning": honest.n_removed,
            "configurations": configurations,
        }
    results["external"] = _external_checks(data_dir, cv_by_model)
    results["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    (out / "report.md").write_text(_markdown(results))
    say(f"wrote {out / 'report.md'} and {out / 'report.json'} in {results['seconds']:.0f} s")
    return results


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


