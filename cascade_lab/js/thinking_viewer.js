// The thinking viewer's front end (cascade_lab.stepper.ThinkingViewer): a plain ES module, no build step, no library.
// Model traits read: steps, span, reasoning_end, tokens, entropy / logprob (float32 per token of `span`), forking,
// summary, layers, num_experts, layer, loads (uint32 [steps, experts] in `layer`), routing_note, selected_step.
// Written: selected_step and selected (the step's token range), layer.
// Long runs stay cheap: the per-token figures are drawn on one canvas (a pixel column holds many tokens), and the
// steps are one node each, their full text rendered only when opened.

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
.cl-tv .tv-steps { flex: 1; min-width: 0; max-height: 30em; overflow: auto; }
.cl-tv details.tv-step { border-left: 3px solid transparent; padding: 1px 4px; }
.cl-tv details.tv-step.back { border-left-color: #e0a100; }
.cl-tv details.tv-step.sel { background: #eef4ff; border-left-color: #2f6fd0; }
.cl-tv details.tv-step > summary { cursor: pointer; display: flex; gap: 6px; align-items: baseline; list-style: none; }
.cl-tv details.tv-step > summary::-webkit-details-marker { display: none; }
.cl-tv details.tv-step > summary::before { content: "\\25B8"; color: #888; width: .8em; flex: none; }
.cl-tv details.tv-step[open] > summary::before { content: "\\25BE"; }
.cl-tv .tv-num { min-width: 1.8em; color: #888; font-variant-numeric: tabular-nums; flex: none; }
.cl-tv .tv-prev { flex: 1; min-width: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.cl-tv .tv-size { color: #999; font-size: 11px; flex: none; }
.cl-tv mark.tv-flag { flex: none; font-size: 11px; }
.cl-tv .tv-text { white-space: pre-wrap; padding: 2px 0 6px 2.6em; }
.cl-tv mark { background: #ffe08a; border-radius: 2px; padding: 0 1px; }
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

function stepNode(s, i, select) {
  const first = s.text.split("\n", 1)[0];
  const opens = s.opens_with_marker && s.marker;
  const preview = h("span", { class: "tv-prev" }, opens ? h("mark", { text: s.marker }) : null,
    (opens ? first.slice(s.marker.length) : first).slice(0, 200));
  const flag = s.marker && !opens ? h("mark", { class: "tv-flag", text: s.marker, title: "backtracking marker inside" }) : null;
  const summary = h("summary", {}, h("span", { class: "tv-num", text: `${i + 1}` }), preview, flag,
    h("span", { class: "tv-size", text: `${s.end - s.start} tok` }));
  const node = h("details", { class: `tv-step${s.backtrack ? " back" : ""}`, "data-i": i }, summary);
  summary.addEventListener("click", () => select(i));
  node.addEventListener("toggle", () => {
    if (node.open && !node.querySelector(".tv-text")) node.append(h("div", { class: "tv-text" }, markedText(s.text, s.marks)));
  });
  return node;
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

// ---------------------------------------------------------------- the widget

export default {
  render({ model, el }) {
    const root = h("div", { class: "cl-tv" }, h("style", { text: STYLE }));
    el.append(root);
    let data = { ent: new Float32Array(0), lp: new Float32Array(0) };
    const head = h("div"), canvas = h("canvas", { class: "tv-strip" }), hover = h("div", { class: "tv-hover", text: " " });
    let side = h("div");
    const list = h("div", { class: "tv-steps" }), body = h("div", { class: "tv-body" }, list, side);
    root.append(head, canvas, hover, body);
    const select = (i) => {
      const s = (model.get("steps") || [])[i];
      model.set("selected_step", s ? i : -1); model.set("selected", s ? [s.start, s.end] : []); model.save_changes();
    };
    const strip = () => drawStrip(canvas, model, data);
    const marks = () => {
      for (const d of list.children) d.classList.toggle("sel", Number(d.dataset.i) === model.get("selected_step"));
      strip();
      const panel = routingPanel(model);
      side.replaceWith(panel);
      side = panel;
    };
    const all = () => {
      data = { ent: floats(model.get("entropy")), lp: floats(model.get("logprob")) };
      head.replaceChildren(header(model));
      const steps = model.get("steps") || [];
      list.replaceChildren(...(steps.length ? steps.map((s, i) => stepNode(s, i, select)) : [h("div", { text: "no reasoning in this step" })]));
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
      if (i >= 0) { select(i); const d = list.children[i]; if (d && d.scrollIntoView) d.scrollIntoView({ block: "nearest" }); }
    });
    const handlers = [["change:steps change:entropy change:logprob change:summary change:span change:forking", all],
      ["change:selected_step change:loads change:layer change:layers", marks]];
    for (const [ev, f] of handlers) model.on(ev, f);
    const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => strip());
    if (resize) resize.observe(canvas);
    all();
    el.dataset.ready = "1";
    return () => { for (const [ev, f] of handlers) model.off(ev, f); if (resize) resize.disconnect(); };
  },
};
