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


def write(directory):
    directory = Path(directory)
    directory.mkdir(exist_ok=True)
    (directory / "model_summary.rst").write_text(summary_table())
    (directory / "label_scale.rst").write_text(label_scale_table())
    for name in list_models()["name"]:
        short = get_model(name).aliases[0]
        (directory / f"coverage_{short}.rst").write_text(coverage_table(name))
