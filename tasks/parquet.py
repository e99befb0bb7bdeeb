"""
Parquet shards with an image column and a text column, as published on the Hugging Face hub
(FineVision, olmOCR-style page sets, a user's own export). Column names are configurable.

Cells this reader understands:
- image: raw bytes; Hugging Face's Image struct {"bytes": ..., "path": ...} (bytes preferred, else
  the path, resolved against the shard's directory); a path string; or a one-element list of any of
  these (FineVision's "images" column). A row with several images is skipped and counted — a sample
  here has one image.
- text: a string (the answer); or FineVision's turn list [{"user": ..., "assistant": ...}, ...],
  where the first turn gives the answer and, unless a prompt is set, the prompt (later turns are
  questions about the same image, not transcripts, so they are not used).

Shards are streamed in record batches, so a multi-GB shard never sits in memory whole. pyarrow is
imported on first use: the other readers work without it.
"""

import glob
import os

from nanoocr.modes import DEFAULT_PROMPT
from tasks.common import DataError, make_sample, new_skips, resolve_image, skip


def list_files(path):
    """A .parquet file, a directory (searched recursively) or a glob -> sorted list of shards."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    elif os.path.isfile(path):
        files = [path]
    else:
        files = sorted(glob.glob(path, recursive=True))
    if not files:
        raise DataError(f"{path}: no parquet files found (give a .parquet file, a directory or a glob)")
    return files


def _image_cell(value, base_dir):
    """-> (bytes or path, None) or (None, (skip reason, detail))."""
    if isinstance(value, list):
        if len(value) != 1:
            return None, ("multi_image" if value else "missing_image", f"{len(value)} images in the row")
        value = value[0]
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], None
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and value:
        return resolve_image(value, base_dir), None
    return None, ("missing_image", "no image in the row")


def _text_cell(value):
    """-> (answer, prompt from the data or None)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        turn = value[0]
        return turn.get("assistant"), turn.get("user")
    return value, None


def read(path, image_col="image", text_col="text", prompt_col=None, id_col=None, prompt=None,
         strict=False, skips=None, source=None, batch_size=64):
    """Yield samples from parquet shard(s). The prompt is `prompt` if given, else the row's
    prompt_col, else the text cell's own user turn, else DEFAULT_PROMPT."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from None
    skips = new_skips() if skips is None else skips
    for file in list_files(path):
        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
        wanted = [c for c in (image_col, text_col, prompt_col, id_col) if c]
        missing = [c for c in wanted if c not in names]
        if missing:
            # a config error, not a bad record: fatal even when not strict
            raise DataError(f"{file}: no column(s) {missing}; it has {names}. "
                            f"Set image_col / text_col / prompt_col / id_col to match.")
        base_dir = os.path.dirname(os.path.abspath(file))
        stem = os.path.splitext(os.path.basename(file))[0]
        src = source or stem
        row = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
            for rec in batch.to_pylist():
                where = f"{file} row {row}"
                sample_id = rec[id_col] if id_col else f"{stem}:{row}"
                row += 1
                image, why = _image_cell(rec[image_col], base_dir)
                if image is None:
                    skip(skips, strict, where, *why)
                    continue
                answer, data_prompt = _text_cell(rec[text_col])
                p = prompt if prompt is not None else (
                    rec[prompt_col] if prompt_col else (data_prompt if data_prompt is not None else DEFAULT_PROMPT))
                sample = make_sample(sample_id, image, p, answer, src, where=where, skips=skips, strict=strict)
                if sample is not None:
                    yield sample
