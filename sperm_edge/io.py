"""Files: atomic output (write beside the target under a temporary name, then rename over it), image suffixes
and the natural sort order that every stage lists image folders in, and persisted cache folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sperm_edge.errors import SpermEdgeError

IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise name_the_file(err, path)  # noqa: B904 (the same exception, re-raised with its file named)


def name_the_file(err: BaseException, path: str | Path) -> BaseException:
    """`err` with `path` as its filename when it is an OSError without one (a failed write names no file), so
    "[Errno 28] No space left on device" says where."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(path)
    return err


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that needs a file name (savefig, VideoWriter)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_output_dir(path: str | Path, force: bool) -> None:
    """Refuse a non-empty existing folder unless `force`, which removes it."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())):
        if not force:
            raise SpermEdgeError(f"output {path} already exists; choose another path or pass --force")
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@contextmanager
def atomic_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to `path` only when the block succeeds."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())) and not force:
        raise SpermEdgeError(f"output {path} already exists; choose another path or pass --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        aside = None
        if path.exists():  # move the old output aside, so a failed rename leaves it as it was
            aside = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, aside)
        os.replace(tmp, path)
        if aside is not None:
            shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def natural_key(path: str | Path) -> list:
    """Sort `img 2.png` before `img 10.png`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


CACHE_ENV = "SPERM_EDGE_CACHE"


def cache_dir(kind: str) -> Path:
    """A persisted cache folder for `kind` (TensorRT timing caches, ONNX Runtime's TensorRT engines):
    `$SPERM_EDGE_CACHE/kind` when set (a container's volume, a service's state folder), else
    `~/.cache/sperm-edge/kind`. Created if missing."""
    base = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else Path.home() / ".cache" / "sperm-edge"
    path = base / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
