// charlstm playground, the write view: plain JavaScript, no libraries, no external files (uses app.js' $,
// request, currentModel and state). While you write: after a pause, a proposed continuation in grey
// (POST /api/generate) that Tab accepts and typing dismisses, and the five likeliest next characters beside
// the cursor (POST /api/next, with the same temperature and loop setting, so they are what the proposal draws
// from). The surprise view colours each character of a text by its log-probability (POST /api/score).
"use strict";

const PAUSE_MS = 350;
const write = { timer: null, controller: null, ghost: "", seq: 0 };

function atEnd(t) {
  return t.selectionStart === t.value.length && t.selectionEnd === t.value.length;
}

function lastChars(text, n) {
  const points = [...text]; // the server counts characters (code points), as Python does
  return points.length > n ? points.slice(-n).join("") : text;
}

function renderMirror() {
  const t = $("write-text");
  $("write-typed").textContent = t.value;
  $("write-ghost").textContent = write.ghost;
  $("write-mirror").scrollTop = t.scrollTop;
  placeNext();
}

function placeNext() {
  // the list sits in the column beside the text, at the height of the cursor's line
  const list = $("write-next");
  const y = $("write-caret").offsetTop - $("write-text").scrollTop;
  list.style.top = Math.max(0, y) + "px";
}

const SHOWN = { " ": "␣", "\n": "↵", "\t": "⇥" };

function renderNext(items) {
  const list = $("write-next");
  list.replaceChildren(...items.map(({ char, prob }) => {
    const li = document.createElement("li");
    const ch = document.createElement("span");
    ch.className = "ch";
    ch.textContent = SHOWN[char] || char;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(2, Math.round(prob * 100)) + "%";
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = (prob * 100).toFixed(prob < 0.1 ? 1 : 0) + "%";
    li.append(ch, bar, p);
    li.title = `${JSON.stringify(char)}: ${prob.toFixed(4)}`;
    return li;
  }));
  placeNext();
}

function writeSettings() {
  const body = { model: currentModel().name, temperature: Number($("write-temperature").value), unknown: "skip" };
  body.no_repeat_ngram = Number($("write-ngram").value); // 0 = off
  const penalty = Number($("write-penalty").value);
  if (penalty > 1) body.repetition_penalty = penalty;
  return body;
}

function dismiss() {
  write.seq += 1; // answers to older requests are dropped
  if (write.controller) write.controller.abort();
  write.controller = null;
  write.ghost = "";
  renderMirror();
}

function schedule() {
  clearTimeout(write.timer);
  write.timer = setTimeout(propose, PAUSE_MS);
}

async function propose() {
  const t = $("write-text");
  const text = t.value;
  const status = $("write-status");
  if (!text || !atEnd(t) || !currentModel()) {
    if (!text) renderNext([]);
    return;
  }
  const seq = ++write.seq;
  const controller = new AbortController();
  write.controller = controller;
  const prefix = lastChars(text, state.maxPrime || 4000);
  const post = (path, body) => request(path, { method: "POST", body: JSON.stringify(body), signal: controller.signal });
  try {
    const next = await (await post("/api/next", { ...writeSettings(), prefix, k: 5 })).json();
    if (seq !== write.seq) return;
    renderNext(next.next);
    status.classList.remove("error");
    status.textContent = "proposing…";
    const body = { ...writeSettings(), prime: prefix, length: Number($("write-length").value) };
    if ($("write-seed").value !== "") body.seed = Number($("write-seed").value);
    const out = await (await post("/api/generate", body)).json();
    if (seq !== write.seq || t.value !== text) return;
    write.ghost = out.text;
    renderMirror();
    status.textContent = out.text ? "Tab: take the proposal · keep typing: dismiss it" : "";
  } catch (err) {
    if (err.name === "AbortError" || seq !== write.seq) return;
    status.textContent = "error: " + err.message;
    status.classList.add("error");
  } finally {
    if (write.controller === controller) write.controller = null;
  }
}

function accept() {
  const t = $("write-text");
  t.value += write.ghost;
  t.selectionStart = t.selectionEnd = t.value.length;
  $("write-status").textContent = `took ${[...write.ghost].length} characters`;
  write.ghost = "";
  dismiss();
  t.scrollTop = t.scrollHeight;
  renderMirror();
  schedule();
}

// -- surprise: each character coloured by how many bits it costs the model ------------------------------------
async function surprise() {
  const out = $("surprise-out");
  const status = $("surprise-status");
  const text = $("surprise-text").value;
  status.classList.remove("error");
  if (!text) { status.textContent = "paste a text first"; return; }
  status.textContent = "scoring…";
  try {
    const res = await request("/api/score", {
      method: "POST", body: JSON.stringify({ model: currentModel().name, text, unknown: "skip" }),
    });
    const body = await res.json();
    const chars = [...body.text];
    out.replaceChildren(...chars.map((ch, i) => {
      const span = document.createElement("span");
      span.textContent = ch;
      const lp = body.logprobs[i];
      if (lp != null) {
        const bits = -lp / Math.LN2;
        span.dataset.bits = bits.toFixed(2);
        span.title = `${bits.toFixed(2)} bits (p = ${Math.exp(lp).toFixed(3)})`;
        span.style.backgroundColor = `rgba(214, 69, 65, ${Math.min(1, bits / 8).toFixed(3)})`;
      }
      return span;
    }));
    status.textContent = body.chars
      ? `${body.bits_per_char.toFixed(3)} bits/char over ${body.chars} characters (white: expected, red: 8+ bits)`
      : "one character: nothing to score";
  } catch (err) {
    status.textContent = "error: " + err.message;
    status.classList.add("error");
  }
}

function initWrite() {
  const t = $("write-text");
  t.addEventListener("input", () => { dismiss(); schedule(); });
  t.addEventListener("keydown", (e) => {
    if (e.key === "Tab" && !e.shiftKey && write.ghost) { e.preventDefault(); accept(); }
    else if (e.key === "Escape" && write.ghost) { e.preventDefault(); dismiss(); }
  });
  const moved = () => { if (!atEnd(t) && write.ghost) dismiss(); };
  t.addEventListener("keyup", moved);
  t.addEventListener("click", moved);
  t.addEventListener("scroll", () => { $("write-mirror").scrollTop = t.scrollTop; placeNext(); });
  for (const [id, show] of [["write-length", (v) => v], ["write-temperature", (v) => Number(v).toFixed(2)],
                            ["write-ngram", (v) => (Number(v) ? v : "off")],
                            ["write-penalty", (v) => (Number(v) > 1 ? Number(v).toFixed(2) : "off")]]) {
    const update = () => { $(id + "-value").textContent = show($(id).value); };
    $(id).addEventListener("input", update);
    $(id).addEventListener("change", () => { dismiss(); schedule(); });
    update();
  }
  $("write-seed").addEventListener("change", () => { dismiss(); schedule(); });
  $("surprise-go").addEventListener("click", surprise);
  fetch("/healthz").then((r) => r.json()).then((h) => { if (h.limits) state.maxPrime = h.limits.max_prime; })
    .catch(() => {});
}

initWrite();
