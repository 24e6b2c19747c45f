"""Keep the docs true: hooks, settings, CLI commands and the example plugin match the code."""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uv
from motorpool import Host, Settings, hookspecs
from motorpool.cli import main as cli_main
from motorpool.engine import Context, ResolvedSource
from motorpool.errors import InvalidModel, InvalidOptions, MotorpoolError
from motorpool.types import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    ErrorEvent,
    ModelOrigin,
    ModelSpec,
    PluginState,
    ResultEvent,
    TextResult,
    TokenEvent,
)

DOCS = Path(__file__).parent.parent / "docs"
PLUGINS_MD = DOCS / "plugins.md"
GUIDE_MD = DOCS / "guide.md"
SERVER_MD = DOCS / "server.md"
EXAMPLE_MARKER = "<!-- example-plugin -->"
HOOK_HEADING = re.compile(r"^###\s+(motorpool_\w+)\(([^)]*)\)\s*$", re.MULTILINE)


def _hookspecs() -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(function).parameters)
        for name, function in vars(hookspecs).items()
        if name.startswith("motorpool_") and inspect.isfunction(function)
    }


def _documented_hooks() -> dict[str, list[str]]:
    headings = HOOK_HEADING.findall(PLUGINS_MD.read_text(encoding="utf-8"))
    names = [name for name, _ in headings]
    assert len(names) == len(set(names)), f"a hook is documented twice: {names}"
    return {name: [p.strip() for p in params.split(",") if p.strip()] for name, params in headings}


def _code_block(text: str, language: str, after: str) -> str:
    """The first fenced block of ``language`` after the marker ``after``."""
    start = text.index(after)
    match = re.search(rf"^```{language}\n(.*?)^```$", text[start:], re.DOTALL | re.MULTILINE)
    assert match is not None, f"no ```{language} block after {after}"
    return match.group(1)


# -------------------------------------------------------------------------------------------
# Hooks, settings and commands are documented, and only those that exist
# -------------------------------------------------------------------------------------------


def test_every_hook_is_documented_with_its_parameters() -> None:
    specs = _hookspecs()
    documented = _documented_hooks()
    assert specs, "no hookspecs found"
    for name, params in specs.items():
        assert name in documented, f"docs/plugins.md has no heading `### {name}(...)`"
        assert documented[name] == params, (
            f"docs/plugins.md documents {name}({', '.join(documented[name])}), "
            f"the spec is {name}({', '.join(params)})"
        )


def test_no_heading_for_a_hook_that_does_not_exist() -> None:
    extra = sorted(set(_documented_hooks()) - set(_hookspecs()))
    assert not extra, f"docs/plugins.md documents hooks that do not exist: {extra}"


def test_every_setting_has_its_environment_variable_in_the_guide() -> None:
    guide = GUIDE_MD.read_text(encoding="utf-8")
    missing = [
        f"MOTORPOOL_{field.upper()}"
        for field in Settings.model_fields
        if f"MOTORPOOL_{field.upper()}" not in guide
    ]
    assert not missing, f"docs/guide.md does not mention {missing}"


def test_every_cli_command_is_in_the_guide() -> None:
    guide = GUIDE_MD.read_text(encoding="utf-8")
    commands = sorted(cli_main.commands)
    assert commands
    missing = [name for name in commands if f"motorpool {name}" not in guide]
    assert not missing, f"docs/guide.md does not mention {[f'motorpool {n}' for n in missing]}"


# -------------------------------------------------------------------------------------------
# docs/server.md names every route, error code, close code, message, metric and option
# -------------------------------------------------------------------------------------------

ENDPOINT_ROW = re.compile(
    r"^\| (GET|POST|PUT|PATCH|DELETE|WebSocket) \| `(/[^`]*)` \|", re.MULTILINE
)


