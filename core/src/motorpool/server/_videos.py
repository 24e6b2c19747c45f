"""Video generation as jobs: start, poll progress, fetch the clip, cancel, delete."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace

import structlog

from motorpool._host import Host
from motorpool.errors import EngineFailed, MotorpoolError, StorageFailed
from motorpool.server._errors import NotFound
from motorpool.server._media import Blob, BlobStore
from motorpool.server.wire import openai as oa
from motorpool.types import (
    ErrorEvent,
    ModelSpec,
    ProgressEvent,
    ResultEvent,
    VideoRequest,
    VideoResult,
)

log = structlog.get_logger(__name__)

MAX_JOBS = 256
"""Finished jobs beyond this many are forgotten, oldest first (their files too)."""
MAX_WAIT_S = 60.0
"""The longest ``GET /v1/videos/{id}?wait=S`` holds a request open."""
CANCEL_WAIT_S = 5.0
"""How long ``cancel`` waits for the engine to stop before answering with the job as it is."""
_PERCENT = 100


class JobNotFound(MotorpoolError):
    """No video job with that id."""

    code = "job_not_found"
    status = 404


class JobNotDone(MotorpoolError):
    """The job has no clip (yet): it is running, failed or was cancelled."""

    code = "job_not_completed"
    status = 409


class ClipExpired(NotFound):
    """The job completed but its clip is gone: the file store expired or lost it."""


@dataclass(frozen=True, slots=True)
class _Job:
    view: oa.VideoJob
    blob: Blob | None = None


class VideoJobs:
    """Each job runs on its own thread through ``Host.stream``; its id is its request id."""

    def __init__(self, host: Host, blobs: BlobStore) -> None:
        self._host = host
        self._blobs = blobs
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        # Jobs asked to stop and still active: read by a job's thread once its request is
        # registered with the host, cleared when the job ends (see ``cancel``).
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on every job update
        # Requests waiting for a job to end, woken on their own event loop.
        self._waiters: dict[str, list[_Waiter]] = {}

    def start(
        self, spec: ModelSpec, model: str, body: oa.VideoCreateRequest, request: VideoRequest
    ) -> oa.VideoJob:
        """Queue a job and return its first view."""
        job_id = f"video_{uuid.uuid4().hex}"
        view = oa.VideoJob(
            id=job_id,
            model=model,
            status="queued",
            progress=0,
            created_at=int(time.time()),
            prompt=body.prompt,
            seconds=_seconds(request),
            size=f"{request.width}x{request.height}"
            if request.width and request.height
            else "auto",
        )
        with self._lock:
            self._jobs[job_id] = _Job(view)
            self._forget_old()
        threading.Thread(
            target=self._run, args=(job_id, spec, request), name=f"motorpool-{job_id}", daemon=True
        ).start()
        return view

    def get(self, job_id: str) -> oa.VideoJob:
        """A job's current view."""
        return self._job(job_id).view

    async def wait(self, job_id: str, timeout_s: float) -> oa.VideoJob:
        """A job's view once it has ended, or as it is after ``timeout_s`` (a long poll).

        Waiting holds no thread: the job's thread answers the waiting request on its own
        event loop with the view it ended with, so a job deleted right after it ended
        still answers its waiters.
        """
        answer: asyncio.Future[oa.VideoJob] = asyncio.get_running_loop().create_future()
        waiter = (asyncio.get_running_loop(), answer)
        with self._lock:
            active = self._status(job_id) in _ACTIVE
            if active:
                self._waiters.setdefault(job_id, []).append(waiter)
        if not active:
            return self.get(job_id)  # ended already, or unknown: 404
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            return self.get(job_id)
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id, [])
                if waiter in waiting:
                    waiting.remove(waiter)
                if not waiting:
                    self._waiters.pop(job_id, None)

    def list(self) -> list[oa.VideoJob]:
        """Every job kept, newest last."""
        with self._lock:
            return [job.view for job in self._jobs.values()]

    def content(self, job_id: str) -> Blob:
        """The finished clip; ``ClipExpired`` (404) once the file store no longer has it."""
        job = self._job(job_id)
        if job.blob is None or job.view.status != "completed":
            raise JobNotDone(
                f"video {job_id} is {job.view.status}", hint="poll GET /v1/videos/{id} first"
            )
        # The store removes files after its TTL whatever the job says, so a completed job
        # can outlive its clip. A file removed between this look-up and the response being
        # sent is still a server error, but that window is a few microseconds, not an hour.
        # The job's blob, not the store's answer: the store guesses the media type from
        # the file name, the job knows the one its engine reported.
        if self._blobs.get(job.blob.id) is None:
            raise ClipExpired(
                f"the clip of video {job_id} has expired (files are kept for an hour)",
                hint="generate it again with POST /v1/videos",
            )
        return job.blob

    def cancel(self, job_id: str, *, wait_s: float = CANCEL_WAIT_S) -> oa.VideoJob:
        """Stop a queued or running job (no effect on a finished one).

        Blocks until the job has ended (``cancelled``) or ``wait_s`` has passed, so the
        view returned says so; an engine notices cancellation between steps.
        """
        job = self._job(job_id)
        if job.view.status not in _ACTIVE:
            return job.view
        # Flag first, then ask the host. The job's thread registers its request with the
        # host and only then reads the flag, so either the host knows the request when
        # ``host.cancel`` runs, or the flag is set when the thread reads it: the other
        # order loses a cancel that lands between the two. Only an active job is flagged,
        # under the lock that ``_update`` ends jobs under, so no flag outlives its job.
        with self._lock:
            if self._status(job_id) in _ACTIVE:
                self._cancelled.add(job_id)
        self._host.cancel(job_id)
        with self._changed:
            self._changed.wait_for(lambda: self._status(job_id) not in _ACTIVE, timeout=wait_s)
            current = self._jobs.get(job_id)
        return current.view if current is not None else job.view

    def _status(self, job_id: str) -> str | None:
        """Under the lock: a job's status (``None`` once deleted)."""
        job = self._jobs.get(job_id)
        return job.view.status if job is not None else None

    def delete(self, job_id: str) -> oa.DeletedVideo:
        """Cancel if running, then forget the job and its clip."""
        self.cancel(job_id)
        with self._lock:
            job = self._jobs.pop(job_id, None)
            waiters = self._waiters.pop(job_id, [])
        if job is None:
            raise JobNotFound(f"no video job {job_id!r}")
        _wake(waiters, job.view)  # now, not when their wait runs out
        if job.blob is not None:
            self._blobs.delete(job.blob.id)
        return oa.DeletedVideo(id=job_id)

    def cancel_all(self) -> None:
        """Stop every running job (server shutdown)."""
        with self._lock:
            running = [j for j, job in self._jobs.items() if job.view.status in _ACTIVE]
        for job_id in running:
            self._host.cancel(job_id)

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no video job {job_id!r}", hint="GET /v1/videos lists the jobs")
        return job

    def _update(self, job_id: str, blob: Blob | None = None, **changes: object) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:  # deleted while running
                self._cancelled.discard(job_id)
                if blob is not None:
                    self._blobs.delete(blob.id)
                return
            view = job.view.model_copy(update=changes)
            self._jobs[job_id] = replace(job, view=view, blob=blob or job.blob)
            self._changed.notify_all()
            ended = view.status not in _ACTIVE
            if ended:  # under the same lock as ``cancel`` flags it: no stale flag is left
                self._cancelled.discard(job_id)
            waiters = self._waiters.pop(job_id, []) if ended else []
        _wake(waiters, view)

    def _run(self, job_id: str, spec: ModelSpec, request: VideoRequest) -> None:
        """The job's thread: whatever happens, the job ends (never stays active)."""
        bound = log.bind(job_id=job_id, model=spec.name or spec.source)
        try:
            with self._host.stream(spec, request, request_id=job_id) as generation:
                with self._lock:  # registered with the host by now: see ``cancel``
                    if job_id in self._cancelled:
                        generation.cancel()
                for event in generation:
                    if isinstance(event, ProgressEvent):
                        self._progress(job_id, event)
                    elif isinstance(event, ResultEvent) and isinstance(event.result, VideoResult):
                        self._finish(job_id, event.result)
                        bound.info("video job completed")
                    elif isinstance(event, ErrorEvent):
                        self._fail(job_id, event.error.code, event.error.message)
        except MotorpoolError as exc:
            if not exc.is_client_error:
                bound.error("video job failed", exc_info=exc)
            self._fail(job_id, exc.code, exc.message)
            return
        except Exception as exc:  # a bug here or in a plugin: end the job, keep the server
            log.exception("video job crashed", job_id=job_id, model=spec.name or spec.source)
            error = EngineFailed(f"{type(exc).__name__}: {exc}")
            self._fail(job_id, error.code, error.message)
            return
        with self._lock:
            unfinished = self._status(job_id) in _ACTIVE
        if unfinished:  # the stream ended with neither a clip nor an error
            bound.error("video job ended without a clip")
            error = EngineFailed("the engine stopped without producing a clip")
            self._fail(job_id, error.code, error.message)

    def _progress(self, job_id: str, event: ProgressEvent) -> None:
        percent = self.get(job_id).progress
        if event.stage == "denoise" and event.total:
            percent = min(_PERCENT - 1, event.step * _PERCENT // event.total)
        self._update(job_id, status="in_progress", progress=percent, stage=event.stage)

    def _finish(self, job_id: str, result: VideoResult) -> None:
        # Everything that could raise comes before the file is stored, so a failure here
        # leaves no file that no job points to.
        changes: dict[str, object] = {
            "status": "completed",
            "progress": _PERCENT,
            "stage": None,
            "completed_at": int(time.time()),
            "size": f"{result.width}x{result.height}",
        }
        if result.fps > 0:  # a plugin may report no frame rate: keep the requested length
            changes["seconds"] = f"{result.frames / result.fps:g}"
        try:
            blob = self._blobs.put(result.video, result.media_type)
        except OSError as exc:
            error = StorageFailed(f"could not store the video: {exc.strerror or exc}")
            self._fail(job_id, error.code, error.message)
            return
        self._update(job_id, blob=blob, **changes)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        status = "cancelled" if code == "cancelled" else "failed"
        self._update(
            job_id,
            status=status,
            stage=None,
            completed_at=int(time.time()),
            error=oa.VideoError(code=code, message=message),
        )

    def _forget_old(self) -> None:
        finished = [j for j, job in self._jobs.items() if job.view.status not in _ACTIVE]
        for job_id in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
            job = self._jobs.pop(job_id)
            if job.blob is not None:
                self._blobs.delete(job.blob.id)


# A request long-polling a job: its event loop and the future its answer goes to.
_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[oa.VideoJob]]

