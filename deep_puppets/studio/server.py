"""The studio's local web server: the page, the JSON API, the engine on its own thread and the export jobs.

Why the standard library (``http.server.ThreadingHTTPServer``) and a plain HTML/JS page rather than Gradio or
FastAPI: the app is one page and five API routes for one local user; the standard library adds no dependency
(the venv, ``setup.sh`` and ``requirements.txt`` stay as they are), needs no CDN (the page works offline: its
HTML, JS and CSS are package data, read with :mod:`importlib.resources`), and leaves every byte that is served
under this module's control, which is what the safety rules below need. What a framework would give beyond
that, the page's request loop (at most one request in flight, the latest state sent when it returns, no queue
of stale ones), is a few lines of JS.

The engine (:class:`deep_puppets.studio.engine.StudioEngine`) is built, called and closed on one thread
(:class:`EngineThread`), so the preview's requests reach it one at a time, in order. A clip export runs on a
thread of its own (the engine gives an export its own renderer), one at a time: the preview goes on meanwhile
(slower: they share the CPU), and the page polls the export's progress.

Safety (issue 17, item 6): bound to 127.0.0.1 unless told otherwise, and requests whose ``Host`` is not the
address served are refused (DNS rebinding); no file path is accepted from the browser: targets, pairs and controls
only by name from the engine's own lists (:mod:`deep_puppets.studio.api`), the page's files from a fixed list
read at start, exported clips only by server-made ids, written under ``RESULTS/studio/``; POST bodies are JSON
(``Content-Type: application/json``, so another site cannot post a form here) of at most
:data:`~deep_puppets.studio.api.MAX_BODY` bytes (413 unread); errors are JSON ``{"error": one line}``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from queue import Queue
from urllib.parse import parse_qs, urlparse

from ..errors import DeepPuppetsError
from .api import MAX_BODY, RequestError, StudioInfo, frame_reply, member, parse_export, parse_frame

log = logging.getLogger(__name__)

PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/static/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
              "/static/studio.css": ("studio.css", "text/css; charset=utf-8")}
EXPORT_ROUTE = re.compile(r"/api/export/([0-9a-f]{16})(/clip\.mp4)?")
EXPORTS_DIR = "studio"  # under the results folder: the exported clips
MAX_JOBS = 50  # export jobs remembered (their files stay on disk)
CALL_TIMEOUT_S = 120.0
EXPORT_WAIT_S = 10.0  # on exit, how long a running export is waited for


def page_files() -> dict[str, tuple[bytes, str]]:
    """Route -> (bytes, content type) of the page, read once from the package data."""
    folder = resources.files("deep_puppets.studio") / "static"
    return {route: (folder.joinpath(name).read_bytes(), kind) for route, (name, kind) in PAGE_FILES.items()}


class EngineThread:
    """One thread that builds the engine with ``factory(target)``, runs every call on it and closes it."""

    def __init__(self, factory, target: str | None, results_dir):
        self.factory, self.results_dir = factory, Path(results_dir)
        self.tasks: Queue = Queue()
        self.engine = None
        self.info: StudioInfo | None = None
        self.thread = threading.Thread(target=self._loop, name="studio-engine", daemon=True)
        self.thread.start()
        try:
            self.call(lambda _: self._open(target))  # raises the engine's own error (no results, no such target)
        except BaseException:
            self.close()
            raise

    def _open(self, target):
        engine = self.factory(target)
        try:
            info = StudioInfo.from_engine(engine, self.results_dir)
        except BaseException:
            engine.close()
            raise
        if self.engine is not None:
            self.engine.close()
        self.engine, self.info = engine, info

    def _loop(self):
        while True:
            fn, future = self.tasks.get()
            if fn is None:
                close_engine = future
                break
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(self.engine))
                except BaseException as e:  # handed to the caller
                    future.set_exception(e)
        if self.engine is not None and close_engine:
            self.engine.close()
            self.engine = None

    def submit(self, fn) -> Future:
        future: Future = Future()
        self.tasks.put((fn, future))
        return future

    def call(self, fn, timeout: float | None = CALL_TIMEOUT_S):
        return self.submit(fn).result(timeout)

    def switch(self, target: str) -> StudioInfo:
        self.call(lambda _: self._open(target))
        return self.info

    def close(self, close_engine: bool = True):
        self.tasks.put((None, close_engine))
        self.thread.join(timeout=30)


@dataclass
class ExportJob:
    id: str
    target: str
    path: Path
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 0
    error: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict:
        out = {"job": self.id, "state": self.state, "done": self.done, "total": self.total, "error": self.error, "seconds": self.seconds}
        if self.state == "done":
            out["url"] = f"/api/export/{self.id}/clip.mp4"
            out["file"] = self.path.name
        return out


class Studio:
    """The app without HTTP: the engine thread, the open target's info and the export jobs."""

    def __init__(self, factory, results_dir, target: str | None = None):
        self.results_dir = Path(results_dir).resolve()
        self.engine = EngineThread(factory, target, self.results_dir)
        self.jobs: OrderedDict[str, ExportJob] = OrderedDict()
        self.lock = threading.Lock()
        self.export_thread: threading.Thread | None = None

    @property
    def info(self) -> StudioInfo:
        return self.engine.info

    def running_export(self) -> ExportJob | None:
        with self.lock:
            return next((j for j in self.jobs.values() if j.state in ("queued", "running")), None)

    def state(self, target: str | None = None) -> dict:
        if target and target != self.info.target:
            member(target, self.info.targets, "target")
            job = self.running_export()
            if job is not None:
                raise RequestError(f"exporting a clip of {job.target} ({job.done}/{job.total} frames): switch targets when it is done", 409)
            self.engine.switch(target)
        return self.info.to_json()

    def frame(self, body) -> dict:
        t, edits, pair = parse_frame(body, self.info)

        def run(engine):
            start = time.perf_counter()
            frame = engine.frame(t, edits, pair=pair)
            reply = frame_reply(frame, t, pair, 0.0)
            reply["ms"] = round(1000 * (time.perf_counter() - start), 1)
            return reply

        return self.engine.call(run)

    def export(self, body) -> dict:
        keyframes = parse_export(body, self.info)
        with self.lock:
            if any(j.state in ("queued", "running") for j in self.jobs.values()):
                raise RequestError("an export is already running: wait for it", 409)
            job_id = secrets.token_hex(8)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            job = ExportJob(job_id, self.info.target, self.results_dir / EXPORTS_DIR / f"{self.info.target}_{stamp}_{job_id}.mp4")
            job.total = keyframes[-1]["frame"] - keyframes[0]["frame"] + 1
            self.jobs[job_id] = job
            while len(self.jobs) > MAX_JOBS:
                self.jobs.popitem(last=False)

        def progress(done, total):
            job.done, job.total = int(done), int(total)

        def run(engine):
            job.state = "running"
            start = time.perf_counter()
            try:
                job.path.parent.mkdir(parents=True, exist_ok=True)
                engine.export_clip(keyframes, job.path, progress=progress)
                job.state = "done"
            except Exception as e:
                log.exception("export %s failed", job_id)
                job.error, job.state = (str(e).splitlines() or [type(e).__name__])[0], "failed"
            job.seconds = round(time.perf_counter() - start, 2)

        self.export_thread = threading.Thread(target=run, args=(self.engine.engine,), name=f"studio-export-{job_id}", daemon=True)
        self.export_thread.start()
        return job.to_json()

    def job(self, job_id: str) -> ExportJob:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(f"no export job {job_id}", 404)
        return job

    def close(self, wait_s: float = EXPORT_WAIT_S):
        """Stop the engine thread and close the engine, after a running export (waited for ``wait_s``; an export
        still running then is abandoned with its temporary file, and the engine left open for it)."""
        thread = self.export_thread
        if thread is not None and thread.is_alive():
            thread.join(wait_s)
        self.engine.close(close_engine=thread is None or not thread.is_alive())


