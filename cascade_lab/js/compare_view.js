// The CompareView's view (cascade_lab.compare, nbs/18_compare.ipynb): two runs' routing one above the other,
// aligned by token position, with the Jaccard of their expert sets in a strip between them. Everything is drawn
// on canvases from typed arrays, and every interaction (zoom, pan, hover, layer, jump to the divergence) is
// computed here, with no round trip to the kernel; the view state (layer, hover, window) is mirrored into the
// model's traits so Python can read and drive it.
//
// Plain ES module, no build step and no imports: anywidget loads this file as it is.
//
// Packed data (see `pack_pair` in compare.py): each run's top-1 (or all k) experts, layer-major [layer][slot][token]
// and deflated; per token its segment kind, recorded bit and text; and, over the common token prefix only, a code
// per (MoE layer, token) naming that row's Jaccard |A∩B| / |A∪B| (computed in Python from all k experts of both
// runs, so the strip is exact even when only the top-1 planes are sent), layer-major [layer][token].

const NO_SEGMENT = 255;
const UNRECORDED = [226, 226, 226];            // rows with no router decision (the last sampled token)
const MIN_SPAN = 4;                            // zoom stops at 4 tokens across the grids
const GRID_LEFT = 60;                          // room for the run's name (rotated) and the layer labels
const BAND_H = 5;                              // each run's segment band (prompt, reasoning, answer, ...)
const STRIP_H = 44;                            // the Jaccard strip between the grids
const STRIP_ROWS = 32;                         // its resolution: the bar of a column is up to 27 pixels (J = 1)
const DIFF_ROWS = 4;                           // its top line: where the expert set differs in some layer
const GAP = 6;
const AXIS_H = 16;
const TEXT_LINE = 18;                          // the text strip: two lines, run A above run B
const LAYER_ROW = 13;                          // the per-layer panel's row height (css px)

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

async function plane(model, name, info) {
  const bytes = u8(model.get(name));
  return bytes.length && info.encoding[name] === "deflate" ? inflate(bytes) : bytes;
}

async function decodeRun(model, info, side, i) {
  // one run: its experts [L][K][T], and per token its segment kind, recorded flag and text
  const T = info.n_tokens[i], ex = await plane(model, `experts_${side}`, info);
  const bits = u8(model.get(`recorded_${side}`)), recorded = new Uint8Array(T);
  for (let t = 0; t < T; t++) recorded[t] = (bits[t >> 3] >> (t & 7)) & 1;
  return { T, label: info.labels[i], experts: info.experts_dtype === "uint16" ? typed(ex, Uint16Array) : ex,
           kinds: u8(model.get(`kinds_${side}`)), recorded, text: u8(model.get(`text_${side}`)),
           offsets: typed(u8(model.get(`offsets_${side}`)), Uint32Array),
           shown: new Array(T), width: new Float32Array(T) };    // the text strip's measured tokens, filled lazily
}

async function decode(model) {
  const info = model.get("info");
  const codes = await plane(model, "jaccard", info);
  const d = { info, L: info.moe_layers.length, K: info.slots, E: info.num_experts, T: info.T, P: info.prefix,
              runs: [await decodeRun(model, info, "a", 0), await decodeRun(model, info, "b", 1)],
              codes: info.jaccard_dtype === "uint16" ? typed(codes, Uint16Array) : codes,
              values: Float64Array.from(info.jaccard_values), none: info.jaccard_none, decoder: new TextDecoder() };
  d.kindColors = info.segment_kinds.map((k) => hexRgb(info.segment_colors[k] || "#888888"));
  jaccardSums(d);
  d.same = sameRows(d);
  return d;
}

function jaccardSums(d) {
  // prefix sums of each row's Jaccard per layer (rows 0..L-1) and of its mean over layers (row L), and of the
  // count of compared rows (recorded in both runs: the same rows in every layer). A pixel column's mean over any
  // token range is then two lookups, whatever the zoom.
  const { L, P, codes, values, none } = d, W = P + 1;
  // `differs`: prefix counts of the rows whose expert set differs in some layer (the strip's top line)
  const cum = new Float64Array((L + 1) * W), cnt = new Int32Array(W), differs = new Int32Array(W), mean = new Float32Array(P);
  for (let t = 0; t < P; t++) {
    const ok = codes[t] !== none;
    let s = 0, low = 0;
    for (let l = 0; l < L; l++) {
      const j = ok ? values[codes[l * P + t]] : 0;
      cum[l * W + t + 1] = cum[l * W + t] + j;
      s += j; low |= j < 1;
    }
    mean[t] = ok ? s / L : NaN;
    cum[L * W + t + 1] = cum[L * W + t] + (ok ? s / L : 0);
    cnt[t + 1] = cnt[t] + ok;
    differs[t + 1] = differs[t] + (ok && low);
  }
  Object.assign(d, { cum, cnt, differs, mean });
}

function tokenJaccard(d, layer, t) {
  // the Jaccard of token t's expert sets in `layer` (-1: the mean over layers); NaN outside the compared rows
  if (t < 0 || t >= d.P) return NaN;
  if (layer < 0) return d.mean[t];
  const c = d.codes[layer * d.P + t];
  return c === d.none ? NaN : d.values[c];
}

