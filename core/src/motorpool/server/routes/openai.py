"""OpenAI-compatible routes (``/v1``)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from motorpool.errors import InvalidRequest
from motorpool.server._bridge import call_until_disconnect
from motorpool.server._deps import Handler, RequestId, require_key
from motorpool.server._errors import NotFound, validation_error
from motorpool.server._sse import EventStreamResponse
from motorpool.server._videos import MAX_WAIT_S, video_request
from motorpool.server.wire import openai as oa
from motorpool.server.wire.errors import ErrorEnvelope

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503, 507)
}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or server-sent events ending in `data: [DONE]` when `stream` is true",
        "content": {
            "text/event-stream": {  # OpenAPI 3.1: the schema of each event
                "schema": {
                    "type": "object",
                    "properties": {
                        "data": {"type": "string", "description": "A chunk as JSON, or [DONE]"}
                    },
                    "required": ["data"],
                }
            }
        },
    }
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=ERRORS)
files = APIRouter(prefix="/v1", responses=ERRORS)


@router.get("/models")
async def list_models(handler: Handler) -> oa.ModelList:
    """Aliases from the models file and every model loaded."""
    return handler.model_cards()


async def _text(
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    request: Request,
    handler: Handler,
    request_id: str,
) -> Response | oa.ChatCompletion | oa.Completion:
    def cancel() -> None:
        _cancel(handler, request_id)

    if body.stream:
        frames = await call_until_disconnect(
            lambda: handler.start_stream(body, request_id), request.receive, cancel
        )
        return EventStreamResponse(frames, on_disconnect=cancel)
    return await call_until_disconnect(
        lambda: handler.complete(body, request_id), request.receive, cancel
    )


@router.post("/chat/completions", response_model=oa.ChatCompletion, responses=SSE_RESPONSE)
async def chat_completions(
    body: oa.ChatCompletionRequest, request: Request, handler: Handler, request_id: RequestId
) -> Response | oa.ChatCompletion | oa.Completion:
    """Answer a conversation; loads the model first when needed."""
    return await _text(body, request, handler, request_id)


@router.post("/completions", response_model=oa.Completion, responses=SSE_RESPONSE)
async def completions(
    body: oa.CompletionRequest, request: Request, handler: Handler, request_id: RequestId
) -> Response | oa.ChatCompletion | oa.Completion:
    """Continue a prompt; loads the model first when needed."""
    return await _text(body, request, handler, request_id)


@router.post("/images/generations")
async def generate_images(
    body: oa.ImageGenerationRequest, request: Request, handler: Handler, request_id: RequestId
) -> oa.ImagesResponse:
    """Generate images as base64 PNG or as URLs this server serves for an hour."""
    base_url = str(request.base_url)
    return await call_until_disconnect(
        lambda: handler.images(body, request_id, base_url),
        request.receive,
        lambda: _cancel(handler, request_id),
    )


def _cancel(handler: Handler, request_id: str) -> None:
    handler.host.cancel(request_id)


_VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": oa.VideoCreateRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    **oa.VideoCreateRequest.model_json_schema(),
                    "properties": {
                        **oa.VideoCreateRequest.model_json_schema()["properties"],
                        "input_reference": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


@router.post("/videos", openapi_extra=_VIDEO_BODY)
async def create_video(request: Request, handler: Handler) -> oa.VideoJob:
    """Start a video job (JSON, or a multipart form with an ``input_reference`` image)."""
    body, image = await _video_body(request)
    spec = handler.client_spec(body.model)
    return handler.videos.start(spec, body.model, body, video_request(body, image))


async def _video_body(request: Request) -> tuple[oa.VideoCreateRequest, bytes | None]:
    content_type = request.headers.get("content-type", "")
    image: bytes | None = None
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            fields: dict[str, object] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != "input_reference":
                        raise InvalidRequest(f"unexpected file field {key!r}")
                    image = await value.read()
                else:
                    fields[key] = value
            return oa.VideoCreateRequest.model_validate(fields), image
        return oa.VideoCreateRequest.model_validate_json(await request.body()), None
    except ValidationError as exc:
        error, _ = validation_error(exc.errors())
        raise error from exc


@router.get("/videos")
async def list_videos(handler: Handler) -> oa.VideoJobList:
    """Every video job kept (finished ones are forgotten after a while)."""
    return oa.VideoJobList(data=tuple(handler.videos.list()))


@router.get("/videos/{video_id}")
async def get_video(
    video_id: str,
    handler: Handler,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Seconds to hold the request until the job ends (a long poll); "
            "0 answers at once",
        ),
    ] = 0,
) -> oa.VideoJob:
    """A job's status and progress; with ``wait``, once it has ended or ``wait`` has passed."""
    if wait:
        return await handler.videos.wait(video_id, wait)
    return handler.videos.get(video_id)


@router.get(
    "/videos/{video_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}, "description": "The clip"}},
)
async def video_content(video_id: str, handler: Handler) -> FileResponse:
    """The finished clip (409 until the job has completed, 404 once the clip expired)."""
    blob = handler.videos.content(video_id)
    return FileResponse(blob.path, media_type=blob.media_type)


@router.post("/videos/{video_id}/cancel")
async def cancel_video(video_id: str, handler: Handler) -> oa.VideoJob:
    """Stop a queued or running job; it ends ``cancelled``."""
    return await anyio.to_thread.run_sync(handler.videos.cancel, video_id)


@router.delete("/videos/{video_id}")
async def delete_video(video_id: str, handler: Handler) -> oa.DeletedVideo:
    """Cancel the job if it runs, then delete it and its clip."""
    return await anyio.to_thread.run_sync(handler.videos.delete, video_id)


@files.get(
    "/files/{file_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "video/mp4": {}}, "description": "The file"}},
)
async def get_file(file_id: str, handler: Handler) -> FileResponse:
    """A generated file. Its unguessable id is the credential, so ``<img src>`` works."""
    blob = handler.blobs.get(file_id)
    if blob is None:
        raise NotFound(f"no file {file_id!r} (files expire after an hour)")
    return FileResponse(blob.path, media_type=blob.media_type)
