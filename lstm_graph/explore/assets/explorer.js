/* lstm-graph explorer: one run of a cell, moved through the cell's own diagram.
 *
 * Everything shown comes from the JSON in #lstm-graph-trace (see
 * lstm_graph/explore/data.py for its keys); nothing is fetched. The diagrams are
 * Graphviz's SVG with tags the page builder added: data-id (a node's DOT name),
 * data-node (the assignment a value node draws), data-stage, data-a/data-b on
 * edges (the two nodes whose highlight lights the edge), and the strip cells
 * polygon.u[data-u], which this script colours at every step.
 */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("lstm-graph-trace").textContent);
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const T = D.steps.length;
  const S = D.stages.length;
  const SHOWN = 48; // numbers a tip lists at once

  // What is shown: the style, the step and sequence (indices into D.steps and D.batch),
  // the stage being played (0: none), the highlighted path, the unit the plots follow.
  const view = { style: "pipe", t: 0, b: 0, stage: 0, litFrom: null, unit: 0 };

  // ---- numbers and colours ----------------------------------------------------------

  const stops = D.scale.stops.map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));

  /* The colour of v on the scale [-range, range] as [r, g, b]: the same stops and
     rounding as lstm_graph.render.palette.heat, so page and static diagrams agree. */
  function rgb(v, range) {
    if (v === null || Number.isNaN(v)) return [1, 3, 5].map((i) => parseInt(D.scale.nan.slice(i, i + 2), 16));
    const p = (Math.min(Math.max(v / range, -1), 1) + 1) / 2 * (stops.length - 1);
    const lo = Math.min(Math.floor(p), stops.length - 2);
    const f = p - lo;
    return stops[lo].map((a, i) => Math.floor(a + (stops[lo + 1][i] - a) * f + 0.5));
  }
  function heat(v, range) {
    return "#" + rgb(v, range || D.scale.range).map((c) => c.toString(16).padStart(2, "0")).join("");
  }
  /* JSON null is NaN; the shortest decimal of the run's dtype prints back unchanged, the
     sign of a zero too (String(-0) is "0"). */
  const text = (v) => (v === null || Number.isNaN(v) ? "NaN" : Object.is(v, -0) ? "-0" : String(v));
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  /* v to 2 significant digits, up: the scale a heatmap states holds its largest value. */
  function roundUp(v) {
    const unit = 10 ** (Math.floor(Math.log10(v)) - 1);
    return Number((Math.ceil(v / unit - 1e-9) * unit).toPrecision(2));
  }
  /* Mean of units [a, b) of a vector; NaN (null) anywhere makes it NaN, as numpy.mean. */
  function meanOf(vec, a, b) {
    let sum = 0;
    for (let k = a; k < b; k++) {
      if (vec[k] === null) return NaN;
      sum += vec[k];
    }
    return sum / (b - a);
  }
  const vector = (name) => D.values[name][view.t][view.b];

  // ---- the diagrams ---------------------------------------------------------------------

  /* Colour every strip cell with its units' mean at the step shown; data-v keeps the
     number (the exact value where a cell is one unit). */
  function paintStrips() {
    for (const g of $$("svg.diagram g.node[data-node]")) {
      const name = g.dataset.node;
      const vec = vector(name);
      const bins = D.strips[name];
      for (const cell of $$("polygon.u", g)) {
        const [a, b] = bins[+cell.dataset.u];
        const m = b - a === 1 ? vec[a] : meanOf(vec, a, b);
        cell.setAttribute("fill", heat(m));
        cell.dataset.v = text(m);
      }
    }
  }

  /* The stage player: nodes of the stage being played glow, earlier ones are done,
     later ones wait (faded), as the schedule orders one step. */
  function paintStages() {
    for (const g of $$("svg.diagram g.node[data-stage]")) {
      const stages = g.dataset.stage.split(" ").map(Number); // a box may draw two values
      g.classList.toggle("now", view.stage > 0 && stages.includes(view.stage));
      g.classList.toggle("done", view.stage > 0 && stages.every((s) => s < view.stage));
      g.classList.toggle("later", view.stage > 0 && stages.every((s) => s > view.stage));
    }
    $$("#stages li").forEach((li, k) => {
      li.classList.toggle("now", k + 1 === view.stage);
      li.classList.toggle("done", view.stage > 0 && k + 1 < view.stage);
    });
  }

  /* The highlighted path in each style: the nodes D.lit lists for what was clicked (or
     a preset's), and the edges whose two ends are both lit, as render --highlight. */
  function paintLit() {
    for (const svg of $$("svg.diagram")) {
      const ids = litIds(svg.dataset.style);
      const lit = ids && new Set(ids);
      for (const g of $$("g.node", svg)) {
        if (g.dataset.id === "[legend]") continue;
        const on = !!lit && lit.has(g.dataset.id);
        g.classList.toggle("lit", on);
        g.classList.toggle("dim", !!lit && !on);
      }
      for (const g of $$("g.edge", svg)) {
        const on = !!lit && lit.has(g.dataset.a) && lit.has(g.dataset.b);
        g.classList.toggle("lit", on);
        g.classList.toggle("dim", !!lit && !on);
      }
    }
    $$("#presets button").forEach((b) => {
      const on = view.litFrom === "preset:" + b.dataset.preset;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", String(on));
    });
  }
  function litIds(style) {
    if (view.litFrom === null) return null;
    if (view.litFrom.startsWith("preset:")) return D.presets[view.litFrom.slice(7)].lit[style];
    return D.lit[style][view.litFrom] || [];
  }

  // ---- the panel of one node's numbers, and the hover tip ------------------------------

  function describe(name, hot) {
    const a = D.assignments[name];
    const vec = vector(name);
    const finite = vec.filter((v) => v !== null);
    const stats = finite.length
      ? `mean ${text(Number(meanOf(vec, 0, vec.length).toPrecision(6)))}, ` +
        `min ${text(Math.min(...finite))}, max ${text(Math.max(...finite))}`
      : "NaN";
    // SHOWN numbers: the first ones, or those around the strip cell hovered; all of that
    // cell's where it stands for more (a wide value's strip cell holds many units).
    const wide = hot ? hot[1] - hot[0] > SHOWN - 8 : false;
    const count = wide ? Math.max(SHOWN, hot[1] - hot[0]) : SHOWN;
    const start = vec.length <= count ? 0 : Math.max(0, Math.min(vec.length - count, hot ? hot[0] - (wide ? 0 : 8) : 0));
    const shown = vec.slice(start, start + count);
    const cells = shown.map((v, i) => {
      const k = start + i;
      return `<span${hot && k >= hot[0] && k < hot[1] ? ' class="hot"' : ""}><i>${k}</i> ${esc(text(v))}</span>`;
    });
    // Columns as wide as the widest "index value" (float64 numbers take 17 digits and more).
    const chars = Math.max(0, ...shown.map((v, i) => String(start + i).length + 1 + text(v).length));
    const cut = D.kept.units !== null && D.widths[name] > vec.length ? ` (first ${vec.length} of ${D.widths[name]} units)` : "";
    const range = vec.length > count ? `<div class="muted">units ${start} to ${start + shown.length - 1} of ${vec.length}: hover the strip to move</div>` : "";
    return `<div><b>${esc(name)}</b> = <span class="expr">${esc(a.expression)}</span></div>` +
      (a.caption ? `<div class="muted">${esc(a.caption)}</div>` : "") +
      `<div>stage ${a.stage} &middot; step ${D.steps[view.t]}, sequence ${D.batch[view.b]}${cut}</div>` +
      `<div>${stats}</div>${range}<div class="grid" style="--chars: ${chars}">${cells.join("")}</div>`;
  }
  /* Every value a node draws (a box of a linear and its activation draws both), its own
     first, with the strip cell hovered marked in it. */
  const describeAll = ([names, hot]) =>
    names.map((name, k) => describe(name, k === 0 ? hot : null)).join('<hr class="sep">');
  const tip = $("#tip");
  let hovered = null; // [the node's values, its own first; [a, b] or null]
  /* The tip beside the point (left, top) of the window: below it and to its right where
     it fits, above it where it would run off the bottom. */
  function showTip(left, top) {
    if (!hovered) return;
    tip.innerHTML = describeAll(hovered);
    tip.hidden = false;
    const x = Math.max(8, Math.min(left + 14, window.innerWidth - tip.offsetWidth - 8));
    const y = top + 14 + tip.offsetHeight > window.innerHeight ? top - tip.offsetHeight - 10 : top + 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  // ---- over time: heatmaps of every value, and each state's chosen unit ----------------

  /* One canvas per value: a column per step, a row per unit, on a scale of ±R, R the
     value's largest magnitude in this sequence (so small values still show). */
  function drawHeatmaps() {
    const box = $("#heatmaps");
    box.textContent = "";
    for (const name of Object.keys(D.values)) {
      const W = D.values[name][0][0].length;
      let range = 0;
      for (let t = 0; t < T; t++) for (const v of D.values[name][t][view.b]) if (v !== null && Number.isFinite(v)) range = Math.max(range, Math.abs(v));
      range = roundUp(range || 1);
      const fig = document.createElement("figure");
      const caption = D.assignments[name].caption;
      fig.innerHTML = `<figcaption><span><b>${esc(name)}</b> ${caption ? "&middot; " + esc(caption) : ""}</span>` +
        `<span class="muted">units &times; steps, &plusmn;${esc(String(range))}</span></figcaption>` +
        `<div class="map" data-name="${esc(name)}"><canvas width="${T}" height="${W}"></canvas><div class="cursor"></div><div class="unit-mark"></div></div>`;
      const ctx = $("canvas", fig).getContext("2d");
      const image = ctx.createImageData(T, W);
      for (let t = 0; t < T; t++) {
        const vec = D.values[name][t][view.b];
        for (let u = 0; u < W; u++) {
          const [r, g, b] = rgb(vec[u], range);
          const at = 4 * (u * T + t);
          image.data.set([r, g, b, 255], at);
        }
      }
      ctx.putImageData(image, 0, 0);
      $(".map", fig).addEventListener("click", (event) => {
        const box = event.currentTarget.getBoundingClientRect();
        setUnit(Math.floor((event.clientY - box.top) / box.height * W));
        setStep(Math.floor((event.clientX - box.left) / box.width * T));
      });
      box.appendChild(fig);
    }
    placeCursors();
  }
  function placeCursors() {
    for (const map of $$(".heatmaps .map")) {
      const W = D.values[map.dataset.name][0][0].length;
      Object.assign($(".cursor", map).style, { left: (100 * view.t / T) + "%", width: (100 / T) + "%" });
      const mark = $(".unit-mark", map);
      mark.hidden = view.unit >= W;
      mark.style.top = (100 * (view.unit + 0.5) / W) + "%";
    }
  }

  /* Each state's value of the chosen unit over the steps, with the step shown marked. */
  function drawLines() {
    const box = $("#lines");
    box.textContent = "";
    const w = 380, h = 140, left = 34, right = 8, top = 16, bottom = 18;
    for (const state of D.states) {
      if (!(state in D.values)) continue;
      const series = D.steps.map((_, t) => D.values[state][t][view.b][view.unit]);
      if (series[0] === undefined) continue; // a state narrower than the unit chosen
      const finite = series.filter((v) => v !== null && Number.isFinite(v));
      const range = 1.1 * Math.max(1e-6, ...finite.map(Math.abs)); // the series fills the plot
      const x = (t) => left + (T === 1 ? 0.5 : t / (T - 1)) * (w - left - right);
      const y = (v) => top + (1 - (v + range) / (2 * range)) * (h - top - bottom);
      let path = "";
      series.forEach((v, t) => {
        if (v === null || !Number.isFinite(v)) return;
        path += (path && series[t - 1] !== null ? " L" : " M") + x(t).toFixed(1) + "," + y(v).toFixed(1);
      });
      const now = series[view.t];
      const shown = now === null || !Number.isFinite(now) ? "" :
        `<circle cx="${x(view.t)}" cy="${y(now)}" r="3.5" fill="#d9480f"/>`;
      box.insertAdjacentHTML("beforeend",
        `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(state)} of unit ${view.unit} over time">` +
        `<line x1="${left}" x2="${w - right}" y1="${y(0)}" y2="${y(0)}" stroke="#ccc"/>` +
        `<line x1="${x(view.t)}" x2="${x(view.t)}" y1="${top}" y2="${h - bottom}" stroke="#999" stroke-dasharray="3 3"/>` +
        `<path d="${path.trim()}" fill="none" stroke="${state === D.memory ? "#1e9e3a" : "#1c64c8"}" stroke-width="2"/>${shown}` +
        `<text x="${left}" y="11">${esc(state)}, unit ${view.unit}: ${esc(text(now))} at step ${D.steps[view.t]}</text>` +
        `<text x="2" y="${y(range) + 4}">${esc(range.toPrecision(2))}</text><text x="2" y="${y(-range) + 4}">${esc((-range).toPrecision(2))}</text>` +
        `<text x="${left}" y="${h - 4}">step ${D.steps[0]}</text><text x="${w - right}" y="${h - 4}" text-anchor="end">step ${D.steps[T - 1]}</text></svg>`);
    }
  }

  /* Each state's gradient size against the step, on a log scale, the step shown marked. */
  function drawGradients() {
    const box = $("#gradients");
    box.textContent = "";
    const states = D.states.filter((s) => D.gradients && s in D.gradients);
    $("#gradients-head").hidden = states.length === 0;
    const w = 380, h = 140, left = 44, right = 8, top = 16, bottom = 18;
    for (const state of states) {
      const series = D.steps.map((_, t) => D.gradients[state][t][view.b]);
      const logs = series.map((v) => (v !== null && v > 0 ? Math.log10(v) : null));
      const finite = logs.filter((v) => v !== null);
      if (finite.length === 0) {  // said, not left out: no gradient reaches this state
        const none = series.every((v) => v === 0) ? "0 at every step" : "no positive, finite size at any step";
        box.insertAdjacentHTML("beforeend",
          `<p class="none">‖∂L/∂${esc(state)}‖: ${none} of this sequence</p>`);
        continue;
      }
      const low = Math.floor(Math.min(...finite)), high = Math.ceil(Math.max(...finite, low + 1));
      const x = (t) => left + (T === 1 ? 0.5 : t / (T - 1)) * (w - left - right);
      const y = (v) => top + (1 - (v - low) / (high - low)) * (h - top - bottom);
      let path = "";
      logs.forEach((v, t) => {
        if (v === null) return;
        path += (path && logs[t - 1] !== null ? " L" : " M") + x(t).toFixed(1) + "," + y(v).toFixed(1);
      });
      // a size with none beside it is a point, not a line
      const alone = logs.map((v, t) => (v !== null && logs[t - 1] == null && logs[t + 1] == null
        ? `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" fill="#7048e8"/>` : "")).join("");
      const now = logs[view.t];
      const shown = now === null ? "" : `<circle cx="${x(view.t)}" cy="${y(now)}" r="3.5" fill="#7048e8"/>`;
      box.insertAdjacentHTML("beforeend",
        `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="gradient reaching ${esc(state)} at each step">` +
        `<line x1="${x(view.t)}" x2="${x(view.t)}" y1="${top}" y2="${h - bottom}" stroke="#999" stroke-dasharray="3 3"/>` +
        `<path d="${path.trim()}" fill="none" stroke="#7048e8" stroke-width="2"/>${alone}${shown}` +
        `<text x="${left}" y="11">‖∂L/∂${esc(state)}‖ at step ${D.steps[view.t]}: ${esc(text(series[view.t]))}</text>` +
        `<text x="2" y="${y(high) + 4}">1e${high}</text><text x="2" y="${y(low) + 4}">1e${low}</text>` +
        `<text x="${left}" y="${h - 4}">step ${D.steps[0]}</text><text x="${w - right}" y="${h - 4}" text-anchor="end">step ${D.steps[T - 1]}</text></svg>`);
    }
  }

  // ---- changing the view ------------------------------------------------------------------

  function setStep(t) {
    view.t = Math.max(0, Math.min(T - 1, t));
    $("#time").value = view.t + 1;
    $("#tlabel").textContent = `t = ${D.steps[view.t]} of ${D.shape.steps}` +
      (D.reverse ? ` (x's step ${D.shape.steps + 1 - D.steps[view.t]})` : "");
    paintStrips();
    placeCursors();
    drawLines();
    drawGradients();
    if (hovered) {  // the panel and a tip in view follow the step (the tip kept step 1's)
      const numbers = describeAll(hovered);
      $("#detail").innerHTML = numbers;
      if (!tip.hidden) tip.innerHTML = numbers;
    }
  }
  function setBatch(b) {
    view.b = b;
    $("#over-time-batch").textContent = `· sequence ${D.batch[b]}`;
    drawHeatmaps();
    setStep(view.t);
  }
  function setUnit(u) {
    const widest = Math.max(...D.states.map((s) => (s in D.values ? D.values[s][0][0].length : 0)));
    view.unit = Math.max(0, Math.min(widest - 1, u));
    if (+$("#unit").value !== view.unit) $("#unit").value = view.unit;
    placeCursors();
    drawLines();
  }
  function setStyle(style) {
    view.style = style;
    for (const wrap of $$(".wrap")) wrap.hidden = wrap.dataset.style !== style;
    $$(".seg").forEach((b) => {
      b.classList.toggle("on", b.dataset.style === style);
      b.setAttribute("aria-pressed", String(b.dataset.style === style));
    });
  }
  function setLit(from) {
    view.litFrom = from;
    paintLit();
  }
  function setStage(k) {
    view.stage = Math.max(0, Math.min(S, k));
    paintStages();
  }

  /* Play the stages once: each lights for a moment, then the step is whole again. */
  let stageTimer = null;
  function playStages() {
    clearInterval(stageTimer);
    setStage(1);
    stageTimer = setInterval(() => {
      if (view.stage >= S) {
        clearInterval(stageTimer);
        stageTimer = null;
        setStage(0);
      } else setStage(view.stage + 1);
    }, 900);
  }
  let stepTimer = null;
  function playSteps() {
    if (stepTimer) {
      clearInterval(stepTimer);
      stepTimer = null;
      $("#play").textContent = "play";
      return;
    }
    if (view.t === T - 1) setStep(0);
    $("#play").textContent = "stop";
    stepTimer = setInterval(() => {
      if (view.t >= T - 1) playSteps();
      else setStep(view.t + 1);
    }, 400);
  }

  // ---- wiring ----------------------------------------------------------------------------

  $("#time").max = T;
  $("#time").addEventListener("input", (e) => setStep(+e.target.value - 1));
  $("#prev").addEventListener("click", () => setStep(view.t - 1));
  $("#next").addEventListener("click", () => setStep(view.t + 1));
  $("#play").addEventListener("click", playSteps);
  const batch = $("#batch");
  D.batch.forEach((b, k) => batch.add(new Option(String(b), String(k))));
  batch.addEventListener("change", () => setBatch(+batch.value));
  $$(".seg").forEach((b) => b.addEventListener("click", () => setStyle(b.dataset.style)));
  $("#unit").addEventListener("input", (e) => {  // cleared, or "2." half typed: left as is
    const typed = e.target.value.trim();
    if (typed !== "" && Number.isFinite(+typed)) setUnit(Math.floor(+typed));
  });
  D.stages.forEach((names, k) => {
    const li = document.createElement("li");
    li.title = names.map((n) => `${n} = ${D.assignments[n].expression}`).join("\n");
    li.innerHTML = names.map((n) => `<code>${esc(n)}</code>`).join(", ") +
      (D.waits[k].length ? ` <span class="muted">waits for the new ${D.waits[k].map(esc).join(", ")}</span>` : "");
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    li.addEventListener("click", () => { clearInterval(stageTimer); setStage(k + 1); });
    li.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault(); clearInterval(stageTimer); setStage(k + 1);
      }
    });
    $("#stages").appendChild(li);
  });
  $("#stage-play").addEventListener("click", playStages);
  $("#stage-prev").addEventListener("click", () => { clearInterval(stageTimer); setStage(view.stage - 1); });
  $("#stage-next").addEventListener("click", () => { clearInterval(stageTimer); setStage(view.stage + 1); });
  const presets = $("#presets");
  for (const name of Object.keys(D.presets)) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.preset = name;
    button.setAttribute("aria-pressed", "false");
    button.textContent = name;
    button.title = "the path of " + D.presets[name].names.join(", ");
    button.addEventListener("click", () => setLit(view.litFrom === "preset:" + name ? null : "preset:" + name));
    presets.appendChild(button);
  }
  if (!presets.children.length) presets.innerHTML = '<span class="hint">This cell names no presets.</span>';
  $("#scale-bar").style.background = `linear-gradient(to right, ${D.scale.stops.join(", ")})`;
  $(".nan-swatch").style.background = D.scale.nan;
  $("#numbers").textContent = D.numbers;

  for (const svg of $$("svg.diagram")) {
    const lightable = (id) => id in D.lit[svg.dataset.style];
    const toggle = (id) => setLit(id && lightable(id) && view.litFrom !== id ? id : null);
    for (const g of $$("g.node[data-id]", svg)) g.classList.toggle("clickable", lightable(g.dataset.id));
    /* The keyboard reaches what the mouse does: Tab to a node shows its numbers, as
       hovering does, and Enter or Space lights its path, as a click does. */
    for (const g of $$("g.node[data-node], g.node.clickable", svg)) {
      const names = g.dataset.values ? g.dataset.values.split(" ") : [];
      g.setAttribute("tabindex", "0");
      if (g.classList.contains("clickable")) g.setAttribute("role", "button");
      g.setAttribute("aria-label", (names.length ? names.join(", ") : g.dataset.id) +
        (g.classList.contains("clickable") ? ": Enter lights its path" : ""));
      g.addEventListener("focus", () => {
        if (!names.length) return;
        hovered = [names, null];
        $("#detail").innerHTML = describeAll(hovered);
        const box = g.getBoundingClientRect();
        showTip(box.left, box.bottom);
      });
      g.addEventListener("blur", () => { tip.hidden = true; });
      g.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        toggle(g.dataset.id);
      });
    }
    svg.addEventListener("click", (event) => {
      const node = event.target.closest("g.node[data-id]");
      toggle(node && node.dataset.id);
    });
    svg.addEventListener("mousemove", (event) => {
      const node = event.target.closest("g.node[data-node]");
      const cell = event.target.closest("polygon.u");
      $$("polygon.u.hover", svg).forEach((c) => c !== cell && c.classList.remove("hover"));
      if (!node) {
        hovered = null;
        tip.hidden = true;
        return;
      }
      if (cell) cell.classList.add("hover");
      hovered = [node.dataset.values.split(" "), cell ? D.strips[node.dataset.node][+cell.dataset.u] : null];
      $("#detail").innerHTML = describeAll(hovered);
      showTip(event.clientX, event.clientY);
    });
    svg.addEventListener("mouseleave", () => {
      tip.hidden = true;
      $$("polygon.u.hover", svg).forEach((c) => c.classList.remove("hover"));
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return; // the browser's: Ctrl+S, Alt+←
    const target = event.target;
    if (target.matches && target.matches("input:not([type=range]), select, textarea")) return;
    const onSlider = target === $("#time"); // the slider moves itself on arrow keys
    if (event.key === "ArrowLeft" && !onSlider) setStep(view.t - 1);
    else if (event.key === "ArrowRight" && !onSlider) setStep(view.t + 1);
    else if (event.key === "Home" && !onSlider) setStep(0);
    else if (event.key === "End" && !onSlider) setStep(T - 1);
    else if (event.key === "s") playStages();
    else if (event.key === "Escape") { setLit(null); clearInterval(stageTimer); setStage(0); }
    else return;
    event.preventDefault();
  });

  setStyle(view.style);
  setBatch(0);
})();
