"""The ``stellar-ml-ages`` command.

Subcommands
-----------
``annotate IN OUT``
    Read any table astropy reads (FITS, VOTable, ECSV, CSV, Parquet, ...), add
    mass and age, write OUT. OUT is written to a temporary file beside it and
    renamed into place, so an interrupted run never leaves a half-written file.
    FITS, Parquet and CSV go block by block (`stellar_ml_ages.streaming`), so
    files larger than memory work; ``--in-memory`` reads them whole instead.
    ``--slam-errors`` for LAMOST SLAM labels: each label's error becomes at least
    SLAM's scatter at the star's S/N, propagated into the intervals.
``demo OUT``
    Annotate the bundled synthetic demo table.

``annotate`` and ``demo`` take ``--samp [CLIENT]`` to send the result to TOPCAT,
Aladin or any SAMP client afterwards.
``listen``
    Register with the SAMP hub; annotate every table sent to ``stellar_ml_ages``
    (e.g. from TOPCAT) and send the result back to the sender.
``list-models``
    Print the packaged and user models with their features, targets and metrics.
``train SPEC [--data DIR | --table FILE | --from-vo] [--out DIR]``
    Train a model and write its artifact; without ``--out``, into the user model
    directory, from which ``--model NAME`` and ``list-models`` find it.
``catalog OUT [--preset NAME | --service URL --table T --key K] [--tiebreak C] [--where ADQL]``
    Build a survey catalog: the TAP table in pages of ``--page-rows`` (keyset
    paging on K, or on the pair K, C where many rows share a K), each annotated
    and written as a Parquet part, with a manifest; rerunning resumes after the
    last part (`stellar_ml_ages.catalog`).
``reproduce --data DIR --out DIR [--quick]``
    Rerun the paper's analysis (both protocols, cross-validated calibration, six
    methods, external checks) and write a report with figures.

Exit codes (also in the docs' command-line page):

===  ==================================================================
0    success (warnings, e.g. most rows without prediction, still exit 0)
1    the package refused the input: missing or ambiguous column, bad unit,
     existing output column, unknown model, bad model card
2    bad command line (argparse usage error)
3    a file could not be read or written
4    a VO service failed: TAP server, SAMP hub or client
130  interrupted (Ctrl-C); no output file was written
===  ==================================================================

Messages name command-line options (``--map teff=COLUMN``), not the Python
keywords the same errors carry when raised in Python (``mapping={...}``).
"""

import argparse
import os
import re
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
from astropy.io.fits.verify import VerifyError
from astropy.table import Table

from . import __version__
from .diagnostics import count_reasons
from .exceptions import StellarMLAgesError, VOError
from .flags import NO_PREDICTION, OUT_OF_DOMAIN

__all__ = ["cli_message", "main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_IO, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

_FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".vot": "votable",
            ".xml": "votable", ".votable": "votable", ".ecsv": "ascii.ecsv", ".csv": "ascii.csv",
            ".parquet": "parquet", ".pq": "parquet", ".hdf5": "hdf5", ".h5": "hdf5"}


class _IOProblem(Exception):
    pass


#: Python phrasing in the package's messages -> the same advice for the command line.
_CLI_SYNTAX = (
    (re.compile(r"mapping=\{'(\w+)': '<column>'\}"), r"--map \1=COLUMN"),
    (re.compile(r"mapping=\{'<feature>': '<column>'\}"), "--map FEATURE=COLUMN"),
    (re.compile(r"mapping=\{'<feature>_err': '<column>'\}"), "--map FEATURE_err=COLUMN"),
    (re.compile(r"state_column ('[^']*') is not in the table"),
     r"--state-column \1 is not in the table"),
    (re.compile(r"prefix='\.\.\.' or suffix='\.\.\.'"), "--prefix PREFIX or --suffix SUFFIX"),
    (re.compile(r"overwrite=True"), "--overwrite-columns"),
    (re.compile(r"survey_flags=False"), "--ignore-survey-flags"),
    (re.compile(r"allow_extrapolation=True"), "--allow-extrapolation"),
    (re.compile(r"propagate_errors=True"), "--propagate-errors"),
    (re.compile(r"state_column='<column>' \(or state_column=False\)"),
     "--state-column COLUMN (or --ignore-state)"),
    (re.compile(r"hub=LOCKFILE"), "--hub LOCKFILE"),
    (re.compile(r"model='([\w.-]+)'"), r"--model \1"),
    (re.compile(r"set table\.meta\['LABELSRC'\] = ('[^']*')"),
     r"set the table's LABELSRC keyword to \1"),
)


