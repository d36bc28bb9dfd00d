// The lmrec page: pick a user (or type a session), see the live history, the top K with the past events that
// weighed most, and similar items; clicking an item posts a view event and shows the new recommendations.
// It calls this service's own /v1 API only (relative URLs), keeps the API key in a variable only, and renders
// every value as text (textContent and DOM nodes), never as markup.
"use strict";

const K = 10;
const state = { key: "", auth: null, user: null, session: null, shown: 0, searched: 0 };
const titles = new Map(); // item id -> title, learned from replies (to name the items of a session)
const $ = (id) => document.getElementById(id);
const path = encodeURIComponent;

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function say(message, error = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", error);
}

function guard(action) {
  return async (event) => {
    event.preventDefault();
    try {
      await action();
    } catch (error) {
      say(error.message, true);
    }
  };
}

async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store",
  });
  const data = await reply.json().catch(() => null);
  if (!reply.ok) throw new Error(problem(reply.status, data));
  return data;
}

function problem(status, data) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((e) => `${e.loc.join(".")}: ${e.msg}`).join("; ");
  return `the service answered ${status}`;
}

const canRead = () => state.auth.reads === "public" || state.auth.key === "valid";
const canWrite = () => state.auth.writes === "public" || state.auth.key === "valid";

function keyMessage({ reads, writes, key }) {
  if (key === "valid") return "key accepted (kept in this page's memory only)";
  if (writes === "public") return "this service needs no key";
  if (key === "invalid") return "that key is not valid";
  return reads === "public" ? "reads are public; clicks need the key" : "enter the API key to start";
}

async function checkKey() {
  state.auth = await api("GET", "/v1/auth");
  $("key-state").textContent = keyMessage(state.auth);
  $("key-state").classList.toggle("error", state.auth.key === "invalid");
  if (state.auth.key === "invalid") state.key = "";
  if (canRead()) await findUsers();
}

async function useKey() {
  state.key = $("key").value.trim();
  $("key").value = "";
  await checkKey();
}

async function findUsers() {
  if (!canRead()) return say("Enter the API key first.", true);
  const asked = ++state.searched;
  const prefix = $("user-search").value.trim();
  const reply = await api("GET", `/v1/users?limit=20&prefix=${path(prefix)}`);
  if (asked !== state.searched) return; // a later search answers instead
  const rows = reply.users.map((user) => el("li", {}, userButton(user)));
  if (reply.truncated) rows.push(el("li", { className: "muted", textContent: "… type more of the id" }));
  if (!rows.length) rows.push(el("li", { className: "muted", textContent: "no user starts with that" }));
  $("users").replaceChildren(...rows);
}

function userButton(user) {
  const button = el("button", { type: "button", className: "user", textContent: user });
  button.classList.toggle("chosen", user === state.user);
  button.addEventListener("click", guard(() => pick(user, null)));
  return button;
}

async function pick(user, session) {
  state.user = user;
  state.session = session;
  for (const button of document.querySelectorAll("#users button")) {
    button.classList.toggle("chosen", button.textContent === user);
  }
  await show();
}

async function typedSession() {
  const ids = $("session-items").value.split(/[\s,]+/).filter(Boolean);
  if (!ids.length) return say("Type at least one item id.", true);
  await pick(null, ids);
}

async function show() {
  if (!canRead()) return say("Enter the API key first.", true);
  const shown = ++state.shown;
  const [history, recs] = state.user !== null
    ? await Promise.all([
      api("GET", `/v1/users/${path(state.user)}/history`),
      api("GET", `/v1/users/${path(state.user)}/recommendations?k=${K}&explain=true`),
    ])
    : [sessionHistory(), await api("POST", "/v1/recommendations", { item_ids: state.session, k: K, explain: true })];
  if (shown !== state.shown) return; // a later choice answers instead
  renderHistory(history);
  renderRecs(recs);
}

function sessionHistory() {
  const events = state.session.map((id) => ({
    item_id: id, title: titles.get(id) ?? id, type: "session", timestamp: null, source: "this page",
  }));
  return { user_id: null, events, truncated: false };
}

function renderHistory({ user_id, events, truncated }) {
  $("history-title").textContent = user_id === null ? "Session" : `History of ${user_id}`;
  $("history-count").textContent = `${events.length} events${truncated ? " (the latest 1,000)" : ""}, newest first`;
  $("history").tBodies[0].replaceChildren(...events.slice().reverse().map(historyRow));
}

function historyRow(event) {
  return el("tr", {},
    el("td", { className: "time", textContent: when(event.timestamp) }),
    el("td", {}, ...itemParts(event.item_id, event.title)),
    el("td", { textContent: event.type ?? "—" }),
    el("td", { textContent: event.source }));
}

const when = (seconds) => (seconds === null ? "" : new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " "));

function renderRecs(reply) {
  $("version").textContent = `model version ${reply.model_version}`;
  const unknown = reply.unknown_items ? `, ${reply.unknown_items} unknown skipped` : "";
  $("recs-note").textContent = reply.fallback
    ? "No usable history: the most popular items."
    : `after ${reply.history_length} known items${unknown}`;
  $("recs").replaceChildren(...reply.items.map(recommended));
}

function recommended(item) {
  const row = el("li", {}, ...itemParts(item.item_id, item.title), score(item.score));
  if (item.because && item.because.length) {
    const past = new Set(item.because.map((b) => b.title ?? titles.get(b.item_id) ?? b.item_id)); // heaviest first
    row.append(el("div", { className: "because", textContent: `because you interacted with ${[...past].join(", ")}` }));
  }
  return row;
}

const score = (value) => el("span", { className: "score", textContent: value.toFixed(3) });

function itemParts(id, title) {
  titles.set(id, title);
  const open = el("button", { type: "button", className: "item", textContent: title, title: `${id}: view it` });
  open.dataset.item = id;
  open.addEventListener("click", guard(() => viewItem(id)));
  const similar = el("button", { type: "button", className: "link", textContent: "similar" });
  similar.addEventListener("click", guard(() => showSimilar(id)));
  return [open, " ", el("span", { className: "id", textContent: id }), " ", similar];
}

async function viewItem(id) {
  if (state.session !== null) {
    $("session-items").value = [...state.session, id].join(", ");
    return pick(null, [...state.session, id]);
  }
  if (state.user === null) return say("Pick a user or type a session first.", true);
  if (!canWrite()) return say("Viewing an item posts an event, which needs the API key.", true);
  const event = { user_id: state.user, item_id: id, type: "view", timestamp: Date.now() / 1000 };
  await api("POST", "/v1/events", { events: [event] });
  say(`${state.user} viewed ${titles.get(id) ?? id}.`);
  await show();
}

async function showSimilar(id) {
  if (!id) return say("Type an item id.", true);
  if (!canRead()) return say("Enter the API key first.", true);
  const reply = await api("GET", `/v1/items/${path(id)}/similar?k=${K}`);
  $("similar-title").textContent = `Similar to ${titles.get(id) ?? id}`;
  $("similar").replaceChildren(...reply.items.map((item) => el("li", {}, ...itemParts(item.item_id, item.title), score(item.score))));
}

$("key-form").addEventListener("submit", guard(useKey));
$("user-form").addEventListener("submit", guard(findUsers));
$("user-search").addEventListener("input", guard(findUsers));
$("session-form").addEventListener("submit", guard(typedSession));
$("similar-form").addEventListener("submit", guard(() => showSimilar($("similar-item").value.trim())));
checkKey().catch((error) => say(error.message, true));
