// The TIR stepper's front end (cascade_lab.stepper.TIRStepper): a plain ES module, no build step, no library.
// Model traits read: steps, index, speed, playing, summary, layers, num_experts, loads (uint32 [steps, layers,
// experts]), routing_note, status, running, live_text, live_output, error. Written: index, playing, speed.
// Custom message sent: {type: "stop"} (the Stop button).

const STYLE = `
.cl-ts { font: 13px/1.45 var(--jp-ui-font-family, system-ui, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 10px 12px; max-width: 980px; outline: none; }
.cl-ts .ts-problem { font-weight: 600; margin-bottom: 2px; white-space: pre-wrap; max-height: 4.5em; overflow: auto; }
.cl-ts .ts-meta { color: var(--jp-ui-font-color2, #666); display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
.cl-ts .badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 11px; background: #eee; color: #333; }
.cl-ts .badge.ok { background: #dff3df; color: #1d6b1d; } .cl-ts .badge.bad { background: #fbe0e0; color: #9b1c1c; }
.cl-ts .badge.warn { background: #fff1cc; color: #7a5600; } .cl-ts .badge.run { background: #dbe9ff; color: #1b4f9c; }
.cl-ts .ts-controls { display: flex; gap: 4px; align-items: center; margin: 8px 0; flex-wrap: wrap; }
.cl-ts button { font: inherit; padding: 1px 8px; border: 1px solid #bbb; border-radius: 4px; background: #fafafa; cursor: pointer; }
.cl-ts button:disabled { opacity: .4; cursor: default; } .cl-ts button.stop { border-color: #c33; color: #c33; }
.cl-ts .ts-pos { min-width: 6.5em; text-align: center; font-variant-numeric: tabular-nums; }
.cl-ts input.ts-speed { width: 5em; font: inherit; }
.cl-ts .ts-card { border-top: 1px solid var(--jp-border-color2, #ddd); padding-top: 6px; }
.cl-ts .ts-title { font-weight: 600; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.cl-ts .ts-times { font-weight: normal; color: var(--jp-ui-font-color2, #666); font-size: 12px; }
.cl-ts .ts-label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #888; margin-top: 8px; }
.cl-ts .ts-label span { text-transform: none; letter-spacing: 0; }
.cl-ts .ts-reasoning, .cl-ts .ts-answer { white-space: pre-wrap; max-height: 22em; overflow: auto; }
.cl-ts .ts-answer { font-weight: 600; }
.cl-ts pre { margin: 2px 0; padding: 6px 8px; border-radius: 4px; max-height: 24em; overflow: auto; white-space: pre-wrap;
  font: 12px/1.4 var(--jp-code-font-family, ui-monospace, monospace); }
.cl-ts pre.ts-code { background: #f6f8fa; } .cl-ts pre.ts-out { background: #fcfcf4; border-left: 3px solid #d8d3a8; }
.cl-ts pre.ts-live { background: #f4f8ff; border-left: 3px solid #8fb3e8; }
.cl-ts pre.ts-live::after, .cl-ts pre.ts-out.running::after { content: "\\2588"; animation: ts-blink 1s steps(1) infinite; color: #8fb3e8; }
@keyframes ts-blink { 50% { opacity: 0; } }
.cl-ts .ts-err { color: #9b1c1c; white-space: pre-wrap; }
.cl-ts .kw { color: #8a2be2; font-weight: 600; } .cl-ts .bi { color: #0b6e99; } .cl-ts .str { color: #a31515; }
.cl-ts .com { color: #6a737d; font-style: italic; } .cl-ts .num { color: #098658; }
.cl-ts .ts-routing { margin-top: 8px; } .cl-ts canvas.ts-heat { display: block; cursor: crosshair; image-rendering: pixelated; }
.cl-ts .ts-legend { color: var(--jp-ui-font-color2, #666); font-size: 12px; min-height: 1.4em; }
.cl-ts img.ts-img { max-width: 100%; display: block; margin: 4px 0; }
`;

// ---------------------------------------------------------------- a tiny Python highlighter

