"""Write the docs' model tables from the packaged model cards, at every build.

The numbers in docs/models.rst and docs/uncertainties.rst are read from the cards
the package ships (their out-of-fold metrics), so the docs cannot drift from the
models. Output: ``docs/_generated/*.rst``, pulled in with ``.. include::``.
"""

from pathlib import Path

from stellar_ml_ages import get_model, list_models


def _percent(value):
    return f"{100 * value:.1f}%"


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column)
              for column in zip(header, *rows, strict=True)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)),
             rule]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
              for row in rows]
    return "\n".join([*lines, rule, ""])


def summary_table():
    header = ["model", "target", "n", "median rel. err.", "[p16, p84]", "[p2.5, p97.5]",
              "slope", "calibrated range"]
    rows = []
    for name in list_models()["name"]:
        model = get_model(name)
        for target in model.card["targets"]:
            metrics, cv = target["metrics"], target["coverage_cv"]
            low, high = target["calibrated_range"]
            rows.append([name, target["name"], cv["n"], _percent(metrics["median_rel_error"]),
                         _percent(cv["p16_p84"]), _percent(cv["p2.5_p97.5"]),
                         f"{target['dilution']['slope_predicted_on_true']:.2f}",
                         f"{low:.2f}-{high:.2f} {target['unit']}"])
    return _table(header, rows)


def coverage_table(name):
    model = get_model(name)
    header = ["target", "group", "n", "median rel. err.", "median bias", "[p16, p84]",
              "pooled", "[p2.5, p97.5]"]
    rows = []
    for target in model.card["targets"]:
        for group in target["coverage_by_group"]:
            if group["n"]:
                rows.append([target["name"], group["group"], group["n"],
                             _percent(group["median_rel_error"]),
                             _percent(group["median_rel_bias"]), _percent(group["p16_p84"]),
                             _percent(group["p16_p84_pooled"]),
                             _percent(group["p2.5_p97.5"])])
    return _table(header, rows)


def state_bin_table(name):
    """68% coverage and median ln bias by state and bin of the true value (the card's
    ``coverage_by_state_and_true_value``, out of fold)."""
    model = get_model(name)
    header = ["target", "state", "true value", "n", "[p16, p84]", "median ln bias"]
    rows = []
    for target in model.card["targets"]:
        for cell in target.get("coverage_by_state_and_true_value", []):
            if cell["n"]:
                rows.append([target["name"], cell["state"],
                             f"{cell['bin']} {target['unit']}" if cell["bin"] != "all" else "all",
                             cell["n"], _percent(cell["p16_p84"]),
                             f"{cell['median_log_bias']:+.3f}"])
    return _table(header, rows) if rows else "(not recorded in this card)\n"


def label_coverage_table(name, label="logg"):
    """68% coverage in tenths of one input label, robust and posterior (the card's
    ``coverage_by_label``, out of fold), with the card's spread factor there."""
    from stellar_ml_ages.model import spread_factor

    model = get_model(name)
    header = ["target", f"{label} bin", "n", "[p16, p84] robust", "posterior",
              "spread factor"]
    rows = []
    for target in model.card["targets"]:
        entry = target.get("coverage_by_label", {}).get(label)
        if not entry:
            continue
        spread = target["calibration"].get("spread")
        edges = entry["edges"]
        for i, n in enumerate(entry["n"]):
            middle = 0.5 * (edges[i] + edges[i + 1])
            factor = (f"{float(spread_factor(spread, [middle])[0]):.2f}"
                      if spread and spread["feature"] == label else "-")
            rows.append([target["name"], f"{edges[i]:.2f}-{edges[i + 1]:.2f}", n,
                         _percent(entry["p16_p84"][i]),
                         _percent(entry["p16_p84_posterior"][i]), factor])
    return _table(header, rows) if rows else "(not recorded in this card)\n"


def _change(change_vs, target):
    """A variant's paired change in error against the first variant of its run."""
    if not change_vs:
        return "-"
    mean, spread = change_vs[target]["all"]
    return f"{mean:+.2f} ± {spread:.2f} vs {change_vs['variant']}"


