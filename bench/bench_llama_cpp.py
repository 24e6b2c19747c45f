"""The llama.cpp plugin against llama-cpp-python itself: direct, Python API, HTTP, its server.

One GGUF, one prompt, one sampling (temperature 0.8, top-p 0.95, top-k 40, min-p 0.05,
seed 1234, end tokens biased away so every run makes exactly 128 tokens), four ways:

- ``direct``: ``llama_cpp.Llama.create_completion(stream=True)``, the baseline;
- ``api``: motorpool's ``Host.stream`` over the llama-cpp plugin;
- ``http``: ``motorpool serve`` streaming ``/v1/completions`` (SSE) on 127.0.0.1;
- ``llama_cpp.server``: ``python -m llama_cpp.server``, the same request.

Each way runs one stream, then four concurrent ones (one llama.cpp context serves them in
turn everywhere; the direct baseline runs them back to back). Tokens/s is all tokens over
the wall time; TTFT is the mean time from sending to the first text. Both servers run in
their own processes, the client in a third; repetitions are interleaved and the median
is reported. motorpool's streaming guards stay on (their cost is part of the figure).

Models: the tiny test model, and a random-weight model with Qwen2.5-0.5B's dimensions
(Q4_K_M, built once into ``~/.cache/motorpool-bench``; speed does not depend on the
weights' values). ``BENCH_LLAMA_MODEL=/path/to/model.gguf`` benchmarks any other GGUF;
``BENCH_LLAMA_THREADS`` sets llama.cpp's threads (default 1), ``BENCH_LLAMA_GPU_LAYERS``
its offload (default 0; -1 = all), ``BENCH_LLAMA_SIZES=tiny`` skips the real-size model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import PYTHON, Row, clean_env, free_port, repeats, run_python_json

TOKENS = 128
STREAMS = 4
SEED = 1234
CONTEXT = 2048
PROMPT = "The history of the motor pool begins with"
MIN_API = 0.99
MIN_HTTP = 0.97
START_TIMEOUT_S = 300
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "motorpool-bench"
NEEDED = ("llama_cpp", "motorpool_llama_cpp", "gguf", "tokenizers", "httpx", "uvicorn")

_BUILD = """
import json, sys
from pathlib import Path
import llama_cpp
from motorpool_llama_cpp.tiny import QWEN2_5_0_5B, TINY, build_gguf

size, out = ARGS["size"], Path(ARGS["out"])
if size == "tiny":
    build_gguf(out, TINY)
else:
    f16 = out.with_suffix(".f16.gguf")
    build_gguf(f16, QWEN2_5_0_5B)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params) != 0:
        sys.exit("quantising failed")
    f16.unlink()
print(json.dumps({"path": str(out)}))
"""

_CLIENT = """
import gc, json, statistics, threading, time
import httpx, llama_cpp
import numpy as np
from motorpool import Host, Settings
from motorpool.types import CompletionRequest, ErrorEvent, ResultEvent, TokenEvent

