// The RoutingExplorer's view (cascade_lab.explorer, nbs/16_explorer.ipynb): a token x MoE-layer grid of the
// experts a run was routed to, drawn on one <canvas> from typed arrays. Every interaction (zoom, pan, hover,
// brush, filters, the load heatmap) is computed here, in the browser, with no round trip to the kernel; the
// view state is mirrored into the model's traits so Python can read and drive it.
//
// Plain ES module, no build step and no imports: anywidget loads this file as it is.
//
// Packed data (see `pack` in explorer.py): routing planes are layer-major, [layer][slot][token], so one
// (layer, slot) row is a contiguous run over tokens: what the grid reads and what compresses well. They come
// zlib-deflated (DecompressionStream inflates them natively) and quantised to uint8 with a (lo, scale) each.

const NO_SEGMENT = 255;
const UNRECORDED = [226, 226, 226];            // rows with no router decision (the last sampled token)
const MIN_SPAN = 4;                            // zoom stops at 4 tokens across the grid
const GRID_LEFT = 44;                          // room for the layer labels
const TEXT_LINE = 18;                          // text strip: line height (css px)
const TEXT_LINES = 3;

// ---------------------------------------------------------------- decoding the traits

function u8(dv) {
  // ipywidgets hands binary traits over as DataView (possibly a window into a larger buffer)
  if (!dv || !dv.byteLength) return new Uint8Array(0);
  return new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength);
}

function typed(bytes, Ctor) {
  // a copy, so the typed array is aligned whatever offset the bytes had in the message
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Ctor(copy.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function halfToFloat(h) {
  // float16 -> number (logprobs and entropies travel as float16; NaN means "none")
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function halves(bytes) {
  const h = typed(bytes, Uint16Array), out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = halfToFloat(h[i]);
  return out;
}

function undelta(q, L, K, T) {
  // scores are sent slot-delta coded (best first, so deltas are small and compress): q[s] = q[s-1] - d[s] mod 256
  for (let l = 0; l < L; l++)
    for (let s = 1; s < K; s++) {
      const cur = (l * K + s) * T, prev = cur - T;
      for (let t = 0; t < T; t++) q[cur + t] = (q[prev + t] - q[cur + t]) & 255;
    }
  return q;
}

async function plane(model, name, info) {
  let bytes = u8(model.get(name));
  if (!bytes.length) return null;
  if (info.encoding[name] === "deflate") bytes = await inflate(bytes);
  return bytes;
}

async function decode(model) {
  const info = model.get("info");
  const T = info.n_tokens, L = info.moe_layers.length, K = info.slots;
  const ex = await plane(model, "experts", info);
  const d = { info, T, L, K, E: info.num_experts,
    experts: info.experts_dtype === "uint16" ? typed(ex, Uint16Array) : ex,
    weights: await plane(model, "weights", info),
    scores: await plane(model, "scores", info),
    rentropy: await plane(model, "rentropy", info),      // [L][T] routing entropy, 16 levels (255: none)
    kinds: u8(model.get("kinds")),
    recordedBits: u8(model.get("recorded")),
    logprobs: halves(u8(model.get("logprobs"))),
    entropies: halves(u8(model.get("entropies"))),
    text: u8(model.get("text")),
    offsets: typed(u8(model.get("offsets")), Uint32Array) };
  if (d.scores) undelta(d.scores, L, K, T);
  d.recorded = new Uint8Array(T);
  for (let t = 0; t < T; t++) d.recorded[t] = (d.recordedBits[t >> 3] >> (t & 7)) & 1;
  d.decoder = new TextDecoder();
  d.kindColors = info.segment_kinds.map((k) => hexRgb(info.segment_colors[k] || "#888888"));
  return d;
}

const tokenText = (d, t) => d.decoder.decode(d.text.subarray(d.offsets[t], d.offsets[t + 1]));
const dequant = (q, p) => p.lo + q * p.scale;
const at = (d, arr, l, s, t) => arr[(l * d.K + s) * d.T + t];     // one entry of a [L][K][T] plane

// ---------------------------------------------------------------- colours

function hsl(h, s, l) {
  s /= 100; l /= 100;
  const k = (n) => (n + h / 30) % 12, a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
}

function palette(E) {
  // a fixed categorical palette: golden-angle hues, three lightness/saturation levels, so neighbouring expert
  // ids look different and an expert has the same colour in every run and every layer
  const rgb = [];
  for (let i = 0; i < E; i++) rgb.push(hsl((i * 137.508) % 360, [72, 58, 82][i % 3], [50, 36, 64][(i >> 1) % 3]));
  return rgb;
}

const css = ([r, g, b], a = 1) => `rgba(${r},${g},${b},${a})`;
const hex = (rgb) => "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");   // the cheapest colour to parse
const hexRgb = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
const fade = (c, f) => c.map((v) => Math.round(v * f + 255 * (1 - f)));   // toward white: dimmed tokens

function heat(x) {
  // white -> blue -> dark blue: the load heatmap's scale (x in [0, 1])
  const stops = [[255, 255, 255], [107, 174, 214], [8, 48, 107]];
  const y = Math.max(0, Math.min(1, x)) * 2, i = Math.min(1, Math.floor(y)), f = y - i;
  return stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * f));
}

// ---------------------------------------------------------------- the DOM skeleton (a fixed number of nodes)

function elem(tag, cls, parent, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  if (parent) parent.appendChild(n);
  return n;
}

function select(parent, label, options, value) {
  const wrap = elem("label", "cl-rx-field", parent, label + " ");
  const s = elem("select", "", wrap);
  for (const [v, text] of options) { const o = elem("option", "", s, text); o.value = String(v); }
  s.value = String(value);
  return s;
}

function layerPattern(info) {
  // which model layers are MoE layers ("E" in info.layer_pattern): a strip of ticks, MoE layers marked
  return Array.from(info.layer_pattern, (c) => (c === "E" ? "▮" : "·")).join("");
}

function skeleton(el, d) {
  const i = d.info, ui = {};
  el.classList.add("cl-rx");
  const bar = elem("div", "cl-rx-bar", el);
  elem("span", "cl-rx-title", bar, `${i.model.name} [${i.model.kind}] · ${d.T.toLocaleString()} tokens · ` +
       `${d.L} MoE layers · top-${i.top_k} of ${d.E} experts` + (i.n_shared_experts ? ` + ${i.n_shared_experts} shared` : "") +
       (i.pending ? " · top-1 shown, the other slots on their way" : ""));
  ui.layer = select(bar, "layer", i.moe_layers.map((m, l) => [l, `${m} (MoE ${l + 1}/${d.L})`]), 0);
  ui.slot = select(bar, "slot", Array.from({ length: d.K }, (_, s) => [s, s === 0 ? "top-1" : `#${s + 1}`]), 0);
  ui.slot.disabled = d.K === 1;
  ui.segment = select(bar, "segment", [["", "all"], ...i.kinds_present.map((k) => [k, k])], "");
  ui.reset = elem("button", "cl-rx-btn", bar, "zoom out");
  ui.clear = elem("button", "cl-rx-btn", bar, "clear brush");
  elem("div", "cl-rx-pattern", el, "model layers " + layerPattern(i)).title = "▮ MoE layer, · Mamba-2 / attention";
  ui.grid = elem("canvas", "cl-rx-grid", el);
  ui.text = elem("canvas", "cl-rx-text", el);
  ui.caption = elem("div", "cl-rx-caption", el);
  const lower = elem("div", "cl-rx-lower", el);
  ui.hover = elem("div", "cl-rx-hover", lower);
  const side = elem("div", "cl-rx-side", lower);
  ui.panel = select(elem("div", "cl-rx-panel-bar", side), "panel", PANELS, "load");
  ui.loadTitle = elem("div", "cl-rx-load-title", side);
  ui.load = elem("canvas", "cl-rx-load", side);
  ui.balance = elem("div", "cl-rx-balance", side);
  ui.loadHover = elem("div", "cl-rx-load-hover", side, "point at the panel for numbers");
  vocabularyTable(ui, side);
  hoverTable(ui, d);
  return ui;
}

