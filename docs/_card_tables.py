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


def label_scale_table():
    card = get_model("giants").card
    header = ["label", "preliminary column", "DR17 reference", "n", "median offset",
              "trends kept", "scatter before", "after", "training noise"]
    noise = {f["name"]: f.get("training_noise") for f in card["features"]}
    rows = []
    for name, c in card["training_set"]["label_scale"].items():
        trends = ", ".join(f"{k} {v['slope']:+.3g}" for k, v in c["trends"].items()) or "none"
        level = noise.get(name)
        rows.append([name, c["source"], c["reference"].split(":")[-1], c["n_overlap"],
                     f"{c['median_offset_before']:+.3f}", trends,
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
            "errors).")
    return "\n".join(lines) + "\n"


def _signed_percent(value):
    return f"{100 * value:+.1f}%"


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
    for name in list_models()["name"]:
        short = get_model(name).aliases[0]
        (directory / f"coverage_{short}.rst").write_text(coverage_table(name))