function rangeJaccard(d, row, a, b) {
  // the mean Jaccard over compared tokens a..b-1 (clipped to the common prefix); row L is the mean over layers
  b = Math.min(b, d.P);
  if (a >= b) return NaN;
  const n = d.cnt[b] - d.cnt[a], W = d.P + 1;
  return n ? (d.cum[row * W + b] - d.cum[row * W + a]) / n : NaN;
}

const tokenText = (d, run, t) => d.decoder.decode(run.text.subarray(run.offsets[t], run.offsets[t + 1]));

// ---------------------------------------------------------------- colours

function hsl(h, s, l) {
  s /= 100; l /= 100;
  const k = (n) => (n + h / 30) % 12, a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
}

function palette(E) {
  // the RoutingExplorer's palette, the same formula (routing_explorer.js): golden-angle hues at three lightness
  // and saturation levels, so an expert has one colour in every run, every layer and both widgets
  const rgb = [];
  for (let i = 0; i < E; i++) rgb.push(hsl((i * 137.508) % 360, [72, 58, 82][i % 3], [50, 36, 64][(i >> 1) % 3]));
  return rgb;
}

const css = ([r, g, b], a = 1) => `rgba(${r},${g},${b},${a})`;
const hex = (rgb) => "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
const hexRgb = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
const fade = (c, f) => c.map((v) => Math.round(v * f + 255 * (1 - f)));   // toward white

function agreement(j) {
  // the Jaccard scale: red (no expert in common) -> amber -> blue (the same experts); a diverging scale, so a
  // dip in agreement stands out against the calm colour of runs that route alike
  const stops = [[215, 48, 39], [253, 174, 97], [69, 117, 180]];
  const y = Math.max(0, Math.min(1, j)) * 2, i = Math.min(1, Math.floor(y)), f = y - i;
  return stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
}

function rgba([r, g, b]) {
  // ImageData's RGBA bytes as one little-endian uint32 (no allocation: called per pixel)
  return (0xff000000 | (b << 16) | (g << 8) | r) >>> 0;
}

// ---------------------------------------------------------------- the DOM skeleton (a fixed number of nodes)

function elem(tag, cls, parent, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  if (parent) parent.appendChild(n);
  return n;
}

function runTitle(run, info, i) {
  const m = info.models[i];
  return `${run.label}: ${m.name} [${m.kind}], ${run.T.toLocaleString()} tokens`;
}

function skeleton(el, d) {
  const i = d.info, ui = {};
  el.classList.add("cl-cv");
  const bar = elem("div", "cl-cv-bar", el);
  elem("span", "cl-cv-title", bar, `${runTitle(d.runs[0], i, 0)} · ${runTitle(d.runs[1], i, 1)} · ${d.L} MoE layers, ` +
       `top-${i.top_k} of ${d.E} experts`);
  const wrap = elem("label", "cl-cv-field", bar, "layer ");
  ui.layer = elem("select", "", wrap);
  for (const [v, text] of [[-1, "mean over MoE layers"], ...i.moe_layers.map((m, l) => [l, `${m} (MoE ${l + 1}/${d.L})`])]) {
    elem("option", "", ui.layer, text).value = String(v);
  }
  ui.jump = elem("button", "cl-cv-btn", bar, "go to first divergence");
  ui.reset = elem("button", "cl-cv-btn", bar, "zoom out");
  const target = divergenceTarget(d);
  ui.jump.disabled = target === null;
  ui.jump.title = target === null ? "the runs agree: same tokens, same experts" :
    i.first_divergence !== null ? `the first token whose experts differ in some layer: ${i.first_divergence}` :
    `the routing agrees over the common prefix; the texts part at token ${d.P}`;
  ui.main = elem("canvas", "cl-cv-main", el);
  ui.text = elem("canvas", "cl-cv-text", el);
  ui.caption = elem("div", "cl-cv-caption", el);
  const lower = elem("div", "cl-cv-lower", el);
  ui.hover = elem("div", "cl-cv-hover", lower);
  const side = elem("div", "cl-cv-side", lower);
  ui.layersTitle = elem("div", "cl-cv-layers-title", side, layersTitle(d));
  for (const [colour, what] of [["#4575b4", "Jaccard of the expert sets"], ["#f08a24", "top-1 agreement"]]) {
    elem("span", "cl-cv-key", ui.layersTitle).style.backgroundColor = colour;   // the bars' key
    ui.layersTitle.appendChild(document.createTextNode(what + " "));
  }
  ui.layers = elem("canvas", "cl-cv-layers", side);
  hoverTable(ui, d);
  return ui;
}

function layersTitle(d) {
  const i = d.info;
  return `per MoE layer, over the ${d.P.toLocaleString()}-token common prefix (${i.compared.toLocaleString()} ` +
    `row${i.compared === 1 ? "" : "s"} recorded in both), as views.compare counts them: `;
}

