"""Annotate table files larger than memory, a block of rows at a time.

`annotate_file` reads FITS binary tables, Parquet and CSV files in blocks of
rows, annotates each block with `~stellar_ml_ages.add_mass_age` and appends it
to the output, so memory is bounded by the block size whatever the file size.
Every block goes through astropy's own reader and writer for its format, so
units, masks, column metadata and the provenance keywords come out exactly as
the in-memory path (read, `~stellar_ml_ages.add_mass_age`, write) gives them;
the tests compare the two row for row.

Formats
-------
FITS
    The first table HDU, memory-mapped; blocks are row slices of it. Output is
    the same primary HDU plus binary table as ``Table.write``, with the table
    header written once and the row count set when the last block is in.
Parquet
    Row groups are read in batches of the block size (pyarrow); the output is
    written row group by row group.
CSV
    Read with astropy's fast reader in chunks. Column types are inferred from
    the first block; a later block whose column cannot take that type (say,
    text in a numeric column) stops the run with `~stellar_ml_ages.StreamingError`, since the
    in-memory reader would have read the whole column differently.
"""

import contextlib
import dataclasses
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .annotate import _annotate_call
from .config import conf
from .diagnostics import RunSummary
from .exceptions import StreamingError
from .reading import read_table_for_call
from .registry import get_model, select_model

__all__ = ["STREAMABLE_FORMATS", "StreamSummary", "annotate_file", "output_mode"]

# astropy's fast CSV reader splits files by bytes; blocks are at least this big.
_CSV_MIN_CHUNK_BYTES = 4 << 20

#: astropy format names `annotate_file` reads and writes in blocks.
STREAMABLE_FORMATS = ("fits", "parquet", "ascii.csv")


@dataclass(frozen=True)
class StreamSummary:
    """What `annotate_file` did.

    Attributes
    ----------
    n_rows : int
        Rows read and written.
    n_in_domain : int
        Rows with a prediction inside the model's domain (no masking flag bit).
    n_blocks : int
        Blocks processed.
    model : str
        Name of the model used.
    reasons : dict
        Rows without prediction per `~stellar_ml_ages.MassAgeFlag` bit name.
    """

    n_rows: int
    n_in_domain: int
    n_blocks: int
    model: str
    reasons: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)


# ----------------------------------------------------------------- readers
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"PK\x03\x04": "zip"}


def _compression(path):
    """The compression of a file by its first bytes (not its name), or None."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _streamable_compression(path, what):
    """The file's compression, None or "gzip"; the others are refused by name."""
    kind = _compression(path)
    if kind not in (None, "gzip"):
        raise StreamingError(f"{str(path)!r} is {kind}-compressed; {what} streams plain or "
                             "gzip files only: decompress it, or annotate it in memory "
                             "(--in-memory)")
    return kind


def _decompressed_copy(path):
    """A plain temporary copy of a gzip file, decompressed in blocks (CRC checked).

    astropy's FITS reader can exhaust memory on a gzip file whose header is
    damaged (found by fuzzing); the plain reader cannot, and it seeks freely.
    """
    import gzip
    import shutil
    import zlib

    handle, copy = tempfile.mkstemp(prefix="stellar_ml_ages-", suffix=".fits")
    try:
        with os.fdopen(handle, "wb") as target, gzip.open(path, "rb") as source:
            shutil.copyfileobj(source, target, 1 << 20)
    except (OSError, EOFError, zlib.error) as error:
        Path(copy).unlink(missing_ok=True)
        raise StreamingError(f"{str(path)!r} is a damaged gzip file: {error}") from None
    except BaseException:
        Path(copy).unlink(missing_ok=True)
        raise
    return copy


def _fits_blocks(path, rows):
    # Test the bytes, not the name: a gzip file called x.fits used to be read as
    # table data (compressed bytes as values).
    if _streamable_compression(path, "FITS") != "gzip":
        yield from _plain_fits_blocks(path, rows, path)
        return
    copy = _decompressed_copy(path)
    try:
        yield from _plain_fits_blocks(copy, rows, path)
    finally:
        Path(copy).unlink(missing_ok=True)