def cli_message(text):
    """A package message with its Python advice rewritten as command-line options.

    Examples
    --------
    >>> from stellar_ml_ages.cli import cli_message
    >>> cli_message("choose one with mapping={'teff': '<column>'}")
    'choose one with --map teff=COLUMN'
    >>> cli_message("mapping={'<feature>_err': '<column>'} names one")
    '--map FEATURE_err=COLUMN names one'
    """
    for pattern, replacement in _CLI_SYNTAX:
        text = pattern.sub(replacement, text)
    return text


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"stellar-ml-ages: warning: {cli_message(str(message))}", file=sys.stderr)


def _format_of(path, explicit):
    if explicit:
        return explicit
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise _IOProblem(
        f"cannot tell the format of {str(path)!r} from its extension; known: "
        f"{', '.join(sorted(_FORMATS))}. Use --format/--output-format."
    )


def read_table(path, format=None):
    """Read a table, turning every I/O failure into one clear message."""
    path = Path(path)
    if not path.is_file():
        raise _IOProblem(f"input file {str(path)!r} does not exist")
    fmt = _format_of(path, format)
    try:
        if fmt == "votable":
            from .votable import read_votable

            return read_votable(path)
        return Table.read(path, format=fmt)
    except Exception as error:  # astropy raises many types for unreadable files
        raise _IOProblem(f"could not read {str(path)!r} as {fmt}: {error}") from error


def write_table(table, path, format=None, overwrite=False):
    """Write atomically: a temporary file in the target directory, then a rename."""
    path = Path(path)
    fmt = _format_of(path, format)
    if path.exists() and not overwrite:
        raise _IOProblem(f"output file {str(path)!r} exists; pass --overwrite to replace it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise _IOProblem(f"output directory {str(directory)!r} does not exist")
    _check_compression(path, fmt)
    # Written plain and compressed afterwards: astropy's text writers ignore ".gz" (a
    # "x.csv.gz" was plain text), so every format goes through the same gzip step.
    compress = path.suffix.lower() == ".gz"
    suffix = ".part" + (".fits" if fmt == "fits" else "")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                             dir=directory)
    except OSError as error:
        raise _IOProblem(f"cannot write in {str(directory)!r}: {error.strerror}") from error
    os.close(handle)
    try:
        if fmt == "votable":
            from .votable import write_votable

            write_votable(table, temporary)  # keeps provenance as INFO, portable log units
        else:
            kwargs = {"serialize_meta": True} if fmt == "hdf5" else {}
            table.write(temporary, format=fmt, overwrite=True, **kwargs)
        from .streaming import _gzip_in_place, output_mode

        if compress:
            _gzip_in_place(temporary)
        os.chmod(temporary, output_mode(path))
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError | ValueError | TypeError):
            raise _IOProblem(f"could not write {str(path)!r} as {fmt}: {error}") from error
        raise


def _mapping(items):
    mapping = {}
    for item in items or ():
        feature, sep, column = item.partition("=")
        if not sep or not feature or not column:
            raise argparse.ArgumentTypeError(f"--map takes FEATURE=COLUMN, got {item!r}")
        mapping[feature] = column
    return mapping


def _quantiles(text):
    """``--quantiles``: comma-separated probabilities, or ``all``."""
    if text.strip() == "all":
        return "all"
    try:
        levels = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--quantiles takes probabilities such as 0.025,0.975, or 'all'; got {text!r}"
        ) from None
    if not levels or not all(0 < level < 1 for level in levels):
        raise argparse.ArgumentTypeError(
            f"--quantiles takes probabilities between 0 and 1 (0.025 for the 2.5th "
            f"percentile), or 'all'; got {text!r}")
    return levels


