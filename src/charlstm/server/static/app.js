// charlstm playground: plain JavaScript, no libraries, no external files.
// Talks to the server's own API: GET /api/models, POST /api/stream (Server-Sent Events over fetch, so that a
// POST body can carry the settings and Stop can abort it), GET /api/runs/{name}.
"use strict";

const $ = (id) => document.getElementById(id);
const LESSON_TEMPERATURES = [0.2, 0.5, 1.0, 1.2];
const state = { models: [], token: null, generate: null, lesson: [] };

// -- token (only when the server was started with --token): from the URL's #token=..., kept for the tab ------
function loadToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem("charlstm-token", state.token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    state.token = sessionStorage.getItem("charlstm-token");
  }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

function errorMessage(body, status) {
  if (body && body.error && body.error.message) return body.error.message;
  if (body && Array.isArray(body.detail) && body.detail.length) {
    const d = body.detail[0];
    return (d.loc ? d.loc.slice(1).join(".") + ": " : "") + d.msg;
  }
  return "HTTP " + status;
}

async function request(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers() });
  if (res.status === 401) {
    $("auth").hidden = false;
    throw new Error("this server needs a token");
  }
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    const retry = res.headers.get("Retry-After");
    throw new Error(errorMessage(body, res.status) + (retry ? ` (retry in ${retry} s)` : ""));
  }
  return res;
}

// -- Server-Sent Events from a streamed POST ---------------------------------------------------------------
function parseEvent(raw) {
  let event = "message";
  const data = [];
  for (const line of raw.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

async function stream(body, signal, onEvent) {
  const res = await request("/api/stream", { method: "POST", body: JSON.stringify(body), signal });
  const reader = res.body.getReader();
  const decoder = new TextDecoder(); // stream: true keeps a character split across network reads whole
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const ev = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (ev) onEvent(ev.event, ev.data);
    }
  }
}

// -- models -----------------------------------------------------------------------------------------------
function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || state.models[0];
}

function describe(m) {
  const parts = [m.architecture, `vocabulary ${m.vocab_size}`, `recipe ${m.recipe}`];
  if (m.corpus) parts.push(`corpus ${m.corpus}`);
  if (m.best_val_bpc != null) parts.push(`best validation ${m.best_val_bpc.toFixed(3)} bits/char`);
  return parts.join(" · ");
}

async function loadModels() {
  const res = await request("/api/models");
  state.models = await res.json();
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  onModelChange();
}

function onModelChange() {
  const m = currentModel();
  if (!m) return;
  $("model-info").textContent = describe(m);
  const tags = m.tags || [];  // a tagged model: choose the style to generate in
  $("tag").replaceChildren(...tags.map((t) => new Option(t, t)));
  $("tag").hidden = $("tag-label").hidden = tags.length === 0;
  $("download-web").href = `/api/models/${encodeURIComponent(m.name)}/web.zip`;
  $("download-web").download = `${m.name}-web.zip`;
  $("top_k").max = String(m.vocab_size);
  showSlider("top_k");
  if (!$("view-run").hidden) loadRun();
}

// -- sliders show their values ------------------------------------------------------------------------------
function showSlider(id) {
  const input = $(id);
  const out = $(id + "-value");
  const v = Number(input.value);
  if (id === "top_k") out.textContent = v === 0 ? "off" : String(v);
  else if (id === "top_p") out.textContent = v >= 1 ? "off" : v.toFixed(2);
  else if (id === "temperature") out.textContent = v.toFixed(2);
  else if (id === "repetition_penalty") out.textContent = v <= 1 ? "off" : v.toFixed(2);
  else if (id === "no_repeat_ngram") out.textContent = v === 0 ? "off" : String(v);
  else out.textContent = String(v);
}

function settings() {
  const body = {
    model: currentModel().name,
    length: Number($("length").value),
    temperature: Number($("temperature").value),
    unknown: "skip",
  };
  const prime = $("prime").value;
  if (prime) body.prime = prime;
  if (!$("tag").hidden && $("tag").value) body.tag = $("tag").value;
  const k = Number($("top_k").value);
  if (k > 0) body.top_k = k;
  const p = Number($("top_p").value);
  if (p < 1) body.top_p = p;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  body.no_repeat_ngram = Number($("no_repeat_ngram").value); // 0 = off
  const penalty = Number($("repetition_penalty").value);
  if (penalty > 1) body.repetition_penalty = penalty;
  if ($("regex").value) body.regex = $("regex").value;
  const words = $("must_include").value.split(",").map((w) => w.trim()).filter(Boolean);
  if (words.length) body.must_include = words;
  const bestOf = Number($("best_of").value);
  if (bestOf > 1) body.best_of = bestOf;
  const beam = Number($("beam").value);
  if (beam > 0) body.beam = beam;
  return body;
}

// best-of and beam search return the whole text at the end (they rank finished texts): POST /api/generate,
// shown as the stream's events would show it
async function generateWhole(body, signal, onEvent) {
  const res = await request("/api/generate", { method: "POST", body: JSON.stringify(body), signal });
  const data = await res.json();
  onEvent("start", { prime: data.prime });
  onEvent("text", { texts: [data.texts[0]] });
  onEvent("done", data);
}

