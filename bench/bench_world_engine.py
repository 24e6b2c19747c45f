"""The world_engine plugin against a direct loop over its adapter: frames/s and latency.

One world model, one seed, the same controls, three ways, each in real time for a
window of seconds (five windows per way, interleaved, each way leading in turn; the
best window is reported):

- ``direct``: a loop on one thread over the plugin's adapter (``WorldAdapter``: the
  engine's ``gen_frame`` on its device thread, frames to the CPU) that JPEG-encodes each
  frame as it comes (Pillow, quality 85), the baseline; a control set before a step is
  in the frames of that step;
- ``api``: motorpool's ``Host.session(...).run(deliver)``: generation paced by nothing,
  encoding on its own thread, overlapping the next step;
- ``ws``: a session on ``motorpool serve`` (its own process, uvicorn on 127.0.0.1) read
  by a WebSocket client in another process, decoding every binary batch.

Frames/s counts the frames delivered (JPEGs in hand) over the window. Control→frame
latency is the time from a control being given (``client_ts``) to holding the first
batch made under it; a thread standing for the player gives a new control every 37 ms,
at no fixed phase to the steps, in every way (a control waits for the step running when
it comes: about a step and a half, plus encoding, on average). The target is ``ws`` ≥
0.97 of ``direct`` in frames/s, for models that take the direct loop 5 ms a frame or
more (real world models take 15-70 ms); the tiny model's 0.6 ms frames measure the
per-batch cost of a WebSocket message and are shown, not judged. The raw engine
(``gen_frame`` and the copy to the CPU, no JPEG) is shown for scale.

Models: ``tiny`` (the tests' 48x32 model, about a millisecond a frame) and ``mid`` (the
plugin's ``MID``: 448x256, tens of milliseconds a frame on one CPU core), built offline;
their contexts are made long enough that no way resets during a window. ``--model PATH``
runs any world model folder (a Waypoint model with world_engine installed, on CUDA)::

    uv run python bench/bench_world_engine.py
    uv run python bench/bench_world_engine.py --model ~/models/Waypoint-1-Small --seconds 10
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
from typing import cast

from _common import Row, clean_env, motorpool_serve, run_python_json

MIN_RATIO = 0.97
JUDGED_FROM_MS = 5.0
"""Models faster than this a frame (the direct loop) are shown, not judged."""
WINDOWS = 5
SECONDS = 3.0
NEEDED = ("torch", "motorpool_world_engine", "websockets", "uvicorn")
LONG_CONTEXT = 1_000_000
"""n_frames of the built models: no reset inside a window."""

_BUILD = """
import json
from dataclasses import replace
from pathlib import Path
from motorpool_world_engine import tiny

config = tiny.MID if ARGS["size"] == "mid" else tiny.TinyWorldConfig()
folder = tiny.build(Path(ARGS["out"]), replace(config, n_frames=ARGS["n_frames"]))
print(json.dumps({"path": str(folder)}))
"""

_CLIENT = """
import base64, json, threading, time
import torch
from websockets.sync.client import connect
from motorpool import Host, Settings
from motorpool.server.wire.sessions import decode_batch
from motorpool.types import ControlInput
from motorpool_world_engine._engine import fit_seed, load
from motorpool_world_engine._folder import world_folder
from motorpool_world_engine._options import WorldEngineOptions
from motorpool_world_engine._session import jpeg
from motorpool_world_engine.plugin import tiny_seed

torch.set_num_threads(A["threads"])
now = time.perf_counter
seed = tiny_seed()
INPUT_EVERY_S = 0.037  # a new control this often, at no fixed phase to the steps


class Input:
    \"\"\"A thread standing for the player: a new control every INPUT_EVERY_S.\"\"\"

    def __init__(self, apply):
        self.sent, self.latencies, self._apply = {}, [], apply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        index = 0
        while not self._stop.wait(INPUT_EVERY_S):
            index += 1
            control = ControlInput(buttons=frozenset({87}), mouse_dx=float(index % 7 - 3),
                                   client_ts=now())
            self.sent[control.client_ts] = True
            self._apply(control)

    def seen(self, client_ts):
        \"\"\"A batch made under ``client_ts`` is in hand.\"\"\"
        if client_ts is not None and self.sent.pop(client_ts, None):
            self.latencies.append(now() - client_ts)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return 1000 * sum(self.latencies) / max(1, len(self.latencies))


