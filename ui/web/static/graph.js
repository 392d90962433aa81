// graph.js draws a scrapbook's history as a graph, in the page of sbuml ui
// and in the sites sbuml publish writes.
//
// Layout: snapshots are rows, newest on top (the order of sbuml log), and
// each line of history is a lane, as in git log --graph. One pass over the
// snapshots places them all (O(snapshots x lanes)), once per change of the
// data. Drawing: only the rows in view are drawn (SVG for lanes and nodes,
// HTML for their labels), again on every pan and zoom; far out, labels are
// left out, and so are the nodes of snapshots without a ref or machine. Every snapshot is also in an accessible list (<ol>), one item
// with its ID and message each, which screen readers and tests can read
// whatever is in view.

const ROW = 30; // world units between rows
const LANE = 18; // between lanes
const MARGIN = 24;
const LABEL_GAP = 14;
const MIN_SCALE = 0.01;
const MAX_SCALE = 4;
const LABEL_SCALE = 0.45; // below this zoom no labels are drawn

// layout places snapshots (newest first) on rows and lanes. It returns the
// nodes in the order given, the edges from each snapshot to its parents,
// and per row the number of lanes in use (where the labels start).
export function layout(snapshots) {
  const index = new Map();
  snapshots.forEach((s, i) => index.set(s.id, i));
  const nodes = snapshots.map((s, i) => ({ entry: s, row: i, lane: 0 }));
  const edges = [];
  const width = new Array(snapshots.length).fill(0);
  const cols = []; // per lane: the ID of the snapshot it waits for, or null
  const pending = new Map(); // ID -> edges waiting for that snapshot
  snapshots.forEach((s, i) => {
    let at = -1;
    for (let c = 0; c < cols.length; c++) {
      if (cols[c] === s.id) {
        if (at < 0) at = c;
        else cols[c] = null; // another line of history joins here
      }
    }
    if (at < 0) {
      at = cols.indexOf(null);
      if (at < 0) at = cols.push(null) - 1;
    }
    nodes[i].lane = at;
    for (const e of pending.get(s.id) || []) {
      e.to = i;
      e.toLane = at;
    }
    pending.delete(s.id);
    cols[at] = null;
    (s.parents || []).forEach((p, k) => {
      if (!index.has(p)) return; // not listed: no edge
      const pi = index.get(p);
      if (pi < i) {
        // The parent is listed above its child (clocks that disagree):
        // a straight edge up to it, holding no lane.
        edges.push({ from: i, fromLane: at, lane: at, to: pi, toLane: nodes[pi].lane });
        return;
      }
      let lane = at;
      if (k > 0 || cols[at] !== null) {
        lane = cols.indexOf(null);
        if (lane < 0) lane = cols.push(null) - 1;
      }
      const known = cols.indexOf(p);
      if (known >= 0 && k > 0) lane = known; // a lane already waits for it
      cols[lane] = p;
      const e = { from: i, fromLane: at, lane, to: -1, toLane: -1 };
      edges.push(e);
      if (!pending.has(p)) pending.set(p, []);
      pending.get(p).push(e);
    });
    while (cols.length && cols[cols.length - 1] === null) cols.pop();
    width[i] = Math.max(cols.length, at + 1);
  });
  // Labels start right of every lane that passes through their row.
  for (const e of edges) {
    for (let r = e.from; r < e.to; r++) width[r] = Math.max(width[r], e.lane + 1);
  }
  const drawn = edges.filter((e) => e.to >= 0);
  for (const e of drawn) {
    e.top = Math.min(e.from, e.to);
    e.bottom = Math.max(e.from, e.to);
  }
  return { nodes, edges: drawn, width, index };
}

// badgeHTML draws a ref or a machine on its snapshot.
function badgeHTML(b) {
  const title = b.kind === "machine" ? `machine ${b.label}, ${b.state}, continues from here` : `${b.kind} ${b.label}${b.head ? " (HEAD)" : ""}`;
  return `<span class="badge ${b.kind}${b.head ? " head" : ""}${b.state ? " " + b.state : ""}" title="${escapeHTML(title)}">${b.kind === "machine" ? "▶ " : ""}${escapeHTML(b.label)}</span>`;
}