function hoverTable(ui, d) {
  // built once: one row per MoE layer, one cell per sent slot. A hover only rewrites what changed: each cell
  // keeps its Text node (setting .data does not replace the node as textContent does) and what it shows now
  ui.hoverHead = elem("div", "cl-rx-hover-head", ui.hover, "hover a token");
  const table = elem("table", "cl-rx-hover-table", ui.hover);
  ui.hoverCells = [];
  for (let l = 0; l < d.L; l++) {
    const tr = elem("tr", "", table);
    elem("th", "", tr, `L${d.info.moe_layers[l]}`);
    for (let s = 0; s < d.K; s++) {
      const td = elem("td", "", tr), sw = elem("span", "cl-rx-swatch", td), txt = elem("span", "", td, "");
      ui.hoverCells.push({ td, sw, text: txt.appendChild(document.createTextNode("")), expert: -1 });
    }
  }
  ui.selCell = null;                                     // the cell outlined: the grid's layer and slot
  ui.shared = elem("div", "cl-rx-shared", ui.hover,
    d.info.n_shared_experts ? `+ ${d.info.n_shared_experts} shared expert(s), always on, in every MoE layer` : "no shared expert");
}

// ---------------------------------------------------------------- view state

function initialState(model, d) {
  const w = model.get("window") || [];
  return { start: w.length === 2 ? w[0] : 0, end: w.length === 2 ? w[1] : Math.max(d.T, 1),
           layer: model.get("layer"), slot: Math.min(model.get("slot"), d.K - 1),
           segment: model.get("segment") || "", brush: validBrush(model.get("brush")),
           hover: model.get("hover"), hoverRow: -1, drag: null,
           panel: model.get("panel") || "load", expert: model.get("expert") };
}

function validBrush(b) { return Array.isArray(b) && b.length === 2 && b[1] > b[0] ? [b[0], b[1]] : null; }

function clampWindow(st, d) {
  const span = Math.min(Math.max(st.end - st.start, Math.min(MIN_SPAN, d.T || 1)), Math.max(d.T, 1));
  st.start = Math.max(0, Math.min(st.start, d.T - span));
  st.end = st.start + span;
}

function push(model, changes) {
  // view state -> Python (fire and forget: nothing in the browser waits for the kernel)
  for (const [k, v] of Object.entries(changes)) model.set(k, v);
  model.save_changes();
}

function filterMask(d, segment) {
  // 1 for tokens of the filtered segment kind (all tokens when no filter)
  const m = new Uint8Array(d.T);
  const want = d.info.segment_kinds.indexOf(segment);
  for (let t = 0; t < d.T; t++) m[t] = !segment || d.kinds[t] === want ? 1 : 0;
  return m;
}

// ---------------------------------------------------------------- the grid

function columns(st, cols) {
  // token range [a[x], b[x]) each pixel column covers; at least one token, so zoomed in a token spans columns
  const a = new Int32Array(cols), b = new Int32Array(cols), tpp = (st.end - st.start) / cols;
  for (let x = 0; x < cols; x++) {
    a[x] = Math.floor(st.start + x * tpp);
    b[x] = Math.max(a[x] + 1, Math.floor(st.start + (x + 1) * tpp));
  }
  return { a, b, tpp };
}

function columnShade(d, mask, c) {
  // per column: the fraction of its tokens in the segment filter (layer-independent, computed once per redraw)
  const f = new Float32Array(c.a.length);
  for (let x = 0; x < f.length; x++) {
    let n = 0;
    for (let t = c.a[x]; t < c.b[x]; t++) n += mask[t];
    f[x] = 0.18 + 0.82 * (n / (c.b[x] - c.a[x]));
  }
  return f;
}

function modeExpert(row, rec, a, b, counts) {
  // the most common expert of recorded tokens a..b-1 (-1: none recorded); counts is all zeros on entry and exit
  let best = 0, which = -1;
  for (let t = a; t < b; t++) {
    if (!rec[t]) continue;
    const c = ++counts[row[t]];
    if (c > best) { best = c; which = row[t]; }
  }
  for (let t = a; t < b; t++) counts[row[t]] = 0;
  return which;
}

function gridPixels(d, st, c, shade, pal) {
  // one pixel per (column, layer): the expert of the chosen slot, dimmed (toward white) outside the segment filter
  const cols = c.a.length, img = new ImageData(cols, d.L + 1), px = new Uint32Array(img.data.buffer);
  const counts = new Uint32Array(d.E);
  for (let l = 0; l < d.L; l++) {
    const row = d.experts.subarray((l * d.K + st.slot) * d.T, (l * d.K + st.slot + 1) * d.T);
    for (let x = 0; x < cols; x++) {
      const a = c.a[x], e = c.b[x] - a === 1 ? (d.recorded[a] ? row[a] : -1) : modeExpert(row, d.recorded, a, c.b[x], counts);
      px[(l + 1) * cols + x] = rgba(e < 0 ? UNRECORDED : pal[e], shade[x]);
    }
  }
  for (let x = 0; x < cols; x++) {                         // row 0: the segment kind of each column's first token
    const k = d.kinds[c.a[x]];
    px[x] = k === NO_SEGMENT ? 0 : rgba(d.kindColors[k], 1);
  }
  return img;
}

function rgba([r, g, b], f) {
  // ImageData's RGBA bytes as one little-endian uint32, faded toward white by 1 - f (no allocation: called per pixel)
  const w = 255 * (1 - f);
  return (0xff000000 | ((b * f + w) << 16) | ((g * f + w) << 8) | (r * f + w)) >>> 0;
}

function gridImage(v, cols) {
  // the grid's pixels depend on the window, the slot, the filter and the width only: hovering, brushing or
  // picking a layer redraws from this cache instead of recounting 32k x 23 decisions
  const { d, st } = v, key = [st.start, st.end, st.slot, st.segment, cols].join();
  if (v.gridCache && v.gridCache.key === key) return v.gridCache;
  const c = columns(st, cols), off = new OffscreenCanvas(cols, d.L + 1);
  off.getContext("2d").putImageData(gridPixels(d, st, c, columnShade(d, v.mask, c), v.pal), 0, 0);
  v.gridCache = { key, off, c };
  return v.gridCache;
}

