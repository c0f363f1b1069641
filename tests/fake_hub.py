"""A fake Hugging Face Hub on 127.0.0.1, for the tests that fetch weights (the ``hub`` fixture in conftest.py).

Downloads go through huggingface_hub's real code against :class:`FakeHub`, a
small HTTP server that answers the Hub's resolve API as the Hub serves an LFS file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from colorvid.registry import sha256_file

HUB_REPO = "colorvid-test/random-weights"
HUB_FILE = "random.safetensors"
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Just enough of the Hub's resolve API for hf_hub_download, as the Hub serves an LFS file.

    HEAD and GET /{repo}/resolve/{revision}/{filename} answer 302 with X-Repo-Commit,
    X-Linked-Etag (the sha256) and X-Linked-Size, and a Location on a storage host.
    That host is this server reached as "localhost", another origin than
    127.0.0.1, so huggingface_hub reads the metadata off the redirect and then
    GETs the storage URL, as it does with the Hub's CDN.
    """

    def __init__(self) -> None:
        # (repo, revision, filename) -> (bytes or the file served, sha256 advertised)
        self.files: dict[tuple[str, str, str], tuple[bytes | Path, str]] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, data: bytes | Path, sha256: str | None = None, repo=HUB_REPO, revision=HUB_REVISION,
            filename=HUB_FILE) -> None:
        """Serve ``data`` (bytes, or a file read when requested) advertising ``sha256`` (default: its own)."""
        if sha256 is None:
            sha256 = sha256_file(data) if isinstance(data, Path) else hashlib.sha256(data).hexdigest()
        self.files[(repo, revision, filename)] = (data, sha256)

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append((handler.command, path))
        keys = list(self.files)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        storage = re.fullmatch(r"/storage/(\d+)", path)
        key = (resolve[1], resolve[2], resolve[3]) if resolve else None  # (repo, revision, filename)
        if key in self.files:
            data, sha = self.files[key]
            handler.send_response(302)
            handler.send_header("Location", f"http://localhost:{self.port}/storage/{keys.index(key)}")
            handler.send_header("X-Repo-Commit", key[1])  # the revision
            handler.send_header("X-Linked-Etag", f'"{sha}"')
            handler.send_header("X-Linked-Size", str(_size(data)))
            handler.send_header("ETag", '"0000000000000000000000000000000000000000"')  # git oid of the LFS pointer
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif storage and int(storage.group(1)) < len(keys):
            data, _ = self.files[keys[int(storage.group(1))]]
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(_size(data)))
            handler.end_headers()
            if body and isinstance(data, Path):
                with open(data, "rb") as source:
                    shutil.copyfileobj(source, handler.wfile, 1 << 20)
            elif body and isinstance(data, bytes):
                handler.wfile.write(data)
        else:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("X-Error-Message", "Entry not found")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _size(data: bytes | Path) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def cached_files(cache: Path) -> list[Path]:
    """Regular files in a huggingface_hub cache, less its bookkeeping (locks, CACHEDIR.TAG)."""
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts and p.name != "CACHEDIR.TAG"]