// -- the generate view ------------------------------------------------------------------------------------
async function generate(event) {
  event.preventDefault();
  if (state.generate) state.generate.abort();
  const controller = new AbortController();
  state.generate = controller;
  const primeSpan = $("output").querySelector(".prime-text");
  const genSpan = $("output").querySelector(".gen-text");
  const status = $("status");
  primeSpan.textContent = "";
  genSpan.textContent = "";
  status.textContent = "generating…";
  status.classList.remove("error");
  $("stop").disabled = false;
  const started = performance.now();
  let chars = 0;
  try {
    const body = settings();
    const run = body.best_of || body.beam ? generateWhole : stream;
    await run(body, controller.signal, (name, data) => {
      if (name === "start") primeSpan.textContent = data.prime;
      else if (name === "text") {
        genSpan.append(data.texts[0]);
        chars += [...data.texts[0]].length;
        status.textContent = `${chars} characters…`;
      } else if (name === "done") {
        const secs = (performance.now() - started) / 1000;
        const rate = secs >= 0.5 ? ` (${Math.round(data.chars / secs)} characters/s)` : "";
        status.textContent = `${data.chars} characters in ${secs.toFixed(2)} s${rate} · ended by ${data.finish_reasons[0]}`;
        if (data.items) {
          const item = data.items[0];
          genSpan.textContent = item.text;
          status.textContent += ` · ${item.status}`;
        } else if (data.copies) {
          const report = data.copies[0];
          highlightCopies(genSpan, report);
          status.textContent += ` · longest copied span ${report.longest} chars, ${(100 * report.copied_share).toFixed(1)}% in spans ≥ ${report.min_span}`;
        }
      } else if (name === "error") throw new Error(data.message);
    });
  } catch (err) {
    if (err.name === "AbortError") status.textContent = `stopped after ${chars} characters`;
    else {
      status.textContent = "error: " + err.message;
      status.classList.add("error");
    }
  } finally {
    if (state.generate === controller) {
      state.generate = null;
      $("stop").disabled = true;
    }
  }
}

// Mark the spans the copy check found in the training text (positions count characters, not UTF-16 units).
function highlightCopies(span, report) {
  const chars = Array.from(span.textContent);
  span.textContent = "";
  let at = 0;
  for (const s of report.spans) {
    if (s.start > at) span.append(chars.slice(at, s.start).join(""));
    const mark = document.createElement("mark");
    mark.className = "copied";
    mark.title = `${s.length} characters copied from the training text (at character ${s.source})`;
    mark.textContent = chars.slice(Math.max(s.start, at), s.end).join("");
    span.append(mark);
    at = Math.max(at, s.end);
  }
  if (at < chars.length) span.append(chars.slice(at).join(""));
}

// -- the lesson view: the four temperatures side by side, one prime, one seed --------------------------------
function lessonColumns() {
  const grid = $("lesson-grid");
  grid.replaceChildren();
  return LESSON_TEMPERATURES.map((t) => {
    const col = document.createElement("article");
    col.className = "lesson-col";
    col.dataset.temperature = String(t);
    const h = document.createElement("h3");
    h.textContent = `temperature ${t.toFixed(1)}`;
    const pre = document.createElement("pre");
    pre.className = "output";
    pre.tabIndex = 0;
    pre.setAttribute("aria-label", `generated at temperature ${t}`);
    const prime = document.createElement("span");
    prime.className = "prime-text";
    const text = document.createElement("span");
    text.className = "gen-text";
    pre.append(prime, text);
    const status = document.createElement("p");
    status.className = "status";
    col.append(h, pre, status);
    grid.append(col);
    return { prime, text, status };
  });
}

async function lesson(event) {
  event.preventDefault();
  state.lesson.forEach((c) => c.abort());
  const seedInput = $("lesson-seed").value;
  // one seed for all four, so that without a prime they all start from the same seed text
  const seed = seedInput !== "" ? Number(seedInput) : Math.floor(Math.random() * 1e9);
  const base = { model: currentModel().name, length: Number($("lesson-length").value), seed, unknown: "skip" };
  if ($("lesson-prime").value) base.prime = $("lesson-prime").value;
  if (!$("tag").hidden && $("tag").value) base.tag = $("tag").value;
  const cols = lessonColumns();
  state.lesson = cols.map(() => new AbortController());
  $("lesson-stop").disabled = false;
  await Promise.all(cols.map(async (col, i) => {
    col.status.textContent = "generating…";
    try {
      await stream({ ...base, temperature: LESSON_TEMPERATURES[i] }, state.lesson[i].signal, (name, data) => {
        if (name === "start") col.prime.textContent = data.prime;
        else if (name === "text") col.text.append(data.texts[0]);
        else if (name === "done") col.status.textContent = `${data.chars} characters · seed ${seed}`;
      });
    } catch (err) {
      col.status.textContent = err.name === "AbortError" ? "stopped" : "error: " + err.message;
    }
  }));
  $("lesson-stop").disabled = true;
}

