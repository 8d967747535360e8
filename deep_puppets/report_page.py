"""The report people read in a browser: a self-contained folder ``{results}/report`` (``index.html``, a style
sheet and the figures and videos it shows, hard-linked or copied beside it, so the folder can be zipped and
moved) and, for Snakemake's own report (``snakemake --report``), each video wrapped in a small HTML page that
plays it inline (Snakemake's viewer shows images, HTML and PDF, and offers anything else as a download).

Plain static HTML and CSS: no script, no network. Videos are ``<video controls muted playsinline>`` elements
referring to the H.264 mp4s by relative paths.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import atomic_path

# Snakemake's report embeds every item as a data: URI, the wrapper pages embed their video the same way: videos
# larger than this are not embedded (the page says where the file is instead).
EMBED_MAX_BYTES = 64 * 1024 * 1024

REGION_NAMES = {"frame": "whole frame", "head": "head crop", "face": "face"}
# the table's rows, in this order (methods not named here follow)
METHOD_NAMES = {"gan": "GAN (ours)", "nearest": "nearest training frame", "alpha": "rendered face over the nearest frame",
                "mean": "mean training crop"}
METRICS = (("e_col", "E_col ↓", "{:.4f}"), ("psnr", "PSNR (dB) ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.3f}"))

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 0 auto; padding: 1em 1.5em; color: #222;
       line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.92em; max-width: 60em; }
video, img { max-width: 100%; height: auto; background: #111; }
video { min-height: 256px; } img { max-width: min(100%, 1000px); }
.videos { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
tr.ours td { font-weight: 600; background: #f4f9ff; }
.note { color: #666; font-size: 0.9em; }
"""

INTRO = """
<p>This report shows what the workflow made from your videos. In short, it
<b>finds the face</b> in every frame of each video (468 points on the face and 10 on the eyes),
<b>fits a 3D face model</b> to those points (the head's position and turn, and the face's expression, frame by
frame), <b>moves the target person's face</b> the way the source person's face moves, <b>draws</b> that moving
face as simple computer-graphics pictures, and <b>paints a realistic face</b> from those pictures with a neural
network trained on the target person's own video only. The painted face is blended into the target video's
own frames.</p>
<p>The sections below show, for every pair of videos, the result (the <i>re-enactment</i>); for every target
person, how close the painted face comes to the real one on frames the network never saw during training (a
table and plots: lower E_col, higher PSNR and SSIM are better; the “face” region is where the painted face is
blended in); and, for every video, how well the 3D face follows the person (an overlay video of the fitted face's
outlines and plots). Every video plays in the page; click it to start.</p>
"""


@dataclass(frozen=True)
class Pair:
    name: str
    source: str
    target: str
    mode: str


def _e(text) -> str:
    return html.escape(str(text))


