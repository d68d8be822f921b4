// gaffer's dashboard: one page, no build step, no framework.
//
// The token comes in the URL fragment (#token=... from `gaffer start`, #login=... from
// `gafferctl dashboard`, traded for a 12 h session token), is moved to sessionStorage and out of
// the address bar at once, and travels only in the Authorization header. State comes from one
// Server-Sent Events stream read with fetch (EventSource cannot send that header): a snapshot
// first, then events; after a drop it resumes with Last-Event-ID, and after `event: lost` the
// server sends a fresh snapshot. Nothing polls.
"use strict";

(() => {
  const TOKEN_KEY = "gaffer.token";
  const FEED_MAX = 200;
  const LOG_MAX = 1000;
  const SPARK_POINTS = 30;
  const PREFIXES = ["node.", "template.", "proc."];

  const state = {
    token: null, role: "viewer", nodes: new Map(), templates: new Map(), instances: new Map(),
    series: new Map(), logTarget: null, logAbort: null,
  };
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ token and requests

  async function takeToken() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    const login = params.get("login");
    if (token || login) {
      history.replaceState(null, "", location.pathname + location.search);
    }
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    } else if (login) {
      const answer = await fetch("/v1/session", { method: "POST", headers: { Authorization: "Bearer " + login } });
      if (!answer.ok) {
        throw new Error("the login link is not valid any more: run `gafferctl dashboard` for a new one");
      }
      sessionStorage.setItem(TOKEN_KEY, (await answer.json()).token);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + state.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const answer = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await answer.json().catch(() => null);
    if (!answer.ok) {
      throw new Error(data && data.detail ? data.detail : `${method} ${path}: ${answer.status}`);
    }
    return data;
  }

  function problem(text) {
    const box = $("problem");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function act(method, path, body) {
    try {
      problem("");
      await api(method, path, body);
    } catch (error) {
      problem(error.message);
    }
  }

  // ------------------------------------------------------------------ Server-Sent Events

  // Read an SSE response: call onMessage({id, event, data}) per message; returns at its end.
  async function readEvents(response, onMessage) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const message = { id: null, event: null, data: null };
        const data = [];
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          if (colon <= 0) continue;
          const field = line.slice(0, colon);
          const text = line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
          else if (field === "id" || field === "event") message[field] = text;
        }
        if (data.length) {
          message.data = JSON.parse(data.join("\n"));
          onMessage(message);
        }
      }
    }
  }

  // Follow `path` for as long as the page lives (or `signal` aborts): resume with
  // Last-Event-ID after a drop, waiting a little longer after each failure.
  async function follow(path, firstQuery, onMessage, onState, signal) {
    let lastId = null;
    let pause = 500;
    while (!signal || !signal.aborted) {
      const headers = { Authorization: "Bearer " + state.token };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const url = path + (lastId === null && firstQuery ? (path.includes("?") ? "&" : "?") + firstQuery : "");
      try {
        const response = await fetch(url, { headers, signal, cache: "no-store" });
        if (response.status === 401 || response.status === 403) {
          onState("refused", "the token is not valid any more: open a new dashboard link");
          return;
        }
        if (response.ok) {
          onState("live");
          pause = 500;
          await readEvents(response, (message) => {
            if (message.id !== null) lastId = message.id;
            onMessage(message);
          });
        }
      } catch (error) {
        if (signal && signal.aborted) return;
      }
      onState("down");
      await new Promise((done) => setTimeout(done, pause));
      pause = Math.min(pause * 2, 10000);
    }
  }

  // ------------------------------------------------------------------ the cluster's state

  function applySnapshot(snapshot) {
    state.nodes = new Map(snapshot.nodes.map((row) => [row.name, row]));
    state.templates = new Map(snapshot.templates.map((row) => [row.name, row]));
    state.instances = new Map(snapshot.instances.map((row) => [row.id, row]));
    render();
  }

  function applyEvent(topic, data) {
    const parts = topic.split(".");
    const family = parts[0];
    const kind = parts[parts.length - 1];
    if (family === "node") {
      const node = state.nodes.get(data.node) || { name: data.node, labels: {}, load: null };
      if (["up", "suspect", "down"].includes(kind)) node.state = kind;
      if (kind === "drain") node.draining = data.draining;
      state.nodes.set(node.name, node);
    } else if (family === "template") {
      applyTemplate(parts[1], kind, data);
    } else if (family === "proc" && data.id) {
      applyProc(kind, data);
    }
    render();
  }

  function applyTemplate(name, kind, data) {
    if (kind === "deleted") {
      state.templates.delete(name);
      for (const [id, row] of state.instances) if (row.template === name) state.instances.delete(id);
      return;
    }
    const row = state.templates.get(name) || { name, paused: false };
    if (typeof data.numprocesses === "number") row.numprocesses = data.numprocesses;
    if (kind === "stopped") row.paused = true;
    if (kind === "started") row.paused = false;
    state.templates.set(name, row);
    dropSurplus(name);
  }

  function dropSurplus(name) {
    const row = state.templates.get(name);
    for (const [id, inst] of state.instances) {
      const gone = inst.template === name && typeof inst.ordinal === "number" && inst.ordinal > row.numprocesses;
      if (gone && !UP.includes(inst.state) && !["starting", "stopping"].includes(inst.state)) state.instances.delete(id);
    }
  }

  const UP = ["running", "ready", "unhealthy"];

  function checked(name) {
    const spec = (state.templates.get(name) || {}).spec;
    return Boolean(spec && (spec.health || spec.notify));
  }

  function applyProc(kind, data) {
    const old = state.instances.get(data.id);
    const row = old || { id: data.id, template: data.template, ordinal: data.ordinal, restarts: 0 };
    row.node = data.node || row.node;
    if (kind === "spawn") {
      if (old && !UP.includes(old.state) && old.state !== "starting" && old.pid) row.restarts = (row.restarts || 0) + 1;
      row.pid = data.pid;
      row.state = "starting";
      row.ready = false;
      row.started_at = data.ts;
    } else if (kind === "running") {
      row.pid = data.pid;
      row.state = "running";
      row.ready = !checked(row.template);
      if (!row.started_at) row.started_at = data.ts;
    } else if (kind === "ready" || kind === "unhealthy") {
      row.state = kind;
      row.ready = kind === "ready";
    } else if (kind === "exit" || kind === "stop") {
      row.state = kind === "exit" ? "exited" : "stopped";
      row.ready = false;
      row.started_at = null;
    } else if (kind === "failed") {
      row.state = "failed";
      row.ready = false;
    }
    state.instances.set(row.id, row);
    const template = state.templates.get(row.template);
    if (kind === "stop" && template && (template.paused || row.ordinal > template.numprocesses)) {
      state.instances.delete(row.id);
    }
  }

  function applyStats(instances) {
    for (const [id, sample] of Object.entries(instances)) {
      const row = state.instances.get(id);
      if (row) { row.cpu = sample.cpu; row.mem = sample.mem; }
      const series = state.series.get(id) || { cpu: [], mem: [] };
      series.cpu.push(sample.cpu || 0);
      series.mem.push(sample.mem || 0);
      if (series.cpu.length > SPARK_POINTS) { series.cpu.shift(); series.mem.shift(); }
      state.series.set(id, series);
    }
    render();
  }

  function onEvent(message) {
    const data = message.data;
    if (message.event === "snapshot") {
      applySnapshot(data);
      feed(message.id, "snapshot", `state at position ${data.position}`);
    } else if (message.event === "lost") {
      feed(null, "lost", `events ${data.first}..${data.last} are gone; reloading the state`, true);
    } else if (message.event === "stats") {
      applyStats(data.instances);
    } else if (data && data.topic) {
      applyEvent(data.topic, data.event);
      feed(message.id, data.topic, describe(data.event));
    }
  }

  function describe(event) {
    const keys = ["id", "node", "pid", "numprocesses", "status", "signal", "reason", "error"];
    return keys.filter((k) => event[k] !== undefined && event[k] !== null).map((k) => `${k}=${event[k]}`).join(" ");
  }

  // ------------------------------------------------------------------ rendering

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Rows keyed by name, built once and updated in place, so focus stays on a button the
  // user is on while events change the table around it.
  function syncRows(tbody, entries, build, update) {
    const kept = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    let before = tbody.firstElementChild;
    for (const [key, row] of entries) {
      let tr = kept.get(key);
      if (!tr) {
        tr = build(key, row);
        tr.dataset.key = key;
      }
      kept.delete(key);
      update(tr, row);
      if (tr !== before) tbody.insertBefore(tr, before);
      else before = before.nextElementSibling;
    }
    for (const tr of kept.values()) tr.remove();
  }

  function cells(tr, count) {
    for (let i = 0; i < count; i++) tr.appendChild(el("td"));
    return tr;
  }

  function setText(td, text) {
    if (td.textContent !== text) td.textContent = text;
  }

  function setState(td, value) {
    setText(td, value || "?");
    td.className = "state state-" + (value || "unknown");
  }

  function byName(map) {
    return [...map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  let scheduled = false;
  function render() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      renderNodes();
      renderTemplates();
      renderInstances();
    });
  }

  function renderNodes() {
    const counts = new Map();
    for (const row of state.instances.values()) counts.set(row.node, (counts.get(row.node) || 0) + 1);
    syncRows($("nodes").tBodies[0], byName(state.nodes), () => cells(el("tr"), 5), (tr, node) => {
      const [name, st, labels, load, count] = tr.children;
      setText(name, node.name);
      setState(st, node.state + (node.draining ? " (draining)" : node.cordoned ? " (cordoned)" : ""));
      tr.className = "node-" + node.state;
      const shown = Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
      if (labels.dataset.shown !== shown) {
        labels.dataset.shown = shown;
        labels.replaceChildren(...Object.entries(node.labels || {}).map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`)));
      }
      setText(load, Array.isArray(node.load) ? node.load.map((x) => x.toFixed(2)).join(" ") : "–");
      load.className = count.className = "num";
      setText(count, String(counts.get(node.name) || 0));
    });
  }

  function templateRow(name) {
    if (state.role === "viewer") return cells(el("tr"), 5);
    const tr = cells(el("tr"), 6);
    const actions = tr.children[5];
    const path = `/v1/templates/${encodeURIComponent(name)}`;
    const button = (text, label, run) => {
      const b = el("button", { type: "button", "aria-label": `${label} ${name}` }, text);
      b.addEventListener("click", run);
      actions.appendChild(b);
    };
    button("−", "Scale down", () => act("POST", path + "/scale", { count: "-1" }));
    button("+", "Scale up", () => act("POST", path + "/scale", { count: "+1" }));
    button("Start", "Start", () => act("POST", path + "/start"));
    button("Stop", "Stop", () => act("POST", path + "/stop"));
    button("Restart", "Restart", () => act("POST", path + "/restart"));
    return tr;
  }

  function renderTemplates() {
    const running = new Map();
    const ready = new Map();
    const failed = new Map();
    const add = (counts, name) => counts.set(name, (counts.get(name) || 0) + 1);
    for (const row of state.instances.values()) {
      if (UP.includes(row.state)) add(running, row.template);
      if (UP.includes(row.state) && row.ready) add(ready, row.template);
      if (row.state === "failed") add(failed, row.template);
    }
    syncRows($("templates").tBodies[0], byName(state.templates), templateRow, (tr, t) => {
      const [name, wanted, run, serving, fail] = tr.children;
      const note = t.paused ? " (stopped)" : t.rollout_stuck ? " (rollout stuck)" : "";
      setText(name, t.name + note);
      setText(wanted, String(t.numprocesses ?? "?"));
      setText(run, String(running.get(t.name) || 0));
      setText(serving, String(ready.get(t.name) || 0));
      setText(fail, String(failed.get(t.name) || 0));
      wanted.className = run.className = serving.className = fail.className = "num";
      tr.className = failed.get(t.name) ? "failed" : "";
    });
  }

  function spark(values) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", "60");
    svg.setAttribute("height", "16");
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.appendChild(line);
    drawSpark(svg, values);
    return svg;
  }

  function drawSpark(svg, values) {
    const top = Math.max(...values, 1e-9);
    const step = values.length > 1 ? 60 / (SPARK_POINTS - 1) : 0;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(15 - (v / top) * 14).toFixed(1)}`).join(" ");
    svg.firstChild.setAttribute("points", points);
  }

  function measure(td, text, values) {
    if (!td.firstChild) td.append(el("span"), spark([]));
    setText(td.firstChild, text);
    drawSpark(td.lastChild, values || []);
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function uptime(row) {
    if (!UP.includes(row.state) || !row.started_at) return "–";
    let s = Math.max(0, Math.floor(Date.now() / 1000 - row.started_at));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
  }

  function instanceRow(id) {
    const tr = cells(el("tr"), 9);
    const b = el("button", { type: "button", "aria-label": `Show logs of ${id}`, "aria-pressed": "false" }, "Logs");
    b.addEventListener("click", () => openLogs(id));
    tr.children[8].appendChild(b);
    return tr;
  }

  function renderInstances() {
    const order = [...state.instances.entries()].sort((a, b) =>
      a[1].template === b[1].template ? (a[1].ordinal > b[1].ordinal ? 1 : -1) : a[1].template < b[1].template ? -1 : 1);
    syncRows($("instances").tBodies[0], order, instanceRow, (tr, row) => {
      const [id, st, node, pid, restarts, up, cpu, mem, logs] = tr.children;
      setText(id, row.id);
      setState(st, row.state);
      tr.className = row.state === "failed" ? "failed" : "";
      setText(node, row.node || "–");
      setText(pid, row.pid ? String(row.pid) : "–");
      setText(restarts, String(row.restarts || 0));
      setText(up, uptime(row));
      const series = state.series.get(row.id) || {};
      measure(cpu, typeof row.cpu === "number" ? `${row.cpu.toFixed(1)}%` : "–", series.cpu);
      measure(mem, bytes(row.mem), series.mem);
      pid.className = restarts.className = up.className = cpu.className = mem.className = "num";
      logs.firstChild.setAttribute("aria-pressed", String(state.logTarget === row.id));
    });
  }

  function feed(position, topic, text, bad) {
    const list = $("feed");
    const item = el("li", bad ? { class: "bad" } : {});
    item.append(el("span", { class: "pos" }, position === null ? "" : `#${position}`), `${topic} ${text || ""}`);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > FEED_MAX) list.lastChild.remove();
  }

  // ------------------------------------------------------------------ logs and stdin

  function openLogs(id) {
    if (state.logAbort) state.logAbort.abort();
    state.logTarget = id;
    state.logAbort = new AbortController();
    $("logs-target").textContent = id;
    const box = $("logs");
    box.replaceChildren();
    $("stdin").hidden = state.role === "viewer";
    render();
    const path = `/v1/instances/${encodeURIComponent(id)}/logs?follow=1`;
    follow(path, "lines=100", (message) => {
      const data = message.data;
      if (message.event === "skipped") logLine(box, `[${data.skipped} lines skipped]`, "gap");
      else if (message.event === "lost") logLine(box, "[some output is gone]", "gap");
      else logLine(box, data.line, data.stream === "err" ? "err" : "");
    }, () => {}, state.logAbort.signal);
  }

  function logLine(box, text, kind) {
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    const line = el("div", kind ? { class: kind } : {}, text);
    box.appendChild(line);
    while (box.children.length > LOG_MAX) box.firstChild.remove();
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  function wireStdin() {
    $("stdin").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("stdin-text");
      if (!state.logTarget) return;
      await act("POST", `/v1/instances/${encodeURIComponent(state.logTarget)}/stdin`, { data: input.value + "\n" });
      input.value = "";
    });
  }

  // ------------------------------------------------------------------ start

  function connection(kind, text) {
    const box = $("connection");
    box.className = "connection " + (kind === "live" ? "live" : "down");
    box.textContent = text || (kind === "live" ? "live" : "reconnecting…");
    if (text) problem(text);
  }

  async function start() {
    wireStdin();
    try {
      state.token = await takeToken();
    } catch (error) {
      problem(error.message);
      return;
    }
    if (!state.token) {
      connection("refused", "no token: open the URL `gaffer start` printed, or run `gafferctl dashboard`");
      return;
    }
    try {
      const who = await api("GET", "/v1/session");
      state.role = who.role;
      $("who").textContent = `${who.name} (${who.role})`;
    } catch (error) {
      connection("refused", error.message);
      return;
    }
    document.body.classList.toggle("viewer", state.role === "viewer");
    for (const node of document.querySelectorAll(".write")) node.hidden = state.role === "viewer";
    $("stdin").hidden = true;
    setInterval(renderInstances, 1000);
    const query = PREFIXES.map((p) => "prefix=" + encodeURIComponent(p)).join("&") + "&stats=1";
    follow("/v1/events?" + query, "snapshot=1", onEvent, connection);
  }

  start();
})();
