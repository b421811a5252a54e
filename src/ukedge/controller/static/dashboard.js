// The controller's dashboard: reads the same API as the CLI with the admin token the operator
// pastes (kept in this tab's sessionStorage, sent as a bearer header, never in a URL or cookie).
// Every value is rendered as text (textContent), never as markup. The operator's actions
// (cordon, uncordon, drain a node; scale a deployment) are the API's own routes, with that token.
"use strict";

const KEY = "ukedge.controller.token";
const REFRESH_MS = 2000;
const FEED_ROWS = 100;
const FEED_TAIL = 50;

let token = sessionStorage.getItem(KEY);
let refreshTimer = null;
let feedAbort = null;
let lastResultId = null;
// Bumped at each start and logout: a refresh still in flight from before renders nothing.
let session = 0;

const $ = (selector) => document.querySelector(selector);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

class Unauthorized extends Error {}

async function api(path, method, body) {
  const headers = { Authorization: "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: method || "GET", headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) throw new Unauthorized((await response.json()).detail);
  if (!response.ok) {
    let detail = "HTTP " + response.status;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.json();
}

// An operator's action (cordon, drain, scale...): the same API call as the CLI's, then a
// refresh so the tables show its effect; a refusal is shown in the status line.
function setAction(text, error) {
  const line = $("#action");
  line.textContent = text;
  line.className = error ? "error" : "";
}

async function act(what, path, body) {
  try {
    await api(path, "POST", body);
    setAction(what + ": done", false);
  } catch (error) {
    if (error instanceof Unauthorized) return logout(error.message);
    setAction(what + ": " + error.message, true);
    return;
  }
  clearTimeout(refreshTimer);
  refresh(session);
}

function actions(n) {
  const span = el("span", null, { class: "actions" });
  const button = (action, label) => el("button", label, {
    type: "button", "data-action": action, "data-node-id": n.id, "data-node-name": n.name,
  });
  span.append(n.cordoned || n.draining ? button("uncordon", "uncordon") : button("cordon", "cordon"));
  if (!n.draining) span.append(button("drain", "drain"));
  return span;
}

function gauge(used, capacity, unit) {
  const span = el("span", null, { class: "gauge" });
  const meter = el("meter", null, {
    min: "0", max: String(Math.max(capacity, 0)), value: String(used),
    high: String(capacity * 0.9), optimum: "0",
  });
  meter.dataset.used = String(used);
  meter.dataset.capacity = String(capacity);
  span.append(meter, el("span", used + " / " + capacity + (unit ? " " + unit : "")));
  return span;
}

function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

function renderNodes(nodes) {
  const body = $("#nodes tbody");
  body.replaceChildren(...nodes.map((n) => {
    const status = el("span");
    status.append(el("span", n.status === "ready" ? "Ready" : "NotReady",
                     { class: "badge " + n.status }));
    if (n.cordoned) status.append(el("span", "cordoned", { class: "badge cordoned" }));
    if (n.draining) status.append(el("span", "draining", { class: "badge draining" }));
    return row([
      el("span", n.name, { title: n.id }), status, n.architecture,
      gauge(n.allocated_memory_mib, n.capacity_memory_mib, "MiB"),
      gauge(n.allocated_vcpus, n.capacity_vcpus, ""),
      n.instances, ago(n.last_heartbeat), actions(n),
    ], { "data-node": n.name, "data-node-id": n.id });
  }));
}

// The scale form's choice of deployment: rebuilt only when the set of names changes, so a
// refresh never resets what the operator is choosing (per-node deployments have no count).
function renderScaleChoices(deployments) {
  const select = $("#scale-deployment");
  const names = deployments.filter((d) => d.spec.mode !== "per-node").map((d) => d.name);
  const have = [...select.options].map((o) => o.value);
  if (names.join("\n") === have.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el("option", name, { value: name })));
  if (names.includes(chosen)) select.value = chosen;
}

function renderDeployments(deployments) {
  renderScaleChoices(deployments);
  const body = $("#deployments tbody");
  body.replaceChildren(...deployments.map((d) => {
    const r = d.rollout;
    const line = el("span", "revision " + r.revision + " " + r.state + ": desired " + r.desired +
      ", updated " + r.updated + ", ready " + r.ready + ", unavailable " + r.unavailable +
      (r.message ? " (" + r.message + ")" : ""), { class: "rollout " + r.state });
    const progress = el("progress", null, {
      max: String(Math.max(r.desired, 1)), value: String(Math.min(r.ready, r.desired)),
    });
    return row([d.name, el("code", d.spec.image), d.spec.mode, line, progress],
               { "data-deployment": d.name });
  }));
}

function renderReplicas(replicas) {
  const body = $("#replicas tbody");
  body.replaceChildren(...replicas.map((r) => row([
    r.deployment, el("code", r.replica), r.revision, r.node_name || "(unplaced)",
    r.instance_state || r.state, r.health || "", r.instance ? el("code", r.instance) : "",
  ], { "data-replica": r.replica })));
}

function setStatus(text, error) {
  const status = $("#status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

async function refresh(mine) {
  try {
    const [nodes, deployments, replicas] = await Promise.all([
      api("/v1/nodes"), api("/v1/deployments"), api("/v1/replicas"),
    ]);
    if (mine !== session) return;
    renderNodes(nodes);
    renderDeployments(deployments);
    renderReplicas(replicas);
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    if (mine !== session) return;
    if (error instanceof Unauthorized) return logout(error.message);
    setStatus("cannot reach the controller: " + error.message, true);
  }
  clearTimeout(refreshTimer);  // one timer, though an action's refresh may overlap this one
  refreshTimer = setTimeout(() => refresh(mine), REFRESH_MS);
}

function addResult(record) {
  const feed = $("#feed");
  const when = new Date(record.ts * 1000).toLocaleTimeString();
  const value = record.error ? "error: " + record.error
    : record.raw !== null && record.raw !== undefined ? record.raw
    : JSON.stringify(record.result);
  const item = el("li", null, { "data-result-id": String(record.id) });
  item.append(
    el("span", when + " "), el("strong", record.deployment || "(no deployment)"),
    el("span", " " + record.node_name + "/" + record.instance + " #" + record.seq + " "),
    el("code", value),
  );
  feed.prepend(item);
  while (feed.children.length > FEED_ROWS) feed.lastElementChild.remove();
}

// Server-sent events read from a fetch body (EventSource cannot send the bearer header);
// reconnects with Last-Event-ID so nothing is missed or shown twice.
async function follow() {
  const abort = new AbortController();
  feedAbort = abort;
  while (!abort.signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
      if (lastResultId !== null) headers["Last-Event-ID"] = lastResultId;
      const response = await fetch("/v1/results/stream?tail=" + FEED_TAIL,
                                    { headers, signal: abort.signal, cache: "no-store" });
      if (response.status === 401) {
        const detail = (await response.json()).detail;
        if (!abort.signal.aborted) logout(detail);
        return;
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      $("#feed-state").textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (abort.signal.aborted) return;
      $("#feed-state").textContent = "reconnecting (" + error.message + ")";
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function dispatch(block) {
  let id = null, event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (id !== null) lastResultId = id;
  if (event === "result" && data.length) addResult(JSON.parse(data.join("\n")));
}

function start() {
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#logout").hidden = false;
  session += 1;
  refresh(session);
  follow();
}

function logout(message) {
  session += 1;
  token = null;
  sessionStorage.removeItem(KEY);
  clearTimeout(refreshTimer);
  if (feedAbort) feedAbort.abort();
  lastResultId = null;
  $("#feed").replaceChildren();
  for (const body of document.querySelectorAll("tbody")) body.replaceChildren();
  $("#scale-deployment").replaceChildren();
  $("#dashboard").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  setStatus("", false);
  setAction("", false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token").value.trim();
    $("#token").value = "";
    sessionStorage.setItem(KEY, token);
    $("#login-error").textContent = "";
    start();
  });
  $("#logout").addEventListener("click", () => logout(""));
  $("#nodes").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, nodeId, nodeName } = button.dataset;
    act(action + " " + nodeName, "/v1/nodes/" + encodeURIComponent(nodeId) + "/" + action);
  });
  $("#scale").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("#scale-deployment").value;
    const replicas = Number($("#scale-replicas").value);
    if (!name || !Number.isInteger(replicas) || replicas < 0) {
      setAction("scale: choose a deployment and a whole number of replicas (0 or more)", true);
      return;
    }
    act("scale " + name + " to " + replicas,
        "/v1/deployments/" + encodeURIComponent(name) + "/scale", { replicas });
  });
  if (token) start();
  else logout("");
});