def _place(src: Path, dst: Path) -> None:
    """``src`` at ``dst``: a hard link where the file system allows it, else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class _Page:
    """The HTML body of index.html and the files it shows (copied into the folder when written)."""

    def __init__(self, results: Path):
        self.results = results
        self.parts: list[str] = []
        self.files: dict[str, Path] = {}  # path inside the report folder -> file under results

    def media(self, rel: str) -> str:
        """The report-folder path of ``{results}/{rel}`` (which must exist)."""
        src = self.results / rel
        if not src.is_file():
            raise InputError(src, "is missing: the report shows it (run the workflow first)")
        self.files[f"media/{rel}"] = src
        return f"media/{rel}"

    def add(self, text: str) -> None:
        self.parts.append(text)

    def video(self, rel: str, caption: str) -> None:
        path = self.media(rel)
        self.add(f'<figure><video controls muted playsinline preload="metadata" src="{_e(path)}"></video>'
                 f'<figcaption>{caption} <a href="{_e(path)}" download>download</a></figcaption></figure>')

    def download(self, rel: str, label: str) -> str:
        """A download link to ``{results}/{rel}`` (copied into the folder like the media)."""
        path = self.media(rel)
        return f'<a href="{_e(path)}" download>{_e(label)}</a>'

    def image(self, rel: str, caption: str) -> None:
        path = self.media(rel)
        self.add(f'<figure><a href="{_e(path)}"><img src="{_e(path)}" alt="{_e(caption)}"></a>'
                 f"<figcaption>{caption}</figcaption></figure>")


def metrics_table(summary: dict) -> str:
    """The self-reenactment summary (evaluation/summary.json) as an HTML table: one row per method and region,
    the mean E_col, PSNR and SSIM over the scored held-out frames."""
    methods = {m: summary["methods"][m] for m in sorted(summary["methods"], key=lambda m: (list(METHOD_NAMES) + [m]).index(m))}
    regions = [r for r in summary.get("regions", REGION_NAMES) if any(r in methods[m] for m in methods)]
    head = "".join(f"<th>{_e(label)}</th>" for _, label, _ in METRICS)
    rows = []
    for m in methods:
        for i, r in enumerate(regions):
            cells = []
            for key, _, fmt in METRICS:
                v = methods[m].get(r, {}).get(key, {}).get("mean")
                cells.append(f"<td>{fmt.format(v) if v is not None else '–'}</td>")
            name = f'<td class="name" rowspan="{len(regions)}">{_e(METHOD_NAMES.get(m, m))}</td>' if i == 0 else ""
            rows.append(f'<tr class="{"ours" if m == "gan" else ""}">{name}<td class="name">{_e(REGION_NAMES.get(r, r))}</td>{"".join(cells)}</tr>')
    return (f'<table class="metrics"><thead><tr><th class="name">method</th><th class="name">region</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


FIDELITY_SIGNALS = {"eye_aperture_left": "left eye", "eye_aperture_right": "right eye", "mouth_open": "mouth opening",
                    "mouth_width": "mouth width", "gaze_x": "gaze, sideways", "gaze_y": "gaze, up/down", "brow_left": "left brow",
                    "brow_right": "right brow", "yaw": "head turn", "pitch": "head nod", "roll": "head tilt"}


def fidelity_table(summary: dict) -> str:
    """The expression-fidelity summary (pairs/{pair}/fidelity/summary.json) as an HTML table: per signal, how the
    transferred face follows the source (correlation r, amplitude ratio a) beside the source's own fitted track
    (the ceiling set by tracking), and the blinks found again."""
    def cell(d):
        return f"<td>{d['r']:.2f} / {d['a']:.2f}</td>" if d and d.get("r") is not None and d.get("a") is not None else "<td>–</td>"

    rows = [f'<tr><td class="name">{_e(label)}</td>{cell(summary["transferred"].get(s))}{cell(summary["ceiling"].get(s))}</tr>'
            for s, label in FIDELITY_SIGNALS.items() if s in summary.get("transferred", {}) or s in summary.get("ceiling", {})]

    def blinks(b):
        if not b or not b.get("n_source"):
            return "<td>no blink in the source</td>"
        prec = f"{100 * b['precision']:.0f} %" if b.get("precision") is not None else "–"
        return f"<td>{b.get('matched', 0)} of {b['n_source']} found ({100 * b['recall']:.0f} %); precision {prec}</td>"

    b = summary.get("blinks", {})
    rows.append(f'<tr><td class="name">blinks</td>{blinks(b.get("transferred"))}{blinks(b.get("ceiling"))}</tr>')
    return ('<table class="fidelity"><thead><tr><th class="name">signal</th><th>transferred face: r / a</th>'
            f'<th>source\'s own track: r / a</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def output_fidelity_table(summary: dict) -> str:
    """The output's motion fidelity (pairs/{pair}/output_fidelity/summary.json) as an HTML table: per signal, how the
    synthesised video (the detector run on it) follows the drawn face it was given and the source (r / a), the
    frames without a face, and the issue's mouth bar."""
    def cell(d):
        return f"<td>{d['r']:.2f} / {d['a']:.2f}</td>" if d and d.get("r") is not None and d.get("a") is not None else "<td>–</td>"

    cond, src = summary.get("vs_conditioning", {}), summary.get("vs_source", {})
    rows = [f'<tr><td class="name">{_e(label)}</td>{cell(cond.get(s))}{cell(src.get(s))}</tr>' for s, label in FIDELITY_SIGNALS.items() if s in cond]
    miss = summary.get("missing_fraction")
    rows.append(f'<tr><td class="name">frames with a face found</td><td colspan="2">{summary.get("n_detected", 0)} of {summary.get("n_frames", 0)}'
                f'{"" if miss is None else f" (none where one was drawn: {100 * miss:.1f} %)"}</td></tr>')  # fmt: skip
    bar = summary.get("bar")
    if bar and bar.get("a") is not None and bar.get("r") is not None:
        verdict = "meets" if bar["passes"] else "misses"
        rows.append(f'<tr><td class="name">mouth opening vs the drawn face</td><td colspan="2">a {bar["a"]:.2f}, r {bar["r"]:.2f}: {verdict} '
                    f'the bar a ≥ {bar["a_min"]}, r ≥ {bar["r_min"]}</td></tr>')  # fmt: skip
    return ('<table class="fidelity"><thead><tr><th class="name">signal</th><th>output vs the drawn face: r / a</th>'
            f'<th>output vs the source: r / a</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def tracking_table(summary: dict) -> str:
    """The tracking diagnostics (diagnostics/tracking.json) as a small HTML table; with the demo's known motion,
    a second table of the fitted head rotation against the true one."""
    rows = [("frames with a detected face", f"{summary['valid_frames']} of {summary['frames']}"),
            ("landmark error, mean (% of the eye distance)", f"{100 * summary['nme_mean']:.2f}"),
            ("jitter of the fit ÷ jitter of the detector", f"{summary['jitter_ratio']:.2f}")]
    out = '<table class="tracking"><tbody>' + "".join(f'<tr><td class="name">{_e(k)}</td><td>{_e(v)}</td></tr>' for k, v in rows) + "</tbody></table>"
    truth = summary.get("truth")
    if truth:
        angles = list(truth["rms_deg"])
        out += ("<p>This is a demo clip made with known head motion, so the fitted head turn can be checked against the "
                f"truth ({truth['frames']} frames; one constant rotation, the photo's own head pose, removed first):</p>"
                '<table class="truth"><thead><tr><th class="name"></th>' + "".join(f"<th>{_e(a)}</th>" for a in angles) + "</tr></thead><tbody>"
                '<tr><td class="name">error, RMS (degrees)</td>' + "".join(f"<td>{truth['rms_deg'][a]:.2f}</td>" for a in angles) + "</tr>"
                '<tr><td class="name">correlation with the truth</td>' + "".join(f"<td>{truth['correlation'][a]:.3f}</td>" for a in angles) + "</tr>"
                '<tr><td class="name">true motion, spread (degrees)</td>' + "".join(f"<td>{truth['true_std_deg'][a]:.2f}</td>" for a in angles) + "</tr>"
                "</tbody></table>")
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "is missing: the report shows it (run the workflow first)") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"is not valid JSON ({e.msg}, line {e.lineno})") from None


