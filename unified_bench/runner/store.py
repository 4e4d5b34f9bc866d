"""The run directory on disk, written so that a SIGKILL at any instant loses at most the
sample in flight.

Per finished sample: the image goes to a temp file, is fsynced and renamed to
``images/<id>.png``; only then is its line appended to ``captions.jsonl`` and fsynced (a
batch's lines go in one append and one fsync, after all of its images, and before the next
batch starts). A
sample counts as finished when its line *and* its image exist, so an image without a line
(killed between the two) is simply redone. A torn last line (killed mid-append) is cut off
when the run is resumed. Reading keeps the last line per sample, so a redone sample never
yields a duplicate row.

Each line records the SHA-256 of the image and of the caption it commits. A resumed run
verifies its finished samples against them (:meth:`RunStore.verify`) and retracts the
lines of any whose image is missing, truncated or altered (or whose caption was edited),
so those samples are regenerated (:meth:`RunStore.retract`). Lines written before the
hashes were recorded are checked by decoding their image instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from unified_bench.core.errors import ConfigError, ResultsValidationError
from unified_bench.core.images import file_sha256
from unified_bench.results.io import atomic_write_text
from unified_bench.results.record import RunInfo

CAPTIONS_FILE = "captions.jsonl"
ERRORS_FILE = "errors.jsonl"
RUN_FILE = "run.json"
IMAGES_DIR = "images"
REFS_DIR = "refs"
DONE_FILE = "shard.done"
#: the stage of a later cycle's error for a sample that failed in the cycle before
PREVIOUS_STAGE = "previous"
#: cycle k > 1 of a run lives in ``<run>/cycles/<k>/`` (the same layout); cycle 1 is the run's root
CYCLES_DIR = "cycles"


def cycle_dir(root: str | Path, cycle: int) -> Path:
    """The directory of ``cycle`` (1-based) of the run in ``root``."""
    if cycle < 1:
        raise ValueError(f"cycle must be >= 1, got {cycle}")
    return Path(root) if cycle == 1 else Path(root) / CYCLES_DIR / str(cycle)


@dataclass(frozen=True)
class CaptionRecord:
    """One line of ``captions.jsonl``: a finished sample."""

    sample_id: str
    caption: str
    seed: int
    image: str  # relative to the run directory
    reference: str  # relative to the run directory when inside it, else absolute
    reference_sha256: str | None = None
    meta: dict[str, Any] | None = None
    #: SHA-256 of the image file and of the caption's UTF-8 text as written (None: a line
    #: written before they were recorded)
    image_sha256: str | None = None
    caption_sha256: str | None = None
    #: the text trip's starting text of this cycle (the dataset's prompt in cycle 1, the
    #: previous cycle's caption after); absent on the image trip
    prompt: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionRecord:
        return cls(
            sample_id=str(data["sample_id"]),
            caption=str(data["caption"]),
            seed=int(data["seed"]),
            image=str(data["image"]),
            reference=str(data["reference"]),
            reference_sha256=data.get("reference_sha256"),
            meta=data.get("meta"),
            image_sha256=data.get("image_sha256"),
            caption_sha256=data.get("caption_sha256"),
            prompt=data.get("prompt"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for optional in ("meta", "image_sha256", "caption_sha256", "prompt"):
            if out[optional] is None:
                del out[optional]
        return out


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Unverified:
    """A finished sample whose files no longer match what was written, and why."""

    sample_id: str
    reason: str


@dataclass(frozen=True)
class ErrorRecord:
    """One line of ``errors.jsonl``: a sample that failed at one stage."""

    sample_id: str
    stage: str  # "reference", "prompt", "caption", "generate", "write", "previous" (a later cycle)
    message: str
    seed: int | None = None
    reference_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorRecord:
        return cls(
            str(data["sample_id"]),
            str(data["stage"]),
            str(data["message"]),
            data.get("seed"),
            data.get("reference_sha256"),
        )


@dataclass
class RunState:
    """What a run directory already holds."""

    finished: dict[str, CaptionRecord] = field(default_factory=dict)
    errors: dict[str, ErrorRecord] = field(default_factory=dict)  # last error per unfinished sample
    #: samples whose line is there but whose image is not (deleted after the run)
    missing_images: list[str] = field(default_factory=list)


def read_jsonl(path: Path, *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Complete lines of a JSONL file; with ``repair`` a torn last line is cut off the file."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except json.JSONDecodeError:
            continue  # only a torn write can produce this; the sample is redone


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()  # reads the whole file: chunk CRCs, truncation
        return True
    except Exception:  # any decoder error means the file is not an image
        return False


class RunStore:
    """Append-only writer and reader of one run (or shard) directory."""

    def __init__(self, root: str | Path, *, durable: bool = True, tree: str | Path | None = None) -> None:
        self.root = Path(root)
        self.durable = durable
        #: the run's root when this store holds one of its later cycles: paths inside the run
        #: are recorded relative to this directory even outside it (``../../images/<id>.png``)
        self.tree = Path(tree) if tree is not None else None
        self._captions_fd: int | None = None
        self._root_resolved: Path | None = None
        self._errors_fd: int | None = None

    # --- paths ---
    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def refs_dir(self) -> Path:
        return self.root / REFS_DIR

    def image_path(self, sample_id: str) -> Path:
        return self.images_dir / f"{sample_id}.png"

    def resolve(self, relative_or_absolute: str) -> Path:
        path = Path(relative_or_absolute)
        return path if path.is_absolute() else self.root / path

    def relative(self, path: Path) -> str:
        """Relative to the run directory when inside it, or inside the run it is a cycle of
        (so the folder can move)."""
        resolved = Path(path).resolve()
        if self._root_resolved is None:
            self._root_resolved = self.root.resolve()
        try:
            return str(resolved.relative_to(self._root_resolved))
        except ValueError:
            pass
        if self.tree is not None and resolved.is_relative_to(self.tree.resolve()):
            return os.path.relpath(resolved, self._root_resolved)
        return str(resolved)

    # --- state ---
    def has_previous_run(self) -> bool:
        return (self.root / RUN_FILE).exists() or (self.root / CAPTIONS_FILE).exists()

    def read_state(self, *, repair: bool = False) -> RunState:
        state = RunState()
        lines: dict[str, CaptionRecord] = {}  # the last line per sample
        for data in read_jsonl(self.root / CAPTIONS_FILE, repair=repair):
            try:
                record = CaptionRecord.from_dict(data)
            except (KeyError, TypeError, ValueError):
                continue
            lines[record.sample_id] = record
        for sid, record in lines.items():
            if self.resolve(record.image).is_file():
                state.finished[sid] = record
            else:
                state.missing_images.append(sid)
        for data in read_jsonl(self.root / ERRORS_FILE, repair=repair):
            try:
                error = ErrorRecord.from_dict(data)
            except (KeyError, TypeError, ValueError):
                continue
            if error.sample_id not in state.finished:
                state.errors[error.sample_id] = error
        return state

    def read_run_info(self) -> RunInfo | None:
        """The run's ``run.json`` (any record version), typed; None when there is none yet."""
        path = self.root / RUN_FILE
        if not path.exists():
            return None
        try:
            return RunInfo.from_dict(json.loads(path.read_text(encoding="utf-8")), where=str(path))
        except (OSError, json.JSONDecodeError, ResultsValidationError) as err:
            raise ConfigError(f"{path}: unreadable run file ({err}); remove it or use another --out") from err

    def write_run_info(self, info: RunInfo) -> None:
        atomic_write_text(self.root / RUN_FILE, json.dumps(info.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")

    # --- writing ---
    def open(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.images_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a run killed mid-write
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._captions_fd = os.open(self.root / CAPTIONS_FILE, flags, 0o644)
        self._errors_fd = os.open(self.root / ERRORS_FILE, flags, 0o644)

    def close(self) -> None:
        for fd in (self._captions_fd, self._errors_fd):
            if fd is not None:
                os.close(fd)
        self._captions_fd = self._errors_fd = None

    def __enter__(self) -> RunStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- verifying ---
    def verify(self, state: RunState) -> list[Unverified]:
        """The finished samples of ``state`` whose files do not match their line: image
        missing, empty, or not the bytes hashed; caption edited; a reference kept in
        ``refs/`` altered. A line without hashes (an older run) is checked by decoding its
        image, since nothing else is known about it."""
        problems = [Unverified(sid, "image missing") for sid in state.missing_images]
        for sid, record in state.finished.items():
            reason = self._check(record)
            if reason is not None:
                problems.append(Unverified(sid, reason))
        return problems

    def _check(self, record: CaptionRecord) -> str | None:
        image = self.resolve(record.image)
        try:
            size = image.stat().st_size
        except OSError:
            return "image missing"
        if size == 0:
            return "image truncated to 0 bytes"
        if record.caption_sha256 is not None and text_sha256(record.caption) != record.caption_sha256:
            return "caption altered"
        if record.image_sha256 is not None:
            if file_sha256(image) != record.image_sha256:
                return "image altered or truncated"
        elif not _decodes(image):
            return "image does not decode"
        reference = Path(record.reference)
        if record.reference_sha256 and record.reference and not reference.is_absolute():
            path = self.resolve(record.reference)  # kept in refs/ by this store
            if not path.is_file() or file_sha256(path) != record.reference_sha256:
                if record.reference.startswith(".."):  # a later cycle's input: the previous cycle's output
                    return f"its input {record.reference} (the previous cycle's output) missing or altered"
                return "reference in refs/ missing or altered"
        return None

    def retract(self, sample_ids: Sequence[str]) -> None:
        """Forget these samples' finished lines (one atomic rewrite of ``captions.jsonl``) and
        remove their images, so that a resumed run regenerates them. Call under the run's lock."""
        drop = set(sample_ids)
        if not drop:
            return
        path = self.root / CAPTIONS_FILE
        keep = [row for row in read_jsonl(path) if str(row.get("sample_id")) not in drop]
        self.rewrite_jsonl(CAPTIONS_FILE, keep)
        for sid in drop:
            self.image_path(sid).unlink(missing_ok=True)

    # --- writing ---
    def write_image(self, path: Path, image: Image.Image) -> str:
        """PNG via temp file + fsync + rename: the final name only ever holds a whole image.
        Returns the SHA-256 of the bytes written."""
        buffer = BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
        self._write_atomic(path, lambda handle: handle.write(data))
        return hashlib.sha256(data).hexdigest()

    def write_bytes(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomic(path, lambda handle: handle.write(data))

    def _write_atomic(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        """``write`` into a temp file beside ``path`` (fsynced when durable), then rename it
        over ``path``; on any failure the temp file is removed and ``path`` is untouched."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def finish(self, record: CaptionRecord, image: Image.Image) -> None:
        """Image first, then its line: the line is the commit record of the sample."""
        self.finish_many([(record, image)])

    def finish_many(
        self, items: Sequence[tuple[CaptionRecord, Image.Image]], executor: Executor | None = None
    ) -> list[tuple[CaptionRecord, BaseException]]:
        """Commit a batch: every image written (in parallel when an executor is given: PNG
        encoding and fsync release the GIL), then the lines of the images that made it, in
        order, in one append and one fsync (group commit); each line carries the SHA-256 of
        its image and caption. Returns the write failures."""
        def write(item: tuple[CaptionRecord, Image.Image]) -> str | BaseException:
            try:
                return self.write_image(self.resolve(item[0].image), item[1])
            except (OSError, ValueError) as err:
                return err

        results = list(executor.map(write, items)) if executor and len(items) > 1 else [write(i) for i in items]
        done = [
            replace(record, image_sha256=digest, caption_sha256=text_sha256(record.caption)).to_dict()
            for (record, _), digest in zip(items, results)
            if isinstance(digest, str)
        ]
        if done:
            self._append_many(self._captions_fd, done)
        return [(record, err) for (record, _), err in zip(items, results) if isinstance(err, BaseException)]

    def fail(self, error: ErrorRecord) -> None:
        self._append_many(self._errors_fd, [{k: v for k, v in asdict(error).items() if v is not None}])

    def _append_many(self, fd: int | None, rows: Sequence[dict[str, Any]]) -> None:
        if fd is None:
            raise RuntimeError("RunStore is not open")
        data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode("utf-8")
        written = os.write(fd, data)  # one write on an O_APPEND fd: never interleaved
        if written != len(data):  # pragma: no cover - only on a full disk
            raise OSError(f"short write to {self.root} ({written}/{len(data)} bytes); is the disk full?")
        if self.durable:
            os.fsync(fd)

    def rewrite_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Replace a JSONL file atomically (merge)."""
        text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
        atomic_write_text(self.root / name, text)
