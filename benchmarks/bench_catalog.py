"""Benchmark: build a survey catalog over TAP, against one big query, on a local DaCHS.

Needs a TAP server with an allStar-shaped table, e.g. the CI mirror started with
a big survey table::

    STELLAR_ML_AGES_TAP_SURVEY_ROWS=500000 bash ci/tap/start_tap.sh /tmp/tap python
    python benchmarks/bench_catalog.py --tap-url http://127.0.0.1:8080/tap

Each run is a fresh process (its peak resident memory is the process's own):

* ``catalog``: `stellar_ml_ages.catalog.build_catalog` with ``--page-rows``;
  rows/s end to end and the time split between TAP transfer, annotation and
  writing the parts;
* ``naive``: one query for the whole table, `add_mass_age`, one Parquet file;
* ``resume``: the catalog build killed (SIGKILL) once half of its pages are
  written, then the time the rerun needs to finish; its parts are compared
  byte for byte with the uninterrupted run's.

Times are reported, never asserted: the numbers are for the docs and for
comparing changes on one machine, as ratios within one run.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
mode, url, table, key, page_rows, out = sys.argv[1:7]
started = time.perf_counter()
if mode == "catalog":
    from stellar_ml_ages.catalog import CatalogQuery, build_catalog
    summary = build_catalog(out, CatalogQuery(url, table, key), page_rows=int(page_rows))
    result = {"rows": summary.n_rows, "tap": summary.tap_seconds,
              "annotate": summary.annotate_seconds, "write": summary.write_seconds,
              "resumed_pages": summary.resumed_pages, "pages": summary.n_pages}
else:
    from stellar_ml_ages import add_mass_age
    from stellar_ml_ages.vo import run_query
    t0 = time.perf_counter()
    stars = run_query(url, f"SELECT * FROM {table}", maxrec=10**8)
    t1 = time.perf_counter()
    annotated = add_mass_age(stars, model="giants")
    t2 = time.perf_counter()
    from stellar_ml_ages.catalog import _plain_strings  # VOTable text -> Parquet text
    _plain_strings(annotated)
    annotated.write(out + "/all.parquet", overwrite=True)
    result = {"rows": len(stars), "tap": t1 - t0, "annotate": t2 - t1,
              "write": time.perf_counter() - t2}
result["seconds"] = time.perf_counter() - started
print("RESULT " + json.dumps(result))
"""


def run_child(mode, args, out, kill_at=None):
    """Run one measurement in a fresh process; return (result dict, peak RSS in MiB)."""
    command = [sys.executable, "-c", CHILD, mode, args.tap_url, args.table, args.key,
               str(args.page_rows), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if kill_at is not None and _pages_done(out) >= kill_at:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return None, peak / 2**20
        time.sleep(0.02)
    output = process.stdout.read()
    line = next((row for row in output.splitlines() if row.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{mode} run failed:\n{output}")
    return json.loads(line[len("RESULT "):]), peak / 2**20


def _pages_done(directory):
    try:
        return len(json.loads((Path(directory) / "_manifest.json").read_text())["pages"])
    except (OSError, ValueError, KeyError):
        return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tap-url", default=os.environ.get("STELLAR_ML_AGES_TAP_URL",
                                                            "http://127.0.0.1:8080/tap"))
    parser.add_argument("--table", default="smatest.survey")
    parser.add_argument("--key", default="obs_key")
    parser.add_argument("--page-rows", type=int, default=50_000)
    parser.add_argument("--no-naive", action="store_true", help="skip the one-query path")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        catalog, catalog_peak = run_child("catalog", args, scratch / "catalog")
        rows.append(("catalog (paged)", catalog, catalog_peak))
        if not args.no_naive:
            (scratch / "naive").mkdir()
            naive, naive_peak = run_child("naive", args, scratch / "naive")
            rows.append(("one query + add_mass_age", naive, naive_peak))
        half = max(catalog["pages"] // 2, 1)
        run_child("catalog", args, scratch / "resumed", kill_at=half)
        killed_at = _pages_done(scratch / "resumed")
        rows_before = sum(page["rows"] for page in json.loads(
            (scratch / "resumed" / "_manifest.json").read_text())["pages"])
        resume, resume_peak = run_child("catalog", args, scratch / "resumed")
        identical = all(
            (scratch / "catalog" / part.name).read_bytes() == part.read_bytes()
            for part in sorted((scratch / "resumed").glob("part-*.parquet")))
        n_parts = len(list((scratch / "resumed").glob("part-*.parquet")))
        rows.append((f"resume after a kill at page {killed_at}/{catalog['pages']}", resume,
                     resume_peak))

    print(f"# {catalog['rows']:,} rows of {args.table} at {args.tap_url}, "
          f"{args.page_rows:,} rows a page, {psutil.cpu_count()} cores\n")
    print("| run | rows | seconds | rows/s | TAP | annotate | write | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result, peak in rows:
        seconds = result["seconds"]
        share = {k: 100 * result[k] / seconds for k in ("tap", "annotate", "write")}
        done = result["rows"] - (rows_before if result.get("resumed_pages") else 0)
        print(f"| {name} | {result['rows']:,} | {seconds:.1f} | {done / seconds:,.0f} | "
              f"{share['tap']:.0f}% | {share['annotate']:.0f}% | {share['write']:.0f}% | "
              f"{peak:,.0f} MiB |")
    if not args.no_naive:
        print(f"\npaged / one-query time: {catalog['seconds'] / naive['seconds']:.2f}; "
              f"peak memory ratio {catalog_peak / naive_peak:.2f}")
    print(f"resumed parts identical to the uninterrupted run: {identical} ({n_parts} parts)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
