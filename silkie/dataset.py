"""VLFeedback rows, read from a run folder or from the release files, checked and counted.

Both sources become the same stream of `default` rows ({"id", "prompt", "models", "completions",
"image", "source"}, completions as a list of dicts), read lazily so memory does not grow with the
dataset. Every row the stream flags or drops is written down in a BuildReport: nothing disappears
without a line in build_report.json.
"""

from __future__ import annotations

import json
import lzma
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from silkie import InputError, one_line
from silkie.ratings import MISSING, classify
from silkie.schema import ASPECTS, check_text_size, raw_rating

EXPECTED_COMPLETIONS = 4
# Pairing is quadratic in a row's completions (every pair of them), so a row with more than this is
# kept in `default`, flagged, and pairs nothing: at most 16*15/2 = 120 pairs a row. The release has 4.
# `--max-completions` / `max_completions` overrides.
MAX_COMPLETIONS = 16
# Bounds on one image, far above the release (its photos are well under 1 MB), so that a hostile entry
# costs a line in build_report.json, not the memory to hold it: a zip entry declaring more than
# MAX_IMAGE_BYTES (or a file that large) is refused unread, and no read ever takes more than that,
# whatever an entry declares. 16 MiB because `datasets` writes image records 100 to a batch and an Arrow
# binary column holds at most 2 GiB: 100 images at the cap still fit (a 1.6 GB image once crashed the
# `pairs` write). An entry over 1 MiB that expands more than MAX_ZIP_RATIO times is refused unread too
# (a deflate bomb; photos barely compress). `--max-image-bytes` / `max_image_bytes` overrides.
MAX_IMAGE_BYTES = 16 << 20
MAX_ZIP_RATIO, RATIO_FLOOR = 100, 1 << 20
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, OSError)


@dataclass
class BuildReport:
    counts: Counter = field(default_factory=Counter)
    flagged: list[dict] = field(default_factory=list)  # {"id", "reason"} for every row not taken as is

    def flag(self, row_id: str | None, reason: str, count_as: str) -> None:
        self.counts[count_as] += 1
        self.flagged.append({"id": row_id, "reason": reason})

    def to_json(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "flagged": self.flagged}


@dataclass
class SourceRow:
    row: dict  # the `default` row, image excluded
    image: Callable[[], bytes] | None  # reads the image bytes when the row is written


def completions_list(completions) -> list[dict]:
    """The release circulates completions row-wise (a list of dicts) and column-wise (a dict of lists)."""
    if isinstance(completions, dict):
        keys = ("annotations", "model", "response")
        return [dict(zip(keys, values)) for values in zip(*(completions.get(k) or [] for k in keys))]
    if isinstance(completions, list) and all(isinstance(c, dict) for c in completions):
        return completions
    raise InputError("`completions` must be a list of objects or an object of lists")


# ---- the release: vlfeedback_80k.jsonl + merged_images.zip (or its extracted folder) ----------

