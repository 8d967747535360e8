"""The report people read in a browser (deep_puppets/report_page.py, rules/report.smk), its labelled videos, the
readable tracking overlay and the demo's tracking scored against its known motion.

The browser tests drive Debian's Chromium headless through Playwright for Python (no browser download:
``executable_path=/usr/bin/chromium``). Where Chromium or Playwright is missing they skip, unless
DEEP_PUPPETS_REQUIRE_BROWSER=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from deep_puppets import diagnostics as dg
from deep_puppets import report_page
from deep_puppets.annotate import label, strip_height
from deep_puppets.camera import FLIP, rotation_log, yaw_pitch_roll_matrix
from deep_puppets.gan.synthesize import side_by_side
from deep_puppets.mp4_writer import write_mp4
from deep_puppets.report_page import headroom_text, metrics_table, tracking_table, video_page

from .conftest import copy_run, run_workflow

CHROMIUM = os.environ.get("DEEP_PUPPETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# ------------------------------------------------------------------------------------ the known motion


def _fit_like(true_rotation: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Camera vectors of a fit that follows the truth exactly, for a photo whose own head pose (model frame) is the
    rotation ``offset``: F·R(t) = R_true(t)·F·R_photo (deep_puppets.camera: image = scale·F·R·X + t)."""
    from deep_puppets.camera import rotation_matrix

    cam = np.zeros((len(true_rotation), 7))
    cam[:, :3] = rotation_log(FLIP @ true_rotation @ FLIP @ rotation_matrix(offset))
    return cam


def test_rotation_vs_truth_removes_one_constant_rotation_and_measures_the_rest():
    t = np.arange(60)
    ypr = np.stack([12 * np.sin(t / 7), 6 * np.sin(t / 5 + 1), 8 * np.cos(t / 9)], axis=1)
    true = np.stack([yaw_pitch_roll_matrix(*a) for a in ypr])
    valid = np.ones(len(t), bool)
    exact = dg.rotation_vs_truth(_fit_like(true, np.array([0.3, -0.2, 0.1])), valid, true)
    assert max(exact["rms_deg"].values()) < 1e-9 and min(exact["correlation"].values()) > 0.999999
    assert exact["offset_deg"] == pytest.approx(np.degrees(np.linalg.norm([0.3, -0.2, 0.1])), abs=1e-6)
    # a fit that turns the head only half as far as the truth in yaw: its yaw error is about half the yaw motion
    half = ypr * [0.5, 1, 1]
    wrong = dg.rotation_vs_truth(_fit_like(np.stack([yaw_pitch_roll_matrix(*a) for a in half]), np.zeros(3)), valid, true)
    assert wrong["rms_deg"]["yaw"] == pytest.approx(np.sqrt(np.mean((ypr[:, 0] - half[:, 0] - np.mean(ypr[:, 0] - half[:, 0])) ** 2)), rel=0.15)
    assert wrong["rms_deg"]["yaw"] > 2 and wrong["rms_deg"]["pitch"] < 1
    # invalid frames are left out, and the fitted curve is NaN there
    valid[::3] = False
    part = dg.rotation_vs_truth(_fit_like(true, np.zeros(3)), valid, true)
    assert part["frames"] == valid.sum() and np.isnan(part["curves"]["fitted"][::3]).all()


# ------------------------------------------------------------------------------------- labelled panels


def test_side_by_side_labels_every_panel_on_a_dark_strip_readable_at_the_preview_size():
    grey = [np.full((64, 64, 3), 150, np.uint8)] * 2
    plain = next(side_by_side([grey, grey, grey], height=256))
    labelled = next(side_by_side([grey, grey, grey], height=256, labels=("source", "conditioning", "output")))
    h = strip_height(256)
    assert plain.shape == labelled.shape == (256, 768, 3)
    for k in range(3):
        strip, below = labelled[:h, 256 * k:256 * (k + 1)], labelled[h:, 256 * k:256 * (k + 1)]
        assert (below == 150).all()  # the picture itself is untouched
        text = strip.max(axis=-1) > 200
        assert (strip.min(axis=-1) < 60).mean() > 0.5  # a dark strip
        assert text.sum() > 60 and np.ptp(np.nonzero(text)[0]) >= 0.3 * h  # white text, x-height a third of the strip
    assert not (plain.max(axis=-1) > 200).any()


