"""Shutdown, cancellation and plugin-bug paths: the host never hangs, leaks or lets a raw
exception through. Small plugins defined here are registered with ``Host(plugins=...)``.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from motorpool import Host, Settings, hookimpl
from motorpool.engine import LoadedModel
from motorpool.errors import (
    Cancelled,
    EngineFailed,
    HostClosing,
    MotorpoolError,
)
from motorpool.types import (
    Capability,
    ErrorEvent,
    FinishReason,
    FrameBatch,
    HostEvent,
    HostModelEvent,
    ImageRequest,
    ModelSpec,
    ModelStatus,
    ProbeReport,
    SeedFrame,
    SessionInfo,
    TextResult,
    Timings,
    TokenEvent,
    Usage,
)
from motorpool_testengine._png import encode_png
from motorpool_testengine.plugin import write_model

from tests.support import MOTORPOOL, Background, chat, motorpool, wait_until

SEED = SeedFrame(image=encode_png(8, 8))
TEXT = TextResult(
    text="x",
    finish_reason=FinishReason.STOP,
    usage=Usage(prompt_tokens=1, completion_tokens=1),
    timings=Timings(total_s=0.0),
)


def make_host(tmp_path: Path, extra: dict[str, object] | None = None, **settings: object) -> Host:
    """A host with the test engine (``settings`` override) and ``extra`` plugin objects."""
    options: dict[str, object] = {"home": tmp_path, "plugins": "testengine", "keep_alive_s": -1}
    return Host(Settings.model_validate({**options, **settings}), plugins=extra)


def spec(model_file: Path, name: str, plugin: str = "testengine", **options: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"name": name, "plugin": plugin, "source": str(model_file), "options": options}
    )


def finishes(target: Callable[[], object], timeout_s: float = 10.0) -> bool:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "m.mptest.json")


class Minimal:
    """Probe and load; subclasses add what they need."""

    capabilities = frozenset({Capability.CHAT})

    @hookimpl
    def motorpool_probe(self, deep: bool) -> ProbeReport:
        return ProbeReport(ready=True)

    @hookimpl
    def motorpool_load(self, source: object, context: object) -> LoadedModel[object]:
        return LoadedModel(handle=object(), capabilities=self.capabilities, memory_bytes=1)


class GatedLoad(Minimal):
    """A load that ignores cancellation and returns once released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.unloaded: list[object] = []

    @hookimpl
    def motorpool_load(self, source: object, context: object) -> LoadedModel[object]:
        self.entered.set()
        self.release.wait(10)
        return super().motorpool_load(source, context)

    @hookimpl
    def motorpool_unload(self, model: object) -> None:
        self.unloaded.append(model)

    @hookimpl
    def motorpool_generate(self, model: object, request: object, context: object) -> TextResult:
        return TEXT


# -- shutdown -------------------------------------------------------------------------------


def test_close_with_a_stream_nobody_iterates(tmp_path: Path, model_file: Path) -> None:
    host = make_host(tmp_path)
    generation = host.stream(spec(model_file, "m"), chat(max_tokens=50))
    next(generation)
    assert finishes(lambda: host.close(wait_s=0.5), timeout_s=5)
    assert host.models() == []


def test_close_with_an_open_session(tmp_path: Path, model_file: Path) -> None:
    host = make_host(tmp_path)
    session = host.session(spec(model_file, "w"), seed=SEED)
    session.step()
    assert host.cancel(session.id)  # sessions are cancellable by id too
    assert finishes(lambda: host.close(wait_s=0.5), timeout_s=5)
    assert host.models() == []


def test_an_interrupted_load_does_not_stick(tmp_path: Path, model_file: Path) -> None:
    host = make_host(tmp_path)

    def interrupt(_event: object) -> None:  # Ctrl-C while a progress bar draws
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        host.load(spec(model_file, "m"), on_progress=interrupt)
    assert host.models() == []
    assert host.load(spec(model_file, "m")).status is ModelStatus.READY
    assert finishes(host.close)


def test_a_load_that_ignores_cancel_is_unloaded_by_close(tmp_path: Path, model_file: Path) -> None:
    gated = GatedLoad()
    host = make_host(tmp_path, extra={"gated": gated})
    loader = Background(lambda: host.load(spec(model_file, "g", "gated")))
    assert gated.entered.wait(5)
    closer = Background(host.close)
    time.sleep(0.1)
    gated.release.set()  # the engine finishes despite the cancel
    closer.join()
    assert isinstance(loader.join(), Cancelled)
    assert host.models() == []
    assert gated.unloaded  # its memory was given back