def _options(args):
    """add_mass_age keywords from the annotate options."""
    return {"mapping": _mapping(args.map), "overwrite": args.overwrite_columns,
            "allow_extrapolation": args.allow_extrapolation,
            "propagate_errors": bool(args.propagate_errors),
            "state_column": _state_column(args),
            "survey_flags": not args.ignore_survey_flags, "prefix": args.prefix,
            "suffix": args.suffix, "quantiles": args.quantiles,
            "intervals": args.intervals}


def _reasons_text(reasons):
    if not reasons:
        return ""
    return "; no prediction: " + ", ".join(f"{n} {name}" for name, n in reasons.items())


def _state_column(args):
    if getattr(args, "ignore_state", False):
        return False
    return getattr(args, "state_column", None)


def _check_compression(path, fmt):
    """Refuse a ``.gz`` name for a format that compresses itself or cannot be gzipped."""
    if Path(path).suffix.lower() == ".gz" and fmt in ("parquet", "hdf5"):
        plain = Path(path).name[:-3]
        raise _IOProblem(f"{str(path)!r}: {'Parquet' if fmt == 'parquet' else 'HDF5'} files "
                         f"are not gzipped (the format compresses internally); write "
                         f"{plain!r}, or a FITS, VOTable, ECSV or CSV name ending in .gz")


def _check_writer(path, fmt):
    """Refuse, before any work, an output format whose writer is not installed, or a
    ``.gz`` name the format cannot have."""
    _check_compression(path, _format_of(path, fmt))
    needs = {"hdf5": "h5py", "parquet": "pyarrow"}.get(_format_of(path, fmt))
    if needs:
        try:
            __import__(needs)
        except ImportError:
            raise _IOProblem(f"writing {str(path)!r} needs {needs}: pip install {needs}, "
                             "or choose another output format") from None


def _slam_options(args, options):
    """``--slam-errors``: SLAM's noise in the label errors, propagated unless told not to."""
    if not getattr(args, "slam_errors", False):
        if getattr(args, "slam_snr", None) is not None:
            raise argparse.ArgumentTypeError("--slam-snr goes with --slam-errors")
        return None
    from .slam import _with_slam_errors

    if args.propagate_errors is None:
        options["propagate_errors"] = True
    if args.model is None:  # the model trained for SLAM's noise
        args.model = "giants-slam"
    snr = args.slam_snr
    if snr is not None:
        try:
            snr = float(snr)
        except ValueError:
            pass  # a column name
    user_mapping = dict(options.get("mapping") or {})
    # The annotation reads the combined errors from new columns, named per label; the
    # user's own error columns are written out unchanged.
    annotate_mapping = options["mapping"] = dict(user_mapping)

    def prepare(table):
        table, names = _with_slam_errors(table, snr=snr, mapping=user_mapping,
                                        keep_own_columns=True)
        annotate_mapping.update({f"{label}_err": name for label, name in names.items()})
        return table

    return prepare


