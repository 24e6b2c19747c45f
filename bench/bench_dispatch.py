"""What the host adds per streamed event: ``Host.stream`` against the plugin's own generator.

The test engine's text stream costs about a microsecond and a half per token, so the
host's per-event work (dispatch, cancellation check, progress drain, typed-error guard,
slot and user accounting) shows up clearly. Real engines spend milliseconds per token;
the ratio there is the overhead divided by that. Measured in one fresh interpreter.
"""

from __future__ import annotations

import tempfile

from _common import Row, clean_env, repeats, run_python_json

TOKENS = 2000


def _measure(runs: int) -> str:
    """The child program: best of ``runs`` of each, after a warm-up."""
    return f"""
import json, tempfile, time
from pathlib import Path
from motorpool import Host, Settings
from motorpool.engine import Context, ResolvedSource
from motorpool.types import ChatRequest, ModelOrigin, ModelSpec
from motorpool_testengine import plugin as engine

home = Path(tempfile.mkdtemp())
path = engine.write_model(home / "m.mptest.json", words={TOKENS} * 2)
request = ChatRequest.model_validate({{
    "messages": [{{"role": "user", "content": "hi"}}],
    "max_tokens": {TOKENS},
    "sampling": {{"temperature": 0}},
}})
settings = Settings(home=home, plugins="testengine", keep_alive_s=-1, log_level="warning")
with Host(settings) as host:
    host.load(ModelSpec(name="m", plugin="testengine", source=str(path)))
    source = ResolvedSource(spec=ModelSpec(plugin="testengine", source=str(path)),
                            path=path, origin=ModelOrigin.LOCAL)
    model = engine.motorpool_load(source, Context("load"))  # the same engine, called directly

    def direct():
        started = time.perf_counter()
        count = sum(1 for _ in engine.motorpool_stream(model, request, Context("direct")))
        return time.perf_counter() - started, count

    def hosted():
        started = time.perf_counter()
        count = sum(1 for _ in host.stream("m", request))
        return time.perf_counter() - started, count

    direct(); hosted()  # warm-up
    runs = {{"direct": [], "hosted": []}}
    for _ in range({runs}):
        runs["direct"].append(direct())
        runs["hosted"].append(hosted())
print(json.dumps({{name: min(r[0] for r in rs) for name, rs in runs.items()}}
                 | {{"events": runs["hosted"][0][1]}}))
"""


def run() -> list[Row]:
    """One stream of 2000 tokens direct and through ``Host.stream``; the overhead per event."""
    with tempfile.TemporaryDirectory() as home:
        measured = run_python_json(_measure(repeats()), clean_env(MOTORPOOL_HOME=home))
    direct, hosted = float(str(measured["direct"])), float(str(measured["hosted"]))
    events = int(str(measured["events"]))
    return [
        Row(
            name=f"Host.stream, {TOKENS} tokens (test engine)",
            value=hosted * 1000,
            unit="ms",
            baseline=direct * 1000,
            baseline_name="plugin generator",
        ),
        Row(
            name="host overhead per streamed event",
            value=(hosted - direct) / events * 1e6,
            unit="us",
            target=10.0,
            note="engine-independent; a real engine spends ms per token",
        ),
    ]