def _walk_routes(routes: Sequence[object]) -> Iterator[object]:
    """Routes, looking into included routers (FastAPI keeps them as one wrapper route)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk_routes(inner.routes)
        else:
            yield route


def _server_endpoints(home: Path) -> set[tuple[str, str]]:
    from fastapi.routing import APIWebSocketRoute  # noqa: PLC0415 - the server extra
    from motorpool.server import create_app  # noqa: PLC0415

    app = create_app(Settings(home=home, plugins=""), configure_logs=False)
    endpoints = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    sockets = {
        ("WebSocket", route.path)
        for route in _walk_routes(app.routes)
        if isinstance(route, APIWebSocketRoute)
    }
    assert sockets, "no WebSocket route found: has FastAPI's routing changed?"
    return endpoints | sockets


def test_every_server_endpoint_is_in_the_server_doc_table(isolated_home: Path) -> None:
    served = _server_endpoints(isolated_home)
    documented = set(ENDPOINT_ROW.findall(SERVER_MD.read_text(encoding="utf-8")))
    missing = sorted(served - documented)
    assert not missing, f"docs/server.md has no row '| METHOD | `path` |' for {missing}"
    stale = sorted(documented - served)
    assert not stale, f"docs/server.md documents endpoints the server lacks: {stale}"


def _error_classes() -> Iterator[type[MotorpoolError]]:
    import motorpool.server  # noqa: F401, PLC0415 - defines the server's own errors

    pending: list[type[MotorpoolError]] = [MotorpoolError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("motorpool."):  # not errors of plugins or tests
            yield cls
        pending.extend(cls.__subclasses__())


def test_every_error_code_is_in_the_server_doc() -> None:
    text = SERVER_MD.read_text(encoding="utf-8")
    rows = {int(status): row for status, row in re.findall(r"^\| (\d{3}) \| (.*)$", text, re.M)}
    for cls in _error_classes():
        assert cls.status in rows, f"docs/server.md has no row for status {cls.status}"
        assert f"`{cls.code}`" in rows[cls.status], (
            f"docs/server.md does not list `{cls.code}` under {cls.status}"
        )


def test_the_session_protocol_is_in_the_server_doc() -> None:
    from motorpool.server.wire.sessions import (  # noqa: PLC0415
        ClientMessage,
        CloseCode,
        FrameBatchHeader,
        ServerMessage,
    )

    text = SERVER_MD.read_text(encoding="utf-8")
    for code in CloseCode:
        assert f"\n| {code.value} |" in text, f"docs/server.md has no close code {code.value}"
    for union in (ClientMessage, ServerMessage):
        (members,) = typing.get_args(union)[:1]
        for message in typing.get_args(members):
            kind = message.model_fields["type"].default
            assert f"\n| `{kind}` |" in text, f"docs/server.md has no message row `{kind}`"
    for field in FrameBatchHeader.model_fields:
        assert f"`{field}`" in text, f"docs/server.md does not describe the header's {field}"


def test_every_metric_and_serve_option_is_in_the_server_doc() -> None:
    from motorpool.server._observability import Metrics  # noqa: PLC0415

    text = SERVER_MD.read_text(encoding="utf-8")
    families = list(Metrics(list).registry.collect())
    assert families
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in text, f"docs/server.md does not list the metric {name}"
    options = [o for p in cli_main.commands["serve"].params for o in p.opts if o != "--help"]
    assert options
    missing = [option for option in options if f"`{option}" not in text]
    assert not missing, f"docs/server.md does not mention {missing}"


# -------------------------------------------------------------------------------------------
# The example plugin of docs/plugins.md registers and runs
# -------------------------------------------------------------------------------------------


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No config file or MOTORPOOL_* variable of the user's leaks into the host."""
    for key in [k for k in os.environ if k.startswith("MOTORPOOL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MOTORPOOL_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def example_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The example plugin's module, executed from the doc's python block."""
    source = _code_block(PLUGINS_MD.read_text(encoding="utf-8"), "python", EXAMPLE_MARKER)
    module = types.ModuleType("motorpool_llama_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # pydantic resolves names here
    exec(compile(source, str(PLUGINS_MD), "exec"), module.__dict__)
    return module


def _example_host(home: Path, module: types.ModuleType) -> Host:
    # The allow-list names the example: with plugins="" discovery drops `plugins=` objects
    # too, and any other list would import the installed test plugins as well.
    return Host(Settings(plugins="example", home=home), plugins={"example": module})


def test_example_plugin_registers(isolated_home: Path, example_module: types.ModuleType) -> None:
    with _example_host(isolated_home, example_module) as host:
        records = {record.name: record for record in host.plugins}
        assert records["example"].state is PluginState.LOADED, records["example"]
        assert set(records["example"].hooks) >= {
            "motorpool_probe",
            "motorpool_load",
            "motorpool_stream",
        }


def test_example_plugin_imports_without_its_engine(
    isolated_home: Path, example_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # find_spec and import see no engine
    with _example_host(isolated_home, example_module) as host:
        (probe,) = [p for p in host.probe() if p.plugin == "example"]
        assert probe.report is not None
        assert not probe.report.ready
        assert probe.report.missing[0].install == "pip install llama-cpp-python"


class FakeLlama:
    """Stands in for ``llama_cpp.Llama``, with the same call shapes and chunk dicts."""

    instances: list[FakeLlama] = []  # noqa: RUF012 - a test's record of what was made

    def __init__(self, model_path: str, n_ctx: int, n_gpu_layers: int, verbose: bool) -> None:
        self.model_path, self.n_ctx, self.n_gpu_layers = model_path, n_ctx, n_gpu_layers
        self.verbose = verbose
        self.closed = False
        self.calls: list[dict[str, Any]] = []
        FakeLlama.instances.append(self)

    def tokenize(self, text: bytes) -> list[int]:
        return list(range(len(text.split())))

    def create_completion(
        self, prompt: str, stream: bool, **params: Any
    ) -> Iterator[dict[str, Any]]:
        assert stream
        self.calls.append({"prompt": prompt, **params})
        words = ["one", " two", " three", " four"][: params["max_tokens"]]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield {"choices": [{"text": word, "finish_reason": "length" if last else None}]}

    def create_chat_completion(
        self, messages: list[dict[str, str]], stream: bool, **params: Any
    ) -> Iterator[dict[str, Any]]:
        assert stream
        self.calls.append({"messages": messages, **params})
        yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        for word in ["Hello", "!"][: params["max_tokens"]]:
            yield {"choices": [{"delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> type[FakeLlama]:
    module = types.ModuleType("llama_cpp")
    module.__spec__ = importlib.machinery.ModuleSpec("llama_cpp", None)
    module.__version__ = "0.0-fake"
    module.Llama = FakeLlama
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    FakeLlama.instances = []
    return FakeLlama


def _gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def test_example_plugin_runs_through_the_host(
    isolated_home: Path, example_module: types.ModuleType, fake_llama_cpp: type[FakeLlama]
) -> None:
    model = _gguf(isolated_home / "tiny.gguf")
    with _example_host(isolated_home, example_module) as host:
        (probe,) = [p for p in host.probe(deep=True) if p.plugin == "example"]
        assert probe.report is not None
        assert probe.report.ready
        assert probe.report.engine_version == "0.0-fake"

        # Found by motorpool_match, no plugin named.
        info = host.load(ModelSpec(source=str(model), options={"n_ctx": 512}))
        assert info.plugin == "example"
        (llm,) = fake_llama_cpp.instances
        assert (llm.model_path, llm.n_ctx) == (str(model), 512)

        chat = ChatRequest(messages=(ChatMessage(role="user", content="Hi"),))
        result = host.generate(info.id, chat)
        assert isinstance(result, TextResult)
        assert (result.text, result.finish_reason.value) == ("Hello!", "stop")

        events = list(host.stream(info.id, CompletionRequest(prompt="Count", max_tokens=3)))
        assert [type(e) for e in events] == [TokenEvent] * 3 + [ResultEvent]
        final = events[-1]
        assert isinstance(final, ResultEvent)
        assert isinstance(final.result, TextResult)
        assert final.result.text == "one two three"
        assert final.result.finish_reason.value == "length"

        host.unload(info.id)
        assert llm.closed


def test_example_plugin_cancels_within_one_token(
    isolated_home: Path, example_module: types.ModuleType, fake_llama_cpp: type[FakeLlama]
) -> None:
    model = _gguf(isolated_home / "tiny.gguf")
    del fake_llama_cpp
    with _example_host(isolated_home, example_module) as host:
        generation = host.stream(f"example:{model}", CompletionRequest(prompt="Count"))
        first = next(generation)
        assert isinstance(first, TokenEvent)
        generation.cancel()
        rest = list(generation)
        assert len(rest) <= 2
        assert isinstance(rest[-1], ErrorEvent)
        assert rest[-1].error.code == "cancelled"


def test_example_plugin_rejects_bad_options_and_files(
    tmp_path: Path, example_module: types.ModuleType, fake_llama_cpp: type[FakeLlama]
) -> None:
    """The example's typed errors, from its load hook (what the host reports as they are)."""
    del fake_llama_cpp
    model = _gguf(tmp_path / "tiny.gguf")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")

    def load(path: Path, **options: object) -> object:
        spec = ModelSpec(plugin="example", source=str(path), options=options)
        source = ResolvedSource(spec=spec, path=path, origin=ModelOrigin.LOCAL)
        return example_module.motorpool_load(source=source, context=Context("test-load"))

    with pytest.raises(InvalidOptions) as bad_options:
        load(model, n_ctx=1)
    assert bad_options.value.message.startswith("invalid model options: n_ctx:")
    assert bad_options.value.hint == "accepted options: n_ctx, n_gpu_layers"
    with pytest.raises(InvalidOptions):
        load(model, no_such_option=1)
    with pytest.raises(InvalidModel):
        load(not_gguf)
    with pytest.raises(InvalidModel):
        load(tmp_path)  # a folder with two .gguf files


def test_example_plugin_installs_from_its_pyproject(tmp_path: Path) -> None:
    """Build the doc's pyproject + module as a package: its entry point is found."""
    text = PLUGINS_MD.read_text(encoding="utf-8")
    project = tmp_path / "motorpool-llama-example"
    package = project / "src" / "motorpool_llama_example"
    package.mkdir(parents=True)
    (project / "pyproject.toml").write_text(_code_block(text, "toml", EXAMPLE_MARKER))
    (package / "__init__.py").write_text(_code_block(text, "python", EXAMPLE_MARKER))
    target = tmp_path / "site"
    install = [uv.find_uv_bin(), "pip", "install", "--quiet", "--no-deps"]
    install += ["--python", sys.executable, "--target", str(target), str(project)]
    done = subprocess.run(install, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    script = (  # llama_cpp is not installed: the plugin must still import (lazy engine)
        "import json; from motorpool import Host, Settings; "
        "host = Host(Settings(plugins='llama-example')); "
        "print(json.dumps([r.model_dump(mode='json') for r in host.plugins]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTORPOOL_")}
    env |= {
        "PYTHONPATH": str(target),
        "MOTORPOOL_HOME": str(tmp_path),
        "MOTORPOOL_LOG_LEVEL": "error",
    }
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    records = {r["name"]: r for r in json.loads(ran.stdout)}
    example = records["llama-example"]
    assert example["state"] == "loaded", example
    assert example["distribution"] == "motorpool-llama-example"