now = time.perf_counter
A = ARGS
llama = llama_cpp.Llama(
    A["model"], n_ctx=A["context"], n_threads=A["threads"], n_threads_batch=A["threads"],
    n_gpu_layers=A["gpu_layers"], verbose=False,
)
vocab = llama_cpp.llama_model_get_vocab(llama.model)
no_end = {t: -100.0 for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
sampling = dict(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0)
request = CompletionRequest.model_validate({
    "prompt": A["prompt"], "max_tokens": A["tokens"],
    "sampling": {**sampling, "seed": A["seed"], "logit_bias": no_end},
})
body = {"prompt": A["prompt"], "max_tokens": A["tokens"], "seed": A["seed"], "stream": True,
        "logit_bias": {str(t): b for t, b in no_end.items()}, **sampling}
http = httpx.Client(timeout=600)


def direct(_start):
    first, tokens = None, 0
    for chunk in llama.create_completion(
        A["prompt"], max_tokens=A["tokens"], seed=A["seed"], stream=True, logit_bias=no_end,
        temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0,
    ):
        tokens += 1
        if first is None and chunk["choices"][0]["text"]:
            first = now() - _start
    return first, tokens


def api(_start):
    first, tokens = None, 0
    for event in host.stream("bench", request):
        if isinstance(event, TokenEvent) and first is None:
            first = now() - _start
        elif isinstance(event, ResultEvent):
            tokens = event.result.usage.completion_tokens
        elif isinstance(event, ErrorEvent):
            raise RuntimeError(event.error.message)
    return first, tokens


def generate(_start):
    # The fastest Python path there is: llama-cpp-python's own token loop, no extras.
    first, tokens = None, 0
    llama.set_seed(A["seed"])
    prompt = llama.tokenize(A["prompt"].encode(), add_bos=True, special=True)
    for token in llama.generate(prompt, temp=0.8, top_p=0.95, top_k=40, min_p=0.05,
                                repeat_penalty=1.0, logits_processor=bias_processor):
        tokens += 1
        if first is None and llama.detokenize([token]):
            first = now() - _start
        if tokens == A["tokens"]:
            break
    return first, tokens


ids = np.fromiter(no_end, dtype=np.intc)
values = np.fromiter(no_end.values(), dtype=np.single)


def add_bias(_ids, scores):
    scores[ids] += values
    return scores


bias_processor = llama_cpp.LogitsProcessorList([add_bias])


def sse(url, model):
    def stream(_start):
        first, chunks, finish = None, 0, None
        with http.stream("POST", url + "/v1/completions", json={**body, "model": model}) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("text"):
                    chunks += 1
                    first = first if first is not None else now() - _start
                if choices and choices[0].get("finish_reason"):
                    finish = choices[0]["finish_reason"]
        # A chunk is not always a token (a character split over tokens waits for the
        # rest); "length" says all max_tokens were made.
        return first, A["tokens"] if finish == "length" else chunks
    return stream


def settle():
    # Let the last measurement's threads finish and its garbage go, so that no way is
    # measured while the one before it is still tidying up in this process.
    gc.collect()
    time.sleep(0.2)


def one(way):
    settle()
    start = now()
    first, tokens = way(start)
    return {"ttft": first, "tps": tokens / (now() - start), "tokens": tokens}


def many(way, serial):
    settle()
    results, start = [None] * A["streams"], now()

    def run(i):
        results[i] = way(start)

    if serial:  # one Llama cannot decode two streams at once: the user's lock, in effect
        for i in range(A["streams"]):
            run(i)
    else:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(A["streams"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = now() - start
    return {"ttft": statistics.mean(r[0] for r in results),
            "tps": sum(r[1] for r in results) / wall, "tokens": min(r[1] for r in results)}


ways = {"direct": direct, "generate": generate, "api": api,
        "http": sse(A["motorpool_url"], "bench")}
if A["llama_server_url"]:
    ways["llama_cpp.server"] = sse(A["llama_server_url"], "bench")
samples = {name: {"one": [], "many": []} for name in ways}
with Host(Settings(home=A["home"], models_file=A["home"] + "/models.toml",
                   plugins="llama-cpp", keep_alive_s=-1, log_level="warning")) as host:
    for name, way in ways.items():  # warm-up: loads, caches, first-call costs
        one(way)
    for _ in range(A["runs"]):
        for name, way in ways.items():
            samples[name]["one"].append(one(way))
            samples[name]["many"].append(many(way, serial=name in ("direct", "generate")))

out = {}
for name, by_mode in samples.items():
    for mode, runs in by_mode.items():
        out[f"{name}/{mode}"] = {
            "tps": statistics.median(r["tps"] for r in runs),
            "ttft": statistics.median(r["ttft"] for r in runs),
            "tokens": min(r["tokens"] for r in runs),
        }
print(json.dumps(out))
"""


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx  # noqa: PLC0415 - checked in NEEDED

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready in {START_TIMEOUT_S} s")


@contextmanager
def _server(command: list[str], ready_path: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(url + ready_path, process)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _model(size: str, env: dict[str, str]) -> Path:
    if size == "tiny":
        path = Path(tempfile.mkdtemp(prefix="motorpool-bench-")) / "tiny.gguf"
    else:
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / "qwen2.5-0.5b-random-q4_k_m.gguf"
        if path.exists():
            return path
    code = f"ARGS = {json.dumps({'size': size, 'out': str(path)})}\n{_BUILD}"
    return Path(str(run_python_json(code, env)["path"]))


def _measure(model: Path, label: str, env: dict[str, str]) -> list[Row]:
    threads = int(_threads())
    gpu_layers = int(os.environ.get("BENCH_LLAMA_GPU_LAYERS", "0"))
    home = Path(tempfile.mkdtemp(prefix="motorpool-bench-home-"))
    options = f"{{ context_length = {CONTEXT}, threads = {threads}, gpu_layers = {gpu_layers} }}"
    (home / "models.toml").write_text(
        f'[models.bench]\nplugin = "llama-cpp"\nsource = "{model}"\noptions = {options}\n',
        encoding="utf-8",
    )
    server_env = {**env, "MOTORPOOL_HOME": str(home), "MOTORPOOL_LOG_LEVEL": "warning"}
    motorpool = [PYTHON, "-m", "motorpool", "serve", "--preload", "bench"]
    llama_server = [
        PYTHON, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "bench",
        "--host", "127.0.0.1", "--n_ctx", str(CONTEXT), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--n_gpu_layers", str(gpu_layers),
        "--interrupt_requests", "False",  # queue concurrent requests, as motorpool does
    ]  # fmt: skip
    has_llama_server = all(
        importlib.util.find_spec(name) for name in ("sse_starlette", "starlette_context")
    )
    with (
        _server(motorpool, "/ready", server_env) as motorpool_url,
        _optional_server(llama_server if has_llama_server else None, env) as llama_server_url,
    ):
        args = {
            "model": str(model), "home": str(home), "prompt": PROMPT, "tokens": TOKENS,
            "seed": SEED, "streams": STREAMS, "context": CONTEXT, "threads": threads,
            "gpu_layers": gpu_layers, "runs": min(repeats(), 3),
            "motorpool_url": motorpool_url, "llama_server_url": llama_server_url,
        }  # fmt: skip
        out = run_python_json(f"ARGS = {json.dumps(args)}\n{_CLIENT}", env)
    return _rows(out, label, has_llama_server)


@contextmanager
def _optional_server(command: list[str] | None, env: dict[str, str]) -> Iterator[str | None]:
    if command is None:
        yield None
        return
    with _server(command, "/v1/models", env) as url:
        yield url


def _rows(out: dict[str, object], label: str, has_llama_server: bool) -> list[Row]:
    def figure(key: str, field: str) -> float:
        entry = out[key]
        assert isinstance(entry, dict)
        value = entry[field]  # pyright: ignore[reportUnknownVariableType] - parsed JSON
        assert isinstance(value, int | float)
        return float(value)

    rows: list[Row] = []
    for mode, streams in (("one", 1), ("many", STREAMS)):
        short = mode == "one" and figure("direct/one", "tokens") < TOKENS
        note = f"{streams} stream{'s' * (streams > 1)}" + (", EOS early" if short else "")
        direct_tps = figure(f"direct/{mode}", "tps")
        direct_ttft = figure(f"direct/{mode}", "ttft") * 1000
        ways = [("api", MIN_API), ("http", MIN_HTTP)]
        if has_llama_server:
            ways.append(("llama_cpp.server", None))
        for way, min_ratio in ways:
            key = f"{way}/{mode}"
            rows.append(
                Row(
                    f"llama.cpp {label} {way} tok/s ({note})",
                    figure(key, "tps"),
                    "tok/s",
                    baseline=direct_tps,
                    baseline_name="direct",
                    min_ratio=min_ratio,
                    note=f"{figure(key, 'tokens'):.0f} tokens",
                )
            )
            rows.append(
                Row(
                    f"llama.cpp {label} {way} TTFT ({note})",
                    figure(key, "ttft") * 1000,
                    "ms",
                    baseline=direct_ttft,
                    baseline_name="direct",
                )
            )
        rows.append(
            Row(
                f"llama.cpp {label} api vs Llama.generate loop tok/s ({note})",
                figure(f"api/{mode}", "tps"),
                "tok/s",
                baseline=figure(f"generate/{mode}", "tps"),
                baseline_name="Llama.generate",
                note="motorpool's cost over a bare token loop",
            )
        )
        if has_llama_server:  # the bar: not slower than llama_cpp.server in either
            ours, theirs = f"http/{mode}", f"llama_cpp.server/{mode}"
            rows.append(
                Row(
                    f"llama.cpp {label} motorpool http vs llama_cpp.server tok/s ({note})",
                    figure(ours, "tps"),
                    "tok/s",
                    baseline=figure(theirs, "tps"),
                    baseline_name="llama_cpp.server",
                    min_ratio=1.0,
                )
            )
            rows.append(
                Row(
                    f"llama.cpp {label} llama_cpp.server TTFT vs motorpool http ({note})",
                    figure(theirs, "ttft") * 1000,
                    "ms",
                    baseline=figure(ours, "ttft") * 1000,
                    baseline_name="motorpool http",
                    min_ratio=1.0,
                    note="theirs / ours: 1.0 or more = motorpool is not slower",
                )
            )
    return rows


def _threads() -> str:
    """llama.cpp's threads: one by default, so that on a small machine the client, the
    idle servers and llama.cpp's spinning worker threads do not fight over the cores and
    every way is measured under the same conditions."""
    return os.environ.get("BENCH_LLAMA_THREADS", "1")


def run() -> list[Row]:
    """Rows for the tiny model and the real-size one (or ``BENCH_LLAMA_MODEL``)."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("llama.cpp plugin", None, "", note=f"needs {', '.join(missing)}")]
    env = clean_env(OMP_NUM_THREADS=_threads())
    given = os.environ.get("BENCH_LLAMA_MODEL")
    if given:
        return _measure(Path(given), Path(given).name, env)
    sizes = os.environ.get("BENCH_LLAMA_SIZES", "tiny,0.5b").split(",")
    rows: list[Row] = []
    for size in sizes:
        label = "tiny" if size == "tiny" else "Qwen2.5-0.5B Q4_K_M"
        rows += _measure(_model(size, env), label, env)
    return rows