EXPORT_FILES = {  # file of an export folder (rules/export.smk) -> what the link says
    "face.glb": "3D face, animated (glTF: Blender, any glTF viewer)",
    "parameters.csv": "head pose and expression per frame (CSV)",
    "arkit.csv": "ARKit blendshapes (Live Link Face CSV)",
}


def exports_section(p: "_Page", exports: list[str]) -> None:
    """Download links to the exported faces (``exports``: paths under results, ``export/{videos,pairs}/NAME/FILE``)."""
    groups: dict[str, list[str]] = {}
    for rel in exports:
        parts = Path(rel).parts
        if len(parts) == 4 and parts[3] in EXPORT_FILES:
            groups.setdefault(f"{parts[1]}/{parts[2]}", []).append(rel)
    if not groups:
        return
    p.add('<h2 id="exports">Exports</h2><p>The fitted (per video) and the transferred (per pair) 3D face, for other '
          'tools: in Blender, File › Import › glTF 2.0 plays the face with its head motion.</p><ul class="exports">')
    for key, rels in groups.items():
        kind, name = key.split("/")
        links = ", ".join(p.download(rel, EXPORT_FILES[Path(rel).name]) for rel in sorted(rels))
        p.add(f"<li>{'pair' if kind == 'pairs' else 'video'} <b>{_e(name)}</b>: {links}</li>")
    p.add("</ul>")


