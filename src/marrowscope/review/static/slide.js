// The slide page: deep-zoom viewer with a canvas overlay of cells, review queue, gallery, live tally,
// keyboard-first editing with undo/redo. Every edit goes to the server at once (it answers with the
// new tally); nothing is kept only in the page.
"use strict";

(() => {
  const {api, el, pretty} = MS;
  const key = decodeURIComponent(location.pathname.split("/").pop());
  const base = `/api/slides/${encodeURIComponent(key)}`;
  const S = {
    slide: null, cells: new Map(), order: [], queue: [], reasons: new Map(), list: "queue", sel: null,
    undo: [], redo: [], draw: null, pendingBox: null, locked: false, busy: false, galleryDirty: true,
    keyToLabel: new Map(), colors: new Map(), timing: {keysDone: 0}, chain: Promise.resolve(),
  };
  window.__marrowscope = S;  // for the browser test and the benchmark
  const $ = (id) => document.getElementById(id);

  function message(text, bad) {
    const m = $("message");
    m.textContent = text;
    m.className = bad ? "bad" : "";
  }

  // ------------------------------------------------------------------------------------------ viewer
  let viewer = null;
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");

  function setupViewer() {
    viewer = OpenSeadragon({
      element: $("viewer"),
      prefixUrl: "/static/vendor/openseadragon/images/",
      tileSources: `/slides/${encodeURIComponent(key)}/tiles/slide.dzi`,
      showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 3,
      gestureSettingsMouse: {clickToZoom: false, dblClickToZoom: true},
      animationTime: 0.4, immediateRender: false,
      drawer: "canvas",  // 2D canvas: light without a GPU (WebGL falls back to software rendering there)
    });
    viewer.addHandler("update-viewport", draw);
    viewer.addHandler("resize", resizeCanvas);
    viewer.addHandler("open", () => { resizeCanvas(); S.timing.viewerOpen = performance.now(); });
    viewer.addHandler("canvas-click", (ev) => {
      if (!ev.quick || S.draw) return;
      const p = viewer.viewport.viewerElementToImageCoordinates(ev.position);
      const hit = cellAt(p.x, p.y);
      if (hit !== null) select(hit, false);
    });
    canvas.addEventListener("mousedown", drawStart);
    canvas.addEventListener("mousemove", drawMove);
    canvas.addEventListener("mouseup", drawEnd);
  }

  S.redraw = () => draw();  // for the benchmark: time the overlay

  function resizeCanvas() {
    const r = $("viewer").getBoundingClientRect();
    canvas.width = Math.round(r.width * devicePixelRatio);
    canvas.height = Math.round(r.height * devicePixelRatio);
    canvas.style.width = `${r.width}px`;
    canvas.style.height = `${r.height}px`;
    draw();
  }

  function transform() {
    const OSDPoint = OpenSeadragon.Point;
    const p0 = viewer.viewport.imageToViewerElementCoordinates(new OSDPoint(0, 0));
    const p1 = viewer.viewport.imageToViewerElementCoordinates(new OSDPoint(1000, 1000));
    const k = (p1.x - p0.x) / 1000;
    return {x0: p0.x, y0: p0.y, k};
  }

  function draw() {
    if (!viewer || !viewer.world.getItemCount()) return;
    const dpr = devicePixelRatio;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const t = transform();
    const w = canvas.width / dpr, h = canvas.height / dpr;
    ctx.setLineDash([8, 6]);
    ctx.strokeStyle = "#1f6feb";
    ctx.lineWidth = 2;
    for (const r of S.slide.regions) {
      const [x1, y1, x2, y2] = r.box;
      ctx.strokeRect(t.x0 + x1 * t.k, t.y0 + y1 * t.k, (x2 - x1) * t.k, (y2 - y1) * t.k);
    }
    ctx.setLineDash([]);
    const lw = t.k > 0.2 ? 1.5 : 1;
    for (const c of S.cells.values()) {
      const [x1, y1, x2, y2] = c.box;
      const sx = t.x0 + x1 * t.k, sy = t.y0 + y1 * t.k, sw = (x2 - x1) * t.k, sh = (y2 - y1) * t.k;
      if (sx > w || sy > h || sx + sw < 0 || sy + sh < 0) continue;  // outside the view
      if (c.state === "deleted") {
        ctx.strokeStyle = "rgba(120,120,120,0.7)";
        ctx.setLineDash([3, 3]);
      } else {
        ctx.strokeStyle = colorOf(c.label);
        ctx.setLineDash(c.state === "pending" ? [] : []);
      }
      ctx.lineWidth = c.state === "pending" ? lw : lw + 1;
      ctx.strokeRect(sx, sy, sw, sh);
      ctx.setLineDash([]);
    }
    const s = S.sel === null ? null : S.cells.get(S.sel);
    if (s) {
      const [x1, y1, x2, y2] = s.box;
      ctx.strokeStyle = "#ffd400";
      ctx.lineWidth = 3;
      ctx.strokeRect(t.x0 + x1 * t.k - 4, t.y0 + y1 * t.k - 4, (x2 - x1) * t.k + 8, (y2 - y1) * t.k + 8);
    }
    if (S.pendingBox) {
      const [x1, y1, x2, y2] = S.pendingBox;
      ctx.strokeStyle = "#00c853";
      ctx.lineWidth = 2;
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(t.x0 + x1 * t.k, t.y0 + y1 * t.k, (x2 - x1) * t.k, (y2 - y1) * t.k);
      ctx.setLineDash([]);
    }
  }

  function cellAt(x, y) {
    let best = null, area = Infinity;
    for (const c of S.cells.values()) {
      const [x1, y1, x2, y2] = c.box;
      if (x >= x1 && x < x2 && y >= y1 && y < y2 && c.state !== "deleted") {
        const a = (x2 - x1) * (y2 - y1);
        if (a < area) { best = c.id; area = a; }
      }
    }
    return best;
  }

  function goTo(c) {
    const [x1, y1, x2, y2] = c.box;
    const vp = viewer.viewport;
    const rect = vp.imageToViewportRectangle(new OpenSeadragon.Rect(x1, y1, x2 - x1, y2 - y1));
    const view = vp.getBounds();
    const want = rect.width * 8;
    if (view.width > want * 3 || view.width < want / 3) {
      vp.fitBounds(new OpenSeadragon.Rect(rect.x + rect.width / 2 - want / 2, rect.y + rect.height / 2 - want / 2,
        want, want));
    } else {
      vp.panTo(new OpenSeadragon.Point(rect.x + rect.width / 2, rect.y + rect.height / 2));
    }
  }

  // ------------------------------------------------------------------------------------------ drawing a box
  function startDraw() {
    if (S.locked) return message("This slide is validated and locked.", true);
    S.draw = {start: null};
    canvas.classList.add("drawing");
    $("mode").textContent = "Draw a box around the missed cell (drag); Esc cancels.";
  }

  function imagePoint(ev) {
    const r = canvas.getBoundingClientRect();
    return viewer.viewport.viewerElementToImageCoordinates(
      new OpenSeadragon.Point(ev.clientX - r.left, ev.clientY - r.top));
  }

  function drawStart(ev) { if (S.draw) { S.draw.start = imagePoint(ev); ev.preventDefault(); } }

  function drawMove(ev) {
    if (!S.draw || !S.draw.start) return;
    const p = imagePoint(ev), a = S.draw.start;
    S.pendingBox = [Math.min(a.x, p.x), Math.min(a.y, p.y), Math.max(a.x, p.x), Math.max(a.y, p.y)];
    draw();
  }

  function drawEnd(ev) {
    if (!S.draw || !S.draw.start) return;
    drawMove(ev);
    S.draw = null;
    canvas.classList.remove("drawing");
    $("mode").textContent = "Press a class key to label the new cell (Esc cancels).";
  }

  function cancelDraw() {
    S.draw = null;
    S.pendingBox = null;
    canvas.classList.remove("drawing");
    $("mode").textContent = "";
    draw();
  }

  // ------------------------------------------------------------------------------------------ editing
  const snapshot = (c) => ({state: c.state, label: c.label});

  async function request(id, target, version) {
    // bring cell ``id`` to ``target`` ({state, label}) with the request that does it
    const url = `${base}/cells/${id}`;
    const v = version;
    if (target.state === "deleted") return api("DELETE", `${url}?version=${v}`);
    if (target.state === "pending") return api("PATCH", url, {action: "reset", version: v});
    if (target.state === "not_identifiable" || target.state === "not_counted") {
      return api("PATCH", url, {action: target.state, version: v});
    }
    if (target.state === "added") {
      const c = S.cells.get(id);
      if (c.state === "deleted") {
        const r = await api("PATCH", url, {action: "restore", version: v});
        if (r.cell.label === target.label) return r;
        return api("PATCH", url, {label: target.label, version: r.cell.version});
      }
      return api("PATCH", url, {label: target.label, version: v});
    }
    if (target.state === "accepted" && target.label === S.cells.get(id).label) {
      return api("PATCH", url, {action: "accept", version: v});
    }
    return api("PATCH", url, {label: target.label, version: v});
  }

  function applied(r) {
    S.cells.set(r.cell.id, r.cell);
    if (!S.order.includes(r.cell.id)) S.order.push(r.cell.id);
    showTally(r.tally);
    setStatus(r.status);
    S.galleryDirty = true;
    updateQueueItem(r.cell.id);
    if (S.sel === r.cell.id) showCell();
    draw();
  }

  async function edit(id, target, advance) {
    if (S.locked) return message("This slide is validated and locked.", true);
    const c = S.cells.get(id);
    if (!c) return;
    const before = snapshot(c);
    const t0 = performance.now();
    try {
      const r = await request(id, target, c.version);
      applied(r);
      S.timing.lastEdit = performance.now() - t0;  // key handled -> server answered -> tally shown
      (S.timing.edits = S.timing.edits || []).push(S.timing.lastEdit);
      S.undo.push({id, before, after: snapshot(r.cell)});
      S.redo = [];
      message(`cell ${id}: ${describe(before)} → ${describe(r.cell)}`);
      if (advance) step(1);
    } catch (e) {
      message(e.message, true);
      if (e.status === 409) await reloadCells();
    }
  }

  async function addCell(label) {
    const box = S.pendingBox.map((v) => Math.round(v * 10) / 10);
    S.pendingBox = null;
    $("mode").textContent = "";
    try {
      const r = await api("POST", `${base}/cells`, {box, label});
      applied(r);
      S.undo.push({id: r.cell.id, before: {state: "deleted", label}, after: snapshot(r.cell)});
      S.redo = [];
      select(r.cell.id, false);
      message(`added cell ${r.cell.id} as ${pretty(label)}`);
    } catch (e) {
      message(e.message, true);
      draw();
    }
  }

  async function undoRedo(from, to, which) {
    const item = from.pop();
    if (!item) return message(`nothing to ${which}`);
    const c = S.cells.get(item.id);
    try {
      const r = await request(item.id, which === "undo" ? item.before : item.after, c.version);
      applied(r);
      to.push(item);
      select(item.id, false);
      message(`${which}: cell ${item.id} is ${describe(r.cell)} again`);
    } catch (e) {
      from.push(item);
      message(e.message, true);
      if (e.status === 409) await reloadCells();
    }
  }

  const describe = (c) => c.state === "deleted" ? "deleted" :
    c.state === "not_identifiable" || c.state === "not_counted" ? pretty(c.state) : pretty(c.label);

  // ------------------------------------------------------------------------------------------ selection
  function currentList() {
    return S.list === "gallery" ? galleryOrder() : S.queue;
  }

  function select(id, pan = true) {
    S.sel = id;
    showCell();
    for (const e of document.querySelectorAll(".selected")) e.classList.remove("selected");
    for (const e of document.querySelectorAll(`[data-id="${id}"]`)) {
      e.classList.add("selected");
      e.scrollIntoView({block: "nearest"});
    }
    const c = S.cells.get(id);
    if (c && pan && viewer) goTo(c);
    draw();
  }

  function step(d) {
    const list = currentList();
    if (!list.length) return;
    let i = list.indexOf(S.sel);
    i = i < 0 ? (d > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, i + d));
    select(list[i]);
  }

  function showCell() {
    const body = $("cell-body");
    body.replaceChildren();
    const c = S.sel === null ? null : S.cells.get(S.sel);
    if (!c) { body.textContent = "none selected"; return; }
    const img = el("img", {src: `${base}/cells/${c.id}/crop.jpg`, class: "big", alt: `cell ${c.id}`,
      title: "double-click to enlarge", ondblclick: () => enlarge(c.id)});
    const reasons = S.reasons.get(c.id);
    body.append(img, el("dl", {},
      el("dt", {}, "Cell"), el("dd", {id: "cell-id"}, `#${c.id}${c.added ? " (added)" : ""}`),
      el("dt", {}, "Label"), el("dd", {id: "cell-label", style: `color:${colorOf(c.label)}`}, pretty(c.label)),
      el("dt", {}, "Model"), el("dd", {}, c.added ? "–" : `${pretty(c.model_label)}${c.p === null ? "" :
        ` (p ${c.p.toFixed(2)})`}`),
      el("dt", {}, "Review"), el("dd", {id: "cell-state"}, c.state.replaceAll("_", " ")),
      reasons ? el("dt", {}, "Queued for") : null, reasons ? el("dd", {}, reasons.join(", ")) : null,
    ));
  }

  function enlarge(id) {
    const z = $("zoom");
    z.querySelector("img").src = `${base}/cells/${id}/crop.jpg`;
    const c = S.cells.get(id);
    z.querySelector("p").textContent = `#${id} ${pretty(c.label)}${c.p === null ? "" : ` p ${c.p.toFixed(2)}`}` +
      " (40 µm field at 0.25 µm/px; click to close)";
    z.hidden = false;
  }

  // ------------------------------------------------------------------------------------------ panels
  function colorOf(label) {
    return S.colors.get(label) || "#8a8a8a";
  }

  function setStatus(status) {
    S.locked = status === "validated";
    const st = $("status");
    st.textContent = status;
    st.className = `status ${status.replace(" ", "-")}`;
    $("validate").disabled = S.locked;
  }

  function showTally(t) {
    S.tally = t;
    const b = $("tally-body");
    const ci = (v) => `${v[0].toFixed(1)}–${v[1].toFixed(1)} %`;
    const dx = t.diagnosis;
    const rows = t.rows.map((r) => el("tr", {class: r.blast ? "blast" : ""},
      el("td", {}, el("span", {class: "dot", style: `background:${r.color}`}), pretty(r.label)),
      el("td", {class: "num"}, String(r.count)), el("td", {class: "num"}, `${r.pct.toFixed(1)} %`),
      el("td", {class: "num ci"}, ci(r.ci))));
    const rv = t.review;
    b.replaceChildren(...[
      el("div", {class: "big-numbers"},
        el("div", {}, el("b", {id: "n-counted"}, String(t.n_counted)), t.target ? ` of ${t.target} counted` : " counted"),
        el("div", {}, "Blasts ", el("b", {id: "blast-pct"}, `${t.blast.pct.toFixed(1)} %`),
          el("span", {class: "ci", id: "blast-ci"}, ` (95 % CI ${ci(t.blast.ci)})`)),
        el("div", {class: "small"}, `lymphoid ${t.blast.lymphoid.toFixed(1)} %, myeloid incl. equivalents ` +
          `${t.blast.myeloid.toFixed(1)} % · M:E ${t.me_ratio === null ? "–" : t.me_ratio.toFixed(2) + " : 1"}`)),
      t.flags.length ? el("div", {class: "flags"}, ...t.flags.map((f) => el("div", {},
        `⚑ ${f.name}: CI ${ci(f.ci)} straddles it` + (f.cells_needed ? `; ~${f.cells_needed} more cells decide it` : "")))) : null,
      el("div", {class: "dx", id: "suggestion"}, dx ? [
        el("div", {}, "Suggestion ", el("b", {}, dx.suggestion), ` (p ${(100 * dx.p).toFixed(0)} %, decision support)`),
        el("div", {}, "Rule baseline ", el("b", {}, dx.rule_baseline), dx.rule_baseline === dx.suggestion ? " (agrees)" : " (disagrees)"),
      ].reduce((f, e) => { f.append(e); return f; }, document.createDocumentFragment())
        : (t.diagnosis_problem || "no diagnosis model")),
      el("table", {class: "tally"}, el("tbody", {}, ...rows)),
      Object.keys(t.not_counted).length ? el("div", {class: "small"}, "Not counted: " +
        Object.entries(t.not_counted).map(([k, v]) => `${pretty(k)} ${v}`).join(", ")) : null,
      el("div", {class: "small", id: "progress"}, `reviewed: ${rv.accepted} accepted, ${rv.reclassified} reclassified, ` +
        `${rv.added} added, ${rv.deleted} deleted, ${rv.not_identifiable + rv.not_counted} set aside; ` +
        `${rv.pending} pending`),
    ].filter((x) => x !== null));
  }

  function showKeys() {
    const rows = S.slide.classes.filter((c) => c.key).map((c) => el("div", {class: "key"},
      el("kbd", {}, c.key), el("span", {class: "dot", style: `background:${c.color}`}), pretty(c.label)));
    const cmds = [["Enter / Space", "accept"], ["→ / j", "next"], ["← / k", "previous"], ["Del / x", "false detection"],
      ["n", "not identifiable"], ["-", "not counted"], ["b", "draw a missed cell"], ["Ctrl+Z / Ctrl+Y", "undo / redo"],
      ["Esc", "cancel"]];
    $("keys-body").replaceChildren(el("div", {class: "keygrid"}, ...rows),
      el("div", {class: "keygrid cmds"}, ...cmds.map(([k, v]) => el("div", {class: "key"}, el("kbd", {}, k), v))));
  }

  function queueItem(id) {
    const c = S.cells.get(id);
    return el("div", {class: `qitem ${c.state}`, "data-id": id, onclick: () => select(id)},
      el("span", {class: "dot", style: `background:${colorOf(c.label)}`}),
      `#${id} ${pretty(c.label)}`, el("span", {class: "small"}, ` ${(S.reasons.get(id) || []).join(", ")}`),
      el("span", {class: "state"}, c.state === "pending" ? "" : c.state.replaceAll("_", " ")));
  }

  function showQueue() {
    $("queue").replaceChildren(el("div", {class: "small"}, `${S.queue.length} cells queued ` +
      "(blasts and equivalents, uncertain, low confidence, known confusions, rare classes, QA sample)"),
    ...S.queue.map(queueItem));
  }

  function updateQueueItem(id) {
    const old = document.querySelector(`#queue [data-id="${id}"]`);
    if (old) {
      const fresh = queueItem(id);
      if (old.classList.contains("selected")) fresh.classList.add("selected");
      old.replaceWith(fresh);
    }
  }

  function galleryGroups() {
    const groups = new Map();
    for (const id of S.order) {
      const c = S.cells.get(id);
      if (c.state === "deleted") continue;
      const k = c.label || "uncertain";
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(c);
    }
    const classOrder = new Map(S.slide.classes.map((c, i) => [c.label, i]));
    const keys = [...groups.keys()].sort((a, b) => (classOrder.get(a) ?? 1e6) - (classOrder.get(b) ?? 1e6));
    for (const k of keys) groups.get(k).sort((a, b) => (a.p ?? 0) - (b.p ?? 0));
    return keys.map((k) => [k, groups.get(k)]);
  }

  function galleryOrder() {
    return galleryGroups().flatMap(([, cs]) => cs.map((c) => c.id));
  }

  function showGallery() {
    const t0 = performance.now();
    const g = $("gallery");
    const parts = galleryGroups().map(([label, cs]) => el("section", {class: "gclass"},
      el("h3", {}, el("span", {class: "dot", style: `background:${colorOf(label === "uncertain" ? null : label)}`}),
        `${pretty(label)} (${cs.length})`),
      el("div", {class: "crops"}, ...cs.map((c) => el("figure", {"data-id": c.id, class: c.state,
        onclick: () => select(c.id), ondblclick: () => enlarge(c.id)},
        el("img", {src: `${base}/cells/${c.id}/crop.jpg`, loading: "lazy", width: 96, height: 96, alt: `cell ${c.id}`}),
        el("figcaption", {}, `#${c.id} ${c.p === null ? "" : c.p.toFixed(2)}`))))));
    g.replaceChildren(el("div", {class: "small"}, "Crops at 0.25 µm/px (40 µm fields), least confident first; " +
      "click selects, double-click enlarges."), ...parts);
    S.galleryDirty = false;
    if (S.sel !== null) for (const e of g.querySelectorAll(`[data-id="${S.sel}"]`)) e.classList.add("selected");
    S.timing.galleryRendered = performance.now();
    S.timing.galleryMs = performance.now() - t0;
  }

  function showTab(name) {
    S.list = name;
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    $("queue").hidden = name !== "queue";
    $("gallery").hidden = name !== "gallery";
    if (name === "gallery" && S.galleryDirty) showGallery();
  }

  // ------------------------------------------------------------------------------------------ keyboard
  // Keys are acted on in order, each after the previous edit has been answered, so a fast typist never
  // edits a cell the page has not caught up with.
  function onKey(ev) {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement) return;
    const act = actionFor(ev);
    if (!act) return;
    ev.preventDefault();
    S.chain = S.chain.then(act).catch((e) => message(e.message, true)).then(() => { S.timing.keysDone++; });
  }

  function actionFor(ev) {
    const k = ev.key;
    const ctrl = ev.ctrlKey || ev.metaKey;
    if (!$("zoom").hidden && (k === "Escape" || k === "Enter")) return () => { $("zoom").hidden = true; };
    if (ctrl && (k === "z" || k === "Z")) {
      return ev.shiftKey ? () => undoRedo(S.redo, S.undo, "redo") : () => undoRedo(S.undo, S.redo, "undo");
    }
    if (ctrl && (k === "y" || k === "Y")) return () => undoRedo(S.redo, S.undo, "redo");
    if (ctrl || ev.altKey) return null;
    if (k === "Escape") return cancelDraw;
    if (S.keyToLabel.has(k) && S.pendingBox) return () => addCell(S.keyToLabel.get(k));
    if (k === "ArrowRight" || k === "ArrowDown" || k === "j") return () => step(1);
    if (k === "ArrowLeft" || k === "ArrowUp" || k === "k") return () => step(-1);
    if (k === "b") return startDraw;
    const known = k === "Enter" || k === " " || k === "Delete" || k === "Backspace" || k === "x" || k === "n" ||
      k === "-" || S.keyToLabel.has(k);
    if (!known) return null;
    return () => {
      if (S.sel === null) return message("select a cell first (click it, or → for the queue)", true);
      const c = S.cells.get(S.sel);
      if (k === "Enter" || k === " ") {
        if (c.label === null) return message("the classifier abstained on this cell: press a class key", true);
        return edit(c.id, {state: c.added ? "added" : "accepted", label: c.label}, true);
      }
      if (k === "Delete" || k === "Backspace" || k === "x") return edit(c.id, {state: "deleted", label: c.label}, true);
      if (k === "n") return edit(c.id, {state: "not_identifiable", label: c.label}, true);
      if (k === "-") return edit(c.id, {state: "not_counted", label: c.label}, true);
      const label = S.keyToLabel.get(k);
      return edit(c.id, {state: c.added ? "added" : (label === c.model_label ? "accepted" : "reclassified"), label},
        true);
    };
  }

  // ------------------------------------------------------------------------------------------ loading
  async function reloadCells() {
    const data = await api("GET", `${base}/cells`);
    S.cells = new Map(data.cells.map((c) => [c.id, c]));
    S.order = data.cells.map((c) => c.id);
    S.queue = data.queue.map((q) => q.id);
    S.reasons = new Map(data.queue.map((q) => [q.id, q.reasons]));
    S.galleryDirty = true;
    showQueue();
    if (S.list === "gallery") showGallery();
    showCell();
    draw();
  }

  async function validate() {
    if (!confirm(`Validate this slide as reviewed by ${S.slide.me}? It is then locked.`)) return;
    try {
      message("validating and exporting…");
      const r = await api("POST", `${base}/validate`);
      setStatus(r.status);
      message(`validated by ${r.reviewer} on ${r.validated_at}; exports in ${r.exports.folder}`);
      showExports(r.exports);
    } catch (e) { message(e.message, true); }
  }

  async function exportNow() {
    try {
      message("exporting…");
      const r = await api("POST", `${base}/export`);
      message(`exports written to ${r.folder}`);
      showExports(r);
    } catch (e) { message(e.message, true); }
  }

  function showExports(ex) {
    const links = [["reviewed report", ex.report], ["GeoJSON", ex.geojson], ["cell table", ex.table],
      ["DICOM ANN", ex.dicom_ann]].filter(([, u]) => u);
    $("message").append(" · ", ...links.flatMap(([n, u], i) => [i ? " · " : "", el("a", {href: u, target: "_blank", class: "export"}, n)]));
  }

  async function main() {
    try {
      S.slide = await api("GET", base);
      document.title = `marrowscope review – ${S.slide.slide_id}`;
      $("title").textContent = S.slide.slide_id;
      $("back").href = MS.withToken("/");
      $("model-report").href = S.slide.model_report;
      for (const c of S.slide.classes) {
        S.colors.set(c.label, c.color);
        if (c.key) S.keyToLabel.set(c.key, c.label);
      }
      setStatus(S.slide.status);
      showKeys();
      setupViewer();
      const [, tally] = await Promise.all([reloadCells(), api("GET", `${base}/differential`)]);
      showTally(tally);
      S.timing.ready = performance.now();
      document.body.dataset.ready = "1";
      if (S.queue.length) select(S.queue[0], false);
    } catch (e) {
      message(`Could not load the slide: ${e.message}`, true);
    }
  }

  document.addEventListener("keydown", onKey);
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("validate").addEventListener("click", validate);
  $("export").addEventListener("click", exportNow);
  $("zoom").addEventListener("click", () => { $("zoom").hidden = true; });
  main();
})();
