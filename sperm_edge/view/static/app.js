"use strict";
// The live view page: polls /api/status and /api/events, shows the stream, tally and flagged cells.
const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const headers = token ? { Authorization: "Bearer " + token } : {};
const GALLERY_MAX = 60;
let lastEvent = 0, status = null, streaming = false, openId = null;
const events = new Map();  // id -> event, flagged only

async function api(path, method = "GET") {
  const response = await fetch(path, { method, headers, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function text(id, value) { $(id).textContent = value; }
const pretty = (name) => name.replace(/^\d+_/, "").replaceAll("_", " ");  // "01_Normal" -> "Normal"
const reasons = (event) => event.flag_reasons.join(", ").replaceAll("_", " ");

function setState(name, label) {
  const pill = $("state");
  pill.className = "pill " + name;
  pill.textContent = label;
}

function renderStatus(s) {
  status = s;
  text("percent", s.percent_normal == null ? "-" : s.percent_normal.toFixed(1));
  text("ci", s.ci95 ? `95% CI ${s.ci95[0].toFixed(1)}-${s.ci95[1].toFixed(1)}%` : "95% CI -");
  const share = Math.min(1, s.sperm_counted / s.who_minimum);
  $("bar").style.width = (100 * share).toFixed(1) + "%";
  $("bar").classList.toggle("done", share >= 1);
  text("progress-text", `${s.sperm_counted} / ${s.who_minimum} sperm (WHO minimum)`);
  const body = $("counts").tBodies[0];
  const most = Math.max(1, ...Object.values(s.counts));
  body.replaceChildren(...Object.entries(s.counts).map(([name, n]) => {
    const row = document.createElement("tr");
    row.className = name === s.normal_class ? "normal" : "";
    row.innerHTML = `<td class="name"></td><td><div class="track"><div class="fill"></div></div></td><td class="n"></td>`;
    row.cells[0].textContent = pretty(name);
    row.cells[2].textContent = n;
    row.querySelector(".fill").style.width = (100 * n / most).toFixed(1) + "%";
    return row;
  }));
  $("warnings").replaceChildren(...s.warnings.map((w) => Object.assign(document.createElement("div"), { textContent: w })));
  const meta = [`${s.frames} frames`, `${s.cells} cells counted`, `${s.flagged} flagged`];
  if (s.uncounted) meta.push(`${s.uncounted} left uncounted while paused`);
  if (s.report) meta.push(`report written: ${s.report}`);
  text("meta", meta.join(" · "));
  text("fps", `${(s.fps || 0).toFixed(1)} FPS`);
  const names = { localisation: "find", preprocessing: "prep", network: "network", output: "output" };
  text("stages", Object.entries(names).filter(([k]) => s.stages_ms[k] != null)
    .map(([k, label]) => `${label} ${s.stages_ms[k].toFixed(1)} ms`).join(" · "));
  const backend = s.backend ? ` · ${s.backend.backend || ""} ${s.backend.precision || ""}` : "";
  text("run-info", (s.source ? `source ${s.source}` : "") + backend);
  if (s.finished) setState("finished", "finished");
  else if (s.paused) setState("paused", "paused");
  else setState("live", "live");
  const over = s.finished || !s.live;
  $("pause").hidden = s.paused; $("resume").hidden = !s.paused;
  for (const id of ["pause", "resume", "finish"]) $(id).disabled = over;
  if (s.finished && s.report && $("pdf").hidden) { $("pdf").href = withToken("/report.pdf"); $("pdf").hidden = false; }
  if (s.live && !streaming) { streaming = true; $("stream").src = withToken("/stream.mjpg"); }
  if (!streaming) {
    $("stream").hidden = true; $("no-stream").hidden = false;
    $("mode").textContent = "finished run"; document.body.classList.add("no-stream");
  }
  for (const id of s.explained) markExplained(id);
}

function card(event) {
  const cell = document.createElement("div");
  cell.className = "cell";
  cell.dataset.id = event.id;
  cell.innerHTML = `<div class="thumb"><img class="crop" alt=""><img class="heat" alt=""><span class="badge"></span></div>
    <div class="cls"></div><div class="why"></div>`;
  cell.querySelector(".crop").src = withToken(`/flagged/${event.id}.png`);
  cell.querySelector(".badge").textContent = "#" + event.id;
  cell.querySelector(".cls").textContent = `${pretty(event.class)} ${event.confidence.toFixed(2)}`;
  cell.querySelector(".why").textContent = reasons(event);
  cell.addEventListener("click", () => openExplanation(event.id));
  return cell;
}

function markExplained(id) {
  const cell = document.querySelector(`.cell[data-id="${id}"]`);
  if (!cell || cell.classList.contains("explained")) return;
  const heat = cell.querySelector(".heat");
  heat.onload = () => {
    // an explanation panel is crop | gap | overlay (+ caption): the thumbnail shows the overlay square
    const w = heat.naturalWidth, h = heat.naturalHeight, side = w > h ? (w - 4) / 2 : w;
    heat.style.objectViewBox = `inset(0px 0px ${Math.max(0, h - side)}px ${Math.max(0, w - side)}px)`;
    cell.classList.add("explained");
  };
  heat.src = withToken(`/explanations/${id}.png`);
}

async function pollEvents() {
  const fresh = await api(`/api/events?since=${lastEvent}`);
  const gallery = $("gallery");
  for (const event of fresh) {
    lastEvent = event.id;
    if (!event.flagged || !event.crop) continue;
    events.set(event.id, event);
    gallery.prepend(card(event));
  }
  while (gallery.children.length > GALLERY_MAX) gallery.lastChild.remove();
  $("gallery-empty").hidden = gallery.children.length > 0;
  if (status) for (const id of status.explained) markExplained(id);
}

async function openExplanation(id) {
  const event = events.get(id);
  openId = id;
  text("explain-title", `Cell #${id}: ${pretty(event.class)} ${event.confidence.toFixed(2)} (${reasons(event)})`);
  $("explain-crop").src = withToken(`/flagged/${id}.png`);
  $("explain-crop").hidden = false;
  const heat = $("explain-heat");
  heat.replaceChildren(Object.assign(document.createElement("span"), { id: "explain-state", className: "muted", textContent: "asking for the explanation..." }));
  $("explain-probs").tBodies[0].replaceChildren(...Object.entries(event.probs).sort((a, b) => b[1] - a[1]).map(([name, p]) => {
    const row = document.createElement("tr");
    row.innerHTML = "<td></td><td></td>";
    row.cells[0].textContent = pretty(name);
    row.cells[1].textContent = (100 * p).toFixed(1) + "%";
    return row;
  }));
  const trust = status && status.heatmaps && status.heatmaps.verdict ? status.heatmaps : null;
  $("explain-trust").hidden = !trust;
  if (trust) text("explain-trust", `How far to trust the heatmap: ${trust.verdict} (measured when the bundle was exported).`);
  if (!$("explain").open) $("explain").showModal();
  for (let attempt = 0; attempt < 120 && openId === id && $("explain").open; attempt++) {
    let answer;
    try { answer = await api(`/api/explain/${id}`, "POST"); } catch (err) { text("explain-state", "explanation failed: " + err.message); return; }
    if (answer.state === "ready") {
      const img = Object.assign(document.createElement("img"), { id: "explain-image", alt: `${(status && status.heatmaps && status.heatmaps.method) || "Grad-CAM++"} of cell ${id}` });
      img.onload = () => { $("explain-crop").hidden = true; heat.replaceChildren(img); markExplained(id); };
      img.src = withToken(`/explanations/${id}.png?v=${Date.now()}`);
      return;
    }
    if (answer.state === "unavailable") {
      text("explain-state", `No explanation can be made here (it needs the bundle's checkpoint and torch, during the run). Later: sperm-edge explain BUNDLE --event ${id} --run RUN_DIR`);
      return;
    }
    text("explain-state", "explanation queued; it appears here once made...");
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function post(action) {
  try { await api(`/api/${action}`, "POST"); } catch (err) { text("meta", `${action} failed: ${err.message}`); }
  tick();
}

let busy = false;
async function tick() {
  if (busy) return;
  busy = true;
  try {
    renderStatus(await api("/api/status"));
    await pollEvents();
  } catch (err) {
    if (status && status.finished) setState("finished", "finished: the run has closed the page");
    else setState("lost", "disconnected");
  } finally {
    busy = false;
  }
}

$("pause").addEventListener("click", () => post("pause"));
$("resume").addEventListener("click", () => post("resume"));
$("finish").addEventListener("click", () => post("finish"));
$("explain").addEventListener("close", () => { openId = null; });
tick();
setInterval(tick, 700);