def page_body(results: Path, videos: list[str], pairs: list[Pair], targets: list[str],
              exports: list[str] = ()) -> tuple[str, dict[str, Path]]:
    """index.html's body and the files it shows (report-folder path -> source file)."""
    p = _Page(results)
    nav = ['<a href="#reenactments">re-enactments</a>', '<a href="#evaluation">how close to the real face</a>',
           '<a href="#tracking">face tracking</a>'] + (['<a href="#exports">exports</a>'] if exports else [])
    p.add(f"<h1>Deep Puppets report</h1><nav>{''.join(nav)}</nav>{INTRO}")
    p.add('<h2 id="reenactments">Re-enactments</h2>')
    for pair in pairs:
        what = "head motion and expressions" if pair.mode == "pose+expression" else "expressions"
        p.add(f"<h3>{_e(pair.target)} driven by {_e(pair.source)}</h3><p>{_e(pair.target)} with the {what} of "
              f"{_e(pair.source)}.</p><div class='videos'>")
        p.video(f"pairs/{pair.name}/reenactment.mp4", "The re-enactment, at the target video's size (with the source's sound, if any).")
        p.video(f"pairs/{pair.name}/side_by_side.mp4", "Side by side, around the head: the source | the 3D face drawn with the "
                "source's motion (what the network is given) | the network's output.")
        p.add("</div>")
        fidelity = results / "pairs" / pair.name / "fidelity" / "summary.json"
        if fidelity.exists():
            p.add("<p>How faithfully the drawn face carries the source's expressions and head motion: each signal measured "
                  "from the face points of the source video and of the drawn face (r: correlation over time, 1 = same "
                  "timing; a: size of the movement relative to the source's, 1 = same; eye openings as a fraction of each "
                  "face's own open eye).</p>" + fidelity_table(_read_json(fidelity)))
            p.image(f"pairs/{pair.name}/fidelity/fidelity.png", "Each signal over time: the source (black), the source's own "
                    "fitted face (dashed) and the drawn target face (red); grey bands are the source's blinks.")
        motion = results / "pairs" / pair.name / "output_fidelity" / "summary.json"
        if motion.exists():
            p.add("<p>How faithfully the network's output moves: the same signals measured on the face points found in the "
                  "re-enactment video, against the drawn face it was given and against the source (a below 1: the "
                  "network damps the movement, e.g. pulls the mouth toward the target's usual face).</p>" + output_fidelity_table(_read_json(motion)))
            p.image(f"pairs/{pair.name}/output_fidelity/output_fidelity.png", "Each signal over time: the source (black), the drawn "
                    "face (red, dashed) and the network's output (green); grey bands: no face found in the output.")
        if (results / "pairs" / pair.name / "ood.png").exists():
            p.image(f"pairs/{pair.name}/ood.png", "How far each frame's transferred expression and head turn are from every frame the "
                    "target's network trained on; above the dashed line (the target's own unseen frames) the network is guessing.")
    p.add('<h2 id="evaluation">How close to the real face (self-reenactment)</h2><p>Each target person\'s network '
          "re-creates frames of their own video that it never saw in training, from the drawn 3D face alone; the "
          "result is compared with the real frames, together with three simple alternatives.</p>")
    for target in targets:
        base = f"videos/{target}/evaluation"
        summary = _read_json(results / base / "summary.json")
        p.add(f"<h3>{_e(target)}</h3><p>Mean over {summary['n_frames']} held-out frames.</p>{metrics_table(summary)}")
        if "headroom" in summary:
            p.add(headroom_text(summary["headroom"]))
        p.image(f"{base}/e_col.png", "E_col per held-out frame and method: the whole frame, the head crop and the face side by side.")
        p.add("<div class='videos'>")
        p.video(f"{base}/side_by_side.mp4", "Held-out frames around the head: real | the network's face blended in | the error "
                "(brighter = larger, scale below).")
        p.video(f"{base}/heat_map.mp4", "The error of the network's face per pixel, on a fixed scale from 0 (black) to 0.5 (white).")
        p.add("</div>")
        p.image(f"{base}/seam.png", "The error at the edge of the blended face against its inside.")
        if "flicker" in summary:
            p.image(f"{base}/flicker.png", "Flicker: how much each frame differs from the previous one carried along the real video's "
                    "motion, for the network and the alternatives; the real video's own value (dashed) is the floor.")
            p.image(f"{base}/distance_vs_error.png", "How far each held-out frame's expression and head turn are from every training "
                    "frame, against the network's error: far frames ask for what the target never showed.")
        p.image(f"videos/{target}/gan/losses.png", "The network's training losses.")
    p.add('<h2 id="tracking">Face tracking</h2><p>How closely the fitted 3D face follows the points found on the face, '
          "and how much it jitters.</p>")
    for v in videos:
        base = f"videos/{v}/diagnostics"
        tracking = _read_json(results / base / "tracking.json")
        p.add(f"<h3>{_e(v)}</h3>{tracking_table(tracking)}<div class='videos'>")
        p.video(f"{base}/overlay.mp4", "The fitted face's outlines (green) over the video, with some of the points the detector "
                "found (red); the frame number at the top.")
        p.add("</div>")
        p.image(f"{base}/tracking.png", "Landmark error and jitter over time" + (", and the head turn, fitted against true." if "truth" in tracking else "."))
        p.image(f"{base}/camera_smoothing.png", "The head's position and turn over the first frames, fitted without and with smoothing.")
    exports_section(p, list(exports))
    return "\n".join(p.parts), p.files


