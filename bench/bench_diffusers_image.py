"""The diffusers image plugin against diffusers itself: direct call, Python API, HTTP.

One pipeline folder, one prompt, seed, size and step count, three ways:

- ``direct``: the pipeline ``DiffusionPipeline.from_pretrained`` returns, called with
  the same generator the plugin uses (torch's CPU generator, seeded), and its image
  encoded as PNG with the plugin's settings: the baseline (a PNG is what every way
  delivers);
- ``api``: motorpool's ``Host.generate`` over the diffusers-image plugin, the same request;
- ``http``: ``POST /v1/images/generations`` with ``b64_json`` to the server app (uvicorn on
  127.0.0.1) running in the client's own process, sent with httpx over the loopback;
- ``serve``: the same request to ``motorpool serve`` in its own process, as in real use.
  Shown, not judged: on this kind of machine the same work runs a few percent faster or
  slower from one process to the next (three identical servers measured 253-262 ms for
  the tiny model), which would hide motorpool's own cost.

Each way must give the direct way's pixels, or the benchmark raises. Wall time is the
whole call; the speed ratio (images/s over the direct way's) has the target 0.99.
Repetitions are interleaved, each way leading in turn, at least 7 (``BENCH_RUNS``) and at
least five seconds of each way; the best run of each way is reported, since other work
on the machine only ever adds time. Peak memory is measured apart, in a fresh process per
way (RSS high-water mark, and ``torch.cuda.max_memory_allocated`` on CUDA), and for
``http`` as the server process's high-water mark.

Models: ``tiny`` (the tests' Stable Diffusion, 1.7 M parameters, 64x64) and ``mid`` (30 M
parameters, 128x128), random weights built offline into a temp folder, 8 steps; speed does
not depend on the weights' values. Any pipeline folder runs at real size::

    uv run python bench/bench_diffusers_image.py --model ~/models/sdxl-turbo --size 512 --steps 1
    BENCH_DIFFUSERS_MODEL=/path/to/folder uv run python bench/run.py diffusers_image

On a GPU, a real-size pipeline twice in one process is already a lot of memory: there
``--no-http`` keeps to direct and ``Host.generate``::

    python bench/bench_diffusers_image.py --model /tmp/flux --size 1024 --steps 4 \
        --device cuda --dtype bfloat16 --no-http

``BENCH_DIFFUSERS_DEVICE`` / ``BENCH_DIFFUSERS_DTYPE`` (default ``auto``) pick where and in
which precision all ways run; torch uses ``BENCH_TORCH_THREADS`` threads (default 1: on
a shared machine more threads mostly measure the neighbours).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import Row, clean_env, free_port, motorpool_serve, repeats, run_python_json

PROMPT = "a lighthouse on a cliff above the sea at dusk, oil painting"
SEED = 1234
MIN_RATIO = 0.99
MIN_SECONDS = 5.0
"""Each way runs at least this long in all (more repetitions for a fast model)."""
NEEDED = ("torch", "diffusers", "motorpool_diffusers_image", "httpx", "uvicorn")
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Setup:
    """What one measurement generates, and on what."""

    label: str
    model: Path
    size: int
    steps: int
    device: str = "auto"
    dtype: str = "auto"
    http: bool = True
    """Also the HTTP ways (each server loads its own copy of the pipeline)."""
    tolerance: int = 0
    """How far (0-255) a pixel may differ from the direct call's (GPU kernels may round
    differently from one copy of the weights to the other)."""


_BUILD = """
import json
from pathlib import Path
from motorpool_diffusers_image.tiny import MID_SD, TINY_SD, build_stable_diffusion

config = TINY_SD if ARGS["size"] == "tiny" else MID_SD
print(json.dumps({"path": str(build_stable_diffusion(Path(ARGS["out"]), config))}))
"""

# The direct way, shared by the timing client and the memory child.
_DIRECT = """
import base64, io, json, resource, sys, time
import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from motorpool import torchtools
from PIL import Image
from PIL.PngImagePlugin import PngInfo

now = time.perf_counter
A = ARGS
DEVICE = torchtools.resolve_device(A["device"])
DTYPE = torchtools.resolve_dtype(A["dtype"], DEVICE)