function drawGrid(ctx, v) {
  const { d, ui, geo } = v, cols = Math.max(1, Math.round(geo.plotW * geo.dpr)), g = gridImage(v, cols);
  const x0 = GRID_LEFT * geo.dpr;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, ui.grid.width, ui.grid.height);
  ctx.imageSmoothingEnabled = false;                       // crisp cells: each pixel is one decision
  ctx.drawImage(g.off, 0, 0, cols, 1, x0, 2 * geo.dpr, cols, (geo.top - 7) * geo.dpr);           // the segment band
  ctx.drawImage(g.off, 0, 1, cols, d.L, x0, geo.top * geo.dpr, cols, d.L * geo.rowH * geo.dpr);  // the grid
  ctx.setTransform(geo.dpr, 0, 0, geo.dpr, 0, 0);
  return g.c;
}

function tokenX(st, geo, t) { return GRID_LEFT + ((t - st.start) / (st.end - st.start)) * geo.plotW; }

function drawOverlays(ctx, d, st, geo) {
  const y0 = geo.top, h = d.L * geo.rowH, span = st.end - st.start;
  ctx.fillStyle = "#333"; ctx.font = "10px sans-serif"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
  const every = Math.ceil(11 / geo.rowH);                 // label as many layers as fit
  for (let l = 0; l < d.L; l += every) ctx.fillText(`L${d.info.moe_layers[l]}`, GRID_LEFT - 4, y0 + (l + 0.5) * geo.rowH);
  ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
  ctx.strokeRect(GRID_LEFT, y0 + st.layer * geo.rowH, geo.plotW, geo.rowH);   // the selected layer
  if (geo.plotW / span >= 6) {                            // zoomed in: token borders
    ctx.strokeStyle = "rgba(255,255,255,0.8)"; ctx.lineWidth = 1; ctx.beginPath();
    for (let t = Math.ceil(st.start); t <= st.end; t++) { const x = tokenX(st, geo, t); ctx.moveTo(x, y0); ctx.lineTo(x, y0 + h); }
    ctx.stroke();
  }
  if (st.brush) {
    const a = Math.max(GRID_LEFT, tokenX(st, geo, st.brush[0])), b = Math.min(GRID_LEFT + geo.plotW, tokenX(st, geo, st.brush[1]));
    if (b > a) {                                          // a tint, an outline, and a bar in the gap above the grid
      ctx.fillStyle = "rgba(30,110,230,0.22)"; ctx.fillRect(a, y0, b - a, h);
      ctx.strokeStyle = "#0b4fc4"; ctx.lineWidth = 2; ctx.strokeRect(a, y0, b - a, h);
      ctx.fillStyle = "#0b4fc4"; ctx.fillRect(a, y0 - 4, b - a, 3);
    }
  }
  if (st.hover >= st.start - 1 && st.hover < st.end && st.hover >= 0) {
    const a = tokenX(st, geo, st.hover), w = Math.max(1.5, geo.plotW / span);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.strokeRect(a, y0 - 1, w, h + 2);
  }
  drawAxis(ctx, st, geo, y0 + h);
}

function drawAxis(ctx, st, geo, y) {
  ctx.fillStyle = "#555"; ctx.font = "10px sans-serif"; ctx.textBaseline = "top";
  const span = st.end - st.start, step = niceStep(span / 8);
  for (let t = Math.ceil(st.start / step) * step; t <= st.end; t += step) {
    const x = tokenX(st, geo, t);
    ctx.textAlign = x < GRID_LEFT + 20 ? "left" : x > GRID_LEFT + geo.plotW - 20 ? "right" : "center";
    ctx.fillRect(x, y, 1, 3); ctx.fillText(String(t), x, y + 4);
  }
}

function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(Math.max(1, x)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= x) || 10 * p;
}

// ---------------------------------------------------------------- the text strip (visible tokens only)

function showable(s) { return s.replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅"; }

function textWindow(d, st, capacity) {
  // the visible tokens when they fit; otherwise a readable run around the hovered token (or the view's start)
  const a = Math.max(0, Math.floor(st.start)), b = Math.min(d.T, Math.ceil(st.end));
  if (b - a <= capacity) return [a, b];
  const c = st.hover >= a && st.hover < b ? st.hover : a;
  // the hovered token on the first line: only ~100 tokens fit the strip's lines, far fewer than `capacity`, so
  // the start is never pulled back toward the view's end (that hid the hovered token near the end)
  const s = Math.max(a, c - 15);
  return [s, Math.min(b, s + capacity)];
}

function textCache(d, pal) {
  // the text strip follows the hovered token, so it is redrawn on every hover: each token's shown text and
  // width are kept once measured (the strip's font never changes), and the box colours are made once
  const shades = (f) => [...pal.map((c) => css(fade(c, f))), css(fade(UNRECORDED, f))];   // [E] = unrecorded
  return { text: new Array(d.T), width: new Float32Array(d.T), bright: shades(0.55), dim: shades(0.15) };
}

function tokenBox(ctx, d, cache, t) {
  // the width of token t's box in the strip (its shown text is then cache.text[t])
  if (!cache.width[t]) {
    cache.text[t] = showable(tokenText(d, t));
    cache.width[t] = ctx.measureText(cache.text[t]).width + 4;
  }
  return cache.width[t];
}

function drawText(ctx, v) {
  const { d, st, ui, geo, mask, textCache: cache } = v;
  ctx.setTransform(geo.dpr, 0, 0, geo.dpr, 0, 0);
  ctx.clearRect(0, 0, geo.width, TEXT_LINE * TEXT_LINES + 4);
  ctx.font = "12px ui-monospace, monospace"; ctx.textBaseline = "middle"; ctx.textAlign = "left";
  const [a, b] = textWindow(d, st, 400);
  const boxes = [];
  let x = 2, line = 0;
  for (let t = a; t < b && line < TEXT_LINES; t++) {
    const w = tokenBox(ctx, d, cache, t), s = cache.text[t];
    if (x + w > geo.width - 2 && x > 2) { line++; x = 2; if (line >= TEXT_LINES) break; }
    const e = d.recorded[t] ? at(d, d.experts, st.layer, st.slot, t) : d.E, y = line * TEXT_LINE + 2;
    ctx.fillStyle = (mask[t] ? cache.bright : cache.dim)[e];
    ctx.fillRect(x, y, w - 1, TEXT_LINE - 2);
    if (t === st.hover) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.strokeRect(x, y, w - 1, TEXT_LINE - 2); }
    ctx.fillStyle = mask[t] ? "#111" : "#999";
    ctx.fillText(s, x + 2, y + TEXT_LINE / 2 - 1);
    boxes.push([x, y, w, t]);
    x += w;
  }
  ui.textBoxes = boxes;
  const last = boxes.length ? boxes[boxes.length - 1][3] + 1 : a;
  ui.caption.textContent = `text: tokens ${a}–${last} coloured by their expert in layer ${d.info.moe_layers[st.layer]}` +
    ` (${st.slot === 0 ? "top-1" : "slot #" + (st.slot + 1)}) · view ${Math.floor(st.start)}–${Math.ceil(st.end)}` +
    (st.brush ? ` · brush ${st.brush[0]}–${st.brush[1]}` : "") + " · wheel: zoom, drag: pan, shift-drag: brush";
}

// ---------------------------------------------------------------- hover details

function fmt(x, n = 3) { return Number.isFinite(x) ? x.toFixed(n) : "–"; }