def headroom_text(room: dict) -> str:
    """One paragraph: what limits the held-out score (:mod:`deep_puppets.gan.headroom`)."""
    gan, oracle = room["gan"], room["oracle_retrieval"]
    return (f"<p>What limits it (face PSNR in the head crop): on frames it trained on the network reaches "
            f"{gan['training']:.1f} dB, on the held-out ones {gan['held_out']:.1f} dB. The single training frame closest "
            f"to each frame by its true pixels (a bound that uses the answer, not a method) reaches {oracle['held_out']:.1f} dB "
            f"on the held-out frames and {oracle['training']:.1f} dB on training frames (from frames at least "
            f"{room['gap_frames']} frames away). A network no better on its training frames than on the held-out ones is under-trained; a held-out "
            "bound well below the training one means the held-out part shows faces the training part never did.</p>")


def write_report(results, out_dir, videos: list[str], pairs: list[Pair], targets: list[str], exports: list[str] = ()) -> Path:
    """Write the report folder ``out_dir`` (index.html, style.css, media/…) atomically: built in a temporary
    folder beside it, then renamed into place. Returns the path of index.html."""
    results, out_dir = Path(results), Path(out_dir)
    body, files = page_body(results, videos, pairs, targets, exports)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for rel, src in files.items():
            _place(src, tmp / rel)
        (tmp / "style.css").write_text(STYLE)
        (tmp / "index.html").write_text(
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f'<title>Deep Puppets report</title><link rel="stylesheet" href="style.css"></head><body>\n{body}\n</body></html>\n')
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


def video_page(mp4, out_html, title: str) -> None:
    """A small HTML page that plays ``mp4`` inline, the video embedded as a base64 data: URI (Snakemake's report
    shows HTML items in its viewer, and the page must stand alone there). Larger than :data:`EMBED_MAX_BYTES`:
    the page names the file instead."""
    mp4 = Path(mp4)
    size = mp4.stat().st_size
    if size <= EMBED_MAX_BYTES:
        uri = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode("ascii")
        body = f'<video controls muted playsinline preload="auto" src="{uri}"></video>'
    else:
        body = (f"<p>This video ({size / 2**20:.0f} MB) is too large to embed in the report: open <code>{_e(mp4)}</code>, "
                "or the workflow's own report folder (report/index.html).</p>")
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>body{{margin:0;'
            f'background:#111;color:#eee;font-family:sans-serif}}video{{max-width:100%;max-height:95vh;display:block;margin:auto}}'
            f"</style></head><body>{body}</body></html>\n")
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(text)
