"""The diffusers video plugin against diffusers itself: direct pipeline + MP4, Python API, HTTP job.

One pipeline folder, one clip (prompt, seed, frames, size, steps), three ways:

- ``direct``: the diffusers pipeline called on what ``DiffusionPipeline.from_pretrained``
  returned, its frames turned to bytes and piped to imageio-ffmpeg's ffmpeg with the
  plugin's x264 settings (crf 18, preset veryfast, faststart): the baseline;
- ``api``: motorpool's ``Host.generate`` over the diffusers-video plugin, the same request;
- ``http``: a video job on ``motorpool serve`` (its own process, uvicorn on 127.0.0.1):
  ``POST /v1/videos``, ``GET /v1/videos/{id}?wait=60`` (a long poll: answered once the
  job has ended), ``GET .../content``. ``BENCH_VIDEO_POLL_S=0.01`` polls at that fixed
  pace instead, as a progress bar would: every poll is a request the server's event loop
  answers under the GIL the generation thread needs too (polling every 5 ms made the mid
  clip 25 % slower here).

Each way runs once untimed (loading, first calls), then three times timed, interleaved
with each way leading in turn, all in one run of the benchmark; the best run of each way
is reported, and each must return a clip of the frames asked. The rate is frames per
second of wall time, request to MP4 bytes in hand, and must be at least 0.99 of the
direct one for clips that take the direct way a second or more (a job's fixed costs,
about 10 ms, are shown but not judged on the tiny model's 0.1 s clip).

Models: ``tiny`` (the tests' Wan: 32x32, 5 frames, 2 steps) and ``mid`` (a random Wan
with about 12 M parameters: 128x128, 17 frames, 8 steps), built offline into a temp
folder; speed does not depend on the weights' values. ``wan-1.3b`` builds a random-weight
pipeline with Wan2.1-T2V-1.3B's dimensions (for a GPU: 480x272, 5 frames, 4 steps), and
``--model PATH`` runs any pipeline folder::

    uv run python bench/bench_diffusers_video.py --model ~/models/Wan2.1-T2V-1.3B-Diffusers
    uv run python bench/bench_diffusers_video.py --size wan-1.3b    # CUDA, bfloat16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import Row, clean_env, motorpool_serve, run_python_json

MIN_RATIO = 0.99
JUDGED_FROM_S = 1.0
"""Clips the direct way makes faster than this are shown, not judged: a job's fixed
costs (a thread, storing and fetching the file: about 10 ms) are a tenth of a
0.1 s clip and nothing of a real one."""
RUNS = 3
"""Timed runs of each way, interleaved, each way leading in turn; the best is reported
(other work on a shared machine only ever adds time)."""
NEEDED = ("diffusers", "imageio_ffmpeg", "motorpool_diffusers_video", "httpx", "uvicorn")
PROMPT = "a red fox running through the snow"
SEED = 1234


@dataclass(frozen=True, slots=True)
class Clip:
    """What each way makes."""

    frames: int
    width: int
    height: int
    steps: int
    device: str = "cpu"
    dtype: str = "float32"


CLIPS = {
    "tiny": Clip(frames=5, width=32, height=32, steps=2),
    "mid": Clip(frames=17, width=128, height=128, steps=8),
    "wan-1.3b": Clip(frames=5, width=480, height=272, steps=4, device="cuda", dtype="bfloat16"),
}

_BUILD = """
import json
from pathlib import Path
from motorpool_diffusers_video.tiny import TINY_WAN, WAN_1_3B, WanConfig, T5Size, build_wan

MID = WanConfig(num_attention_heads=4, attention_head_dim=32, ffn_dim=512, num_layers=4,
                vae_base_dim=16, text=T5Size(d_model=64, d_kv=16, d_ff=128))