def _annotate(args, table):
    from .annotate import add_mass_age
    from .config import conf

    _check_writer(args.output, args.output_format)
    if args.samp:
        from .samp import _check_can_send

        # Before the annotation and OUT: a missing hub or client fails in a moment,
        # and leaves no OUT for the rerun to trip over.
        _check_can_send(to=None if args.samp == "all" else args.samp, hub=args.hub)
    options = _options(args)
    prepare = _slam_options(args, options)
    if prepare is not None:
        table = prepare(table)
    progress = conf.show_progress and not args.no_progress and sys.stderr.isatty()
    annotated = add_mass_age(table, model=args.model, progress=progress, **options)
    write_table(annotated, args.output, args.output_format, overwrite=args.overwrite)
    flags = np.asarray(annotated[f"{args.prefix}mass_age_flag{args.suffix}"])
    inside = (flags & int(OUT_OF_DOMAIN | NO_PREDICTION)) == 0
    withheld = np.ma.getmaskarray(annotated[f"{args.prefix}mass{args.suffix}"])
    print(f"{args.output}: {len(annotated)} rows, {int(inside.sum())} inside the domain "
          f"of {annotated.meta['MLMODEL']}{_reasons_text(count_reasons(flags[withheld]))}")
    if args.samp:
        from .exceptions import SAMPError
        from .samp import send

        try:
            delivery = send(annotated, to=None if args.samp == "all" else args.samp,
                            hub=args.hub, name=Path(args.output).name)
        except SAMPError as error:
            # The hub or client went away after the check: OUT is complete, say so.
            error.args = (f"{error.args[0]}\n{args.output} was written all the same; send "
                          "it from TOPCAT (File > Load Table), or rerun with --overwrite",)
            raise
        for client_id, reply in delivery.replies.items():
            # A client that loaded the table without answering (Aladin's first table):
            # say what was seen, not a status it never sent.
            status = reply["samp.status"] + (" (the table arrived; the client sent no reply)"
                                             if client_id in delivery.unanswered else "")
            print(f"sent to {delivery.clients[client_id]} ({client_id}) over SAMP: "
                  f"{status} in {delivery.seconds:.2f} s")


def _file_errors():
    """What astropy, pyarrow, PyYAML and gzip raise for a damaged file (found by fuzzing).

    The package itself raises no bare AssertionError; astropy's FITS cards do, for
    names and values a damaged header makes up.
    """
    from astropy.table.meta import YamlParseError

    errors = [OSError, ValueError, TypeError, KeyError, IndexError, EOFError, zlib.error,
              VerifyError, YamlParseError, AssertionError, UnicodeError]
    try:
        import pyarrow

        errors.append(pyarrow.lib.ArrowException)
    except ImportError:
        pass
    return tuple(errors)


def _streams(args):
    """Whether ``annotate`` can go block by block (bounded memory, same output)."""
    from .streaming import STREAMABLE_FORMATS

    if args.in_memory or args.samp:
        return False
    formats = (_format_of(args.input, args.format), _format_of(args.output, args.output_format))
    return all(fmt in STREAMABLE_FORMATS for fmt in formats)


def _cmd_annotate(args):
    _check_writer(args.output, args.output_format)
    if not _streams(args):
        _annotate(args, read_table(args.input, args.format))
        return
    from .config import conf
    from .streaming import annotate_file

    if not Path(args.input).is_file():
        raise _IOProblem(f"input file {str(args.input)!r} does not exist")
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise _IOProblem(f"output file {str(output)!r} exists; pass --overwrite to replace it")
    if not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise _IOProblem(f"output directory {str(output.parent)!r} does not exist")
    progress = conf.show_progress and not args.no_progress and sys.stderr.isatty()
    try:
        options = _options(args)
        prepare = _slam_options(args, options)
        summary = annotate_file(
            args.input, output, input_format=_format_of(args.input, args.format),
            output_format=_format_of(output, args.output_format), model=args.model,
            block_rows=args.block_rows, overwrite=args.overwrite,
            overwrite_columns=options.pop("overwrite"), progress=progress, prepare=prepare,
            **options,
        )
    except StellarMLAgesError:
        raise
    except _file_errors() as error:
        raise _IOProblem(f"could not read {str(args.input)!r} or write {str(output)!r} "
                         f"block by block: {type(error).__name__}: {error}") from error
    print(f"{args.output}: {summary.n_rows} rows, {summary.n_in_domain} inside the domain "
          f"of {summary.model} ({summary.n_blocks} blocks){_reasons_text(summary.reasons)}")