def _logg_tenths(entry):
    """The range of the 68% coverage over tenths of log g ("-" for runs before it)."""
    if not entry:
        return "-"

    def span(values):
        return f"{_percent(min(values))}-{_percent(max(values))}"

    return f"{span(entry['robust'])} ({span(entry['posterior'])})"


def _mapped_labels(test):
    """The DR17-input stars predicted from their mapped preliminary labels, and how far
    that is from the prediction from their final labels ("-" for runs before it)."""
    if test.get("median_rel_error_mapped_labels") is None:
        return "-"
    return (f"{100 * test['median_rel_error_mapped_labels']:.2f}%; "
            f"{test['median_ln_dr17_over_mapped']:+.3f}, "
            f"{test['median_abs_ln_dr17_over_mapped']:.3f}")


def models_report_table(file_name="models_report.json"):
    """Versions of a recipe against each other, out of fold (tools/models_report.py):
    the giants' by default, another spec's from its ``models_report_<spec>.json``."""
    import json

    path = Path(__file__).resolve().parents[1] / "stellar_ml_ages" / "data" / file_name
    report = json.loads(path.read_text())
    header = ["variant", "target", "all stars", "in hull", "RGB", "RC", "DR17 input (n)",
              "same stars, mapped labels: error; ln(DR17 / mapped) median, median abs",
              "slope RGB / RC", "worst state x true-value bin [p16, p84]: robust "
              "(posterior)", "tenths of log g [p16, p84]: robust (posterior)",
              "change (paired bootstrap, points)"]
    rows = []

    def two(value):  # the variants differ by tenths of a percent
        return f"{100 * value:.2f}%"

    for name, variant in report["variants"].items():
        for target, e in variant["scores"].items():
            rows.append([name, target, two(e["median_rel_error_all"]),
                         two(e["median_rel_error_in_hull"]),
                         *(two(e[f"median_rel_error_{state}"])
                           if f"median_rel_error_{state}" in e else "-"
                           for state in ("RGB", "RC")),
                         f"{two(e['dr17_input']['median_rel_error'])} "
                         f"({e['dr17_input']['n']})",
                         _mapped_labels(e["dr17_input"]),
                         " / ".join(f"{e[f'log_slope_{state}']:.2f}"
                                    if f"log_slope_{state}" in e else "-"
                                    for state in ("RGB", "RC")),
                         f"{_percent(e['worst_bin_coverage'])} "
                         f"({_percent(e.get('worst_bin_coverage_posterior', float('nan')))})",
                         _logg_tenths(e.get("coverage_by_logg_tenth")),
                         _change(variant.get("change_vs"), target)])
    runs = "; ".join(f"{name} {variant.get('date', report['date'])} at commit "
                     f"{variant.get('commit', report['commit'])}"
                     for name, variant in report["variants"].items())
    note = f"\n{report['n_folds']} KIC-hash folds, spec ``{report['spec']}``; run: {runs}.\n"
    return _table(header, rows) + note


def label_scale_table():
    card = get_model("giants").card
    header = ["label", "final DR17 / mapped", "preliminary column", "DR17 reference", "n",
              "median offset", "trends kept", "scale term", "scatter before", "after",
              "training noise"]
    noise = {f["name"]: f.get("training_noise") for f in card["features"]}
    origin = card["training_set"].get("label_origin", {})
    rows = []
    for name, c in card["training_set"]["label_scale"].items():
        trends = ", ".join(f"{k} {v['slope']:+.3g}" for k, v in c["trends"].items()) or "none"
        level = noise.get(name)
        count = origin.get(name)
        rows.append([name, f"{count['final_dr17']} / {count['mapped']}" if count else "-",
                     c["source"], c["reference"].split(":")[-1], c["n_overlap"],
                     f"{c['median_offset_before']:+.3f}", trends,
                     "kept" if "self" in c["trends"]
                     else c.get("scale_not_kept", {}).get("reason", "-"),
                     f"{c['robust_scatter_before']:.3f}", f"{c['robust_scatter_after']:.3f}",
                     "-" if level is None else f"{level:.3g}"])
    return _table(header, rows)


