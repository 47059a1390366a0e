// Starling scheduler status page: polls /api/v1/status and draws it with plain DOM and SVG.
// No libraries and nothing from other hosts, so it works on an air-gapped cluster.
"use strict";

(() => {
  const TOKEN_KEY = "starling-cluster-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SOURCES = ["origin", "seed", "peer"];
  const SAMPLES_KEPT = 90;
  // ?poll_ms=N polls faster or slower (tests use it); never faster than 4 times a second.
  const POLL_MS = Math.max(250, Number(new URLSearchParams(location.search).get("poll_ms")) || 2000);

  const samples = []; // {t, rates: {origin, seed, peer}} in bytes per second
  let previous = null; // {t, uptime, bytes} of the last poll
  let timer = null;

  // -- small DOM helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  function formatBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(Math.round(value)) : value.toFixed(value < 10 ? 1 : 0)) + " " + units[unit];
  }

  const formatRate = (bps) => formatBytes(bps) + "/s";

  function formatAge(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  const shortDigest = (digest) => digest.replace(/^(sha\d+:)([0-9a-f]{12})[0-9a-f]*$/, "$1$2…");

  // -- the token ---------------------------------------------------------------------

  function takeTokenFromFragment() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      // Out of the address bar, the history and any screenshot.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function askForToken(reason) {
    document.getElementById("token-reason").textContent = reason;
    document.getElementById("token-form").hidden = false;
    document.getElementById("updated").textContent = "waiting for the cluster token";
  }

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value);
    document.getElementById("token-form").hidden = true;
    poll();
  });

  // -- polling -----------------------------------------------------------------------

  function showError(message) {
    const node = document.getElementById("error");
    node.textContent = message;
    node.hidden = !message;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let response;
    try {
      response = await fetch("api/v1/status", { headers, cache: "no-store" });
    } catch (err) {
      showError("cannot reach the scheduler: " + err.message);
      schedule();
      return;
    }
    if (response.status === 401) {
      // Polling stops until a token is entered: no point asking again with the same one.
      askForToken(token ? "The scheduler refused this token." : "This scheduler needs the cluster token to show its state.");
      return;
    }
    if (!response.ok) {
      showError("the scheduler answered " + response.status);
      schedule();
      return;
    }
    const status = await response.json();
    showError("");
    render(status);
    // How many snapshots the page has drawn: tests wait on it rather than on time.
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    schedule();
  }

  // -- rendering ---------------------------------------------------------------------

  function render(status) {
    recordThroughput(status);
    renderSummary(status);
    renderThroughput();
    renderTasks(status);
    renderHosts(status);
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString() + " · scheduler up " + formatAge(status.uptime_s);
  }

  function recordThroughput(status) {
    const now = performance.now() / 1000;
    const bytes = status.piece_bytes;
    // A restarted scheduler starts its counters at zero: begin again instead of a negative rate.
    if (previous && status.uptime_s >= previous.uptime) {
      const elapsed = Math.max(now - previous.t, 0.001);
      const rates = {};
      for (const source of SOURCES) rates[source] = Math.max(0, bytes[source] - previous.bytes[source]) / elapsed;
      samples.push({ t: now, rates });
      if (samples.length > SAMPLES_KEPT) samples.shift();
    } else if (previous) {
      samples.length = 0;
    }
    previous = { t: now, uptime: status.uptime_s, bytes };
  }

  function card(label, value, id) {
    return el("div", { class: "card", id }, el("div", { class: "value", text: value }), el("div", { class: "label", text: label }));
  }

  function renderSummary(status) {
    const counts = status.counts;
    const bytes = status.piece_bytes;
    const total = bytes.origin + bytes.seed + bytes.peer;
    const latest = samples.length ? samples[samples.length - 1].rates : null;
    const nowRate = latest ? latest.origin + latest.seed + latest.peer : 0;
    const p2pShare = total ? Math.round((100 * (bytes.seed + bytes.peer)) / total) + " %" : "–";
    document.getElementById("summary").replaceChildren(
      card("hosts (" + counts.seed_hosts + " seed)", String(counts.hosts), "count-hosts"),
      card("peers", String(counts.peers), "count-peers"),
      card("tasks (blobs)", String(counts.tasks), "count-tasks"),
      card("piece throughput now", latest ? formatRate(nowRate) : "…", "rate-now"),
      card("swarm upload (60 s average)", formatRate(status.upload_bps), "rate-upload"),
      card("bytes from peers and seeds", p2pShare, "p2p-share"),
      card("piece bytes reported", formatBytes(total), "bytes-total"),
    );
  }

  function renderThroughput() {
    const width = 760;
    const height = 150;
    const pad = { left: 70, right: 10, top: 10, bottom: 20 };
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "throughput by source" });
    const peak = Math.max(1, ...samples.map((s) => Math.max(...SOURCES.map((src) => s.rates[src]))));
    const x = (i) => pad.left + (i * (width - pad.left - pad.right)) / Math.max(1, SAMPLES_KEPT - 1);
    const y = (v) => height - pad.bottom - (v / peak) * (height - pad.top - pad.bottom);
    chart.append(
      svg("line", { class: "axis", x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0) }),
      svg("line", { class: "axis", x1: pad.left, y1: y(peak), x2: width - pad.right, y2: y(peak) }),
      svg("text", { x: 4, y: y(peak) + 4, text: formatRate(peak) }),
      svg("text", { x: 4, y: y(0) + 4, text: "0" }),
    );
    const offset = SAMPLES_KEPT - samples.length;
    for (const source of SOURCES) {
      const points = samples.map((s, i) => `${x(offset + i).toFixed(1)},${y(s.rates[source]).toFixed(1)}`);
      if (points.length) chart.append(svg("polyline", { class: "rate " + source, "data-source": source, points: points.join(" "), fill: "none", "stroke-width": 2, stroke: strokeFor(source) }));
    }
    if (!samples.length) chart.append(svg("text", { x: pad.left + 10, y: height / 2, text: "collecting: a rate needs two polls" }));
    const latest = samples.length ? samples[samples.length - 1].rates : null;
    const legend = el("div", { class: "legend" });
    for (const source of SOURCES) {
      legend.append(el("span", {}, el("span", { class: "swatch " + source }), source + (latest ? " " + formatRate(latest[source]) : "")));
    }
    document.getElementById("throughput").replaceChildren(chart, legend);
  }

  function strokeFor(source) {
    return { origin: "#d9822b", seed: "#b8860b", peer: "#2f6fde" }[source];
  }

  function peerClass(peer) {
    if (peer.is_seed) return "seed";
    if (peer.state === "succeeded") return "done";
    return peer.state;
  }

  function renderTasks(status) {
    const container = document.getElementById("tasks");
    const shown = status.tasks.length;
    document.getElementById("tasks-note").textContent =
      status.tasks_truncated ? `(${shown} busiest of ${status.counts.tasks})` : `(${shown})`;
    if (!shown) {
      container.replaceChildren(el("p", { class: "muted", text: "No tasks: no peer is working on a blob." }));
      return;
    }
    container.replaceChildren(...status.tasks.map(renderTask));
  }

  function renderTask(task, index) {
    const meta = `${formatBytes(task.size_bytes)} in ${task.piece_count} pieces of ${formatBytes(task.piece_bytes)} · ` +
      `${task.peer_count} peers, ${task.complete_peer_count} complete, ${task.seed_peer_count} seed · ` +
      `first seen ${formatAge(task.age_s)} ago` + (task.peers_truncated ? ` · showing ${task.peers.length} peers` : "");
    // Peer ids are host_digest: long. Parents are shown by their host.
    const hostOf = new Map(task.peers.map((p) => [p.peer_id, p.host_id]));
    const rows = task.peers.map((peer) => {
      const done = peer.pieces / Math.max(1, task.piece_count);
      const bar = el("span", { class: "bar" + (done >= 1 ? " done" : "") }, el("span", { "data-fill": String(done) }));
      bar.firstChild.style.width = (100 * done).toFixed(1) + "%";
      let source = "–";
      if (peer.state === "succeeded") source = "done";
      else if (peer.back_to_source) source = "registry";
      else if (peer.parents.length) source = peer.parents.map((id) => hostOf.get(id) || id.slice(0, 12) + "…").join(", ");
      return el("tr", { "data-peer-id": peer.peer_id },
        el("td", { class: "mono", text: peer.host_id }),
        el("td", { text: peer.is_seed ? "seed, " + peer.state : peer.state }),
        el("td", {}, bar, " " + peer.pieces + "/" + task.piece_count),
        el("td", { text: source }),
      );
    });
    const table = el("table", { class: "peers" },
      el("thead", {}, el("tr", {}, el("th", { text: "host" }), el("th", { text: "state" }), el("th", { text: "pieces" }), el("th", { text: "fetching from" }))),
      el("tbody", {}, ...rows));
    return el("div", { class: "task", "data-task-id": task.task_id },
      el("h3", { text: shortDigest(task.task_id), title: task.task_id }),
      el("div", { class: "task-meta", text: meta }),
      el("div", { class: "task-body" }, table, swarmGraph(task, index)));
  }

  // Peers in columns by depth: a peer with no parents is at depth 0, a child one column
  // right of its deepest parent. The scheduler never hands out a cycle; the guard is for
  // a snapshot taken mid-change anyway.
  function swarmGraph(task, index) {
    const peers = task.peers;
    const byId = new Map(peers.map((p) => [p.peer_id, p]));
    const registry = peers.some((p) => p.back_to_source && p.state !== "succeeded");
    const depth = new Map();
    const depthOf = (peer, path) => {
      if (depth.has(peer.peer_id)) return depth.get(peer.peer_id);
      if (path.has(peer.peer_id)) return 0;
      path.add(peer.peer_id);
      let d = registry ? 1 : 0;
      for (const id of peer.parents) {
        const parent = byId.get(id);
        if (parent) d = Math.max(d, depthOf(parent, path) + 1);
      }
      depth.set(peer.peer_id, d);
      return d;
    };
    for (const peer of peers) depthOf(peer, new Set());
    const columns = [];
    if (registry) columns.push(["(registry)"]);
    for (const peer of peers) {
      const d = depth.get(peer.peer_id);
      while (columns.length <= d) columns.push([]);
      columns[d].push(peer.peer_id);
    }
    // Labels sit under their node, so edges (which leave sideways) never cross them.
    const colW = 150;
    const rowH = 48;
    const r = 9;
    const width = 40 + (columns.length - 1) * colW + 80;
    const height = 14 + Math.max(1, ...columns.map((c) => c.length)) * rowH;
    const pos = new Map();
    columns.forEach((ids, c) => ids.forEach((id, row) => pos.set(id, { x: 60 + c * colW, y: 18 + row * rowH })));
    const markerId = "arrow-" + index;
    const graph = svg("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "swarm graph: parents to children" },
      svg("defs", {}, svg("marker", { id: markerId, viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#7d8799" }))));
    const edge = (from, to, attrs) => {
      const a = pos.get(from);
      const b = pos.get(to);
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.max(1, Math.hypot(dx, dy));
      graph.append(svg("line", {
        x1: a.x + (dx * r) / len, y1: a.y + (dy * r) / len, x2: b.x - (dx * (r + 1)) / len, y2: b.y - (dy * (r + 1)) / len,
        "marker-end": `url(#${markerId})`, ...attrs,
      }));
    };
    for (const peer of peers) {
      for (const parentId of peer.parents) {
        if (byId.has(parentId)) edge(parentId, peer.peer_id, { class: "edge", "data-parent": parentId, "data-child": peer.peer_id });
      }
      if (registry && peer.back_to_source && peer.state !== "succeeded") {
        edge("(registry)", peer.peer_id, { class: "edge origin-edge", "stroke-dasharray": "4 3" });
      }
    }
    if (registry) {
      const p = pos.get("(registry)");
      graph.append(svg("g", { class: "node registry" },
        svg("rect", { x: p.x - r, y: p.y - r, width: 2 * r, height: 2 * r, fill: "#d9822b" }),
        svg("text", { x: p.x, y: p.y + r + 13, "text-anchor": "middle", text: "registry" })));
    }
    const fills = { seed: "#b8860b", done: "#2e9e5b", running: "#2f6fde", pending: "#9aa3b2" };
    for (const peer of peers) {
      const p = pos.get(peer.peer_id);
      const kind = peerClass(peer);
      const label = peer.host_id.length > 16 ? peer.host_id.slice(0, 15) + "…" : peer.host_id;
      graph.append(svg("g", { class: "node " + kind, "data-peer-id": peer.peer_id },
        svg("title", { text: `${peer.peer_id}\n${peer.state}, ${peer.pieces}/${task.piece_count} pieces` }),
        svg("circle", { cx: p.x, cy: p.y, r, fill: fills[kind] || fills.pending }),
        svg("text", { x: p.x, y: p.y + r + 13, "text-anchor": "middle", text: label })));
    }
    const legend = el("div", { class: "legend" },
      ...[["seed", "seed"], ["peer", "downloading"], ["done", "complete"], ["pending", "waiting"], ["origin", "registry"]]
        .map(([cls, text]) => el("span", {}, el("span", { class: "swatch " + cls }), text)));
    return el("div", {}, graph, legend);
  }

  function renderHosts(status) {
    document.getElementById("hosts-note").textContent =
      status.hosts_truncated ? `(${status.hosts.length} of ${status.counts.hosts})` : `(${status.hosts.length})`;
    const rows = status.hosts.map((host) =>
      el("tr", { "data-host-id": host.host_id },
        el("td", { class: "mono", text: host.host_id }),
        el("td", { class: "mono", text: host.address + ":" + host.piece_port }),
        el("td", { text: host.is_seed ? "seed" : "peer" }),
        el("td", { text: [host.idc, host.rack, host.location].filter(Boolean).join(" / ") || "–" }),
        el("td", { class: "num", text: String(host.peers) }),
        el("td", { class: "num", text: host.children + " / " + host.upload_slots }),
        el("td", { class: "num", text: formatRate(host.upload_bps) }),
        el("td", { class: "num", text: host.uploads_ok + " / " + host.uploads_failed }),
        el("td", { class: "num", text: formatAge(host.last_announce_age_s) + " ago" }),
      ));
    document.querySelector("#hosts tbody").replaceChildren(...rows);
  }

  takeTokenFromFragment();
  poll();
})();