function hoverLabels(d, pal) {
  // every string a hover cell can show, made once: the expert ids, their swatch colours, and " w 0.12" /
  // " s 0.34" for each of the 256 uint8 codes of the weights and scores (a hover then formats no number)
  const q = d.info.quant;
  const codes = (plane, p, tag) => (plane ? Array.from({ length: 256 }, (_, c) => ` ${tag} ${fmt(dequant(c, p), 2)}`) : null);
  return { ids: Array.from({ length: d.E }, (_, e) => String(e)), colors: pal.map(hex),
           w: codes(d.weights, q && q.weights, "w"), s: codes(d.scores, q && q.scores, "s") };
}

function setCell(cell, text, expert, colors) {
  // only what changed is written: each write invalidates style or layout for the next frame
  if (cell.text.data !== text) cell.text.data = text;
  if (cell.expert !== expert) {
    cell.expert = expert;
    cell.sw.style.backgroundColor = expert < 0 ? "transparent" : colors[expert];   // not the `background` shorthand: half the cost
  }
}

function drawHover(ui, d, st, labels) {
  // the hovered token's routing in every layer and slot. Its entries in a [L][K][T] plane are T apart, so one
  // index walks them all: no per-cell offset arithmetic, no number formatting (see hoverLabels)
  const t = st.hover;
  if (t < 0 || t >= d.T) { ui.hoverHead.textContent = "hover a token"; return; }
  const k = d.kinds[t], kind = k === NO_SEGMENT ? "no segment" : d.info.segment_kinds[k];
  ui.hoverHead.textContent = `token ${t} ${JSON.stringify(tokenText(d, t))} · ${kind} · logprob ${fmt(d.logprobs[t])}` +
    ` · entropy ${fmt(d.entropies[t])}` + (d.recorded[t] ? "" : " · not recorded (never fed back through the model)");
  const { ids, colors, w, s: sc } = labels, cells = ui.hoverCells, n = d.L * d.K;
  if (!d.recorded[t]) { for (let i = 0; i < n; i++) setCell(cells[i], "", -1, colors); return; }   // the outline stays
  for (let i = 0, j = t; i < n; i++, j += d.T) {           // i = l * K + s, j: that plane row's entry for t
    const e = d.experts[j];
    setCell(cells[i], ids[e] + (w ? w[d.weights[j]] : "") + (sc ? sc[d.scores[j]] : ""), e, colors);
  }
  outline(ui, cells[st.layer * d.K + st.slot]);
}

function outline(ui, cell) {
  // the cell of the grid's layer and slot is outlined; moving the outline touches two cells, not all of them
  if (cell === ui.selCell) return;
  if (ui.selCell) ui.selCell.td.className = "";
  cell.td.className = "cl-rx-sel";
  ui.selCell = cell;
}

// ---------------------------------------------------------------- the side panel
//
// Five panels share one canvas and one readout: the layers x experts load, the routing entropy, co-activation
// within the grid's layer, transitions from it to the next MoE layer, and an expert's vocabulary. Each counts
// over the same selection (the brush, else the whole run, and the segment filter) and caches its numbers under
// a key of what they depend on, so hovering or redrawing the grid recounts nothing. The numbers are kept in
// ui.panelData: the readout (and the browser tests) read them there.

const PANELS = [["load", "expert load"], ["entropy", "routing entropy"], ["coactivation", "co-activation"],
                ["transitions", "layer transitions"], ["vocabulary", "expert vocabulary"]];
const VOCAB_ROWS = 20;
const PANEL_W = 384;                                   // css px: the panel canvas' width budget

function selection(v) {
  // recorded tokens in the brush (whole run when none) and in the segment filter, cached per (brush, filter)
  const { d, st, mask } = v, key = `${st.brush}|${st.segment}`;
  if (v.sel && v.sel.key === key) return v.sel.tokens;
  const [a, b] = st.brush ? st.brush : [0, d.T], out = [];
  for (let t = Math.max(0, a); t < Math.min(d.T, b); t++) if (d.recorded[t] && mask[t]) out.push(t);
  v.sel = { key, tokens: Int32Array.from(out) };
  return v.sel.tokens;
}

function cached(v, name, key, compute) {
  // one cache entry per panel: recomputed when its key (what the numbers depend on) changes
  v.cache = v.cache || {};
  if (!v.cache[name] || v.cache[name].key !== key) v.cache[name] = { key, value: compute() };
  return v.cache[name].value;
}

function where(st) {
  return (st.brush ? `tokens ${st.brush[0]}–${st.brush[1]}` : "whole run") + (st.segment ? `, ${st.segment} only` : "");
}

function countLoad(d, tokens) {
  // [L * E] counts over every sent slot (all k with detail "full", the top-1 with "top1")
  const load = new Uint32Array(d.L * d.E);
  for (let l = 0; l < d.L; l++)
    for (let s = 0; s < d.K; s++) {
      const row = d.experts.subarray((l * d.K + s) * d.T), base = l * d.E;
      for (let i = 0; i < tokens.length; i++) load[base + row[tokens[i]]]++;
    }
  return load;
}

function balance(load, l, E) {
  // load-balance figures of one layer: max/mean, coefficient of variation, unused experts
  let sum = 0, max = 0, unused = 0;
  for (let e = 0; e < E; e++) { const v = load[l * E + e]; sum += v; max = Math.max(max, v); unused += v === 0; }
  const mean = sum / E;
  let v2 = 0;
  for (let e = 0; e < E; e++) v2 += (load[l * E + e] - mean) ** 2;
  return { maxOverMean: mean ? max / mean : NaN, cv: mean ? Math.sqrt(v2 / E) / mean : NaN, unused, total: sum };
}

function cellSize(d, rows) {
  return { cw: Math.max(2, Math.min(16, Math.floor(PANEL_W / d.E))), ch: Math.max(4, Math.min(16, Math.floor(150 / rows))) };
}

function drawLoad(v) {
  const { ui, d, st } = v, tokens = selection(v);
  const load = cached(v, "load", v.sel.key, () => countLoad(d, tokens));
  const { cw, ch } = cellSize(d, d.L), cvs = ui.load;
  cvs.width = d.E * cw; cvs.height = d.L * ch;
  const ctx = cvs.getContext("2d");
  for (let l = 0; l < d.L; l++) {
    let max = 1;                                           // each layer on its own scale: loads differ by layer
    for (let e = 0; e < d.E; e++) max = Math.max(max, load[l * d.E + e]);
    for (let e = 0; e < d.E; e++) { ctx.fillStyle = css(heat(load[l * d.E + e] / max)); ctx.fillRect(e * cw, l * ch, cw, ch); }
  }
  ctx.strokeStyle = "#e8710a"; ctx.lineWidth = 2; ctx.strokeRect(1, st.layer * ch + 1, cvs.width - 2, ch - 2);
  if (st.expert >= 0) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.strokeRect(st.expert * cw + 0.5, 0.5, cw - 1, cvs.height - 1); }
  ui.loadTitle.textContent = `expert load (${d.K === 1 ? "top-1" : `all ${d.K} slots`}), ${where(st)}: ${tokens.length.toLocaleString()} tokens`;
  const b = balance(load, st.layer, d.E);
  ui.balance.textContent = `layer ${d.info.moe_layers[st.layer]}: max/mean ${fmt(b.maxOverMean, 2)} · CV ${fmt(b.cv, 2)} · ` +
    `unused experts ${b.unused} of ${d.E} · click a cell to pick its expert`;
  ui.panelData = { panel: "load", load, cw, ch, rows: d.L, cols: d.E, ...b };
}