def slam_degraded_table():
    """Out-of-fold errors and coverage with SLAM's noise, by S/N (tools/lamost_slam_report.py)."""
    from stellar_ml_ages.slam import measurements

    levels = measurements()["degraded"]["levels"]
    header = ["labels", "in hull", "target", "median rel. err.", "scatter (ln)", "bias (ln)",
              "[p16, p84] all", "RGB", "RC", "width x"]
    rows = []
    for name, entry in levels.items():
        for target in ("mass", "age"):
            stats = entry[target]
            rows.append([name if target == "mass" else "", _percent(entry["in_hull"])
                         if target == "mass" else "", target,
                         _percent(stats["median_rel_error"]),
                         f"{stats['robust_scatter_ln']:.3f}", f"{stats['bias']:+.3f}",
                         _percent(stats["coverage_p16_p84"]), _percent(stats["coverage_RGB"]),
                         _percent(stats["coverage_RC"]),
                         f"{stats.get('width_vs_baseline', 1.0):.2f}"])
    return _table(header, rows)


def slam_zero_point_table():
    from stellar_ml_ages.slam import measurements

    found = measurements()
    offsets = found["zero_points"]["dr14_minus_dr17"]
    header = ["label", "stars", "DR14 - DR17 (median)", "robust scatter", "model",
              "mass change", "age change"]
    rows = []
    for name, label in (("teff", "Teff"), ("fe_h", "[Fe/H]"), ("alpha_m", "[α/Fe]"),
                        ("all three", "all three")):
        entry = offsets.get(name)
        for model, suffix in (("giants", ""), ("giants-slam", "_giants_slam")):
            first = model == "giants"
            rows.append([label if first else "",
                         entry["n"] if entry and first else "",
                         f"{entry['median']:+.3g} {entry['unit']}" if entry and first else "",
                         f"{entry['robust_scatter']:.3g} {entry['unit']}"
                         if entry and first else "",
                         model, *_changes(found[f"zero_point_effect{suffix}"][name])])
    return _table(header, rows)


def _changes(entry):
    """'median (median absolute)' change of mass and of age."""
    return [f"{_signed_percent(entry[f'{target}_median_change'])} "
            f"({_percent(entry[f'{target}_median_abs_change'])})" for target in ("mass", "age")]


def slam_sensitivity_table():
    from stellar_ml_ages.slam import measurements

    found = measurements()
    header = ["assumed offset", "model", "mass change", "age change"]
    rows = []
    for name in found["sensitivity"]:
        rows.append([name, "giants", *_changes(found["sensitivity"][name])])
        rows.append(["", "giants-slam", *_changes(found["sensitivity_giants_slam"][name])])
    return _table(header, rows)


def slam_hull_table():
    from stellar_ml_ages.slam import measurements

    found = measurements()["degraded"]
    labels = {"teff": "Teff", "logg": "log g", "m_h": "[M/H]", "alpha_m": "[α/M]",
              "c_m": "[C/M]", "n_m": "[N/M]"}
    alone = found["in_hull_one_label_degraded_snr100"]
    header = ["label degraded alone (S/N 100)", "inside the hull"]
    rows = [[labels[name], _percent(value)] for name, value in alone.items()]
    rows.append(["all six", _percent(found["levels"]["S/N 100"]["in_hull"])])
    rows.append(["none (APOGEE labels)", _percent(found["levels"]["APOGEE"]["in_hull"])])
    return _table(header, rows)