def direct(model):
    adapter = model.adapter
    shape = adapter.frame_shape
    adapter.start(fit_seed(seed, shape[2], shape[1]))
    latest = [ControlInput()]
    lock = threading.Lock()
    def apply(control):
        with lock:
            latest[0] = control
    player = Input(apply)
    frames = 0
    start = now()
    while now() - start < A["seconds"]:
        with lock:
            given, latest[0] = latest[0], ControlInput(buttons=latest[0].buttons)
        jpegs = [jpeg(f, 85) for f in adapter.generate(given)]
        frames += len(jpegs)
        player.seen(given.client_ts)
    elapsed = now() - start
    return {"fps": frames / elapsed, "latency_ms": player.stop()}


def raw(model):
    adapter = model.adapter
    shape = adapter.frame_shape
    adapter.start(fit_seed(seed, shape[2], shape[1]))  # from the seed, as every way
    engine, ctrl = adapter.engine, adapter._make_control
    frames = 0
    start = now()
    def run():
        nonlocal frames
        while now() - start < A["seconds"]:
            out = engine.gen_frame(ctrl(button={87}, mouse=(1.0, 0.0), scroll_wheel=0))
            out.cpu().numpy()
            frames += out.shape[0] if out.dim() == 4 else 1
    model.adapter.call(run)
    return {"fps": frames / (now() - start), "latency_ms": None}


def api(host):
    with host.session("bench", seed=seed) as session:
        player = Input(session.control)
        frames = 0
        start = now()
        def deliver(batch):
            nonlocal frames
            frames += len(batch.frames)
            player.seen(batch.client_ts)
            if now() - start >= A["seconds"]:
                session.close()
        session.run(deliver)
        elapsed = now() - start
    return {"fps": frames / elapsed, "latency_ms": player.stop(), "dropped": session.dropped}


def ws(_):
    url = A["url"].replace("http://", "ws://") + "/v1/sessions/ws?protocol=1"
    with connect(url, max_size=None) as socket:
        socket.send(json.dumps({"type": "open", "model": "bench",
                                "seed_image": base64.b64encode(seed.image).decode()}))
        while json.loads(socket.recv())["type"] != "ready":
            pass
        player = Input(lambda c: socket.send(json.dumps(
            {"type": "control", "input": c.model_dump(mode="json")})))
        frames = dropped = 0
        start = now()
        while now() - start < A["seconds"]:
            message = socket.recv()
            if isinstance(message, str):
                continue
            header, jpegs = decode_batch(message)
            frames += len(jpegs)
            dropped = header.dropped
            player.seen(header.client_ts)
        elapsed = now() - start
        latency = player.stop()
        socket.send(json.dumps({"type": "close"}))
    return {"fps": frames / elapsed, "latency_ms": latency, "dropped": dropped}


settings = Settings(home=A["home"], models_file=A["home"] + "/models.toml",
                    plugins="world-engine", keep_alive_s=-1, log_level="warning")
model = load(world_folder(__import__("pathlib").Path(A["model"])),
             WorldEngineOptions(device=A["device"], config_overrides=A["overrides"]))
model.adapter.warm_up()
samples = {"raw": [], "direct": [], "api": [], "ws": []}
with Host(settings) as host:
    host.load("bench")
    for name, way, arg in (("api", api, host), ("ws", ws, None)):
        way(arg)  # warm-up: first session, first socket
    ways = [("raw", raw, model), ("direct", direct, model), ("api", api, host), ("ws", ws, None)]
    for window in range(A["windows"]):
        order = ways[window % len(ways):] + ways[:window % len(ways)]
        for name, way, arg in order:
            samples[name].append(way(arg))