function paintCells(cvs, R, C, cw, ch, colour) {
  // an R x C matrix, one ImageData pixel per cell scaled up to cw x ch: one draw call whatever the size
  const img = new ImageData(C, R), px = new Uint32Array(img.data.buffer);
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) px[i * C + j] = colour(i, j);
  const off = new OffscreenCanvas(C, R);
  off.getContext("2d").putImageData(img, 0, 0);
  cvs.width = C * cw; cvs.height = R * ch;
  const ctx = cvs.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, C * cw, R * ch);
  return ctx;
}

function emptyPanel(v, title, why) {
  v.ui.loadTitle.textContent = title;
  v.ui.balance.textContent = why;
  v.ui.panelData = { panel: v.st.panel, empty: why };
}
// ---- routing entropy: the mean per layer over the selection, and along the view for the grid's layer

const NO_ENTROPY = 255, STRIP_H = 60;

function entropyByLayer(d, tokens) {
  // [L] mean routing entropy (nats) of the selected tokens, from the 16-level codes (NaN: none recorded)
  const out = new Float64Array(d.L), scale = d.info.quant.rentropy.scale;
  for (let l = 0; l < d.L; l++) {
    const row = d.rentropy.subarray(l * d.T, (l + 1) * d.T);
    let sum = 0, n = 0;
    for (let i = 0; i < tokens.length; i++) { const q = row[tokens[i]]; if (q !== NO_ENTROPY) { sum += q; n++; } }
    out[l] = n ? (sum / n) * scale : NaN;
  }
  return out;
}

function entropyColumns(v, W) {
  // per panel column over the view window: the mean entropy of the grid's layer, and the first token's kind
  const { d, st } = v, row = d.rentropy.subarray(st.layer * d.T, (st.layer + 1) * d.T), scale = d.info.quant.rentropy.scale;
  const c = columns(st, W), mean = new Float32Array(W);
  for (let x = 0; x < W; x++) {
    let sum = 0, n = 0;
    for (let t = c.a[x]; t < c.b[x]; t++) if (row[t] !== NO_ENTROPY && v.mask[t]) { sum += row[t]; n++; }
    mean[x] = n ? (sum / n) * scale : NaN;
  }
  return { c, mean };
}

function floorOf(values, top) {
  // the bottom of an entropy scale: under the smallest finite value by half the values' spread (0 at the least)
  let lo = Infinity, hi = -Infinity;
  for (const x of values) if (Number.isFinite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  if (!Number.isFinite(lo)) return 0;
  return Math.max(0, Math.min(lo - 0.5 * (hi - lo), top - 0.05 * top, lo - 0.01));
}

function drawEntropy(v) {
  const { ui, d, st } = v;
  if (!d.rentropy) return emptyPanel(v, "routing entropy", "this trace has no mixing weights, so no routing entropy");
  const tokens = selection(v), lnk = Math.log(d.info.top_k), W = PANEL_W;
  const byLayer = cached(v, "entropy", v.sel.key, () => entropyByLayer(d, tokens));
  const along = cached(v, "entropyAlong", [st.start, st.end, st.layer, st.segment].join(), () => entropyColumns(v, W));
  const { ch } = cellSize(d, d.L), barsH = d.L * ch, cvs = ui.load;
  cvs.width = W; cvs.height = barsH + 8 + STRIP_H;
  const ctx = cvs.getContext("2d");
  // both scales end at ln k and start a little under the lowest value shown: a router whose weights are nearly
  // even everywhere still shows where it is more decided
  const bl = floorOf(byLayer, lnk), sl = floorOf(along.mean, lnk);
  for (let l = 0; l < d.L; l++) {
    const f = (byLayer[l] - bl) / (lnk - bl);
    ctx.fillStyle = l === st.layer ? "#e8710a" : "#5c6bc0";
    if (Number.isFinite(f)) ctx.fillRect(0, l * ch + 1, Math.max(1, f * W), ch - 2);
  }
  const y0 = barsH + 8;
  for (let x = 0; x < W; x++) {                            // the strip: coloured by the segment of the column
    const h = Math.max(0, (along.mean[x] - sl) / (lnk - sl)), k = d.kinds[along.c.a[x]];
    if (!Number.isFinite(h)) continue;
    ctx.fillStyle = k === NO_SEGMENT ? "#888" : css(d.kindColors[k]);
    ctx.fillRect(x, y0 + STRIP_H * (1 - h), 1, Math.max(1, STRIP_H * h));
  }
  ctx.strokeStyle = "#ccc"; ctx.strokeRect(0.5, y0 + 0.5, W - 1, STRIP_H - 1);
  ui.loadTitle.textContent = `routing entropy (nats, of the k mixing weights; max ln ${d.info.top_k} = ${fmt(lnk, 2)}), ${where(st)}: ` +
    `${tokens.length.toLocaleString()} tokens`;
  ui.balance.textContent = `bars: mean per MoE layer, ${fmt(bl, 2)}–${fmt(lnk, 2)} · strip: layer ${d.info.moe_layers[st.layer]} ` +
    `along the view ${Math.floor(st.start)}–${Math.ceil(st.end)}, ${fmt(sl, 2)}–${fmt(lnk, 2)}, coloured by segment`;
  ui.panelData = { panel: "entropy", byLayer, along, ch, barsH, y0, W, n: tokens.length };
}

// ---- co-activation within the grid's layer, transitions to the next MoE layer

function countPairs(d, tokens, l) {
  // [E * E]: tokens that chose experts i and j together in layer l (symmetric); the diagonal is the load
  const c = new Uint32Array(d.E * d.E), ids = new Int32Array(d.K);
  for (let i = 0; i < tokens.length; i++) {
    for (let s = 0; s < d.K; s++) ids[s] = d.experts[(l * d.K + s) * d.T + tokens[i]];
    for (let a = 0; a < d.K; a++) {
      c[ids[a] * d.E + ids[a]]++;
      for (let b = 0; b < d.K; b++) if (b !== a) c[ids[a] * d.E + ids[b]]++;
    }
  }
  return c;
}

function countTransitions(d, tokens, l, s) {
  // [E * E]: tokens whose expert in slot s of layer l (row) was followed by expert j in slot s of layer l + 1
  const c = new Uint32Array(d.E * d.E), from = (l * d.K + s) * d.T, to = ((l + 1) * d.K + s) * d.T;
  for (let i = 0; i < tokens.length; i++) c[d.experts[from + tokens[i]] * d.E + d.experts[to + tokens[i]]]++;
  return c;
}

function drawMatrix(v, m, rowNorm) {
  // an E x E count matrix: off-diagonal cells on a square-root scale (of the row's maximum when rowNorm),
  // the diagonal of a co-activation matrix (each expert's own load) in grey so it does not swamp the pairs
  const { d, st } = v, E = d.E, max = new Float64Array(E).fill(1);
  let all = 1;
  for (let i = 0; i < E; i++) for (let j = 0; j < E; j++) if (rowNorm || i !== j) { max[i] = Math.max(max[i], m[i * E + j]); all = Math.max(all, m[i * E + j]); }
  const { cw } = cellSize(d, E);
  paintCells(v.ui.load, E, E, cw, cw, (i, j) =>
    !rowNorm && i === j ? rgba([200, 200, 200], m[i * E + j] ? 1 : 0.3) : rgba(heat(Math.sqrt(m[i * E + j] / (rowNorm ? max[i] : all))), 1));
  if (st.expert >= 0) {
    const ctx = v.ui.load.getContext("2d");
    ctx.strokeStyle = "#e8710a"; ctx.lineWidth = 1; ctx.strokeRect(0.5, st.expert * cw + 0.5, E * cw - 1, cw - 1);
  }
  return cw;
}

function drawCoactivation(v) {
  const { d, st, ui } = v, name = d.info.moe_layers[st.layer];
  if (d.K < 2) return emptyPanel(v, "co-activation", d.info.pending ? "co-activation: waiting for all k slots from the kernel" :
                                 "co-activation needs all k slots: RoutingExplorer(trace, detail=\"full\")");
  const tokens = selection(v), m = cached(v, "coactivation", `${v.sel.key}|${st.layer}`, () => countPairs(d, tokens, st.layer));
  const cw = drawMatrix(v, m, false);
  ui.loadTitle.textContent = `co-activation in layer ${name}, ${where(st)}: ${tokens.length.toLocaleString()} tokens`;
  ui.balance.textContent = "cell (i, j): tokens that chose experts i and j together · grey diagonal: an expert's load · click a row to pick its expert";
  ui.panelData = { panel: "coactivation", matrix: m, cw, ch: cw, rows: d.E, cols: d.E, layer: st.layer };
}

function drawTransitions(v) {
  const { d, st, ui } = v, ls = d.info.moe_layers;
  if (st.layer >= d.L - 1) return emptyPanel(v, "layer transitions", `layer ${ls[st.layer]} is the last MoE layer: pick an earlier layer`);
  const tokens = selection(v);
  const m = cached(v, "transitions", `${v.sel.key}|${st.layer}|${st.slot}`, () => countTransitions(d, tokens, st.layer, st.slot));
  const cw = drawMatrix(v, m, true);
  ui.loadTitle.textContent = `transitions layer ${ls[st.layer]} → ${ls[st.layer + 1]} (${st.slot === 0 ? "top-1" : "slot #" + (st.slot + 1)}), ` +
    `${where(st)}: ${tokens.length.toLocaleString()} tokens`;
  ui.balance.textContent = `row i: where the tokens of expert i in layer ${ls[st.layer]} went next (each row on its own scale)`;
  ui.panelData = { panel: "transitions", matrix: m, cw, ch: cw, rows: d.E, cols: d.E, layer: st.layer, slot: st.slot };
}

// ---- an expert's vocabulary: the token strings routed to it most, against their frequency

function vocabularyTable(ui, parent) {
  // a fixed table of VOCAB_ROWS rows, filled in place: no node per token
  ui.vocab = elem("table", "cl-rx-vocab", parent);
  const head = elem("tr", "", ui.vocab);
  for (const h of ["token", "count", "frequency", "share"]) elem("th", "", head, h);
  ui.vocabRows = Array.from({ length: VOCAB_ROWS }, () => {
    const tr = elem("tr", "", ui.vocab);
    return Array.from({ length: 4 }, () => elem("td", "", tr).appendChild(document.createTextNode("")));
  });
  ui.vocab.style.display = "none";
}

function countVocabulary(v, tokens, l, e) {
  // [{token, count, frequency, share}] most first (ties in string order), as views.expert_vocabulary does
  const { d } = v, by = new Map();
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i], s = tokenText(d, t);
    let hit = 0;
    for (let k = 0; k < d.K; k++) hit |= d.experts[(l * d.K + k) * d.T + t] === e;
    const c = by.get(s) || by.set(s, [0, 0]).get(s);
    c[0] += hit; c[1]++;
  }
  const rows = [];
  for (const [token, [count, frequency]] of by) if (count) rows.push({ token, count, frequency, share: count / frequency });
  rows.sort((a, b) => b.count - a.count || (a.token < b.token ? -1 : a.token > b.token ? 1 : 0));
  return rows.slice(0, VOCAB_ROWS);
}