def slam_findings():
    """The degraded-label table in sentences, numbers read from the shipped measurements."""
    import math

    from stellar_ml_ages.slam import measurements

    levels = measurements()["degraded"]["levels"]
    base = levels["APOGEE"]
    lines = []
    for snr in ("100", "50", "30"):
        entry = levels[f"S/N {snr}"]
        bare = levels[f"S/N {snr}, no propagation"]
        every = levels[f"S/N {snr}, every star (extrapolated)"]
        upper = levels[f"S/N {snr}, full scatter (upper bound)"]
        slam = levels[f"S/N {snr}, giants-slam"]
        full = levels[f"S/N {snr}, giants-slam, full scatter (upper bound)"]
        corr = levels[f"S/N {snr}, giants-slam, correlated Teff-log g-[M/H] errors"]
        shrunk = levels.get(f"S/N {snr}, giants-slam, shrinkage-type errors")
        mass, age = entry["mass"], entry["age"]
        lines.append(
            f"- **S/N {snr}**, giants: {_percent(entry['in_hull'])} of the giants inside the hull "
            f"(APOGEE labels: {_percent(base['in_hull'])}); median relative error of mass "
            f"{_percent(mass['median_rel_error'])} (APOGEE labels: "
            f"{_percent(base['mass']['median_rel_error'])}), of age "
            f"{_percent(age['median_rel_error'])} ({_percent(base['age']['median_rel_error'])}); "
            f"masses biased by {_signed_percent(math.expm1(mass['bias']))}, ages by "
            f"{_signed_percent(math.expm1(age['bias']))}; intervals "
            f"{mass['width_vs_baseline']:.1f}x (mass) and {age['width_vs_baseline']:.1f}x (age) "
            f"as wide as the same stars' with APOGEE labels, holding "
            f"{_percent(mass['coverage_p16_p84'])} and {_percent(age['coverage_p16_p84'])} of "
            f"the true values (without propagation: {_percent(bare['mass']['coverage_p16_p84'])}"
            f" and {_percent(bare['age']['coverage_p16_p84'])}). Every star, extrapolating "
            f"outside the hull: mass {_percent(every['mass']['median_rel_error'])}, age "
            f"{_percent(every['age']['median_rel_error'])}, coverage "
            f"{_percent(every['mass']['coverage_p16_p84'])} and "
            f"{_percent(every['age']['coverage_p16_p84'])}. Upper bound (SLAM's error taken as "
            f"the whole published scatter): {_percent(upper['in_hull'])} inside the hull, mass "
            f"{_percent(upper['mass']['median_rel_error'])}, age "
            f"{_percent(upper['age']['median_rel_error'])}. **giants-slam**: "
            f"{_percent(slam['in_hull'])} inside its hull, mass "
            f"{_percent(slam['mass']['median_rel_error'])}, age "
            f"{_percent(slam['age']['median_rel_error'])}, biases "
            f"{_signed_percent(math.expm1(slam['mass']['bias']))} and "
            f"{_signed_percent(math.expm1(slam['age']['bias']))}, coverage "
            f"{_percent(slam['mass']['coverage_p16_p84'])} and "
            f"{_percent(slam['age']['coverage_p16_p84'])}"
            + (" (by construction: the noise it was trained for)" if snr == "50" else "")
            + "; with noise it does not assume, coverage "
            f"{_percent(full['mass']['coverage_p16_p84'])} and "
            f"{_percent(full['age']['coverage_p16_p84'])} (whole published scatter), "
            f"{_percent(corr['mass']['coverage_p16_p84'])} and "
            f"{_percent(corr['age']['coverage_p16_p84'])} (correlated Teff, log g, [M/H] "
            "errors)"
            + ("" if shrunk is None else
               f", {_percent(shrunk['mass']['coverage_p16_p84'])} and "
               f"{_percent(shrunk['age']['coverage_p16_p84'])} (shrinkage-type errors of the "
               f"same size: mass {_percent(shrunk['mass']['median_rel_error'])}, age "
               f"{_percent(shrunk['age']['median_rel_error'])})")
            + ".")
    return "\n".join(lines) + "\n"


def _signed_percent(value):
    return f"{100 * value:+.1f}%"


def _population():
    import json

    from stellar_ml_ages.population import DECONVOLUTION_ITERATIONS

    path = Path(__file__).resolve().parent.parent / "stellar_ml_ages" / "data"
    report = json.loads((path / "population.json").read_text())
    return report, DECONVOLUTION_ITERATIONS


def population_groups_table(target):
    """KS distances and old/heavy fractions by group (tools/population_report.py)."""
    report, iterations = _population()
    threshold = report["thresholds"][target]
    unit = "Gyr" if target == "age" else "Msun"
    header = ["group", "stars", "KS: points", "KS: stacked", f"KS: deconvolved ({iterations})",
              f"> {threshold:g} {unit}: truth", "points", "stacked", "stacked 95% band",
              "deconvolved", "bins in 68% / 95% band"]
    rows = []
    for entry in report[target]["groups"]:
        above = entry["above"]
        band = entry["above_band95"]
        rows.append([entry["group"], entry["n"], f"{entry['ks_points']:.3f}",
                     f"{entry['ks_stacked']:.3f}", f"{entry[f'ks_em{iterations}']:.3f}",
                     f"{above['truth']:.3f}", f"{above['points']:.3f}",
                     f"{above['stacked']:.3f}", f"{band[0]:.3f}-{band[1]:.3f}",
                     f"{entry[f'above_em{iterations}']:.3f}",
                     f"{_percent(entry['bins_in_band68'])} / "
                     f"{_percent(entry['bins_in_band95'])}"])
    return _table(header, rows)


