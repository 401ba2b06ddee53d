// The live dashboard: first state from the ledger (GET /v1/dashboard/state), then the live
// stream (GET /v1/stream) from the state's position, which replays what the ledger may not
// hold yet (repeats are dropped); the service map from GET /v1/topology. No framework: the
// state is three maps, redrawn on each change.
import { openStream } from "./sse.js";
import { drawMap } from "./topology.js";

const TOKEN_KEY = "shipledger.token";
const $ = (id) => document.getElementById(id);
const TIMELINE_MAX = 200;

const state = {
  current: new Map(), // tenant/service/environment -> latest deployment
  alerts: new Map(), // alert_id -> open alert
  timeline: [], // deployment records, newest first
  nodes: [], // service map
  selected: null, // service map: whose blast radius is shown
  kafka: null, // stream status
  teams: new Set(),
  environments: new Set(),
  services: new Set(),
};
let stream = null;
let ledgerRetry = null;
let lastApplied = ""; // the id of the last stream event applied; render() sets it as #conn data-event

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function filters() {
  const out = {};
  for (const name of ["team", "environment", "service"]) {
    const value = $(`f-${name}`).value;
    if (value) out[name] = value;
  }
  return out;
}

function query(params) {
  const text = new URLSearchParams(params).toString();
  return text ? `?${text}` : "";
}

async function getJson(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  const body = await answer.json();
  if (answer.status === 401 || answer.status === 403) {
    signOut(body.error);
    throw new Error(body.error);
  }
  if (!answer.ok) throw new Error(body.error || `HTTP ${answer.status}`);
  return body;
}