const x = (lane) => MARGIN + lane * LANE;
const y = (row) => MARGIN + row * ROW;

// edgePath is the SVG path of an edge, in the view's pixels: down its
// lane, bending into the child's lane at the top and into the parent's at
// the bottom. X and Y place a lane and a row; rh is a row's height.
function edgePath(e, X, Y, rh) {
  if (e.to < e.from) return `M${X(e.fromLane)} ${Y(e.from)}L${X(e.toLane)} ${Y(e.to)}`;
  const x0 = X(e.fromLane), y0 = Y(e.from);
  const xl = X(e.lane), x1 = X(e.toLane), y1 = Y(e.to);
  let d = `M${x0} ${y0}`;
  let top = y0;
  if (xl !== x0) {
    top = y0 + rh;
    d += `C${x0} ${y0 + rh / 2} ${xl} ${y0 + rh / 2} ${xl} ${top}`;
  }
  const bottom = xl === x1 ? y1 : y1 - rh;
  if (bottom > top) d += `L${xl} ${bottom}`;
  if (xl !== x1) d += `C${xl} ${bottom + rh / 2} ${x1} ${bottom + rh / 2} ${x1} ${y1}`;
  return d;
}

// Helpers for the views.

export function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  n = Number(n) || 0;
  while (Math.abs(n) >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return (u === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[u];
}

export function formatTime(t) {
  const d = new Date(t);
  if (isNaN(d)) return "";
  const p = (v) => String(v).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export const short = (id) => id.slice(0, 12);
export const firstLine = (s) => (s || "").split("\n")[0];

// refKind classifies a full ref name for its badge.
export function refKind(name) {
  for (const [prefix, kind] of [["refs/heads/", "branch"], ["refs/tags/", "tag"], ["refs/remotes/", "remote"], ["refs/images/", "image"]]) {
    if (name.startsWith(prefix)) return { kind, label: name.slice(prefix.length) };
  }
  return null; // bookkeeping refs (children, autosnap) are not shown
}

// GraphView shows a graph in a container element and lists its snapshots
// in a list element. data: { snapshots, refs, head, machines? }.
export class GraphView {
  constructor(container, list, { onSelect = () => {}, onActivate = () => {} } = {}) {
    this.container = container;
    this.list = list;
    this.onSelect = onSelect;
    this.onActivate = onActivate;
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.selected = null;
    this.data = { snapshots: [], refs: [] };
    this.lay = layout([]);
    container.classList.add("graph");
    container.innerHTML =
      '<svg class="graph-lines" aria-hidden="true"><g></g></svg><div class="graph-labels"></div>';
    this.svg = container.querySelector("svg g");
    this.labels = container.querySelector(".graph-labels");
    this.badges = new Map();
    this.frame = 0;
    this.bindPointer();
    this.bindKeys();
    list.addEventListener("click", (ev) => {
      const li = ev.target.closest("[data-id]");
      if (li) this.select(li.dataset.id, { center: true });
    });
    new ResizeObserver(() => this.draw()).observe(container);
  }

  // setData replaces the graph, keeping the view and the selection.
  setData(data) {
    this.data = data;
    this.lay = layout(data.snapshots || []);
    this.badges = this.makeBadges(data);
    this.renderList();
    if (this.selected && !this.lay.index.has(this.selected)) this.selected = null;
    this.container.dataset.snapshots = String(data.snapshots.length);
    this.draw();
  }

  // makeBadges gathers per snapshot ID the refs and machines shown on it.
  makeBadges(data) {
    const badges = new Map();
    const add = (id, b) => {
      if (!badges.has(id)) badges.set(id, []);
      badges.get(id).push(b);
    };
    for (const r of data.refs || []) {
      const k = refKind(r.name);
      if (k) add(r.id, { ...k, head: data.head === r.name });
    }
    for (const m of data.machines || []) {
      if (m.snapshot) add(m.snapshot, { kind: "machine", label: m.name, state: m.state });
    }
    return badges;
  }

  entry(id) {
    const i = this.lay.index.get(id);
    return i === undefined ? null : this.data.snapshots[i];
  }

  // select makes id the selected snapshot and tells onSelect.
  select(id, { center = false, quiet = false } = {}) {
    if (!this.lay.index.has(id)) return;
    this.selected = id;
    for (const el of this.list.querySelectorAll('[aria-current="true"]')) el.removeAttribute("aria-current");
    const li = this.list.querySelector(`li[data-id="${id}"]`);
    if (li) {
      li.setAttribute("aria-current", "true");
      li.scrollIntoView({ block: "nearest" });
    }
    if (center) this.reveal(id);
    this.draw();
    if (!quiet) this.onSelect(this.entry(id));
  }

  // reveal pans so that snapshot id is in view.
  reveal(id) {
    const row = this.lay.index.get(id);
    const h = this.container.clientHeight;
    const sy = y(row) * this.scale + this.ty;
    // Bring it a third of the way down, but never pan the newest
    // snapshots away from the top.
    if (sy < 40 || sy > h - 40) this.ty = Math.min(0, h / 3 - y(row) * this.scale);
    const sx = x(this.lay.nodes[row].lane) * this.scale + this.tx;
    if (sx < 0 || sx > this.container.clientWidth - 40) this.tx = Math.min(0, MARGIN - x(this.lay.nodes[row].lane) * this.scale);
  }

  renderList() {
    const parts = [];
    for (const s of this.data.snapshots) {
      const names = (this.badges.get(s.id) || []).map(badgeHTML).join("");
      parts.push(
        `<li data-id="${s.id}"${s.id === this.selected ? ' aria-current="true"' : ""}><button type="button">` +
          `<code class="id">${short(s.id)}</code>${names}<span class="msg">${escapeHTML(firstLine(s.message)) || "<i>no message</i>"}</span>` +
          `<span class="meta">${formatTime(s.time)} · ${formatBytes(s.logical_bytes)} · +${formatBytes(s.added_bytes)}</span></button></li>`,
      );
    }
    this.list.innerHTML = parts.join("");
  }

  // draw redraws what is in view, at most once a frame.
  draw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  // render draws the rows in view: lanes and nodes in the SVG, in the
  // view's pixels, and labels as HTML, moved and scaled by the view's
  // transform. Far out, lanes keep at least 8 pixels apart so that the
  // shape of the history shows.
  render() {
    const { nodes, edges, width } = this.lay;
    const h = this.container.clientHeight, s = this.scale;
    const r0 = Math.max(0, Math.floor((-this.ty / s - MARGIN) / ROW) - 1);
    const r1 = Math.min(nodes.length - 1, Math.ceil(((h - this.ty) / s - MARGIN) / ROW) + 1);
    const dense = ROW * s < 4;
    const sx = dense ? Math.max(s, 8 / LANE) : s;
    const X = (lane) => this.tx + x(lane) * sx, Y = (row) => this.ty + y(row) * s;
    this.labels.style.transform = `translate(${this.tx}px,${this.ty}px) scale(${s})`;
    const lines = [];
    for (const e of edges) {
      if (e.bottom >= r0 && e.top <= r1) lines.push(`<path d="${edgePath(e, X, Y, ROW * s)}"/>`);
    }
    const dots = [], labels = [];
    const withLabels = s >= LABEL_SCALE && r1 - r0 < 400;
    // Far out, rows are too close for a node each: the lanes show the
    // shape, and only snapshots with a ref, a machine or the selection get
    // a node.
    const radius = (auto) => Math.max(3, (auto ? 4 : 6) * Math.min(s, 1.5));
    for (let r = r0; r <= r1; r++) {
      const n = nodes[r], e = n.entry;
      const badges = this.badges.get(e.id) || [];
      if (dense && !badges.length && e.id !== this.selected) continue;
      const cls = ["node"];
      if (e.auto) cls.push("auto");
      if (e.id === this.selected) cls.push("selected");
      if (badges.some((b) => b.kind === "machine")) cls.push("live");
      dots.push(`<circle class="${cls.join(" ")}" data-id="${e.id}" cx="${X(n.lane)}" cy="${Y(r)}" r="${radius(e.auto)}"><title>${short(e.id)} ${escapeHTML(firstLine(e.message))}</title></circle>`);
      if (withLabels) labels.push(this.label(n, badges, width[r]));
    }
    this.svg.innerHTML = lines.join("") + dots.join("");
    this.labels.innerHTML = labels.join("");
  }

  label(n, badges, lanes) {
    const e = n.entry;
    const b = badges.map(badgeHTML);
    return `<div class="node-label${e.id === this.selected ? " selected" : ""}" data-id="${e.id}" style="top:${y(n.row) - ROW / 2}px;left:${x(lanes - 1) + LABEL_GAP}px">` +
      `<code class="id">${short(e.id)}</code>${b.join("")}<span class="msg">${escapeHTML(firstLine(e.message))}</span>` +
      `<span class="meta">${formatTime(e.time)} · ${formatBytes(e.logical_bytes)} · +${formatBytes(e.added_bytes)}</span></div>`;
  }

  // zoomAt zooms by factor keeping the point (px, py) of the view still.
  zoomAt(factor, px, py) {
    const s = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    this.tx = px - ((px - this.tx) * s) / this.scale;
    this.ty = py - ((py - this.ty) * s) / this.scale;
    this.scale = s;
    this.draw();
  }

  // zoom zooms by factor around the selected snapshot if it is in view,
  // else around the top left corner.
  zoom(factor) {
    let px = 0, py = 0;
    if (this.selected) {
      const n = this.lay.nodes[this.lay.index.get(this.selected)];
      const sx = this.tx + x(n.lane) * this.scale, sy = this.ty + y(n.row) * this.scale;
      if (sy >= 0 && sy <= this.container.clientHeight) [px, py] = [sx, sy];
    }
    this.zoomAt(factor, px, py);
  }

  // fit shows every snapshot.
  fit() {
    const rows = Math.max(1, this.lay.nodes.length);
    this.scale = Math.min(1, Math.max(MIN_SCALE, (this.container.clientHeight - 20) / (rows * ROW + 2 * MARGIN)));
    this.tx = 10;
    this.ty = 10;
    this.draw();
  }

  // home shows the newest snapshots at the natural size.
  home() {
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.draw();
  }

  bindPointer() {
    const c = this.container;
    let drag = null;
    c.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, tx: this.tx, ty: this.ty, moved: false };
    });
    c.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) c.setPointerCapture(ev.pointerId);
      drag.moved = true;
      this.tx = drag.tx + dx;
      this.ty = drag.ty + dy;
      this.draw();
    });
    const end = (ev) => {
      if (drag && !drag.moved && ev.type === "pointerup") {
        const hit = ev.target.closest("[data-id]");
        if (hit) this.select(hit.dataset.id);
      }
      drag = null;
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("dblclick", (ev) => {
      const hit = ev.target.closest("[data-id]");
      if (hit) this.onActivate(this.entry(hit.dataset.id));
    });
    c.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      if (ev.ctrlKey || ev.metaKey) {
        const r = c.getBoundingClientRect();
        this.zoomAt(Math.exp(-ev.deltaY / 300), ev.clientX - r.left, ev.clientY - r.top);
      } else {
        this.tx -= ev.shiftKey ? ev.deltaY : ev.deltaX;
        this.ty -= ev.shiftKey ? 0 : ev.deltaY;
        this.draw();
      }
    }, { passive: false });
  }

  // bindKeys: arrows move the selection, + and - zoom, 0 fits.
  bindKeys() {
    const c = this.container;
    c.tabIndex = 0;
    c.setAttribute("role", "application");
    c.setAttribute("aria-label", "history graph: arrow keys choose a snapshot, + and - zoom, 0 shows all");
    c.addEventListener("keydown", (ev) => {
      const i = this.selected ? this.lay.index.get(this.selected) : -1;
      const move = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 }[ev.key];
      if (move) {
        const j = Math.min(this.lay.nodes.length - 1, Math.max(0, i + move));
        if (j >= 0) this.select(this.lay.nodes[j].entry.id, { center: true });
      } else if (ev.key === "+" || ev.key === "=") this.zoom(1.25);
      else if (ev.key === "-") this.zoom(0.8);
      else if (ev.key === "0") this.fit();
      else if (ev.key === "Enter" && this.selected) this.onActivate(this.entry(this.selected));
      else return;
      ev.preventDefault();
    });
  }
}