def population_band_table():
    """How often the bands hold what they are for, random samples by size
    (tools/population_report.py, ``band_by_sample_size``)."""
    report, _ = _population()
    header = ["target", "stars per sample", "population band 68% / 95%",
              "sample band 68% / 95%"]
    rows = []
    for target in ("age", "mass"):
        for size, entry in report[target].get("band_by_sample_size", {}).items():
            rows.append([target, size,
                         f"{_percent(entry['population_in_band68'])} / "
                         f"{_percent(entry['population_in_band95'])}",
                         f"{_percent(entry['sample_in_band68'])} / "
                         f"{_percent(entry['sample_in_band95'])}"])
    return _table(header, rows) if rows else "(not in this report)\n"


def population_em_table():
    """KS distance of the deconvolution by number of EM iterations."""
    report, _ = _population()
    counts = sorted(int(key[len("ks_em"):]) for key in report["age"]["groups"][0]
                    if key.startswith("ks_em"))
    header = ["target", "group", "stacked", *(f"EM {n}" for n in counts)]
    rows = []
    for target in ("age", "mass"):
        for entry in report[target]["groups"]:
            rows.append([target, entry["group"], f"{entry['ks_stacked']:.3f}",
                         *(f"{entry[f'ks_em{n}']:.3f}" for n in counts)])
    return _table(header, rows)


def population_coverage_table():
    """Out-of-fold coverage of the extra quantiles, by state, with and without the state."""
    report, _ = _population()
    header = ["target", "calibration", "group", "stars", "[p16, p84]", "[p5, p95]",
              "[p2.5, p97.5]", "[p0.5, p99.5]", "PIT KS"]
    rows = []
    for target in ("mass", "age"):
        for calibration, key in (("by state", "coverage"), ("pooled", "coverage_pooled")):
            for group, entry in report[target][key].items():
                rows.append([target, calibration, group, entry["n"],
                             _percent(entry["p16_p84"]), _percent(entry["p5_p95"]),
                             _percent(entry["p2.5_p97.5"]), _percent(entry["p0.5_p99.5"]),
                             f"{entry['pit_ks']:.3f}"])
    return _table(header, rows)


def population_tails_table():
    report, _ = _population()
    header = ["target", "stars", "median bias of the point estimate", "[p16, p84] coverage"]
    rows = []
    for target in ("mass", "age"):
        tails = report[target]["tails"]
        for label in ("lowest 10%", "highest 10%"):
            rows.append([target, f"{label} of true values", _signed_percent(
                tails[label]["median_rel_bias"]), _percent(tails[label]["coverage_68"])])
        rows.append([target, "log slope, predicted on true",
                     f"{tails['log_slope_predicted_on_true']:.2f}", ""])
    return _table(header, rows)


def population_trends_table():
    report, _ = _population()
    header = ["binned in", "bin", "stars", "true median age", "point estimates",
              "stacked median (68% band)", "true [p16, p84]", "point [p16, p84]",
              "stacked [p16, p84]"]
    rows = []
    for column, entries in report["trends"].items():
        for entry in entries:
            if not entry["n"]:
                continue
            band = entry["stacked_median_band"]
            rows.append([column, f"{entry['low']:+.2f} to {entry['high']:+.2f}", entry["n"],
                         f"{entry['true_median']:.2f}", f"{entry['point_median']:.2f}",
                         f"{entry['stacked_median']:.2f} ({band[0]:.2f}-{band[1]:.2f})",
                         f"{entry['true_p16']:.1f}-{entry['true_p84']:.1f}",
                         f"{entry['point_p16']:.1f}-{entry['point_p84']:.1f}",
                         f"{entry['stacked_p16']:.1f}-{entry['stacked_p84']:.1f}"])
    return _table(header, rows)