def test_a_closing_host_takes_no_new_work(tmp_path: Path, model_file: Path) -> None:
    host = make_host(tmp_path)
    slow = spec(model_file, "slow", load_delay_s=3)
    loader = Background(lambda: host.load(slow))
    wait_until(lambda: bool(host.models()))
    waiter = Background(lambda: host.generate(slow, chat()))
    time.sleep(0.05)
    host.close()
    assert isinstance(loader.join(), Cancelled)
    assert isinstance(waiter.join(), Cancelled | HostClosing)
    assert host.models() == []
    with pytest.raises(HostClosing):
        host.load(spec(model_file, "late"))


# -- cancellation and the budget --------------------------------------------------------------


def test_cancel_reaches_a_request_waiting_for_its_model(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path) as host:
        slow = spec(model_file, "slow", load_delay_s=0.5)
        worker = Background(lambda: host.generate(slow, chat(), request_id="j"))
        wait_until(lambda: host.cancel("j"))
        assert isinstance(worker.join(), Cancelled)


def test_a_load_waits_while_an_unloading_model_holds_the_memory(
    tmp_path: Path, model_file: Path
) -> None:
    with make_host(tmp_path, memory_budget=1000) as host:
        slow = spec(model_file, "a", memory_bytes=600, token_delay_s=0.01)
        busy = host.stream(slow, chat(max_tokens=500))
        next(busy)
        unloader = threading.Thread(target=lambda: host.unload("a"))
        unloader.start()  # waits for the request on 'a'
        wait_until(lambda: host.model("a").status is ModelStatus.UNLOADING)
        loader = threading.Thread(target=lambda: host.load(spec(model_file, "b", memory_bytes=600)))
        loader.start()
        wait_until(lambda: "b" in {m.id for m in host.models()})
        time.sleep(0.1)
        # 'b' waits: loading it now would hold 1200 bytes of a 1000-byte budget
        assert host.model("b").status is ModelStatus.LOADING
        busy.close()
        unloader.join(5)
        loader.join(5)
        assert [(m.id, m.status) for m in host.models()] == [("b", ModelStatus.READY)]


def test_idle_unloads_publish_unloading_then_unloaded(tmp_path: Path, model_file: Path) -> None:
    statuses: list[ModelStatus] = []

    def on_event(event: HostEvent) -> None:
        if isinstance(event, HostModelEvent):
            statuses.append(event.model.status)

    with make_host(tmp_path, keep_alive_s=0) as host:
        host.subscribe(on_event)
        host.generate(spec(model_file, "k"), chat())
    assert statuses[-2:] == [ModelStatus.UNLOADING, ModelStatus.UNLOADED]


def test_a_stream_dropped_in_a_cycle_is_collected_inside_a_locked_section(
    tmp_path: Path, model_file: Path
) -> None:
    host = make_host(tmp_path)
    host.load(spec(model_file, "m"))
    gc.disable()  # collect exactly where the test says
    try:
        generation = host.stream("m", chat())
        generation.cycle = generation  # type: ignore[attr-defined]  # tracebacks make cycles easily
        del generation

        def collect_while_locked() -> None:
            with host._models._lock:  # any locked section that allocates may run the GC
                gc.collect()

        assert finishes(collect_while_locked, timeout_s=5)
    finally:
        gc.enable()
    wait_until(lambda: host.model("m").active_requests == 0)
    host.close()


# -- plugin bugs ------------------------------------------------------------------------------


class BadProbe(Minimal):
    @hookimpl
    def motorpool_probe(self, deep: bool) -> ProbeReport:
        return "ready"  # type: ignore[return-value]  # the bug under test

    @hookimpl
    def motorpool_generate(self, model: object, request: object, context: object) -> TextResult:
        return TEXT


class BadMatch(BadProbe):
    @hookimpl
    def motorpool_match(self, spec: object, path: object) -> int | None:
        return "high"  # type: ignore[return-value]  # the bug under test


class WorldOnly(Minimal):
    """Claims chat but can only open sessions, which fail."""

    capabilities = frozenset({Capability.WORLD, Capability.CHAT})

    @hookimpl
    def motorpool_open_session(
        self, model: object, config: object, seed: object, context: object
    ) -> object:
        raise RuntimeError("CUDA out of memory")


class WorldWithoutSessions(BadProbe):
    capabilities = frozenset({Capability.WORLD, Capability.CHAT})


