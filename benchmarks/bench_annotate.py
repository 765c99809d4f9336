"""Benchmark: annotate synthetic catalogs, against the paper's scikit-learn configuration.

Run from the repository (or anywhere the package is installed)::

    python benchmarks/bench_annotate.py                  # 948,216 rows, the paper's giants
    python benchmarks/bench_annotate.py --quick          # a small run (CI)
    python benchmarks/bench_annotate.py --scaling        # package only, 1e4 ... 1e7 rows
    python benchmarks/bench_annotate.py --hull           # LP vs facets vs Delaunay membership

Catalogs are drawn from the packaged model's own training distribution (the
mean and covariance of its standardised training features, stored in the
model card), so the fractions of stars inside the hull and the depth of the
tree walks are those of a real survey sample of the same kind.

The baseline is the paper's configuration: a scikit-learn
``RandomForestRegressor`` with 2000 trees and ``min_samples_leaf=1``, fitted to
the same training stars, predicting and giving the per-tree standard deviation
as its uncertainty, using both cores. It runs on the same rows in the same
process; the table gives times, rows per second, the ratio of the baseline's
time to the package's, and the peak resident memory of each stage. The package
is timed twice: its first large table (which builds the hull's triangulation,
once per process) and the next one (the median of ``--repeat`` calls). With the
shared catalogs available (``--data-dir`` or ``STELLAR_ML_AGES_DATA``), the
accuracy of both on the held-out test split of the training catalog is
reported; otherwise both are fitted to a synthetic training set and no accuracy
is quoted.

Nothing here asserts on times: the numbers are for the docs and for comparing
changes on one machine, as ratios within one run.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from astropy.table import QTable

import stellar_ml_ages
from stellar_ml_ages import add_mass_age, get_model
from stellar_ml_ages.features import get_feature

# The report tools' provenance helper: an editable install's __version__ is the one of
# its last (re)install, the commit is what actually ran.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from _provenance import git_commit

PAPER_ROWS = 948_216
FIVE_QUANTILES = (0.025, 0.05, 0.5, 0.95, 0.975)


class PeakMemory:
    """Peak resident set size of this process while the ``with`` block runs (sampled)."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        process = psutil.Process()
        while not self._done.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._done.wait(self.interval)

    def __enter__(self):
        self._done = threading.Event()
        self.peak = psutil.Process().memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


def synthetic_catalog(model, n_rows, seed=0):
    """A QTable of ``n_rows`` stars drawn from the model's training-feature distribution."""
    distribution = model.card["training_set"]["feature_distribution"]
    rng = np.random.default_rng(seed)
    values = rng.multivariate_normal(distribution["mean"], distribution["covariance"],
                                     n_rows, method="cholesky")
    table = QTable()
    for index, name in enumerate(model.feature_names):
        feature = get_feature(name)
        table[feature.aliases[0]] = values[:, index] * feature.unit
    return table


def canonical_features(model, table):
    """Feature matrix in canonical units, as the baseline sees it."""
    return np.column_stack([
        table[get_feature(name).aliases[0]].to_value(get_feature(name).unit)
        for name in model.feature_names
    ])


#: Fraction of stars (by KIC hash) the benchmark holds out for its accuracy line; the
#: packaged forests saw every star, so their held-out accuracy is the card's out-of-fold one.
TEST_FRACTION = 0.25


def training_data(model, data_dir):
    """(train_x, {target: train_y}, test_x, {target: test_y}), or None offline.

    Stars lacking a target have NaN there; each baseline forest uses the stars with
    its own target, as the packaged forests do.
    """
    from stellar_ml_ages.training import find_data_dir, get_spec, load_training_table
    from stellar_ml_ages.training.pipeline import _select, kic_test_mask

    spec = get_spec(model.name)
    try:
        table = load_training_table(spec, find_data_dir(data_dir))
    except stellar_ml_ages.StellarMLAgesError as error:
        print(f"# no training catalogs ({error}); baseline fitted to synthetic stars")
        return None
    keep, features, targets = _select(table, spec)
    features = features[keep]
    is_test = kic_test_mask(table["KIC"][keep], TEST_FRACTION)
    train_y = {t: values[keep][~is_test] for t, values in targets.items()}
    test_y = {t: values[keep][is_test] for t, values in targets.items()}
    return features[~is_test], train_y, features[is_test], test_y