class _BlockWarnings:
    """Warnings of a per-block step (``prepare``), given once per file.

    A message counting rows ("3 of 500 rows have no usable S/N") is summed over the
    blocks ("7 of 2000 rows ..."); any other message is given once.

    Examples
    --------
    >>> import warnings
    >>> from stellar_ml_ages.streaming import _BlockWarnings
    >>> collected = _BlockWarnings()
    >>> for n in (3, 4):
    ...     with warnings.catch_warnings(record=True) as caught:
    ...         warnings.simplefilter("always")
    ...         warnings.warn(f"{n} of 500 rows have no usable S/N", UserWarning)
    ...     collected.add(caught)
    >>> collected.messages()
    [(<class 'UserWarning'>, '7 of 1000 rows have no usable S/N')]
    """

    _COUNT = re.compile(r"\b(\d+) of (\d+) rows\b")

    def __init__(self):
        # (category, text before the count, text after it) -> [count, total] or None
        self._seen = {}

    def add(self, caught):
        for warning in caught:
            text = str(warning.message)
            match = self._COUNT.search(text)
            if match is None:
                self._seen.setdefault((warning.category, text, None), None)
                continue
            key = (warning.category, text[:match.start()], text[match.end():])
            counts = self._seen.get(key) or [0, 0]
            self._seen[key] = [counts[0] + int(match.group(1)),
                               counts[1] + int(match.group(2))]

    def messages(self):
        return [(category, before if counts is None
                 else f"{before}{counts[0]} of {counts[1]} rows{after}")
                for (category, before, after), counts in self._seen.items()]

    def warn(self, stacklevel=2):
        for category, text in self.messages():
            warnings.warn(text, category, stacklevel=stacklevel + 1)


