"""The host's model lifecycle and request handling, through the real test-engine plugin."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from motorpool import Host, Settings
from motorpool.errors import (
    Cancelled,
    EngineFailed,
    InvalidOptions,
    InvalidRequest,
    LoadFailed,
    MemoryBudgetExceeded,
    ModelBusy,
    NoMatchingPlugin,
    QueueFull,
    SourceNotFound,
    UnknownModel,
    UnknownPlugin,
    UnsupportedCapability,
)
from motorpool.types import (
    ChatRequest,
    CompletionRequest,
    ControlInput,
    ErrorEvent,
    FinishReason,
    HostEvent,
    HostModelEvent,
    HostProgressEvent,
    ImageRequest,
    ImageResult,
    ModelSpec,
    ModelStatus,
    ProgressEvent,
    ResultEvent,
    SeedFrame,
    SessionConfig,
    TextResult,
    TokenEvent,
)
from motorpool_testengine._png import encode_png, png_size
from motorpool_testengine.plugin import write_model
from pydantic import ValidationError

from tests.support import Background, chat, spec, wait_until

PLUGINS = "testengine,testengine-generate-only"


def make_host(tmp_path: Path, **settings: object) -> Host:
    options: dict[str, object] = {"home": tmp_path, "plugins": PLUGINS, "keep_alive_s": -1}
    return Host(Settings.model_validate({**options, **settings}))


@pytest.fixture
def host(tmp_path: Path):
    with make_host(tmp_path) as host:
        yield host


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "m.mptest.json")


def test_load_generate_stream_unload(host: Host, model_file: Path) -> None:
    info = host.load(str(model_file))  # the plugin is found by matching the file
    assert info.status is ModelStatus.READY
    assert info.plugin == "testengine"

    result = host.generate(info.id, chat(seed=7))
    assert isinstance(result, TextResult)
    assert result.usage.completion_tokens > 0

    events = list(host.stream(info.id, chat(seed=7)))
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, TextResult)
    assert tokens == final.result.text == result.text  # same seed, same text, either path

    host.unload(info.id)
    assert host.models() == []


def test_same_seed_same_text_and_stop_sequences(host: Host, model_file: Path) -> None:
    first = host.generate(str(model_file), chat(seed=3, max_tokens=20))
    second = host.generate(str(model_file), chat(seed=3, max_tokens=20))
    assert isinstance(first, TextResult)
    assert isinstance(second, TextResult)
    assert first.text == second.text
    stop_word = first.text.split()[2]
    request = ChatRequest.model_validate(
        {**chat(seed=3, max_tokens=20).model_dump(), "stop": [stop_word]}
    )
    stopped = host.generate(str(model_file), request)
    assert isinstance(stopped, TextResult)
    assert stopped.finish_reason is FinishReason.STOP
    assert stop_word not in stopped.text


def test_generate_only_plugin_streams_progress(host: Host, model_file: Path) -> None:
    events = list(
        host.stream(
            f"testengine-generate-only:{model_file}",
            ImageRequest(prompt="a cat", steps=3, width=16, height=24),
        )
    )
    assert [(e.step, e.total) for e in events if isinstance(e, ProgressEvent)] == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, ImageResult)
    assert png_size(final.result.images[0].png) == (16, 24)


def test_progress_reaches_callback_and_event_bus(host: Host, model_file: Path) -> None:
    seen: list[HostEvent] = []
    host.subscribe(seen.append)
    steps: list[int] = []
    host.generate(
        str(model_file),
        ImageRequest(prompt="x", steps=2),
        on_progress=lambda event: steps.append(event.step),
    )
    assert steps == [1, 2]
    statuses = [e.model.status for e in seen if isinstance(e, HostModelEvent)]
    assert statuses[:2] == [ModelStatus.LOADING, ModelStatus.READY]
    operations = {e.operation for e in seen if isinstance(e, HostProgressEvent)}
    assert operations == {"load", "generate"}


def test_unsupported_request_is_typed(host: Host, model_file: Path) -> None:
    with pytest.raises(UnsupportedCapability, match="cannot do chat"):
        host.generate(f"testengine-generate-only:{model_file}", chat())
    assert host.generate(f"testengine-generate-only:{model_file}", ImageRequest(prompt="ok"))


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("no-such-alias", UnknownModel),
        ("nosuchplugin:/tmp/x", UnknownModel),
        ("/definitely/not/here.gguf", UnknownModel),
    ],
)
def test_unknown_names(host: Host, model: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        host.load(model)
    assert info.value.hint  # type: ignore[attr-defined]


def test_unknown_plugin_missing_path_and_no_match(host: Host, tmp_path: Path) -> None:
    with pytest.raises(UnknownPlugin, match="no plugin named 'llama'"):
        host.load(ModelSpec(plugin="llama", source="x"))
    with pytest.raises(SourceNotFound):
        host.load(ModelSpec(plugin="testengine", source=str(tmp_path / "missing.json")))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0")
    with pytest.raises(NoMatchingPlugin, match="no installed plugin recognises"):
        host.load(str(other))
    assert host.models() == []


def test_invalid_options_name_the_field(host: Host, model_file: Path) -> None:
    with pytest.raises(InvalidOptions, match="token_delay_s") as info:
        host.load(spec(model_file, "bad", token_delay_s="slow"))
    assert info.value.hint is not None
    assert "max_concurrency" in info.value.hint  # lists what is accepted


def test_failed_load_is_a_visible_state_and_others_are_unaffected(
    host: Host, model_file: Path
) -> None:
    good = host.load(spec(model_file, "good"))
    with pytest.raises(LoadFailed, match="failing on purpose"):
        host.load(spec(model_file, "broken", fail_load=True))
    states = {m.id: m for m in host.models()}
    assert states["broken"].status is ModelStatus.FAILED
    assert states["broken"].error is not None
    assert states["broken"].error.code == "load_failed"
    assert states["good"].status is ModelStatus.READY
    assert host.generate(good.id, chat())
    with pytest.raises(LoadFailed):  # a second request retries the load
        host.load("broken")


def test_request_validation() -> None:
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"messages": []})
    with pytest.raises(ValidationError):
        CompletionRequest(prompt="x", max_tokens=-1)
    with pytest.raises(ValidationError):
        CompletionRequest(prompt="")
    with pytest.raises(ValidationError):
        ImageRequest(prompt="x", steps=0)
    with pytest.raises(ValidationError):
        ImageRequest(prompt="x", guidance=float("nan"))
    with pytest.raises(ValidationError):
        ImageRequest(prompt="x", width=100_000)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ImageRequest.model_validate({"prompt": "x", "stepz": 3})


def test_plugin_raising_mid_stream_ends_with_error_event(host: Host, model_file: Path) -> None:
    broken = spec(model_file, "flaky", fail_after_tokens=2)
    events = list(host.stream(broken, chat(max_tokens=10)))
    assert [type(e) for e in events] == [TokenEvent, TokenEvent, ErrorEvent]
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert final.error.code == "engine_error"
    assert "failing on purpose" in final.error.message
    with pytest.raises(EngineFailed):
        host.generate("flaky", chat(max_tokens=10))
    assert host.model("flaky").status is ModelStatus.READY  # the host and model stay healthy
    assert host.generate(spec(model_file, "other"), chat())


def test_cancel_stream_stops_within_one_token(host: Host, model_file: Path) -> None:
    slow = spec(model_file, "slow", token_delay_s=0.01)
    generation = host.stream(slow, chat(max_tokens=10_000))
    events = [next(generation), next(generation)]
    generation.cancel()
    events += list(generation)
    assert len(events) <= 4
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert final.error.code == "cancelled"
    assert host.model("slow").active_requests == 0
    assert host.generate("slow", chat(max_tokens=2))  # the model still serves


def test_cancel_by_request_id_from_another_thread(host: Host, model_file: Path) -> None:
    slow = spec(model_file, "slow", token_delay_s=0.01)
    host.load(slow)
    worker = Background(lambda: host.generate("slow", chat(max_tokens=10_000), request_id="r-1"))
    wait_until(lambda: host.cancel("r-1"))
    assert isinstance(worker.join(), Cancelled)
    assert not host.cancel("r-1")  # finished requests are forgotten


def test_requests_to_one_model_are_serialised_and_queued(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, max_queue=1) as host:
        host.load(spec(model_file, "m", token_delay_s=0.02))
        running = host.stream("m", chat(max_tokens=20))
        next(running)  # holds the only slot
        queued: list[object] = []
        waiter = threading.Thread(target=lambda: queued.append(host.generate("m", chat())))
        waiter.start()
        wait_until(lambda: host.model("m").queued_requests == 1)
        with pytest.raises(QueueFull):  # before any event: a server answers 503 at once
            host.stream("m", chat())
        assert host.model("m").active_requests == 1
        running.close()
        waiter.join(5)
        assert isinstance(queued[0], TextResult)


def test_different_models_run_at_the_same_time(host: Host, model_file: Path) -> None:
    first = host.stream(spec(model_file, "a"), chat(max_tokens=50))
    second = host.stream(spec(model_file, "b"), chat(max_tokens=50))
    next(first)
    next(second)  # a's only slot is busy; b does not wait for it
    assert [m.active_requests for m in host.models()] == [1, 1]
    assert isinstance(list(first)[-1], ResultEvent)
    assert isinstance(list(second)[-1], ResultEvent)


def test_concurrent_loads_of_one_model_load_it_once(host: Host, model_file: Path) -> None:
    events: list[HostEvent] = []
    host.subscribe(events.append)
    threads = [threading.Thread(target=host.load, args=(spec(model_file, "once"),)) for _ in "xyz"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loading = [
        e for e in events if isinstance(e, HostModelEvent) and e.model.status is ModelStatus.LOADING
    ]
    assert len(loading) == 1


def test_lru_eviction_under_memory_budget(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, memory_budget=1000) as host:
        host.load(spec(model_file, "a", memory_bytes=400))
        host.load(spec(model_file, "b", memory_bytes=400))
        host.generate("a", chat())  # a is now the most recently used
        host.load(spec(model_file, "c", memory_bytes=400))
        assert sorted(m.id for m in host.models()) == ["a", "c"]


def test_pinned_and_busy_models_are_never_evicted(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, memory_budget=1000) as host:
        host.load(spec(model_file, "pinned", memory_bytes=500))
        host.pin("pinned")
        busy = host.stream(spec(model_file, "busy", memory_bytes=400, token_delay_s=0.01), chat())
        next(busy)
        with pytest.raises(MemoryBudgetExceeded, match="cannot be evicted now") as info:
            host.load(spec(model_file, "new", memory_bytes=400))
        assert "pinned (pinned)" in info.value.message
        assert "busy (in use)" in info.value.message
        assert "900 B of 1000 B" in info.value.message
        busy.close()
        host.load(spec(model_file, "new", memory_bytes=400))  # busy is idle now: evicted
        assert sorted(m.id for m in host.models()) == ["new", "pinned"]


def test_model_larger_than_budget(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, memory_budget=1000) as host:
        with pytest.raises(MemoryBudgetExceeded, match="more than the whole budget"):
            host.load(spec(model_file, "huge", memory_bytes=5000))
        assert host.model("huge").status is ModelStatus.FAILED


def test_max_loaded_models(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, max_loaded_models=1) as host:
        host.load(spec(model_file, "a"))
        host.load(spec(model_file, "b"))
        assert [m.id for m in host.models()] == ["b"]


def test_keep_alive_unloads_idle_models(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, keep_alive_s=0.2) as host:
        host.load(spec(model_file, "idle"))
        host.load(spec(model_file, "kept").model_copy(update={"keep_alive_s": -1.0}))
        wait_until(lambda: "idle" not in {m.id for m in host.models()})
        assert [m.id for m in host.models()] == ["kept"]


def test_keep_alive_zero_unloads_after_each_request(host: Host, model_file: Path) -> None:
    host.generate(spec(model_file, "once").model_copy(update={"keep_alive_s": 0.0}), chat())
    assert host.models() == []


def test_exclusive_model_serves_one_user(host: Host, model_file: Path) -> None:
    host.load(spec(model_file, "world", exclusive=True))
    seed = SeedFrame(image=encode_png(8, 8))
    with host.session("world", seed=seed) as session:
        with pytest.raises(ModelBusy):
            host.session("world", seed=seed)
        with pytest.raises(ModelBusy):
            host.stream("world", chat())
        frames = session.frames()
        first = next(frames)
        session.control(ControlInput(mouse_dx=10, client_ts=1.5))
        second = next(frames)
        assert second.frame_id == first.frame_id + 1
        assert second.client_ts == 1.5
        assert second.frames[0] != first.frames[0]
    with host.session("world", seed=seed) as again:  # the slot was released
        assert next(again.frames()).frame_id == 0


def test_session_controls_merge_reset_and_pacing(host: Host, model_file: Path) -> None:
    seed = SeedFrame(image=encode_png(8, 8))
    with host.session(
        spec(model_file, "w"), seed=seed, config=SessionConfig(fps_cap=20)
    ) as session:
        session.control(ControlInput(buttons=frozenset({87}), mouse_dx=1))
        session.control(ControlInput(buttons=frozenset({65}), mouse_dx=2))
        frames = session.frames()
        started = time.perf_counter()
        batches = [next(frames) for _ in range(4)]
        assert time.perf_counter() - started >= 3 / 20  # paced at 20 fps
        session.reset()
        assert next(frames).frame_id == 0
        assert batches[0].frame_id == 0
    assert host.model("w").active_requests == 0


def test_close_cancels_running_work_and_unloads(tmp_path: Path, model_file: Path) -> None:
    host = make_host(tmp_path)
    generation = host.stream(spec(model_file, "slow", token_delay_s=0.01), chat(max_tokens=10_000))
    next(generation)
    closer = threading.Thread(target=host.close)
    closer.start()
    rest = list(generation)
    closer.join(5)
    assert not closer.is_alive()
    assert isinstance(rest[-1], ErrorEvent)
    assert host.models() == []


def test_a_name_loaded_with_other_settings_is_a_conflict(host: Host, model_file: Path) -> None:
    host.load(spec(model_file, "m", max_concurrency=2))
    assert host.load(spec(model_file, "m", max_concurrency=2)).id == "m"  # the same: fine
    with pytest.raises(InvalidRequest, match="already loaded") as info:
        host.load(spec(model_file, "m", max_concurrency=3))
    assert "unload m first" in (info.value.hint or "")


def test_dropped_streams_and_sessions_release_their_model(host: Host, model_file: Path) -> None:
    host.load(spec(model_file, "x", exclusive=True))
    generation = host.stream("x", chat())
    next(generation)
    del generation  # neither exhausted nor closed
    session = host.session("x", seed=SeedFrame(image=encode_png(8, 8)))
    del session
    host.unload("x")  # would wait forever on a leaked user
    assert host.models() == []


def test_cancel_a_slow_load(host: Host, model_file: Path) -> None:
    loader = Background(lambda: host.load(spec(model_file, "slow-load", load_delay_s=30)))
    wait_until(lambda: host.cancel_load("slow-load"))
    assert isinstance(loader.join(), Cancelled)
    assert host.models() == []  # a cancelled load leaves nothing behind
    assert host.load(spec(model_file, "slow-load", load_delay_s=0.05)).status is ModelStatus.READY