def test_label_shrinks_a_long_text_to_the_panel():
    img = label(np.zeros((100, 60, 3), np.uint8), "a long label for a narrow panel")
    cols = np.nonzero((img.max(axis=-1) > 100).any(axis=0))[0]
    assert cols.max() < 60 and cols.min() >= 2


# ------------------------------------------------------------------------------------- report pieces


SUMMARY = {
    "n_frames": 5, "regions": ["frame", "head", "face"],
    "methods": {m: {r: {"e_col": {"mean": e + i / 100}, "psnr": {"mean": 30 - i}, "ssim": {"mean": 0.9 - i / 10}}
                    for i, r in enumerate(("frame", "head", "face"))} for m, e in (("gan", 0.01), ("nearest", 0.02))},
}


def test_metrics_table_has_a_row_per_method_and_region_with_the_summary_means():
    table = metrics_table(SUMMARY)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]
    assert len(rows) == 6
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert cells[0] == ["GAN (ours)", "whole frame", "0.0100", "30.00", "0.900"]
    assert cells[5] == ["face", "0.0400", "28.00", "0.700"]  # the method cell spans the three regions


def test_headroom_text_gives_the_generator_and_the_oracle_on_both_parts():
    room = {"gan": {"training": 25.38, "held_out": 22.69}, "oracle_retrieval": {"training": 25.56, "held_out": 22.97}, "gap_frames": 15}
    text = headroom_text(room)
    assert [text.index(v) for v in ("25.4 dB", "22.7 dB", "23.0 dB", "25.6 dB", "15 frames")] == sorted(
        text.index(v) for v in ("25.4 dB", "22.7 dB", "23.0 dB", "25.6 dB", "15 frames"))


def test_tracking_table_shows_the_truth_scores_only_for_demo_clips():
    base = {"valid_frames": 9, "frames": 10, "nme_mean": 0.0123, "jitter_ratio": 0.5}
    assert "known head motion" not in tracking_table(base)
    truth = {"frames": 9, "rms_deg": {"yaw": 1.5, "pitch": 2.0, "roll": 0.5}, "correlation": {"yaw": 0.99, "pitch": 0.9, "roll": 0.95},
             "true_std_deg": {"yaw": 5.0, "pitch": 3.0, "roll": 4.0}}
    text = tracking_table({**base, "truth": truth})
    assert "known head motion" in text and "<td>1.50</td><td>2.00</td><td>0.50</td>" in text and "<td>0.990</td>" in text


def test_video_page_embeds_the_mp4_bytes_unless_too_large(tmp_path, monkeypatch):
    mp4 = tmp_path / "v.mp4"
    write_mp4(mp4, (np.full((32, 48, 3), 10 * i, np.uint8) for i in range(5)), 10.0)
    video_page(mp4, tmp_path / "v.html", "title")
    uri = re.search(r'src="data:video/mp4;base64,([^"]+)"', (tmp_path / "v.html").read_text()).group(1)
    assert base64.b64decode(uri) == mp4.read_bytes()
    monkeypatch.setattr(report_page, "EMBED_MAX_BYTES", mp4.stat().st_size - 1)  # too large: named, not embedded
    video_page(mp4, tmp_path / "v.html", "title")
    text = (tmp_path / "v.html").read_text()
    assert "base64" not in text and "too large to embed" in text and str(mp4) in text


# ------------------------------------------------------------------------------------------- the browser


@functools.lru_cache(maxsize=1)
def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements.txt)"
    return None


