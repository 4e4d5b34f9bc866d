"""Where a metric's weights come from: a local path or a Hugging Face hub id.

Every backbone metric resolves its checkpoint here first, so the rules live in one place:

- an existing local file or directory is used as is (its revision is the sha256 of its
  weight files, or the commit hash when the directory is a hub-cache snapshot);
- ``org/name`` is a hub repository: it is resolved to a snapshot directory in the hub cache
  with :func:`huggingface_hub.snapshot_download` (downloading only the files a vision tower
  needs), and the snapshot's commit hash is the revision;
- ``HF_HUB_OFFLINE=1`` (read when the metric is built, not at import) means cache only;
- expected failures become :class:`WeightsNotFoundError` or :class:`GatedCheckpointError`
  with one message that names the metric, the checkpoint and the fix.

``unified-bench weights fetch`` (:func:`fetch_weights`) pre-downloads through the same
resolver, so a cache filled on a machine with network works unchanged on an air-gapped one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from unified_bench.core.errors import ConfigError, GatedCheckpointError, WeightsNotFoundError

#: Files an HF-format vision checkpoint needs: configs and safetensors weights, top level only.
HF_FILES: tuple[str, ...] = ("config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json")
#: Fallback when a repository has no safetensors.
HF_BIN_FILES: tuple[str, ...] = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
#: OpenAI-CLIP-format checkpoints (``longclip-L.pt``) are single pickled files.
OPENAI_FILES: tuple[str, ...] = ("*.pt", "*.pth")

#: A text tower also needs its tokenizer (BPE vocab and merges, SentencePiece model or tokenizer.json).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)

#: Files beyond HF_FILES: OpenAI-format ``.pt`` checkpoints (LongCLIP) and text towers' tokenizers.
_EXTRA_FILES: dict[str, tuple[str, ...]] = {
    "longclip": OPENAI_FILES,
    "clip-text": TOKENIZER_FILES,
    "clip-t2i": TOKENIZER_FILES,
    "siglip-text": TOKENIZER_FILES,
    "longclip-text": OPENAI_FILES + TOKENIZER_FILES,
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_REPO_FILE = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+)/(?P<file>[A-Za-z0-9_.-]+\.(?:pt|pth))$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint found on disk. ``path`` is a directory, or a file for ``.pt``/``.pth``."""

    requested: str
    path: Path
    revision: str | None
    from_hub: bool

    @property
    def recorded(self) -> str:
        """What MetricInfo.checkpoint records: the hub id as asked, or the local path."""
        return self.requested if self.from_hub else str(self.path)


# --------------------------------------------------------------------------- environment


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read now rather than at import."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The hub cache, resolved from the environment now (same precedence as huggingface_hub)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


# --------------------------------------------------------------------------- messages


def fix_hint(metric: str, *, fetching: bool = False) -> str:
    if fetching:
        return (
            "check the network connection to huggingface.co (or set HF_ENDPOINT for a mirror) "
            "and the repository name, then rerun `unified-bench weights fetch`"
        )
    return (
        f"run `unified-bench weights fetch --metrics {metric}` where there is network access and copy "
        f"that Hugging Face cache here, or pass `--checkpoint {metric}=/path/to/local/checkpoint`"
    )


def _missing(metric: str, checkpoint: str, why: str, *, fetching: bool = False) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"metric {metric!r}: weights {checkpoint!r} {why}. Fix: {fix_hint(metric, fetching=fetching)}."
    )


def _gated(metric: str, checkpoint: str) -> GatedCheckpointError:
    match = _REPO_FILE.match(checkpoint)
    repo = match["repo"] if match else checkpoint
    return GatedCheckpointError(
        f"metric {metric!r}: checkpoint {checkpoint!r} is gated on the Hugging Face hub. "
        f"Fix: accept its licence at https://huggingface.co/{repo} while logged in, create a read token "
        f"and set HF_TOKEN=<token> (then `unified-bench weights fetch --metrics {metric}`), "
        f"or pass `--checkpoint {metric}=/path/to/local/checkpoint`."
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextmanager
def hub_errors(metric: str, checkpoint: str, *, fetching: bool = False, cache_dir: Path | None = None) -> Iterator[None]:
    """Turn the hub's expected failures (offline, gated, missing, HTTP) into our errors."""
    from huggingface_hub import errors as hub

    def missing(why: str) -> WeightsNotFoundError:
        return _missing(metric, checkpoint, why, fetching=fetching)

    http_error = getattr(hub, "HTTPError", hub.HfHubHTTPError)
    try:
        yield
    except hub.GatedRepoError as err:
        raise _gated(metric, checkpoint) from err
    except hub.RepositoryNotFoundError as err:
        raise missing(
            "were not found on the Hugging Face hub (check the name; a private repository also needs HF_TOKEN)"
        ) from err
    except hub.RevisionNotFoundError as err:
        raise missing(f"have no such revision on the hub ({_first_line(err)})") from err
    except hub.LocalEntryNotFoundError as err:
        why = (
            "are neither a local path nor in the Hugging Face cache, and HF_HUB_OFFLINE is set"
            if offline_mode()
            else "are neither a local path nor in the Hugging Face cache, and the hub cannot be reached"
        )
        raise missing(f"{why} (cache: {cache_dir or hub_cache_dir()})") from err
    except (hub.HfHubHTTPError, http_error) as err:
        raise missing(f"could not be downloaded ({_first_line(err)})") from err


@contextmanager
def load_errors(metric: str, checkpoint: str, path: Path) -> Iterator[None]:
    """Errors from ``from_pretrained`` on a resolved local directory: incomplete or wrong files."""
    try:
        with hub_errors(metric, checkpoint):
            yield
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"metric {metric!r}: checkpoint {checkpoint!r} at {path} cannot be loaded ({_first_line(err)}). "
            f"Fix: point --checkpoint {metric}=... at a complete checkpoint directory, or {fix_hint(metric)}."
        ) from err