_ACTIVE = frozenset({"queued", "in_progress"})


def _wake(waiters: list[_Waiter], view: oa.VideoJob) -> None:
    """Answer requests waiting on a job, each on its own event loop."""
    for loop, answer in waiters:
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
            loop.call_soon_threadsafe(_settle, answer, view)


def _settle(answer: asyncio.Future[oa.VideoJob], view: oa.VideoJob) -> None:
    if not answer.done():  # not timed out meanwhile
        answer.set_result(view)


def _seconds(request: VideoRequest) -> str:
    if request.frames and request.fps:
        return f"{request.frames / request.fps:g}"
    return "auto"


def video_request(body: oa.VideoCreateRequest, init_image: bytes | None) -> VideoRequest:
    """The core request a ``POST /v1/videos`` body stands for."""
    size = oa.parse_size(body.size) if body.size else None
    frames = body.frames
    if frames is None and body.seconds is not None:
        frames = round(body.seconds * (body.fps or DEFAULT_FPS)) + 1
    return VideoRequest(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        frames=frames,
        width=size[0] if size else None,
        height=size[1] if size else None,
        fps=body.fps or (DEFAULT_FPS if body.seconds is not None else None),
        steps=body.steps,
        guidance=body.guidance,
        seed=body.seed,
        init_image=init_image,
    )


DEFAULT_FPS = 16
"""Frames per second assumed when a client gives ``seconds`` but no ``fps``."""