function at(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function key(d) {
  return `${d.tenant}/${d.service}/${d.environment}`;
}

function remember(row) {
  if (row.team) state.teams.add(row.team);
  if (row.environment) state.environments.add(row.environment);
  if (row.service) state.services.add(row.service);
}

// --- applying what arrives ---------------------------------------------------------------
function newer(d, was) {
  if (!was) return true;
  if (was.deployment_id === d.deployment_id) return d.seq >= was.seq;
  return (d.started_at || "") >= (was.started_at || "");
}

/** A deployment record's identity: the ledger's state and the stream's replay can both hold it. */
function recordId(d) {
  return `${d.deployment_id}#${d.seq}`;
}

function applyDeployment(d) {
  remember(d);
  if (newer(d, state.current.get(key(d)))) state.current.set(key(d), d);
  if (state.timeline.some((t) => recordId(t) === recordId(d))) return; // shown already
  state.timeline.unshift(d);
  state.timeline.length = Math.min(state.timeline.length, TIMELINE_MAX);
}

function applyAlert(a) {
  remember(a);
  if (a.kind === "resolution") state.alerts.delete(a.resolves);
  else state.alerts.set(a.alert_id, a);
}

/** Read the state again in 5 s, saying why meanwhile. */
function retryState(why) {
  showLedger(why);
  clearTimeout(ledgerRetry);
  ledgerRetry = setTimeout(() => loadState(), 5000);
}

/** The ledger's state, merged with what the stream brought meanwhile, then the stream again
 * from the state's position: the ledger is a moment behind the stream, and what it does not
 * hold yet is replayed. `fresh` (the filters changed): forget what was shown first. */
async function loadState(fresh = false) {
  if (fresh) {
    if (stream) stream.stop(); // nothing more under the old filters
    stream = null;
    state.current.clear();
    state.alerts.clear();
    state.timeline = [];
  }
  try {
    const body = await getJson(`/v1/dashboard/state${query(filters())}`);
    // An alert the ledger no longer lists as open, and not newer than what it lists, was resolved.
    const open = new Set(body.alerts.map((a) => a.alert_id));
    const newestAlert = body.alerts.length ? body.alerts[0].detected_at : "";
    for (const [id, a] of state.alerts) {
      if (!open.has(id) && (a.detected_at || "") <= newestAlert) state.alerts.delete(id);
    }
    body.current.forEach((d) => {
      remember(d);
      if (newer(d, state.current.get(key(d)))) state.current.set(key(d), d);
    });
    // The state's reads are not one snapshot: a record the sink stored between them can be on
    // the timeline and not yet in `current`. The timeline updates `current` too, oldest first.
    [...body.timeline].reverse().forEach((d) => {
      if (newer(d, state.current.get(key(d)))) state.current.set(key(d), d);
    });
    body.alerts.forEach(applyAlert);
    const newest = body.timeline.length ? body.timeline[0].updated_at : "";
    const seen = new Set(body.timeline.map(recordId));
    const later = state.timeline.filter((d) => d.updated_at > newest && !seen.has(recordId(d)));
    state.timeline = [...later, ...body.timeline].slice(0, TIMELINE_MAX);
    body.timeline.forEach(remember);
    setKafka(body.stream);
    connect(body.stream.last_event_id);
    if (body.stream.complete === false) {
      retryState("Some events accepted a moment ago are not in the ledger yet, and the live stream no longer keeps them: they appear once the ledger has them. Retrying…");
    } else {
      showLedger(null);
    }
  } catch (error) {
    retryState(`The ledger (ClickHouse) is unreachable: showing live events only (${error.message}). Retrying…`);
    if (!stream && token()) connect();
  }
  await loadTopology();
}

/** The service map (again: the catalog changes too), then a redraw. */
async function loadTopology() {
  try {
    const { team, environment } = filters();
    state.nodes = (await getJson(`/v1/topology${query({ team: team || "", environment: environment || "" })}`)).nodes;
    state.nodes.forEach((n) => n.owner_team && state.teams.add(n.owner_team));
  } catch (error) {
    // The ledger's note already says it is unreachable: keep the map drawn last.
  }
  render();
}

// --- banners -----------------------------------------------------------------------------
function setKafka(status) {
  if (!status) return;
  const wasDown = state.kafka && state.kafka.kafka === "down";
  state.kafka = status;
  const banner = $("banner");
  if (status.kafka === "down") {
    banner.textContent = `Live updates paused: Kafka is unreachable. Showing the ledger's last state — stale since ${new Date(status.since * 1000).toLocaleString()}.`;
    banner.hidden = false;
    banner.dataset.state = "stale";
  } else {
    banner.hidden = true;
    banner.dataset.state = "live";
  }
  return wasDown && status.kafka === "live";
}

function showLedger(text) {
  $("ledger-note").hidden = !text;
  $("ledger-note").textContent = text || "";
}

function setConnection(open, why) {
  const pill = $("conn");
  pill.textContent = open ? "live" : `reconnecting… (${why})`;
  pill.className = open ? "pill live" : "pill down";
  pill.dataset.open = open ? "1" : "0";
}

// --- drawing -----------------------------------------------------------------------------
function fillSelect(id, values) {
  const select = $(id);
  const chosen = select.value;
  const have = new Set([...select.options].map((o) => o.value));
  for (const value of [...values].sort()) {
    if (!have.has(value)) select.append(new Option(value, value));
  }
  select.value = chosen;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderGrid() {
  const rows = [...state.current.values()];
  const envs = [...new Set(rows.map((d) => d.environment))].sort();
  const services = [...new Set(rows.map((d) => `${d.tenant}/${d.service}`))].sort();
  const head = document.createElement("tr");
  head.append(cell("service"), ...envs.map((e) => cell(e)));
  $("grid").tHead.replaceChildren(head);
  const body = services.map((s) => {
    const tr = document.createElement("tr");
    const [tenant, service] = s.split("/");
    tr.append(cell(service, "svc"));
    tr.firstChild.title = tenant;
    for (const env of envs) {
      const d = state.current.get(`${s}/${env}`);
      const td = cell(d ? `${d.status}${d.version ? ` · ${d.version}` : ""}` : "", d ? `status-${d.status}` : "");
      if (d) {
        td.title = `${d.deployment_id} by ${d.actor}, ${at(d.started_at)}`;
        td.dataset.deployment = d.deployment_id;
      }
      tr.append(td);
    }
    return tr;
  });
  $("grid").tBodies[0].replaceChildren(...body);
}

function renderAlerts() {
  const alerts = [...state.alerts.values()].sort((a, b) => (b.detected_at || "").localeCompare(a.detected_at || ""));
  $("alert-count").textContent = String(alerts.length);
  $("alerts").replaceChildren(...alerts.slice(0, 200).map((a) => {
    const li = document.createElement("li");
    li.className = `sev-${a.severity}`;
    li.dataset.alert = a.alert_id;
    li.dataset.deployment = a.deployment_id;
    const title = document.createElement("strong");
    title.textContent = `${a.severity} · ${a.rule}`;
    const text = document.createElement("span");
    text.textContent = ` ${a.service} → ${a.environment}: ${a.message}`;
    li.append(title, text);
    return li;
  }));
}

function renderTimeline() {
  $("timeline").replaceChildren(...state.timeline.map((d) => {
    const li = document.createElement("li");
    li.className = `status-${d.status}`;
    li.dataset.deployment = d.deployment_id;
    const time = document.createElement("time");
    time.textContent = at(d.updated_at || d.started_at);
    const text = document.createElement("span");
    text.textContent = ` ${d.service} → ${d.environment} ${d.status}${d.version ? ` (${d.version})` : ""} by ${d.actor}${d.team ? ` [${d.team}]` : ""}`;
    li.append(time, text);
    li.addEventListener("click", () => {
      state.selected = `${d.tenant}/${d.service}`;
      location.hash = "#topology";
    });
    return li;
  }));
}

function nodeState(n) {
  let latest = null;
  for (const d of state.current.values()) {
    if (d.tenant === n.tenant && d.service === n.service && (!latest || d.started_at > latest.started_at)) latest = d;
  }
  let alerts = 0;
  for (const a of state.alerts.values()) if (a.tenant === n.tenant && a.service === n.service) alerts++;
  return { status: latest && latest.status, alerts };
}

function renderMap() {
  drawMap($("map"), state.nodes, nodeState, state.selected, (id) => {
    state.selected = state.selected === id ? null : id;
    renderMap();
  });
  const chosen = state.nodes.find((n) => n.id === state.selected);
  $("blast").textContent = chosen
    ? `Blast radius of ${chosen.service}: ${chosen.blast_radius.length ? chosen.blast_radius.join(", ") : "nothing depends on it"}`
    : "";
}

let pending = false;
function render() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    fillSelect("f-team", state.teams);
    fillSelect("f-environment", state.environments);
    fillSelect("f-service", state.services);
    renderGrid();
    renderAlerts();
    renderTimeline();
    if (location.hash === "#topology") renderMap();
    $("conn").dataset.event = lastApplied; // what is drawn includes it (tests wait on it)
  });
}

