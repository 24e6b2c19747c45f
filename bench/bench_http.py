"""What the HTTP server adds to a text request: the same request over HTTP and in process.

A live uvicorn server (``create_app`` on 127.0.0.1, an ephemeral port) runs in a child
process over a temp home whose ``models.toml`` names two aliases of one test-engine
model: ``fast`` (tokens as fast as the engine makes them, so what is measured is the cost
per token) and ``paced`` (``token_delay_s = 0.005``, closer to a real model). A second
child, the client, sends the same chat request (256 tokens, greedy, fixed seed) four
ways. The baseline is its own ``Host`` over the same settings (``Host.stream`` /
``Host.generate``). Then the server, through httpx (SSE ``data:`` lines parsed until
``[DONE]``), through the openai SDK when it is installed, and without streaming. Every
way must give the baseline's text. Repetitions are interleaved, and each figure is the
median.

TTFT is the time from the call to the first token with text (the role-only chunk that
opens a chat stream does not count). Tokens/s is the tokens over the whole request, from
the call to the end of the stream. The server and the client are separate processes, as
in real use, so the client's parsing is not charged to the server.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from _common import PYTHON, Row, clean_env, repeats, run_python_json

TOKENS = 256
SEED = 1234
PACED_DELAY_S = 0.005
TTFT_OVERHEAD_MS = 5.0
MIN_THROUGHPUT = 0.97
LATENCY_OVERHEAD_MS = 5.0
FAST_REPEATS = 5
"""The fast regime is cheap: it runs this many times the repetitions of the paced one."""
START_TIMEOUT_S = 30
NEEDED = ("uvicorn", "fastapi", "httpx", "motorpool_testengine")

MODELS_TOML = """
[models.fast]
plugin = "testengine"
source = "{model}"

[models.paced]
plugin = "testengine"
source = "{model}"
options = {{ token_delay_s = {delay} }}
"""

_SETTINGS = """
from pathlib import Path
from motorpool import Settings

home = Path(ARGS["home"])
settings = Settings(
    home=home, models_file=home / "models.toml", plugins="testengine",
    keep_alive_s=-1, log_level="warning",
)
"""

_SERVER = """
import sys, threading, time
import uvicorn
from motorpool.server import create_app
from motorpool_testengine.plugin import write_model

model = write_model(home / "m.mptest.json", words=ARGS["tokens"] * 2)  # no <eos> too soon
(home / "models.toml").write_text(ARGS["models_toml"].format(model=model), encoding="utf-8")
app = create_app(settings)
config = uvicorn.Config(
    app, host="127.0.0.1", port=0, log_config=None, access_log=False, server_header=False
)
server = uvicorn.Server(config)
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
deadline = time.monotonic() + 20
while not server.started:
    if not thread.is_alive() or time.monotonic() > deadline:
        sys.exit("the server did not start")
    time.sleep(0.01)
port = server.servers[0].sockets[0].getsockname()[1]
print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.should_exit = True
thread.join(15)
"""

_CLIENT = """
import statistics, time
import httpx
from motorpool import Host
from motorpool.types import ChatRequest, ErrorEvent, TokenEvent

try:
    import openai
except ImportError:
    openai = None

now = time.perf_counter
messages = [{"role": "user", "content": "Tell me a long story."}]
request = ChatRequest.model_validate({
    "messages": messages, "max_tokens": ARGS["tokens"],
    "sampling": {"temperature": 0, "seed": ARGS["seed"]},
})
url = ARGS["url"] + "/v1/chat/completions"
http = httpx.Client(timeout=60)
sdk = None
if openai is not None:
    sdk = openai.OpenAI(base_url=ARGS["url"] + "/v1", api_key="unused", max_retries=0)


def body(model, stream):
    return {"model": model, "messages": messages, "max_tokens": ARGS["tokens"],
            "temperature": 0, "seed": ARGS["seed"], "stream": stream}


def api_stream(model):
    started, first, pieces = now(), None, []
    for event in host.stream(model, request):
        if isinstance(event, TokenEvent):
            first = first if first is not None else now() - started
            pieces.append(event.text)
        elif isinstance(event, ErrorEvent):
            raise RuntimeError(f"Host.stream failed: {event.error}")
    return first, now() - started, "".join(pieces)


def http_stream(model):
    started, first, pieces, done = now(), None, [], False
    with http.stream("POST", url, json=body(model, True)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"the stream failed: {chunk}")
            text = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if text:
                first = first if first is not None else now() - started
                pieces.append(text)
    if not done:
        raise RuntimeError("the SSE stream ended without [DONE]")
    return first, now() - started, "".join(pieces)


def sdk_stream(model):
    started, first, pieces = now(), None, []
    stream = sdk.chat.completions.create(
        model=model, messages=messages, max_tokens=ARGS["tokens"], temperature=0,
        seed=ARGS["seed"], stream=True,
    )
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            first = first if first is not None else now() - started
            pieces.append(text)
    return first, now() - started, "".join(pieces)


def api_whole(model):
    started = now()
    result = host.generate(model, request)
    return None, now() - started, result.text


def http_whole(model):
    started = now()
    response = http.post(url, json=body(model, False))
    response.raise_for_status()
    return None, now() - started, response.json()["choices"][0]["message"]["content"]


def health(_model):
    started = now()
    http.get(ARGS["url"] + "/health").raise_for_status()
    return None, now() - started, None


streams = {"api": api_stream, "http": http_stream}
if sdk is not None:
    streams["sdk"] = sdk_stream
