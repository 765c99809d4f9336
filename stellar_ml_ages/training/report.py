"""``stellar-ml-ages reproduce``: the paper's analysis on the real catalogs, as a report.

For each packaged model (``giants``, ``red-clump``, ``red-clump-seismic``), on the
full-range training table with labels on the DR17 scale:

* the label-scale corrections (offsets, trends, scatter before and after);
* feature selection: permutation importance under cross-validation and the
  error-vs-number-of-features curve, with the features it chooses;
* out-of-fold metrics and interval coverage overall, by evolutionary state, by
  tercile of the predicted value and by bin of the true value; regression dilution
  (predicted-vs-true slopes, bias against the true value);
* the honest single split next to the paper's protocol, and the paper's numbers;
* the paper's six-method comparison and external checks.

Writes into the output directory:

``report.json``
    Every number below, machine-readable.
``report.md``
    The tables, with links to the figures.
``figures/*.png``
    Permutation importance, error vs number of features, out-of-fold predicted vs
    true with residuals, Kiel diagrams coloured by the prediction, PIT histograms.
"""

import dataclasses
import json
import time
import warnings
from pathlib import Path

import numpy as np

from .catalogs import find_data_dir, load_full_range_training_table
from .evaluation import coverage, cross_validated_predictions, dilution, group_coverage
from .methods import METHODS, make_method
from .pipeline import _select, _software, add_input_noise, kic_test_mask, train_model
from .ranking import error_curve, feature_count_curve, permutation_ranking
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


#: The packaged models the report covers, by short name.
REPORT_MODELS = ("giants", "red-clump", "red-clump-seismic")


def _settings(quick):
    if quick:
        return {"quick": True, "n_estimators": 40, "cleaning_estimators": 40, "n_folds": 2,
                "methods_quick": True, "selection_trees": 30, "selection_folds": 2}
    return {"quick": False, "n_estimators": None, "cleaning_estimators": None, "n_folds": 10,
            "methods_quick": False, "selection_trees": 150, "selection_folds": 4}


def _spec(name, settings):
    spec = get_spec(name)
    changes = {k: settings[k] for k in ("n_estimators", "cleaning_estimators") if settings[k]}
    return dataclasses.replace(spec, **changes)


def _split_arrays(spec, table, result):
    """Standardised features and targets of the honest split, as the final forest saw them."""
    keep, features, targets = _select(table, spec)
    selected = table[keep]
    features = add_input_noise(spec, features[keep], np.asarray(selected["KIC"]))
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
            if value is not None and np.isfinite(value) and value > 0 and np.isfinite(true):
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
            compare("Miglio+2021 ages (all)", "giants", "age", miglio["KIC"],
                    np.ma.filled(np.ma.asarray(miglio["M21_Age"], dtype=float), np.nan),
                    "Bayesian model ages from Kepler+APOGEE; different age scale")
        montalban = data_dir / "miglio2021" / "Montalban2021.csv"
        if montalban.is_file():
            stars = Table.read(montalban)
            compare("Montalban+2021 individual-mode masses", "giants", "mass", stars["KIC"],
                    stars["mass"], "95 low-luminosity RGB stars, individual modes")
            compare("Montalban+2021 individual-mode ages", "giants", "age", stars["KIC"],
                    stars["age"], "mostly alpha-rich, metal-poor thick-disc giants")
        yu = data_dir / "yu2018_rc_hall2019" / "rcxyuxapokasc2.csv"
        if yu.is_file():
            clump = Table.read(yu)
            compare("Yu+2018/Hall+2019 clump masses", "red-clump", "mass", clump["KICID"],
                    clump["M_Clump"], "scaling masses with Hall+2019 clump corrections")
    return checks


