// OIX liaison console: one small module, no build step, nothing loaded from elsewhere.
// The page state lives in the URL (view, event, filters) so a view can be shared;
// every change of the store arrives on the live stream (server-sent events).

import { SECTIONS, sectionsOf } from "./sections.js";

const PAGE = 50;            // events per page: the store may hold tens of thousands
const KEEP = 500;           // feed lines kept in the page; older ones are dropped (load again)
const FILTERS = ["partner", "type", "impact", "section", "mode", "since", "until", "q"];
const TYPES = ["IncidentReport", "SituationReport", "AssistanceRequest", "AssistanceResponse",
  "DeploymentNotice", "EarlyWarning", "SeriousIncidentReport", "RequestForInformation",
  "Acknowledgement", "Cancellation"];
const IMPACTS = ["LOW", "MEDIUM", "HIGH", "VERY_HIGH"];
const SPECIALITIES = ["BORDER_GUARD", "CYNOLOGIST", "CRIMINAL_INTELLIGENCE", "DOCUMENT_EXPERT",
  "INTERPRETER", "MEDIC", "DRONE_OPERATOR", "OTHER"];

const state = {
  session: null,
  feed: new Map(),          // "originator/event_id" -> event summary
  signatures: new Map(),    // message_id -> {status, key_id}
  cursor: null,
  loading: false,           // a page of the feed is being fetched
  scrolled: null,           // the page to load once the end of the list stays in view
  behind: false,            // the newest events are not in the page (it shows older ones)
  arrived: 0,               // events that arrived meanwhile, counted instead of shown
  source: null,
  alerts: 0,
  timers: [],
  detail: null,             // the event detail shown, if any
  flash: null,              // {id, text}: the outcome of an action, kept across a redraw
};
window.oixConsole = state;  // for tests and the curious: what the page holds

// ---------------------------------------------------------------- helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const $ = (selector) => document.querySelector(selector);

// The view's new content (lists flattened, absent parts left out).
function put(...children) {
  $("#view").replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined && c !== false));
}

function when(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
}

function duration(ms) {
  const sign = ms < 0 ? "-" : "";
  let left = Math.abs(Math.floor(ms / 1000));
  const d = Math.floor(left / 86400); left -= d * 86400;
  const hours = Math.floor(left / 3600); left -= hours * 3600;
  const m = Math.floor(left / 60); const sec = left - m * 60;
  const pad = (n) => String(n).padStart(2, "0");
  return `${sign}${d ? `${d}d ` : ""}${pad(hours)}:${pad(m)}:${pad(sec)}`;
}

function announce(text) { $("#announce").textContent = text; }

class ApiProblem extends Error {
  constructor(status, body) {
    const issues = (body.issues || []).map((i) => `${i.path}: ${i.reason}`).join("; ");
    super(`${body.detail || body.title || status}${issues ? ` (${issues})` : ""}`);
    this.status = status;
    this.detail = body.detail || body.title || String(status);
    this.issues = body.issues || [];
  }
}

// Every call has a deadline: a request stuck on a dead connection must not hold a view forever
// (the page stays open all day).
async function api(path, { method = "GET", body, timeout = 30000 } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session?.csrf_token) headers["X-CSRF-Token"] = state.session.csrf_token;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", signal: AbortSignal.timeout(timeout),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/v1/session") { showLogin(); }
  if (!response.ok) throw new ApiProblem(response.status, data);
  return data;
}

function params() { return new URLSearchParams(location.search); }

function go(search, { replace = false } = {}) {
  const url = `${location.pathname}${search ? `?${search}` : ""}`;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  render();
}

function link(search, ...children) {
  const attrs = children[0] && !(children[0] instanceof Node) && typeof children[0] === "object" ? children.shift() : {};
  return h("a", { ...attrs, href: `?${search}`, onclick: (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault(); go(search);
  } }, ...children);
}

function eventSearch(originator, eventId) {
  return new URLSearchParams({ view: "event", originator, event: eventId }).toString();
}

// ---------------------------------------------------------------- session

function showLogin() {
  closeStream();
  state.session = null;
  $("#nav").hidden = true; $("#who").hidden = true; $("#view").hidden = true;
  $("#login-view").hidden = false;
  $("#login-name").focus();
}

async function signIn(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    state.session = await api("/v1/session", { method: "POST", body: {
      name: $("#login-name").value, password: $("#login-password").value } });
    $("#login-password").value = "";
    await started();
  } catch (error) {
    $("#login-error").textContent = error.message;
  }
}

async function signOut() {
  try { await api("/v1/session", { method: "DELETE" }); } finally { showLogin(); }
}

async function started() {
  $("#login-view").hidden = true;
  $("#nav").hidden = false; $("#who").hidden = false; $("#view").hidden = false;
  $("#agency").textContent = state.session.agency;
  $("#officer").textContent = `${state.session.officer} (${state.session.agency})`;
  document.body.dataset.agency = state.session.agency;
  await openStream();
  refreshCounts();
  render();
}

// ---------------------------------------------------------------- live stream

// From the change log's position read before any list is loaded: whatever a list misses
// arrives on the stream (a change in both is shown once). After a drop the browser resumes
// with Last-Event-ID, which the service prefers to `after`.
async function openStream() {
  closeStream();
  let after = "";
  try { after = `?after=${(await api("/v1/status")).last_seq}`; } catch { /* from now on */ }
  if (!state.session) return;
  const source = new EventSource(`/v1/stream${after}`);
  state.source = source;
  source.onopen = () => { $("#connection").textContent = "Live"; };
  source.onerror = () => { $("#connection").textContent = "Reconnecting…"; };
  for (const kind of ["report", "withdrawn", "acknowledged", "answered", "acknowledgement", "alert"]) {
    source.addEventListener(kind, (message) => onChange(JSON.parse(message.data)));
  }
}

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
}

