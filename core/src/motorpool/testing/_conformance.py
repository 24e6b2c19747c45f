"""The engine conformance suite: one test class every engine plugin runs against itself.

A plugin's own test module subclasses :class:`EngineConformance`, names its entry point,
and (when it has no ``motorpool_tiny_model`` hook) overrides the ``tiny_model`` fixture::

    from motorpool.testing import EngineConformance

    class TestMyEngine(EngineConformance):
        plugin = "myengine"

Every test drives a real :class:`~motorpool.Host` that discovers the plugin through its
entry point, the way users meet it: nothing is mocked.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from motorpool._host import Host
from motorpool._runs import required_capability
from motorpool._settings import Settings
from motorpool.engine import TinyModel
from motorpool.errors import (
    MotorpoolError,
    SourceNotFound,
    UnknownModel,
    UnsupportedCapability,
)
from motorpool.types import (
    REQUEST_ADAPTER,
    STREAM_EVENT_ADAPTER,
    Capability,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    ErrorEvent,
    FinishReason,
    FrameBatch,
    GenerationRequest,
    GenerationResult,
    ImageRequest,
    ImageResult,
    ModelInfo,
    ModelStatus,
    PluginState,
    ProgressEvent,
    ResultEvent,
    SeedFrame,
    SessionInfo,
    StreamEvent,
    TerminalEvent,
    TextResult,
    TokenEvent,
    VideoRequest,
    VideoResult,
)

__all__ = [
    "EngineConformance",
    "assert_batch_fits",
    "assert_result_answers",
    "assert_well_formed_stream",
    "request_for",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_well_formed_stream(events: Sequence[StreamEvent]) -> TerminalEvent:
    """Assert that ``events`` is one well-formed stream and return its terminal event.

    Well-formed: every event survives a JSON round trip through
    :data:`~motorpool.types.STREAM_EVENT_ADAPTER` unchanged, exactly one event is
    terminal (``result`` or ``error``) and it is the last, and within each progress
    stage the steps never go backwards nor past the stage's total.
    """
    assert events, "the stream yielded no event at all; it must end with result or error"
    for position, event in enumerate(events):
        wire = STREAM_EVENT_ADAPTER.dump_json(event)
        decoded: dict[str, object] = json.loads(wire)  # a model always dumps to an object
        assert decoded.get("type") == event.type, f"event {position} lost its type: {wire!r}"
        assert STREAM_EVENT_ADAPTER.validate_json(wire) == event, (
            f"event {position} ({event.type}) changed on a JSON round trip"
        )
    terminals = [i for i, e in enumerate(events) if isinstance(e, ResultEvent | ErrorEvent)]
    assert len(terminals) == 1, (
        f"a stream ends with exactly one terminal event; got them at positions {terminals} "
        f"of {len(events)}"
    )
    assert terminals[0] == len(events) - 1, (
        f"the terminal event is at position {terminals[0]}, not last of {len(events)}"
    )
    last_step: dict[str, int] = {}
    for position, event in enumerate(events):
        if not isinstance(event, ProgressEvent):
            continue
        before = last_step.get(event.stage)
        assert before is None or event.step >= before, (
            f"progress of stage {event.stage!r} went back from {before} to {event.step} "
            f"(event {position})"
        )
        assert event.total is None or event.step <= event.total, (
            f"progress of stage {event.stage!r} is past its total: {event.step} > {event.total} "
            f"(event {position})"
        )
        last_step[event.stage] = event.step
    terminal = events[-1]
    assert isinstance(terminal, ResultEvent | ErrorEvent)  # checked above; narrows the type
    return terminal


def assert_result_answers(request: GenerationRequest, result: GenerationResult) -> None:
    """Assert that ``result`` is the kind of answer ``request`` asks for, in the sizes it gave."""
    match request:
        case CompletionRequest() | ChatRequest():
            assert isinstance(result, TextResult), (
                f"a {request.kind} request was answered with {type(result).__name__}"
            )
            assert result.usage.completion_tokens <= request.max_tokens, (
                f"{result.usage.completion_tokens} completion tokens reported for a request "
                f"of max_tokens={request.max_tokens}"
            )
        case ImageRequest():
            assert isinstance(result, ImageResult), (
                f"an image request was answered with {type(result).__name__}"
            )
            assert len(result.images) == request.count, (
                f"asked for {request.count} image(s), got {len(result.images)}"
            )
            for index, image in enumerate(result.images):
                assert image.png.startswith(PNG_SIGNATURE), f"image {index} is not a PNG"
                if request.width is not None:
                    assert image.width == request.width, (
                        f"image {index} is {image.width} wide, asked for {request.width}"
                    )
                if request.height is not None:
                    assert image.height == request.height, (
                        f"image {index} is {image.height} high, asked for {request.height}"
                    )
        case VideoRequest():
            assert isinstance(result, VideoResult), (
                f"a video request was answered with {type(result).__name__}"
            )
            assert result.video, "the video result holds no bytes"
            for asked, got, what in (
                (request.frames, result.frames, "frames"),
                (request.width, result.width, "width"),
                (request.height, result.height, "height"),
                (request.fps, result.fps, "fps"),
            ):
                assert asked is None or got == asked, f"asked for {what}={asked}, got {got}"
            if request.return_frames:
                assert len(result.frame_images) == result.frames, (
                    f"return_frames: {len(result.frame_images)} frame images for "
                    f"{result.frames} frames"
                )


def assert_batch_fits(batch: FrameBatch, info: SessionInfo) -> None:
    """Assert that a session's batch holds the frames its info promises, as images."""
    assert len(batch.frames) == info.frames_per_step, (
        f"a batch of {len(batch.frames)} frames; the session makes {info.frames_per_step}"
    )
    assert (batch.width, batch.height) == (info.width, info.height), (batch, info)
    signature = _SIGNATURES[batch.media_type]
    for index, frame in enumerate(batch.frames):
        assert frame.startswith(signature), f"frame {index} is not {batch.media_type}"