const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else except " +
  "finally for from global if import in is lambda nonlocal not or pass raise return try while with yield match case").split(" "));
const BUILTINS = new Set(("print range len int float str list dict set tuple sum min max abs round sorted enumerate " +
  "zip map filter any all open isinstance type pow divmod reversed").split(" "));
// comments | strings (optional prefix; triple quotes first; an unclosed one runs to the end) | numbers | names
const TOKEN = new RegExp([
  /(#[^\n]*)/.source,
  /((?:\b[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$(?![\s\S]))|'''[\s\S]*?(?:'''|$(?![\s\S]))|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?))/.source,
  /(\b(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?[jJ]?)|\.\d[\d_]*(?:[eE][+-]?\d+)?[jJ]?)/.source,
  /([A-Za-z_]\w*)/.source,
].join("|"), "g");

export function escapeHtml(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** Python source as HTML: keywords, builtins, strings, comments and numbers in spans (classes kw, bi, str, com, num). */
export function highlightPython(code) {
  let html = "", last = 0;
  for (const m of String(code).matchAll(TOKEN)) {
    html += escapeHtml(code.slice(last, m.index));
    const [text, com, str, num, name] = m;
    const cls = com ? "com" : str ? "str" : num ? "num" : KEYWORDS.has(name) ? "kw" : BUILTINS.has(name) ? "bi" : null;
    html += cls ? `<span class="${cls}">${escapeHtml(text)}</span>` : escapeHtml(text);
    last = m.index + text.length;
  }
  return html + escapeHtml(String(code).slice(last));
}

// ---------------------------------------------------------------- small helpers

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "html") node.innerHTML = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null && c !== false) node.append(c);
  return node;
}

/** A binary trait (DataView, ArrayBuffer or typed array) as a Uint32Array (copied: alignment is not guaranteed). */
export function uints(v) {
  if (!v) return new Uint32Array(0);
  const buf = v instanceof ArrayBuffer ? v : v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
  return new Uint32Array(buf, 0, Math.floor(buf.byteLength / 4));
}

