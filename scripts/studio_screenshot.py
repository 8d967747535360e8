"""Take the README's screenshot of the puppet studio (docs/studio.png) on a trained target, in headless Chromium.

    .venv/bin/python scripts/studio_screenshot.py RESULTS_DIR --target d6 --frame 300 \\
        --set mouth_open=0.8 --set yaw=12 --keyframe 280 --out docs/studio.png

Starts the studio on RESULTS_DIR (deep_puppets/studio/server.py), opens it in Debian's Chromium through
Playwright (no browser download), moves the timeline to ``--frame``, adds a keyframe there as tracked for every
``--keyframe`` frame, sets each ``--set`` control with its slider, waits for the view and saves the page as a PNG
quantised to 256 colours (a few hundred KB at most).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("DEEP_PUPPETS_CHROMIUM", "/usr/bin/chromium")
IDLE = "() => document.body.dataset.busy === '0' && window.studio.lastReply() !== null"


def goto_frame(page, t: int):
    page.fill("#frame-number", str(t))
    page.press("#frame-number", "Enter")
    page.wait_for_function(IDLE, timeout=120000)


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from playwright.sync_api import sync_playwright

    from deep_puppets.studio.server import running_studio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--target", default=None)
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="CONTROL=VALUE")
    p.add_argument("--keyframe", action="append", type=int, default=[], metavar="FRAME")
    p.add_argument("--out", default="docs/studio.png")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=820)
    a = p.parse_args(argv)
    with running_studio(a.results, a.target) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": a.width, "height": a.height})
        page.goto(server.url)
        page.wait_for_function(IDLE, timeout=120000)
        for t in a.keyframe:
            goto_frame(page, t)
            page.click("#add-keyframe")
        goto_frame(page, a.frame)
        for assignment in a.set:
            name, value = assignment.split("=", 1)
            page.locator(f'[data-control="{name}"] input[type=range]').fill(value)
            page.wait_for_function(IDLE, timeout=120000)
        if a.keyframe:
            page.click("#add-keyframe")
        page.mouse.move(0, 0)
        png = page.screenshot()
        browser.close()
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".tmp.png")
    image.save(tmp, optimize=True)
    os.replace(tmp, a.out)
    print(f"{a.out}: {Path(a.out).stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