function hoverTable(ui, d) {
  // built once: one row per MoE layer with both runs' experts (K swatches each) and the row's Jaccard. A hover
  // only rewrites what changed; each cell keeps its Text node (setting .data does not replace the node)
  ui.hoverHead = elem("div", "cl-cv-hover-head", ui.hover, "hover a token");
  const table = elem("table", "cl-cv-hover-table", ui.hover), head = elem("tr", "", table);
  for (const h of ["", d.runs[0].label, d.runs[1].label, "Jaccard"]) elem("th", "", head, h);
  ui.rows = [];
  for (let l = 0; l < d.L; l++) {
    const tr = elem("tr", "", table), row = { tr, sides: [] };
    elem("th", "", tr, `L${d.info.moe_layers[l]}`);
    for (let r = 0; r < 2; r++) {
      const td = elem("td", "", tr), cells = [];
      for (let s = 0; s < d.K; s++) {
        const sw = elem("span", "cl-cv-swatch", td), txt = elem("span", "", td);
        cells.push({ sw, text: txt.appendChild(document.createTextNode("")), expert: -1 });
      }
      row.sides.push(cells);
    }
    row.jac = elem("td", "cl-cv-jac", tr).appendChild(document.createTextNode(""));
    ui.rows.push(row);
  }
  ui.selRow = null;
}

// ---------------------------------------------------------------- view state

function divergenceTarget(d) {
  // where "go to first divergence" goes: the first token routed differently, else where the texts part
  const fd = d.info.first_divergence;
  if (fd !== null && fd !== undefined) return fd;
  return d.P < d.T ? d.P : null;
}

function initialState(model, d) {
  const w = model.get("window") || [];
  return { start: w.length === 2 ? w[0] : 0, end: w.length === 2 ? w[1] : Math.max(d.T, 1),
           layer: model.get("layer"), hover: model.get("hover"), drag: null };
}

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

// ---------------------------------------------------------------- the grids and the strip (cached pixels)

function columns(st, cols) {
  // token range [a[x], b[x]) each pixel column covers; at least one token, so zoomed in a token spans columns
  const a = new Int32Array(cols), b = new Int32Array(cols), tpp = (st.end - st.start) / cols;
  for (let x = 0; x < cols; x++) {
    a[x] = Math.floor(st.start + x * tpp);
    b[x] = Math.max(a[x] + 1, Math.floor(st.start + (x + 1) * tpp));
  }
  return { a, b };
}

function modeExpert(row, rec, a, b, counts) {
  // the most common expert of recorded tokens a..b-1 (-1: none recorded); counts is all zeros on entry and exit.
  // An unrecorded token adds 0 to its expert's count instead of a branch, and only the column's own entries are
  // cleared after (not all E): about 25% faster than the explorer's loop, which matters with two grids to count
  let best = 0, which = -1;
  for (let t = a; t < b; t++) {
    const e = row[t], c = (counts[e] += rec[t]);
    if (c > best) { best = c; which = e; }
  }
  for (let t = a; t < b; t++) counts[row[t]] = 0;
  return which;
}

function sameRows(d) {
  // per MoE layer, prefix counts of the token positions where run B's shown expert (or recorded flag) differs from
  // run A's; positions past the shorter run count as different. Where a column's count is 0, B's pixel is A's:
  // runs of one prompt often route alike for long stretches, and then B's grid costs next to nothing
  const [A, B] = d.runs, n = Math.min(A.T, B.T), W = d.T + 1, cum = new Int32Array(d.L * W);
  for (let l = 0; l < d.L; l++) {
    const ra = A.experts.subarray(l * d.K * A.T), rb = B.experts.subarray(l * d.K * B.T), base = l * W;
    for (let t = 0; t < d.T; t++) {
      const diff = t >= n || ra[t] !== rb[t] || A.recorded[t] !== B.recorded[t];
      cum[base + t + 1] = cum[base + t] + diff;
    }
  }
  return cum;
}

function runPixels(d, run, c, pal, shared) {
  // one pixel per (column, layer): the top-1 expert (a column of many tokens: their most common one); row 0 is
  // the segment band. Columns past the run's end stay transparent: the shorter run ends there. `shared`: run A's
  // pixels and the prefix counts of sameRows, for run B
  const cols = c.a.length, img = new ImageData(cols, d.L + 1), px = new Uint32Array(img.data.buffer);
  const counts = new Uint32Array(d.E), colours = pal.map(rgba), grey = rgba(UNRECORDED), W = d.T + 1;
  for (let l = 0; l < d.L; l++) {
    const row = run.experts.subarray(l * d.K * run.T, (l * d.K + 1) * run.T), o = (l + 1) * cols;
    for (let x = 0; x < cols; x++) {
      const a = c.a[x], b = Math.min(c.b[x], run.T);
      if (a >= run.T) break;
      if (shared && shared.cum[l * W + b] === shared.cum[l * W + a]) { px[o + x] = shared.px[o + x]; continue; }
      const e = b - a === 1 ? (run.recorded[a] ? row[a] : -1) : modeExpert(row, run.recorded, a, b, counts);
      px[o + x] = e < 0 ? grey : colours[e];
    }
  }
  for (let x = 0; x < cols && c.a[x] < run.T; x++) {
    const k = run.kinds[c.a[x]];
    px[x] = k === NO_SEGMENT ? 0 : rgba(d.kindColors[k]);
  }
  return { img, px };
}