def synthetic_training(model, n_rows=2500, seed=1):
    """Stand-in training set: model predictions with 5% scatter on in-hull synthetic stars."""
    table = synthetic_catalog(model, 3 * n_rows, seed)
    annotated = add_mass_age(table, model)
    inside = ~annotated["mass"].mask[: 3 * n_rows]
    x = canonical_features(model, table)[inside][:n_rows]
    rng = np.random.default_rng(seed)
    targets = {t: annotated[t].unmasked.value[inside][:n_rows]
               * np.exp(rng.normal(0, 0.05, len(x))) for t in model.target_names}
    return x, targets, None, None


def fit_baseline(train_x, train_y, n_trees, seed=0):
    """The paper's forest for each target (one forest per target, as the paper trains)."""
    from sklearn.ensemble import RandomForestRegressor

    forests = {}
    for target, values in train_y.items():
        rows = np.isfinite(values)
        forest = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=1,
                                       max_features=1.0, n_jobs=2, random_state=seed)
        forests[target] = forest.fit(train_x[rows], values[rows])
    return forests


def baseline_predict_all(forests, x):
    """`baseline_predict` for every target's forest: {target: (mean, std)}."""
    return {target: baseline_predict(forest, x) for target, forest in forests.items()}


def baseline_predict(forest, x, chunk_rows=20_000):
    """The paper's prediction with per-tree spread: mean and std over all trees.

    Rows go in chunks so the (trees x rows) stack stays bounded; trees are
    split between two threads (scikit-learn's tree traversal releases the GIL).
    """
    x = np.asarray(x, dtype=np.float32)
    mean = np.empty(len(x))
    std = np.empty(len(x))
    halves = np.array_split(np.asarray(forest.estimators_, dtype=object), 2)

    def stack(trees, block):
        return np.array([tree.predict(block, check_input=False) for tree in trees])

    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(x), chunk_rows):
            block = x[start:start + chunk_rows]
            per_tree = np.concatenate(list(pool.map(stack, halves, [block, block])))
            mean[start:start + chunk_rows] = per_tree.mean(axis=0)
            std[start:start + chunk_rows] = per_tree.std(axis=0)
    return mean, std


def median_relative_error(predicted, true):
    return float(np.median(np.abs(predicted - true) / true))


def timed(function, *args, **kwargs):
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = function(*args, **kwargs)
        seconds = time.perf_counter() - start
    return result, seconds, memory.peak