const seconds = (s) => (s == null ? "–" : s < 0.01 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`);
const badge = (text, kind = "") => h("span", { class: `badge ${kind}`, text });

// ---------------------------------------------------------------- the parts of the widget

function header(model) {
  const s = model.get("summary") || {}, status = model.get("status");
  const meta = h("div", { class: "ts-meta" });
  if (status === "running") meta.append(badge("running", "run"));
  if (status === "failed") meta.append(badge("failed", "bad"));
  if (s.answer != null) meta.append(h("span", {}, "answer ", h("b", { text: s.answer }), " ",
    s.correct == null ? "" : badge(s.correct ? "correct" : "wrong", s.correct ? "ok" : "bad")));
  if (s.stop_reason) meta.append(badge(`stop: ${s.stop_reason}`, s.stop_reason === "answer" ? "ok" : "warn"));
  const n = (model.get("steps") || []).length;
  meta.append(h("span", { text: `${n} step${n === 1 ? "" : "s"}` }));
  if (s.tool_calls != null) meta.append(h("span", { text: `${s.tool_calls} tool call${s.tool_calls === 1 ? "" : "s"}` }));
  if (s.generated != null) meta.append(h("span", { text: `${s.generated} tokens generated` }));
  if (s.seconds != null) meta.append(h("span", { text: seconds(s.seconds) }));
  if (s.model) meta.append(h("span", { text: s.model }));
  if (model.get("running")) meta.append(h("button", { class: "stop", text: "■ Stop", title: "stop the run",
    onclick: (e) => { e.target.disabled = true; model.send({ type: "stop" }); } }));
  const err = model.get("error");
  return h("div", { class: "ts-head" }, s.problem ? h("div", { class: "ts-problem", text: s.problem }) : null, meta,
    err ? h("div", { class: "ts-err", text: err }) : null);
}

function controls(model, go) {
  const n = (model.get("steps") || []).length, i = model.get("index"), playing = model.get("playing");
  const btn = (text, title, to, disabled) => h("button", { text, title, disabled: disabled || n === 0, onclick: () => go(to) });
  const speed = h("input", { class: "ts-speed", type: "number", min: 20, step: 100, value: model.get("speed"), title: "ms per step",
    onchange: (e) => { model.set("speed", Math.max(20, Number(e.target.value) || 800)); model.save_changes(); } });
  const play = h("button", { class: "ts-play", text: playing ? "Pause" : "▶ Play", disabled: n < 2,
    onclick: () => {
      if (!model.get("playing") && model.get("index") >= n - 1) model.set("index", 0);   // from the start again
      model.set("playing", !model.get("playing")); model.save_changes();
    } });
  return h("div", { class: "ts-controls" },
    btn("«", "first step", 0, i <= 0), btn("‹", "previous step", i - 1, i <= 0),
    h("span", { class: "ts-pos", text: n ? `step ${i + 1} / ${n}` : "no steps yet" }),
    btn("›", "next step", i + 1, i >= n - 1), btn("»", "last step", n - 1, i >= n - 1),
    play, h("label", {}, " ", speed, " ms/step"));
}

function callNode(call, j, model) {
  const flags = [call.error ? badge(call.error.length > 60 ? "error" : call.error, "bad") : null,
    call.timed_out ? badge("timed out", "bad") : null, call.restarted ? badge("kernel restarted", "warn") : null,
    call.truncated ? badge("output cut", "warn") : null, call.running ? badge("running", "run") : null,
    call.seconds != null ? h("span", { class: "ts-times", text: seconds(call.seconds) }) : null];
  const out = call.running ? model.get("live_output") : call.output;
  return h("div", { class: "ts-call" },
    h("div", { class: "ts-label" }, `tool call ${j + 1} `, call.name ? h("span", { text: call.name }) : null, " ", ...flags),
    h("pre", { class: "ts-code", html: highlightPython(call.code || "") }),
    out != null && (out !== "" || call.running) ? h("pre", { class: `ts-out${call.running ? " running" : ""}`, text: out }) : null,
    call.error && call.error.length > 60 ? h("div", { class: "ts-err", text: call.error }) : null,
    ...(call.images || []).map((im) => h("img", { class: "ts-img", src: `data:${im.mime};base64,${im.data}` })));
}

function card(model) {
  const steps = model.get("steps") || [], st = steps[model.get("index")];
  if (!st) return h("div", { class: "ts-card" }, model.get("running") ? "waiting for the first token…" : "no steps");
  const times = `generate ${seconds(st.generate_s)} · tools ${seconds(st.tools_s)}` +
    (st.tokens && st.tokens.length ? ` · tokens ${st.tokens[0]}–${st.tokens[1]}` : "");
  const title = h("div", { class: "ts-title" }, `Step ${st.index + 1}`,
    st.finish_reason ? badge(st.finish_reason, st.finish_reason === "length" || st.finish_reason === "stopped" ? "warn" : "") : null,
    st.live ? badge("in progress", "run") : null, h("span", { class: "ts-times", text: times }));
  const parts = [title];
  if (st.live && st.reasoning == null) parts.push(h("pre", { class: "ts-live", text: model.get("live_text") }));
  if (st.reasoning) parts.push(h("div", { class: "ts-label", text: "reasoning" }), h("div", { class: "ts-reasoning", text: st.reasoning }));
  (st.calls || []).forEach((c, j) => parts.push(callNode(c, j, model)));
  if (st.content) parts.push(h("div", { class: "ts-label", text: "answer" }), h("div", { class: "ts-answer", text: st.content }));
  for (const e of st.errors || []) parts.push(h("div", { class: "ts-err", text: `parse: ${e}` }));
  return h("div", { class: "ts-card" }, ...parts);
}

// the routing of the step's tokens: a heat map of MoE layers (rows) by experts (columns); hover a row for its top experts
function routing(model) {
  const L = (model.get("layers") || []).length, E = model.get("num_experts"), i = model.get("index");
  const all = uints(model.get("loads")), off = i * L * E;
  if (!L || !E || all.length < off + L * E) {
    const note = model.get("routing_note");
    return h("div", { class: "ts-routing ts-legend", text: note ? `routing: ${note}` : "" });
  }
  const load = all.subarray(off, off + L * E), cw = Math.max(2, Math.min(24, Math.floor(640 / E))), ch = Math.max(4, Math.min(14, Math.floor(140 / L)));
  const canvas = h("canvas", { class: "ts-heat", width: E * cw, height: L * ch, title: "expert load: MoE layers (rows) x experts" });
  const ctx = canvas.getContext("2d");
  for (let l = 0; l < L; l++) {
    let max = 0;
    for (let e = 0; e < E; e++) max = Math.max(max, load[l * E + e]);
    for (let e = 0; e < E; e++) {
      const v = max ? load[l * E + e] / max : 0;
      ctx.fillStyle = `rgba(28, 86, 170, ${0.06 + 0.94 * v})`;
      ctx.fillRect(e * cw, l * ch, cw - (cw > 3 ? 1 : 0), ch - 1);
    }
  }
  const legend = h("div", { class: "ts-legend" });
  const describe = (l) => {
    const row = Array.from(load.subarray(l * E, (l + 1) * E)), total = row.reduce((a, b) => a + b, 0);
    const top = row.map((c, e) => [c, e]).sort((a, b) => b[0] - a[0]).slice(0, 5).filter(([c]) => c > 0);
    legend.textContent = `MoE layer ${l} (model layer ${model.get("layers")[l]}): ` +
      (top.length ? top.map(([c, e]) => `expert ${e} ${(100 * c / total).toFixed(0)}%`).join(", ") : "no routed tokens");
  };
  canvas.addEventListener("mousemove", (ev) => describe(Math.min(L - 1, Math.max(0, Math.floor(ev.offsetY / ch)))));
  describe(0);
  return h("div", { class: "ts-routing" }, h("div", { class: "ts-label", text: "expert load of this step's tokens" }), canvas, legend);
}

// ---------------------------------------------------------------- the widget

export default {
  render({ model, el }) {
    const root = h("div", { class: "cl-ts", tabindex: 0 }, h("style", { text: STYLE }));
    el.append(root);
    let timer = null;
    const n = () => (model.get("steps") || []).length;
    const go = (i) => { model.set("index", Math.max(0, Math.min(i, n() - 1))); model.save_changes(); };
    const slots = { head: h("div"), controls: h("div"), card: h("div"), routing: h("div") };
    root.append(...Object.values(slots));
    const fill = (name, node) => { const old = slots[name]; slots[name] = node; old.replaceWith(node); };
    const drawStep = () => { fill("controls", controls(model, go)); fill("card", card(model)); fill("routing", routing(model)); };
    const drawAll = () => { fill("head", header(model)); drawStep(); };
    const schedule = () => {
      clearTimeout(timer);
      if (model.get("playing")) timer = setTimeout(tick, model.get("speed"));
    };
    const tick = () => {
      if (model.get("index") < n() - 1) model.set("index", model.get("index") + 1);
      else model.set("playing", false);
      model.save_changes();
      schedule();
    };
    const liveText = () => { const pre = root.querySelector("pre.ts-live"); if (pre) pre.textContent = model.get("live_text"); };
    const liveOutput = () => { const pre = root.querySelector("pre.ts-out.running"); if (pre) pre.textContent = model.get("live_output"); else drawStep(); };
    const onKey = (e) => {
      const to = { ArrowLeft: model.get("index") - 1, ArrowRight: model.get("index") + 1, Home: 0, End: n() - 1 }[e.key];
      if (to !== undefined) { e.preventDefault(); go(to); }
    };
    root.addEventListener("keydown", onKey);
    const handlers = [["change:steps change:summary change:status change:running change:error change:loads change:layers", drawAll],
      ["change:index", drawStep], ["change:playing", () => { drawStep(); schedule(); }], ["change:live_text", liveText],
      ["change:live_output", liveOutput]];
    for (const [ev, f] of handlers) model.on(ev, f);
    drawAll();
    schedule();
    el.dataset.ready = "1";
    return () => { clearTimeout(timer); for (const [ev, f] of handlers) model.off(ev, f); };
  },
};