# --------------------------------------------------------------------------- resolution


def hub_files(metric: str) -> tuple[str, ...]:
    """Top-level files to fetch from a hub repository for ``metric``."""
    return HF_FILES + _EXTRA_FILES.get(metric, ())


def looks_like_hub_id(text: str) -> bool:
    return bool(_REPO_ID.match(text) or _REPO_FILE.match(text))


def resolve_checkpoint(metric: str, checkpoint: str | None) -> ResolvedCheckpoint:
    """Find ``checkpoint`` on disk (downloading it when it is a hub id and we are online)."""
    if not checkpoint:
        raise ConfigError(f"metric {metric!r} needs a checkpoint; pass --checkpoint {metric}=PATH_OR_HUB_ID")
    local = Path(checkpoint).expanduser()
    if local.exists():
        return ResolvedCheckpoint(checkpoint, local.resolve(), local_revision(local), from_hub=False)
    explicit_path = checkpoint.startswith(("/", "./", "../", "~", ".\\")) or "\\" in checkpoint
    if explicit_path or not looks_like_hub_id(checkpoint):
        raise _missing(metric, checkpoint, "do not exist: no such file or directory, and it is not a hub id (org/name)")
    return resolve_hub(metric, checkpoint)


def resolve_hub(metric: str, checkpoint: str, *, cache_dir: Path | None = None, force_online: bool = False) -> ResolvedCheckpoint:
    """Hub id (``org/name``, or ``org/name/file.pt``) -> snapshot directory or file in the cache."""
    match = _REPO_FILE.match(checkpoint)
    repo_id, filename = (match["repo"], match["file"]) if match else (checkpoint, None)
    patterns = (filename,) if filename else hub_files(metric)
    with hub_errors(metric, checkpoint, fetching=force_online, cache_dir=cache_dir):
        snapshot = _snapshot(repo_id, patterns, cache_dir, force_online)
        if filename is None and not has_weights(snapshot):
            # Older repositories ship only pytorch_model.bin.
            snapshot = _snapshot(repo_id, HF_BIN_FILES, cache_dir, force_online)
    path = snapshot / filename if filename else snapshot
    if not path.exists() or (filename is None and not has_weights(snapshot)):
        raise _missing(metric, checkpoint, f"are incomplete in the local cache ({snapshot} has no weight file)")
    revision = snapshot.name if _COMMIT.match(snapshot.name) else local_revision(path)
    return ResolvedCheckpoint(checkpoint, path, revision, from_hub=True)


def _snapshot(repo_id: str, patterns: Sequence[str], cache_dir: Path | None, force_online: bool) -> Path:
    from huggingface_hub import errors as hub
    from huggingface_hub import snapshot_download

    incomplete = getattr(hub, "IncompleteSnapshotError", None)
    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=list(patterns),
                ignore_patterns=["*/*"],  # top level only: skip onnx/, openvino/ and the like
                cache_dir=str(cache_dir or hub_cache_dir()),
                local_files_only=offline_mode() and not force_online,
                endpoint=os.environ.get("HF_ENDPOINT") or None,  # a mirror; read now, like the others
            )
        )
    except Exception as err:
        # Offline, a snapshot that lacks files we did not ask transformers for (tokenizers)
        # is reported incomplete; it is still usable when it holds what a vision tower needs.
        if incomplete is not None and isinstance(err, incomplete) and has_weights(Path(err.snapshot_path)):
            return Path(err.snapshot_path)
        raise


def has_weights(path: Path) -> bool:
    if path.is_file():
        return path.suffix in WEIGHT_SUFFIXES
    return path.is_dir() and any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file())


def weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def local_revision(path: Path) -> str | None:
    """Commit hash for a hub-cache snapshot directory, else sha256 of the weight file(s)."""
    path = Path(path).resolve()
    for part in (path, path.parent):
        if _COMMIT.match(part.name) and part.parent.name == "snapshots":
            return part.name
    files = weight_files(path)
    if not files:
        return None
    if len(files) == 1:
        return "sha256:" + _file_sha256(str(files[0]), *_stat_key(files[0]))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{_file_sha256(str(file), *_stat_key(file))}\n".encode())
    return "sha256:" + digest.hexdigest()


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hash once per (path, size, mtime) per process; multi-GB weights take seconds."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    metric: str
    checkpoint: str | None
    path: Path | None = None
    revision: str | None = None
    note: str = ""
    error: str | None = None


def fetch_weights(
    metrics: Sequence[str],
    checkpoints: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
) -> list[FetchResult]:
    """Download the weights of ``metrics`` into the hub cache (or ``cache_dir``).

    Metrics that need no download (weights ship in a wheel, pixel metrics, local paths) are
    reported, not fetched. A failure for one metric is recorded and the others continue.
    """
    from unified_bench.metrics import get_spec

    if offline_mode():
        raise ConfigError(
            "`weights fetch` needs network access but HF_HUB_OFFLINE is set; "
            "run it with HF_HUB_OFFLINE unset on a machine that can reach huggingface.co"
        )
    checkpoints = dict(checkpoints or {})
    results: list[FetchResult] = []
    for name in metrics:
        spec = get_spec(name)
        checkpoint = checkpoints.get(name) or spec.default_checkpoint
        if not checkpoint:
            results.append(FetchResult(name, None, note="nothing to download (no weights)"))
            continue
        if spec.offline:
            results.append(FetchResult(name, checkpoint, note="nothing to download (weights ship with the package)"))
            continue
        if Path(checkpoint).expanduser().exists():
            results.append(FetchResult(name, checkpoint, Path(checkpoint).expanduser(), note="local path, nothing to download"))
            continue
        if not looks_like_hub_id(checkpoint):
            results.append(FetchResult(name, checkpoint, error=f"{checkpoint!r} is neither an existing path nor a hub id (org/name)"))
            continue
        try:
            resolved = resolve_hub(name, checkpoint, cache_dir=cache_dir, force_online=True)
        except WeightsNotFoundError as err:
            results.append(FetchResult(name, checkpoint, error=str(err)))
            continue
        results.append(FetchResult(name, checkpoint, resolved.path, resolved.revision, note="cached"))
    return results


# --------------------------------------------------------------------------- dry run


def locate_checkpoint(metric: str, checkpoint: str | None) -> ResolvedCheckpoint:
    """Where ``checkpoint`` is on this machine, without downloading or loading anything.

    A local path must exist; a hub id must already be in the hub cache (``local_files_only``,
    whatever ``HF_HUB_OFFLINE`` says). Raises :class:`WeightsNotFoundError` naming the metric,
    the checkpoint and the fix. ``revision`` is left None (hashing multi-GB files is not a check).
    """
    from huggingface_hub import errors as hub

    if not checkpoint:
        raise ConfigError(f"metric {metric!r} needs a checkpoint; pass --checkpoint {metric}=PATH_OR_HUB_ID")
    local = Path(checkpoint).expanduser()
    if local.exists():
        if not has_weights(local):
            raise _missing(metric, checkpoint, f"exist at {local} but hold no weight file ({', '.join(WEIGHT_SUFFIXES)})")
        return ResolvedCheckpoint(checkpoint, local.resolve(), None, from_hub=False)
    explicit_path = checkpoint.startswith(("/", "./", "../", "~", ".\\")) or "\\" in checkpoint
    if explicit_path or not looks_like_hub_id(checkpoint):
        raise _missing(metric, checkpoint, "do not exist: no such file or directory, and it is not a hub id (org/name)")
    match = _REPO_FILE.match(checkpoint)
    repo_id, filename = (match["repo"], match["file"]) if match else (checkpoint, None)
    cache = hub_cache_dir()
    from huggingface_hub import snapshot_download

    def cached(patterns: Sequence[str]) -> Path:
        try:
            return Path(
                snapshot_download(
                    repo_id,
                    allow_patterns=list(patterns),
                    ignore_patterns=["*/*"],
                    cache_dir=str(cache),
                    local_files_only=True,
                )
            )
        except hub.LocalEntryNotFoundError as err:
            raise _missing(metric, checkpoint, f"are not in the Hugging Face cache ({cache})") from err

    with hub_errors(metric, checkpoint, cache_dir=cache):
        snapshot = cached((filename,) if filename else hub_files(metric))
        if filename is None and not has_weights(snapshot):
            snapshot = cached(HF_BIN_FILES)
    path = snapshot / filename if filename else snapshot
    if not path.exists() or (filename is None and not has_weights(snapshot)):
        raise _missing(metric, checkpoint, f"are incomplete in the local cache ({snapshot} has no weight file)")
    return ResolvedCheckpoint(checkpoint, path, snapshot.name if _COMMIT.match(snapshot.name) else None, from_hub=True)