function busiest(v, l) {
  // the expert with the most load in layer l over the selection (the vocabulary's default)
  const load = cached(v, "load", selectionKey(v), () => countLoad(v.d, selection(v)));
  let best = 0;
  for (let e = 1; e < v.d.E; e++) if (load[l * v.d.E + e] > load[l * v.d.E + best]) best = e;
  return best;
}

function selectionKey(v) { selection(v); return v.sel.key; }

function drawVocabulary(v) {
  const { d, st, ui } = v, tokens = selection(v), e = st.expert >= 0 ? st.expert : busiest(v, st.layer);
  const rows = cached(v, "vocabulary", `${v.sel.key}|${st.layer}|${e}`, () => countVocabulary(v, tokens, st.layer, e));
  ui.vocabRows.forEach((cells, i) => {
    const r = rows[i];
    const text = r ? [showable(r.token), r.count.toLocaleString(), r.frequency.toLocaleString(), fmt(r.share, 2)] : ["", "", "", ""];
    cells.forEach((c, j) => { if (c.data !== text[j]) c.data = text[j]; });
  });
  ui.loadTitle.textContent = `expert ${e}${st.expert >= 0 ? "" : " (the busiest; click a load cell to pick one)"} in layer ` +
    `${d.info.moe_layers[st.layer]} (${d.K === 1 ? "top-1 only" : `any of ${d.K} slots`}), ${where(st)}`;
  ui.balance.textContent = "count: tokens of that text routed here · frequency: tokens of that text selected · share: count / frequency";
  ui.panelData = { panel: "vocabulary", expert: e, rows };
}

const DRAW_PANEL = { load: drawLoad, entropy: drawEntropy, coactivation: drawCoactivation, transitions: drawTransitions,
                     vocabulary: drawVocabulary };

// ---------------------------------------------------------------- geometry and the redraw