// -- the run view: loss curves (inline SVG) and per-epoch samples -------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => span / s <= count) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Number(v.toFixed(6)));
  return ticks;
}

function drawChart(metrics) {
  const W = 640, H = 300, L = 48, R = 16, T = 16, B = 40;
  const series = [
    { key: "bpc", label: "train", cls: "train" },
    { key: "val_bpc", label: "validation", cls: "val" },
  ].map((s) => ({ ...s, points: metrics.filter((r) => typeof r[s.key] === "number").map((r) => [r.epoch, r[s.key]]) }))
    .filter((s) => s.points.length);
  const chart = $("chart");
  chart.replaceChildren();
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("title", {}, "loss in bits per character by epoch"));
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no epochs recorded"));
    chart.append(root);
    return;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
  const pad = (Math.max(...ys) - Math.min(...ys)) * 0.08 || 0.1;
  const y0 = Math.min(...ys) - pad, y1 = Math.max(...ys) + pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (const v of niceTicks(y0, y1, 5)) {
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
    root.append(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, v.toString()));
  }
  const xticks = niceTicks(x0, x1, Math.min(10, x1 - x0 + 1)).filter((v) => Number.isInteger(v));
  for (const v of xticks) {
    root.append(svg("line", { x1: sx(v), x2: sx(v), y1: H - B, y2: H - B + 4, class: "axis" }));
    root.append(svg("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle" }, String(v)));
  }
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "epoch"));
  series.forEach((s, i) => {
    root.append(svg("polyline", { class: s.cls, points: s.points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" ") }));
    for (const [x, y] of s.points) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3, class: "dot-" + s.cls }));
    const lx = W - R - 120, ly = T + 10 + i * 16;
    root.append(svg("line", { x1: lx, x2: lx + 18, y1: ly, y2: ly, class: s.cls }));
    root.append(svg("text", { x: lx + 24, y: ly + 4 }, s.label));
  });
  chart.append(root);
}

function drawSamples(samples) {
  const box = $("run-samples");
  box.replaceChildren();
  samples.forEach((epoch, i) => {
    const d = document.createElement("details");
    d.className = "epoch";
    d.open = i === samples.length - 1;
    const s = document.createElement("summary");
    s.textContent = `Epoch ${epoch.epoch}`;
    d.append(s);
    for (const sample of epoch.samples) {
      const h = document.createElement("h4");
      h.textContent = `temperature ${sample.temperature}`;
      const pre = document.createElement("pre");
      pre.className = "output";
      pre.textContent = sample.text;
      d.append(h, pre);
    }
    box.append(d);
  });
}

async function loadRun() {
  const m = currentModel();
  $("run-empty").hidden = m.run;
  $("run-body").hidden = !m.run;
  if (!m.run) return;
  const res = await request(`/api/runs/${encodeURIComponent(m.name)}`);
  const run = await res.json();
  drawChart(run.metrics);
  drawSamples(run.samples);
}

// -- views --------------------------------------------------------------------------------------------------
function show(view) {
  for (const tab of document.querySelectorAll(".tab")) {
    const on = tab.dataset.view === view;
    tab.setAttribute("aria-pressed", String(on));
    $("view-" + tab.dataset.view).hidden = !on;
  }
  if (view === "run") loadRun().catch((err) => { $("run-empty").hidden = false; $("run-empty").textContent = err.message; });
}

function init() {
  loadToken();
  for (const id of ["temperature", "top_k", "top_p", "length", "no_repeat_ngram", "repetition_penalty"]) {
    $(id).addEventListener("input", () => showSlider(id));
    showSlider(id);
  }
  $("lesson-length").addEventListener("input", () => { $("lesson-length-value").textContent = $("lesson-length").value; });
  $("model").addEventListener("change", onModelChange);
  $("generate-form").addEventListener("submit", generate);
  $("stop").addEventListener("click", () => state.generate && state.generate.abort());
  $("lesson-form").addEventListener("submit", lesson);
  $("lesson-stop").addEventListener("click", () => state.lesson.forEach((c) => c.abort()));
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  // the model as a page that runs in the browser (charlstm export --web), zipped: fetched with the token
  $("download-web").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const link = ev.currentTarget;
    try {
      const blob = await (await request(link.getAttribute("href"))).blob();
      const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: link.download });
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      $("model-info").textContent = err.message;
    }
  });
  $("token-save").addEventListener("click", () => {
    state.token = $("token").value;
    sessionStorage.setItem("charlstm-token", state.token);
    $("auth").hidden = true;
    loadModels().catch((err) => { $("model-info").textContent = err.message; });
  });
  fetch("/healthz").then((r) => r.json()).then((h) => {
    if (h.limits) {
      $("length").max = String(Math.min(h.limits.max_length, 10000));
      $("lesson-length").max = String(Math.min(h.limits.max_length, 5000));
    }
  }).catch(() => {});
  loadModels().catch((err) => { $("model-info").textContent = err.message; });
}

init();
