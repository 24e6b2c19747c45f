"""A stand-in for the Hugging Face Hub's HTTP API on loopback, for download tests.

It answers the three calls ``huggingface_hub.snapshot_download`` makes for a public
model repo: repo info (commit and file list), and HEAD / GET of each file. The real
``huggingface_hub`` client talks to it through ``HF_ENDPOINT``; nothing is faked on the
client side. ``chunk_delay_s`` slows file bodies down so that a test can cancel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "a" * 40
CHUNK = 1024


class FakeHub:
    """Repos by id, each a mapping of file name to bytes."""

    def __init__(self, repos: Mapping[str, Mapping[str, bytes]], chunk_delay_s: float = 0.0):
        self.repos = repos
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[str] = []


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    tree_path = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/")
    info_path = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?$")
    file_path = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<name>[^?]+)")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            hub.requests.append(format % args)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if (match := tree_path.match(path)) and match["repo"] in hub.repos:
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
                    for name, data in hub.repos[match["repo"]].items()
                ]
                self._send(200, json.dumps(entries).encode(), {}, body=body)
            elif match := info_path.match(path):
                files = hub.repos.get(match["repo"])
                if files is None:
                    self._send(
                        404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                    )
                    return
                siblings = [{"rfilename": name} for name in files]
                document = {"id": match["repo"], "sha": COMMIT, "siblings": siblings}
                self._send(200, json.dumps(document).encode(), {}, body=body)
            elif (match := file_path.match(path)) and match["repo"] in hub.repos:
                data = hub.repos[match["repo"]].get(match["name"])
                if data is None:
                    self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                    return
                headers = {
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{_oid(data)}"',
                }
                self._send(200, data, headers, body=body, slow=True)
            else:
                self._send(404, b"", {})

        def _send(
            self,
            status: int,
            data: bytes,
            headers: Mapping[str, str],
            *,
            body: bool = True,
            slow: bool = False,
        ) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not body:
                return
            for start in range(0, len(data), CHUNK):
                self.wfile.write(data[start : start + CHUNK])
                if slow and hub.chunk_delay_s:
                    self.wfile.flush()
                    time.sleep(hub.chunk_delay_s)

    return Handler


def _oid(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # git's blob id, not a security hash


@contextmanager
def serve(hub: FakeHub) -> Iterator[str]:
    """Run the fake hub on 127.0.0.1; yields its endpoint URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def client_env(endpoint: str, home: Path) -> dict[str, str]:
    """The environment of a host process that downloads from ``endpoint`` into ``home``.

    ``huggingface_hub`` reads these once, at import: the host must run in a fresh process.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MOTORPOOL_", "HF_"))}
    return {
        **inherited,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home / "hf"),
        "MOTORPOOL_HOME": str(home),
    }