function stripPixels(d, c, row) {
  // per column the mean Jaccard J of its compared tokens: the column tinted by J's colour, a bar J high in it.
  // Above the bars, a line that is dark red in proportion to the column's tokens whose expert set differs in some
  // layer: averaged over 23 layers, one layer's change barely moves J, and this line shows it anyway.
  // Past the common prefix the texts differ: nothing to compare, nothing drawn
  const cols = c.a.length, img = new ImageData(cols, STRIP_ROWS), px = new Uint32Array(img.data.buffer);
  const none = rgba([238, 238, 238]), bars = STRIP_ROWS - DIFF_ROWS - 1;
  for (let x = 0; x < cols; x++) {
    const a = c.a[x], b = Math.min(c.b[x], d.P);
    if (a >= d.P) break;
    const j = rangeJaccard(d, row, a, b), n = d.cnt[b] - d.cnt[a];
    const full = Number.isNaN(j) ? none : rgba(agreement(j)), pale = Number.isNaN(j) ? none : rgba(fade(agreement(j), 0.3));
    const top = STRIP_ROWS - (Number.isNaN(j) ? 0 : Math.round(j * bars));
    const share = n ? (d.differs[b] - d.differs[a]) / n : 0, mark = rgba(fade([140, 0, 0], share ? 0.25 + 0.75 * share : 0));
    for (let y = 0; y < DIFF_ROWS; y++) px[y * cols + x] = mark;
    for (let y = DIFF_ROWS; y < STRIP_ROWS; y++) px[y * cols + x] = y < top ? pale : full;
  }
  return img;
}

function bitmap(img) {
  const off = new OffscreenCanvas(img.width, img.height);
  off.getContext("2d").putImageData(img, 0, 0);
  return off;
}

function gridImages(v, cols) {
  // the grids' pixels depend on the window and the width only, the strip's on the layer too: a hover redraws
  // from these caches instead of recounting 2 x 32k x 23 decisions
  const { d, st } = v, key = [st.start, st.end, cols].join();
  if (!v.gridCache || v.gridCache.key !== key) {
    const c = columns(st, cols);
    const a = runPixels(d, d.runs[0], c, v.pal), b = runPixels(d, d.runs[1], c, v.pal, { px: a.px, cum: d.same });
    v.gridCache = { key, c, runs: [bitmap(a.img), bitmap(b.img)] };
    v.stripCache = null;
  }
  const row = st.layer < 0 ? d.L : st.layer;
  if (!v.stripCache || v.stripCache.row !== row) v.stripCache = { row, off: bitmap(stripPixels(d, v.gridCache.c, row)) };
  return v.gridCache;
}

// ---------------------------------------------------------------- drawing the main canvas

function geometry(el, ui, d) {
  const width = Math.max(360, Math.floor(el.clientWidth || 900)), dpr = window.devicePixelRatio || 1;
  const rowH = Math.max(4, Math.min(16, Math.floor(200 / d.L))), gridH = d.L * rowH;
  const aBand = 2, aTop = aBand + BAND_H + 2, stripTop = aTop + gridH + GAP, bTop = stripTop + STRIP_H + GAP;
  const bBand = bTop + gridH + 2, axisTop = bBand + BAND_H + 2, height = axisTop + AXIS_H;
  sizeCanvas(ui.main, width, height, dpr);
  sizeCanvas(ui.text, width, 2 * TEXT_LINE + 4, dpr);
  return { width, dpr, rowH, gridH, aBand, aTop, stripTop, bTop, bBand, axisTop, height, plotW: width - GRID_LEFT - 6,
           tops: [aTop, bTop], bands: [aBand, bBand] };
}

function sizeCanvas(c, w, h, dpr) {
  if (c.width === Math.round(w * dpr) && c.height === Math.round(h * dpr)) return;
  c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  c.style.width = w + "px"; c.style.height = h + "px";
}

function tokenX(st, geo, t) { return GRID_LEFT + ((t - st.start) / (st.end - st.start)) * geo.plotW; }

function drawPixels(ctx, v) {
  // the cached images, scaled up without smoothing: each pixel is one decision (or one column's mode)
  const { d, ui, geo } = v, cols = Math.max(1, Math.round(geo.plotW * geo.dpr)), g = gridImages(v, cols);
  const x0 = GRID_LEFT * geo.dpr, k = geo.dpr;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, ui.main.width, ui.main.height);
  ctx.imageSmoothingEnabled = false;
  g.runs.forEach((off, r) => {
    ctx.drawImage(off, 0, 0, cols, 1, x0, geo.bands[r] * k, cols, BAND_H * k);
    ctx.drawImage(off, 0, 1, cols, d.L, x0, geo.tops[r] * k, cols, geo.gridH * k);
  });
  ctx.drawImage(v.stripCache.off, 0, 0, cols, STRIP_ROWS, x0, geo.stripTop * k, cols, STRIP_H * k);
  ctx.setTransform(geo.dpr, 0, 0, geo.dpr, 0, 0);
}

