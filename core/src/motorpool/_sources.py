"""Model sources: local paths and Hugging Face repo ids, and the models file of aliases."""

from __future__ import annotations

import re
import threading
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog
from pydantic import ValidationError

from motorpool.engine import Context, ResolvedSource
from motorpool.errors import (
    Cancelled,
    DownloadFailed,
    InvalidRequest,
    SourceNotAllowed,
    SourceNotFound,
)
from motorpool.types import ModelOrigin, ModelSpec

if TYPE_CHECKING:
    from tqdm.asyncio import tqdm_asyncio

HUB_PREFIX = "hf:"
_PROGRESS_EVERY_S = 0.1
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")

log = structlog.get_logger(__name__)


def local_path(source: str) -> Path | None:
    """The existing local path a source names, or ``None`` (a repo id, or nothing there)."""
    if not source or source.startswith(HUB_PREFIX):
        return None
    try:
        path = Path(source).expanduser()
        return path.resolve() if path.exists() else None
    except (OSError, RuntimeError):  # a name too long for a path, an unknown ~user
        return None


def hub_repo_id(source: str) -> str | None:
    """The repo id a source names (``hf:owner/name`` or ``owner/name`` that is no path)."""
    candidate = source.removeprefix(HUB_PREFIX)
    if source.startswith(HUB_PREFIX) or local_path(source) is None:
        return candidate if _REPO_ID.match(candidate) else None
    return None


def resolve(spec: ModelSpec, *, model_dirs: tuple[Path, ...], context: Context) -> ResolvedSource:
    """Turn a spec's source into a local path, downloading from the hub when needed."""
    path = local_path(spec.source)
    if path is not None:
        _check_confined(path, model_dirs)
        return ResolvedSource(spec=spec, path=path, origin=ModelOrigin.LOCAL)
    repo_id = hub_repo_id(spec.source)
    if repo_id is None:
        raise SourceNotFound(
            f"no file or folder at {spec.source!r}",
            hint="give an existing path, or a Hugging Face repo id such as owner/name",
        )
    path = _download(repo_id, spec, context)
    return ResolvedSource(
        spec=spec, path=path, origin=ModelOrigin.HUB, repo_id=repo_id, revision=spec.revision
    )


def _check_confined(path: Path, model_dirs: tuple[Path, ...]) -> None:
    if not model_dirs:
        return
    roots = [d.expanduser().resolve() for d in model_dirs]
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise SourceNotAllowed(
            f"{path} is outside the model directories",
            hint="move the model into one of "
            + ", ".join(str(r) for r in roots)
            + " or add its folder to MOTORPOOL_MODEL_DIRS",
        )


def _download(repo_id: str, spec: ModelSpec, context: Context) -> Path:
    """``snapshot_download`` with progress and cancellation; honours HF_HOME / HF_HUB_OFFLINE."""
    import huggingface_hub  # noqa: PLC0415 - a heavy import, needed only for hub sources
    from huggingface_hub import errors as hub_errors  # noqa: PLC0415

    log.info("downloading model", repo_id=repo_id, revision=spec.revision, files=spec.files)
    try:
        folder = huggingface_hub.snapshot_download(  # pyright: ignore[reportUnknownMemberType]  # an untyped dict in hf's signature
            repo_id,
            revision=spec.revision,
            allow_patterns=list(spec.files) or None,
            tqdm_class=_progress_class(context),
        )
    except hub_errors.HFValidationError as exc:
        raise InvalidRequest(f"{repo_id!r} is not a valid Hugging Face repo id: {exc}") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise SourceNotFound(
            f"no Hugging Face repo {repo_id!r} (or it is private)",
            hint="check the name, or log in with `hf auth login` for a gated repo",
        ) from exc
    except hub_errors.RevisionNotFoundError as exc:
        raise SourceNotFound(f"{repo_id} has no revision {spec.revision!r}") from exc
    except hub_errors.LocalEntryNotFoundError as exc:
        raise DownloadFailed(
            f"{repo_id} is not in the local cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1)",
            hint="download it once while online, or point the source at a local folder",
        ) from exc
    except (OSError, hub_errors.HfHubHTTPError) as exc:
        raise DownloadFailed(f"downloading {repo_id} failed: {exc}") from exc
    return Path(folder)


def _progress_class(context: Context) -> type[tqdm_asyncio[Any]]:
    """A tqdm class that reports to ``context`` and stops the download when cancelled.

    huggingface_hub opens several bars from several download threads: bytes
    (``download``; it keeps two that move together, one a little behind) and files
    (``download_files``). A stage's steps only go forward: repeats and a lagging bar's
    older counts are dropped, events leave in the order they were decided (under the
    lock), and byte progress is throttled, so a large download is tens of events, not
    one per chunk.
    """
    from tqdm.asyncio import tqdm_asyncio  # noqa: PLC0415 - only for downloads

    last: dict[str, tuple[int, int | None, float]] = {}
    lock = threading.Lock()

    def report(stage: str, step: int, total: int | None) -> None:
        now = time.monotonic()
        with lock:
            previous = last.get(stage)
            if previous is not None:
                if step < previous[0] or previous[:2] == (step, total):
                    return
                finished = total is not None and step >= total
                if not finished and now - previous[2] < _PROGRESS_EVERY_S:
                    return
            last[stage] = (step, total, now)
            context.progress(stage, step, total)

    # The stubs make tqdm generic; the runtime class cannot be subscripted.
    class ContextProgress(tqdm_asyncio):  # pyright: ignore[reportMissingTypeArgument]
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - tqdm's own signature
            kwargs["disable"] = True  # the host reports progress as events, not a terminal bar
            super().__init__(*args, **kwargs)  # pyright: ignore[reportUnknownMemberType]  # tqdm's stubs leave **kwargs untyped
            self._stage = "download" if kwargs.get("unit") == "B" else "download_files"
            self._done = 0  # a disabled tqdm does not count

        def update(self, n: float | None = 1) -> bool | None:
            if context.cancelled:
                raise Cancelled("download cancelled")
            self._done += int(n or 0)
            report(self._stage, self._done, int(self.total) if self.total else None)
            return super().update(n)

    return ContextProgress


def _relative_to(folder: Path, source: str) -> str:
    """A relative local path in the models file means relative to the file, not the cwd."""
    if source.startswith(HUB_PREFIX) or Path(source).expanduser().is_absolute():
        return source
    candidate = folder / source
    return str(candidate) if source.startswith(".") or candidate.exists() else source


def load_models_file(path: Path) -> Mapping[str, ModelSpec]:
    """Read ``[models.<alias>]`` tables; a missing file is an empty mapping.

    Raises :class:`~motorpool.errors.InvalidRequest` naming the alias and field at fault.
    """
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc}") from exc
    tables = document.get("models", {})
    if not isinstance(tables, dict):
        raise InvalidRequest(f"{path}: `models` must be a table of [models.<alias>] tables")
    specs: dict[str, ModelSpec] = {}
    for alias, table in cast("dict[str, object]", tables).items():
        if not isinstance(table, dict):
            raise InvalidRequest(f"{path}: model {alias!r} is invalid: it must be a table")
        fields = dict(cast("dict[str, object]", table))
        if isinstance(source := fields.get("source"), str):
            fields["source"] = _relative_to(path.parent, source)
        try:
            specs[alias] = ModelSpec.model_validate({**fields, "name": alias})
        except ValidationError as exc:
            raise InvalidRequest(f"{path}: model {alias!r} is invalid: {exc}") from exc
    return specs