def _figures(out, key, spec, selection, methods, cv):
    """Selection, out-of-fold predicted-vs-true, Kiel and PIT figures of one model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    inside = cv[cv["in_hull"]]
    for target in spec.targets:
        unit = _UNITS[target]
        rows = inside[np.isfinite(np.asarray(inside[f"{target}_true"], dtype=float))]
        # Permutation importance under cross-validation.
        fig, ax = plt.subplots(figsize=(5, 3.2))
        importance = selection["ranking"]["importance"][target]
        names = sorted(importance, key=importance.get)
        ax.barh(names, [importance[n] for n in names], color="tab:blue")
        ax.set_xlabel("rise of median |ln error| when shuffled")
        ax.set_title(f"{spec.name}: {target}")
        paths[f"importance_{target}"] = _save(fig, out / f"{key}_{target}_importance.png")

        # Error vs number of features: the cross-validated RF curve and the six methods.
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        curve = selection["curve"]["curve"]
        ks = [p["n_features"] for p in curve]
        ax.plot(ks, [100 * p[target] for p in curve], "k-", lw=2, marker="o",
                label="RF, cross-validated")
        for method, row in methods.get(target, {}).items():
            if method != "RF":
                mks = [p["n_features"] for p in row["curve"]]
                ax.plot(mks, [100 * p["test"] for p in row["curve"]], marker=".", label=method)
        ax.axvline(len(selection["curve"]["chosen"]), color="tab:red", ls=":", label="chosen")
        ax.set_xlabel("number of ranked features")
        ax.set_ylabel("median relative error [%]")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"{spec.name}: {target}")
        paths[f"error_curve_{target}"] = _save(fig, out / f"{key}_{target}_error_curve.png")

        value = np.asarray(rows[target], dtype=float)
        paths[f"predicted_vs_true_{target}"] = predicted_vs_true_figure(
            rows, target, spec.name, out / f"{key}_{target}_pred_true.png")

        # Kiel diagram coloured by the prediction.
        fig, ax = plt.subplots(figsize=(4.8, 4))
        points = ax.scatter(rows["teff"], rows["logg"], c=value, s=4, cmap="viridis")
        ax.invert_xaxis()
        ax.invert_yaxis()
        ax.set_xlabel("Teff [K]")
        ax.set_ylabel("log g [dex]")
        fig.colorbar(points, label=f"predicted {target} [{unit}]")
        paths[f"kiel_{target}"] = _save(fig, out / f"{key}_{target}_kiel.png")

        # PIT histogram of out-of-fold predictions.
        fig, ax = plt.subplots(figsize=(4.5, 3))
        pit = np.asarray(rows[f"{target}_pit"])
        ax.hist(pit, bins=20, range=(0, 1), color="tab:green", alpha=0.8)
        ax.axhline(len(pit) / 20, color="k", ls="--", lw=1)
        ax.set_xlabel("predictive CDF at the true value (PIT)")
        ax.set_ylabel("stars")
        ax.set_title(f"{spec.name}: {target}, {cv.meta['n_folds']}-fold out of fold")
        paths[f"pit_{target}"] = _save(fig, out / f"{key}_{target}_pit.png")
    return paths


def predicted_vs_true_figure(rows, target, title, path):
    """Out-of-fold predicted against true values, by state, with ln residuals.

    ``rows`` is an out-of-fold table (``<model>_out_of_fold.ecsv`` of the report).
    Returns the file name written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows[np.isfinite(np.asarray(rows[f"{target}_true"], dtype=float))]
    truth = np.asarray(rows[f"{target}_true"], dtype=float)
    value = np.asarray(rows[target], dtype=float)
    states = np.asarray(rows["EVSTATE"]).astype(str)
    unit = _UNITS[target]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.8, 5.8), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    for state, colour in (("RGB", "tab:red"), ("RC", "tab:blue")):
        pick = states == state
        if pick.any():
            top.plot(truth[pick], value[pick], ".", ms=2, alpha=0.4, color=colour, label=state)
            bottom.plot(truth[pick], np.log(value[pick] / truth[pick]), ".", ms=2, alpha=0.4,
                        color=colour)
    lims = [min(truth.min(), value.min()), max(truth.max(), value.max())]
    top.plot(lims, lims, "k-", lw=1)
    top.set_xscale("log")
    top.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ticks = [v for v in (0.3, 0.5, 1, 2, 3, 5, 10, 20) if lims[0] <= v <= lims[1]]
    for axis in (top.xaxis, top.yaxis, bottom.xaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
        axis.set_ticks(ticks)
    top.legend(fontsize=8)
    top.set_ylabel(f"predicted {target} [{unit}]")
    top.set_title(f"{title}: out of fold, inside the hull", fontsize=9)
    bottom.axhline(0, color="k", lw=1)
    bottom.set_ylim(-1, 1)
    bottom.set_xlabel(f"seismic {target} [{unit}]")
    bottom.set_ylabel("ln(pred / true)")
    return _save(fig, Path(path))


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _percent(value):
    return f"{100 * value:.1f}%"


def _markdown(results):
    software = results["software"]
    # An editable install's version is frozen at install time: name the commit too.
    commit = (f" (commit {software['stellar_ml_ages_commit']})"
              if "stellar_ml_ages_commit" in software else "")
    lines = ["# The packaged recipes on the full-range APOKASC-3 set, and the paper's protocol",
             "", f"stellar_ml_ages {software['stellar_ml_ages']}{commit}. "
             f"Settings: {json.dumps(results['settings'])}; data: `{results['data_dir']}`; "
             f"run time {results['seconds']:.0f} s.", "",
             "## Label scale: preliminary APOKASC-3 labels onto APOGEE DR17 allStar", "",
             "Correction = offset + kept trends (Teff per 1000 K, [Fe/H], the label itself, "
             "red clump), fitted on the overlap with 3-sigma clipping.", "",
             "| label | source -> reference | n | median offset | offset | trends "
             "| robust scatter before | after |", "|---|---|---|---|---|---|---|---|"]
    for name, c in results["label_scale"].items():
        trends = ", ".join(f"{k} {v['slope']:+.4g}" for k, v in c["trends"].items()) or "-"
        lines.append(f"| {name} | {c['source']} -> {c['reference']} | {c['n_overlap']} "
                     f"| {c['median_offset_before']:+.4f} | {c['offset']:+.4f} | {trends} "
                     f"| {c['robust_scatter_before']:.4f} | {c['robust_scatter_after']:.4f} |")
    lines += ["", "Training-label noise (median DR17-reported error, overlap stars): "
              + ", ".join(f"{k} {v:.3g}" for k, v in results["label_noise"].items()), ""]

    lines += ["## Feature selection (permutation importance under cross-validation)", ""]
    for key, model in results["models"].items():
        sel = model["selection"]
        lines.append(f"### {key}")
        lines.append("")
        lines.append("Order: " + ", ".join(sel["ranking"]["order"]) + "; skipped as linear "
                     "combinations: " + (", ".join(sel["curve"]["skipped"]) or "none")
                     + f"; chosen: {', '.join(sel['curve']['chosen'])}; packaged: "
                     f"{', '.join(model['features'])}.")
        lines.append("")
        targets = model["targets"]
        lines.append("| k | features | " + " | ".join(f"{t} CV median rel. error"
                                                      for t in targets) + " |")
        lines.append("|---|---|" + "---|" * len(targets))
        for point in sel["curve"]["curve"]:
            lines.append(f"| {point['n_features']} | {', '.join(point['features'])} | "
                         + " | ".join(_percent(point[t]) for t in targets) + " |")
        lines.append("")
        for target, importance in sel["ranking"]["importance"].items():
            lines.append(f"- importance, {target}: " + ", ".join(
                f"{n} {v:.4f}" for n, v in sorted(importance.items(), key=lambda kv: -kv[1])))
        lines.append("")

    lines += ["## Out-of-fold metrics and interval coverage", "",
              "Every star predicted once by a model that never saw it (KIC-hash folds); "
              "inside the hull. Target: 68% +- 3% inside [p16, p84], 95% inside "
              "[p2.5, p97.5]. 'pooled' = intervals computed without the star's state.", ""]
    for key, model in results["models"].items():
        for target in model["targets"]:
            d = model["dilution"][target]
            lines += [f"### {key}: {target}", "",
                      f"In hull: {_percent(model['cv_fraction_in_hull'])} of stars. "
                      f"Slope ln(predicted) on ln(true): {d['slope_predicted_on_true']:.3f}; "
                      f"ln(true) on ln(predicted): {d['slope_true_on_predicted']:.3f}.", "",
                      "| group | n | median rel. error | median bias | [p16, p84] "
                      "| [p16, p84] pooled | [p2.5, p97.5] |", "|---|---|---|---|---|---|---|"]
            for g in model["groups"][target]:
                if not g["n"]:
                    continue
                lines.append(f"| {g['group']} | {g['n']} | {_percent(g['median_rel_error'])} "
                             f"| {_percent(g['median_rel_bias'])} | {_percent(g['p16_p84'])} "
                             f"| {_percent(g['p16_p84_pooled'])} "
                             f"| {_percent(g['p2.5_p97.5'])} |")
            lines += ["", "Bias against the true value: " + "; ".join(
                f"{b['low']:.3g}-{b['high']:.3g}: {_percent(b['median_rel_bias'])}"
                for b in d["bias_by_true"]), ""]

    lines += ["## Honest split, the paper's protocol and the paper", "",
              "Honest: 25% of stars held out by KIC hash, the cleaning pass sees only the "
              "training stars. Paper protocol: 50/50, the cleaning pass also removes badly "
              "predicted test stars (flatters the metrics). CV: out of fold, as above.", "",
              "| model | target | protocol | n | dispersion | mean abs | median abs | mean rel "
              "| median rel |", "|---|---|---|---|---|---|---|---|---|"]
    for key, model in results["models"].items():
        for target in model["targets"]:
            rows = [("honest", model["honest"][target]),
                    ("paper protocol", model["paper_protocol"][target])]
            cv = model["cv_coverage"][target]
            rows.append(("CV", {"n": cv["n"], **{k: cv[f"cv_{k}"] for k in _METRIC_KEYS}}))
            paper_key = (key.replace("-seismic", ""), target)
            if paper_key in PAPER_METRICS:
                rows.append(("Li, Wang et al. (LAMOST)", {"n": "", **PAPER_METRICS[paper_key]}))
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
        "## External checks (out-of-fold predictions, inside the hull)", "",
        "| catalog | model | target | n | median (ours - theirs)/theirs | median abs "
        "| training truth: median (true - theirs)/theirs |",
        "|---|---|---|---|---|---|---|"]
    for check in results["external"]:
        if check["n"]:
            lines.append(f"| {check['catalog']} | {check['model']} | {check['target']} "
                         f"| {check['n']} | {_percent(check['median_rel_difference'])} "
                         f"| {_percent(check['median_abs_rel_difference'])} "
                         f"| {_percent(check['apokasc2_median_rel_difference'])} |")
    lines += ["", "## Figures", ""]
    for key, model in results["models"].items():
        for name, path in model["figures"].items():
            lines.append(f"- {key} {name}: ![{name}](figures/{path})")
    return "\n".join(lines) + "\n"