function drawLabels(ctx, d, st, geo) {
  // each run's name, rotated, left of its grid; MoE layer labels as many as fit; the strip's name
  ctx.fillStyle = "#333"; ctx.font = "10px sans-serif"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
  const every = Math.ceil(11 / geo.rowH);
  d.runs.forEach((run, r) => {
    for (let l = 0; l < d.L; l += every) ctx.fillText(`L${d.info.moe_layers[l]}`, GRID_LEFT - 4, geo.tops[r] + (l + 0.5) * geo.rowH);
    ctx.save();
    ctx.translate(9, geo.tops[r] + geo.gridH / 2); ctx.rotate(-Math.PI / 2);
    ctx.font = "bold 12px sans-serif"; ctx.textAlign = "center"; ctx.fillStyle = "#111";
    ctx.fillText(clip(ctx, run.label, geo.gridH - 4), 0, 0);
    ctx.restore();
  });
  ctx.textAlign = "right"; ctx.fillStyle = "#333";
  ctx.fillText("Jaccard", GRID_LEFT - 4, geo.stripTop + STRIP_H / 2 - 6);
  ctx.fillText(st.layer < 0 ? "mean" : `L${d.info.moe_layers[st.layer]}`, GRID_LEFT - 4, geo.stripTop + STRIP_H / 2 + 6);
  if (st.layer >= 0) {                                     // the chosen layer, outlined in both grids
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
    for (const top of geo.tops) ctx.strokeRect(GRID_LEFT, top + st.layer * geo.rowH, geo.plotW, geo.rowH);
  }
}

function clip(ctx, s, w) {
  if (ctx.measureText(s).width <= w) return s;
  while (s.length > 1 && ctx.measureText(s + "…").width > w) s = s.slice(0, -1);
  return s + "…";
}

function drawMarkers(ctx, d, st, geo) {
  // where the texts part (the end of the common prefix) and where the routing first differs: a line through both
  // grids and the strip, named in the strip; past the prefix the strip says why it is empty
  const y0 = geo.aTop, y1 = geo.bTop + geo.gridH, fd = d.info.first_divergence;
  const marks = [];
  if (d.P < d.T) marks.push({ t: d.P, colour: "#222", dash: [4, 3], text: `texts diverge: token ${d.P.toLocaleString()}`, y: geo.stripTop + STRIP_H - 8 });
  if (fd !== null) marks.push({ t: fd, colour: "#c00", dash: [], text: `routing diverges: token ${fd.toLocaleString()}`, y: geo.stripTop + 14 });
  const x1 = GRID_LEFT + geo.plotW;
  if (d.P < d.T) emptyNote(ctx, Math.max(GRID_LEFT, tokenX(st, geo, d.P)) + 4, x1, geo.stripTop + STRIP_H / 2);
  for (const m of marks) {
    const x = Math.round(tokenX(st, geo, m.t));             // on whole pixels, 2 wide: crisp over the cells
    if (x < GRID_LEFT - 1 || x > x1 + 1) continue;
    ctx.strokeStyle = m.colour; ctx.lineWidth = 2; ctx.setLineDash(m.dash);
    ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1); ctx.stroke();
    ctx.setLineDash([]);
    label(ctx, m.text, x, m.y, m.colour, x1);
  }
}

function emptyNote(ctx, a, b, y) {
  // why the strip is empty past the common prefix, in the longest wording that fits the empty stretch
  ctx.fillStyle = "#777"; ctx.font = "11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  const text = ["past the common prefix the texts differ: nothing to compare", "texts differ: nothing to compare",
                "texts differ"].find((s) => ctx.measureText(s).width + 12 <= b - a);
  if (text) ctx.fillText(text, (a + b) / 2, y);
}

function label(ctx, text, x, y, colour, right) {
  // a marker's name on a white box beside its line (left of it near the right edge)
  ctx.font = "bold 11px sans-serif"; ctx.textBaseline = "middle";
  const w = ctx.measureText(text).width + 6, left = x + 3 + w > right ? x - 3 - w : x + 3;
  ctx.fillStyle = "rgba(255,255,255,0.9)"; ctx.fillRect(left, y - 7, w, 14);
  ctx.fillStyle = colour; ctx.textAlign = "left"; ctx.fillText(text, left + 3, y);
}

function drawHoverMark(ctx, d, st, geo) {
  if (st.hover < 0 || st.hover < st.start - 1 || st.hover >= st.end) return;
  const a = tokenX(st, geo, st.hover), w = Math.max(1.5, geo.plotW / (st.end - st.start));
  ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
  ctx.strokeRect(a, geo.aTop - 1, w, geo.bTop + geo.gridH - geo.aTop + 2);
}

function drawAxis(ctx, st, geo) {
  ctx.fillStyle = "#555"; ctx.font = "10px sans-serif"; ctx.textBaseline = "top";
  const step = niceStep((st.end - st.start) / 8);
  for (let t = Math.ceil(st.start / step) * step; t <= st.end; t += step) {
    const x = tokenX(st, geo, t);
    ctx.textAlign = x < GRID_LEFT + 20 ? "left" : x > GRID_LEFT + geo.plotW - 20 ? "right" : "center";
    ctx.fillRect(x, geo.axisTop, 1, 3); ctx.fillText(String(t), x, geo.axisTop + 4);
  }
}

function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(Math.max(1, x)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= x) || 10 * p;
}

// ---------------------------------------------------------------- the text strip (two lines, bounded)

