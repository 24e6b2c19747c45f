"""Where generated files live until a client fetches them: a service behind a Protocol."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "image/gif": ".gif",
}
MEDIA_TYPES = {suffix: media for media, suffix in SUFFIXES.items()}
DEFAULT_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored file: its id, where it is, and what it is."""

    id: str
    path: Path
    media_type: str


class BlobStore(Protocol):
    """Stores generated files. ``put`` is atomic: a file is complete or absent."""

    def put(self, data: bytes, media_type: str) -> Blob:
        """Store ``data``; raises ``OSError`` when it cannot (full disk)."""
        ...

    def get(self, blob_id: str) -> Blob | None:
        """The blob, or ``None`` when unknown or expired."""
        ...

    def delete(self, blob_id: str) -> None:
        """Forget a blob (no error when it is already gone)."""
        ...


class DirectoryBlobStore:
    """Files in one folder, written to a temporary name and renamed when complete.

    Blobs older than ``ttl_s`` are gone: never served again, and removed on the next
    ``put`` (or when asked for).
    """

    def __init__(self, directory: Path, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, media_type: str) -> Blob:
        """Write atomically: a crash or a full disk leaves no partial file behind."""
        self._expire()
        suffix = SUFFIXES.get(media_type, ".bin")
        blob_id = f"{uuid.uuid4().hex}{suffix}"
        final = self.directory / blob_id
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            Path(temporary).replace(final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return Blob(blob_id, final, media_type)

    def get(self, blob_id: str) -> Blob | None:
        """Look a blob up by id; ids are plain file names, never paths."""
        if "/" in blob_id or "\\" in blob_id or blob_id.startswith("."):
            return None
        path = self.directory / blob_id
        try:
            modified = path.stat().st_mtime
        except OSError:  # no such blob, or removed meanwhile
            return None
        if not path.is_file():
            return None
        if modified < time.time() - self.ttl_s:  # expired, though no put has removed it yet
            path.unlink(missing_ok=True)
            return None
        return Blob(blob_id, path, MEDIA_TYPES.get(path.suffix, "application/octet-stream"))

    def delete(self, blob_id: str) -> None:
        """Remove a blob's file."""
        blob = self.get(blob_id)
        if blob is not None:
            blob.path.unlink(missing_ok=True)

    def _expire(self) -> None:
        cutoff = time.time() - self.ttl_s
        for path in self.directory.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except OSError as exc:  # raced with another delete: nothing to do
                log.debug("blob expiry skipped", path=str(path), error=str(exc))
