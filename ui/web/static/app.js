// app.js is the page of sbuml ui: the history graph, a snapshot's details,
// the machines, their consoles and screens, and the actions, each a POST
// to /api/ACTION that calls what the sbuml command of that name calls.

import { GraphView, escapeHTML, formatBytes, formatTime, short, firstLine, refKind } from "./graph.js";

const $ = (sel) => document.querySelector(sel);

// --- talking to the server

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// act runs an action and says how it went; it returns the result, or
// null if it failed.
async function act(name, body, busy) {
  if (busy) toast(busy, "busy");
  try {
    const r = await fetch("/api/" + name, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const res = await r.json();
    if (!r.ok) throw new Error(res.error || r.statusText);
    refresh();
    return res;
  } catch (err) {
    toast(err.message, "error");
    return null;
  }
}

let toastTimer = 0;
function toast(msg, kind = "ok") {
  const t = $("#toast");
  t.textContent = msg;
  t.className = "toast show " + kind;
  clearTimeout(toastTimer);
  if (kind !== "busy") toastTimer = setTimeout(() => (t.className = "toast"), kind === "error" ? 12000 : 5000);
}

// --- the graph and live updates

let graph = { snapshots: [], refs: [], machines: [], generation: -1 };
const view = new GraphView($("#graph"), $("#snapshot-list"), {
  onSelect: (e) => showDetails(e),
  onActivate: (e) => checkoutDialog(e),
});

let fetching = null, again = false;
let latest = -1; // the newest generation the server announced
// refresh fetches the graph again; calls while one is under way make one
// more afterwards, as does a change announced meanwhile.
async function refresh() {
  if (fetching) {
    again = true;
    return fetching;
  }
  fetching = (async () => {
    do {
      again = false;
      try {
        graph = await get("/api/graph");
        render();
      } catch (err) {
        toast("cannot read the scrapbook: " + err.message, "error");
        break;
      }
    } while (again || graph.generation < latest);
    fetching = null;
  })();
  return fetching;
}

function render() {
  $("#scrapbook").textContent = graph.scrapbook;
  $("#snapshot-count").textContent = `(${graph.snapshots.length})`;
  view.setData(graph);
  applyFilter();
  renderMachines();
  if (view.selected) showDetails(view.entry(view.selected));
  document.body.dataset.generation = String(graph.generation);
  // The first graph on the page is a moment to measure (the benchmark does).
  if (!performance.getEntriesByName("sbuml-graph-drawn").length) requestAnimationFrame(() => performance.mark("sbuml-graph-drawn"));
}

function listen() {
  const live = $("#live");
  const es = new EventSource("/api/events");
  es.addEventListener("change", (ev) => {
    live.textContent = "live";
    live.className = "live on";
    latest = Number(ev.data);
    if (!fetching && latest !== graph.generation) refresh();
  });
  es.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
}

function applyFilter() {
  const q = $("#filter").value.trim().toLowerCase();
  for (const li of $("#snapshot-list").children) {
    li.hidden = q !== "" && !li.textContent.toLowerCase().includes(q);
  }
}

// --- a snapshot's details

let shown = null; // the snapshot shown, and its tree once read
let shownTree = null;
let detailsHTMLNow = "";
// showDetails shows snapshot e; its tree is read once, and the panel is
// redrawn only when what it shows changed (refs, machines, children).
async function showDetails(e) {
  if (!e) {
    shown = null;
    return setDetails('<p class="muted">Choose a snapshot in the graph or the list.</p>', null);
  }
  if (shown !== e.id) {
    shown = e.id;
    shownTree = null;
    setDetails(detailsHTML(e, null), e);
    try {
      const full = await get("/api/snapshot?rev=" + e.id);
      if (shown !== e.id) return;
      shownTree = full;
    } catch (err) {
      return toast(err.message, "error");
    }
  }
  setDetails(detailsHTML(e, shownTree), e);
}

function setDetails(html, e) {
  if (html === detailsHTMLNow) return;
  detailsHTMLNow = html;
  $("#details").innerHTML = html;
  if (e) bindDetails(e);
}

function detailsHTML(e, full) {
  const children = graph.snapshots.filter((s) => (s.parents || []).includes(e.id));
  const link = (id) => `<a href="#" data-goto="${id}"><code>${short(id)}</code></a>`;
  const refs = graph.refs.filter((r) => r.id === e.id).map((r) => ({ ...r, k: refKind(r.name) })).filter((r) => r.k);
  const machines = graph.machines.filter((m) => m.snapshot === e.id);
  const isMachine = (e.labels || {}).kind === "machine";
  let files = '<p class="muted">reading its tree…</p>';
  let holes = 0;
  if (full) {
    holes = full.files.reduce((n, f) => n + (f.hole_bytes || 0), 0);
    files = `<table class="files"><thead><tr><th>path</th><th>size</th><th>chunks</th><th>holes</th></tr></thead><tbody>${full.files
      .map((f) => `<tr><td>${escapeHTML(f.path)}${f.kind === "dir" ? "/" : ""}</td><td class="num">${f.kind === "file" ? formatBytes(f.size) : ""}</td><td class="num">${f.chunks || ""}</td><td class="num">${f.hole_bytes ? formatBytes(f.hole_bytes) : ""}</td></tr>`)
      .join("")}</tbody></table>`;
  }
  // What the snapshot holds but for holes, against what it added.
  const data = e.logical_bytes - holes;
  const dedup = !full ? "" : e.added_bytes > 0 ? `${formatBytes(data)} of data stored in ${formatBytes(e.added_bytes)}: ${(data / e.added_bytes).toFixed(1)}× less, by dedup against older snapshots and compression` : `${formatBytes(data)} of data, all of it stored already`;
  return `<h2>Snapshot <code class="id" title="${e.id}">${short(e.id)}</code></h2>
  <p class="message">${escapeHTML(e.message) || '<i class="muted">no message</i>'}</p>
  <dl class="facts">
    <dt>ID</dt><dd><code class="full-id">${e.id}</code></dd>
    <dt>Time</dt><dd>${formatTime(e.time)}${e.author ? ` by ${escapeHTML(e.author)}@${escapeHTML(e.host)}` : ""}${e.auto ? " (automatic)" : ""}</dd>
    <dt>Parents</dt><dd>${(e.parents || []).map(link).join(" ") || "none"}</dd>
    <dt>Children</dt><dd>${children.map((c) => link(c.id)).join(" ") || "none"}</dd>
    <dt>Refs</dt><dd>${refs.map((r) => `<span class="badge ${r.k.kind}">${escapeHTML(r.k.label)}</span>${r.k.kind === "branch" || r.k.kind === "tag" ? `<button type="button" class="small" data-delete-ref="${escapeHTML(r.name)}" aria-label="delete ${r.k.kind} ${escapeHTML(r.k.label)}">×</button>` : ""}`).join(" ") || "none"}</dd>
    <dt>Machines</dt><dd>${machines.map((m) => escapeHTML(m.name) + " (" + m.state + ")").join(", ") || "none"}</dd>
    <dt>Size</dt><dd>${formatBytes(e.logical_bytes)} logical${full ? `, ${formatBytes(holes)} of it holes` : ""}</dd>
    <dt>Added</dt><dd>${formatBytes(e.added_bytes)} stored, new to the scrapbook</dd>
    ${dedup ? `<dt>Dedup</dt><dd>${dedup}</dd>` : ""}
  </dl>
  <div class="actions">
    ${isMachine ? '<button type="button" data-act="checkout">Check out…</button><button type="button" data-act="rewind">Rewind a machine here…</button>' : ""}
    <button type="button" data-act="tag">Tag…</button>
    <button type="button" data-act="branch">Branch…</button>
  </div>
  <h3>Tree</h3>${files}`;
}

function bindDetails(e) {
  const d = $("#details");
  d.querySelectorAll("[data-goto]").forEach((a) =>
    a.addEventListener("click", (ev) => {
      ev.preventDefault();
      view.select(a.dataset.goto, { center: true });
    }),
  );
  d.querySelectorAll("[data-delete-ref]").forEach((b) =>
    b.addEventListener("click", async () => {
      const ref = b.dataset.deleteRef;
      const k = refKind(ref);
      if (!(await confirmDialog(`Delete ${k.kind} ${k.label}?`, `Its snapshots stay in the scrapbook until gc frees what nothing else reaches.`, "Delete"))) return;
      const res = await act("delete-ref", { ref });
      if (res) toast(`deleted ${k.kind} ${k.label} (was ${short(res.id)})`);
    }),
  );
  const on = (name, fn) => d.querySelector(`[data-act="${name}"]`)?.addEventListener("click", () => fn(e));
  on("checkout", checkoutDialog);
  on("rewind", rewindDialog);
  on("tag", (e) => refDialog(e, "tag"));
  on("branch", (e) => refDialog(e, "branch"));
}

// --- dialogs

// ask shows a form of fields and resolves to their values, or null.
function ask(title, fields, submit, note = "") {
  const dlg = $("#dialog"), form = $("#dialog-form");
  form.innerHTML = `<h2>${escapeHTML(title)}</h2>${note ? `<p class="muted">${note}</p>` : ""}${fields
    .map((f) => {
      const id = "f-" + f.name;
      if (f.type === "checkbox") return `<label class="check"><input type="checkbox" id="${id}" name="${f.name}"${f.value ? " checked" : ""}> ${escapeHTML(f.label)}</label>`;
      if (f.type === "select")
        return `<label for="${id}">${escapeHTML(f.label)}</label><select id="${id}" name="${f.name}">${f.options.map((o) => `<option value="${escapeHTML(o.value)}"${o.value === f.value ? " selected" : ""}>${escapeHTML(o.label)}</option>`).join("")}</select>`;
      return `<label for="${id}">${escapeHTML(f.label)}</label><input id="${id}" name="${f.name}" type="${f.type || "text"}" value="${escapeHTML(f.value ?? "")}"${f.required ? " required" : ""}>`;
    })
    .join("")}<div class="buttons"><button value="cancel" formnovalidate>Cancel</button><button value="ok" class="primary">${escapeHTML(submit)}</button></div>`;
  return new Promise((resolve) => {
    dlg.onclose = () => {
      if (dlg.returnValue !== "ok") return resolve(null);
      const out = {};
      for (const f of fields) {
        const el = form.elements[f.name];
        out[f.name] = f.type === "checkbox" ? el.checked : el.value.trim();
      }
      resolve(out);
    };
    dlg.returnValue = "";
    dlg.showModal();
  });
}

async function confirmDialog(title, note, submit) {
  return (await ask(title, [], submit, escapeHTML(note))) !== null;
}

// freeName returns base, or base-2, base-3...: a name no machine has.
function freeName(base) {
  const used = new Set(graph.machines.map((m) => m.name));
  for (let i = 1; ; i++) {
    const n = i === 1 ? base : `${base}-${i}`;
    if (!used.has(n)) return n;
  }
}

async function checkoutDialog(e) {
  if (!e) return;
  const base = (e.labels || {}).machine || "m";
  const v = await ask(`Check out ${short(e.id)}`, [
    { name: "machine", label: "New machine", value: freeName(base + "-2"), required: true },
    { name: "continue", label: "continue it at once (-c)", type: "checkbox", value: true },
  ], "Check out", `as <code>sbuml checkout ${short(e.id)} NAME -c</code> would`);
  if (!v) return;
  const res = await act("checkout", { snapshot: e.id, machine: v.machine, continue: v.continue }, `checking out ${short(e.id)} as ${v.machine}…`);
  if (res) toast(`${res.machine} ${res.running ? "running" : "frozen"} from ${short(res.snapshot)} in ${(res.duration_ns / 1e6).toFixed(0)} ms`);
}

async function rewindDialog(e) {
  if (!graph.machines.length) return toast("no machine to rewind", "error");
  const v = await ask(`Rewind a machine to ${short(e.id)}`, [
    { name: "machine", label: "Machine", type: "select", options: graph.machines.map((m) => ({ value: m.name, label: `${m.name} (${m.state})` })), value: graph.machines[0].name },
  ], "Rewind", "The machine is halted and brought back from this snapshot under the same name.");
  if (!v) return;
  const res = await act("rewind", { machine: v.machine, snapshot: e.id }, `rewinding ${v.machine}…`);
  if (res) toast(`${res.machine} rewound to ${short(res.snapshot)}`);
}

async function refDialog(e, kind) {
  const v = await ask(`New ${kind} at ${short(e.id)}`, [{ name: "name", label: `${kind} name`, required: true }], `Create ${kind}`);
  if (!v) return;
  const res = await act(kind, { name: v.name, snapshot: e.id });
  if (res) toast(`${kind} ${v.name} at ${short(res.id)}`);
}

async function bootDialog() {
  let images = [];
  try {
    images = await get("/api/images");
  } catch (err) {
    /* the default image is built on first boot */
  }
  const opts = images.map((i) => ({ value: i.name, label: i.name }));
  if (!opts.some((o) => o.value === "tiny")) opts.unshift({ value: "tiny", label: "tiny (built on first use)" });
  const v = await ask("Boot a machine", [
    { name: "machine", label: "Name", value: freeName("m1"), required: true },
    { name: "base", label: "Image", type: "select", options: opts, value: "tiny" },
    { name: "memory", label: "Memory (MiB)", type: "number", value: "512" },
    { name: "display", label: "with a screen (VNC)", type: "checkbox", value: false },
  ], "Boot");
  if (!v) return;
  const res = await act("boot", { machine: v.machine, base: v.base, memory: Number(v.memory) * 1048576, display: v.display ? "vnc" : "" }, `booting ${v.machine}…`);
  if (res) toast(`${res.machine} running`);
}

async function gcDialog() {
  const dry = await act("gc", { dry_run: true }, "looking for what nothing needs…");
  if (!dry) return;
  toast("");
  const v = await ask("Free space", [], "Remove it", escapeHTML(`gc would remove ${dry.removed ?? 0} objects, ${formatBytes(dry.removed_bytes ?? 0)} (snapshots no branch, tag, image or machine reaches).`));
  if (!v) return;
  const res = await act("gc", { dry_run: false }, "collecting garbage…");
  if (res) toast(`gc removed ${res.removed ?? 0} objects, ${formatBytes(res.removed_bytes ?? 0)}`);
}

async function commitDialog(m) {
  const v = await ask(`Commit ${m.name}`, [
    { name: "message", label: "Message", value: "" },
    { name: "freeze", label: "leave it frozen (-f)", type: "checkbox", value: false },
  ], "Commit", "saves its RAM, vCPUs, devices and disks at one instant");
  if (!v) return;
  const res = await act("commit", { machine: m.name, message: v.message, freeze: v.freeze }, `committing ${m.name}…`);
  if (res) {
    toast(`${short(res.id)} on ${res.branch.replace("refs/heads/", "")}: ${formatBytes(res.stats.new_bytes ?? 0)} added`);
    await refresh();
    view.select(res.id, { center: true });
  }
}

// --- machines

let machinesHTML = "";
// renderMachines redraws the machines only when what they show changed, so
// that a button is not replaced under the pointer or the keyboard focus.
function renderMachines() {
  const ul = $("#machines");
  const html = graph.machines.length ? machinesHTMLOf(graph.machines) : '<li class="muted">none: boot one, or check a snapshot out</li>';
  if (html === machinesHTML) return;
  machinesHTML = html;
  ul.innerHTML = html;
  ul.querySelectorAll("li[data-machine]").forEach((li) => {
    const m = () => graph.machines.find((x) => x.name === li.dataset.machine);
    li.querySelector("[data-goto]")?.addEventListener("click", (ev) => {
      ev.preventDefault();
      view.select(m().snapshot, { center: true });
    });
    li.querySelectorAll("[data-m]").forEach((b) => b.addEventListener("click", () => machineAction(m(), b.dataset.m)));
  });
}

function machinesHTMLOf(machines) {
  return machines
    .map((m) => {
      const running = m.state === "running", frozen = m.state === "frozen";
      const fwd = (m.forwards || []).map((f) => `${f.host_addr}:${f.host_port}→${f.guest_port}`).join(", ");
      return `<li data-machine="${escapeHTML(m.name)}" class="machine ${m.state}">
        <div><strong>${escapeHTML(m.name)}</strong> <span class="state">${m.state}</span>
        ${m.snapshot ? `from <a href="#" data-goto="${m.snapshot}"><code>${short(m.snapshot)}</code></a>` : ""}
        <span class="muted">${formatBytes(m.memory)} · ${m.accel}${fwd ? " · " + escapeHTML(fwd) : ""}</span></div>
        <div class="actions">
          <button type="button" data-m="console">Console</button>
          ${m.display ? '<button type="button" data-m="display">Screen</button>' : ""}
          <button type="button" data-m="commit">Commit…</button>
          ${running ? '<button type="button" data-m="freeze">Freeze</button>' : ""}
          ${frozen ? '<button type="button" data-m="continue">Continue</button>' : ""}
          <button type="button" data-m="halt">Halt</button>
        </div></li>`;
    })
    .join("");
}

async function machineAction(m, what) {
  switch (what) {
    case "console":
      return openConsole(m.name);
    case "display":
      return openDisplay(m.name);
    case "commit":
      return commitDialog(m);
    case "halt":
      if (!(await confirmDialog(`Halt ${m.name}?`, "Its QEMU stops and its directory is deleted; its snapshots stay.", "Halt"))) return;
    // fall through
    case "freeze":
    case "continue": {
      const res = await act(what, { machine: m.name }, `${what} ${m.name}…`);
      if (res) toast(`${res.machine} ${res.state}`);
    }
  }
}

// --- console (xterm.js over a websocket) and screen (noVNC)

let session = null; // { close() }

function wsURL(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

function openPane(title) {
  if (session) session.close();
  session = null;
  $("#screen-pane").hidden = false;
  $("#screen-title").textContent = title;
  $("#screen-status").textContent = "connecting…";
  $("#terminal").hidden = true;
  $("#display").hidden = true;
}

$("#screen-close").addEventListener("click", () => {
  if (session) session.close();
  session = null;
  $("#screen-pane").hidden = true;
});

async function openConsole(name) {
  openPane(`Console of ${name}`);
  const [{ Terminal }, { FitAddon }] = await Promise.all([import("./vendor/xterm/xterm.mjs"), import("./vendor/xterm/addon-fit.mjs")]);
  const el = $("#terminal");
  el.hidden = false;
  el.innerHTML = "";
  el.dataset.machine = name;
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);
  const ws = new WebSocket(wsURL("/api/console?machine=" + encodeURIComponent(name)));
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      $("#screen-status").textContent = m.message;
      el.dataset.state = m.event;
      if (m.event !== "attached") term.write(`\r\n\x1b[33m[${m.message}]\x1b[0m\r\n`);
      return;
    }
    term.write(new Uint8Array(ev.data));
  };
  ws.onclose = () => {
    if (el.dataset.state === "attached") $("#screen-status").textContent = "disconnected";
  };
  const input = term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(d);
  });
  term.focus();
  session = {
    close() {
      input.dispose();
      ws.close();
      term.dispose();
      window.removeEventListener("resize", onResize);
    },
  };
}

async function openDisplay(name) {
  openPane(`Screen of ${name}`);
  const { default: RFB } = await import("./vendor/novnc/rfb.min.mjs");
  const el = $("#display");
  el.hidden = false;
  el.innerHTML = "";
  const rfb = new RFB(el, wsURL("/api/vnc?machine=" + encodeURIComponent(name)), { wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => ($("#screen-status").textContent = "connected: click the screen to type"));
  rfb.addEventListener("disconnect", (ev) => ($("#screen-status").textContent = ev.detail.clean ? "disconnected" : "the screen's connection failed: is the machine running?"));
  session = { close: () => rfb.disconnect() };
}

// --- start

document.querySelectorAll("[data-zoom]").forEach((b) =>
  b.addEventListener("click", () => {
    const z = b.dataset.zoom;
    if (z === "in") view.zoom(1.25);
    else if (z === "out") view.zoom(0.8);
    else if (z === "fit") view.fit();
    else view.home();
  }),
);
$("#filter").addEventListener("input", applyFilter);
$("#boot").addEventListener("click", bootDialog);
$("#gc").addEventListener("click", gcDialog);
listen();
refresh();
