"""The MLX plugin against mlx-lm itself: direct ``stream_generate``, Python API, HTTP SSE.

One model folder, one prompt, one sampling (temperature 0.8, top-p 0.95, seed 1234, the
end tokens biased away so every run makes exactly 128 tokens), three ways:

- ``direct``: ``mlx_lm.stream_generate`` on what ``mlx_lm.load`` returned, the baseline;
- ``api``: motorpool's ``Host.stream`` over the mlx plugin, the same request;
- ``http``: ``motorpool serve`` (its own process, uvicorn on 127.0.0.1) streaming
  ``/v1/completions`` as SSE, read with httpx from the client process.

Random weights repeat themselves, so motorpool's loop guard is turned off in the request
(``guards: {"max_repeats": null}``); the other guards stay as they are. Each way must
write the direct way's text, or the benchmark raises. Tokens/s is the 128 tokens over
the whole request; TTFT is the time from the call to the first text. Repetitions are
interleaved, each way leading in turn, at least 7 (``BENCH_RUNS``) and at least five
seconds of each way; the best run of each way is reported, since other work on the
machine only ever adds time (on a shared 2-core machine medians wander by 10 %).

Models: ``tiny`` (the tests' model: hidden 64, 2 layers, float32) and ``mid`` (hidden
384, 6 layers, 6 heads, bfloat16, about 10 M parameters), random-weight Llamas built
offline into a temp folder; speed does not depend on the weights' values. Any MLX model
folder runs unchanged at real size (an ``mlx-community`` snapshot on Apple silicon)::

    uv run python bench/bench_mlx.py --model ~/models/Qwen2.5-0.5B-Instruct-4bit
    BENCH_MLX_MODEL=/path/to/folder uv run python bench/run.py mlx
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import Row, clean_env, motorpool_serve, repeats, run_python_json

TOKENS = 128
SEED = 1234
PROMPT = "The history of the motor pool begins with"
MIN_API = 0.99
MIN_HTTP = 0.97
MIN_SECONDS = 5.0
"""Each way runs at least this long in all (more repetitions for a fast model)."""
NEEDED = ("mlx", "mlx_lm", "motorpool_mlx", "httpx", "uvicorn")

_BUILD = """
import json
from pathlib import Path
from motorpool_mlx.tiny import MID, TINY, build_model

config, dtype = (TINY, "float32") if ARGS["size"] == "tiny" else (MID, "bfloat16")
print(json.dumps({"path": str(build_model(Path(ARGS["out"]), config, dtype=dtype))}))
"""

_CLIENT = """
import json, time
import httpx
import mlx.core as mx
from mlx_lm import load, stream_generate
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from motorpool import Host, Settings
from motorpool.types import CompletionRequest, ErrorEvent, ResultEvent, TokenEvent

now = time.perf_counter
A = ARGS
model, tokenizer = load(A["model"])[:2]
no_end = {token: -100.0 for token in sorted(tokenizer.eos_token_ids)}
sampling = {"temperature": 0.8, "top_p": 0.95}
request = CompletionRequest.model_validate({
    "prompt": A["prompt"], "max_tokens": A["tokens"], "guards": {"max_repeats": None},
    "sampling": {**sampling, "seed": A["seed"], "logit_bias": no_end},
})
body = {"model": "bench", "prompt": A["prompt"], "max_tokens": A["tokens"], "stream": True,
        "seed": A["seed"], "logit_bias": {str(t): b for t, b in no_end.items()},
        "guards": {"max_repeats": None}, **sampling}
http = httpx.Client(timeout=600)


def direct(start):
    mx.random.seed(A["seed"])  # as the plugin does for a request's seed
    first, tokens, pieces = None, 0, []
    for response in stream_generate(
        model, tokenizer, A["prompt"], max_tokens=A["tokens"],
        sampler=make_sampler(temp=0.8, top_p=0.95),
        logits_processors=make_logits_processors(logit_bias=no_end),
    ):
        tokens += 1
        if response.text:
            first = first if first is not None else now() - start
            pieces.append(response.text)
    return first, tokens, "".join(pieces)


def api(start):
    first, tokens, pieces = None, 0, []
    for event in host.stream("bench", request):
        if isinstance(event, TokenEvent):
            first = first if first is not None else now() - start
            pieces.append(event.text)
        elif isinstance(event, ResultEvent):
            tokens = event.result.usage.completion_tokens
        elif isinstance(event, ErrorEvent):
            raise RuntimeError(event.error.message)
    return first, tokens, "".join(pieces)