function onChange(change) {
  if (change.alert) {
    state.alerts += 1;
    $("#alerts-count").textContent = String(state.alerts);
    announce(`Alert: ${change.alert.kind}`);
    if (view() === "alerts") renderAlerts();
    return;
  }
  const event = change.event;
  if (change.report && event && change.report.message_id === event.current_message_id) {
    state.signatures.set(change.report.message_id, change.report.signature);
  }
  if (event) {
    const query = params();
    if (view() === "feed" && matches(event, query)) {
      const text = (query.get("q") || "").toLowerCase();
      if (!text || event.title.toLowerCase().includes(text)) arrived(event);
      else textMatch(event, query);
    }
    if (event.request) refreshCounts();
  }
  const shown = state.detail;
  if (shown && view() === "event") {
    const same = event && event.originator === shown.event.originator && event.event_id === shown.event.event_id;
    const mine = change.target_message_id && shown.reports.some((r) => r.message_id === change.target_message_id);
    const reply = change.kind === "acknowledgement" || change.report?.report_type === "AssistanceResponse";
    // Say it rather than redraw: the officer may be reading or filling in the answer form.
    if (same || mine || reply) detailChanged();
    // A partner's acknowledgement may be of an answer sent from here: its state, in place.
    if (change.kind === "acknowledgement" && shown.answers.length) answerStates(shown);
  }
  if (view() === "requests" && event?.request) renderRequests();
}

// Whether an event from the stream belongs in the feed as filtered, but for the text (the
// server filtered the list).
function matches(event, query) {
  const any = (name, values) => {
    const wanted = (query.get(name) || "").split(",").map((v) => v.trim()).filter(Boolean);
    return !wanted.length || values.some((v) => wanted.includes(v));
  };
  if (!any("partner", [event.originator])) return false;
  if (!any("type", [event.report_type])) return false;
  if (!any("impact", [event.impact || ""])) return false;
  if (!any("section", event.border_sections)) return false;
  if (!any("mode", [event.mode])) return false;
  const at = Date.parse(event.last_reported_at);
  if (query.get("since") && at < Date.parse(utc(query.get("since")))) return false;
  if (query.get("until") && at >= Date.parse(utc(query.get("until")))) return false;
  return true;
}

function arrived(event) {
  upsert(event, true);
  announce(`${event.originator} ${event.report_type}: ${event.title}`);
}

// The text filter searches narratives too, which a stream message does not carry: the
// service answers whether the event matches (the newest events with the same filters).
async function textMatch(event, query) {
  try {
    const page = await api(`/v1/events?${feedSearch(query, 20)}`);
    const found = page.items.find((e) => e.originator === event.originator && e.event_id === event.event_id);
    if (found && view() === "feed") arrived(found);
  } catch { /* left for the next load */ }
}

function feedSearch(query, limit) {
  const search = new URLSearchParams({ limit: String(limit) });
  for (const name of FILTERS) {
    const value = query.get(name);
    if (!value) continue;
    search.set(name, name === "since" || name === "until" ? utc(value.length === 16 ? `${value}:00` : value) : value);
  }
  return search;
}

function utc(value) { return /Z$|[+-]\d\d:\d\d$/.test(value) ? value : `${value}Z`; }

// ---------------------------------------------------------------- routing

function view() { return params().get("view") || "feed"; }

function render() {
  if (!state.session) return;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.detail = null;
  const current = view();
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const pages = { feed: renderFeed, event: renderDetail, requests: renderRequests, summary: renderSummary, alerts: renderAlerts };
  (pages[current] || renderFeed)(true);
}

// ---------------------------------------------------------------- the feed

function renderFeed() {
  const query = params();
  document.title = "Feed — OIX liaison console";
  const field = (name, label, control, hint) => h("div", { class: "field" },
    h("label", { for: `f-${name}` }, label), control, hint ? h("span", { class: "hint", id: `f-${name}-hint` }, hint) : null);
  const input = (name, extra = {}) => h("input", { id: `f-${name}`, name, value: query.get(name) || "", ...extra });
  const select = (name, options, anyLabel) => {
    const control = h("select", { id: `f-${name}`, name },
      h("option", { value: "" }, anyLabel),
      options.map((o) => h("option", { value: o, selected: query.get(name) === o }, o.replace("_", " "))));
    return control;
  };
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter events", id: "filters" },
    field("partner", "Partner", input("partner", { placeholder: "LT-VSAT,PL-SG", "aria-describedby": "f-partner-hint" }), "agency codes, comma-separated"),
    field("type", "Report type", select("type", TYPES, "Any type")),
    field("impact", "Impact level", select("impact", IMPACTS, "Any impact")),
    field("section", "Border section", input("section", { placeholder: "LT-BY-DRUSKININKAI" })),
    field("mode", "Mode", select("mode", ["ACTUAL", "EXERCISE", "TEST"], "Any mode")),
    field("since", "From (UTC)", input("since", { type: "datetime-local" })),
    field("until", "Until (UTC)", input("until", { type: "datetime-local" })),
    field("q", "Text", input("q", { type: "search", placeholder: "title or narrative" })),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Apply filters"),
      h("button", { type: "button", class: "secondary", onclick: () => go("view=feed") }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams({ view: "feed" });
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    go(next.toString());
  });
  for (const name of ["type", "impact", "mode"]) {
    form.elements[name].addEventListener("change", () => form.requestSubmit());
  }
  const list = h("ol", { class: "feed", id: "feed", "aria-label": "Events, newest first" });
  const status = h("p", { id: "feed-status", role: "status" }, "Loading…");
  const newer = h("button", { type: "button", class: "more secondary", id: "newer", hidden: true, onclick: () => { go(location.search.slice(1), { replace: true }); window.scrollTo(0, 0); } }, "Show the newest events");
  const more = h("button", { type: "button", class: "more secondary", id: "more", hidden: true, onclick: () => loadFeed(false) }, "Load older events");
  put(
    h("h1", {}, "Partner events"),
    h("p", { class: "hint" }, `Newest first, live; ${PAGE} at a time, older ones load as you scroll. Keys: j / k next / previous event, Enter opens it, / searches.`),
    form, status, newer, list, more);
  state.feed.clear();
  state.cursor = null;
  state.loading = false;
  state.behind = false;
  state.arrived = 0;
  // Scrolling to the end of the list loads the next page (the button stays, for the keyboard).
  // After a short pause: a click on the button (which scrolls it into view) loads one page only.
  const watcher = new IntersectionObserver((seen) => {
    clearTimeout(state.scrolled);
    if (seen.some((entry) => entry.isIntersecting) && !more.hidden) {
      state.scrolled = setTimeout(() => loadFeed(false), 400);
    }
  }, { rootMargin: "0px 0px 200px 0px" });
  watcher.observe(more);
  loadFeed(true);
}

