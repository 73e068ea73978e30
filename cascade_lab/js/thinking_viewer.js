// The thinking viewer's front end (cascade_lab.stepper.ThinkingViewer): a plain ES module, no build step, no library.
// Model traits read: steps, span, reasoning_end, tokens, entropy / logprob (float32 per token of `span`), forking,
// summary, layers, num_experts, layer, loads (uint32 [steps, experts] in `layer`), routing_note, selected_step.
// Written: selected_step and selected (the step's token range), layer.
// Long runs stay cheap: the per-token figures are drawn on one canvas (a pixel column holds many tokens), and the
// DOM does not grow with the run: the steps are listed a page (PAGE steps) at a time, each row one element and
// one text node, a step's full text built only when opened, its backtracking markers highlighted with the CSS
// Custom Highlight API (ranges, no nodes) where the browser has it.

const PAGE = 10;                                 // step rows on a page
const HIGHLIGHT = "cl-tv-mark";                  // the name of the markers' highlight, shared by every view

const STYLE = `
.cl-tv { font: 13px/1.45 var(--jp-ui-font-family, system-ui, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 10px 12px; max-width: 980px; }
.cl-tv .tv-meta { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; color: var(--jp-ui-font-color2, #666); }
.cl-tv .badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 11px; background: #eee; color: #333; }
.cl-tv .badge.ok { background: #dff3df; color: #1d6b1d; } .cl-tv .badge.bad { background: #fbe0e0; color: #9b1c1c; }
.cl-tv .badge.warn { background: #fff1cc; color: #7a5600; }
.cl-tv canvas.tv-strip { display: block; width: 100%; height: 64px; margin-top: 8px; cursor: pointer; }
.cl-tv .tv-hover { font: 12px var(--jp-code-font-family, ui-monospace, monospace); color: #555; min-height: 1.5em; white-space: pre; overflow: hidden; }
.cl-tv .tv-body { display: flex; gap: 12px; align-items: flex-start; }
.cl-tv .tv-list { flex: 1; min-width: 0; }
.cl-tv .tv-pager { display: flex; gap: 8px; align-items: center; color: #666; font-size: 12px; margin: 2px 0; }
.cl-tv .tv-pager button { font: inherit; padding: 0 8px; border: 1px solid #bbb; border-radius: 4px; background: #fafafa; cursor: pointer; }
.cl-tv .tv-pager button:disabled { opacity: .4; cursor: default; }
.cl-tv .tv-steps { max-height: 30em; overflow: auto; }
/* a step row: the preview is its only text node; the arrow and number (data-n) and the size, with the marker
   flagged when one is inside (data-side), are generated content; --side (its length) reserves room for it */
.cl-tv .tv-step { position: relative; cursor: pointer; border-left: 3px solid transparent; padding: 1px 4px;
  padding-right: calc(var(--side, 8) * .5em + 12px); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.cl-tv .tv-step::before { content: "\\25B8\\00a0" attr(data-n); display: inline-block; min-width: 2.6em; margin-right: 6px;
  color: #888; font-variant-numeric: tabular-nums; }
.cl-tv .tv-step.open::before { content: "\\25BE\\00a0" attr(data-n); }
.cl-tv .tv-step::after { content: attr(data-side); position: absolute; right: 4px; top: 1px; color: #999; font-size: 11px; }
.cl-tv .tv-step.flag::after { color: #7a5600; }
.cl-tv .tv-step.back { border-left-color: #e0a100; }
.cl-tv .tv-step.sel { background: #eef4ff; border-left-color: #2f6fd0; }
.cl-tv .tv-step:focus-visible { outline: 1px solid #2f6fd0; outline-offset: -1px; }
.cl-tv .tv-text { white-space: pre-wrap; padding: 2px 0 6px 2.9em; }
.cl-tv mark { background: #ffe08a; border-radius: 2px; padding: 0 1px; }
::highlight(cl-tv-mark) { background-color: #ffe08a; }
.cl-tv .tv-routing { width: 270px; flex: none; }
.cl-tv .tv-routing select { font: inherit; max-width: 100%; }
.cl-tv .tv-label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #888; margin: 6px 0 2px; }
.cl-tv .tv-top { font-size: 12px; color: #555; }
`;