function showable(s) { return s.replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅"; }

function measured(ctx, d, run, t) {
  // token t's shown text and width, measured once (the strip's font never changes); 0 past the run's end
  if (t >= run.T) return 0;
  if (!run.width[t]) { run.shown[t] = showable(tokenText(d, run, t)); run.width[t] = ctx.measureText(run.shown[t]).width + 4; }
  return run.width[t];
}

function textStart(st, d) {
  // the visible tokens from the window's start; zoomed out, a run starting a little before the hovered token
  const a = Math.max(0, Math.floor(st.start)), b = Math.min(d.T, Math.ceil(st.end));
  return st.hover >= a && st.hover < b && b - a > 40 ? Math.max(a, st.hover - 8) : a;
}

function drawText(ctx, v) {
  // run A above run B, one column per token position (as wide as the wider of the two), each box tinted by the
  // token's Jaccard in the chosen layer (or the mean); past the common prefix, grey: the tokens differ there.
  // Only what fits one line's width is drawn, so the work is bounded whatever the run's length
  const { d, st, ui, geo } = v, x1 = geo.width - 2;
  ctx.setTransform(geo.dpr, 0, 0, geo.dpr, 0, 0);
  ctx.clearRect(0, 0, geo.width, 2 * TEXT_LINE + 4);
  ctx.font = "12px ui-monospace, monospace"; ctx.textBaseline = "middle"; ctx.textAlign = "left";
  ctx.fillStyle = "#111";                                   // the runs' names, in the grids' label margin
  d.runs.forEach((run, r) => ctx.fillText(clip(ctx, run.label, GRID_LEFT - 8), 2, r * (TEXT_LINE + 2) + TEXT_LINE / 2 + 1));
  const start = textStart(st, d), boxes = [];
  let x = GRID_LEFT, t = start;
  for (; t < d.T; t++) {
    const w = Math.max(measured(ctx, d, d.runs[0], t), measured(ctx, d, d.runs[1], t));
    if (x + w > x1 && t > start) break;
    const j = tokenJaccard(d, st.layer, t), fill = t >= d.P ? "#e6e6e6" : Number.isNaN(j) ? "#f2f2f2" : v.tints[Math.round(j * 100)];
    d.runs.forEach((run, r) => {
      if (t >= run.T) return;
      const y = r * (TEXT_LINE + 2) + 2;
      ctx.fillStyle = fill; ctx.fillRect(x, y, w - 1, TEXT_LINE - 2);
      if (t === st.hover) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.strokeRect(x, y, w - 1, TEXT_LINE - 2); }
      ctx.fillStyle = "#111"; ctx.fillText(run.shown[t], x + 2, y + TEXT_LINE / 2 - 1);
    });
    boxes.push([x, w, t]);
    x += w;
  }
  ui.textBoxes = boxes;
  ui.caption.textContent = caption(d, st, start, t);
}

function caption(d, st, a, b) {
  const which = st.layer < 0 ? "the mean over MoE layers" : `MoE layer ${d.info.moe_layers[st.layer]}`;
  return `text: tokens ${a}–${b} of both runs, tinted by their Jaccard in ${which} (grey: past the common prefix) · ` +
    `view ${Math.floor(st.start)}–${Math.ceil(st.end)} · the strip: Jaccard of the two expert sets per token over the ` +
    `${d.P.toLocaleString()}-token common prefix (its top line: dark red where the sets differ in some layer); past it ` +
    `the texts differ and nothing is compared · wheel: zoom, drag: pan`;
}

// ---------------------------------------------------------------- hover details

function fmt(x, n = 3) { return Number.isFinite(x) ? x.toFixed(n) : "–"; }

function setCell(cell, text, expert, colors) {
  // only what changed is written: each write invalidates style or layout for the next frame
  if (cell.text.data !== text) cell.text.data = text;
  if (cell.expert !== expert) { cell.expert = expert; cell.sw.style.backgroundColor = expert < 0 ? "transparent" : colors[expert]; }
}

function hoverHead(d, t) {
  const [A, B] = d.runs, word = (run) => (t < run.T ? JSON.stringify(tokenText(d, run, t)) : `(ended at ${run.T})`);
  const same = t < d.P ? "same token" : "the texts differ here (past the common prefix)";
  const j = tokenJaccard(d, -1, t);
  return `token ${t} · ${A.label} ${word(A)} · ${B.label} ${word(B)} · ${same}` + (Number.isNaN(j) ? "" : ` · mean Jaccard ${fmt(j)}`);
}

function drawHover(v) {
  // the hovered token in both runs: per MoE layer each run's experts (every slot sent) and that row's Jaccard
  const { ui, d, st, labels } = v, t = st.hover;
  outlineRow(ui, st.layer < 0 ? null : ui.rows[st.layer]);        // the chosen layer's row, hovered or not
  if (t < 0 || t >= d.T) { ui.hoverHead.textContent = "hover a token"; return; }
  ui.hoverHead.textContent = hoverHead(d, t);
  for (let l = 0; l < d.L; l++) {
    const row = ui.rows[l];
    d.runs.forEach((run, r) => {
      const ok = t < run.T && run.recorded[t];
      for (let s = 0, j = (l * d.K) * run.T + t; s < d.K; s++, j += run.T) {
        const e = ok ? run.experts[j] : -1;
        setCell(row.sides[r][s], e < 0 ? (s === 0 ? (t < run.T ? "not recorded" : "–") : "") : labels.ids[e], e, labels.colors);
      }
    });
    const j = tokenJaccard(d, l, t), text = Number.isNaN(j) ? "–" : fmt(j, 2);
    if (row.jac.data !== text) row.jac.data = text;
  }
}

function outlineRow(ui, row) {
  if (row === ui.selRow) return;
  if (ui.selRow) ui.selRow.tr.className = "";
  if (row) row.tr.className = "cl-cv-sel";
  ui.selRow = row;
}

