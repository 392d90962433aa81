// site.js shows the graph of a published scrapbook (sbuml publish): the
// same view as sbuml ui, read-only, from graph.json beside index.html.
// Choosing a snapshot shows its .sbuml link and the sbuml checkout line
// that runs it.

import { GraphView, escapeHTML, formatBytes, formatTime, short, refKind } from "./graph.js";

const $ = (sel) => document.querySelector(sel);

function details(site, e) {
  const d = $("#site-details");
  if (!e) return;
  const link = `snapshots/${short(e.id)}.sbuml`;
  const refs = site.refs.filter((r) => r.id === e.id).map((r) => refKind(r.name)).filter(Boolean);
  const machine = (e.labels || {}).machine || "m1";
  d.innerHTML = `<h2>Snapshot <code class="id">${short(e.id)}</code> ${refs.map((k) => `<span class="badge ${k.kind}">${escapeHTML(k.label)}</span>`).join(" ")}</h2>
  <p class="message">${escapeHTML(e.message)}</p>
  <p class="muted">${formatTime(e.time)} · ${formatBytes(e.logical_bytes)} · ${formatBytes(e.added_bytes)} added</p>
  <p>Run it: open <a href="${link}" type="application/x-sbuml" download>${escapeHTML(link)}</a> with <code>sbuml open</code>, or type</p>
  <code class="cmd">sbuml checkout ${escapeHTML(site.url)}#${e.id} ${escapeHTML(machine)} -c</code>`;
}

async function start() {
  const r = await fetch("graph.json", { cache: "no-store" });
  if (!r.ok) throw new Error("graph.json: " + r.statusText);
  const site = await r.json();
  $("#static-table")?.remove();
  // As tall as the history, up to most of the window.
  $("#graph").style.height = Math.min(innerHeight * 0.6, 60 + 30 * site.snapshots.length) + "px";
  const view = new GraphView($("#graph"), $("#snapshot-list"), { onSelect: (e) => details(site, e) });
  view.setData(site);
  $("#snapshot-count").textContent = `(${site.snapshots.length})`;
  if (site.snapshots.length) view.select(site.snapshots[0].id);
}

start().catch((err) => {
  $("#site-details").textContent = "The graph could not be shown (" + err.message + "); the table below lists every snapshot.";
});