def print_table(rows):
    header = ("stage", "rows", "seconds", "rows/s", "ratio", "peak RSS MB", "note")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def compare(args):
    model = get_model(args.model)
    n_rows = 20_000 if args.quick else args.rows
    n_trees = 200 if args.quick else args.baseline_trees
    print(f"# stellar_ml_ages {stellar_ml_ages.__version__} (commit {git_commit()}), model "
          f"{model.name} {model.card['model_version']} "
          f"({model.forests[model.target_names[0]].n_trees} trees"
          + "".join(f"; {target} networks {network.n_members} x {network.shape}"
                    for target, network in model.networks.items())
          + f"), {n_rows:,} rows, "
          f"{os.cpu_count()} cores, threads={stellar_ml_ages.conf.threads or 'all'}")
    data = None if args.synthetic_training else training_data(model, args.data_dir)
    if data is None:
        data = synthetic_training(model)
    train_x, train_y, test_x, test_y = data

    catalog = synthetic_catalog(model, n_rows, seed=args.seed)
    x = canonical_features(model, catalog)
    # Load the model and compile the kernel before timing, as importing does not.
    # 100 rows are too few to build the hull's triangulation (a one-off of 1-3 s,
    # only worth it from 20,000 points on), so the first large call pays for it:
    # it is timed on its own, then the call a session makes for its next table.
    _, load_seconds, _ = timed(lambda: add_mass_age(catalog[:100], model))

    def triangulated():
        return "triangulation" in vars(model.domain)

    built_before = triangulated()
    annotated, first_seconds, first_peak = timed(add_mass_age, catalog, model)
    first_note = ("all steps + hull triangulation" if triangulated() and not built_before
                  else "all steps (hull test without triangulation)")
    # Results are dropped at once, so one call's output does not raise the next one's peak.
    warm_runs = [timed(add_mass_age, catalog, model)[1:] for _ in range(args.repeat)]
    warm_seconds = float(np.median([seconds for seconds, _ in warm_runs]))
    warm_peak = max(peak for _, peak in warm_runs)
    # Five further quantile columns per target (issue: no more than 1.5x the default).
    quantile_runs = [timed(add_mass_age, catalog, model, quantiles=FIVE_QUANTILES)[1:]
                     for _ in range(args.repeat)]
    quantile_seconds = float(np.median([seconds for seconds, _ in quantile_runs]))
    quantile_peak = max(peak for _, peak in quantile_runs)

    baseline, fit_seconds, _ = timed(fit_baseline, train_x, train_y, n_trees)
    base_all, baseline_seconds, baseline_peak = timed(baseline_predict_all, baseline, x)
    target = model.target_names[0]
    base_mean = base_all[target][0]
    predicted = ~annotated[target].mask
    spread = ", ".join(f"{seconds:.2f}" for seconds, _ in warm_runs)

    def stage_row(label, seconds, peak, note):
        return [label, f"{n_rows:,}", f"{seconds:.2f}", f"{n_rows / seconds:,.0f}",
                f"{baseline_seconds / seconds:.1f}", f"{peak / 2**20:,.0f}", note]

    rows = [
        stage_row("baseline: sklearn predict + per-tree std", baseline_seconds, baseline_peak,
                  f"{len(baseline)} target(s) x {n_trees} trees, min_samples_leaf=1 "
                  f"(fit {fit_seconds:.1f} s)"),
        stage_row("add_mass_age, first large table", first_seconds, first_peak,
                  f"{first_note}; {predicted.mean():.1%} in hull"),
        stage_row("add_mass_age, next table", warm_seconds, warm_peak,
                  f"all steps; median of {args.repeat} ({spread} s)"),
        stage_row("add_mass_age, 5 extra quantiles", quantile_seconds, quantile_peak,
                  f"quantiles={FIVE_QUANTILES}; {quantile_seconds / warm_seconds:.2f}x the "
                  "default call"),
    ]
    print(f"# model load and kernel compile before these: {load_seconds:.2f} s")
    print_table(rows)
    # Agreement of the two on the same synthetic rows, where the package predicts.
    relative = np.abs(annotated[target].unmasked.value[predicted] / base_mean[predicted] - 1)
    print(f"\n# median |package/baseline - 1| for {target} on in-hull rows: "
          f"{np.median(relative):.3f}")
    if test_x is not None:
        test_table = QTable()
        for index, name in enumerate(model.feature_names):
            feature = get_feature(name)
            test_table[feature.aliases[0]] = test_x[:, index] * feature.unit
        test_annotated = add_mass_age(test_table, model)
        truth = test_y[target]
        inside = ~test_annotated[target].mask & np.isfinite(truth)
        ours = median_relative_error(test_annotated[target].unmasked.value[inside], truth[inside])
        theirs = median_relative_error(baseline_predict(baseline[target], test_x[inside])[0],
                                       truth[inside])
        print(f"# {TEST_FRACTION:.0%} KIC-hash split ({inside.sum()} in-hull stars of "
              f"{len(truth)}; the packaged forests saw them, the baseline did not): median "
              f"relative error of {target}: package {ours:.2%}, baseline {theirs:.2%}")
    return 0


def write_synthetic_parquet(model, path, n_rows, block=1_000_000, seed=0):
    """A Parquet file of ``n_rows`` synthetic stars, written a block at a time."""
    import pyarrow.parquet as pq

    writer = None
    with tempfile.TemporaryDirectory() as scratch:
        for index, start in enumerate(range(0, n_rows, block)):
            part = synthetic_catalog(model, min(block, n_rows - start), seed=seed + index)
            part_path = os.path.join(scratch, "part.parquet")
            part.write(part_path, format="parquet", overwrite=True)
            arrow = pq.read_table(part_path)
            writer = writer or pq.ParquetWriter(path, arrow.schema)
            writer.write_table(arrow)
    writer.close()


def one_scaling_run(args):
    """One (mode, size) point, in a fresh process so peak memory is its own."""
    import json

    from stellar_ml_ages.streaming import annotate_file

    model = get_model(args.model)
    mode, n_rows = args.one[0], int(args.one[1])
    add_mass_age(synthetic_catalog(model, 100), model)  # load and compile first
    with tempfile.TemporaryDirectory() as scratch:
        if mode == "stream":
            source = os.path.join(scratch, "stars.parquet")
            write_synthetic_parquet(model, source, n_rows, seed=args.seed)
            baseline_rss = psutil.Process().memory_info().rss
            summary, seconds, peak = timed(
                annotate_file, source, os.path.join(scratch, "out.parquet"),
                input_format="parquet", output_format="parquet", model=model)
            note = f"{summary.n_blocks} blocks of {stellar_ml_ages.conf.chunk_size:,} rows"
        else:
            catalog = synthetic_catalog(model, n_rows, seed=args.seed)
            baseline_rss = psutil.Process().memory_info().rss
            _, seconds, peak = timed(add_mass_age, catalog, model)
            note = f"input table {sum(c.nbytes for c in catalog.itercols()) / 2**20:,.0f} MB"
    print(json.dumps({"seconds": seconds, "peak": peak, "before": baseline_rss, "note": note}))
    return 0