_SIGNATURES = {"image/jpeg": b"\xff\xd8\xff", "image/png": PNG_SIGNATURE}


def _request(tiny: TinyModel) -> GenerationRequest:
    if tiny.request is None:
        pytest.skip("the tiny model is a world model: it opens sessions, not requests")
    return tiny.request


def _seed(tiny: TinyModel) -> SeedFrame:
    if tiny.seed is None:
        pytest.skip("the tiny model is not a world model")
    return tiny.seed


def request_for(capability: Capability) -> GenerationRequest | None:
    """A minimal request that needs ``capability`` (``None`` for image/video-to-X and world)."""
    match capability:
        case Capability.COMPLETION:
            return CompletionRequest(prompt="Once upon a time", max_tokens=4)
        case Capability.CHAT:
            return ChatRequest(messages=(ChatMessage(role="user", content="Hi"),), max_tokens=4)
        case Capability.IMAGE:
            return ImageRequest(prompt="a red square", width=16, height=16, steps=1)
        case Capability.VIDEO:
            return VideoRequest(prompt="a red square", frames=1, width=16, height=16, steps=1)
        case _:
            return None


PLAIN_KINDS = (Capability.COMPLETION, Capability.CHAT, Capability.IMAGE, Capability.VIDEO)
"""The request kinds a model may lack, probed by the unsupported-kind test."""