class CleanupFails(Minimal):
    @hookimpl
    def motorpool_stream(self, model: object, request: object, context: object) -> object:
        try:
            while True:
                yield TokenEvent(text="x")
        finally:
            raise RuntimeError("engine clean-up failed")


def test_plugin_bugs_become_typed_errors(tmp_path: Path, model_file: Path) -> None:
    plugins = {
        "badprobe": BadProbe(),
        "badmatch": BadMatch(),
        "world": WorldOnly(),
        "nosessions": WorldWithoutSessions(),
    }
    with make_host(tmp_path, extra=plugins) as host:
        probes = {p.plugin: p for p in host.probe()}
        assert "not ProbeReport" in (probes["badprobe"].error or "")
        assert host.load(str(model_file)).plugin == "testengine"  # the bad score is ignored
        with pytest.raises(
            EngineFailed, match="implements none of motorpool_generate, motorpool_stream"
        ):
            host.generate(spec(model_file, "w", "world"), chat())
        with pytest.raises(EngineFailed, match="CUDA out of memory"):
            host.session(spec(model_file, "w", "world"), seed=SEED)
        with pytest.raises(EngineFailed, match="implements none of motorpool_open_session"):
            host.session(spec(model_file, "n", "nosessions"), seed=SEED)
        assert host.model("w").active_requests == 0


def test_a_stream_whose_cleanup_fails_still_closes(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, extra={"cleanup": CleanupFails()}) as host:
        generation = host.stream(spec(model_file, "c", "cleanup"), chat())
        next(generation)
        generation.close()
        assert host.model("c").active_requests == 0


class SlowStep:
    def __init__(self) -> None:
        self.stepping = threading.Event()
        self.closed_while_stepping: bool | None = None
        self.info = SessionInfo(width=8, height=8)

    def step(self, control: object) -> FrameBatch:
        self.stepping.set()
        time.sleep(0.2)
        self.stepping.clear()
        return FrameBatch(frame_id=0, frames=(b"jpeg",), width=8, height=8, generation_ms=1.0)

    def reset(self) -> None: ...

    def set_prompt(self, prompt: str) -> None: ...

    def close(self) -> None:
        self.closed_while_stepping = self.stepping.is_set()


class World(Minimal):
    capabilities = frozenset({Capability.WORLD})

    def __init__(self) -> None:
        self.session = SlowStep()

    @hookimpl
    def motorpool_open_session(
        self, model: object, config: object, seed: object, context: object
    ) -> SlowStep:
        return self.session


def test_closing_a_session_waits_for_the_running_step(tmp_path: Path, model_file: Path) -> None:
    world = World()
    with make_host(tmp_path, extra={"world": world}) as host:
        session = host.session(spec(model_file, "w", "world"), seed=SEED)
        consumer = threading.Thread(target=lambda: list(session.frames()))
        consumer.start()
        assert world.session.stepping.wait(2)
        session.close()  # e.g. the client went away
        consumer.join(2)
        assert world.session.closed_while_stepping is False


def test_an_invalid_repo_id_is_a_client_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with make_host(tmp_path) as host, pytest.raises(MotorpoolError) as info:
        host.load("testengine:owner/na..me")
    assert info.value.is_client_error