#: Groups shown in the population figure, in panel order.
_FIGURE_GROUPS = ("[Fe/H] < -0.3", "[Fe/H] > 0.2", "alpha-rich", "RGB", "RC", "old-selected")


def population_figure(path):
    """Age distributions out of fold: truth, point estimates, stacked (with its 95%
    bootstrap band) and deconvolved, for a few groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    report, iterations = _population()
    groups = {entry["group"]: entry for entry in report["age"]["groups"]}
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), sharex=True)
    for ax, label in zip(axes.ravel(), _FIGURE_GROUPS, strict=True):
        entry = groups[label]
        bins = entry["bins"]
        edges = np.asarray(bins["edges"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        width = np.diff(edges)
        ax.bar(centres, np.asarray(bins["truth"]) / width, width=width, color="0.85",
               label="true (seismic)")
        ax.step(edges[:-1], np.asarray(bins["points"]) / width, where="post", color="C1",
                label="histogram of point ages")
        low, high = (np.asarray([np.nan if v is None else v for v in band]) / width
                     for band in bins["band95"])
        ax.fill_between(centres, low, high, color="C0", alpha=0.3, lw=0)
        ax.plot(centres, np.asarray(bins["stacked"]) / width, color="C0",
                label="stacked (95% band)")
        ax.plot(centres, np.asarray(bins[f"em{iterations}"]) / width, color="C3", ls="--",
                label=f"deconvolved ({iterations} EM iterations)")
        ax.set_title(f"{label} ({entry['n']} stars)", fontsize=10)
        ax.set_xlim(0, 16)
    for ax in axes[1]:
        ax.set_xlabel("age [Gyr]")
    for ax in axes[:, 0]:
        ax.set_ylabel("stars per Gyr (fraction)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def population_trend_figure(path):
    """Median age per bin of [Fe/H] and [α/M]: truth, point estimates, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    report, _ = _population()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (column, label) in zip(axes, (("FE_H", "[Fe/H]"), ("ALPHA_M", "[α/M]")),
                                   strict=True):
        entries = [entry for entry in report["trends"][column] if entry["n"]]
        x = np.array([0.5 * (entry["low"] + entry["high"]) for entry in entries])
        truth = np.array([entry["true_median"] for entry in entries])
        ax.fill_between(x, [entry["true_p16"] for entry in entries],
                        [entry["true_p84"] for entry in entries], color="0.85",
                        label="true [p16, p84]")
        ax.plot(x, truth, "k-o", label="true median")
        ax.plot(x, [entry["point_median"] for entry in entries], "C1-s",
                label="median of point ages")
        ax.plot(x, [entry["point_p16"] for entry in entries], "C1--", label="point p16/p84")
        ax.plot(x, [entry["point_p84"] for entry in entries], "C1--")
        band = np.array([entry["stacked_median_band"] for entry in entries])
        ax.errorbar(x, [entry["stacked_median"] for entry in entries],
                    yerr=[np.array([e["stacked_median"] for e in entries]) - band[:, 0],
                          band[:, 1] - np.array([e["stacked_median"] for e in entries])],
                    fmt="C0-D", label="stacked median (68% band)")
        ax.plot(x, [entry["stacked_p16"] for entry in entries], "C0:", label="stacked p16/p84")
        ax.plot(x, [entry["stacked_p84"] for entry in entries], "C0:")
        ax.set_xlabel(label)
    axes[0].set_ylabel("age [Gyr]")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def rgb_experiment_table():
    """Out-of-fold RGB errors of model variants (tools/rgb_age_experiment.py)."""
    import json

    path = Path(__file__).resolve().parent.parent / "stellar_ml_ages" / "data"
    results = json.loads((path / "rgb_age_experiment.json").read_text())
    header = ["variant", "RGB stars", "age: median rel. err. (fold noise)", "on common stars",
              "mass", "mass on common stars", "[p16, p84] age / mass"]
    rows = []
    for label, entry in results.items():
        if label == "generated":
            continue
        age, mass = entry["age"], entry["mass"]
        rows.append([label, age["n_rgb"],
                     f"{100 * age['median_rel_error']:.2f}% (±{100 * age['fold_noise']:.2f})",
                     f"{100 * age['median_rel_error_common']:.2f}%",
                     f"{100 * mass['median_rel_error']:.2f}%",
                     f"{100 * mass['median_rel_error_common']:.2f}%",
                     f"{_percent(age['coverage_68'])} / {_percent(mass['coverage_68'])}"])
    return _table(header, rows)