// ---------------------------------------------------------------- the per-layer panel

function drawLayers(v) {
  // per MoE layer, over the common prefix: the Jaccard (blue) and top-1 agreement (orange) bars and their values,
  // as computed in Python by views.compare; the chosen layer outlined. Drawn on a layer change only
  const { d, st, ui } = v, dpr = window.devicePixelRatio || 1, W = 420, H = 14 + d.L * LAYER_ROW;
  sizeCanvas(ui.layers, W, H, dpr);
  const ctx = ui.layers.getContext("2d"), pl = d.info.per_layer, barW = 130;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, W, H);
  ctx.font = "10px sans-serif"; ctx.textBaseline = "middle"; ctx.fillStyle = "#555"; ctx.textAlign = "left";
  ctx.fillText("Jaccard", 44, 6); ctx.fillText("top-1 agreement", 44 + barW + 50, 6);
  for (let l = 0; l < d.L; l++) {
    const y = 14 + l * LAYER_ROW;
    ctx.fillStyle = "#333"; ctx.textAlign = "right"; ctx.fillText(`L${d.info.moe_layers[l]}`, 38, y + LAYER_ROW / 2);
    [[pl.jaccard[l], "#4575b4", 44], [pl.top1_agreement[l], "#f08a24", 44 + barW + 50]].forEach(([x, colour, left]) => {
      ctx.fillStyle = "#eee"; ctx.fillRect(left, y + 2, barW, LAYER_ROW - 4);
      if (x !== null) { ctx.fillStyle = colour; ctx.fillRect(left, y + 2, barW * x, LAYER_ROW - 4); }
      ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.fillText(x === null ? "–" : x.toFixed(3), left + barW + 4, y + LAYER_ROW / 2);
    });
  }
  if (st.layer >= 0) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.strokeRect(1, 14 + st.layer * LAYER_ROW, W - 2, LAYER_ROW); }
}

// ---------------------------------------------------------------- the view and its redraw

function makeView(el, model, d) {
  const ui = skeleton(el, d), pal = palette(d.E), st = initialState(model, d);
  const v = { el, model, d, ui, pal, st, geo: null, geoStale: true, frame: 0,
              labels: { ids: Array.from({ length: d.E }, (_, e) => String(e)), colors: pal.map(hex) },
              tints: Array.from({ length: 101 }, (_, i) => css(fade(agreement(i / 100), 0.45))) };
  clampWindow(st, d);
  ui.layer.value = String(st.layer);                       // the traits may have changed while the planes inflated
  v.redraw = () => redraw(v);
  v.schedule = () => { if (!v.frame) v.frame = requestAnimationFrame(() => { v.frame = 0; v.redraw(); }); };
  return v;
}

function redraw(v) {
  // the main canvas and the text strip. The geometry is measured again only when marked stale (a resize, the
  // pointer entering the canvas): reading the element's width forces a layout, costly right after a hover
  const t0 = performance.now(), { d, st, ui } = v;
  if (v.geoStale || !v.geo) { v.geo = geometry(v.el, ui, d); v.geoStale = false; }
  const ctx = ui.main.getContext("2d");
  drawPixels(ctx, v);
  drawLabels(ctx, d, st, v.geo);
  drawMarkers(ctx, d, st, v.geo);
  drawHoverMark(ctx, d, st, v.geo);
  drawAxis(ctx, st, v.geo);
  drawText(ui.text.getContext("2d"), v);
  v.el.dataset.redrawMs = (performance.now() - t0).toFixed(2);
  v.el.dataset.ready = "1";
}

// ---------------------------------------------------------------- interaction

function where(v, ev) {
  // the token under the pointer and the part of the main canvas it is in: "a" / "b" (a grid, with its layer
  // row), "strip", or null outside the plot
  const r = v.ui.main.getBoundingClientRect(), x = ev.clientX - r.left - GRID_LEFT, y = ev.clientY - r.top, g = v.geo;
  if (x < 0 || x >= g.plotW) return null;
  const t = Math.max(0, Math.min(v.d.T - 1, Math.floor(v.st.start + (x / g.plotW) * (v.st.end - v.st.start))));
  for (const [part, top] of [["a", g.aTop], ["b", g.bTop]]) {
    if (y >= top && y < top + g.gridH) return { t, part, layer: Math.floor((y - top) / g.rowH) };
  }
  return y >= g.stripTop && y < g.stripTop + STRIP_H ? { t, part: "strip", layer: -1 } : null;
}

function showHover(v) {
  // the canvases first, the panel's DOM after: text drawn on a canvas resolves its style, which after a DOM
  // change would force a style recalculation inside the handler instead of once per frame
  v.redraw();
  drawHover(v);
}

function setHover(v, t) {
  if (t === v.st.hover) return;
  const t0 = performance.now();
  v.st.hover = t;
  showHover(v);
  v.el.dataset.hoverMs = (performance.now() - t0).toFixed(2);
  push(v.model, { hover: t });
}

function setLayer(v, l, sync) {
  v.st.layer = l; v.ui.layer.value = String(l);
  showHover(v); drawLayers(v);
  if (sync) push(v.model, { layer: l });
}

function setWindow(v, a, b) {
  v.st.start = a; v.st.end = b;
  clampWindow(v.st, v.d);
  v.redraw();
}