def load_direct():
    pipe = DiffusionPipeline.from_pretrained(A["model"], dtype=DTYPE, local_files_only=True)
    pipe.to(DEVICE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def png(image):
    info = PngInfo()
    info.add_text("prompt", A["prompt"])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def direct(pipe, encode=True):
    image = pipe(
        prompt=A["prompt"], width=A["size"], height=A["size"], num_inference_steps=A["steps"],
        generator=[torch.Generator("cpu").manual_seed(A["seed"])],
    ).images[0]
    return png(image) if encode else image


def pixels(data):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def peaks():
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    cuda = torch.cuda.max_memory_allocated() if DEVICE.startswith("cuda") else None
    return {"rss": rss, "cuda": cuda}
"""

_HOST = """
from motorpool import Host, Settings
from motorpool.types import ImageRequest

request = ImageRequest(prompt=A["prompt"], width=A["size"], height=A["size"], steps=A["steps"],
                       seed=A["seed"])
settings = Settings(home=A["home"], models_file=A["home"] + "/models.toml",
                    plugins="diffusers-image", keep_alive_s=-1, log_level="warning")


def api(host):
    return host.generate("bench", request).images[0].png
"""

_CLIENT = (
    _DIRECT
    + _HOST
    + """
import threading
import httpx
import uvicorn
from motorpool.server import create_app

http = httpx.Client(timeout=3600)
body = {"model": "bench", "prompt": A["prompt"], "size": f"{A['size']}x{A['size']}",
        "steps": A["steps"], "seed": A["seed"], "response_format": "b64_json"}


def post(url):
    response = http.post(url + "/v1/images/generations", json=body)
    response.raise_for_status()
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def serve_here():
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=A["port"],
                            log_config=None, access_log=False)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


def timed(way):
    start = now()
    data = way()
    return now() - start, data


pipe = load_direct()
local = serve_here() if A["http"] else None
with Host(settings) as host:
    host.load("bench")
    ways = {"direct": lambda: direct(pipe), "api": lambda: api(host),
            "pipeline": lambda: direct(pipe, encode=False)}
    if A["http"]:
        ways["http"] = lambda: post(f"http://127.0.0.1:{A['port']}")
        ways["serve"] = lambda: post(A["url"])
    warm = {name: timed(way) for name, way in ways.items()}  # first calls, caches
    reference = pixels(warm["direct"][1]).astype(int)
    differences = {}
    for name in ways.keys() - {"direct", "pipeline"}:
        differences[name] = int(np.abs(pixels(warm[name][1]) - reference).max())
        if differences[name] > A["tolerance"]:
            raise RuntimeError(f"{name} made other pixels than the direct call")
    runs = max(A["runs"], int(A["min_seconds"] / warm["direct"][0]) + 1)
    samples = {name: [] for name in ways}
    order = list(ways)
    for rep in range(runs):
        for name in order[rep % len(order):] + order[:rep % len(order)]:  # each leads in turn
            samples[name].append(timed(ways[name])[0])
if local is not None:
    local.should_exit = True
print(json.dumps({name: {"best": min(times), "runs": len(times),
                         "difference": differences.get(name, 0)}
                  for name, times in samples.items()}))
"""
)

_MEMORY = (
    _DIRECT
    + _HOST
    + """
if A["way"] == "direct":
    direct(load_direct())
else:
    with Host(settings) as host:
        host.load("bench")
        api(host)
print(json.dumps(peaks()))
"""
)


def _build(size: str, env: dict[str, str]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="motorpool-bench-diffusers-")) / f"{size}-sd"
    code = f"ARGS = {json.dumps({'size': size, 'out': str(out)})}\n{_BUILD}"
    return Path(str(run_python_json(code, env)["path"]))


def _server_peak(pid: int) -> int | None:
    """The server process's RSS high-water mark (Linux), read before it stops."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return None
    for line in status.read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _measure(setup: Setup, env: dict[str, str]) -> list[Row]:
    home = Path(tempfile.mkdtemp(prefix="motorpool-bench-home-"))
    (home / "models.toml").write_text(
        f'[models.bench]\nplugin = "diffusers-image"\nsource = "{setup.model}"\n'
        f'options = {{ device = "{setup.device}", dtype = "{setup.dtype}" }}\n',
        encoding="utf-8",
    )
    args = {
        "model": str(setup.model), "home": str(home), "prompt": PROMPT, "size": setup.size,
        "steps": setup.steps, "seed": SEED, "runs": repeats(), "min_seconds": MIN_SECONDS,
        "device": setup.device, "dtype": setup.dtype, "http": setup.http,
        "tolerance": setup.tolerance,
    }  # fmt: skip
    server_peak = None
    if setup.http:
        with motorpool_serve(home, env) as served:
            urls = {"url": served.url, "port": free_port()}
            timing = run_python_json(f"ARGS = { ({**args, **urls})!r}\n{_CLIENT}", env)
            server_peak = _server_peak(served.process.pid)
    else:
        timing = run_python_json(f"ARGS = {args!r}\n{_CLIENT}", env)
    memory = {
        way: run_python_json(f"ARGS = { ({**args, 'way': way})!r}\n{_MEMORY}", env)
        for way in ("direct", "api")
    }
    return _rows(setup, timing, memory, server_peak)


def _number(out: dict[str, object], way: str, field: str) -> float | None:
    entry = out[way]
    assert isinstance(entry, dict)
    value: object = entry[field]  # parsed JSON
    return float(value) if isinstance(value, int | float) else None