def sse(start):
    first, pieces, finish = None, [], None
    with http.stream("POST", A["url"] + "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"the stream failed: {chunk}")
            choices = chunk.get("choices") or []
            if choices and choices[0].get("text"):
                first = first if first is not None else now() - start
                pieces.append(choices[0]["text"])
            if choices and choices[0].get("finish_reason"):
                finish = choices[0]["finish_reason"]
    # A chunk is not always a token (a character split over tokens waits for the rest);
    # "length" says all max_tokens were made.
    return first, A["tokens"] if finish == "length" else -1, "".join(pieces)


def one(way):
    start = now()
    first, tokens, text = way(start)
    total = now() - start
    return {"ttft": first, "total": total, "tps": tokens / total, "tokens": tokens, "text": text}


ways = {"direct": direct, "api": api, "http": sse}
settings = Settings(home=A["home"], models_file=A["home"] + "/models.toml", plugins="mlx",
                    keep_alive_s=-1, log_level="warning")
with Host(settings) as host:
    host.load("bench")
    warm = {name: one(way) for name, way in ways.items()}  # loads, kernels, first calls
    texts = {name: run["text"] for name, run in warm.items()}
    if len(set(texts.values())) != 1:
        raise RuntimeError(f"the ways wrote different texts: {texts}")
    samples = {name: [] for name in ways}
    # A fast model gets more repetitions: at least MIN_SECONDS of each way.
    runs = max(A["runs"], int(A["min_seconds"] / warm["direct"]["total"]) + 1)
    order = list(ways)
    for rep in range(runs):
        for name in order[rep % 3:] + order[:rep % 3]:  # each way leads a third of the time
            samples[name].append(one(ways[name]))
out = {
    name: {
        "ttft": min(run["ttft"] for run in runs),
        "total": min(run["total"] for run in runs),
        "tps": max(run["tps"] for run in runs),
        "tokens": min(run["tokens"] for run in runs),
        "runs": len(runs),
    }
    for name, runs in samples.items()
}
print(json.dumps(out))
"""


def _build(size: str, env: dict[str, str]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="motorpool-bench-mlx-")) / f"{size}-llama"
    code = f"ARGS = {json.dumps({'size': size, 'out': str(out)})}\n{_BUILD}"
    return Path(str(run_python_json(code, env)["path"]))


def _measure(model: Path, label: str, env: dict[str, str]) -> list[Row]:
    home = Path(tempfile.mkdtemp(prefix="motorpool-bench-home-"))
    (home / "models.toml").write_text(
        f'[models.bench]\nplugin = "mlx"\nsource = "{model}"\n', encoding="utf-8"
    )
    with motorpool_serve(home, env) as served:
        url = served.url
        args = {
            "model": str(model), "home": str(home), "url": url, "prompt": PROMPT,
            "tokens": TOKENS, "seed": SEED, "runs": repeats(), "min_seconds": MIN_SECONDS,
        }  # fmt: skip
        out = run_python_json(f"ARGS = {json.dumps(args)}\n{_CLIENT}", env)
    return _rows(out, label)


def _rows(out: dict[str, object], label: str) -> list[Row]:
    def figure(way: str, field: str) -> float:
        entry = out[way]
        assert isinstance(entry, dict)
        value: object = entry[field]  # parsed JSON
        assert isinstance(value, int | float)
        return float(value)

    direct_tps, direct_ttft = figure("direct", "tps"), figure("direct", "ttft") * 1000
    rows: list[Row] = []
    for way, name, min_ratio in (
        ("api", "Host.stream", MIN_API),
        ("http", "HTTP SSE", MIN_HTTP),
    ):
        tokens = figure(way, "tokens")
        rows += [
            Row(
                f"mlx {label}: {name} tokens/s",
                figure(way, "tps"),
                "tok/s",
                direct_tps,
                "stream_generate",
                min_ratio=min_ratio,
                note=f"{tokens:.0f} tokens, best of {figure(way, 'runs'):.0f} runs"
                if tokens == TOKENS
                else "SHORT: fewer tokens",
                error=tokens != TOKENS,
            ),
            Row(
                f"mlx {label}: {name} TTFT",
                figure(way, "ttft") * 1000,
                "ms",
                direct_ttft,
                "stream_generate",
            ),
            Row(
                f"mlx {label}: {name} overhead per token",
                (figure(way, "total") - figure("direct", "total")) / TOKENS * 1e6,
                "us",
                note="(way - direct) / tokens, over the whole request",
            ),
        ]
    return rows


def measure(models: Sequence[Path] = ()) -> list[Row]:
    """Rows for the given model folders, or for the tiny and mid models built here."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("mlx plugin", None, "", note=f"needs {', '.join(missing)}")]
    env = clean_env()
    if models:
        return [row for model in models for row in _measure(model, model.name, env)]
    return [row for size in ("tiny", "mid") for row in _measure(_build(size, env), size, env)]


def run() -> list[Row]:
    """The benchmark as ``bench/run.py`` runs it (``BENCH_MLX_MODEL`` picks a folder)."""
    given = os.environ.get("BENCH_MLX_MODEL")
    return measure([Path(given)] if given else ())


def main(argv: Sequence[str] | None = None) -> int:
    """Run on the models named with ``--model`` (default: build tiny and mid), print the table."""
    from run import table  # noqa: PLC0415 - bench/run.py, beside this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, action="append", default=[], metavar="PATH")
    parser.add_argument("--runs", type=int, help=f"repeats per measurement ({repeats()})")
    args = parser.parse_args(argv)
    if args.runs is not None:
        os.environ["BENCH_RUNS"] = str(args.runs)
    rows = measure([path.resolve() for path in args.model])
    print(f"python {sys.version.split()[0]}, best of at least {repeats()} runs per way")
    print(table(rows))
    return 1 if any(row.missed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