def _cmd_demo(args):
    from .demo import demo_table

    _annotate(args, demo_table())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _cmd_listen(args):
    import signal

    from .samp import AnnotationListener

    options = {"allow_extrapolation": args.allow_extrapolation, "prefix": args.prefix,
               "suffix": args.suffix, "overwrite": args.overwrite_columns}
    # kill, a service manager or a closed terminal stops with SIGTERM: leave the hub as
    # Ctrl-C does, unregistered, instead of dying with a client the hub still lists.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with AnnotationListener(model=args.model, hub=args.hub, **options) as listener:
            print(f"listening on the SAMP hub as {listener.client_id} (stellar_ml_ages); in "
                  "TOPCAT use Interop > Send table to > stellar_ml_ages. Ctrl-C stops.",
                  flush=True)
            listener.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"annotated {sum(r['status'] == 'samp.ok' for r in listener.handled)} table(s)")


def _cmd_list_models(args):
    from .registry import list_models

    models = list_models()
    for row in models:
        print(f"{row['name']} (aliases: {row['aliases']})")
        for key in ("targets", "features", "training_set", "label_source", "n_train",
                    "median_rel_error", "coverage_68", "location"):
            print(f"  {key:17s} {row[key]}")


def _cmd_train(args):
    from .training import get_spec, load_training_table
    from .training.evaluation import train_and_validate

    try:
        spec = get_spec(args.spec)
    except KeyError as error:
        raise _IOProblem(str(error.args[0])) from None
    out = args.out
    if out is None:
        from .registry import user_model_dir

        out = user_model_dir()
        if out is None:
            raise _IOProblem("where should the model go? pass --out DIR, or set "
                             "STELLAR_ML_AGES_MODELS (or conf.user_model_dir) to the directory "
                             "from which trained models are used by name")
    if args.from_vo:
        from .vo import build_lamost_training_table

        table = build_lamost_training_table(red_clump="red-clump" in spec.name)
    elif args.table:
        table = read_table(args.table)
    elif not spec.label_source.startswith("APOGEE"):
        raise _IOProblem(
            f"{spec.name} is trained on {spec.label_source} labels, which the shared APOGEE "
            "catalogs do not hold: pass --from-vo to build its LAMOST x APOKASC-2 table over "
            "TAP (VizieR), or --table FILE with a table you built (KIC, EVSTATE, MASS, AGE "
            f"and {', '.join(spec.features)})")
    else:
        table = load_training_table(spec, args.data)
    result = train_and_validate(spec, table, n_folds=args.folds, progress=print)
    card_path = result.model.save(out)
    for target in result.model.card["targets"]:
        metrics, coverage = target["metrics"], target["coverage"]
        print(f"{spec.name} {target['name']}: median relative error "
              f"{100 * metrics['median_rel_error']:.1f}%, dispersion {metrics['dispersion']:.3f} "
              f"{target['unit']}, [p16, p84] coverage {100 * coverage['p16_p84']:.1f}%, "
              f"[p2.5, p97.5] coverage {100 * coverage['p2.5_p97.5']:.1f}% "
              f"(n={metrics['n']} {'out-of-fold' if spec.test_fraction == 0 else 'test'} "
              "stars in hull)")
        pooled = target["coverage_cv"]
        print(f"{spec.name} {target['name']}: {pooled['n_folds']}-fold out of fold: [p16, p84] "
              f"{100 * pooled['p16_p84']:.1f}%, [p2.5, p97.5] {100 * pooled['p2.5_p97.5']:.1f}% "
              f"(n={pooled['n']})")
    print(f"wrote {card_path} and {result.model.card['arrays']['file']} "
          f"({result.model.card['arrays']['bytes'] / 1e6:.2f} MB)")