// One page of the feed by cursor. The page keeps at most KEEP lines: going further back drops
// the newest from the top (they load again with "Show the newest"), so a store of tens of
// thousands of events never becomes tens of thousands of lines.
async function loadFeed(first) {
  clearTimeout(state.scrolled);
  if (state.loading) return;
  const search = feedSearch(params(), PAGE);
  if (!first && state.cursor) search.set("cursor", state.cursor);
  state.loading = true;
  try {
    const page = await api(`/v1/events?${search}`);
    if (view() !== "feed") return;
    await loadSignatures(page.items.map((e) => e.current_message_id));
    for (const event of page.items) upsert(event, false);
    state.cursor = page.next_cursor;
    $("#more").hidden = !page.next_cursor;
    trimNewest();
    feedStatus();
  } catch (error) {
    const status = $("#feed-status");
    if (status) { status.textContent = `Could not load events: ${error.message}`; status.classList.add("error"); }
  } finally {
    state.loading = false;
  }
}

function trimNewest() {
  const list = $("#feed");
  let dropped = false;
  while (list && list.children.length > KEEP) {
    const first = list.firstElementChild;
    state.feed.delete(first.dataset.key);
    first.remove();
    dropped = true;
  }
  if (dropped) { state.behind = true; newerButton(); }
}

function newerButton() {
  const button = $("#newer");
  if (!button) return;
  button.hidden = !state.behind;
  button.textContent = state.arrived
    ? `${state.arrived} new event${state.arrived === 1 ? "" : "s"} arrived: show the newest`
    : "Newer events left the page: show the newest";
}

function feedStatus() {
  const status = $("#feed-status");
  if (status) status.textContent = `${state.feed.size} event${state.feed.size === 1 ? "" : "s"} shown${state.cursor ? " (older ones: load below)" : ""}.`;
}

async function loadSignatures(ids) {
  const wanted = ids.filter((id) => !state.signatures.has(id));
  for (let i = 0; i < wanted.length; i += 100) {
    const found = await api(`/v1/console/messages?ids=${wanted.slice(i, i + 100).join(",")}`);
    for (const ref of found) state.signatures.set(ref.message_id, ref.signature);
  }
}

function upsert(event, live) {
  const list = $("#feed");
  if (!list) return;
  const key = `${event.originator}/${event.event_id}`;
  const old = list.querySelector(`li[data-key="${CSS.escape(key)}"]`);
  // A page of the list is read before the stream brings a later change of the same event
  // (a correction): the later state stays, the page's older one is not put over it.
  const known = state.feed.get(key);
  if (known && known.seq > event.seq) return;
  if (live && state.behind) {
    // The page shows older events only: a new one is counted, not put out of order.
    if (old) { old.remove(); state.feed.delete(key); }
    state.arrived += 1;
    newerButton();
    feedStatus();
    return;
  }
  state.feed.set(key, event);
  const item = feedItem(event);
  if (live) {
    if (old) old.remove();
    item.classList.add("fresh");
    list.prepend(item);
    let dropped = false;
    while (list.children.length > KEEP) {
      const last = list.lastElementChild;
      state.feed.delete(last.dataset.key);
      last.remove();
      dropped = true;
    }
    if (dropped) {
      // Older lines are loaded again from the oldest one kept (the list is in change order).
      state.cursor = String(state.feed.get(list.lastElementChild.dataset.key).seq);
      $("#more").hidden = false;
    }
  } else if (old) {
    old.replaceWith(item);
  } else {
    list.append(item);
  }
  feedStatus();
  if (live && !state.signatures.has(event.current_message_id)) {
    loadSignatures([event.current_message_id]).then(() => {
      const again = list.querySelector(`li[data-key="${CSS.escape(key)}"]`);
      if (again) again.replaceWith(feedItem(state.feed.get(key) || event));
    }).catch(() => {});
  }
}

function impactBadge(impact) {
  const level = impact || "NONE";
  return h("span", { class: `impact impact-${level}` }, `Impact: ${impact ? impact.replace("_", " ") : "not given"}`);
}

function modeBadge(mode) {
  return mode && mode !== "ACTUAL" ? h("span", { class: `badge ${mode}` }, mode) : null;
}

function signatureText(signature) {
  if (!signature) return h("span", { class: "sig" }, "Signature: …");
  const ok = signature.status === "valid";
  return h("span", { class: ok ? "sig sig-valid" : "sig sig-other" },
    `Signature ${signature.status}${signature.key_id ? ` (${signature.key_id})` : ""}`);
}

function feedItem(event) {
  const signature = state.signatures.get(event.current_message_id);
  return h("li", { class: `event mode-${event.mode}`, "data-key": `${event.originator}/${event.event_id}`, "data-mode": event.mode },
    link(eventSearch(event.originator, event.event_id), { class: "event-link" },
      h("span", { class: "partner" }, event.originator),
      h("span", { class: "type" }, event.report_type),
      impactBadge(event.impact),
      h("span", { class: "title" }, event.title),
      h("time", { datetime: event.last_reported_at }, when(event.last_reported_at)),
      h("span", { class: "meta" },
        modeBadge(event.mode),
        event.late ? h("span", { class: "badge late" }, "LATE (reported > 24 h after detection)") : null,
        event.status === "withdrawn" ? h("span", { class: "badge withdrawn" }, "WITHDRAWN") : null,
        h("span", {}, `Section: ${event.border_sections.join(", ") || "—"}`),
        signatureText(signature),
        h("span", {}, `TLP:${event.tlp}`),
        event.versions > 1 ? h("span", {}, `${event.versions} versions`) : null,
        event.request ? h("span", { class: event.request.overdue ? "badge overdue" : "" },
          event.request.answered_at ? "answered" : `due ${when(event.request.due_at)}${event.request.overdue ? " OVERDUE" : ""}`) : null)));
}

// ---------------------------------------------------------------- event detail