// --- wiring ------------------------------------------------------------------------------
/** The live stream, from `since` (the state's position; none: from now on). */
function connect(since = null) {
  if (stream) stream.stop();
  stream = openStream(`/v1/stream${query(filters())}`, token(), {
    onEvent(type, data, id) {
      if (id) lastApplied = id;
      if (type === "deployment") applyDeployment(data);
      else if (type === "alert") applyAlert(data);
      else if (type === "status") {
        if (setKafka(data)) loadState(); // back from an outage: fill the gap from the ledger
        return;
      } else if (type === "reset" || type === "dropped") {
        loadState();
        return;
      }
      render();
    },
    onState: setConnection,
    onUnauthorized: signOut,
  }, since);
}

function route() {
  const topology = location.hash === "#topology";
  $("dashboard").hidden = topology || !token();
  $("topology").hidden = !topology || !token();
  $("tab-dashboard").classList.toggle("active", !topology);
  $("tab-topology").classList.toggle("active", topology);
  if (topology && token()) loadTopology();
  else render();
}

function signOut(why) {
  if (stream) stream.stop();
  stream = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("login-error").textContent = why || "";
  start();
}

function start() {
  const signedIn = Boolean(token());
  $("login").hidden = signedIn;
  $("signout").hidden = !signedIn;
  route();
  if (signedIn) loadState(true);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("signout").addEventListener("click", () => signOut(""));
// Filters from the address (?team=…&environment=…&service=…): a filtered view can be bookmarked.
for (const [name, value] of new URLSearchParams(location.search)) {
  const select = $(`f-${name}`);
  if (!select || !value) continue;
  if (![...select.options].some((o) => o.value === value)) select.append(new Option(value, value));
  select.value = value;
}
$("filters").addEventListener("change", () => {
  history.replaceState(null, "", `${location.pathname}${query(filters())}${location.hash}`);
  loadState(true);
});
window.addEventListener("hashchange", route);
start();