def _cmd_catalog(args):
    from .catalog import CatalogQuery, build_catalog
    from .config import conf

    where = args.where
    overrides = {}
    if args.preset:
        if args.key or args.columns:
            raise argparse.ArgumentTypeError(
                "--preset fixes --key and --columns (its survey's); --service and --table "
                "may point it at another copy of the survey, e.g. a local TAP server")
        from .catalog import PRESETS
        from .vo.catalogs import CATALOGS

        catalog = CATALOGS[PRESETS[args.preset]["catalog"]]
        # The preset's service and table are configuration items (stellar_ml_ages.vo.conf,
        # also settable in the [vo] section of stellar_ml_ages.cfg): set for this run.
        if args.service:
            overrides[catalog.service_item] = args.service
        if args.table:
            overrides[catalog.table_item] = args.table
        query = CatalogQuery("", "", "", where=where, tiebreak=args.tiebreak) \
            if where or args.tiebreak else None
    else:
        missing = [name for name in ("service", "table", "key") if not getattr(args, name)]
        if missing:
            raise argparse.ArgumentTypeError(
                "catalog needs --preset NAME, or --service, --table and --key (missing: "
                + ", ".join(f"--{name}" for name in missing) + ")")
        columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns else "*"
        query = CatalogQuery(args.service, args.table, args.key, columns, where,
                             tiebreak=args.tiebreak)
    progress = conf.show_progress and not args.no_progress and sys.stderr.isatty()
    # Only what differs from add_mass_age's defaults, so that the manifest reads the
    # same whether the catalog was built here or from Python.
    defaults = {"mapping": {}, "allow_extrapolation": False, "propagate_errors": False,
                "survey_flags": True, "prefix": "", "suffix": "", "state_column": None,
                "overwrite": False, "quantiles": (), "intervals": None}
    options = {key: value for key, value in _options(args).items()
               if key in defaults and value != defaults[key]}
    if args.propagate_errors is not None:  # said either way: over a preset's default
        options["propagate_errors"] = args.propagate_errors
    import contextlib

    from .vo import conf as vo_conf

    with contextlib.ExitStack() as stack:
        for item, value in overrides.items():
            stack.enter_context(vo_conf.set_temp(item, value))
        summary = build_catalog(args.output, query, preset=args.preset, model=args.model,
                                page_rows=args.page_rows, restart=args.restart,
                                dask=args.dask, progress=progress, **options)
    print(summary.text())


def _cmd_reproduce(args):
    from .training.report import reproduce

    reproduce(args.data, args.out, quick=args.quick, progress=print)