# -- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("run", "a" * 300, "hi"),  # too long for a path
        ("run", "~nosuchuser/m.gguf", "hi"),  # an unknown home folder
    ],
)
def test_odd_model_names_are_clean_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = motorpool(*args, home=tmp_path, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_output_into_a_missing_folder(tmp_path: Path, model_file: Path) -> None:
    out = tmp_path / "no" / "such" / "x.png"
    result = motorpool(
        "run",
        f"testengine-generate-only:{model_file}",
        "cat",
        "-o",
        str(out),
        home=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot write {out}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("models.toml", b'[models.x]\nsource = "\xff\xfe"\n'),
        ("config.toml", b"keep_alive_s = = 3\n"),
    ],
)
def test_unreadable_settings_files(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    result = motorpool("plugins", home=tmp_path, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_a_load_exits(tmp_path: Path, model_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTORPOOL_")}
    process = subprocess.Popen(
        [str(MOTORPOOL), "run", str(model_file), "hi", "--option", "load_delay_s=20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**env, "MOTORPOOL_HOME": str(tmp_path), "MOTORPOOL_LOG_LEVEL": "info"},
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until the load has started
        if b"loading model" in line:
            break
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("`motorpool run` hangs after Ctrl-C during a load")
    assert process.returncode != 0


class CountsStepsAfterUnload(Minimal):
    """An engine that counts steps taken after its model was unloaded (freed memory)."""

    capabilities = frozenset({Capability.CHAT, Capability.WORLD})

    def __init__(self) -> None:
        self.freed = False
        self.steps_after_free = 0

    @hookimpl
    def motorpool_unload(self, model: object) -> None:
        self.freed = True

    @hookimpl
    def motorpool_stream(self, model: object, request: object, context: object) -> object:
        while True:
            self.steps_after_free += self.freed
            yield TokenEvent(text="x")

    @hookimpl
    def motorpool_open_session(
        self, model: object, config: object, seed: object, context: object
    ) -> SlowStep:
        engine = self

        class Counting(SlowStep):
            def step(self, control: object) -> FrameBatch:
                engine.steps_after_free += engine.freed
                return FrameBatch(
                    frame_id=0, frames=(b"jpeg",), width=8, height=8, generation_ms=0.0
                )

        return Counting()


def test_no_engine_step_after_close_unloaded_a_paused_stream(
    tmp_path: Path, model_file: Path
) -> None:
    engine = CountsStepsAfterUnload()
    host = make_host(tmp_path, extra={"engine": engine})
    generation = host.stream(spec(model_file, "e", "engine"), chat())
    next(generation)  # paused mid-stream
    host.close(wait_s=0.2)  # gives up waiting and unloads the model
    assert engine.freed
    assert isinstance(list(generation)[-1], ErrorEvent)  # the reader carries on: cancelled
    session_engine = CountsStepsAfterUnload()
    host = make_host(tmp_path, extra={"engine": session_engine})
    session = host.session(spec(model_file, "w", "engine"), seed=SEED)
    host.close(wait_s=0.2)
    with pytest.raises(Cancelled):
        session.step()
    assert engine.steps_after_free == session_engine.steps_after_free == 0


def test_gc_of_a_dropped_generate_only_stream_inside_a_locked_section(
    tmp_path: Path, model_file: Path
) -> None:
    host = make_host(tmp_path, plugins="testengine-generate-only")
    host.subscribe(lambda _event: host.models())  # a listener that reads host state
    slow = spec(model_file, "g", "testengine-generate-only", step_delay_s=0.3)
    gc.disable()
    try:
        generation = host.stream(slow, ImageRequest(prompt="x", steps=20))
        next(generation)  # the worker thread is inside motorpool_generate
        generation.cycle = generation  # type: ignore[attr-defined]  # any reference cycle
        del generation

        def collect_while_locked() -> None:
            with host._models._lock:
                gc.collect()

        assert finishes(collect_while_locked, timeout_s=5)
    finally:
        gc.enable()
    wait_until(lambda: host.model("g").active_requests == 0)  # freed once the engine stops
    host.close()


class BrokenStep(SlowStep):
    def step(self, control: object) -> FrameBatch:
        raise RuntimeError("CUDA error: illegal memory access")


class BrokenWorld(Minimal):
    capabilities = frozenset({Capability.WORLD})

    @hookimpl
    def motorpool_open_session(
        self, model: object, config: object, seed: object, context: object
    ) -> SlowStep:
        return BrokenStep()


def test_an_engine_error_in_a_session_step_is_typed(tmp_path: Path, model_file: Path) -> None:
    with make_host(tmp_path, extra={"world": BrokenWorld()}) as host:
        with host.session(spec(model_file, "w", "world"), seed=SEED) as session:
            with pytest.raises(EngineFailed, match="illegal memory access"):
                session.step()
            with pytest.raises(EngineFailed):
                next(session.frames())
        assert host.model("w").active_requests == 0


def test_an_empty_model_name(tmp_path: Path) -> None:
    with make_host(tmp_path) as host, pytest.raises(MotorpoolError):
        host.spec("")
    for args in (("run", "", "hi"), ("run", "", "hi", "--plugin", "testengine")):
        result = motorpool(*args, home=tmp_path, check=False)
        assert result.returncode == 2  # a usage error
        assert "MODEL" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stop", ["unload", "cancel_load"])
def test_requests_waiting_for_a_stopped_load_do_not_restart_it(
    tmp_path: Path, model_file: Path, stop: str
) -> None:
    with make_host(tmp_path) as host:
        slow = spec(model_file, "s", load_delay_s=30)
        loader = Background(lambda: host.load(slow))
        wait_until(lambda: bool(host.models()))
        waiter = Background(lambda: host.generate(slow, chat()))
        time.sleep(0.1)  # the request now waits for the load
        getattr(host, stop)("s")
        assert isinstance(loader.join(), Cancelled)
        assert isinstance(waiter.join(), Cancelled)
        assert host.models() == []