config = {"tiny": TINY_WAN, "mid": MID, "wan-1.3b": WAN_1_3B}[ARGS["size"]]
device = "cuda" if ARGS["size"] == "wan-1.3b" else "cpu"
dtype = "bfloat16" if ARGS["size"] == "wan-1.3b" else "float32"
path = build_wan(Path(ARGS["out"]), config, device=device, dtype=dtype)
print(json.dumps({"path": str(path)}))
"""

_CLIENT = """
import json, os, subprocess, tempfile, time
import httpx
import imageio_ffmpeg
import numpy as np
import torch
from diffusers import DiffusionPipeline
from motorpool import Host, Settings
from motorpool.types import VideoRequest

now = time.perf_counter
A = ARGS
C = A["clip"]
dtype = getattr(torch, C["dtype"])
pipeline = DiffusionPipeline.from_pretrained(A["model"], dtype=dtype).to(C["device"])
pipeline.set_progress_bar_config(disable=True)
request = VideoRequest(prompt=A["prompt"], frames=C["frames"], width=C["width"],
                       height=C["height"], steps=C["steps"], seed=A["seed"], fps=16)
body = {"model": "bench", "prompt": A["prompt"], "frames": C["frames"],
        "size": f'{C["width"]}x{C["height"]}', "steps": C["steps"], "seed": A["seed"], "fps": 16}
http = httpx.Client(base_url=A["url"], timeout=600)


def sync():
    if C["device"].startswith("cuda"):
        torch.cuda.synchronize()


def direct():
    output = pipeline(prompt=A["prompt"], num_frames=C["frames"], width=C["width"],
                      height=C["height"], num_inference_steps=C["steps"], output_type="np",
                      generator=torch.Generator("cpu").manual_seed(A["seed"]))
    frames = (np.clip(output.frames[0], 0, 1) * 255).round().astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                   "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f'{C["width"]}x{C["height"]}', "-r", "16", "-i", "-", "-an",
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
                   "-preset", "veryfast", "-movflags", "+faststart", path]
        subprocess.run(command, input=frames.tobytes(), capture_output=True, check=True)
        with open(path, "rb") as file:
            video = file.read()
    return len(frames), video


def api():
    result = host.generate("bench", request)
    return result.frames, result.video


def job():
    created = http.post("/v1/videos", json=body)
    created.raise_for_status()
    job_id = created.json()["id"]
    while True:  # a long poll: the server answers once the job has ended
        if A["poll_s"]:  # BENCH_VIDEO_POLL_S: poll at a fixed pace instead
            time.sleep(A["poll_s"])
            status = http.get(f"/v1/videos/{job_id}").json()
        else:
            status = http.get(f"/v1/videos/{job_id}", params={"wait": 60}).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            break
    if status["status"] != "completed":
        raise RuntimeError(f"the job ended {status}")
    content = http.get(f"/v1/videos/{job_id}/content")
    content.raise_for_status()
    return C["frames"], content.content


def one(way):
    sync()
    start = now()
    frames, video = way()
    sync()
    total = now() - start
    if frames != C["frames"] or video[4:8] != b"ftyp":
        raise RuntimeError(f"{way.__name__} made {frames} frames, {len(video)} bytes")
    return {"total": total, "fps": frames / total, "bytes": len(video)}


ways = {"direct": direct, "api": api, "http": job}
settings = Settings(home=A["home"], models_file=A["home"] + "/models.toml",
                    plugins="diffusers-video", keep_alive_s=-1, log_level="warning")
with Host(settings) as host:
    host.load("bench")
    for way in ways.values():
        one(way)  # warm-up: kernels, caches, the first ffmpeg start
    samples = {name: [] for name in ways}
    order = list(ways)
    for rep in range(A["runs"]):
        for name in order[rep % 3:] + order[:rep % 3]:  # each way leads in turn
            samples[name].append(one(ways[name]))
out = {name: min(runs, key=lambda run: run["total"]) | {"runs": len(runs)}
       for name, runs in samples.items()}