async function renderDetail(first) {
  const query = params();
  const originator = query.get("originator") || "";
  const eventId = query.get("event") || "";
  if (first) put(h("p", { role: "status" }, "Loading the event…"));
  let detail;
  try {
    detail = await api(`/v1/events/${encodeURIComponent(originator)}/${encodeURIComponent(eventId)}`);
  } catch (error) {
    put(h("h1", {}, "Event not found"), h("p", { class: "error", role: "alert" }, error.message),
      link("view=feed", "Back to the feed"));
    return;
  }
  if (view() !== "event" || params().get("event") !== eventId) return;
  state.detail = detail;
  const refs = await linkTargets(detail);
  const e = detail.event;
  document.title = `${e.title} — OIX liaison console`;
  const focused = document.activeElement?.id;
  put(
    h("p", {}, link("view=feed", "← Back to the feed")),
    h("p", { id: "detail-changed", class: "notice", hidden: true }, "This event changed since it was shown. ",
      h("button", { type: "button", id: "detail-reload", onclick: () => renderDetail(false) }, "Show the latest")),
    h("h1", { id: "event-title" }, e.title),
    h("p", { class: "actions" }, impactBadge(e.impact), modeBadge(e.mode),
      e.late ? h("span", { class: "badge late" }, "LATE") : null,
      e.status === "withdrawn" ? h("span", { class: "badge withdrawn" }, `WITHDRAWN${e.withdrawn_reason ? `: ${e.withdrawn_reason}` : ""}`) : null),
    facts([
      ["Partner", e.originator], ["Report type", e.report_type], ["Event id", e.event_id],
      ["Status", e.status], ["Mode", e.mode], ["TLP", e.tlp], ["Priority", e.priority],
      ["Border sections", e.border_sections.join(", ") || "—"],
      ["Released to", e.releasable_to.join(", ")],
      ["Reports / versions", `${e.reports} / ${e.versions}`],
      ["First reported", when(e.first_reported_at)], ["Last reported", when(e.last_reported_at)],
      ["Detected", when(e.detected_at)],
      ["Request", e.request ? `${e.request.kind}, due ${when(e.request.due_at)}${e.request.overdue ? " (OVERDUE)" : ""}${e.request.answered_at ? `, answered ${when(e.request.answered_at)}` : ""}` : "—"],
    ]),
    actionsSection(detail),
    answersSection(detail),
    acknowledgementsSection(detail),
    responsesSection(detail),
    h("h2", {}, `Versions (${detail.reports.length})`),
    detail.reports.map((r, i) => versionSection(r, i, refs)));
  // What the officer just did stays said after the redraw.
  if (state.flash && document.getElementById(state.flash.id)) document.getElementById(state.flash.id).textContent = state.flash.text;
  state.flash = null;
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
  else if (first) $("#event-title").setAttribute("tabindex", "-1"), $("#event-title").focus();
  answerStates(detail);
}

// What became of each answer sent from here: filled in once known, so a slow gateway (the
// replies carry its status) never holds the page back.
async function answerStates(detail) {
  await Promise.all(detail.answers.map(async (a) => {
    let replies = null;
    // Asked again after a short deadline: seen in the browser tests, a request to the service
    // now and then hangs while a fresh one is answered at once.
    for (let attempt = 0; attempt < 3 && !replies && state.detail === detail; attempt += 1) {
      replies = await api(`/v1/replies/${a.message_id}`, { timeout: 5000 }).catch(() => null);
    }
    const acks = replies?.acknowledgements || [];
    const cell = document.querySelector(`#sent tr[data-message="${CSS.escape(a.message_id)}"] .answer-state`);
    if (!cell || !acks.length || state.detail !== detail) return;
    cell.replaceChildren(h("span", { class: "acknowledged" },
      `acknowledged by ${acks.map((k) => `${k.party} (${k.status})`).join(", ")}`));
  }));
}

function detailChanged() {
  const notice = $("#detail-changed");
  if (!notice || !notice.hidden) return;
  notice.hidden = false;
  announce("This event changed.");
}

async function linkTargets(detail) {
  const ids = [...new Set(detail.reports.flatMap((r) => r.links.map((l) => l.message_id)))];
  const refs = new Map();
  if (!ids.length) return refs;
  try {
    for (const ref of await api(`/v1/console/messages?ids=${ids.slice(0, 100).join(",")}`)) refs.set(ref.message_id, ref);
  } catch { /* links stay plain ids */ }
  return refs;
}