def _annotate_options(parser, files=True, slam=False):
    """Options of add_mass_age; with ``files``, also those of one output file and SAMP;
    ``slam``: the command has ``--slam-errors``."""
    parser.add_argument("--model", default=None,
                        help="model name or alias (giants, red-clump) or card path; default: "
                             + ("the first packaged model whose columns exist"
                                + (" (giants-slam with --slam-errors)" if slam else "")
                                if files else "giants (giants-slam for the lamost-slam preset)"))
    parser.add_argument("--map", action="append", metavar="FEATURE=COLUMN",
                        help="read FEATURE from COLUMN (repeatable), e.g. --map c_fe=A3_C_Fe")
    if files:
        parser.add_argument("--output-format", default=None, help="astropy format of OUT")
        parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--overwrite-columns", action="store_true",
                        help="replace existing output columns (mass, age, ...) in the input")
    parser.add_argument("--allow-extrapolation", action="store_true",
                        help="also predict outside the training hull (flagged EXTRAPOLATED)")
    parser.add_argument("--propagate-errors", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="add the spread from the inputs' *_ERR columns (Monte Carlo); "
                             "off by default, on for the lamost-slam catalog preset")
    parser.add_argument("--state-column", default=None, metavar="COLUMN",
                        help="column with each star's evolutionary state (RGB/RC or 1/2), "
                             "used to pick the interval calibration; default: EVSTATE-like "
                             "columns are found by name")
    parser.add_argument("--ignore-state", action="store_true",
                        help="ignore any state column: pooled interval calibration")
    parser.add_argument("--ignore-survey-flags", action="store_true",
                        help="use values the survey's own flags mark bad (ASPCAPFLAG, "
                             "X_FE_FLAG, GALAH flag_*, ...); default: no prediction for them")
    parser.add_argument("--prefix", default="", metavar="PREFIX",
                        help="prefix of the output column names, e.g. ml_ (keeps a table's "
                             "own mass/age columns)")
    parser.add_argument("--suffix", default="", metavar="SUFFIX",
                        help="suffix of the output column names, e.g. _ml")
    parser.add_argument("--quantiles", type=_quantiles, default=(), metavar="P1,P2,...|all",
                        help="further predictive quantiles to write, as probabilities (e.g. "
                             "0.025,0.975 adds mass_p2_5, mass_p97_5, age_p2_5, age_p97_5), or "
                             "'all' for the whole calibration grid (15 levels: enough to "
                             "rebuild each star's distribution for population studies)")
    parser.add_argument("--intervals", choices=("robust", "posterior"), default=None,
                        help="what the quantile columns describe: robust (default; intervals "
                             "that hold by true value too, also at the ends of the range) or "
                             "posterior (the calibrated posterior under the training "
                             "population, as population stacking needs; the default with "
                             "--quantiles all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if files:
        parser.add_argument("--samp", nargs="?", const="all", default=None, metavar="CLIENT",
                            help="also send the result over SAMP to CLIENT (e.g. topcat), or "
                                 "to every client that accepts tables if CLIENT is omitted")
        _hub_option(parser)


def _hub_option(parser):
    parser.add_argument("--hub", default=None, metavar="LOCKFILE",
                        help="SAMP hub lockfile (default: $SAMP_HUB, then ~/.samp)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="stellar-ml-ages",
        description="Machine-learned stellar masses and ages for astropy tables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    annotate = commands.add_parser("annotate", help="add mass and age to a table file")
    annotate.add_argument("input", help="input table (FITS, VOTable, ECSV, CSV, Parquet, ...)")
    annotate.add_argument("output", help="output table; format from the extension")
    annotate.add_argument("--format", default=None, help="astropy format of the input")
    annotate.add_argument("--block-rows", type=int, default=None, metavar="N",
                          help="rows per block when streaming FITS/Parquet/CSV "
                               "(default: conf.chunk_size)")
    annotate.add_argument("--in-memory", action="store_true",
                          help="read the whole table at once even for FITS/Parquet/CSV")
    annotate.add_argument("--slam-errors", action="store_true",
                          help="LAMOST SLAM labels (Zhang+2020): raise each label's error to "
                               "SLAM's at the star's S/N (snrg column), propagate the errors "
                               "(unless --no-propagate-errors), model giants-slam (unless "
                               "--model)")
    annotate.add_argument("--slam-snr", default=None, metavar="COLUMN|VALUE",
                          help="with --slam-errors: the g-band S/N column, or one S/N for "
                               "every star (default: snrg, S/Ng, ... found by name)")
    _annotate_options(annotate, slam=True)
    annotate.set_defaults(run=_cmd_annotate, subparser=annotate)

    demo = commands.add_parser("demo", help="annotate the bundled synthetic demo table")
    demo.add_argument("output", help="output table; format from the extension")
    _annotate_options(demo)
    demo.set_defaults(run=_cmd_demo, subparser=demo)

    listen = commands.add_parser(
        "listen", help="annotate tables sent over SAMP (e.g. from TOPCAT) and send them back")
    listen.add_argument("--model", default=None, help="model name, alias or card path")
    listen.add_argument("--allow-extrapolation", action="store_true",
                        help="also predict outside the training hull (flagged EXTRAPOLATED)")
    listen.add_argument("--prefix", default=None, metavar="PREFIX",
                        help="prefix of the new columns (default: none, or ml_ when a sent "
                             "table has columns of their names, which are kept); a table "
                             "with columns of the prefixed names is refused")
    listen.add_argument("--suffix", default="", metavar="SUFFIX",
                        help="suffix of the new columns")
    listen.add_argument("--overwrite-columns", action="store_true",
                        help="replace a sent table's columns of the new columns' names "
                             "instead of keeping them")
    _hub_option(listen)
    listen.set_defaults(run=_cmd_listen, subparser=listen)

    listing = commands.add_parser("list-models", help="show the packaged models")
    listing.set_defaults(run=_cmd_list_models, subparser=listing)

    train = commands.add_parser("train", help="train a model from the catalogs")
    train.add_argument("spec", help="model spec name or alias, e.g. giants")
    train.add_argument("--data", default=None, help="directory of the training catalogs")
    train.add_argument("--table", default=None,
                       help="train on this catalog table instead (KIC, EVSTATE, MASS, AGE and "
                            "the spec's features), e.g. a LAMOST x APOKASC-2 match")
    train.add_argument("--from-vo", action="store_true",
                       help="build the LAMOST x APOKASC-2 table over TAP (VizieR) first")
    train.add_argument("--out", default=None,
                       help="directory for the model artifact (default: the user model "
                            "directory, $STELLAR_ML_AGES_MODELS or conf.user_model_dir, from "
                            "which models are used by name)")
    train.add_argument("--folds", type=int, default=4,
                       help="cross-validation folds for the card's coverage (default 4)")
    train.set_defaults(run=_cmd_train, subparser=train)

    catalog = commands.add_parser(
        "catalog", help="build a survey catalog: TAP pages -> annotate -> Parquet parts, "
                        "resumable")
    catalog.add_argument("output", help="directory for the Parquet parts and _manifest.json")
    from .catalog import PRESETS

    catalog.add_argument("--preset", default=None, choices=sorted(PRESETS),
                         help="a named survey: " + ", ".join(sorted(PRESETS)))
    catalog.add_argument("--service", default=None,
                         help="TAP base URL (with --preset: instead of the preset's, e.g. a "
                              "local copy of the survey)")
    catalog.add_argument("--table", default=None,
                         help="ADQL table name (with --preset: instead of the preset's)")
    catalog.add_argument("--key", default=None,
                         help="column that orders the rows (no nulls; need not be unique)")
    catalog.add_argument("--tiebreak", default=None, metavar="COLUMN",
                         help="second paging column, unique among rows sharing a --key "
                              "value (no nulls): for keys shared by more rows than a page")
    catalog.add_argument("--columns", default=None, help="comma-separated columns (default *)")
    catalog.add_argument("--where", default=None, help="ADQL condition (region, quality cut)")
    catalog.add_argument("--page-rows", type=int, default=100_000, metavar="N",
                         help="rows per query and per part (default 100000)")
    catalog.add_argument("--restart", action="store_true",
                         help="start over when OUTPUT holds a catalog built differently")
    catalog.add_argument("--dask", default=None, metavar="ADDRESS",
                         help="annotate pages on this Dask scheduler (tcp://host:8786)")
    _annotate_options(catalog, files=False)
    catalog.set_defaults(run=_cmd_catalog, subparser=catalog)

    again = commands.add_parser("reproduce", help="rerun the paper's analysis and write a report")
    again.add_argument("--data", default=None, help="directory of the training catalogs")
    again.add_argument("--out", default="report", help="report directory (default: report)")
    again.add_argument("--quick", action="store_true",
                       help="small forests and two folds: a smoke run of every step")
    again.set_defaults(run=_cmd_reproduce, subparser=again)
    return parser


def main(argv=None):
    """Entry point of ``stellar-ml-ages``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            args.run(args)
    except argparse.ArgumentTypeError as error:
        # The subcommand's usage, not the top-level one: the error is about its options.
        getattr(args, "subparser", parser).error(str(error))
    except _IOProblem as error:
        print(f"stellar-ml-ages: error: {cli_message(str(error))}", file=sys.stderr)
        return EXIT_IO
    except VOError as error:
        print(f"stellar-ml-ages: error: {cli_message(str(error))}", file=sys.stderr)
        return EXIT_SERVICE
    except StellarMLAgesError as error:
        print(f"stellar-ml-ages: error: {cli_message(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as error:
        # A file where a directory is expected, a missing directory, no permission:
        # the system's own words name the path, in one line rather than a traceback.
        print(f"stellar-ml-ages: error: {error}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        if args.command == "catalog":
            print("stellar-ml-ages: interrupted; the parts written so far are kept: run the "
                  "same command again to resume", file=sys.stderr)
        else:
            print("stellar-ml-ages: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