// ---------------------------------------------------------------- helpers

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null && c !== false) node.append(c);
  return node;
}

function bytesOf(v) {
  if (!v) return new ArrayBuffer(0);
  return v instanceof ArrayBuffer ? v : v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
}
/** A binary trait (DataView, ArrayBuffer or typed array) as a Float32Array / Uint32Array (copied: alignment). */
export const floats = (v) => { const b = bytesOf(v); return new Float32Array(b, 0, b.byteLength >> 2); };
export const uints = (v) => { const b = bytesOf(v); return new Uint32Array(b, 0, b.byteLength >> 2); };

/** `text` with the [start, end) spans `marks` wrapped in <mark>. */
export function markedText(text, marks) {
  const frag = document.createDocumentFragment();
  let at = 0;
  for (const [a, b] of marks || []) {
    frag.append(text.slice(at, a), h("mark", { text: text.slice(a, b) }));
    at = b;
  }
  frag.append(text.slice(at));
  return frag;
}

// Markers are highlighted without a node each: Range objects over the text node, in one Highlight shared by every
// view (CSS.highlights is per document); each view removes its own ranges when it drops their text. Browsers
// without the API get <mark>s.
const canHighlight = typeof CSS !== "undefined" && !!CSS.highlights && typeof Highlight === "function";

function sharedHighlight() {
  let hl = CSS.highlights.get(HIGHLIGHT);
  if (!hl) { hl = new Highlight(); CSS.highlights.set(HIGHLIGHT, hl); }
  return hl;
}

/** `text` with the [start, end) spans `marks` highlighted: one Text node, its ranges added to `ranges` (to be
 * registered by the caller), or without the Highlight API a fragment with <mark>s. */
export function highlightedText(text, marks, ranges) {
  if (!canHighlight) return markedText(text, marks);
  const node = document.createTextNode(text);
  for (const [a, b] of marks || []) {
    const r = new Range();
    r.setStart(node, Math.min(a, text.length)); r.setEnd(node, Math.min(b, text.length));
    ranges.push(r);
  }
  return node;
}

/** Index of the step holding trace token `t` (steps sorted by start), or -1. */
export function stepAt(steps, t) {
  let lo = 0, hi = steps.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid].start <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found >= 0 && t < steps[found].end ? found : -1;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

const STATUS = { finished: ["thinking finished", "ok"], budget: ["thinking budget reached", "warn"],
  cut: ["cut while thinking", "bad"], "no thinking": ["no thinking (instruct mode)", ""] };

// ---------------------------------------------------------------- the parts

function header(model) {
  const s = model.get("summary") || {}, [label, kind] = STATUS[s.status] || [s.status || "", ""];
  return h("div", { class: "tv-meta" }, h("span", { class: `badge ${kind}`, text: label }),
    s.finish_reason ? h("span", { text: `finish: ${s.finish_reason}` }) : null,
    h("span", { text: `${s.thinking_tokens ?? 0} thinking tokens` }), h("span", { text: `${s.answer_tokens ?? 0} answer tokens` }),
    s.tool_call_tokens ? h("span", { text: `${s.tool_call_tokens} tool-call tokens` }) : null,
    h("span", { text: plural(s.steps ?? 0, "step") }), h("span", { text: plural(s.backtracks ?? 0, "backtrack") }),
    s.answer != null ? h("span", {}, "answer ", h("b", { text: s.answer })) : h("span", { text: "no boxed answer" }));
}

