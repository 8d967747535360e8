"""The puppet studio's web app (deep_puppets/studio/server.py, api.py, static/, ``deep-puppets studio``): the
JSON API round trips, the safety rules (no paths from the browser, bounded bodies and values, loopback only by
default, Host checked), the export job's life, the page without a generator, and the page itself driven in
headless Chromium (tests/test_report.py's helpers): the "mouth open" control at its maximum opens the generated
mouth (measured with MediaPipe), yaw turns the face the right way.

Most tests use a fake engine (tests/studio_fake.py) that follows the engine's contract and draws the demo's
astronaut with the demo's warp rig, so MediaPipe finds a real face in its images.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from fnmatch import fnmatch

import numpy as np
import pytest

from deep_puppets.studio.server import PAGE_FILES, running_studio

from .conftest import REPO, copy_run
from .studio_fake import CONTROLS, FakeEngine
from .test_report import chromium_page, need_browser

# ------------------------------------------------------------------------------------------ helpers


@contextmanager
def fake_studio(tmp_path, **engine_kw):
    """The studio on a fake engine, served on a free port of 127.0.0.1; yields (server, the engines made)."""
    made = []

    def factory(target):
        engine = FakeEngine(tmp_path, target, **engine_kw)
        made.append(engine)
        return engine

    with running_studio(tmp_path, factory=factory) as server:
        yield server, made


def call(server, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, parsed JSON or bytes, headers) of one request to the studio."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    h = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    kind = r.getheader("Content-Type") or ""
    return r.status, (json.loads(payload) if kind.startswith("application/json") else payload), r


def decode(data_url: str) -> np.ndarray:
    import cv2

    assert data_url.startswith("data:image/png;base64,")
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


DETECT_SIZE = 256  # smaller crops are enlarged for MediaPipe (it wants a face of a fair size)


def face_signals(image: np.ndarray) -> dict:
    """MediaPipe's landmarks on ``image`` (pixels of ``image``) and the named signals measured on them (mouth_open:
    the inner-lip gap over the inter-ocular distance; yaw: the nose bridge's offset along the ear line)."""
    import cv2

    from deep_puppets.expression_signals import expression_signals
    from deep_puppets.landmarks import detect_frames

    scale = max(1.0, DETECT_SIZE / max(image.shape[:2]))
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale > 1 else image
    det = detect_frames([np.ascontiguousarray(big)])
    assert det["valid"][0], "MediaPipe finds no face in the generated image"
    signals = expression_signals(det["landmarks"], det["valid"])
    return {"landmarks": det["landmarks"][0, :, :2] / scale, **{k: float(v[0]) for k, v in signals.items()}}


MOUTH_POINTS = (61, 291, 0, 17, 13, 14)  # corners, outer and inner lip middles


def mouth_box(landmarks: np.ndarray, margin: float = 0.35) -> tuple[slice, slice]:
    p = landmarks[list(MOUTH_POINTS)]
    (x0, y0), (x1, y1) = p.min(axis=0), p.max(axis=0)
    w = x1 - x0
    return slice(int(y0 - margin * w), int(y1 + margin * w) + 1), slice(int(x0 - margin * w), int(x1 + margin * w) + 1)


# ------------------------------------------------------------------------------------------ the API


def upper_face_box(landmarks: np.ndarray) -> tuple[slice, slice]:
    """The face from its top down to the eye line: what a mouth edit must leave alone."""
    eye_y = landmarks[[33, 263], 1].mean()
    (x0, y0), (x1, _) = landmarks.min(axis=0), landmarks.max(axis=0)
    return slice(int(y0), int(eye_y) + 1), slice(int(x0), int(x1) + 1)