plans = (  # (what, model, ways, repetitions)
    ("fast", "fast", streams, ARGS["runs"] * ARGS["fast_repeats"]),
    ("paced", "paced", streams, ARGS["runs"]),
    ("whole", "fast", {"api": api_whole, "http": http_whole}, ARGS["runs"] * ARGS["fast_repeats"]),
    ("health", None, {"http": health}, ARGS["runs"] * ARGS["fast_repeats"]),
)
out = {}
with Host(settings) as host:
    host.load("fast")
    host.load("paced")
    for what, model, ways, runs in plans:
        texts = {name: way(model)[2] for name, way in ways.items()}  # warm-up, and a check
        if model is not None and len(set(texts.values())) != 1:
            raise RuntimeError(f"{what}: the ways gave different texts: {texts}")
        if model is not None and len(texts["api"].split()) != ARGS["tokens"]:
            raise RuntimeError(f"{what}: expected {ARGS['tokens']} tokens: {texts['api']!r}")
        measured = {name: [] for name in ways}
        for _ in range(runs):  # interleaved, so drift hits every way alike
            for name, way in ways.items():
                measured[name].append(way(model)[:2])
        for name, runs_of in measured.items():
            out[f"{what}.{name}.total"] = statistics.median(m[1] for m in runs_of)
            if runs_of[0][0] is not None:
                out[f"{what}.{name}.ttft"] = statistics.median(m[0] for m in runs_of)
http.close()
print(json.dumps(out))
"""


def _program(body: str, args: Mapping[str, object]) -> str:
    return f"import json\nARGS = json.loads({json.dumps(args)!r})\n{_SETTINGS}{body}"


@contextmanager
def _live_server(home: Path, env: Mapping[str, str]) -> Iterator[str]:
    """A server child over ``home`` (it writes the model and models file); yields its URL."""
    args = {
        "home": str(home),
        "tokens": TOKENS,
        "models_toml": MODELS_TOML.replace("{delay}", str(PACED_DELAY_S)),
    }
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            [PYTHON, "-c", _program(_SERVER, args)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            line = child.stdout.readline()  # the child exits by itself if it cannot start
            if not line:
                child.wait(START_TIMEOUT_S)
                errors.seek(0)
                raise RuntimeError(f"the server child failed:\n{errors.read().decode()}")
            yield str(json.loads(line)["url"])
        finally:
            child.stdin.close()
            try:
                child.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="motorpool-bench-http-") as tmp:
        home = Path(tmp)
        env = clean_env(MOTORPOOL_HOME=str(home))
        with _live_server(home, env) as url:
            args = {
                "home": str(home),
                "url": url,
                "tokens": TOKENS,
                "seed": SEED,
                "runs": repeats(),
                "fast_repeats": FAST_REPEATS,
            }
            measured = run_python_json(_program(_CLIENT, args), env)
    return {key: float(str(value)) for key, value in measured.items()}


def _stream_rows(m: Mapping[str, float], regime: str, way: str) -> list[Row]:
    label = {"http": "SSE httpx", "sdk": "SSE openai SDK"}[way] + f", {regime}"
    if f"{regime}.{way}.ttft" not in m:
        return [Row(f"{label}: -", None, "ms", note="the openai SDK is not installed")]
    targeted = way == "http"  # the SDK's rows add its own parsing: shown, not judged
    paced = regime == "paced"
    api_total, total = m[f"{regime}.api.total"], m[f"{regime}.{way}.total"]
    api_ttft, ttft = m[f"{regime}.api.ttft"] * 1000, m[f"{regime}.{way}.ttft"] * 1000
    engine = f", engine {PACED_DELAY_S * 1000:g} ms/token" if paced else ", engine at full speed"
    rows = [
        Row(f"{label}: TTFT", ttft, "ms", api_ttft, "Host.stream"),
        Row(
            f"{label}: TTFT overhead",
            ttft - api_ttft,
            "ms",
            target=TTFT_OVERHEAD_MS if targeted else None,
            note="HTTP TTFT - Host.stream TTFT" + ("" if targeted else ", SDK included"),
        ),
        Row(
            f"{label}: tokens/s",
            TOKENS / total,
            "tok/s",
            TOKENS / api_total,
            "Host.stream",
            min_ratio=MIN_THROUGHPUT if targeted and paced else None,
            note=f"{TOKENS} tokens over the whole request{engine}",
        ),
    ]
    if not paced:
        rows.append(
            Row(
                f"{label}: overhead per token",
                (total - api_total) / TOKENS * 1e6,
                "us",
                note="(HTTP - Host.stream) / tokens, client parsing included",
            )
        )
    return rows


def run() -> list[Row]:
    """One chat request in process and over HTTP: streamed fast and paced, and whole."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("HTTP server: -", None, "ms", note=f"not installed: {', '.join(missing)}")]
    m = _measure()
    rows: list[Row] = []
    for regime in ("fast", "paced"):
        rows += _stream_rows(m, regime, "http")
        rows += _stream_rows(m, regime, "sdk")
    api_whole, http_whole = m["whole.api.total"] * 1000, m["whole.http.total"] * 1000
    rows += [
        Row("non-streaming, fast: latency", http_whole, "ms", api_whole, "Host.generate"),
        Row(
            "non-streaming, fast: latency overhead",
            http_whole - api_whole,
            "ms",
            target=LATENCY_OVERHEAD_MS,
            note=f"HTTP - Host.generate, {TOKENS} tokens, httpx",
        ),
        Row(
            "HTTP round trip, GET /health",
            m["health.http.total"] * 1000,
            "ms",
            note="the floor under every HTTP figure above",
        ),
    ]
    return rows
