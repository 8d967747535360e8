// Deep Puppets studio page: sliders -> POST /api/frame -> the two images. At most one request in flight; when it
// returns, the latest state is sent if anything changed meanwhile (no queue of stale requests).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, frame: 0, pair: "", edits: {}, keyframes: [], controls: {} };
  let inFlight = false, dirty = false, lastReply = null, exportPoll = null;

  function setStatus(text) { $("status").textContent = text; }
  function showError(text) { const e = $("error"); e.textContent = text || ""; e.hidden = !text; }
  function updateBusy() { document.body.dataset.busy = (inFlight || dirty) ? "1" : "0"; }

  async function api(method, url, body) {
    const opts = { method: method, headers: {} };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(url, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
    if (!r.ok) { const err = new Error(data.error || ("HTTP " + r.status)); err.status = r.status; throw err; }
    return data;
  }

  function fmt(v) { return (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2)); }

  // ------------------------------------------------------------------------------------------ controls
  const GROUPS = [["pose", "Head pose"], ["gaze", "Gaze"], ["expression", "Expression"], ["advanced", "Advanced (raw components)"]];

  function buildControls(controls) {
    const groups = $("groups");
    groups.innerHTML = "";
    for (const [group, title] of GROUPS) {
      const mine = controls.filter((c) => c.group === group);
      if (!mine.length) continue;
      const det = document.createElement("details");
      det.open = group !== "advanced";
      det.dataset.group = group;
      const sum = document.createElement("summary");
      sum.textContent = title;
      const warn = document.createElement("span");
      warn.className = "group-warning";
      sum.appendChild(warn);
      det.appendChild(sum);
      for (const c of mine) det.appendChild(buildControl(c));
      groups.appendChild(det);
    }
  }

  function buildControl(c) {
    const row = document.createElement("div");
    row.className = "control";
    row.dataset.control = c.name;
    const id = "control-" + c.name;
    const label = document.createElement("label");
    label.htmlFor = id;
    const name = document.createElement("span");
    name.textContent = c.label;
    label.appendChild(name);
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", id: id, min: c.minimum, max: c.maximum, step: c.step, value: c.default });
    const value = document.createElement("span");
    value.className = "value";
    const reset = document.createElement("button");
    reset.type = "button";
    reset.textContent = "reset";
    reset.title = "back to the tracked value";
    reset.className = "reset";
    slider.addEventListener("input", () => setEdit(c.name, parseFloat(slider.value)));
    reset.addEventListener("click", () => { slider.value = c.default; setEdit(c.name, c.default); });
    row.append(label, slider, value, reset);
    state.controls[c.name] = { spec: c, row: row, slider: slider, value: value };
    showValue(c.name);
    return row;
  }

  function setEdit(name, v) {
    const c = state.controls[name].spec;
    if (Math.abs(v - c.default) < 1e-12) delete state.edits[name]; else state.edits[name] = v;
    showValue(name);
    requestUpdate();
  }

  function showValue(name, absolute) {
    const ctl = state.controls[name];
    const edit = state.edits[name] || 0;
    ctl.row.classList.toggle("edited", name in state.edits);
    ctl.value.textContent = (edit >= 0 ? "+" : "") + fmt(edit) + (absolute === undefined ? "" : " → " + fmt(absolute));
  }

  function setAllEdits(edits) {
    state.edits = {};
    for (const [name, ctl] of Object.entries(state.controls)) {
      const v = edits && name in edits ? edits[name] : ctl.spec.default;
      ctl.slider.value = v;
      if (Math.abs(v - ctl.spec.default) > 1e-12) state.edits[name] = v;
      showValue(name);
    }
    requestUpdate();
  }

  // ------------------------------------------------------------------------------------------ timeline
  function frameCount() {
    if (!state.pair) return state.info.n_frames;
    const p = state.info.pairs.find((q) => q.name === state.pair);
    return p ? p.n_frames : 1;
  }

  function setTimeline() {
    const n = frameCount();
    for (const el of [$("frame-slider"), $("frame-number")]) { el.max = n - 1; }
    state.frame = Math.min(state.frame, n - 1);
    $("frame-slider").value = $("frame-number").value = state.frame;
    $("frame-count").textContent = "of " + n + (state.pair ? " (" + state.pair + ")" : "");
    $("add-keyframe").disabled = !!state.pair;
    $("add-keyframe").title = state.pair ? "keyframes edit the target's own frames: choose them as the source" : "";
  }

  function setFrame(t) {
    const n = frameCount();
    t = Math.max(0, Math.min(n - 1, Math.round(Number(t) || 0)));
    state.frame = t;
    $("frame-slider").value = $("frame-number").value = t;
    requestUpdate();
  }

  // ------------------------------------------------------------------------------------------ the view
  function requestUpdate() {
    dirty = true;
    updateBusy();
    if (!inFlight) send();
  }

  async function send() {
    dirty = false;
    inFlight = true;
    updateBusy();
    const body = { target: state.info.target, frame: state.frame, edits: Object.assign({}, state.edits), pair: state.pair || null };
    try {
      const r = await api("POST", "/api/frame", body);
      show(r);
      showError("");
    } catch (e) {
      if (e.status === 503) setStatus(e.message); else showError(e.message);
    } finally {
      inFlight = false;
      if (dirty) send(); else updateBusy();
    }
  }

  function show(r) {
    lastReply = r;
    const size = state.info.size;
    $("conditioning").src = r.conditioning;
    if (r.generated) $("generated").src = r.generated;
    for (const img of [$("conditioning"), $("generated")]) img.classList.toggle("pixelated", 2 * size <= 384); // blocky, not blurred, when scaled ≥ 2×
    const out = new Set(r.out_of_range);
    for (const [name, ctl] of Object.entries(state.controls)) {
      ctl.row.classList.toggle("out-of-range", out.has(name));
      showValue(name, r.values[name]);
    }
    for (const det of document.querySelectorAll("#groups details")) {
      const n = Array.from(det.querySelectorAll(".control")).filter((row) => out.has(row.dataset.control)).length;
      det.querySelector(".group-warning").textContent = n ? " ⚠ " + n + " outside training range" : "";
    }
    const labels = r.out_of_range.map((n) => (state.controls[n] ? state.controls[n].spec.label : n));
    $("range-warning").hidden = !labels.length;
    $("range-list").textContent = labels.join(", ");
    setStatus("frame " + r.frame + (r.pair ? " of " + r.pair : "") + " · " + r.ms.toFixed(0) + " ms");
    document.body.dataset.shown = JSON.stringify({ frame: r.frame, pair: r.pair });
  }

  // ------------------------------------------------------------------------------------------ keyframes and export
  function renderKeyframes() {
    const list = $("keyframe-list");
    list.innerHTML = "";
    state.keyframes.sort((a, b) => a.frame - b.frame);
    for (const k of state.keyframes) {
      const li = document.createElement("li");
      const names = Object.entries(k.edits).map(([n, v]) => (state.controls[n] ? state.controls[n].spec.label : n) + " " + (v >= 0 ? "+" : "") + fmt(v));
      li.textContent = "frame " + k.frame + ": " + (names.join(", ") || "as tracked");
      const go = document.createElement("button");
      go.type = "button"; go.textContent = "go"; go.title = "show this keyframe";
      go.addEventListener("click", () => { selectSource(""); state.frame = k.frame; setTimeline(); setAllEdits(k.edits); });
      const rm = document.createElement("button");
      rm.type = "button"; rm.textContent = "remove"; rm.className = "remove";
      rm.addEventListener("click", () => { state.keyframes = state.keyframes.filter((q) => q !== k); renderKeyframes(); });
      li.append(go, rm);
      list.appendChild(li);
    }
    $("export").disabled = !state.keyframes.length || exportPoll !== null;
  }

  function addKeyframe() {
    if (state.pair) return;
    state.keyframes = state.keyframes.filter((k) => k.frame !== state.frame);
    if (state.keyframes.length >= state.info.max_keyframes) { showError("at most " + state.info.max_keyframes + " keyframes"); return; }
    state.keyframes.push({ frame: state.frame, edits: Object.assign({}, state.edits) });
    renderKeyframes();
  }

  async function exportClip() {
    $("download").hidden = true;
    $("export").disabled = true;
    try {
      const job = await api("POST", "/api/export", { target: state.info.target, keyframes: state.keyframes });
      $("export-progress").hidden = false;
      $("export-status").textContent = "exporting…";
      exportPoll = setInterval(() => pollExport(job.job), 400);
    } catch (e) {
      showError(e.message);
      renderKeyframes();
    }
  }

  async function pollExport(id) {
    let job;
    try { job = await api("GET", "/api/export/" + id); } catch (e) { job = { state: "failed", error: e.message }; }
    const p = $("export-progress");
    p.max = Math.max(1, job.total || 1);
    p.value = job.done || 0;
    if (job.state === "queued" || job.state === "running") {
      $("export-status").textContent = "exporting " + (job.done || 0) + " / " + (job.total || "?") + " frames";
      return;
    }
    clearInterval(exportPoll);
    exportPoll = null;
    p.hidden = true;
    if (job.state === "done") {
      $("export-status").textContent = "done in " + job.seconds + " s: " + job.file;
      const a = $("download");
      a.href = job.url;
      a.setAttribute("download", job.file);
      a.hidden = false;
    } else {
      $("export-status").textContent = "";
      showError("export failed: " + job.error);
    }
    renderKeyframes();
    requestUpdate(); // the preview waited while the clip was made
  }

  // ------------------------------------------------------------------------------------------ start
  function selectSource(name) {
    state.pair = name;
    $("source").value = name;
    setTimeline();
  }

  async function start() {
    const wanted = new URLSearchParams(location.search).get("target");
    let info;
    try {
      info = await api("GET", "/api/state" + (wanted ? "?target=" + encodeURIComponent(wanted) : ""));
    } catch (e) {
      showError(e.message);
      return;
    }
    state.info = info;
    document.title = "Deep Puppets studio · " + info.target;
    $("target-name").textContent = info.targets.length > 1 ? "" : info.target;
    if (info.targets.length > 1) {
      const sel = $("target");
      for (const t of info.targets) sel.add(new Option(t, t, false, t === info.target));
      $("target-box").hidden = false;
      sel.addEventListener("change", () => { location.search = "?target=" + encodeURIComponent(sel.value); });
    }
    for (const el of document.querySelectorAll(".target-name")) el.textContent = info.target;
    if (!info.has_generator) {
      $("no-generator").hidden = false;
      $("train-command").textContent = info.train_command;
      $("generated-figure").hidden = true;
    }
    for (const p of info.pairs) $("source").add(new Option("driven by " + p.name, p.name));
    $("source").addEventListener("change", () => { selectSource($("source").value); state.frame = 0; setTimeline(); requestUpdate(); });
    buildControls(info.controls);
    $("frame-slider").addEventListener("input", (e) => setFrame(e.target.value));
    $("frame-number").addEventListener("change", (e) => setFrame(e.target.value));
    $("reset-all").addEventListener("click", () => setAllEdits({}));
    $("add-keyframe").addEventListener("click", addKeyframe);
    $("export").addEventListener("click", exportClip);
    setTimeline();
    renderKeyframes();
    requestUpdate();
  }

  window.studio = { state: state, lastReply: () => lastReply, requestUpdate: requestUpdate };
  start();
})();