// the strip: entropy bars (the highest in each pixel column, height ~ sqrt of entropy), log-probability as a band below, forking tokens in
// red, step boundaries, the answer's tokens shaded, the selected step highlighted
function drawStrip(canvas, model, data) {
  const W = Math.max(100, canvas.clientWidth || 720), H = 64, dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(W * dpr); canvas.height = H * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const [g0, g1] = model.get("span"), n = g1 - g0, { ent, lp } = data;
  const x = (t) => ((t - g0) / Math.max(n, 1)) * W, barH = 44;
  ctx.fillStyle = "#f4faf2"; ctx.fillRect(x(model.get("reasoning_end")), 0, W, H);
  const steps = model.get("steps") || [], sel = steps[model.get("selected_step")];
  if (sel) { ctx.fillStyle = "rgba(47,111,208,.14)"; ctx.fillRect(x(sel.start), 0, Math.max(1, x(sel.end) - x(sel.start)), H); }
  let emax = 0;
  for (const e of ent) if (e > emax) emax = e;
  for (let px = 0; px < W; px++) {
    const a = Math.floor((px * n) / W), b = Math.max(a + 1, Math.floor(((px + 1) * n) / W));
    let e = 0, l = 0;
    for (let i = a; i < b && i < n; i++) { if (ent[i] > e) e = ent[i]; if (lp[i] < l) l = lp[i]; }
    const hgt = emax > 0 ? Math.sqrt(e / emax) * barH : 0;          // sqrt: small entropies stay visible
    ctx.fillStyle = "#5b7fb8"; ctx.fillRect(px, barH - hgt, 1, hgt);
    ctx.fillStyle = `rgba(190, 40, 40, ${Math.min(1, 1 - Math.exp(l))})`; ctx.fillRect(px, barH + 6, 1, 10);
  }
  ctx.fillStyle = "rgba(0,0,0,.25)";
  for (const s of steps.slice(1)) ctx.fillRect(Math.floor(x(s.start)), 0, 1, barH + 2);
  ctx.fillStyle = "#d11";
  for (const f of model.get("forking") || []) {
    const fx = x(f.position + 0.5);
    ctx.beginPath(); ctx.moveTo(fx - 3, 0); ctx.lineTo(fx + 3, 0); ctx.lineTo(fx, 5); ctx.fill();
  }
}

// the token under the pointer: the one of highest entropy in its pixel column
function tokenAt(canvas, model, data, offsetX) {
  const [g0, g1] = model.get("span"), n = g1 - g0, W = canvas.clientWidth || 720;
  const px = Math.max(0, Math.min(W - 1, Math.floor(offsetX)));
  const a = Math.floor((px * n) / W), b = Math.max(a + 1, Math.floor(((px + 1) * n) / W));
  let best = a;
  for (let i = a; i < b && i < n; i++) if (data.ent[i] > data.ent[best]) best = i;
  return best < n ? g0 + best : -1;
}

// a step's row: one element, its first line the only text node (an opening marker highlighted). The number, the
// open/closed arrow, the size and a marker found inside are CSS generated content from its data-* attributes.
function stepRow(s, i, open, ranges) {
  const first = s.text.split("\n", 1)[0];
  const opens = s.opens_with_marker && s.marker && s.marks.length ? s.marks[0] : null;
  const inside = s.marker && !opens ? s.marker : null;
  const side = `${inside ? inside + " \u00b7 " : ""}${s.end - s.start} tok`;
  const preview = first.slice(0, 200 + (opens ? opens[1] : 0));
  return h("div", { class: `tv-step${s.backtrack ? " back" : ""}${inside ? " flag" : ""}${open ? " open" : ""}`,
    role: "button", tabindex: 0, "aria-expanded": String(open), "data-i": i, "data-n": i + 1, "data-side": side,
    style: `--side: ${side.length}`, title: inside ? `backtracking marker inside: ${inside}` : null },
    highlightedText(preview, opens ? [opens] : [], ranges));
}

// the opened step's whole text, its markers highlighted
const stepText = (s, ranges) => h("div", { class: "tv-text" }, highlightedText(s.text, s.marks, ranges));

// "steps 11-20 of 65" between the previous / next page buttons: built once, `update` sets its label and buttons
// (its nodes stay, so a button keeps the keyboard focus from page to page)
function pager(go) {
  const prev = h("button", { text: "\u2039", title: `previous ${PAGE} steps`, onclick: () => go(-1) });
  const next = h("button", { text: "\u203a", title: `next ${PAGE} steps`, onclick: () => go(1) });
  const label = document.createTextNode("");
  return { node: h("div", { class: "tv-pager" }, prev, label, next),
    update(page, n) {
      const a = page * PAGE;
      label.data = n ? `steps ${a + 1}\u2013${Math.min(n, a + PAGE)} of ${n}` : "no steps";
      prev.disabled = page <= 0; next.disabled = a + PAGE >= n;
    } };
}