class EngineConformance:
    """The tests every engine plugin passes. Subclass it as ``Test<Engine>`` and set ``plugin``.

    The default ``tiny_model`` fixture asks the plugin's ``motorpool_tiny_model`` hook and
    skips every test that needs a model when the plugin cannot build one here. A plugin
    without that hook overrides the fixture and returns its own
    :class:`~motorpool.engine.TinyModel` (a small local model and a request it answers).
    """

    plugin: ClassVar[str]
    """The entry-point name of the plugin under test (group ``motorpool.engines``)."""

    probe_limit_s: ClassVar[float] = 2.0
    """How long a quick probe (``deep=False``) may take."""

    max_events_after_cancel: ClassVar[int] = 16
    """Events a stream may still yield after it was cancelled, the terminal one included."""

    cancel_grace_s: ClassVar[float] = 5.0
    """How long after a cancelled stream ends the engine may still hold its slot."""

    # -- fixtures ----------------------------------------------------------------------------

    def host_settings(self, home: Path) -> Settings:
        """Settings of the host under test: only this plugin, a private home, no idle unload."""
        return Settings(
            plugins=self.plugin,
            home=home,
            models_file=home / "models.toml",
            model_dirs=(),
            keep_alive_s=-1,
        )

    @pytest.fixture
    def host(self, tmp_path: Path) -> Iterator[Host]:
        """A real host that discovers only this plugin, closed (every model unloaded) after."""
        home = tmp_path / "home"
        home.mkdir()
        with Host(self.host_settings(home)) as host:
            yield host

    @pytest.fixture
    def tiny_model(self, host: Host, tmp_path: Path) -> TinyModel:
        """The plugin's tiny model, built by its ``motorpool_tiny_model`` hook."""
        directory = tmp_path / "model"
        directory.mkdir()
        tiny = host.tiny_model(self.plugin, directory)
        if tiny is None:
            pytest.skip(
                f"plugin {self.plugin!r} cannot build a tiny model here (no motorpool_tiny_model "
                "hook, or it returned None); override the tiny_model fixture to run these tests"
            )
        return tiny

    @pytest.fixture
    def loaded(self, host: Host, tiny_model: TinyModel) -> ModelInfo:
        """The tiny model, loaded."""
        return host.load(tiny_model.spec)

    # -- helpers -----------------------------------------------------------------------------

    def assert_serves(self, host: Host, tiny_model: TinyModel) -> None:
        """Assert that the host still answers the tiny model's request (or opens a session)."""
        if tiny_model.seed is not None:
            with host.session(tiny_model.spec, seed=tiny_model.seed) as session:
                assert_batch_fits(session.step(), session.info)
            return
        result = host.generate(tiny_model.spec, _request(tiny_model))
        assert_result_answers(_request(tiny_model), result)

    # -- discovery and probe -----------------------------------------------------------------

    def test_plugin_is_discovered(self, host: Host) -> None:
        """The entry point is found, imported and validated (state ``loaded``)."""
        records = {record.name: record for record in host.plugins}
        assert self.plugin in records, (
            f"no entry point {self.plugin!r} in group motorpool.engines; found {sorted(records)}"
        )
        record = records[self.plugin]
        assert record.state is PluginState.LOADED, (
            f"plugin {self.plugin!r} is {record.state.value}: {record.error} ({record.hint})"
        )
        assert record.entry_point, "the record names no entry point"
        assert {"motorpool_probe", "motorpool_load"} <= set(record.hooks), record.hooks
        assert {"motorpool_generate", "motorpool_stream", "motorpool_open_session"} & set(
            record.hooks
        ), f"no run hook among {record.hooks}"

    @pytest.mark.usefixtures("tiny_model")  # a plugin that builds its tiny model must be ready
    def test_quick_probe(self, host: Host) -> None:
        """A quick probe answers fast, is ready, and declares what the plugin can do."""
        started = time.perf_counter()
        probes = host.probe(deep=False)
        elapsed = time.perf_counter() - started
        assert elapsed < self.probe_limit_s, (
            f"a quick probe took {elapsed:.2f} s (limit {self.probe_limit_s} s); "
            "import the engine only when deep=True"
        )
        ours = [probe for probe in probes if probe.plugin == self.plugin]
        assert len(ours) == 1, f"expected one probe of {self.plugin!r}, got {probes}"
        probe = ours[0]
        assert probe.error is None, f"the probe raised: {probe.error}"
        assert probe.report is not None
        assert probe.report.capabilities, "the probe report declares no capability"
        assert probe.report.ready, f"not ready, missing: {probe.report.missing}"

    def test_tiny_request_is_valid(self, tiny_model: TinyModel) -> None:
        """The tiny model names this plugin (or none) and its request survives the wire."""
        assert tiny_model.spec.plugin in {None, self.plugin}, tiny_model.spec
        if tiny_model.seed is not None:
            assert tiny_model.seed.model_validate_json(tiny_model.seed.model_dump_json())
            return
        request = _request(tiny_model)
        assert REQUEST_ADAPTER.validate_json(REQUEST_ADAPTER.dump_json(request)) == request

    # -- lifecycle and generation -------------------------------------------------------------

    def test_load(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """Loading the tiny model leaves it ready with the capability its request needs."""
        assert loaded.status is ModelStatus.READY, loaded
        assert loaded.plugin == self.plugin
        needed = (
            Capability.WORLD
            if tiny_model.seed is not None
            else required_capability(_request(tiny_model))
        )
        assert needed in loaded.capabilities, (
            f"the tiny request needs {needed.value}; the model has {sorted(loaded.capabilities)}"
        )
        assert loaded.memory_bytes >= 0
        assert loaded.id in {model.id for model in host.models()}
        (probe,) = [probe for probe in host.probe(deep=False) if probe.plugin == self.plugin]
        assert probe.report is not None, f"the probe raised: {probe.error}"
        assert loaded.capabilities <= probe.report.capabilities, (
            f"the model can do {sorted(loaded.capabilities - probe.report.capabilities)}, "
            "which the plugin's probe does not declare"
        )

    def test_generate(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """Generating answers the tiny request with a result of the right kind and size."""
        request = _request(tiny_model)
        result = host.generate(loaded.id, request)
        assert_result_answers(request, result)
        if isinstance(result, TextResult):
            assert result.finish_reason is not FinishReason.CANCELLED, result
        assert host.model(loaded.id).active_requests == 0

    def test_stream(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """A stream is well-formed and ends with the result; its tokens spell the text."""
        request = _request(tiny_model)
        with host.stream(loaded.id, request) as generation:
            events = list(generation)
        terminal = assert_well_formed_stream(events)
        assert isinstance(terminal, ResultEvent), f"the stream failed: {terminal}"
        assert_result_answers(request, terminal.result)
        tokens = [event.text for event in events if isinstance(event, TokenEvent)]
        if tokens and isinstance(terminal.result, TextResult):
            assert "".join(tokens) == terminal.result.text, "the tokens do not spell the result"
        assert host.model(loaded.id).active_requests == 0

    def test_cancel(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """Cancelling a stream ends it within a few events; the model serves the next request."""
        request = _request(tiny_model)
        with host.stream(loaded.id, request) as generation:
            first = next(generation)
            too_quick = isinstance(first, ResultEvent | ErrorEvent)
            events = [first]
            if not too_quick:
                assert host.cancel(generation.id), "the host does not know the running request"
                events += itertools.islice(generation, self.max_events_after_cancel + 1)
        if too_quick:  # nothing left to cancel midway: cancel a fresh stream before it starts
            with host.stream(loaded.id, request) as generation:
                assert host.cancel(generation.id), "the host does not know the queued request"
                events = list(itertools.islice(generation, self.max_events_after_cancel + 1))
        assert len(events) <= self.max_events_after_cancel + 1, (
            f"the stream went on for {len(events) - 1} events after it was cancelled"
        )
        terminal = assert_well_formed_stream(events)
        if isinstance(terminal, ErrorEvent):
            assert terminal.error.code == "cancelled", f"cancelling ended in {terminal.error}"
        # The slot is free once the engine has stopped, which may be a step after the
        # stream ended (a generate-only engine finishes its step on its own thread).
        deadline = time.monotonic() + self.cancel_grace_s
        while host.model(loaded.id).active_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.model(loaded.id).active_requests == 0, "the cancelled request holds a slot"
        self.assert_serves(host, tiny_model)

    # -- world models ----------------------------------------------------------------------------

    def test_session(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """A session on a world model makes batches that fit its info, and gives the model back."""
        seed = _seed(tiny_model)
        with host.session(loaded.id, seed=seed) as session:
            assert host.model(loaded.id).active_requests == 1
            batches = [session.step() for _ in range(3)]
        for batch in batches:
            assert_batch_fits(batch, session.info)
        assert [batch.frame_id for batch in batches] == sorted({b.frame_id for b in batches})
        assert host.model(loaded.id).active_requests == 0
        self.assert_serves(host, tiny_model)

    def test_session_cancel(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """Cancelling a session by its id ends its frames; the model opens the next one."""
        with host.session(loaded.id, seed=_seed(tiny_model)) as session:
            frames = session.frames()
            next(frames)
            assert host.cancel(session.id), "the host does not know the session"
            rest = list(itertools.islice(frames, self.max_events_after_cancel + 1))
            assert len(rest) <= 1, f"{len(rest)} batches came after the session was cancelled"
        deadline = time.monotonic() + self.cancel_grace_s
        while host.model(loaded.id).active_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.model(loaded.id).active_requests == 0, "the cancelled session holds the model"
        self.assert_serves(host, tiny_model)

    def test_unload(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """Unloading forgets the model; it loads again afterwards."""
        host.unload(loaded.id)
        assert loaded.id not in {model.id for model in host.models()}
        with pytest.raises(UnknownModel):
            host.model(loaded.id)
        assert host.load(tiny_model.spec).status is ModelStatus.READY

    # -- bad input -----------------------------------------------------------------------------

    def test_unknown_option(self, host: Host, tiny_model: TinyModel) -> None:
        """An unknown load option is a 4xx error, or ignored.

        Both are allowed because some plugins pass options through to their engine as
        free-form keyword arguments. What is not allowed is a crash (a 5xx
        ``load_failed``) or a host that no longer serves afterwards.
        """
        spec = tiny_model.spec.model_copy(
            update={
                "name": "conformance-unknown-option",
                "options": {**tiny_model.spec.options, "definitely_not_an_option": 1},
            }
        )
        try:
            info: ModelInfo | MotorpoolError = host.load(spec)
        except MotorpoolError as exc:
            info = exc
        if isinstance(info, MotorpoolError):
            assert 400 <= info.status < 500, (
                f"an unknown option gave {type(info).__name__} ({info.code}, {info.status}): "
                f"{info}; validate options with source.options(MyOptions) to raise InvalidOptions"
            )
        else:
            assert info.status is ModelStatus.READY, info
            host.unload(info.id)
        self.assert_serves(host, tiny_model)

    def test_unsupported_kind(self, host: Host, tiny_model: TinyModel, loaded: ModelInfo) -> None:
        """A request of a kind the model lacks is refused before it reaches the engine."""
        lacking = [c for c in PLAIN_KINDS if c not in loaded.capabilities]
        if not lacking:
            pytest.skip("the tiny model supports every request kind")
        request = request_for(lacking[0])
        assert request is not None
        with pytest.raises(UnsupportedCapability):
            host.generate(loaded.id, request)
        with pytest.raises(UnsupportedCapability):
            host.stream(loaded.id, request)
        assert host.model(loaded.id).active_requests == 0
        self.assert_serves(host, tiny_model)

    def test_missing_source(self, host: Host, tiny_model: TinyModel, tmp_path: Path) -> None:
        """A local path that does not exist is ``SourceNotFound``, not a plugin crash."""
        missing = tmp_path / "no-such-folder" / Path(tiny_model.spec.source).name
        spec = tiny_model.spec.model_copy(
            update={"name": "conformance-missing", "plugin": self.plugin, "source": str(missing)}
        )
        with pytest.raises(SourceNotFound):
            host.load(spec)
        self.assert_serves(host, tiny_model)