class ReleaseImages:
    """merged_images/{id}.jpg from the zip (read in place, never extracted) or an extracted folder.

    A zip that cannot be listed (cut short: its index, the central directory, is at the end) is an
    InputError naming the file; a bad entry (corrupt, cut short, encrypted, a bomb) fails only its row."""

    def __init__(self, source: str | Path, max_bytes: int = MAX_IMAGE_BYTES):
        self.source, self.max_bytes = Path(source), max_bytes
        self.zip = None
        self.entries: dict[str, zipfile.ZipInfo] = {}
        self.refused: list[str] = []  # entries that would land outside the folder if extracted
        if self.source.is_file():
            try:
                self.zip = zipfile.ZipFile(self.source)
            except (zipfile.BadZipFile, OSError) as error:
                raise InputError(f"{self.source}: not a readable zip ({one_line(error)}); a download cut short "
                                 "loses the index at the zip's end, so no image in it can be found: download it "
                                 "again, or pass the extracted folder to --images") from None
            for info in self.zip.infolist():
                path = PurePosixPath(info.filename)
                if path.is_absolute() or ".." in path.parts:
                    self.refused.append(info.filename)
                else:
                    self.entries.setdefault(path.stem, info)

    def reader(self, row_id: str) -> Callable[[], bytes] | None:
        if self.zip:
            info = self.entries.get(row_id)
            return (lambda: self._read_entry(info)) if info else None
        from silkie.io import resolve_inside

        for candidate in (f"merged_images/{row_id}.jpg", f"{row_id}.jpg"):
            path = self.source / candidate
            if path.is_file() or path.is_symlink():
                return lambda: read_bounded(resolve_inside(self.source, candidate), self.max_bytes)
        return None

    def _read_entry(self, info: zipfile.ZipInfo) -> bytes:
        from silkie.io import ImageError

        where, limit = f"zip entry {info.filename!r}", self.max_bytes
        if info.flag_bits & 0x1:
            raise ImageError(f"{where} is encrypted: refused")
        if info.file_size > limit:
            raise ImageError(f"{where} declares {info.file_size:,} bytes, over the limit of {limit:,} "
                             "(--max-image-bytes): not read")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_ZIP_RATIO * info.compress_size:
            raise ImageError(f"{where} would expand {info.compress_size:,} bytes to {info.file_size:,}, over "
                             f"{MAX_ZIP_RATIO} times (a zip bomb?): not read")
        try:
            with self.zip.open(info) as stream:
                data = stream.read(limit + 1)  # the declared size may lie: never hold more than the limit
        except EOFError:
            raise ImageError(f"{where} is cut short: the archive ends inside it") from None
        except _ZIP_ERRORS as error:
            raise ImageError(f"{where} cannot be read: {one_line(error) or type(error).__name__}") from None
        if len(data) > limit:
            raise ImageError(f"{where} expands past the limit of {limit:,} bytes (--max-image-bytes), "
                             f"though it declares {info.file_size:,}")
        return data


def read_bounded(path: Path, limit: int) -> bytes:
    """A file's bytes, or an ImageError when it holds more than `limit` (never read past limit + 1)."""
    from silkie.io import ImageError

    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"image file {path} is over the limit of {limit:,} bytes (--max-image-bytes): not read")
    return data


def release_rows(jsonl: str | Path, images: str | Path | None, report: BuildReport,
                 max_image_bytes: int = MAX_IMAGE_BYTES) -> Iterator[SourceRow]:
    """The release's rows. The zip is opened now, so one that cannot be listed stops the build
    before anything is written."""
    store = ReleaseImages(images, max_image_bytes) if images else None
    for name in store.refused if store else []:
        report.flag(None, f"zip entry {name!r} points outside the archive's folder: refused", "refused_zip_entries")
    return _release_rows(jsonl, store, report)


def _release_rows(jsonl, store: ReleaseImages | None, report: BuildReport) -> Iterator[SourceRow]:
    from silkie.io import read_jsonl

    for number, record in read_jsonl(jsonl):
        if not isinstance(record, dict):
            report.flag(None, str(record), "invalid_json_lines")
            continue
        try:
            completions = completions_list(record.get("completions"))
            if not isinstance(record.get("id"), str) or not isinstance(record.get("prompt"), str):
                raise InputError("`id` and `prompt` must be strings")
            check_text_size(record["prompt"], "`prompt`")
            for completion in completions:
                check_text_size(completion.get("response"), f"response of {completion.get('model')!r:.80}")
        except InputError as error:
            report.flag(record.get("id"), f"{jsonl}:{number}: {error}", "invalid_rows")
            continue
        row_id = record["id"]
        row = {"id": row_id, "prompt": record["prompt"],
               "models": record.get("models") or [c.get("model") for c in completions],
               "completions": completions, "source": record.get("source") or row_id.split("-")[0]}
        yield SourceRow(row, store.reader(row_id) if store else None)


# ---- a run folder: instructions + completions (+ shards) + annotations -------------------------