function routingPanel(model) {
  const layers = model.get("layers") || [], E = model.get("num_experts"), i = model.get("selected_step");
  const panel = h("div", { class: "tv-routing" }, h("div", { class: "tv-label", text: "routing of the selected step" }));
  if (!layers.length) return panel.append(h("div", { class: "tv-top", text: model.get("routing_note") || "no routing" })), panel;
  const pick = h("select", { onchange: (e) => { model.set("layer", Number(e.target.value)); model.save_changes(); } },
    ...layers.map((m, l) => h("option", { value: l, selected: l === model.get("layer"), text: `MoE layer ${l} (model layer ${m})` })));
  panel.append(pick);
  const steps = model.get("steps") || [], all = uints(model.get("loads"));
  if (i < 0 || i >= steps.length || all.length < (i + 1) * E) return panel.append(h("div", { class: "tv-top", text: "select a step" })), panel;
  const row = Array.from(all.subarray(i * E, (i + 1) * E)), tokens = steps[i].end - steps[i].start, max = Math.max(1, ...row);
  const canvas = h("canvas", { width: 270, height: 60, title: "tokens routed to each expert in this layer" });
  const ctx = canvas.getContext("2d"), bw = 270 / E;
  row.forEach((c, e) => { ctx.fillStyle = "#2f6fd0"; ctx.fillRect(e * bw, 60 - (c / max) * 58, Math.max(1, bw - (bw > 3 ? 1 : 0)), (c / max) * 58); });
  const top = row.map((c, e) => [c, e]).sort((a, b) => b[0] - a[0]).slice(0, 5).filter(([c]) => c > 0);
  panel.append(canvas, h("div", { class: "tv-top", text: top.length ? "top: " + top.map(([c, e]) =>
    `expert ${e} (${c}/${tokens} tok)`).join(", ") : "no routed tokens in this step" }));
  return panel;
}

// ---------------------------------------------------------------- the step list, a page at a time

// The list of the steps, PAGE rows at a time: its DOM stays this size however long the run. Its state: the page
// shown, the steps opened (kept across pages) and the highlight ranges of what is on screen (dropped with it).
// A click (or Enter / Space) on a row opens or closes it and selects the step.
function stepList(model, select) {
  const steps = () => model.get("steps") || [];
  const open = new Set(), texts = new Map();            // texts: step -> { div, ranges } of the opened ones on this page
  let page = 0, rowRanges = [];
  const box = h("div", { class: "tv-steps" });
  const bar = pager((dir) => { page += dir; draw(); box.scrollTop = 0; });
  const node = h("div", { class: "tv-list" }, bar.node, box);
  const addRanges = (rs) => { if (canHighlight) for (const r of rs) sharedHighlight().add(r); };
  const dropRanges = (rs) => { if (canHighlight) for (const r of rs) sharedHighlight().delete(r); };

  function showText(row, i) {
    const ranges = [], div = stepText(steps()[i], ranges);
    row.after(div); addRanges(ranges); texts.set(i, { div, ranges });
  }
  function hideText(i) {
    const t = texts.get(i);
    if (t) { t.div.remove(); dropRanges(t.ranges); texts.delete(i); }
  }
  function draw() {
    for (const i of [...texts.keys()]) hideText(i);
    dropRanges(rowRanges); rowRanges = [];
    const all = steps(), rows = [];
    for (let i = page * PAGE; i < Math.min(all.length, (page + 1) * PAGE); i++)
      rows.push(stepRow(all[i], i, open.has(i), rowRanges));
    box.replaceChildren(...(rows.length ? rows : [h("div", { text: "no reasoning in this step" })]));
    addRanges(rowRanges);
    for (const row of rows) if (open.has(Number(row.dataset.i))) showText(row, Number(row.dataset.i));
    bar.update(page, all.length);
    marks();
  }
  function marks() {                                    // the selected step's row
    const sel = model.get("selected_step");
    for (const row of box.querySelectorAll(".tv-step")) row.classList.toggle("sel", Number(row.dataset.i) === sel);
  }
  function toggle(row) {
    const i = Number(row.dataset.i), opening = !open.has(i);
    if (opening) { open.add(i); showText(row, i); } else { open.delete(i); hideText(i); }
    row.classList.toggle("open", opening); row.setAttribute("aria-expanded", String(opening));
    select(i);
  }
  const rowOf = (e) => e.target.closest && e.target.closest(".tv-step");
  box.addEventListener("click", (e) => { const row = rowOf(e); if (row) toggle(row); });
  box.addEventListener("keydown", (e) => {
    const row = rowOf(e);
    if (row && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); toggle(row); }
  });
  return {
    node, marks,
    /** a new list of steps: all closed, on the page of the selected step */
    reset() { open.clear(); const i = model.get("selected_step"); page = i >= 0 && i < steps().length ? Math.floor(i / PAGE) : 0; draw(); },
    /** step i's row, its page shown first (a selection made elsewhere: the strip, the kernel, a linked view) */
    show(i) {
      if (i < 0 || i >= steps().length) return null;
      if (Math.floor(i / PAGE) !== page) { page = Math.floor(i / PAGE); draw(); }
      return box.querySelector(`.tv-step[data-i="${i}"]`);
    },
    destroy() { for (const i of [...texts.keys()]) hideText(i); dropRanges(rowRanges); rowRanges = []; },
  };
}