function syncWindowSoon(v) {
  // the zoomed window goes to Python once the wheel or the drag settles, not on every event
  clearTimeout(v.windowTimer);
  v.windowTimer = setTimeout(() => push(v.model, { window: [Math.floor(v.st.start), Math.ceil(v.st.end)] }), 250);
}

function jump(v) {
  // the first divergence in the middle of a window of at most 64 tokens (narrower if zoomed in further), hovered
  const t = divergenceTarget(v.d);
  if (t === null) return;
  const span = Math.min(v.st.end - v.st.start, 64);
  setWindow(v, t - span / 2, t + span / 2);
  push(v.model, { window: [Math.floor(v.st.start), Math.ceil(v.st.end)] });
  setHover(v, t);
}

function onWheel(v, ev) {
  ev.preventDefault();
  const { st, d } = v, r = v.ui.main.getBoundingClientRect();
  const f = Math.max(0, Math.min(1, (ev.clientX - r.left - GRID_LEFT) / v.geo.plotW)), pivot = st.start + f * (st.end - st.start);
  const span = Math.max(Math.min(MIN_SPAN, d.T), Math.min(d.T, (st.end - st.start) * Math.exp(ev.deltaY * 0.0015)));
  st.start = pivot - f * span; st.end = st.start + span;
  clampWindow(st, d);
  v.schedule();
  syncWindowSoon(v);
}

function onDown(v, ev) {
  if (ev.button !== 0) return;
  v.st.drag = { x: ev.clientX, start: v.st.start, end: v.st.end, moved: false };
  ev.preventDefault();
}

function onMove(v, ev) {
  // a drag pans (followed on the window, so it may leave the canvas); otherwise the pointer hovers a token
  const g = v.st.drag;
  if (!g) {
    if (ev.target !== v.ui.main) return;
    const w = where(v, ev);
    if (w) setHover(v, w.t);
    return;
  }
  g.moved = g.moved || Math.abs(ev.clientX - g.x) > 2;
  const dt = ((ev.clientX - g.x) / v.geo.plotW) * (g.end - g.start);
  v.st.start = g.start - dt; v.st.end = g.end - dt;
  clampWindow(v.st, v.d);
  v.schedule();
}

function onUp(v, ev) {
  const g = v.st.drag;
  if (!g) return;
  v.st.drag = null;
  if (g.moved) { syncWindowSoon(v); return; }
  const w = where(v, ev);                                  // a click on a grid row chooses that layer
  if (w && w.part !== "strip" && w.layer !== v.st.layer) setLayer(v, w.layer, true);
}

function onTextMove(v, ev) {
  const r = v.ui.text.getBoundingClientRect(), x = ev.clientX - r.left;
  const hit = (v.ui.textBoxes || []).find(([bx, w]) => x >= bx && x < bx + w);
  if (hit) setHover(v, hit[2]);
}

function onLayersClick(v, ev) {
  const r = v.ui.layers.getBoundingClientRect(), l = Math.floor((ev.clientY - r.top - 14) / LAYER_ROW);
  if (l >= 0 && l < v.d.L) setLayer(v, l === v.st.layer ? -1 : l, true);   // a second click: back to the mean
}

function listen(v) {
  const { ui, model } = v, on = [], add = (t, ev, f, o) => { t.addEventListener(ev, f, o); on.push(() => t.removeEventListener(ev, f, o)); };
  add(ui.main, "wheel", (e) => onWheel(v, e), { passive: false });
  add(ui.main, "mousedown", (e) => onDown(v, e));
  add(window, "mousemove", (e) => onMove(v, e));
  add(window, "mouseup", (e) => onUp(v, e));
  add(ui.text, "mousemove", (e) => onTextMove(v, e));
  add(ui.layers, "click", (e) => onLayersClick(v, e));
  add(ui.layer, "change", () => setLayer(v, +ui.layer.value, true));
  add(ui.jump, "click", () => jump(v));
  add(ui.reset, "click", () => { setWindow(v, 0, v.d.T); syncWindowSoon(v); });
  const traits = {
    "change:layer": () => setLayer(v, model.get("layer"), false),
    "change:hover": () => { const t = model.get("hover"); if (t !== v.st.hover) { v.st.hover = t; showHover(v); } },
    "change:window": () => { const w = model.get("window"); if (w && w.length === 2) setWindow(v, w[0], w[1]); },
  };
  for (const [ev, f] of Object.entries(traits)) { model.on(ev, f); on.push(() => model.off(ev, f)); }
  add(ui.main, "mouseenter", () => { v.geoStale = true; });  // e.g. the page zoomed (devicePixelRatio) meanwhile
  const ro = new ResizeObserver(() => { v.geoStale = true; v.schedule(); });
  ro.observe(v.el); on.push(() => ro.disconnect());
  return () => on.forEach((f) => f());
}

async function render({ model, el }) {
  const d = await decode(model);
  if (!d.T) { el.textContent = "CompareView: both traces are empty"; el.dataset.ready = "1"; return; }
  const v = makeView(el, model, d);
  const stop = listen(v);
  drawLayers(v);
  showHover(v);
  el.__compareView = v;                                    // for the browser tests: the view's state, read-only use
  return () => { stop(); cancelAnimationFrame(v.frame); clearTimeout(v.windowTimer); };
}

export default { render };
