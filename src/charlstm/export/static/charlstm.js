// charlstm in the browser: the NumPy runtime's step over Float32Arrays, its sampling and random stream, the page.
// No dependency, nothing fetched but model.json and weights.bin beside this file.
// window.charlstm = {ready, meta, logits(text, all), generate(options), bench(steps)} for tests and scripts.
"use strict";

(function () {
  // -- the network: one time step, as generation/network.py computes it ------------------------------------
  // Weights come in Keras' layout (in, out); each matrix is kept transposed (out, in) so every output is one
  // dot product over contiguous memory. LSTM gates i, f, c, o; GRU z, r, h (reset_after).
  function transpose(w, rows, cols) {
    const t = new w.constructor(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = w[i * cols + j];
    return t;
  }

  // out[j] = bias[j] + sum_i x[i] * wt[j * k + i]   (wt: (n, k), transposed)
  function matvec(x, wt, k, n, bias, out) {
    const k4 = k - (k % 4);
    for (let j = 0; j < n; j++) {
      const off = j * k;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < k4; i += 4) {
        s0 += x[i] * wt[off + i];
        s1 += x[i + 1] * wt[off + i + 1];
        s2 += x[i + 2] * wt[off + i + 2];
        s3 += x[i + 3] * wt[off + i + 3];
      }
      for (let i = k4; i < k; i++) s0 += x[i] * wt[off + i];
      out[j] = bias[j] + (s0 + s1) + (s2 + s3);
    }
  }

  function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

  // the same product in WebAssembly SIMD (matvec.wat; rebuilt by build_wasm.mjs): several times faster
  const WASM_MATVEC = "AGFzbQEAAAABHwRgA39/fwF9YAF7AX1gBX9/f399AX1gBn9/f39/fwADBwYAAQIDAAMFAwEAAQcdAwZtZW1vcnkCAAZtYXR2ZWMAAwdtYXR2ZWM4AAUKzgcGlgEEAX8BewF9AX8gAkF8cSEGAkADQCADIAZPDQEgBCAAIANBAnRq/QAEACABIANBAnRq/QAEAP3mAf3kASEEIANBBGohAwwACwsgBP0fACAE/R8BkiAE/R8CIAT9HwOSkiEFAkADQCADIAJPDQEgBSAAIANBAnRqKgIAIAEgA0ECdGoqAgCUkiEFIANBAWohAwwACwsgBQsZACAA/R8AIAD9HwGSIAD9HwIgAP0fA5KSCzYAAkADQCACIANPDQEgBCAAIAJBAnRqKgIAIAEgAkECdGoqAgCUkiEEIAJBAWohAgwACwsgBAvzAwMLfwV7AX8gAkECdCEIIAJBfHEhCSADQXxxIQoCQANAIAYgCk8NASABIAYgCGxqIQsgCyAIaiEMIAwgCGohDSANIAhqIQ79DAAAAAAAAAAAAAAAAAAAAAAhEf0MAAAAAAAAAAAAAAAAAAAAACES/QwAAAAAAAAAAAAAAAAAAAAAIRP9DAAAAAAAAAAAAAAAAAAAAAAhFEEAIQcCQANAIAcgCU8NASAHQQJ0IRAgACAQav0ABAAhFSARIBUgCyAQav0ABAD95gH95AEhESASIBUgDCAQav0ABAD95gH95AEhEiATIBUgDSAQav0ABAD95gH95AEhEyAUIBUgDiAQav0ABAD95gH95AEhFCAHQQRqIQcMAAsLIAZBAnQhFiAFIBZqIAQgFmoqAgAgACALIAkgAiAREAEQApI4AgAgBSAWQQRqaiAEIBZBBGpqKgIAIAAgDCAJIAIgEhABEAKSOAIAIAUgFkEIamogBCAWQQhqaioCACAAIA0gCSACIBMQARACkjgCACAFIBZBDGpqIAQgFkEMamoqAgAgACAOIAkgAiAUEAEQApI4AgAgBkEEaiEGDAALCwJAA0AgBiADTw0BIAZBAnQhFiAFIBZqIAQgFmoqAgAgACABIAYgCGxqIAIQAJI4AgAgBkEBaiEGDAALCwusAQMCfwN7AX0gAkF4cSEEAkADQCADIARPDQEgASADav0BAwAhByAFIAAgA0ECdGr9AAQAIAf9pwH9+gH95gH95AEhBSAGIAAgA0EEakECdGr9AAQAIAf9qAH9+gH95gH95AEhBiADQQhqIQMMAAsLIAUgBv3kARABIQgCQANAIAMgAk8NASAIIAAgA0ECdGoqAgAgASADaiwAALKUkiEIIANBAWohAwwACwsgCAtAAQJ/AkADQCAGIANPDQEgBkECdCEHIAUgB2ogBCAHaioCACAAIAEgBiACbGogAhAEkjgCACAGQQFqIQYMAAsLCw==";
  function wasmKernel() {
    try {
      const bytes = Uint8Array.from(atob(WASM_MATVEC), (c) => c.charCodeAt(0));
      if (!bytes.length || !WebAssembly.validate(bytes)) return null;
      return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports;
    } catch (err) {
      return null;
    }
  }

  // typed arrays for every weight and buffer ({name: [length, Float32Array or Int8Array]}): in the kernel's
  // memory when there is one, each with its byte offset there (`offsets`), else plain arrays
  function arena(kernel, sizes) {
    const out = {}, offsets = {};
    if (!kernel) {
      for (const [name, [n, Type]] of Object.entries(sizes)) { out[name] = new Type(n); offsets[name] = 0; }
      return { arrays: out, offsets };
    }
    let at = 0;
    for (const [name, [n, Type]] of Object.entries(sizes)) {
      offsets[name] = at;
      at += Math.ceil((Type.BYTES_PER_ELEMENT * n) / 16) * 16;
    }
    const need = Math.ceil(at / 65536) - kernel.memory.buffer.byteLength / 65536;
    if (need > 0) kernel.memory.grow(need);
    for (const [name, [n, Type]] of Object.entries(sizes)) out[name] = new Type(kernel.memory.buffer, offsets[name], n);
    return { arrays: out, offsets };
  }

  class Network {
    constructor(meta, buffer, useWasm = true) {
      this.meta = meta;
      this.kernel = useWasm ? wasmKernel() : null;
      this.engine = this.kernel ? "WebAssembly SIMD" : "JavaScript";
      const tensors = {};
      for (const t of meta.weights) {
        const size = t.shape.reduce((a, b) => a * b, 1);
        if (t.dtype === "int8") {  // per-row scales: w = q * scale[row]; the math stays float32
          const q = new Int8Array(buffer, t.offset, size);
          const scale = new Float32Array(buffer.slice(t.scale_offset, t.scale_offset + 4 * t.shape[0]));
          if (this.kernel && t.name !== "table") {  // kept 8-bit: the kernel reads a quarter of the bytes
            tensors[t.name] = { values: q, scale, shape: t.shape, int8: true };
            continue;
          }
          const cols = t.shape[1], values = new Float32Array(size);
          for (let r = 0; r < t.shape[0]; r++) {
            const sc = scale[r];
            for (let c = 0; c < cols; c++) values[r * cols + c] = q[r * cols + c] * sc;
          }
          tensors[t.name] = { values, shape: t.shape };
        } else {
          tensors[t.name] = { values: new Float32Array(buffer.slice(t.offset, t.offset + 4 * size)), shape: t.shape };
        }
      }
      const V = (this.vocabSize = meta.vocab_size);
      // what lives in the arena: transposed matrices (and an 8-bit one's scales and scaled input), biases, and
      // the step's buffers
      const sizes = {}, F = Float32Array;
      const matrix = (name, tensor) => {
        const [k, n] = tensor.shape;
        sizes[name] = [k * n, tensor.int8 ? Int8Array : F];
        if (tensor.int8) { sizes[`${name}.scale`] = [k, F]; sizes[`${name}.xs`] = [k, F]; }
      };
      let widest = V;
      meta.layers.forEach((l, n) => {
        const g = l.cell === "lstm" ? 4 : 3, u = l.units;
        widest = Math.max(widest, g * u);
        matrix(`rec${n}`, tensors[`layer${n}.recurrent`]);
        if (n > 0) { matrix(`kernel${n}`, tensors[`layer${n}.kernel`]); sizes[`inBias${n}`] = [g * u, F]; }
        if (l.cell === "gru") sizes[`recBias${n}`] = [g * u, F];
        for (const b of ["x", "r"]) sizes[`${b}${n}`] = [g * u, F];
        for (const b of ["h", "c"]) sizes[`${b}${n}`] = [u, F];
      });
      matrix("dense", tensors["dense.kernel"]);
      sizes.denseBias = [V, F]; sizes.logits = [V, F]; sizes.zeros = [widest, F];
      const { arrays: a, offsets } = arena(this.kernel, sizes);
      this.a = a; this.o = offsets;
      this.int8 = {};
      const place = (name, tensor) => {
        a[name].set(transpose(tensor.values, tensor.shape[0], tensor.shape[1]));
        if (tensor.int8) { a[`${name}.scale`].set(tensor.scale); this.int8[name] = { xs: `${name}.xs`, sc: `${name}.scale` }; }
      };
      this.table = tensors.table.values;  // (V, G*u0): layer 0's projected input per id, bias included
      this.layers = meta.layers.map((l, n) => {
        const u = l.units, g = l.cell === "lstm" ? 4 : 3;
        place(`rec${n}`, tensors[`layer${n}.recurrent`]);
        const layer = {
          cell: l.cell, units: u, gates: g, x: `x${n}`, r: `r${n}`, h: `h${n}`, c: `c${n}`, rec: `rec${n}`,
          kernel: `kernel${n}`, inBias: `inBias${n}`, recBias: l.cell === "gru" ? `recBias${n}` : "zeros",
          below: `h${n - 1}`,
        };
        if (n > 0) {
          layer.inDim = tensors[`layer${n}.kernel`].shape[0];
          place(`kernel${n}`, tensors[`layer${n}.kernel`]);
          a[`inBias${n}`].set(tensors[`layer${n}.input_bias`].values);
        }
        if (l.cell === "gru") a[`recBias${n}`].set(tensors[`layer${n}.recurrent_bias`].values);
        return layer;
      });
      place("dense", tensors["dense.kernel"]);
      a.denseBias.set(tensors["dense.bias"].values);  // the unknown id at -inf: never generated
      this.logitsOut = a.logits;
      this.reset();
    }

    // out = bias + x @ w, by name in the arena (bias "zeros" for none)
    mv(x, w, k, n, bias, out) {
      const a = this.a, o = this.o;
      const q = this.int8[w];
      if (q) {  // x times the row scales, then the 8-bit product
        const xs = a[q.xs], sc = a[q.sc], xv = a[x];
        for (let i = 0; i < k; i++) xs[i] = xv[i] * sc[i];
        this.kernel.matvec8(o[q.xs], o[w], k, n, o[bias], o[out]);
      } else if (this.kernel) this.kernel.matvec(o[x], o[w], k, n, o[bias], o[out]);
      else matvec(a[x], a[w], k, n, a[bias], a[out]);
    }

    reset() {
      this.layers.forEach((l, n) => { this.a[`h${n}`].fill(0); this.a[`c${n}`].fill(0); });
    }

    // feed one id; returns the next character's logits (a Float32Array reused by the next call)
    step(id) {
      const a = this.a;
      for (let n = 0; n < this.layers.length; n++) {
        const L = this.layers[n], u = L.units, gu = L.gates * u;
        const x = a[L.x], r = a[L.r], h = a[L.h];
        if (n === 0) x.set(this.table.subarray(id * gu, id * gu + gu));
        else this.mv(L.below, L.kernel, L.inDim, gu, L.inBias, L.x);
        this.mv(L.h, L.rec, u, gu, L.recBias, L.r);
        if (L.cell === "lstm") {
          const c = a[L.c];
          for (let j = 0; j < u; j++) {
            const i = sigmoid(x[j] + r[j]);
            const f = sigmoid(x[u + j] + r[u + j]);
            const g = Math.tanh(x[2 * u + j] + r[2 * u + j]);
            const o = sigmoid(x[3 * u + j] + r[3 * u + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * Math.tanh(c[j]);
          }
        } else {
          for (let j = 0; j < u; j++) {
            const z = sigmoid(x[j] + r[j]);
            const rr = sigmoid(x[u + j] + r[u + j]);
            const hh = Math.tanh(x[2 * u + j] + rr * r[2 * u + j]);
            h[j] = z * h[j] + (1 - z) * hh;
          }
        }
      }
      const top = this.layers[this.layers.length - 1];
      this.mv(top.h, "dense", top.units, this.vocabSize, "denseBias", "logits");
      return this.logitsOut;
    }
  }

  // -- text <-> ids ---------------------------------------------------------------------------------------
  function prepare(meta, text) {
    const pre = meta.preprocessing || {};
    if (pre.normalize && pre.normalize !== "none") text = text.normalize(pre.normalize);
    if (pre.lowercase) text = text.toLowerCase();
    if (pre.ascii_only) text = text.replace(/[^\x00-\x7f]/g, "");
    return text;
  }

  // characters are code points (Array.from), as Python counts them: emoji and Chinese are one each
  function encode(meta, index, text) {
    const ids = [], dropped = [];
    for (const ch of Array.from(prepare(meta, text))) {
      const id = index.get(ch);
      if (id === undefined) dropped.push(ch); else ids.push(id);
    }
    return { ids, dropped };
  }

  // -- randomness: NumPy's own generator, so a seed draws what `charlstm generate --seed` draws -------------
  // default_rng(seed).random(): SeedSequence's hash of the seed into PCG64's state, PCG64 (XSL-RR) steps in
  // 128-bit BigInt arithmetic, doubles from the top 53 bits; integers(n) as NumPy's bounded draw (Lemire's)
  function numpyRandom(seed) {
    const M32 = 0xffffffff;
    const mul = (a, b) => Math.imul(a, b) >>> 0;
    let words = [];
    let big = BigInt(seed);
    if (big === 0n) words = [0];
    while (big > 0n) { words.push(Number(big & 0xffffffffn)); big >>= 32n; }
    let hc = 0x43b0d7e5;
    const hashmix = (v) => {
      v = (v ^ hc) >>> 0;
      hc = mul(hc, 0x931e8875);
      v = mul(v, hc);
      return (v ^ (v >>> 16)) >>> 0;
    };
    const mix = (x, y) => {
      let r = (mul(0xca01f9dd, x) - mul(0x4973f715, y)) >>> 0;
      return (r ^ (r >>> 16)) >>> 0;
    };
    const pool = [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) pool[i] = hashmix(i < words.length ? words[i] : 0);
    for (let s = 0; s < 4; s++) for (let d = 0; d < 4; d++) if (s !== d) pool[d] = mix(pool[d], hashmix(pool[s]));
    for (let s = 4; s < words.length; s++) for (let d = 0; d < 4; d++) pool[d] = mix(pool[d], hashmix(words[s]));
    let hb = 0x8b51f9dd;
    const st = [];
    for (let i = 0; i < 8; i++) {
      let v = (pool[i % 4] ^ hb) >>> 0;
      hb = mul(hb, 0x58f38ded);
      v = mul(v, hb);
      st.push((v ^ (v >>> 16)) >>> 0);
    }
    const u64 = (lo, hi) => (BigInt(hi) << 32n) | BigInt(lo);
    const v = [u64(st[0], st[1]), u64(st[2], st[3]), u64(st[4], st[5]), u64(st[6], st[7])];
    const MASK = (1n << 128n) - 1n, MULT = 0x2360ED051FC65DA44385DF649FCCF645n;
    const initstate = (v[0] << 64n) | v[1], initseq = (v[2] << 64n) | v[3];
    const inc = ((initseq << 1n) | 1n) & MASK;
    let state = 0n;
    const stepS = () => { state = (state * MULT + inc) & MASK; };
    stepS(); state = (state + initstate) & MASK; stepS();
    const M64 = (1n << 64n) - 1n;
    const next64 = () => {
      stepS();
      const x = ((state >> 64n) ^ state) & M64, rot = state >> 122n;
      return ((x >> rot) | (x << ((64n - rot) & 63n))) & M64;
    };
    const random = () => Number(next64() >> 11n) / 9007199254740992;
    // integers(n) for n < 2**32: Lemire's bounded method over buffered 32-bit halves, as NumPy draws them
    let half = null;
    const next32 = () => {
      if (half !== null) { const h = half; half = null; return h; }
      const v = next64();
      half = Number(v >> 32n);
      return Number(v & 0xffffffffn);
    };
    random.integers = (n) => {
      const rng = n - 1;
      if (rng === 0) return 0;
      const excl = BigInt(rng + 1);
      let m = BigInt(next32()) * excl, left = Number(m & 0xffffffffn);
      if (left < rng + 1) {
        const threshold = Number(((1n << 32n) - excl) % excl);
        while (left < threshold) { m = BigInt(next32()) * excl; left = Number(m & 0xffffffffn); }
      }
      return Number(m >> 32n);
    };
    return random;
  }

  // -- sampling: processors then temperature / top-k / top-p, as generation/processors.py and sampling.py ---
  class Sampler {
    constructor(meta, opts, primeIds) {
      this.V = meta.vocab_size;
      this.temperature = opts.temperature;
      this.topK = opts.top_k || null;
      this.topP = opts.top_p && opts.top_p < 1 ? opts.top_p : null;
      this.penalty = opts.repetition_penalty && opts.repetition_penalty !== 1 ? opts.repetition_penalty : null;
      this.limits = opts.max_repeat === false ? null : (meta.sampling.max_repeat || null);
      this.n = opts.no_repeat_ngram || 0;
      this.random = numpyRandom(opts.seed);
      this.ids = primeIds.slice();
      this.seen = new Map();  // (n-1)-gram -> ids that followed it (the n-gram ban)
      this.counts = new Uint32Array(this.V);
      for (const i of primeIds) this.counts[i]++;
      this.indexed = Math.max(this.n - 1, 0);
      const last = primeIds[primeIds.length - 1];
      let run = 0;
      for (let t = primeIds.length - 1; t >= 0 && primeIds[t] === last; t--) run++;
      this.last = last; this.run = run;
      this.z = new Float64Array(this.V);
    }

    key(end) { return this.ids.slice(end - this.n + 1, end).join(","); }

    processed(logits) {
      const z = this.z, V = this.V;
      for (let i = 0; i < V; i++) z[i] = logits[i];
      if (this.limits && this.run >= this.limits[this.last]) z[this.last] = -Infinity;  // the repeat guard
      if (this.penalty) {  // CTRL's repetition penalty, as Hugging Face applies it
        for (let i = 0; i < V; i++) if (this.counts[i] > 0) z[i] = z[i] < 0 ? z[i] * this.penalty : z[i] / this.penalty;
      }
      if (this.n > 0 && this.ids.length >= this.n - 1) {  // Hugging Face's no_repeat_ngram_size
        const n = this.n, ids = this.ids;
        for (; this.indexed < ids.length; this.indexed++) {
          const k = this.key(this.indexed);
          if (!this.seen.has(k)) this.seen.set(k, new Set());
          this.seen.get(k).add(ids[this.indexed]);
        }
        const banned = this.seen.get(n > 1 ? ids.slice(ids.length - n + 1).join(",") : "");
        if (banned) {
          let left = 0;
          for (let i = 0; i < V; i++) if (z[i] > -Infinity && !banned.has(i)) left++;
          if (left > 0) for (const i of banned) z[i] = -Infinity;  // never ban everything
        }
      }
      return z;
    }

    // the weights that are sampled from (unnormalised), as sampling.probabilities
    weights(z) {
      const V = this.V, p = this.p || (this.p = new Float64Array(V));
      p.fill(0);
      if (this.temperature === 0) {
        let best = 0;
        for (let i = 1; i < V; i++) if (z[i] > z[best]) best = i;
        p[best] = 1;
        return p;
      }
      let m = -Infinity;
      for (let i = 0; i < V; i++) m = Math.max(m, z[i] / this.temperature);
      const s = this.s || (this.s = new Float64Array(V));
      for (let i = 0; i < V; i++) { s[i] = z[i] / this.temperature - m; p[i] = Math.exp(s[i]); }
      if (this.topK && this.topK < V) {
        const kth = Array.from(s).sort((a, b) => b - a)[this.topK - 1];
        for (let i = 0; i < V; i++) if (s[i] < kth) p[i] = 0;
      }
      if (this.topP) {
        const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
        let total = 0;
        for (const i of order) total += p[i];
        let before = 0;
        const keep = new Uint8Array(V);
        for (const i of order) { keep[i] = before / total < this.topP ? 1 : 0; before += p[i]; }
        for (let i = 0; i < V; i++) if (!keep[i]) p[i] = 0;
      }
      return p;
    }

    choose(logits) {
      const z = this.processed(logits);
      let id;
      if (this.temperature === 0) {
        id = 0;
        for (let i = 1; i < this.V; i++) if (z[i] > z[id]) id = i;
      } else {
        const p = this.weights(z);
        let total = 0;
        for (let i = 0; i < this.V; i++) total += p[i];
        const draw = this.random() * total;
        let cdf = 0;
        id = this.V - 1;
        for (let i = 0; i < this.V; i++) { cdf += p[i]; if (cdf > draw) { id = i; break; } }
      }
      this.ids.push(id);
      this.counts[id]++;
      this.run = id === this.last ? this.run + 1 : 1;
      this.last = id;
      return id;
    }
  }

  // -- generation: yields each character as it is drawn ---------------------------------------------------
  function* characters(net, meta, index, opts) {
    const chars = meta.vocabulary;
    const { ids } = encode(meta, index, opts.prime);
    net.reset();
    let logits = null;
    for (const id of ids) logits = net.step(id);
    const sampler = new Sampler(meta, opts, ids);
    for (let t = 0; t < opts.length; t++) {
      const id = sampler.choose(logits);
      yield chars[id];
      logits = net.step(id);
    }
  }

  // whole items of an items model: each from the boundary (and the prime) in a zero state, to the next boundary
  function* items(net, meta, index, opts) {
    const boundary = meta.items.boundary, limit = 2 * meta.items.max_len + 20;
    const rng = numpyRandom(opts.seed);
    let made = 0;
    for (let round = 0; made < opts.count && round < opts.count * 20; round++) {
      let text = "";
      const gen = characters(net, meta, index, {
        ...opts, prime: boundary + (opts.itemPrime || ""), length: limit, seed: Math.floor(rng() * 4294967296),
      });
      let ended = false;
      for (const ch of gen) {
        if (ch === boundary) { ended = true; break; }
        text += ch;
      }
      if (ended && (opts.itemPrime || "") + text) { made++; yield (opts.itemPrime || "") + text; }
    }
  }

  function defaultPrime(meta, seed) {
    if (meta.items) return "";
    if (meta.seeds && meta.seeds.length) return meta.seeds[numpyRandom(seed).integers(meta.seeds.length)];
    return meta.vocabulary.includes("\n") ? "\n" : meta.vocabulary[0];
  }

  // -- loading --------------------------------------------------------------------------------------------
  async function load() {
    const meta = await (await fetch("model.json")).json();
    const buffer = await (await fetch("weights.bin")).arrayBuffer();
    // ?engine=js: the plain JavaScript product (tests compare both; the page takes WebAssembly where it can)
    const net = new Network(meta, buffer, new URLSearchParams(location.search).get("engine") !== "js");
    const index = new Map(meta.vocabulary.map((c, i) => [c, i]));
    return { meta, net, index };
  }

  const api = {};
  window.charlstm = api;
  api.ready = load().then((m) => { Object.assign(api, m); return m; });

  // the logits after each character of `text` from a zero state (the last one's, or all of them flat)
  api.logits = (text, all) => {
    const { net, meta, index } = api;
    const { ids } = encode(meta, index, text);
    net.reset();
    const out = [];
    let logits = null;
    for (const id of ids) {
      logits = net.step(id);
      if (all) for (const v of logits) out.push(v);
    }
    return all ? out : Array.from(logits);
  };
  api.options = (o) => ({
    prime: "", length: 400, temperature: 1, top_k: null, top_p: null, seed: 0, repetition_penalty: null,
    no_repeat_ngram: api.meta.sampling.no_repeat_ngram, ...o,
  });
  api.generate = (o) => {
    const opts = api.options(o);
    if (api.meta.items) return Array.from(items(api.net, api.meta, api.index, { count: 5, ...opts }));
    return Array.from(characters(api.net, api.meta, api.index, opts)).join("");
  };
  // characters per second of one stream, sampling included (benchmarks/bench_export.py)
  api.bench = (steps, ngram) => {
    const opts = api.options({ prime: api.meta.vocabulary[0], length: steps, temperature: 1, seed: 1 });
    if (ngram !== undefined) opts.no_repeat_ngram = ngram;
    const t0 = performance.now();
    let n = 0;
    for (const ch of characters(api.net, api.meta, api.index, opts)) n += ch.length > 0 ? 1 : 0;
    return { chars: n, seconds: (performance.now() - t0) / 1000 };
  };

  // -- the page -------------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function bindRange(id, show) {
    const el = $(id), out = $(id + "-value");
    const update = () => { out.textContent = show(Number(el.value)); };
    el.addEventListener("input", update);
    update();
  }

  function page() {
    const status = $("status"), primeOut = document.querySelector("#output .prime-text");
    const genOut = document.querySelector("#output .gen-text");
    let running = null;
    bindRange("temperature", (v) => v.toFixed(2));
    bindRange("top_k", (v) => (v === 0 ? "off" : String(v)));
    bindRange("top_p", (v) => (v >= 1 ? "off" : v.toFixed(2)));
    bindRange("length", (v) => String(v));
    bindRange("no_repeat_ngram", (v) => String(v));
    bindRange("repetition_penalty", (v) => (v <= 1 ? "off" : v.toFixed(2)));
    bindRange("count", (v) => String(v));

    api.ready.then(({ meta }) => {
      document.title = `${meta.name} · charlstm`;
      $("model-name").textContent = meta.name;
      const q = meta.quantized ? `, int8 weights (${meta.quantized.cost_nats >= 0 ? "+" : ""}${meta.quantized.cost_nats.toFixed(4)} nats/char)` : "";
      $("model-info").textContent = `${meta.architecture}, ${meta.vocab_size} characters, recipe ${meta.recipe}${q} · runs in this page (${api.net.engine}), no server`;
      const ngram = $("no_repeat_ngram");
      ngram.value = meta.sampling.no_repeat_ngram;
      ngram.dispatchEvent(new Event("input"));
      if (meta.items) {
        $("length-field").hidden = true;
        $("count-field").hidden = false;
        $("prime-label").firstChild.textContent = "Item starts with ";
      }
      $("generate").disabled = false;
      status.textContent = "Ready.";
    }).catch((err) => {
      status.textContent = location.protocol === "file:"
        ? "Open this folder through a web server (python -m http.server in it), not as a file: browsers do not let a file:// page read its weights."
        : `Could not load the model: ${err}`;
      status.classList.add("error");
    });

    $("generate-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (running) return;
      const { meta, net, index } = api;
      const seedText = $("seed").value.trim();
      const seed = seedText === "" ? crypto.getRandomValues(new Uint32Array(1))[0] : Number(seedText);
      const typed = $("prime").value;
      const opts = api.options({
        temperature: Number($("temperature").value),
        top_k: Number($("top_k").value) || null,
        top_p: Number($("top_p").value) < 1 ? Number($("top_p").value) : null,
        length: Number($("length").value),
        no_repeat_ngram: Number($("no_repeat_ngram").value),
        repetition_penalty: Number($("repetition_penalty").value),
        seed,
      });
      const { dropped } = encode(meta, index, typed);
      const note = dropped.length ? ` (not in the vocabulary, left out: ${[...new Set(dropped)].join(" ")})` : "";
      let gen, unit;
      if (meta.items) {
        gen = items(net, meta, index, { ...opts, itemPrime: prepare(meta, typed), count: Number($("count").value) });
        primeOut.textContent = "";
        unit = "items";
      } else {
        opts.prime = typed === "" ? defaultPrime(meta, seed) : typed;
        if (encode(meta, index, opts.prime).ids.length === 0) {
          status.textContent = "The prime has no character of the model's vocabulary.";
          return;
        }
        gen = characters(net, meta, index, opts);
        primeOut.textContent = prepare(meta, opts.prime);
        unit = "characters";
      }
      genOut.textContent = "";
      let made = 0, stop = false;
      const t0 = performance.now();
      running = { stop: () => { stop = true; } };
      $("generate").disabled = true;
      $("stop").disabled = false;
      status.textContent = `generating (seed ${seed})${note}`;
      const finish = (why) => {
        running = null;
        $("generate").disabled = false;
        $("stop").disabled = true;
        const secs = (performance.now() - t0) / 1000;
        status.textContent = `${why}: ${made} ${unit} in ${secs.toFixed(2)} s (seed ${seed})${note}`;
      };
      const chunk = () => {  // draw for ~30 ms, show it, let the page breathe, go on
        const until = performance.now() + 30;
        let piece = "";
        while (performance.now() < until) {
          if (stop) { genOut.textContent += piece; finish("stopped after"); return; }
          const next = gen.next();
          if (next.done) { genOut.textContent += piece; finish(meta.items ? "done" : "ended by length"); return; }
          piece += meta.items ? next.value + "\n" : next.value;
          made++;
        }
        genOut.textContent += piece;
        setTimeout(chunk, 0);
      };
      setTimeout(chunk, 0);
    });
    $("stop").addEventListener("click", () => { if (running) running.stop(); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", page); else page();
})();