def need_browser():
    why = _browser_missing()
    if why:
        if os.environ.get("DEEP_PUPPETS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"DEEP_PUPPETS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


@contextmanager
def serve(folder: Path):
    """``folder`` over http://127.0.0.1:PORT/ from a thread (quiet)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


# Plays every <video> of a document (muted), waits until each has advanced, and returns what it saw.
# Plays every <video> of a document (muted) until it has advanced by a few frames, and returns what it saw: the
# time reached, the decoded size, and the mean brightness of the frame shown (drawn into a canvas).
PLAY_ALL = """async (timeoutMs) => {
  const out = [];
  for (const v of Array.from(document.querySelectorAll('video'))) {
    v.scrollIntoView();
    v.muted = true;
    let error = null;
    try { await v.play(); } catch (e) { error = String(e); }
    const t0 = performance.now();
    const goal = () => Math.min(0.2, (v.duration || 1) / 2);
    while (!error && v.currentTime < goal() && performance.now() - t0 < timeoutMs) { await new Promise(r => setTimeout(r, 20)); }
    v.pause();
    let brightness = null;
    if (v.videoWidth) {
      const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
      const g = c.getContext('2d'); g.drawImage(v, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0;
      for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
      brightness = s / (3 * d.length / 4);
    }
    out.push({src: v.currentSrc.slice(0, 200), currentTime: v.currentTime, duration: v.duration, videoWidth: v.videoWidth,
              videoHeight: v.videoHeight, brightness: brightness, error: error || (v.error ? 'media error ' + v.error.code : null)});
  }
  return out;
}"""


def assert_played(v: dict) -> None:
    """A video seen by PLAY_ALL played: no error, advanced by a few frames, showed a picture (not black)."""
    assert v["error"] is None and v["currentTime"] >= min(0.2, v["duration"] / 2) > 0, v
    assert v["brightness"] is not None and v["brightness"] > 10, v


def mp4_size(path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height


@pytest.fixture(scope="session")
def browser():
    """Chromium and Playwright are here (else skip, or fail in CI) — checked before the tiny run is made."""
    need_browser()


@pytest.fixture(scope="module")
def demo_report(tiny_full_run, tmp_path_factory):
    """A copy of the tiny finished run, its report targets run: the report folder and Snakemake's report."""
    work = copy_run(tiny_full_run, tmp_path_factory.mktemp("report") / "run")
    r = run_workflow(work, "--cores", "2", "report_page")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    r = run_workflow(work, "--report", str(work / "report.html"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return work


@pytest.mark.slow
@pytest.mark.slow
def test_every_video_of_the_demo_report_plays_in_chromium(browser, demo_report, tmp_path):
    results = demo_report / "results"
    folder = results / "report"
    pairs, targets = list((results / "pairs").iterdir()), sorted({p.name.split("__")[1] for p in (results / "pairs").iterdir()})
    videos = list((results / "videos").iterdir())
    expected = 2 * len(pairs) + 2 * len(targets) + len(videos)  # re-enactment + preview, heat map + side by side, overlay
    with serve(folder) as url, chromium_page() as page:
        page.goto(url + "index.html")
        seen = page.evaluate(PLAY_ALL, 20000)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    print("screenshot:", tmp_path / "report.png")
    assert len(seen) >= expected, seen
    for v in seen:
        assert_played(v)
        local = folder / unquote(urlparse(v["src"]).path).lstrip("/")
        assert local.is_file() and local.resolve().is_relative_to(folder.resolve()), v  # inside the folder: it can move
        assert (v["videoWidth"], v["videoHeight"]) == mp4_size(local), v
    # the metrics table and the demo's tracking scored against its known motion are on the page
    html = (folder / "index.html").read_text()
    assert html.count('<table class="metrics">') == len(targets) and html.count('<table class="truth">') == len(videos)
    # every video's and pair's exported face can be downloaded from the page, byte for byte the export
    for kind, names in (("videos", videos), ("pairs", pairs)):
        for d in names:
            for f in ("face.glb", "parameters.csv"):
                rel = f"media/export/{kind}/{d.name}/{f}"
                assert f'href="{rel}" download' in html, rel
                assert (folder / rel).read_bytes() == (results / "export" / kind / d.name / f).read_bytes()


def open_item_in_snakemake_report(page, report_uri: str, key: str):
    """Open result ``key`` the way a reader does in Snakemake's report: its category, its subcategory (when there
    are several), the toggles of its labels, then the eye button of its row; returns the viewer's frame."""
    results_link = page.locator("nav a", has_text="Results")
    if page.url.startswith(report_uri) and results_link.count():
        results_link.first.click()  # back to the list of categories, without reloading the report
    else:
        page.goto(report_uri)
    cats = page.evaluate("() => categories")
    cat, sub = next((c, s) for c, subs in cats.items() for s, keys in subs.items() if key in keys)
    page.get_by_text(cat, exact=True).first.click()
    if len(cats[cat]) > 1:
        page.get_by_text(sub, exact=True).first.click()
    row_text = []
    for name, value in page.evaluate("(k) => Object.entries(results[k].labels)", key):
        toggle = page.locator(f'label[for="toggle-{name}-{value}"]')
        if toggle.count():
            toggle.click()
        else:
            row_text.append(value)
    row = page.locator("tbody tr")
    for text in row_text:
        row = row.filter(has_text=text)
    row.first.locator('a[iconname="eye"]').click()
    page.wait_for_function("() => document.querySelector('iframe') !== null")
    frame = page.locator("iframe").element_handle().content_frame()
    frame.wait_for_selector("video", state="attached")
    return frame


@pytest.mark.slow
@pytest.mark.slow
def test_snakemake_report_plays_every_video_in_its_viewer(browser, demo_report, tmp_path):
    """Snakemake's report (``snakemake --report``) lists every video as an HTML page (no mp4 left as a download
    link); opened through its own UI (category, subcategory, label toggles, the eye button), each plays in the
    viewer's frame at the mp4's size."""
    uri = (demo_report / "report.html").as_uri()
    results = demo_report / "results"
    pairs = list((results / "pairs").iterdir())
    expected = 2 * len(pairs) + 2 * len({p.name.split("__")[1] for p in pairs}) + len(list((results / "videos").iterdir()))
    with chromium_page() as page:
        page.goto(uri)
        items = dict(page.evaluate("() => Object.entries(results).map(([k, v]) => [k, v.mime_type])"))
        assert not [k for k in items if k.endswith(".mp4")], items
        pages = [k for k, mime in items.items() if mime == "text/html"]
        assert len(pages) == expected, items
        for k in pages:
            seen = open_item_in_snakemake_report(page, uri, k).evaluate(PLAY_ALL, 20000)
            assert len(seen) == 1, (k, seen)
            assert_played(seen[0])
            assert (seen[0]["videoWidth"], seen[0]["videoHeight"]) == mp4_size(demo_report / k.replace(".html", ".mp4")), (k, seen)
        page.screenshot(path=str(tmp_path / "snakemake_report.png"))
    print("screenshot:", tmp_path / "snakemake_report.png")


def test_fidelity_table_shows_each_signal_and_the_blinks_found_again():
    signal = {"r": 0.987, "a": 0.934, "n": 100}
    summary = {"transferred": {"eye_aperture_left": signal, "yaw": {"r": 0.5, "a": None}},
               "ceiling": {"eye_aperture_left": {"r": 0.99, "a": 1.0}, "yaw": {"r": 1.0, "a": 1.01}},
               "blinks": {"transferred": {"recall": 0.5, "precision": 1.0, "n_source": 4, "matched": 2},
                          "ceiling": {"recall": 0.0, "precision": None, "n_source": 0, "matched": 0}}}
    html = report_page.fidelity_table(summary)
    assert "<td>left eye</td>" not in html and ">left eye</td><td>0.99 / 0.93</td><td>0.99 / 1.00</td>" in html
    assert ">head turn</td><td>–</td><td>1.00 / 1.01</td>" in html  # no amplitude: not shown as a number
    assert "2 of 4 found (50 %); precision 100 %" in html and "no blink in the source" in html
    assert "right eye" not in html  # signals the summary lacks get no row


def test_output_fidelity_table_shows_the_output_beside_the_drawn_face_the_missing_frames_and_the_bar():
    summary = {"vs_conditioning": {"mouth_open": {"r": 0.96, "a": 0.612}, "yaw": {"r": 0.9, "a": 1.0}, "gaze_x": {"r": None, "a": None}},
               "vs_source": {"mouth_open": {"r": 0.95, "a": 0.55}}, "n_frames": 120, "n_detected": 114, "missing_fraction": 0.05,
               "bar": {"a": 0.612, "r": 0.96, "a_min": 0.85, "r_min": 0.9, "passes": False}}
    html = report_page.output_fidelity_table(summary)
    assert ">mouth opening</td><td>0.96 / 0.61</td><td>0.95 / 0.55</td>" in html
    assert ">head turn</td><td>0.90 / 1.00</td><td>–</td>" in html and ">gaze, sideways</td><td>–</td><td>–</td>" in html
    assert "114 of 120 (none where one was drawn: 5.0 %)" in html and "a 0.61, r 0.96: misses the bar a ≥ 0.85, r ≥ 0.9" in html
    assert "left eye" not in html  # signals the summary lacks get no row