function facts(rows) {
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function actionsSection(detail) {
  const section = h("section", { "aria-labelledby": "act-title" }, h("h2", { id: "act-title" }, "Acknowledge"));
  const target = detail.event.current_message_id;
  if (!detail.can_acknowledge.allowed) {
    section.append(h("p", { class: "hint" }, `Cannot acknowledge here: ${detail.can_acknowledge.reason}`));
  } else {
    const result = h("p", { id: "ack-result", role: "status" });
    const note = h("input", { id: "ack-note", maxlength: "2000" });
    const send = (status) => async (e) => {
      e.target.disabled = true;
      result.textContent = `Sending ${status}…`;
      try {
        const sent = await api(`/v1/reports/${detail.event.originator}/${target}/acknowledgements`, {
          method: "POST", body: { status, note: note.value || null } });
        result.textContent = `${status} sent (message ${sent.message_id}).`;
        state.flash = { id: "ack-result", text: result.textContent };
        renderDetail(false);
      } catch (error) {
        result.textContent = `Not sent: ${error.message}`; result.className = "error";
      } finally { e.target.disabled = false; }
    };
    section.append(
      h("div", { class: "actions" },
        h("label", { for: "ack-note" }, "Note (optional)"), note,
        ["RECEIVED", "READ", "ACTIONED"].map((status) =>
          h("button", { type: "button", id: `ack-${status.toLowerCase()}`, onclick: send(status) }, `Acknowledge: ${status.toLowerCase()}`))),
      result);
  }
  if (detail.event.request) section.append(answerForm(detail));
  return section;
}

function answerForm(detail) {
  const e = detail.event;
  const target = e.first_message_id;
  const wrap = h("section", { "aria-labelledby": "answer-title" }, h("h2", { id: "answer-title" },
    e.request.kind === "assistance" ? "Answer the request for assistance" : "Answer the request for information"));
  if (!detail.can_answer.allowed) {
    wrap.append(h("p", { class: "hint" }, `Cannot answer here: ${detail.can_answer.reason}`));
    return wrap;
  }
  const result = h("p", { id: "answer-result", role: "status" });
  let form;
  if (e.request.kind === "assistance") {
    const request = detail.reports.find((r) => r.message_id === target)?.content || {};
    const day = (v) => (v || "").slice(0, 16);
    form = h("form", { id: "answer-form", class: "form-grid" },
      h("label", { for: "a-decision" }, "Decision"),
      h("select", { id: "a-decision", name: "decision" },
        h("option", { value: "ACCEPT" }, "Accept"), h("option", { value: "PARTIAL" }, "Partial"), h("option", { value: "DECLINE" }, "Decline")),
      h("label", { for: "a-officers" }, "Officers offered"),
      h("input", { id: "a-officers", name: "officers", type: "number", min: "0", max: "10000", value: String(request.officers_min || 0) }),
      h("span", { id: "a-spec-label" }, "By speciality"),
      h("div", { role: "group", "aria-labelledby": "a-spec-label", class: "actions" },
        SPECIALITIES.slice(0, 4).flatMap((sp) => [
          h("label", { for: `a-sp-${sp}` }, sp.replace("_", " ").toLowerCase()),
          h("input", { id: `a-sp-${sp}`, name: sp, type: "number", min: "0", max: "10000", value: "0", size: "4", style: "width:4rem" })])),
      h("label", { for: "a-from" }, "Available from (UTC)"),
      h("input", { id: "a-from", name: "from", type: "datetime-local", value: day(request.needed_from) }),
      h("label", { for: "a-until" }, "Available until (UTC)"),
      h("input", { id: "a-until", name: "until", type: "datetime-local", value: day(request.needed_until) }),
      h("label", { for: "a-note" }, "Note"),
      h("textarea", { id: "a-note", name: "note", rows: "2", maxlength: "2000" }),
      h("span", {}), h("button", { type: "submit", id: "answer-send" }, "Send the answer"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const decision = form.elements.decision.value;
      const body = { decision };
      if (decision !== "DECLINE") {
        body.officers_offered = Number(form.elements.officers.value || 0);
        body.specialities = SPECIALITIES.slice(0, 4)
          .map((sp) => ({ speciality: sp, count: Number(form.elements[sp].value || 0) }))
          .filter((x) => x.count > 0);
        if (form.elements.from.value) body.available_from = utc(`${form.elements.from.value}:00`);
        if (form.elements.until.value) body.available_until = utc(`${form.elements.until.value}:00`);
      }
      if (form.elements.note.value) body.note = form.elements.note.value;
      await sendAnswer(e, target, body, result);
    });
  } else {
    form = rfiForm(detail, result);
  }
  wrap.append(form, result);
  return wrap;
}

async function sendAnswer(event, target, body, result, fields = {}) {
  result.className = ""; result.textContent = "Sending…";
  fieldErrors(fields, []);
  try {
    const sent = await api(`/v1/reports/${event.originator}/${target}/answers`, { method: "POST", body });
    result.textContent = `Answer sent (message ${sent.message_id}).`;
    state.flash = { id: "answer-result", text: result.textContent };
    renderDetail(false);
    refreshCounts();
  } catch (error) {
    const rest = fieldErrors(fields, error.issues || []);
    const said = rest.length ? ` (${rest.map((i) => `${i.path}: ${i.reason}`).join("; ")})` : "";
    result.textContent = `Not sent: ${error.detail || error.message}${said}`; result.className = "error";
  }
}

// The service's field issues, each shown beside its field (path -> control id in `fields`);
// the issues no field of the form holds are returned, to be said with the outcome.
function fieldErrors(fields, issues) {
  for (const id of new Set(Object.values(fields))) {
    const control = document.getElementById(id);
    if (!control) continue;
    control.removeAttribute("aria-invalid");
    document.getElementById(`${id}-error`).textContent = "";
  }
  const rest = [];
  let first = null;
  for (const issue of issues) {
    const path = Object.keys(fields).filter((p) => issue.path === p || issue.path.startsWith(`${p}.`) || issue.path.startsWith(`${p}[`))
      .sort((a, b) => b.length - a.length)[0];
    const control = path && document.getElementById(fields[path]);
    if (!control) { rest.push(issue); continue; }
    control.setAttribute("aria-invalid", "true");
    const said = document.getElementById(`${control.id}-error`);
    said.textContent = said.textContent ? `${said.textContent}; ${issue.reason}` : issue.reason;
    first = first || control;
  }
  if (first) first.focus();
  return rest;
}

// A labelled control with its hint and its error beside it (the error is read with the field).
function formField(id, label, control, hint) {
  control.id = id;
  control.setAttribute("aria-describedby", [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
  return [h("label", { for: id }, label),
    h("div", { class: "field-control" }, control,
      hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null,
      h("span", { class: "field-error", id: `${id}-error` }))];
}

const CONFIDENCE = ["CONFIRMED", "PROBABLE", "POSSIBLE", "DOUBTFUL", "UNKNOWN"];
const CATEGORIES = ["ILLEGAL_CROSSING_ATTEMPT", "APPREHENSION", "SMUGGLING", "DOCUMENT_FRAUD",
  "ASYLUM_REQUEST_AT_BORDER", "VIOLENCE_AGAINST_OFFICERS", "DEATH_OR_INJURY", "OTHER"];

// An RFI is answered by a report linked RESPONDS_TO it (schemas/reports/RequestForInformation):
// here an IncidentReport whose narrative is the answer, on one of this agency's sections.
function rfiForm(detail, result) {
  const e = detail.event;
  const target = e.first_message_id;
  const question = detail.reports.find((r) => r.message_id === target)?.content?.question;
  const options = (values, chosen) => values.map((v) => h("option", { value: v, selected: v === chosen }, v.replaceAll("_", " ").toLowerCase()));
  const ours = sectionsOf(state.session.agency);
  const fields = {
    narrative: "r-answer", "header.impact": "r-impact", "header.confidence": "r-confidence",
    category: "r-category", detected_at: "r-detected", "location.border_section": "r-section",
    "location": "r-section", "persons.total": "r-persons", persons: "r-persons",
  };
  const form = h("form", { id: "answer-form", class: "form-grid", novalidate: true },
    question ? [h("span", { class: "label" }, "The question"), h("blockquote", { id: "r-question" }, question)] : null,
    formField("r-answer", "Your answer", h("textarea", { name: "narrative", rows: "5", cols: "60", maxlength: "10000" }),
      "What you know; sent as the narrative of an incident report linked to the request."),
    formField("r-category", "Category", h("select", { name: "category" }, options(CATEGORIES, "OTHER"))),
    formField("r-impact", "Impact level", h("select", { name: "impact" }, options(IMPACTS, "LOW"))),
    formField("r-confidence", "Confidence", h("select", { name: "confidence" }, options(CONFIDENCE, "CONFIRMED"))),
    formField("r-detected", "Detected at (UTC)", h("input", { name: "detected", type: "datetime-local", step: "60",
      value: new Date().toISOString().slice(0, 16) })),
    formField("r-section", "Border section", h("input", { name: "section", list: "r-sections", autocomplete: "off",
      value: ours.includes(e.border_sections[0]) ? e.border_sections[0] : ours[0] || "" }),
      ours.length ? `one of ${ours.join(", ")}` : null),
    h("datalist", { id: "r-sections" }, ours.map((code) => h("option", { value: code }))),
    formField("r-persons", "Persons involved", h("input", { name: "persons", type: "number", inputmode: "numeric", value: "0", style: "width:6rem" })),
    h("span", {}), h("button", { type: "submit", id: "answer-send" }, "Send the answer"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const el = form.elements;
    const answer = el.narrative.value.trim();
    if (!answer) { fieldErrors(fields, [{ path: "narrative", reason: "write the answer" }]); return; }
    const persons = el.persons.value.trim();
    const body = {
      type: "IncidentReport",
      header: { impact: el.impact.value, confidence: el.confidence.value },
      category: el.category.value,
      detected_at: el.detected.value ? utc(el.detected.value.length === 16 ? `${el.detected.value}:00` : el.detected.value) : null,
      location: { border_section: el.section.value.trim() },
      persons: { total: persons === "" || Number.isNaN(Number(persons)) ? persons : Number(persons) },
      narrative: answer,
    };
    await sendAnswer(e, target, body, result, fields);
  });
  return form;
}

function answersSection(detail) {
  if (!detail.answers.length) return null;
  return h("section", { "aria-labelledby": "sent-title" }, h("h2", { id: "sent-title" }, "Sent from here"),
    h("table", { id: "sent" }, h("thead", {}, h("tr", {}, ["What", "By", "When", "Message", "State"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, detail.answers.map((a) => h("tr", { "data-message": a.message_id },
        h("td", {}, `${a.report_type}: ${a.status}`), h("td", {}, a.officer), h("td", {}, when(a.created_at)),
        h("td", {}, h("code", {}, a.message_id)), h("td", { class: "answer-state", "aria-live": "polite" }, h("span", { class: "sent" }, "sent")))))));
}

function acknowledgementsSection(detail) {
  return h("section", { "aria-labelledby": "acks-title" }, h("h2", { id: "acks-title" }, "Acknowledgements"),
    detail.acknowledgements.length
      ? h("table", { id: "acks" }, h("thead", {}, h("tr", {}, ["Direction", "Party", "Status", "Officer", "When", "Note"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, detail.acknowledgements.map((a) => h("tr", {},
          h("td", {}, a.direction), h("td", {}, a.party), h("td", {}, a.status), h("td", {}, a.officer || "—"),
          h("td", {}, when(a.at)), h("td", {}, a.note || "")))))
      : h("p", {}, "None yet."));
}

function responsesSection(detail) {
  if (!detail.responses.length) return null;
  return h("section", { "aria-labelledby": "resp-title" }, h("h2", { id: "resp-title" }, "Responses"),
    h("ul", {}, detail.responses.map((r) => h("li", {},
      link(eventSearch(r.originator, r.event_id), `${r.originator} ${r.report_type}: ${r.title}`), ` (${when(r.created_at)})`))));
}

function flatten(value, prefix = "", out = new Map()) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, Array.isArray(value) ? JSON.stringify(value) : value === null ? "null" : String(value));
  }
  return out;
}

function versionSection(report, index, refs) {
  const changed = new Map(report.changes.map((c) => [c.path, c]));
  const fields = flatten(report.content);
  const superseded = report.superseded_by ? " superseded" : "";
  const heading = `Version ${index + 1}: ${report.report_type}${report.superseded_by ? " (superseded)" : ""}${report.cancelled_by ? " (cancelled)" : ""}`;
  const headingId = `v${index + 1}-title`;
  return h("section", { class: `version${superseded}`, "aria-labelledby": headingId, "data-message": report.message_id },
    h("h3", { id: headingId }, heading, " ", modeBadge(report.mode)),
    facts([
      ["Message id", h("code", {}, report.message_id)],
      ["Created / received", `${when(report.created_at)} / ${when(report.received_at)}`],
      ["Signature", signatureText(report.signature)],
      ["Signing key id", report.signature.key_id || "—"],
      ["Read from", `${report.kafka.topic} [${report.kafka.partition}] offset ${report.kafka.offset} (epoch ${report.kafka.epoch})`],
      ["Links", report.links.length ? h("ul", {}, report.links.map((l) => {
        const ref = refs.get(l.message_id);
        return h("li", {}, `${l.relation} `, ref
          ? link(eventSearch(ref.originator, ref.event_id), `${ref.originator} ${ref.report_type}: ${ref.title}`)
          : h("code", {}, l.message_id), ref ? null : " (not in this store)");
      })) : "—"],
    ]),
    report.location ? locationBlock(report.location) : null,
    report.changes.length ? h("div", {},
      h("h4", {}, `What changed from the version before (${report.changes.length})`),
      h("table", { class: "changes" }, h("thead", {}, h("tr", {}, ["Field", "Before", "After"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, report.changes.map((c) => h("tr", { class: "changed" },
          h("td", {}, c.path), h("td", { class: "before" }, JSON.stringify(c.before)), h("td", {}, JSON.stringify(c.after))))))) : null,
    h("details", { open: index === 0 || report.changes.length > 0 ? true : null },
      h("summary", {}, `Every field (${fields.size})`),
      h("table", { class: "fields" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"))),
        h("tbody", {}, [...fields].map(([k, v]) => h("tr", { class: changed.has(k) ? "changed" : null },
          h("td", {}, k), h("td", {}, v)))))));
}

// A small map drawn here, around the report's section and point: reference towns, the border
// sections (approximate lines, sections.js), the report's section marked and its point.
const CITIES = [["Tallinn", 59.44, 24.75], ["Tartu", 58.38, 26.72], ["Narva", 59.38, 28.19],
  ["Pskov", 57.82, 28.33], ["Riga", 56.95, 24.11], ["Rēzekne", 56.51, 27.33], ["Daugavpils", 55.87, 26.54],
  ["Vilnius", 54.69, 25.28], ["Klaipėda", 55.71, 21.13], ["Druskininkai", 54.02, 23.97], ["Sovetsk", 55.08, 21.89],
  ["Kaliningrad", 54.71, 20.51], ["Grodno", 53.68, 23.83], ["Minsk", 53.9, 27.57], ["Suwałki", 54.10, 22.93],
  ["Białystok", 53.13, 23.16], ["Brest", 52.10, 23.70], ["Warsaw", 52.23, 21.01], ["Lutsk", 50.75, 25.33],
  ["Lviv", 49.84, 24.03], ["Kyiv", 50.45, 30.52]];

// The square of the map: the marked section and the point with a margin, a few km at least.
function mapBox(line, point) {
  const lats = [...line.map(([lat]) => lat), ...(point ? [point.lat] : [])];
  const lons = [...line.map(([, lon]) => lon), ...(point ? [point.lon] : [])];
  const lat = (Math.min(...lats) + Math.max(...lats)) / 2, lon = (Math.min(...lons) + Math.max(...lons)) / 2;
  const cos = Math.cos((lat * Math.PI) / 180);
  const half = Math.max(0.6, 1.25 * Math.max(Math.max(...lats) - Math.min(...lats), (Math.max(...lons) - Math.min(...lons)) * cos) / 2 + 0.25);
  return { west: lon - half / cos, east: lon + half / cos, south: lat - half, north: lat + half };
}

function locationBlock(location) {
  const point = location.point;
  const rows = [["Border section", location.border_section], ["Description", location.description || "—"]];
  if (location.checkpoint) rows.push(["Checkpoint", location.checkpoint]);
  if (location.border_sign) rows.push(["Border sign", location.border_sign]);
  rows.push(["Coordinates", point ? `${point.lat.toFixed(4)}° N, ${point.lon.toFixed(4)}° E` : "not given"]);
  const known = Boolean(SECTIONS[location.border_section]);
  return h("div", { class: "location" }, facts(rows),
    point || known ? h("figure", { class: "map-figure" }, map(point, location.border_section),
      h("figcaption", { class: "hint" }, known
        ? `${location.border_section} outlined in blue (approximate line)${point ? ", the point in red" : ""}.`
        : `Section ${location.border_section} is not on this map; the point in red.`)) : null);
}

function map(point, section) {
  const width = 300, height = 300;
  const marked = SECTIONS[section];
  const box = mapBox(marked ? marked.line : [], point);
  const x = (lon) => ((lon - box.west) / (box.east - box.west)) * width;
  const y = (lat) => ((box.north - lat) / (box.north - box.south)) * height;
  const where = point ? `${point.lat.toFixed(3)} N, ${point.lon.toFixed(3)} E` : "no point given";
  const svg = s("svg", { class: "map", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Map: ${where}, border section ${section}` });
  svg.append(s("title", {}, `Location in ${section}`));
  const step = box.north - box.south > 4 ? 2 : box.north - box.south > 1.5 ? 1 : 0.5;
  for (let lon = Math.ceil(box.west / step) * step; lon < box.east; lon += step) svg.append(s("line", { x1: x(lon), x2: x(lon), y1: 0, y2: height, stroke: "#dde5ec" }));
  for (let lat = Math.ceil(box.south / step) * step; lat < box.north; lat += step) svg.append(s("line", { y1: y(lat), y2: y(lat), x1: 0, x2: width, stroke: "#dde5ec" }));
  const points = (line) => line.map(([lat, lon]) => `${x(lon).toFixed(1)},${y(lat).toFixed(1)}`).join(" ");
  // Shared sections (LT-LV and LV-LT) are one line: drawn once, the marked one last, on top.
  const drawn = new Set();
  for (const [code, { line }] of Object.entries(SECTIONS)) {
    if (code === section || drawn.has(line)) continue;
    drawn.add(line);
    const other = s("polyline", { points: points(line), fill: "none", stroke: "#7a8794", "stroke-width": 2,
      "stroke-dasharray": "6 3", class: "section", "data-section": code });
    other.append(s("title", {}, `${code} (approximate)`));
    svg.append(other);
  }
  for (const [name, lat, lon] of CITIES) {
    svg.append(s("circle", { cx: x(lon), cy: y(lat), r: 2.5, fill: "#333" }));
    svg.append(s("text", { x: x(lon) + 4, y: y(lat) + 4, "font-size": 10, fill: "#1a1a1a" }, name));
  }
  if (marked) {
    const outline = s("polyline", { points: points(marked.line), fill: "none", stroke: "#0b4f8a", "stroke-width": 5,
      "stroke-linecap": "round", "stroke-linejoin": "round", class: "section marked", "data-section": section });
    outline.append(s("title", {}, `${section} (approximate)`));
    svg.append(outline);
    svg.append(s("rect", { x: 4, y: 4, width: 7.2 * section.length + 30, height: 20, fill: "#ffffff", stroke: "#8a8a8a" }));
    svg.append(s("line", { x1: 9, x2: 25, y1: 14, y2: 14, stroke: "#0b4f8a", "stroke-width": 5 }));
    svg.append(s("text", { x: 30, y: 18, "font-size": 11, "font-weight": "bold", fill: "#0b4f8a", class: "section-label" }, section));
  }
  if (point) {
    const px = Math.min(Math.max(x(point.lon), 0), width), py = Math.min(Math.max(y(point.lat), 0), height);
    svg.append(s("circle", { cx: px, cy: py, r: 6, fill: "none", stroke: "#a8001c", "stroke-width": 3, class: "point" }));
    svg.append(s("circle", { cx: px, cy: py, r: 2, fill: "#a8001c" }));
  }
  return svg;
}

// ---------------------------------------------------------------- open requests

async function renderRequests(first) {
  document.title = "Open requests — OIX liaison console";
  if (first) put(h("h1", {}, "Open requests to this agency"), h("p", { role: "status" }, "Loading…"));
  let requests;
  try { requests = await api("/v1/requests?state=open"); } catch (error) {
    $("#view").append(h("p", { class: "error", role: "alert" }, error.message)); return;
  }
  if (view() !== "requests") return;
  for (const timer of state.timers) clearInterval(timer);
  const rows = requests.map((e) => h("tr", { "data-key": `${e.originator}/${e.event_id}`, "data-due": e.request.due_at },
    h("td", {}, link(eventSearch(e.originator, e.event_id), e.title)),
    h("td", {}, e.originator), h("td", {}, e.request.kind), h("td", {}, e.priority),
    h("td", {}, when(e.request.due_at)), h("td", { class: "countdown" }), h("td", { class: "flag" })));
  const tick = () => {
    for (const row of rows) {
      const left = Date.parse(row.dataset.due) - Date.now();
      row.querySelector(".countdown").textContent = left >= 0 ? `due in ${duration(left)}` : `overdue by ${duration(-left)}`;
      row.classList.toggle("overdue", left < 0);
      row.querySelector(".flag").replaceChildren(left < 0 ? h("span", { class: "badge overdue" }, "OVERDUE") : "");
    }
  };
  tick();
  state.timers = [setInterval(tick, 1000)];
  put(h("h1", {}, "Open requests to this agency"),
    h("p", { role: "status" }, `${requests.length} open request${requests.length === 1 ? "" : "s"}, soonest due first.`),
    requests.length ? h("table", { id: "requests" },
      h("caption", { class: "visually-hidden" }, "Open requests with their due time"),
      h("thead", {}, h("tr", {}, ["Request", "From", "Kind", "Priority", "Due", "Time left", "Flag"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)) : null);
  $("#requests-count").textContent = requests.length ? String(requests.length) : "";
}

async function refreshCounts() {
  try {
    const open = await api("/v1/requests?state=open");
    $("#requests-count").textContent = open.length ? String(open.length) : "";
  } catch { /* shown on the page itself */ }
}

// ---------------------------------------------------------------- daily summary

const SERIES = [["attempts", "Crossing attempts", "#1f4e79"], ["apprehensions", "Apprehensions", "#b35900"], ["asylum_requests", "Asylum requests", "#2e7d32"]];

function total(day, key) {
  return (day.situation ? day.situation[key] : 0) + (day.incidents ? day.incidents[key] : 0);
}

async function renderSummary() {
  document.title = "Summary — OIX liaison console";
  put(h("h1", {}, "Daily summary per partner"), h("p", { role: "status" }, "Loading…"));
  let days;
  try { days = await api("/v1/summary/daily"); } catch (error) {
    $("#view").append(h("p", { class: "error", role: "alert" }, error.message)); return;
  }
  if (view() !== "summary") return;
  const excluded = days.reduce((n, d) => n + d.exercise_reports_excluded, 0);
  const partners = [...new Set(days.map((d) => d.partner))].sort();
  put(h("h1", {}, "Daily summary per partner"),
    h("p", {}, "From current ACTUAL situation and incident reports. ",
      h("strong", { id: "excluded" }, `${excluded} exercise/test report${excluded === 1 ? "" : "s"} excluded.`)),
    h("p", { class: "legend" }, SERIES.map(([, label, colour]) => h("span", {}, h("span", { class: "swatch", style: `background:${colour}` }), label))),
    partners.length ? partners.map((p) => partnerChart(p, days.filter((d) => d.partner === p))) : h("p", {}, "No figures in the last days."));
}

function partnerChart(partner, days) {
  days.sort((a, b) => a.day.localeCompare(b.day));
  const width = 640, height = 220, left = 40, bottom = 30, top = 10;
  const max = Math.max(1, ...days.flatMap((d) => SERIES.map(([key]) => total(d, key))));
  const slot = (width - left) / Math.max(days.length, 1);
  const bar = Math.min(24, (slot - 10) / SERIES.length);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = s("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-labelledby": `chart-${partner}-title` });
  svg.append(s("title", { id: `chart-${partner}-title` }, `${partner}: crossing attempts, apprehensions and asylum requests per day`));
  svg.append(s("line", { x1: left, x2: width, y1: y(0), y2: y(0), stroke: "#333" }));
  svg.append(s("text", { x: 2, y: y(max) + 4, "font-size": 11 }, String(max)));
  svg.append(s("text", { x: 2, y: y(0), "font-size": 11 }, "0"));
  days.forEach((d, i) => {
    const x0 = left + i * slot + 5;
    SERIES.forEach(([key, label, colour], j) => {
      const value = total(d, key);
      const rect = s("rect", { x: x0 + j * bar, y: y(value), width: bar - 2, height: y(0) - y(value), fill: colour, "data-series": key, "data-value": value });
      rect.append(s("title", {}, `${d.day} ${label}: ${value}`));
      svg.append(rect);
    });
    svg.append(s("text", { x: x0, y: height - 10, "font-size": 11 }, d.day.slice(5)));
  });
  return h("section", { class: "partner-summary", "data-partner": partner, "aria-labelledby": `sum-${partner}` },
    h("h2", { id: `sum-${partner}` }, partner), svg,
    h("table", {}, h("caption", { class: "visually-hidden" }, `${partner} figures per day`),
      h("thead", {}, h("tr", {}, ["Day", ...SERIES.map(([, label]) => label), "Reports", "Exercise excluded"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, days.map((d) => h("tr", {}, h("td", {}, d.day), SERIES.map(([key]) => h("td", {}, String(total(d, key)))),
        h("td", {}, String((d.situation?.reports || 0) + (d.incidents?.reports || 0))), h("td", {}, String(d.exercise_reports_excluded)))))));
}

// ---------------------------------------------------------------- alerts

async function renderAlerts() {
  document.title = "Alerts — OIX liaison console";
  let page;
  try { page = await api("/v1/alerts?limit=100"); } catch (error) {
    put(h("p", { class: "error", role: "alert" }, error.message)); return;
  }
  if (view() !== "alerts") return;
  state.alerts = 0;
  $("#alerts-count").textContent = "";
  put(h("h1", {}, "Alerts"),
    h("p", {}, "Records that are not reports: untrusted (bad signature, unknown key or schema), not released to this agency, broker resets, dead letters. They are never shown in the feed."),
    page.items.length ? h("ul", { class: "alerts", id: "alerts" }, page.items.map((a) => h("li", { class: "alert-item", "data-kind": a.kind },
      h("p", {}, h("span", { class: "kind" }, `ALERT: ${a.kind.replace("_", " ")}`), ` at ${when(a.at)}`),
      h("p", {}, a.detail),
      facts([["Claimed originator", a.originator || "—"], ["Message id", a.message_id || "—"], ["Type", a.report_type || "—"],
        ["Signature", a.signature_status || "—"], ["Where", a.topic ? `${a.topic} [${a.partition}] offset ${a.offset}` : "—"]]))))
      : h("p", {}, "No alerts."));
}

// ---------------------------------------------------------------- keyboard

function onKey(event) {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName) || event.target.isContentEditable;
  if (typing || event.ctrlKey || event.metaKey || event.altKey || !state.session) return;
  const links = [...document.querySelectorAll("#feed a.event-link")];
  const at = links.indexOf(document.activeElement);
  if (event.key === "j" || event.key === "k") {
    if (!links.length) return;
    const next = event.key === "j" ? Math.min(at + 1, links.length - 1) : Math.max(at - 1, 0);
    links[at === -1 ? 0 : next].focus();
    event.preventDefault();
  } else if (event.key === "/") {
    const search = $("#f-q");
    if (search) { search.focus(); event.preventDefault(); }
  } else if (event.key === "Escape" && view() === "event") {
    history.back();
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", render);
  // A page left for another (kept in the back/forward cache) gives its live stream's
  // connection back: browsers allow a few per host, and the next page needs them.
  window.addEventListener("pagehide", closeStream);
  window.addEventListener("pageshow", (event) => { if (event.persisted && state.session) openStream(); });
  try {
    state.session = await api("/v1/session");
  } catch {
    showLogin();
    return;
  }
  await started();
});