def _plain_fits_blocks(path, rows, shown):
    """Blocks of an uncompressed FITS file; messages name ``shown`` (the user's file)."""
    content_size = os.path.getsize(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        with fits.open(path) as hdul:
            index = next((i for i, hdu in enumerate(hdul)
                          if isinstance(hdu, fits.BinTableHDU | fits.TableHDU)), None)
            if index is None:
                raise StreamingError(f"{str(shown)!r} has no table HDU")
            header = hdul[index].header.copy()
            data_start = hdul.fileinfo(index)["datLoc"]
    for warning in caught:
        if "truncated" in str(warning.message):
            raise StreamingError(f"{str(shown)!r} is truncated: {warning.message}")
        warnings.warn(warning.message, warning.category, stacklevel=2)
    if header.get("PCOUNT", 0):
        raise StreamingError(f"{str(shown)!r} has variable-length array columns; "
                             "annotate it in memory (--in-memory)")
    n_rows, row_bytes = header["NAXIS2"], header["NAXIS1"]
    if not (isinstance(n_rows, int) and isinstance(row_bytes, int)
            and n_rows >= 0 and row_bytes > 0):
        raise StreamingError(f"{str(shown)!r}: a table HDU with NAXIS1={row_bytes!r}, "
                             f"NAXIS2={n_rows!r} cannot be read")
    if content_size < data_start + n_rows * row_bytes:
        raise StreamingError(f"{str(shown)!r} is truncated: its header gives {n_rows} rows of "
                             f"{row_bytes} bytes, more than the file holds")
    yield n_rows
    primary = fits.PrimaryHDU().header.tostring().encode("ascii")
    with open(path, "rb") as handle:
        for start in range(0, n_rows, rows) if n_rows else [0]:
            # A small FITS file in memory: this block's rows, byte for byte, under
            # the table's header. astropy's reader then applies units, TNULL and
            # NaN masks and string types exactly as it does for the whole file.
            count = min(rows, n_rows - start)
            handle.seek(data_start + start * row_bytes)
            raw = handle.read(count * row_bytes)
            if len(raw) < count * row_bytes:
                # A header that promises more rows than the file holds (a truncated
                # download, or a damaged NAXIS2): refuse instead of inventing rows.
                raise StreamingError(
                    f"{str(shown)!r} is truncated: its header gives {n_rows} rows, but the "
                    f"data end within row {start + len(raw) // max(row_bytes, 1)}")
            header["NAXIS2"] = count
            block = primary + header.tostring().encode("ascii") + raw + b"\0" * (-len(raw) % 2880)
            yield Table.read(io.BytesIO(block), format="fits", hdu=1)


def _parquet_blocks(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    yield source.metadata.num_rows
    schema = source.schema_arrow
    # Dictionary-encoded columns (pandas categoricals, Spark strings) are decoded to
    # their values: astropy has no dictionary type, and per-batch dictionaries differ.
    plain = pa.schema([field.with_type(field.type.value_type)
                       if pa.types.is_dictionary(field.type) else field for field in schema],
                      metadata=schema.metadata)
    batches = source.iter_batches(batch_size=rows)
    first = True
    for batch in batches:
        first = False
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_batches([batch], schema=schema).cast(plain), buffer)
        buffer.seek(0)
        with warnings.catch_warnings():
            # Files not written by astropy (pandas, Spark) lack its string-length
            # metadata; astropy then sizes strings from the data, as it should.
            warnings.filterwarnings("ignore", message="No table::len::",
                                    category=AstropyUserWarning)
            block = Table.read(buffer, format="parquet")
        yield block
    if first:
        yield Table.read(path, format="parquet")


def _csv_blocks(path, rows):
    if _compression(path) is not None:
        raise StreamingError(f"{str(path)!r} is compressed; CSV streams from plain files only: "
                             "decompress it, or annotate it in memory (--in-memory)")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        sample = handle.read(1 << 16)
    if sample.startswith(b"\xef\xbb\xbf"):
        # astropy's chunked reader would make the BOM part of the first column's name.
        raise StreamingError(f"{str(path)!r} starts with a UTF-8 byte-order mark; remove it "
                             "(e.g. save as 'UTF-8' rather than 'UTF-8 with BOM'), or annotate "
                             "it in memory (--in-memory)")
    bytes_per_row = max(len(sample) / max(sample.count(b"\n"), 1), 1.0)
    # The fast reader splits by bytes, at least a few megabytes at a time.
    chunk_bytes = int(max(rows * bytes_per_row, _CSV_MIN_CHUNK_BYTES))
    yield None
    if size <= chunk_bytes:
        yield Table.read(path, format="ascii.csv", guess=False)
        return
    from astropy.io import ascii

    # Through astropy.io.ascii directly: Table.read would not return a generator.
    reader = ascii.read(str(path), format="csv", guess=False,
                        fast_reader={"chunk_size": chunk_bytes, "chunk_generator": True})
    first_dtypes = None
    for block in reader:
        # The chunked reader's bookkeeping, not the file's metadata.
        block.meta.pop("__ascii_fast_reader_header_chars__", None)
        if first_dtypes is None:
            first_dtypes = {name: block[name].dtype for name in block.colnames}
        else:
            _match_csv_types(block, first_dtypes, path)
        yield block


def _match_csv_types(block, dtypes, path):
    """Cast a CSV block's columns to the first block's types, or refuse."""
    for name, dtype in dtypes.items():
        column = block[name]
        if column.dtype == dtype:
            continue
        numeric = dtype.kind in "if" and column.dtype.kind in "iub"
        text = dtype.kind == "U" and column.dtype.kind == "U"
        if (numeric and np.can_cast(column.dtype, dtype)) or text:
            block[name] = column.astype(dtype) if not text else column.astype(
                f"U{max(dtype.itemsize, column.dtype.itemsize) // 4}")
            continue
        raise StreamingError(
            f"column {name!r} of {str(path)!r} reads as {dtype} in the first block but "
            f"{column.dtype} later; a whole-file read would type it differently. Annotate "
            "it in memory (--in-memory) or convert it to FITS or Parquet first."
        )


_READERS = {"fits": _fits_blocks, "parquet": _parquet_blocks, "ascii.csv": _csv_blocks}


# ----------------------------------------------------------------- writers
class _FitsWriter:
    """Primary HDU, one binary-table header, then each block's row bytes."""

    def __init__(self, handle):
        self.handle = handle
        self.header = None
        self.n_rows = 0
        self.naxis2_position = None

    def write(self, table):
        # astropy's own FITS writer, so units, TNULLs and serialised column metadata
        # are exactly those of Table.write.
        if self.header is None:
            self.widths = {name: table[name].dtype for name in table.colnames
                           if table[name].dtype.kind in "US" and table[name].ndim == 1}
        else:
            # Shorter text than the first block's is padded to its width (FITS fixes a
            # column's width in the header); longer text is refused below, by name.
            for name, dtype in self.widths.items():
                column = table[name]
                if column.dtype.kind == dtype.kind and column.dtype.itemsize < dtype.itemsize:
                    table[name] = column.astype(dtype)
        buffer = io.BytesIO()
        table.write(buffer, format="fits")
        written_bytes = buffer.getvalue()
        with fits.open(io.BytesIO(written_bytes)) as written:
            header = written[1].header
            info = written.fileinfo(1)
        if header.get("PCOUNT", 0):
            raise StreamingError("variable-length array columns cannot be streamed to FITS")
        data = written_bytes[info["datLoc"]:info["datLoc"] + header["NAXIS1"] * len(table)]
        if self.header is None:
            self.header = header
            head = written_bytes[:info["datLoc"]]
            # Each card is 80 bytes from a multiple of 80; NAXIS2 is rewritten at the end.
            cards = head[info["hdrLoc"]:]
            self.naxis2_position = info["hdrLoc"] + next(
                i for i in range(0, len(cards), 80) if cards[i:i + 8] == b"NAXIS2  ")
            self.handle.write(head)
        elif not _same_header(header, self.header):
            raise StreamingError(_header_difference(header, self.header))
        self.handle.write(data)
        self.n_rows += len(table)

    def close(self):
        data_bytes = self.header["NAXIS1"] * self.n_rows
        self.handle.write(b"\0" * (-data_bytes % 2880))
        self.handle.seek(self.naxis2_position)
        card = fits.Card("NAXIS2", self.n_rows, self.header.comments["NAXIS2"])
        self.handle.write(card.image.encode("ascii"))


_REMEDY = ("annotate the file in memory (--in-memory), or with --block-rows large enough "
           "for the first block to hold the longest value and a null of every column")


def _header_difference(header, reference):
    """Which column a later block's FITS header changes, and what to do about it."""
    # Column cards first: NAXIS1 (the row width) changes with them but names nothing.
    cards = sorted(header.cards, key=lambda card: not card.keyword.startswith(("TFORM",
                                                                              "TNULL")))
    for card in cards:
        keyword = card.keyword
        if keyword == "NAXIS2" or reference.get(keyword) == card.value:
            continue
        number = "".join(ch for ch in keyword if ch.isdigit())
        column = header.get(f"TTYPE{number}", keyword) if number else keyword
        before = reference.get(keyword, "absent")
        if keyword.startswith("TFORM"):
            why = ("longer text later in the file" if "A" in str(card.value) + str(before)
                   else "a type that changes, e.g. integers with nulls read as floats")
            what = f"has format {card.value} in a later block but {before} in the first ({why})"
        elif keyword.startswith("TNULL"):
            what = "has null values only in a later block (the first block set no TNULL)"
        else:
            what = f"changes {keyword} from {before!r} to {card.value!r} in a later block"
        return f"column {column!r} {what}: FITS fixes a column's format in its header; {_REMEDY}"
    missing = [c.keyword for c in reference.cards if c.keyword not in header]
    return (f"a later block's FITS header lacks {', '.join(missing[:3])} of the first; "
            f"{_REMEDY}")


def _same_header(header, reference):
    skip = {"NAXIS2"}
    ours = [(c.keyword, c.value) for c in header.cards if c.keyword not in skip]
    theirs = [(c.keyword, c.value) for c in reference.cards if c.keyword not in skip]
    return ours == theirs


class _ParquetWriter:
    """Each block through astropy's Parquet writer (units and meta in the schema), appended.

    astropy writes a ``<name>.mask`` column only when a column has masked
    values, which varies from block to block. The file's schema is therefore
    fixed from the first block with every masked column's mask present, and
    each block gets all-False masks where it has none.
    """

    def __init__(self, handle):
        self.handle = handle
        self.writer = None
        self.schema = None
        self.scratch = tempfile.TemporaryDirectory(prefix="stellar_ml_ages-")
        #: Width of each text column in the first block, which astropy records in the
        #: schema and would truncate longer later values to on reading.
        self.string_lengths = {}

    def _arrow(self, table):
        import pyarrow.parquet as pq

        # astropy writes Parquet only to paths.
        block_path = Path(self.scratch.name) / "block.parquet"
        table.write(block_path, format="parquet", overwrite=True)
        return pq.read_table(block_path)

    def write(self, table):
        import pyarrow as pa
        import pyarrow.parquet as pq

        for column in table.itercols():
            if column.dtype.kind in "US" and column.ndim == 1:
                length = column.dtype.itemsize // (4 if column.dtype.kind == "U" else 1)
                name = column.info.name
                first = self.string_lengths.setdefault(name, length)
                if length > first:
                    # astropy reads a Parquet text column at the width in the file's
                    # schema, which is the first block's: longer values would be cut.
                    raise StreamingError(
                        f"column {name!r} has text of {length} characters in a later block "
                        f"but at most {first} in the first; {_REMEDY}")
        if self.schema is None:
            template = table[:1].copy()
            for column in template.itercols():
                if getattr(column, "mask", None) is not None and column.dtype.names is None:
                    column.mask[:] = True
            self.schema = self._arrow(template).schema
            self.writer = pq.ParquetWriter(self.handle, self.schema)
        arrow = self._arrow(table)
        columns = []
        for field in self.schema:
            if field.name in arrow.column_names:
                columns.append(arrow[field.name].cast(field.type))
            elif field.name.endswith(".mask"):
                columns.append(pa.array(np.zeros(len(table), dtype=bool)))
            else:
                raise StreamingError(f"column {field.name!r} is missing from a later block")
        extra = set(arrow.column_names) - set(self.schema.names)
        if extra:
            raise StreamingError(
                f"column(s) {', '.join(sorted(extra))} appear in a later block but not in the "
                "first (a column with no masked values in the first block has some later); "
                "annotate this file in memory (--in-memory)")
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self):
        self.writer.close()
        self.scratch.cleanup()

    def discard(self):
        """After a failure: release the scratch directory (the output is deleted)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.scratch.cleanup()


class _CsvWriter:
    def __init__(self, handle):
        self.handle = handle
        self.header_lines = None

    def write(self, table):
        text = io.StringIO()
        table.write(text, format="ascii.csv")
        lines = text.getvalue().splitlines(keepends=True)
        if self.header_lines is None:
            header = io.StringIO()
            table[:0].write(header, format="ascii.csv")
            self.header_lines = len(header.getvalue().splitlines())
            self.handle.write("".join(lines).encode("utf-8"))
        else:
            self.handle.write("".join(lines[self.header_lines:]).encode("utf-8"))

    def close(self):
        pass


_WRITERS = {"fits": _FitsWriter, "parquet": _ParquetWriter, "ascii.csv": _CsvWriter}


# ----------------------------------------------------------------- driver
def _gzip_in_place(path):
    """Replace a file by its gzip compression (for OUT names ending in ``.gz``)."""
    import gzip
    import shutil

    packed = f"{path}.gz"
    try:
        with open(path, "rb") as source, gzip.open(packed, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        os.replace(packed, path)
    finally:
        Path(packed).unlink(missing_ok=True)


def output_mode(path):
    """Permissions for a file written to ``path`` through a private temporary file.

    The mode of the file being replaced, else what ``open`` would give under the
    process umask (temporary files are created 0600).
    """
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def annotate_file(input_path, output_path, *, input_format, output_format, model=None,
                  block_rows=None, overwrite=False, overwrite_columns=False, progress=False,
                  prepare=None, **options):
    """Annotate a FITS, Parquet or CSV file block by block, with bounded memory.

    Parameters
    ----------
    input_path, output_path : path-like
        Files to read and to write. The output is written to a temporary file
        beside it and renamed into place at the end.
    input_format, output_format : str
        One of ``STREAMABLE_FORMATS`` each (``"fits"``, ``"parquet"``,
        ``"ascii.csv"``).
    model : str, path-like, `~stellar_ml_ages.model.MassAgeModel` or None
        As for `~stellar_ml_ages.add_mass_age`; `None` selects the model from
        the first block's columns.
    block_rows : int, optional
        Rows per block (default ``conf.chunk_size``). Memory use grows with it,
        not with the file.
    overwrite : bool
        Replace ``output_path`` if it exists.
    overwrite_columns : bool
        Replace existing output columns in the input (``overwrite`` of
        `~stellar_ml_ages.add_mass_age`).
    progress : bool
        Show a progress bar over rows.
    prepare : callable, optional
        Applied to each block before it is annotated (row by row only: e.g.
        `stellar_ml_ages.slam.slam_uncertainties`); its new columns are written too.
    **options
        Passed to `~stellar_ml_ages.add_mass_age` (``mapping``,
        ``allow_extrapolation``, ``propagate_errors``, ...).

    Returns
    -------
    StreamSummary

    Raises
    ------
    StreamingError
        A format that cannot be streamed, or a block that does not fit the
        first one.
    FileExistsError
        ``output_path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.streaming import annotate_file
    >>> demo_table().write("stars.fits")                     # doctest: +SKIP
    >>> annotate_file("stars.fits", "stars_mass.fits", input_format="fits",
    ...               output_format="fits", block_rows=50)    # doctest: +SKIP
    StreamSummary(n_rows=200, n_in_domain=..., n_blocks=4, model='giants-apogee-dr17')
    """
    for fmt in (input_format, output_format):
        if fmt not in STREAMABLE_FORMATS:
            raise StreamingError(
                f"format {fmt!r} cannot be streamed; streamable: {', '.join(STREAMABLE_FORMATS)}")
    output_path = Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"output file {str(output_path)!r} exists")
    rows = int(block_rows or conf.chunk_size)
    if rows < 1:
        raise ValueError(f"block_rows must be positive, got {rows}")
    compress = output_path.suffix.lower() == ".gz"
    if compress and output_format == "parquet":
        raise StreamingError(f"{str(output_path)!r}: Parquet compresses internally; write "
                             "'.parquet', not '.parquet.gz'")
    blocks = _READERS[input_format](input_path, rows)
    total = next(blocks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="row", desc=Path(input_path).name)
    directory = output_path.parent if str(output_path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".part",
                                         dir=directory)
    n_blocks = 0
    run = writer = reading = None
    prepared_warnings = _BlockWarnings()
    try:
        with os.fdopen(handle, "w+b") as stream:
            writer = _WRITERS[output_format](stream)
            for block in blocks:
                if prepare is not None:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        block = prepare(block)
                    prepared_warnings.add(caught)
                if n_blocks == 0:
                    # What the file is (label source, columns, state, flags) is read
                    # once, from its first block: the others have its columns and meta.
                    reading = read_table_for_call(block, options)
                    model = select_model(reading) if model is None else get_model(model)
                    run = RunSummary(model)
                elif difference := reading.column_difference(block):
                    raise StreamingError(
                        f"block {n_blocks + 1} of {str(input_path)!r} has other columns than "
                        f"the first ({difference}): the file is read as its first block "
                        "says; a prepare step must treat every block alike")
                # One summary for the whole file: each warning is given once, at the end.
                annotated = _annotate_call(block, model, copy=False,
                                           overwrite=overwrite_columns, summary=run,
                                           check_source=n_blocks == 0, row_offset=run.n_rows,
                                           reading=reading, **options).table
                writer.write(annotated)
                n_blocks += 1
                if bar is not None:
                    bar.update(len(block))
            writer.close()
        if compress:
            _gzip_in_place(temporary)
        os.chmod(temporary, output_mode(output_path))
        os.replace(temporary, output_path)
    except BaseException:
        if writer is not None and hasattr(writer, "discard"):
            writer.discard()
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        blocks.close()
    prepared_warnings.warn(stacklevel=2)
    if run is None:  # no block at all: nothing was annotated
        return StreamSummary(0, 0, 0, get_model(model).name if model is not None else "")
    run.warn(stacklevel=2)
    return StreamSummary(run.n_rows, run.n_in_domain, n_blocks, model.name, dict(run.reasons))