// ---------------------------------------------------------------- the widget

export default {
  render({ model, el }) {
    const root = h("div", { class: "cl-tv" }, h("style", { text: STYLE }));
    el.append(root);
    let data = { ent: new Float32Array(0), lp: new Float32Array(0) };
    const head = h("div"), canvas = h("canvas", { class: "tv-strip" }), hover = h("div", { class: "tv-hover", text: " " });
    const select = (i) => {
      const s = (model.get("steps") || [])[i];
      model.set("selected_step", s ? i : -1); model.set("selected", s ? [s.start, s.end] : []); model.save_changes();
    };
    const list = stepList(model, select);
    let side = h("div");
    root.append(head, canvas, hover, h("div", { class: "tv-body" }, list.node, side));
    const strip = () => drawStrip(canvas, model, data);
    const marks = () => {
      list.marks();
      strip();
      const panel = routingPanel(model);
      side.replaceWith(panel);
      side = panel;
    };
    const selected = () => { list.show(model.get("selected_step")); marks(); };
    const all = () => {
      data = { ent: floats(model.get("entropy")), lp: floats(model.get("logprob")) };
      head.replaceChildren(header(model));
      list.reset();
      marks();
    };
    canvas.addEventListener("mousemove", (e) => {
      const t = tokenAt(canvas, model, data, e.offsetX), g0 = model.get("span")[0];
      if (t < 0) return;
      const fmt = (v) => (Number.isFinite(v) ? v.toFixed(3) : "–");
      hover.textContent = `token ${t}  ${JSON.stringify(model.get("tokens")[t - g0] ?? "")}  entropy ${fmt(data.ent[t - g0])}  logprob ${fmt(data.lp[t - g0])}`;
    });
    canvas.addEventListener("click", (e) => {
      const i = stepAt(model.get("steps") || [], tokenAt(canvas, model, data, e.offsetX));
      if (i < 0) return;
      select(i);
      const row = list.show(i);                        // (the change event shows it too; a model that does not echo)
      if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
    });
    const handlers = [["change:steps change:entropy change:logprob change:summary change:span change:forking", all],
      ["change:selected_step", selected], ["change:loads change:layer change:layers", marks]];
    for (const [ev, f] of handlers) model.on(ev, f);
    const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => strip());
    if (resize) resize.observe(canvas);
    all();
    el.dataset.ready = "1";
    return () => { for (const [ev, f] of handlers) model.off(ev, f); if (resize) resize.disconnect(); list.destroy(); };
  },
};