def _rows(
    setup: Setup,
    timing: dict[str, object],
    memory: dict[str, dict[str, object]],
    server_peak: int | None,
) -> list[Row]:
    name = f"diffusers-image {setup.label} {setup.size}px {setup.steps} steps"

    def best(way: str) -> float:
        value = _number(timing, way, "best")
        assert value is not None
        return value

    runs = _number(timing, "direct", "runs")
    direct = best("direct")
    rows = [
        Row(
            f"{name}: direct wall (pipeline + PNG)", direct * 1000, "ms", note=f"best of {runs:.0f}"
        ),
        Row(
            f"{name}: pipeline call alone",
            best("pipeline") * 1000,
            "ms",
            direct * 1000,
            "direct",
            note="without the PNG encoding",
        ),
    ]
    for way, label, judged in (
        ("api", "Host.generate", True),
        ("http", "HTTP /v1/images/generations", True),
        ("serve", "HTTP to motorpool serve", False),
    ):
        if way not in timing:
            continue
        difference = _number(timing, way, "difference")
        pixels = (
            "same pixels as direct"
            if not difference
            else f"pixels within {difference:.0f}/255 of direct"
        )
        rows += [
            Row(f"{name}: {label} wall", best(way) * 1000, "ms", direct * 1000, "direct"),
            Row(
                f"{name}: {label} images/s",
                1 / best(way),
                "img/s",
                1 / direct,
                "direct",
                min_ratio=MIN_RATIO if judged else None,
                note=pixels
                if judged
                else "its own process: per-process speed differs by a few % here",
            ),
        ]
    peaks = {way: memory[way] for way in ("direct", "api")}
    rss = {way: _number(peaks, way, "rss") for way in peaks}
    rows += [
        Row(f"{name}: peak RSS direct", (rss["direct"] or 0) / _MB, "MB", note="fresh process"),
        Row(
            f"{name}: peak RSS Host.generate",
            (rss["api"] or 0) / _MB,
            "MB",
            (rss["direct"] or 0) / _MB,
            "direct",
            note="fresh process",
        ),
    ]
    if server_peak is not None:
        rows.append(
            Row(
                f"{name}: peak RSS motorpool serve",
                server_peak / _MB,
                "MB",
                (rss["direct"] or 0) / _MB,
                "direct",
                note="the server process, after its requests",
            )
        )
    cuda = {way: _number(peaks, way, "cuda") for way in peaks}
    if cuda["direct"] is not None and cuda["api"] is not None:
        rows.append(
            Row(
                f"{name}: peak CUDA memory Host.generate",
                cuda["api"] / _MB,
                "MB",
                cuda["direct"] / _MB,
                "direct",
                note="torch.cuda.max_memory_allocated",
            )
        )
    return rows


def measure(setups: Sequence[Setup] = ()) -> list[Row]:
    """Rows for the given setups, or for the tiny and mid pipelines built here."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("diffusers-image plugin", None, "", note=f"needs {', '.join(missing)}")]
    threads = os.environ.get("BENCH_TORCH_THREADS", "1")
    env = clean_env(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if not setups:
        device = os.environ.get("BENCH_DIFFUSERS_DEVICE", "auto")
        dtype = os.environ.get("BENCH_DIFFUSERS_DTYPE", "auto")
        setups = [
            Setup("tiny", _build("tiny", env), 64, 8, device, dtype),
            Setup("mid", _build("mid", env), 128, 8, device, dtype),
        ]
    return [row for setup in setups for row in _measure(setup, env)]


def run() -> list[Row]:
    """The benchmark as ``bench/run.py`` runs it (``BENCH_DIFFUSERS_MODEL`` picks a folder)."""
    given = os.environ.get("BENCH_DIFFUSERS_MODEL")
    if not given:
        return measure()
    size = int(os.environ.get("BENCH_DIFFUSERS_SIZE", "512"))
    steps = int(os.environ.get("BENCH_DIFFUSERS_STEPS", "4"))
    return measure([Setup(Path(given).name, Path(given), size, steps)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run on the folder named with ``--model`` (default: build tiny and mid), print the table."""
    from run import table  # noqa: PLC0415 - bench/run.py, beside this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, metavar="PATH", help="a diffusers pipeline folder")
    parser.add_argument("--size", type=int, default=512, help="width and height (512)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (auto)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    parser.add_argument("--runs", type=int, help=f"repeats per measurement ({repeats()})")
    parser.add_argument(
        "--no-http", action="store_true", help="only direct and Host.generate (one copy less)"
    )
    parser.add_argument("--tolerance", type=int, default=0, help="pixel difference allowed (0)")
    args = parser.parse_args(argv)
    if args.runs is not None:
        os.environ["BENCH_RUNS"] = str(args.runs)
    setups: list[Setup] = []
    if args.model is not None:
        model = args.model.resolve()
        setups.append(
            Setup(
                model.name,
                model,
                args.size,
                args.steps,
                args.device,
                args.dtype,
                http=not args.no_http,
                tolerance=args.tolerance,
            )
        )
    rows = measure(setups)
    print(f"python {sys.version.split()[0]}, best of at least {repeats()} runs per way")
    print(table(rows))
    return 1 if any(row.missed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