def run_rows(run_dir: str | Path, report: BuildReport, max_image_bytes: int = MAX_IMAGE_BYTES) -> Iterator[SourceRow]:
    """Join a run's three stage files into rows, one per annotated instruction.

    Completion texts are looked up in `io.CompletionIndex`, so memory stays flat however large the run.
    """
    from silkie.io import CompletionIndex, read_checked, resolve_inside

    run_dir = Path(run_dir)
    instructions = {}
    for _, record in read_checked(run_dir / "instructions.jsonl", "instruction", images=False):
        if isinstance(record, Exception):
            report.flag(None, str(record), "invalid_instructions")
        else:
            instructions[record["id"]] = (record["prompt"], record["image"], record["source"])
    with CompletionIndex(run_dir / "completions.jsonl",
                         on_bad=lambda error: report.flag(None, str(error), "invalid_completions")) as index:
        for _, record in read_checked(run_dir / "annotations.jsonl", "annotation"):
            if isinstance(record, Exception):
                report.flag(None, str(record), "invalid_annotations")
                continue
            row_id = record["id"]
            if record["error"] is not None:
                report.flag(row_id, f"judge error: {record['error']}", "judge_errors")
                continue
            if row_id not in instructions:
                report.flag(row_id, "annotation without an instruction", "orphan_annotations")
                continue
            completions = []
            for model, annotation in zip(record["models"], record["annotations"]):
                response = index.response(row_id, model)
                if response is None:
                    report.flag(row_id, f"no completion from {model}", "missing_completions")
                    continue
                completions.append({"annotations": annotation, "model": model, "response": response})
            prompt, image, source = instructions[row_id]
            row = {"id": row_id, "prompt": prompt, "models": [c["model"] for c in completions],
                   "completions": completions, "source": source}
            yield SourceRow(row, lambda image=image: read_bounded(resolve_inside(run_dir, image), max_image_bytes))


# ---- checks common to both ---------------------------------------------------------------------

def checked_rows(rows: Iterator[SourceRow], report: BuildReport, max_pixels: int | None = None,
                 max_completions: int = MAX_COMPLETIONS) -> Iterator[dict]:
    """Rows ready to write: duplicates dropped, odd completion counts and ratings flagged, the image
    read and checked (a bad one becomes null with its reason recorded; the row stays). A row with more
    than `max_completions` completions stays too, flagged: the pair planner leaves it out."""
    from silkie.io import MAX_PIXELS, check_image

    seen: set[str] = set()
    for source_row in rows:
        row = source_row.row
        if row["id"] in seen:
            report.flag(row["id"], "duplicate id: the first row with it is kept", "duplicate_ids")
            continue
        seen.add(row["id"])
        report.counts["rows"] += 1
        if len(row["completions"]) > max_completions:
            report.flag(row["id"], f"{len(row['completions'])} completions, over the cap of {max_completions} "
                        "(--max-completions): kept in default, left out of pairs", "rows_over_completion_cap")
        elif len(row["completions"]) != EXPECTED_COMPLETIONS:
            report.flag(row["id"], f"{len(row['completions'])} completions instead of {EXPECTED_COMPLETIONS}",
                        "rows_with_other_than_4_completions")
        for completion in row["completions"]:
            for aspect in ASPECTS:
                raw = raw_rating(completion, aspect)
                kind = classify(raw)  # the rating summary's rule, so the card's two counts agree
                if not isinstance(kind, int):
                    kind = "missing_ratings" if kind == MISSING else \
                        "out_of_range_ratings" if str(raw).strip().lstrip("-").isdigit() else "non_numeric_ratings"
                    report.counts[kind] += 1
                    report.flagged.append({"id": row["id"], "reason": f"{aspect} rating {raw!r} of "
                                           f"{completion.get('model')} is {kind[:-8].replace('_', ' ')}"})
        image = None
        if source_row.image is None:
            report.flag(row["id"], "image missing", "missing_images")
        else:
            try:
                data = source_row.image()
                check_image(data, max_pixels or MAX_PIXELS)
                image = {"bytes": data, "path": None}
            except (InputError, OSError, KeyError) as error:
                report.flag(row["id"], f"image unusable: {error}", "bad_images")
        yield {**row, "image": image}


def default_record(row: dict) -> dict:
    """A checked row in the exact shape of the `default` features."""
    from silkie.schema import completion_columns

    completions = [{"annotations": _full_annotations(c.get("annotations")), "model": str(c.get("model")),
                    "response": c.get("response") or ""} for c in row["completions"]]
    return {"id": row["id"], "prompt": row["prompt"], "models": [str(m) for m in row["models"]],
            "completions": completion_columns(completions), "image": row["image"], "source": row["source"]}


def _full_annotations(annotations) -> dict:
    """Every aspect present, ratings kept as the strings written (a missing one becomes "")."""
    annotations = annotations or {}
    out = {}
    for aspect in ASPECTS:
        entry = annotations.get(aspect) or {}
        rating = entry.get("Rating")
        out[aspect] = {"Rating": "" if rating is None else str(rating), "Rationale": str(entry.get("Rationale") or "")}
    return out


def write_build_report(report: BuildReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")