function geometry(el, ui, d) {
  const width = Math.max(320, Math.floor(el.clientWidth || 900)), dpr = window.devicePixelRatio || 1;
  const rowH = Math.max(6, Math.min(24, Math.floor(260 / d.L))), top = 14;
  const height = top + d.L * rowH + 16;
  for (const [c, h] of [[ui.grid, height], [ui.text, TEXT_LINE * TEXT_LINES + 4]]) {
    if (c.width !== Math.round(width * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(width * dpr); c.height = Math.round(h * dpr);
      c.style.width = width + "px"; c.style.height = h + "px";
    }
  }
  return { width, dpr, rowH, top, height, plotW: width - GRID_LEFT - 4 };
}

function makeView(el, model, d, prev) {
  const ui = skeleton(el, d), pal = palette(d.E);
  // the trait, not prev.slot: a slot asked for before the full planes came was clamped to 0 meanwhile
  const st = prev ? { ...prev, drag: null, slot: Math.min(model.get("slot"), d.K - 1) } : initialState(model, d);
  const v = { el, model, d, ui, pal, st, mask: filterMask(d, st.segment), geo: null, geoStale: true, cols: null, frame: 0,
              labels: hoverLabels(d, pal), textCache: textCache(d, pal) };
  clampWindow(st, d);
  // the traits may have changed while the planes were inflating: the controls start from them
  ui.layer.value = String(st.layer); ui.slot.value = String(st.slot); ui.segment.value = st.segment;
  if (!DRAW_PANEL[st.panel]) st.panel = "load";
  ui.panel.value = st.panel;
  v.redraw = () => redraw(v);
  v.schedule = () => { if (!v.frame) v.frame = requestAnimationFrame(() => { v.frame = 0; v.redraw(); }); };
  return v;
}

function redraw(v) {
  // everything but the load heatmap, which only changes with the brush, the segment filter or the layer.
  // The geometry is measured again only when marked stale (a resize, the pointer entering the grid): reading
  // the element's width forces a layout, which after a hover (the panel's new text) costs more than the drawing
  const t0 = performance.now(), { d, st, ui } = v;
  if (v.geoStale || !v.geo) { v.geo = geometry(v.el, ui, d); v.geoStale = false; }
  const ctx = ui.grid.getContext("2d");
  v.cols = drawGrid(ctx, v);
  drawOverlays(ctx, d, st, v.geo);
  drawText(ui.text.getContext("2d"), v);
  if (st.panel === "entropy" && v.cache && v.cache.entropyAlong &&
      v.cache.entropyAlong.key !== [st.start, st.end, st.layer, st.segment].join()) refreshLoad(v);   // the strip follows the view
  v.el.dataset.redrawMs = (performance.now() - t0).toFixed(2);
  v.el.dataset.ready = "1";
}

function refreshLoad(v) {
  // the side panel: redrawn when the selection, the layer, the slot, the expert or the panel changes
  const t0 = performance.now();
  DRAW_PANEL[v.st.panel](v);
  const table = v.st.panel === "vocabulary", blank = table || !!v.ui.panelData.empty;
  v.ui.vocab.style.display = table ? "" : "none";
  v.ui.load.style.display = blank ? "none" : "";
  v.ui.loadHover.style.display = blank ? "none" : "";
  v.el.dataset.loadMs = (performance.now() - t0).toFixed(2);
  v.el.dataset.panel = v.st.panel;
  showLoadCell(v);                                          // the readout follows new counts (brush, filter)
}

// ---------------------------------------------------------------- interaction

function tokenAt(v, clientX) {
  const r = v.ui.grid.getBoundingClientRect(), x = clientX - r.left - GRID_LEFT;
  const t = Math.floor(v.st.start + (x / v.geo.plotW) * (v.st.end - v.st.start));
  return Math.max(0, Math.min(v.d.T - 1, t));
}

function rowAt(v, clientY) {
  const r = v.ui.grid.getBoundingClientRect(), l = Math.floor((clientY - r.top - v.geo.top) / v.geo.rowH);
  return l >= 0 && l < v.d.L ? l : -1;
}

function showHover(v) {
  // the canvases (the hover box, and the text strip, which follows the hovered token) first, the panel's DOM
  // after: text drawn on a canvas in the page resolves the canvas's style, which after a DOM change forces a
  // style recalculation inside the handler (measured ~0.4 ms at 32k tokens, full) instead of once per frame
  v.redraw();
  drawHover(v.ui, v.d, v.st, v.labels);
}

function setHover(v, t) {
  if (t === v.st.hover) return;
  const t0 = performance.now();
  v.st.hover = t;
  showHover(v);
  v.el.dataset.hoverMs = (performance.now() - t0).toFixed(2);
  push(v.model, { hover: t });
}

function onWheel(v, ev) {
  ev.preventDefault();
  const { st, d } = v, r = v.ui.grid.getBoundingClientRect();
  const f = Math.max(0, Math.min(1, (ev.clientX - r.left - GRID_LEFT) / v.geo.plotW));
  const pivot = st.start + f * (st.end - st.start);
  const span = Math.max(Math.min(MIN_SPAN, d.T), Math.min(d.T, (st.end - st.start) * Math.exp(ev.deltaY * 0.0015)));
  st.start = pivot - f * span; st.end = st.start + span;
  clampWindow(st, d);
  v.schedule();
  syncWindowSoon(v);
}

function syncWindowSoon(v) {
  // the zoomed window goes to Python once the wheel or the drag settles, not on every event
  clearTimeout(v.windowTimer);
  v.windowTimer = setTimeout(() => push(v.model, { window: [Math.floor(v.st.start), Math.ceil(v.st.end)] }), 250);
}

function onDown(v, ev) {
  if (ev.button !== 0) return;
  const t = tokenAt(v, ev.clientX);
  v.st.drag = { x: ev.clientX, start: v.st.start, end: v.st.end, t, brush: ev.shiftKey, moved: false };
  ev.preventDefault();
}

function onGridMove(v, ev) {
  // hovering the grid (a drag is followed on the window instead, so it may leave the canvas)
  const r = v.ui.grid.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
  const inside = x >= GRID_LEFT && x < GRID_LEFT + v.geo.plotW && y >= v.geo.top && y < v.geo.top + v.d.L * v.geo.rowH;
  if (!v.st.drag && inside) setHover(v, tokenAt(v, ev.clientX));
}

function onMove(v, ev) {
  const g = v.st.drag;
  if (!g) return;
  g.moved = g.moved || Math.abs(ev.clientX - g.x) > 2;
  if (g.brush) {
    const t = tokenAt(v, ev.clientX);
    v.st.brush = [Math.min(g.t, t), Math.max(g.t, t) + 1];
  } else {
    const dt = ((ev.clientX - g.x) / v.geo.plotW) * (g.end - g.start);
    v.st.start = g.start - dt; v.st.end = g.end - dt;
    clampWindow(v.st, v.d);
  }
  v.schedule();
}

function onUp(v, ev) {
  const g = v.st.drag;
  if (!g) return;
  v.st.drag = null;
  if (g.brush) { refreshLoad(v); push(v.model, { brush: v.st.brush || [] }); }
  else if (g.moved) syncWindowSoon(v);
  else {                                                    // a click on a row selects that layer
    const l = rowAt(v, ev.clientY);
    if (l >= 0 && l !== v.st.layer) setLayer(v, l, true);
  }
}

function onLoadMove(v, ev) {
  // the panel position under the pointer (inside the canvas' border), remembered so the readout follows later counts
  const c = v.ui.load, r = c.getBoundingClientRect();
  v.ui.loadCell = { x: ev.clientX - r.left - c.clientLeft, y: ev.clientY - r.top - c.clientTop, panel: v.st.panel };
  showLoadCell(v);
}

function matrixCell(n, p) {
  // [row, column] of a cell panel under p, or null outside it
  const i = Math.floor(p.y / n.ch), j = Math.floor(p.x / n.cw);
  return i >= 0 && i < n.rows && j >= 0 && j < n.cols ? [i, j] : null;
}

function readout(v, n, p) {
  // the words for the panel position p, from the numbers the panel shows now
  const { d, st } = v, ls = d.info.moe_layers, E = d.E;
  if (n.panel === "entropy") {
    if (p.y < n.barsH) { const l = Math.floor(p.y / n.ch); return l < d.L ? `layer ${ls[l]}: mean routing entropy ${fmt(n.byLayer[l])} nats over ${n.n.toLocaleString()} tokens` : ""; }
    const x = Math.floor(p.x);
    if (p.y < n.y0 || x < 0 || x >= n.W) return "";
    return `tokens ${n.along.c.a[x]}–${n.along.c.b[x]}, layer ${ls[st.layer]}: mean routing entropy ${fmt(n.along.mean[x])} nats`;
  }
  const cell = n.rows ? matrixCell(n, p) : null;
  if (!cell) return "";
  const [i, j] = cell, m = n.panel === "load" ? n.load : n.matrix, x = m[i * n.cols + j].toLocaleString();
  if (n.panel === "load") return `layer ${ls[i]}, expert ${j}: chosen ${x} times`;
  if (n.panel === "coactivation")
    return i === j ? `expert ${i}: chosen by ${x} tokens` : `experts ${i} and ${j} together: ${x} tokens (expert ${i} alone: ${m[i * E + i].toLocaleString()})`;
  let row = 0;
  for (let k = 0; k < E; k++) row += m[i * E + k];
  return `expert ${i} (layer ${ls[n.layer]}) → expert ${j} (layer ${ls[n.layer + 1]}): ${x} of ${row.toLocaleString()} tokens (${fmt(100 * m[i * E + j] / row, 1)} %)`;
}

function showLoadCell(v) {
  const p = v.ui.loadCell, n = v.ui.panelData;
  if (!p || !n || n.empty || p.panel !== n.panel) return;
  const text = readout(v, n, p);
  if (text) v.ui.loadHover.textContent = text;
}

function onLoadClick(v) {
  // a click picks an expert (the vocabulary's): a load cell's column (and its layer), a matrix cell's row
  const p = v.ui.loadCell, n = v.ui.panelData;
  const cell = p && n && n.rows && p.panel === n.panel ? matrixCell(n, p) : null;
  if (!cell) return;
  if (n.panel === "load") { if (cell[0] !== v.st.layer) setLayer(v, cell[0], true); setExpert(v, cell[1], true); }
  else setExpert(v, cell[0], true);
}

function onTextMove(v, ev) {
  const r = v.ui.text.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
  const hit = (v.ui.textBoxes || []).find(([bx, by, w]) => x >= bx && x < bx + w && y >= by && y < by + TEXT_LINE);
  if (hit) setHover(v, hit[3]);
}

// ---------------------------------------------------------------- controls <-> state <-> traits

function setLayer(v, l, sync) {
  v.st.layer = l; v.ui.layer.value = String(l);
  showHover(v); refreshLoad(v);
  if (sync) push(v.model, { layer: l });
}

function setSlot(v, s, sync) {
  v.st.slot = Math.max(0, Math.min(v.d.K - 1, s)); v.ui.slot.value = String(v.st.slot);
  showHover(v);
  if (v.st.panel === "transitions") refreshLoad(v);
  if (sync) push(v.model, { slot: v.st.slot });
}

function setSegment(v, k, sync) {
  v.st.segment = k || ""; v.ui.segment.value = v.st.segment;
  v.mask = filterMask(v.d, v.st.segment);
  refreshLoad(v); v.redraw();
  if (sync) push(v.model, { segment: v.st.segment });
}

function setPanel(v, p, sync) {
  v.st.panel = DRAW_PANEL[p] ? p : "load"; v.ui.panel.value = v.st.panel;
  v.ui.loadHover.textContent = "point at the panel for numbers";      // not the last panel's readout
  refreshLoad(v);
  if (sync) push(v.model, { panel: v.st.panel });
}

function setExpert(v, e, sync) {
  v.st.expert = e >= 0 && e < v.d.E ? e : -1;
  refreshLoad(v);
  if (sync) push(v.model, { expert: v.st.expert });
}

function setBrush(v, b, sync) {
  v.st.brush = validBrush(b);
  refreshLoad(v); v.redraw();
  if (sync) push(v.model, { brush: v.st.brush || [] });
}

function listen(v) {
  const { ui, model } = v, on = [], add = (t, ev, f, o) => { t.addEventListener(ev, f, o); on.push(() => t.removeEventListener(ev, f, o)); };
  add(ui.grid, "wheel", (e) => onWheel(v, e), { passive: false });
  add(ui.grid, "mousedown", (e) => onDown(v, e));
  add(ui.grid, "mousemove", (e) => onGridMove(v, e));
  add(window, "mousemove", (e) => onMove(v, e));
  add(window, "mouseup", (e) => onUp(v, e));
  add(ui.text, "mousemove", (e) => onTextMove(v, e));
  add(ui.load, "mousemove", (e) => onLoadMove(v, e));
  add(ui.load, "click", (e) => { onLoadMove(v, e); onLoadClick(v); });
  add(ui.panel, "change", () => setPanel(v, ui.panel.value, true));
  add(ui.layer, "change", () => setLayer(v, +ui.layer.value, true));
  add(ui.slot, "change", () => setSlot(v, +ui.slot.value, true));
  add(ui.segment, "change", () => setSegment(v, ui.segment.value, true));
  add(ui.reset, "click", () => { v.st.start = 0; v.st.end = v.d.T; clampWindow(v.st, v.d); v.redraw(); syncWindowSoon(v); });
  add(ui.clear, "click", () => setBrush(v, null, true));
  const traits = {
    "change:layer": () => setLayer(v, model.get("layer"), false),
    "change:slot": () => setSlot(v, model.get("slot"), false),
    "change:segment": () => setSegment(v, model.get("segment"), false),
    "change:panel": () => setPanel(v, model.get("panel"), false),
    "change:expert": () => setExpert(v, model.get("expert"), false),
    "change:brush": () => setBrush(v, model.get("brush"), false),
    "change:hover": () => { const t = model.get("hover"); if (t !== v.st.hover) { v.st.hover = t; showHover(v); } },
    "change:window": () => { const w = model.get("window"); if (w && w.length === 2) { v.st.start = w[0]; v.st.end = w[1]; clampWindow(v.st, v.d); v.redraw(); } },
  };
  for (const [ev, f] of Object.entries(traits)) { model.on(ev, f); on.push(() => model.off(ev, f)); }
  add(ui.grid, "mouseenter", () => { v.geoStale = true; });   // e.g. the page zoomed (devicePixelRatio) meanwhile
  const ro = new ResizeObserver(() => { v.geoStale = true; v.schedule(); });
  ro.observe(v.el); on.push(() => ro.disconnect());
  return () => on.forEach((f) => f());
}

async function mount(el, model, prev) {
  // (re)build the view from the traits; `prev`: the state of the view it replaces (the full planes arrived)
  const d = await decode(model);
  el.replaceChildren();
  if (!d.T) { el.textContent = "RoutingExplorer: this trace has no tokens"; el.dataset.ready = "1"; return { stop() {} }; }
  const v = makeView(el, model, d, prev);
  const stop = listen(v);
  refreshLoad(v);
  showHover(v);
  el.__routingExplorer = v;                                // for the browser tests: the view's state, read-only use
  if (d.info.pending) {
    // a progressive "full" view: the top-1 grid is up, now ask the kernel for every slot (a page without a
    // kernel has nothing to ask: the view stays at the top-1 level and says so in its title)
    el.dataset.pending = d.info.pending;
    try { model.send({ ask: d.info.pending }); } catch (e) { /* no kernel */ }
  } else delete el.dataset.pending;
  return { v, stop: () => { stop(); cancelAnimationFrame(v.frame); clearTimeout(v.windowTimer); } };
}

async function render({ model, el }) {
  let view = await mount(el, model, null), busy = Promise.resolve();
  // new planes (the rest of a progressive view, or a new trace): one rebuild at a time, each from the last state
  const onInfo = () => { busy = busy.then(async () => { const prev = view.v && view.v.st; view.stop(); view = await mount(el, model, prev); }); };
  model.on("change:info", onInfo);
  return () => { model.off("change:info", onInfo); view.stop(); };
}

export default { render };