print(json.dumps(out))
"""


def _build(size: str, env: dict[str, str]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="motorpool-bench-video-")) / f"{size}-wan"
    code = f"ARGS = {json.dumps({'size': size, 'out': str(out)})}\n{_BUILD}"
    return Path(str(run_python_json(code, env)["path"]))


def _measure(model: Path, label: str, clip: Clip, env: dict[str, str]) -> list[Row]:
    home = Path(tempfile.mkdtemp(prefix="motorpool-bench-home-"))
    options = f'{{ device = "{clip.device}", dtype = "{clip.dtype}" }}'
    (home / "models.toml").write_text(
        f'[models.bench]\nplugin = "diffusers-video"\nsource = "{model}"\noptions = {options}\n',
        encoding="utf-8",
    )
    with motorpool_serve(home, env) as served:
        url = served.url
        args = {
            "model": str(model), "home": str(home), "url": url, "prompt": PROMPT,
            "seed": SEED, "clip": asdict(clip), "runs": RUNS,
            "poll_s": float(os.environ.get("BENCH_VIDEO_POLL_S", "0")),
        }  # fmt: skip
        out = run_python_json(f"ARGS = {json.dumps(args)}\n{_CLIENT}", env)
    return _rows(out, label, clip)


def _rows(out: dict[str, object], label: str, clip: Clip) -> list[Row]:
    def figure(way: str, field: str) -> float:
        entry = out[way]
        assert isinstance(entry, dict)
        value: object = entry[field]  # parsed JSON
        assert isinstance(value, int | float)
        return float(value)

    what = f"{clip.frames} frames {clip.width}x{clip.height}, {clip.steps} steps, {clip.device}"
    rows = [
        Row(
            f"diffusers-video {label}: direct pipeline + MP4",
            figure("direct", "total") * 1000,
            "ms",
            note=what,
        )
    ]
    for way, name in (("api", "Host.generate"), ("http", "HTTP job")):
        rows += [
            Row(
                f"diffusers-video {label}: {name} frames/s",
                figure(way, "fps"),
                "frames/s",
                figure("direct", "fps"),
                "direct + MP4",
                min_ratio=MIN_RATIO if figure("direct", "total") >= JUDGED_FROM_S else None,
                note=f"best of {figure(way, 'runs'):.0f}, {figure(way, 'bytes'):.0f} B MP4",
            ),
            Row(
                f"diffusers-video {label}: {name} overhead",
                (figure(way, "total") - figure("direct", "total")) * 1000,
                "ms",
                note="way - direct, request to MP4 bytes",
            ),
        ]
    return rows


def measure(models: Sequence[Path] = (), sizes: Sequence[str] = ("tiny", "mid")) -> list[Row]:
    """Rows for the given pipeline folders, or for Wan pipelines of ``sizes`` built here."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return [Row("diffusers-video plugin", None, "", note=f"needs {', '.join(missing)}")]
    env = clean_env()
    env.setdefault("OMP_NUM_THREADS", "1")  # both processes share two cores here
    if models:
        clip = CLIPS[sizes[0]] if sizes else CLIPS["mid"]
        return [row for model in models for row in _measure(model, model.name, clip, env)]
    return [row for size in sizes for row in _measure(_build(size, env), size, CLIPS[size], env)]


def run() -> list[Row]:
    """The benchmark as ``bench/run.py`` runs it (``BENCH_VIDEO_MODEL`` picks a folder)."""
    given = os.environ.get("BENCH_VIDEO_MODEL")
    return measure([Path(given)] if given else ())


def main(argv: Sequence[str] | None = None) -> int:
    """Run on the models named with ``--model`` (default: build tiny and mid), print the table."""
    from run import table  # noqa: PLC0415 - bench/run.py, beside this file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, action="append", default=[], metavar="PATH")
    parser.add_argument("--size", action="append", choices=sorted(CLIPS), default=[])
    args = parser.parse_args(argv)
    rows = measure([path.resolve() for path in args.model], args.size or ("tiny", "mid"))
    print(f"python {sys.version.split()[0]}, best of {RUNS} interleaved runs per way")
    print(table(rows))
    return 1 if any(row.missed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