model.close()
out = {name: max(runs, key=lambda r: r["fps"]) for name, runs in samples.items()}
print(json.dumps(out))
"""


def _build(size: str, env: dict[str, str]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="motorpool-bench-world-")) / f"{size}-world"
    args = {"size": size, "out": str(out), "n_frames": LONG_CONTEXT}
    return Path(str(run_python_json(f"ARGS = {json.dumps(args)}\n{_BUILD}", env)["path"]))


def _measure(model: Path, label: str, env: dict[str, str], seconds: float) -> list[Row]:
    home = Path(tempfile.mkdtemp(prefix="motorpool-bench-home-"))
    device = os.environ.get("BENCH_WORLD_DEVICE", "auto")
    (home / "models.toml").write_text(
        f'[models.bench]\nplugin = "world-engine"\nsource = "{model}"\n'
        f'options = {{ device = "{device}" }}\n',
        encoding="utf-8",
    )
    with motorpool_serve(home, env) as served:
        args: dict[str, object] = {
            "model": str(model), "home": str(home), "url": served.url, "device": device,
            "overrides": {}, "seconds": seconds, "windows": WINDOWS,
            "threads": int(env.get("OMP_NUM_THREADS", "1")),
        }  # fmt: skip
        out = run_python_json(f"A = {json.dumps(args)}\n{_CLIENT}", env)
    return _rows(out, label)


def _rows(out: dict[str, object], label: str) -> list[Row]:
    def figure(way: str, field: str) -> float | None:
        entry = out[way]
        assert isinstance(entry, dict)
        value: object = cast("dict[str, object]", entry).get(field)  # parsed JSON
        return float(value) if isinstance(value, int | float) else None

    direct = figure("direct", "fps")
    judged = direct is not None and 1000 / direct >= JUDGED_FROM_MS
    rows = [
        Row(f"world-engine {label}: engine alone frames/s", figure("raw", "fps"), "frames/s",
            note="gen_frame + copy to the CPU, no JPEG"),
        Row(f"world-engine {label}: direct loop frames/s", direct, "frames/s",
            note=f"adapter + JPEG in series; latency {figure('direct', 'latency_ms'):.1f} ms"),
    ]  # fmt: skip
    for way, name in (("api", "Host.session"), ("ws", "WebSocket session")):
        rows += [
            Row(
                f"world-engine {label}: {name} frames/s",
                figure(way, "fps"),
                "frames/s",
                direct,
                "direct loop",
                min_ratio=MIN_RATIO if way == "ws" and judged else None,
                note=f"best of {WINDOWS} windows, {figure(way, 'dropped'):.0f} batches dropped",
            ),
            Row(
                f"world-engine {label}: {name} control->frame",
                figure(way, "latency_ms"),
                "ms",
                figure("direct", "latency_ms"),
                "direct loop",
                note="control set to the first batch made under it, in hand",
            ),
        ]
    return rows


def measure(models: Sequence[Path] = (), seconds: float = SECONDS) -> list[Row]:
    """Rows for the given model folders, or for the tiny and mid models built here."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("world-engine plugin", None, "", note=f"needs {', '.join(missing)}")]
    env = clean_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if models:
        return [row for m in models for row in _measure(m, m.name, env, seconds)]
    return [
        row for size in ("tiny", "mid") for row in _measure(_build(size, env), size, env, seconds)
    ]


def run() -> list[Row]:
    """The benchmark as ``bench/run.py`` runs it (``BENCH_WORLD_MODEL`` picks a folder)."""
    given = os.environ.get("BENCH_WORLD_MODEL")
    return measure([Path(given)] if given else ())


def main(argv: Sequence[str] | None = None) -> int:
    """Run on the models named with ``--model`` (default: build tiny and mid), print the table."""
    from run import table  # noqa: PLC0415 - bench/run.py, beside this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, action="append", default=[], metavar="PATH")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of a window")
    args = parser.parse_args(argv)
    rows = measure([path.resolve() for path in args.model], args.seconds)
    print(f"python {sys.version.split()[0]}, best of {WINDOWS} interleaved windows per way")
    print(table(rows))
    return 1 if any(row.missed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