class Handler(BaseHTTPRequestHandler):
    server: StudioServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the page polls
        log.debug("%s " + fmt, self.address_string(), *args)

    # -------------------------------------------------------------------------------- replies

    def send_bytes(self, status: int, data: bytes, kind: str, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, obj):
        self.send_bytes(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def send_error_json(self, status: int, message: str):
        self.send_json(status, {"error": message})

    def send_file(self, path: Path, name: str):
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                self.wfile.write(chunk)

    # -------------------------------------------------------------------------------- requests

    def host_ok(self) -> bool:
        """The Host header names the address served (or localhost on a loopback server): no DNS rebinding."""
        host = (self.headers.get("Host") or "").strip().lower()
        return host in self.server.allowed_hosts

    def read_json(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower() or self.headers.get("Content-Length") is None:
            self.close_connection = True
            raise RequestError("a request body needs a Content-Length", 411)
        try:
            n = int(self.headers["Content-Length"])
        except ValueError:
            raise RequestError("bad Content-Length") from None
        if n > MAX_BODY or n < 0:
            self.close_connection = True  # the body is left unread
            raise RequestError(f"request body of {n} bytes: at most {MAX_BODY}", 413)
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            self.close_connection = True
            raise RequestError("a request body must be JSON (Content-Type: application/json)", 415)
        try:
            return json.loads(self.rfile.read(n) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the request body is not JSON: {e}") from None
        except RecursionError:
            raise RequestError("the request body is nested too deeply") from None

    def dispatch(self, method: str):
        if not self.host_ok():
            self.close_connection = True
            return self.send_error_json(403, "unexpected Host header: open the studio at the address it printed")
        url = urlparse(self.path)
        studio = self.server.studio
        try:
            if method == "GET" and url.path in self.server.page:
                return self.send_bytes(200, *self.server.page[url.path])
            if method == "GET" and url.path == "/api/state":
                target = (parse_qs(url.query).get("target") or [None])[0]
                return self.send_json(200, studio.state(target))
            if method == "POST" and url.path == "/api/frame":
                return self.send_json(200, studio.frame(self.read_json()))
            if method == "POST" and url.path == "/api/export":
                return self.send_json(202, studio.export(self.read_json()))
            m = EXPORT_ROUTE.fullmatch(url.path)
            if method == "GET" and m:
                job = studio.job(m.group(1))
                if not m.group(2):
                    return self.send_json(200, job.to_json())
                if job.state != "done" or not job.path.is_file():
                    raise RequestError(f"export {job.id} has no clip ({job.state})", 404)
                return self.send_file(job.path, job.path.name)
            if method == "POST":
                self.close_connection = True
            raise RequestError(f"no such page: {method} {url.path[:80]}", 404 if method == "GET" else 405)
        except RequestError as e:
            self.send_error_json(e.status, str(e))
        except DeepPuppetsError as e:  # the engine's one-line errors (StudioError: bad value, no such frame)
            self.send_error_json(400, str(e).splitlines()[0] if str(e) else type(e).__name__)
        except TimeoutError:
            self.send_error_json(503, "the engine is busy: try again")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:
            log.exception("%s %s failed", method, url.path)
            self.send_error_json(500, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), Handler)
        self.studio = studio
        self.page = page_files()
        port = self.server_address[1]
        names = {host, f"[{host}]"} | ({"127.0.0.1", "localhost", "[::1]"} if host in ("127.0.0.1", "localhost", "::1") else set())
        self.allowed_hosts = {f"{n}:{port}" for n in names} | ({"localhost", "127.0.0.1"} if port == 80 else set())
        self.open_any_host = host in ("0.0.0.0", "::", "")
        if self.open_any_host:  # served on every interface: any Host is let in (the user chose it)
            self.allowed_hosts = _AnyHost()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{port}/"


class _AnyHost:
    def __contains__(self, item) -> bool:
        return True


def default_factory(results_dir, device: str = "cpu", backend: str = "auto"):
    """``factory(target)`` building the real engine (imported here: the server runs without it in tests);
    ``backend``: the generator's forward pass (torch, onnx or auto, see the engine)."""

    def build(target):
        from .engine import StudioEngine

        return StudioEngine(results_dir, target=target, device=device, backend=backend)

    return build


@contextmanager
def running_studio(results_dir, target: str | None = None, host: str = "127.0.0.1", port: int = 0, device: str = "cpu", factory=None,
                   backend: str = "auto"):
    """The studio served from a background thread: yields the :class:`StudioServer` (``.url``); stops and closes
    the engine on exit."""
    studio = Studio(factory or default_factory(results_dir, device, backend), results_dir, target)
    try:
        server = StudioServer(studio, host, port)
    except BaseException:
        studio.close()
        raise
    thread = threading.Thread(target=server.serve_forever, name="studio-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        studio.close()