def clump_selection_table():
    """The spectroscopic clump selection, out of fold (tools/clump_selection_report.py)."""
    import json

    path = Path(__file__).resolve().parents[1] / "stellar_ml_ages" / "data" / "clump_selection.json"
    if not path.is_file():
        return "(not measured yet: run tools/clump_selection_report.py)\n"
    report = json.loads(path.read_text())
    header = ["target", "stars (spectroscopic clump)", "n", "red-clump error",
              "red-clump [p16, p84]", "giants error", "giants [p16, p84]"]
    rows = []
    for target, groups in report["models_on_selected_clump"].items():
        for group, entry in groups.items():
            clump, giants = entry["red-clump"], entry["giants"]
            rows.append([target, group, clump.get("n", 0),
                         _percent(clump["median_rel_error"]) if clump.get("n") else "-",
                         _percent(clump["coverage_p16_p84"]) if clump.get("n") else "-",
                         _percent(giants["median_rel_error"]) if giants.get("n") else "-",
                         _percent(giants["coverage_p16_p84"]) if giants.get("n") else "-"])
    classifier = report["classifier"]
    selected = report["selected_clump"]
    note = (f"\nClassifier, {classifier['protocol']}: clump completeness "
            f"{_percent(classifier['rc_completeness'])}, contamination "
            f"{_percent(classifier['rc_contamination'])} ({selected['n_rgb_contaminants']} RGB "
            f"stars among {selected['n']}; "
            f"{_percent(selected['rgb_contaminants_in_red_clump_hull'])} of them inside "
            f"red-clump's hull). Run {report['date']} at commit "
            f"{report['commit']}.\n")
    by_state = report["giants_intervals_by_state_column"]
    note += ("\ngiants' [p16, p84] coverage per true state with the state column given as "
             + "; ".join(f"{label}: mass RGB {_percent(by_state['mass'][label]['RGB'])}, RC "
                         f"{_percent(by_state['mass'][label]['RC'])}, age RGB "
                         f"{_percent(by_state['age'][label]['RGB'])}, RC "
                         f"{_percent(by_state['age'][label]['RC'])}"
                         for label in ("seismic", "spectroscopic", "none")) + ".\n")
    return _table(header, rows) + note


def write(directory):
    directory = Path(directory)
    directory.mkdir(exist_ok=True)
    (directory / "model_summary.rst").write_text(summary_table())
    (directory / "label_scale.rst").write_text(label_scale_table())
    (directory / "slam_degraded.rst").write_text(slam_degraded_table())
    (directory / "slam_zero_points.rst").write_text(slam_zero_point_table())
    (directory / "slam_sensitivity.rst").write_text(slam_sensitivity_table())
    (directory / "slam_findings.rst").write_text(slam_findings())
    (directory / "slam_hull.rst").write_text(slam_hull_table())
    for target in ("age", "mass"):
        (directory / f"population_{target}.rst").write_text(population_groups_table(target))
    (directory / "population_em.rst").write_text(population_em_table())
    (directory / "population_bands.rst").write_text(population_band_table())
    (directory / "population_coverage.rst").write_text(population_coverage_table())
    (directory / "population_tails.rst").write_text(population_tails_table())
    (directory / "population_trends.rst").write_text(population_trends_table())
    (directory / "rgb_experiment.rst").write_text(rgb_experiment_table())
    (directory / "models_report.rst").write_text(models_report_table())
    for spec in ("red-clump", "red-clump-seismic"):
        (directory / f"models_report_{spec}.rst").write_text(
            models_report_table(f"models_report_{spec}.json"))
    (directory / "clump_selection.rst").write_text(clump_selection_table())
    population_figure(directory / "population_age.png")
    population_trend_figure(directory / "population_trends.png")
    for name in list_models()["name"]:
        short = get_model(name).aliases[0]
        (directory / f"coverage_{short}.rst").write_text(coverage_table(name))
        (directory / f"state_bins_{short}.rst").write_text(state_bin_table(name))
        (directory / f"label_coverage_{short}.rst").write_text(label_coverage_table(name))