def test_state_and_frame_round_trip(tmp_path):
    with fake_studio(tmp_path) as (server, made):
        status, state, _ = call(server, "GET", "/api/state")
        assert status == 200 and state["target"] == "astro" and state["targets"] == ["astro", "other"]
        assert [c["name"] for c in state["controls"]] == [c.name for c in CONTROLS] and state["has_generator"]
        assert state["pairs"] == [{"name": "src__astro", "n_frames": 6}] and state["n_frames"] == 12 and state["size"] == 128
        status, plain, _ = call(server, "POST", "/api/frame", {"frame": 3, "edits": {}})
        assert status == 200, plain
        status, edited, _ = call(server, "POST", "/api/frame", {"frame": 3, "edits": {"mouth_open": 1.0}, "target": "astro"})
        assert status == 200, edited
        a, b = decode(plain["generated"]), decode(edited["generated"])
        assert a.shape == b.shape == (128, 128, 3) and decode(edited["conditioning"]).shape == (128, 128, 3)
        assert edited["values"]["mouth_open"] == pytest.approx(plain["values"]["mouth_open"] + 1.0)
        assert "mouth_open" in edited["out_of_range"] and "mouth_open" not in plain["out_of_range"]
        assert np.abs(a.astype(int) - b).mean() > 0.5 and edited["ms"] > 0
        # driven by a pair: the pair's frame, not the target's
        status, driven, _ = call(server, "POST", "/api/frame", {"frame": 5, "pair": "src__astro"})
        assert status == 200 and driven["pair"] == "src__astro"
        engine = made[0]
    assert engine.calls[-1] == ("frame", 5, {}, "src__astro") and engine.closed  # every call on its one thread


def test_a_target_is_switched_by_name_on_the_engine_thread(tmp_path):
    with fake_studio(tmp_path) as (server, made):
        status, state, _ = call(server, "GET", "/api/state?target=other")
        assert status == 200 and state["target"] == "other" and len(made) == 2 and made[0].closed
        status, reply, _ = call(server, "POST", "/api/frame", {"frame": 0, "target": "astro"})  # a page of the old target
        assert status == 409 and "reload" in reply["error"]
        for bad in ("../astro", "%2Fetc%2Fpasswd", "nobody"):
            status, reply, _ = call(server, "GET", f"/api/state?target={bad}")
            assert status == 400 and "\n" not in reply["error"], reply


BAD_FRAMES = [
    ({"frame": 0, "edits": {"no_such": 1}}, "unknown control 'no_such'"),
    ({"frame": 0, "edits": {"../../etc/passwd": 1}}, "is not a name"),
    ({"frame": 0, "pair": "/etc/passwd"}, "is not a name"),
    ({"frame": 0, "pair": "other__astro"}, "unknown pair 'other__astro'"),
    ({"frame": 12}, "frame 12 is outside 0..11"),
    ({"frame": 6, "pair": "src__astro"}, "frame 6 is outside 0..5"),
    ({"frame": 1.5}, "must be an integer"),
    ({"frame": True}, "must be an integer"),
    ({"frame": 0, "edits": {"yaw": 1e9}}, "outside its range -30..30"),
    ({"frame": 0, "edits": {"yaw": "left"}}, "must be a finite number"),
    ({"frame": 0, "edits": [1, 2]}, "edits must be an object"),
    ({"frame": 0, "path": "/etc/passwd"}, "unknown field 'path'"),
    ({"edits": {}}, "missing field 'frame'"),
    ([1, 2, 3], "must be a JSON object"),
]