def _selection(spec, table, settings, say):
    candidates = spec.candidate_features or spec.features
    ranking = permutation_ranking(spec, table, candidates, n_folds=settings["selection_folds"],
                                  n_estimators=settings["selection_trees"], seed=spec.seed)
    curve = feature_count_curve(spec, table, ranking["order"],
                                n_folds=settings["selection_folds"],
                                n_estimators=settings["selection_trees"])
    say(f"{spec.name}: ranking {', '.join(ranking['order'])}; chosen "
        f"{', '.join(curve['chosen'])}")
    return {"ranking": ranking, "curve": curve}


def reproduce(data_dir=None, out_dir="report", quick=False, progress=print):
    """Run the analysis on the catalogs and write the report.

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
    table = load_full_range_training_table(data_dir)
    out = Path(out_dir)
    figures = out / "figures"
    results = {"settings": settings, "data_dir": str(data_dir), "software": _software(),
               "label_scale": table.meta["label_scale"],
               "label_noise": table.meta["label_noise"], "models": {}}
    cv_by_model = {}
    for key in REPORT_MODELS:
        spec = _spec(key, settings)
        selection = _selection(spec, table, settings, say)
        cv = cross_validated_predictions(spec, table, settings["n_folds"], progress=say)
        cv_by_model[key] = cv
        split = dataclasses.replace(spec, test_fraction=0.25)
        honest = train_model(split, table, progress=say)
        paper = train_model(dataclasses.replace(spec, test_fraction=0.5), table,
                            protocol="paper", progress=say)
        arrays = _split_arrays(split, table, honest)
        order = [spec.features.index(name) for name in selection["ranking"]["order"]
                 if name in spec.features]
        methods = _method_comparison(spec, arrays, {t: order for t in spec.targets}, settings,
                                     say)
        figure_paths = _figures(figures, key, spec, selection, methods, cv)
        honest_cards = {t["name"]: t for t in honest.model.card["targets"]}
        paper_cards = {t["name"]: t for t in paper.model.card["targets"]}
        results["models"][key] = {
            "name": spec.name,
            "targets": list(spec.targets),
            "features": list(spec.features),
            "selection": selection,
            "honest": {t: {**c["metrics"], "coverage": c["coverage"]}
                       for t, c in honest_cards.items()},
            "paper_protocol": {t: c["metrics"] for t, c in paper_cards.items()},
            "paper_values": {t: PAPER_METRICS.get((key.replace("-seismic", ""), t))
                             for t in spec.targets},
            "cv_coverage": {t: coverage(cv, t) for t in spec.targets},
            "cv_fraction_in_hull": float(np.mean(cv["in_hull"])),
            "groups": {t: group_coverage(cv, t) for t in spec.targets},
            "dilution": {t: dilution(cv, t) for t in spec.targets},
            "methods": methods,
            "figures": figure_paths,
            "n_removed_by_cleaning": honest.n_removed,
        }
    results["external"] = _external_checks(data_dir, cv_by_model)
    results["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    (out / "report.md").write_text(_markdown(results))
    for key, cv in cv_by_model.items():
        cv.write(out / f"{key}_out_of_fold.ecsv", overwrite=True)
    say(f"wrote {out / 'report.md'} and {out / 'report.json'} in {results['seconds']:.0f} s")
    return results


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