def scaling(args):
    import json
    import subprocess

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000, 10_000_000]
    rows = []
    for mode, label in (("memory", "add_mass_age (table in memory)"),
                        ("stream", "annotate_file (Parquet -> Parquet, streamed)")):
        for n_rows in sizes:
            command = [sys.executable, __file__, "--model", args.model, "--seed", str(args.seed),
                       "--one", mode, str(n_rows)]
            result = json.loads(subprocess.run(command, capture_output=True, text=True,
                                               check=True).stdout.strip().splitlines()[-1])
            rows.append([label, f"{n_rows:,}", f"{result['seconds']:.2f}",
                         f"{n_rows / result['seconds']:,.0f}", "",
                         f"{result['peak'] / 2**20:,.0f} ({result['before'] / 2**20:,.0f} before)",
                         result["note"]])
    print_table(rows)
    return 0


def hull_comparison(args):
    """Exact membership three ways on the same standardised stars: LP, facets, Delaunay."""
    from scipy.optimize import linprog

    from stellar_ml_ages.hull import ConvexHullDomain

    n_rows = 20_000 if args.quick else args.rows
    rows = []
    for name in ("giants", "red-clump"):
        model = get_model(name)
        catalog = synthetic_catalog(model, n_rows, seed=args.seed)
        points = model.standardize(canonical_features(model, catalog))
        domain = ConvexHullDomain(model.domain.vertices)  # nothing cached yet
        n_facets = len(domain.equations)
        inside, seconds, peak = timed(domain.contains, points)
        rows.append([f"{name}: Delaunay walk + facet fallback (incl. build)", f"{n_rows:,}",
                     f"{seconds:.2f}", f"{n_rows / seconds:,.0f}", "", f"{peak / 2**20:,.0f}",
                     f"{inside.mean():.1%} inside, {n_facets:,} facets"])
        by_facets, seconds, peak = timed(domain.facet_test, points)
        rows.append([f"{name}: facet test only", f"{n_rows:,}", f"{seconds:.2f}",
                     f"{n_rows / seconds:,.0f}", "", f"{peak / 2**20:,.0f}",
                     f"disagreements with the above: {int((by_facets != inside).sum())}"])
        # Linear programming: is the star a convex combination of the hull vertices?
        vertices = domain.vertices
        equality = np.vstack([vertices.T, np.ones(len(vertices))])
        sample = np.random.default_rng(args.seed).choice(n_rows, 200, replace=False)
        start = time.perf_counter()
        by_lp = np.array([linprog(np.zeros(len(vertices)), A_eq=equality,
                                  b_eq=np.append(points[i], 1.0), bounds=(0, None),
                                  method="highs").status == 0 for i in sample])
        per_star = (time.perf_counter() - start) / len(sample)
        rows.append([f"{name}: linear programming (200 stars, extrapolated)", f"{n_rows:,}",
                     f"{per_star * n_rows:.0f}", f"{1 / per_star:,.0f}", "", "",
                     f"disagreements on the 200: {int((by_lp != inside[sample]).sum())}"])
    print_table(rows)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="giants")
    parser.add_argument("--rows", type=int, default=PAPER_ROWS)
    parser.add_argument("--baseline-trees", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 200 baseline trees")
    parser.add_argument("--scaling", action="store_true",
                        help="package only, 1e4 to 1e7 rows, streaming and in memory")
    parser.add_argument("--hull", action="store_true",
                        help="compare exact hull-membership methods (LP, facets, Delaunay)")
    parser.add_argument("--data-dir",
                        help="shared catalogs (default: STELLAR_ML_AGES_DATA / config)")
    parser.add_argument("--synthetic-training", action="store_true",
                        help="fit the baseline to synthetic stars even if catalogs are available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed calls of the package after the first (median reported)")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return one_scaling_run(args)
    if args.hull:
        return hull_comparison(args)
    return scaling(args) if args.scaling else compare(args)


if __name__ == "__main__":
    sys.exit(main())