def test_bad_input_is_a_one_line_json_error_and_never_reaches_the_engine(tmp_path):
    with fake_studio(tmp_path) as (server, made):
        for body, message in BAD_FRAMES:
            status, reply, _ = call(server, "POST", "/api/frame", body)
            assert status == 400 and message in reply["error"] and "\n" not in reply["error"], (body, reply)
        # too large: refused unread (413); not JSON (415, so no other site can post a form here); broken JSON (400)
        status, reply, _ = call(server, "POST", "/api/frame", raw=b"{" + b" " * (70 * 1024) + b"}", headers={"Content-Type": "application/json"})
        assert status == 413 and "at most 65536" in reply["error"]
        status, reply, _ = call(server, "POST", "/api/frame", raw=b"frame=0", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 415
        status, reply, _ = call(server, "POST", "/api/frame", raw=b"{frame", headers={"Content-Type": "application/json"})
        assert status == 400 and "not JSON" in reply["error"]
        status, reply, _ = call(server, "POST", "/api/frame", raw=b"[" * 60000, headers={"Content-Type": "application/json"})
        assert status == 400, reply
        # nothing but the page and the API is served: no file of the results folder or elsewhere, by any spelling
        (tmp_path / "secret.txt").write_text("no")
        for path in ("/secret.txt", "/static/../secret.txt", "/static/server.py", "/../../etc/passwd", "/api/export/../../secret.txt",
                     "/api/export/0123456789abcdef/clip.mp4", "/api/export/0123456789abcdef"):
            status, reply, _ = call(server, "GET", path)
            assert status == 404 and isinstance(reply, dict), (path, reply)
        # a page of another site reaching 127.0.0.1 through its own name (DNS rebinding) is refused
        status, reply, _ = call(server, "GET", "/api/state", headers={"Host": "evil.example:80"})
        assert status == 403
        assert not [c for c in made[0].calls]  # none of it reached the engine


def test_the_studio_listens_on_loopback_only_by_default(tmp_path):
    from deep_puppets.cli import parser

    a = parser().parse_args(["studio", str(tmp_path)])
    assert (a.host, a.target, a.device) == ("127.0.0.1", None, "cpu")
    with fake_studio(tmp_path) as (server, _):
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        for host in ("localhost", "127.0.0.1"):
            assert call(server, "GET", "/", headers={"Host": f"{host}:{server.server_address[1]}"})[0] == 200


def test_export_job_lifecycle(tmp_path):
    gate = threading.Event()
    with fake_studio(tmp_path, export_gate=gate) as (server, made):
        keyframes = [{"frame": 8, "edits": {"mouth_open": 0.9}}, {"frame": 2, "edits": {}}]
        status, job, _ = call(server, "POST", "/api/export", {"keyframes": keyframes})
        assert status == 202 and job["state"] in ("queued", "running") and len(job["job"]) == 16
        # while it runs: the preview goes on, a second export and a switch of target are refused (409)
        assert call(server, "POST", "/api/frame", {"frame": 0})[0] == 200
        status, reply, _ = call(server, "POST", "/api/export", {"keyframes": keyframes})
        assert status == 409 and "already running" in reply["error"]
        status, reply, _ = call(server, "GET", "/api/state?target=other")
        assert status == 409 and "exporting a clip of astro" in reply["error"]
        gate.set()
        for _ in range(200):
            status, job, _ = call(server, "GET", f"/api/export/{job['job']}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert job["state"] == "done" and job["done"] == job["total"] == 7, job
        status, data, r = call(server, "GET", job["url"])
        assert status == 200 and r.getheader("Content-Type") == "video/mp4" and "attachment" in r.getheader("Content-Disposition")
        clip = tmp_path / "studio" / job["file"]
        assert clip.read_bytes() == data  # written under the results folder, named by the server
        from deep_puppets.video import read_frames

        frames = read_frames(clip)
        assert len(frames) == 7  # frames 2..8
        # the mouth opens along the clip: the last frame's mouth region darker than the first's (the inside of the mouth)
        box = mouth_box(face_signals(frames[0])["landmarks"])
        assert frames[-1][box].mean() < frames[0][box].mean() - 5
        for bad, message in (({"keyframes": []}, "non-empty"), ({"keyframes": [{"frame": 1}, {"frame": 1}]}, "two keyframes at frame 1"),
                             ({"keyframes": [{"frame": k % 12} for k in range(201)]}, "at most 200"),
                             ({"keyframes": [{"frame": 0, "edits": {"x/y": 1}}]}, "not a name")):
            status, reply, _ = call(server, "POST", "/api/export", bad)
            assert status in (400, 413) and (status == 413 or message in reply["error"]), (bad, reply)
    assert made[0].calls.count(("export", 7)) == 1 and made[0].export_threads and made[0].thread not in made[0].export_threads


def test_without_a_generator_the_state_says_how_to_train_and_frames_have_conditioning_only(tmp_path):
    with fake_studio(tmp_path, has_generator=False) as (server, _):
        state = call(server, "GET", "/api/state")[1]
        assert not state["has_generator"] and "astro/gan/generator.pt" in state["train_command"]
        reply = call(server, "POST", "/api/frame", {"frame": 0})[1]
        assert reply["generated"] is None and decode(reply["conditioning"]).shape == (128, 128, 3)
    (tmp_path / "results").mkdir()
    (tmp_path / "config.yaml").write_text("{}")
    from deep_puppets.studio.api import train_command

    assert train_command(tmp_path / "results", "astro") == f"deep-puppets run {tmp_path}"


def test_the_page_files_are_package_data():
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["deep_puppets"]
    for name, _ in PAGE_FILES.values():
        rel = f"studio/static/{name}"
        assert (REPO / "deep_puppets" / rel).is_file() and any(fnmatch(rel, g) for g in globs), rel
    page = (REPO / "deep_puppets/studio/static/index.html").read_text()
    assert "http://" not in page and "https://" not in page  # no CDN: works offline


FAKE_CLI = """
import sys
from deep_puppets import cli
from deep_puppets.studio import server
from tests.studio_fake import FakeEngine
server.default_factory = lambda results, device="cpu", backend="auto": (lambda target: FakeEngine(results, target, device))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_the_url_and_stops_cleanly_on_ctrl_c_or_kill(tmp_path, stop):
    p = subprocess.Popen([sys.executable, "-c", FAKE_CLI, "studio", str(tmp_path), "--port", "0"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = p.stdout.readline()
        assert line.startswith("studio: http://127.0.0.1:") and "target astro" in line, (line, p.stderr.read() if p.poll() is not None else "")
        url = line.split()[1]
        import urllib.request

        with urllib.request.urlopen(url + "api/state", timeout=10) as r:
            assert json.loads(r.read())["target"] == "astro"
        p.send_signal(stop)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and "stopped" in out and "Traceback" not in err, err
    finally:
        if p.poll() is None:
            p.kill()
    if stop == signal.SIGTERM:
        return
    r = subprocess.run([sys.executable, "-m", "deep_puppets.cli", "studio", str(tmp_path / "none")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().endswith("no such folder (give a workflow results folder, e.g. out/actor/results)")


def test_ctrl_c_delivered_to_another_thread_still_stops_the_studio(tmp_path):
    """The kernel may hand a process's SIGINT to any of its threads; the studio must stop all the same (a main thread
    asleep in a plain wait() never ran the handler: a flaky hang of the test above)."""
    script = FAKE_CLI.replace("sys.exit(cli.main(sys.argv[1:]))", """
import signal, threading, time
def interrupt_from_here():
    time.sleep(1.0)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread, not the main one
threading.Thread(target=interrupt_from_here, daemon=True).start()
sys.exit(cli.main(sys.argv[1:]))""")
    p = subprocess.Popen([sys.executable, "-c", script, "studio", str(tmp_path), "--port", "0"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and "studio: stopped" in out and "Traceback" not in err, (out, err)
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------------------------------ the page in Chromium


@pytest.fixture(scope="module")
def browser():
    need_browser()


def wait_idle(page):
    """Until the page has no request in flight and nothing left to send, and has shown a reply."""
    page.wait_for_function("() => document.body.dataset.busy === '0' && window.studio.lastReply() !== null", timeout=60000)


def shown(page, which: str = "generated") -> np.ndarray:
    return decode(page.eval_on_selector(f"#{which}", "e => e.src"))


def slide_to(page, control: str, key: str):
    """Move a control's slider with the keyboard as a person does ("End": its maximum) and wait for the view."""
    slider = page.locator(f'[data-control="{control}"] input[type=range]')
    slider.focus()
    page.keyboard.press(key)
    wait_idle(page)


def drive_mouth_and_yaw(page, url: str, tmp_path, mouth: str = "mouth_open", yaw: str = "yaw") -> dict:
    """The bar: "mouth open" at its maximum opens the generated mouth (the mouth region changed, twice as much as the
    face above the eyes; MediaPipe's inner-lip gap grew); reset brings the frame back; yaw at its maximum turns the face toward image right (the project's
    convention: positive yaw turns the nose to the subject's left). Returns the measurements."""
    page.goto(url)
    wait_idle(page)
    before = shown(page)
    s0 = face_signals(before)
    slide_to(page, mouth, "End")
    opened = shown(page)
    s1 = face_signals(opened)
    diff = np.abs(opened.astype(float) - before).mean(axis=-1)
    inside, outside = diff[mouth_box(s0["landmarks"])].mean(), diff[upper_face_box(s0["landmarks"])].mean()
    assert inside > 4 and inside > 2 * outside, (inside, outside)
    assert s1["mouth_open"] > s0["mouth_open"] + 0.05, (s0["mouth_open"], s1["mouth_open"])
    assert page.locator(f'[data-control="{mouth}"]').get_attribute("class").count("edited") == 1
    page.locator(f'[data-control="{mouth}"] button.reset').click()
    wait_idle(page)
    assert np.abs(shown(page).astype(int) - before).max() <= 2  # back as tracked
    slide_to(page, yaw, "End")
    s2 = face_signals(shown(page))
    nose = 1  # the nose tip
    assert s2["yaw"] > s0["yaw"] + 0.1 and s2["landmarks"][nose, 0] > s0["landmarks"][nose, 0] + 1, (s0["yaw"], s2["yaw"])
    page.screenshot(path=str(tmp_path / "studio.png"))
    print("screenshot:", tmp_path / "studio.png")
    return {"mouth_open": (s0["mouth_open"], s1["mouth_open"]), "yaw": (s0["yaw"], s2["yaw"]), "region": (inside, outside)}


def test_the_bar_on_the_fake_engine_mouth_opens_and_yaw_turns_in_chromium(browser, tmp_path):
    with fake_studio(tmp_path) as (server, _), chromium_page() as page:
        drive_mouth_and_yaw(page, server.url, tmp_path)
        assert not page.locator("#range-warning").is_hidden()  # yaw 30° is outside the tracked range
        assert "out-of-range" in page.locator('[data-control="yaw"]').get_attribute("class")
        page.click("#reset-all")
        wait_idle(page)
        assert page.locator("#range-warning").is_hidden()


def test_keyframes_export_a_clip_from_the_page_and_a_pair_drives_the_timeline(browser, tmp_path):
    with fake_studio(tmp_path) as (server, made), chromium_page() as page:
        page.goto(server.url)
        wait_idle(page)
        assert page.locator("#target").evaluate("s => Array.from(s.options).map(o => o.value)") == ["astro", "other"]
        page.fill("#frame-number", "2")
        page.press("#frame-number", "Enter")
        wait_idle(page)
        page.click("#add-keyframe")
        page.fill("#frame-number", "6")
        page.press("#frame-number", "Enter")
        slide_to(page, "mouth_open", "End")
        page.click("#add-keyframe")
        assert page.locator("#keyframe-list li").count() == 2
        page.click("#export")
        page.wait_for_selector("#download:not([hidden])", timeout=60000)
        href = page.get_attribute("#download", "href")
        status, data, _ = call(server, "GET", href)
        assert status == 200 and data == next((tmp_path / "studio").glob("astro_*.mp4")).read_bytes()
        assert ("export", 5) in made[0].calls
        page.locator("#keyframe-list li button.remove").first.click()
        assert page.locator("#keyframe-list li").count() == 1
        # drive from a video: the timeline becomes the pair's frames, and the frames asked for are the pair's
        page.select_option("#source", "src__astro")
        wait_idle(page)
        assert page.get_attribute("#frame-slider", "max") == "5" and page.locator("#add-keyframe").is_disabled()
        page.fill("#frame-number", "5")
        page.press("#frame-number", "Enter")
        wait_idle(page)
        assert made[0].calls[-1][1] == 5 and made[0].calls[-1][3] == "src__astro"
        # another target: the page reloads with ?target=
        page.select_option("#target", "other")
        page.wait_for_url("**/?target=other")
        wait_idle(page)
        assert page.evaluate("() => window.studio.state.info.target") == "other"


def test_the_page_keeps_one_request_in_flight_and_shows_the_latest_state(browser, tmp_path):
    with fake_studio(tmp_path, frame_delay=0.25) as (server, made), chromium_page() as page:
        page.goto(server.url)
        wait_idle(page)
        n0 = len(made[0].calls)
        page.locator('[data-control="yaw"] input[type=range]').focus()
        for _ in range(12):
            page.keyboard.press("ArrowRight")
        wait_idle(page)
        calls = made[0].calls[n0:]
        assert len(calls) <= 4, calls  # not one request per key: at most one in flight, then the latest
        assert calls[-1][2] == {"yaw": 12.0} and page.evaluate("() => window.studio.lastReply().values.yaw") == pytest.approx(
            made[0].tracked(0)["yaw"] + 12)


def test_the_page_without_a_generator_shows_the_conditioning_and_the_command_that_trains_it(browser, tmp_path):
    with fake_studio(tmp_path, has_generator=False) as (server, _), chromium_page() as page:
        page.goto(server.url)
        wait_idle(page)
        assert page.locator("#no-generator").is_visible() and "astro/gan/generator.pt" in page.inner_text("#train-command")
        assert page.locator("#generated-figure").is_hidden() and shown(page, "conditioning").shape == (128, 128, 3)


# ------------------------------------------------------------------------------------------ the real engine


def export_from_page(page, frames: tuple[int, int], control: str, key: str = "End") -> str:
    """Keyframes at ``frames[0]`` (as tracked) and ``frames[1]`` (``control`` moved by ``key``), exported from the
    page; returns the download link."""
    for t in frames:
        page.fill("#frame-number", str(t))
        page.press("#frame-number", "Enter")
        wait_idle(page)
        if t == frames[1]:
            slide_to(page, control, key)
        page.click("#add-keyframe")
    page.click("#export")
    page.wait_for_selector("#download:not([hidden])", timeout=300000)
    return page.get_attribute("#download", "href")


@pytest.mark.slow
def test_the_studio_on_the_tiny_run_edits_drives_and_exports_from_the_page(browser, tiny_full_run, tmp_path):
    """The real engine on (a copy of) the tiny run's results: the page loads its target, the mouth control changes
    the generated frame, a pair drives the timeline, and two keyframes export an mp4 of the frames between them at
    the target's size."""
    from deep_puppets.video import read_frames

    results = copy_run(tiny_full_run, tmp_path / "run") / "results"  # the export writes RESULTS/studio/
    with running_studio(results) as server, chromium_page() as page:
        page.goto(server.url)
        wait_idle(page)
        info = page.evaluate("() => window.studio.state.info")
        assert info["has_generator"] and info["pairs"] and "mouth_open" in [c["name"] for c in info["controls"]]
        before = shown(page)
        slide_to(page, "mouth_open", "End")
        assert np.abs(shown(page).astype(int) - before).mean() > 0.5
        assert "mouth_open" in page.evaluate("() => window.studio.lastReply().out_of_range")
        page.click("#reset-all")
        wait_idle(page)
        href = export_from_page(page, (2, 9), "mouth_open")
        status, data, _ = call(server, "GET", href)
        clip = next((results / "studio").glob(f"{info['target']}_*_{href.split('/')[-2]}.mp4"))  # named by the job's id
        assert status == 200 and data == clip.read_bytes()
        page.select_option("#source", info["pairs"][0]["name"])
        wait_idle(page)
        assert page.evaluate("() => window.studio.lastReply().pair") == info["pairs"][0]["name"]
        page.screenshot(path=str(tmp_path / "studio_tiny.png"))
    frames = read_frames(clip)
    probe = json.loads((results / "videos" / info["target"] / "probe.json").read_text())
    assert len(frames) == 8 and frames.shape[1:3] == (probe["height"], probe["width"])  # frames 2..9, the target's own size


@pytest.mark.slow
def test_the_bar_on_a_trained_demo_target_mouth_opens_and_yaw_turns_in_chromium(browser, studio_run, tmp_path):
    """Issue 17's bar on the real engine: ``studio_run`` (tests/conftest.py) is the demo target trained well enough
    for MediaPipe to see its mouth; the page is driven as a person does (keyboard on the sliders)."""
    with running_studio(studio_run) as server, chromium_page() as page:
        seen = drive_mouth_and_yaw(page, server.url, tmp_path)
    print("measured:", seen)
