// BillStack Keys dashboard: Team Settings › API Keys. Plain JavaScript, no build step; every
// request goes to this server's JSON API with the session cookie.
"use strict";

const $ = (id) => document.getElementById(id);

const state = { me: null, teamId: null, projects: [], policy: null, keys: [], revoking: null, reopenCreate: false,
  audit: [], auditCursor: null };

class Unauthenticated extends Error {}

async function api(method, path, body, contentType) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (contentType) {
    options.headers["Content-Type"] = contentType;
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401 && !path.startsWith("/api/auth/login")) {
    // The session ended: back to sign-in, keeping whatever the person typed.
    showSignIn(state.me ? "Your session has ended. Sign in again to continue." : "");
    throw new Unauthenticated();
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || `request failed (${response.status})`);
    error.field = data && data.error && data.error.field;
    error.status = response.status;
    throw error;
  }
  return data;
}

function show(el, visible) { el.hidden = !visible; }

function setError(el, message) {
  el.textContent = message || "";
  show(el, Boolean(message));
}

function formatTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function showSignIn(reason) {
  state.reopenCreate = $("create-dialog").open;
  for (const id of ["create-dialog", "rotate-dialog", "revoke-dialog"]) if ($(id).open) $(id).close();
  show($("app-view"), false);
  show($("account"), false);
  show($("sign-in-view"), true);
  setError($("sign-in-reason"), reason || "");
  $("sign-in-reason").classList.toggle("error", false);
  $("email").focus();
}

async function signIn(event) {
  event.preventDefault();
  setError($("sign-in-error"), "");
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    setError($("sign-in-error"), "Enter your email and password.");
    return;
  }
  $("sign-in-submit").disabled = true;
  try {
    const me = await api("POST", "/api/auth/login", { email, password });
    $("password").value = "";
    await enter(me);
  } catch (e) {
    setError($("sign-in-error"), e.status === 401 ? "Wrong email or password." : e.message);
  } finally {
    $("sign-in-submit").disabled = false;
  }
}

async function enter(me) {
  state.me = me;
  show($("sign-in-view"), false);
  show($("account"), true);
  $("user-email").textContent = me.user.email;
  const switcher = $("team-switcher");
  switcher.replaceChildren(...me.teams.map((t) => new Option(t.name, t.id)));
  show(switcher, me.teams.length > 1);
  const saved = sessionStorage.getItem("billstack-team");
  state.teamId = me.teams.some((t) => t.id === saved) ? saved : (me.teams[0] && me.teams[0].id);
  switcher.value = state.teamId || "";
  show($("app-view"), true);
  if (!state.teamId) {
    setError($("keys-error"), "Your account is not a member of any team.");
    return;
  }
  await loadTeam();
  if (state.reopenCreate) {
    state.reopenCreate = false;
    $("create-dialog").showModal();
  }
}

async function loadTeam() {
  const team = state.me.teams.find((t) => t.id === state.teamId);
  $("team-name").textContent = team ? team.name : state.teamId;
  const base = `/api/billstack/teams/${encodeURIComponent(state.teamId)}`;
  const [projects, policy, keys] = await Promise.all([
    api("GET", `${base}/projects`), api("GET", `${base}/policy`), api("GET", `${base}/api-keys`),
  ]);
  state.projects = projects.projects;
  state.policy = policy.policy;
  state.keys = keys.keys;
  renderPolicy();
  renderCreateChoices();
  renderKeys();
  await loadAudit(true);
}

function currentRole() {
  const team = state.me && state.me.teams.find((t) => t.id === state.teamId);
  return team ? team.role : null;
}

function renderPolicy() {
  const p = state.policy;
  show($("policy-form"), currentRole() === "owner");
  show($("policy-reset"), p.source === "team");
  $("policy-source").textContent = p.source === "team" ? "Uploaded by this team" : "Deployment default";
  $("policy-name").textContent = p.name;
  $("policy-version").textContent = p.version;
  $("policy-sha").textContent = p.sha256;
  const failed = p.status === "failed";
  $("policy-failed").textContent = failed
    ? `This team's policy did not load (${p.error}). Its API requests are refused (503 policy_error) until an owner uploads a working policy or resets to the deployment default.`
    : "";
  show($("policy-failed"), failed);
}

function renderCreateChoices() {
  // Keep what the person already chose when the lists are refreshed.
  const select = $("key-project");
  const chosenProject = select.value;
  select.replaceChildren(new Option("All projects", ""), ...state.projects.map((p) => new Option(`${p.name} (${p.id})`, p.id)));
  if (state.projects.some((p) => p.id === chosenProject)) select.value = chosenProject;
  const box = $("key-scopes");
  const chosen = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(...state.policy.scopes.map((scope, i) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.name = "scopes";
    input.value = scope.name;
    input.id = `scope-${i}`;
    input.checked = chosen.has(scope.name);
    const text = document.createElement("span");
    const name = document.createElement("span");
    name.className = "name mono";
    name.textContent = scope.name;
    const desc = document.createElement("span");
    desc.className = "desc";
    desc.textContent = scope.description;
    text.append(name, desc);
    label.append(input, text);
    return label;
  }));
}

function projectName(id) {
  if (!id) return "All projects";
  const p = state.projects.find((x) => x.id === id);
  return p ? p.name : id;
}

function cell(label, content, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

function renderKeys() {
  const body = $("keys-body");
  body.replaceChildren(...state.keys.map((key) => {
    const tr = document.createElement("tr");
    tr.dataset.keyId = key.id;
    const scopes = document.createElement("span");
    if (key.scopes.length === 0) scopes.textContent = "Full access";
    for (const s of key.scopes) {
      const tag = document.createElement("span");
      tag.className = "tag mono";
      tag.textContent = s;
      scopes.append(tag);
    }
    const prefix = document.createElement("span");
    prefix.className = "mono";
    prefix.textContent = `${key.prefix}…`;
    const name = document.createElement("span");
    name.textContent = key.name;
    if (key.rateLimit) {
      const limit = document.createElement("span");
      limit.className = "tag rate-limit";
      limit.textContent = rateLimitText(key.rateLimit);
      limit.title = "Rate limit";
      name.append(document.createElement("br"), limit);
    }
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "link revoke";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke ${key.name}`);
    revoke.addEventListener("click", () => askRevoke(key));
    const rotate = document.createElement("button");
    rotate.type = "button";
    rotate.className = "link rotate";
    rotate.textContent = "Rotate";
    rotate.setAttribute("aria-label", `Rotate ${key.name}`);
    rotate.addEventListener("click", () => askRotate(key));
    const actions = document.createElement("span");
    actions.append(rotate, revoke);
    tr.append(
      cell("Name", name, "key-name"), cell("Key", prefix), cell("Project", projectName(key.projectId)),
      cell("Scopes", scopes), cell("Expires", key.expiresAt ? formatTime(key.expiresAt) : "Never"),
      cell("Created", formatTime(key.createdAt)), cell("Last used", key.lastUsedAt ? formatTime(key.lastUsedAt) : "Never"),
      cell("Requests, 14 days", usageChart(key.id), "usage"),
      cell("", actions, "row-actions"),
    );
    return tr;
  }));
  show($("keys-table"), state.keys.length > 0);
  show($("keys-empty"), state.keys.length === 0);
  loadUsage();
}

const USAGE_DAYS = 14;
const SVG = "http://www.w3.org/2000/svg";

// A small bar chart of a key's requests per day (allowed in blue, refused stacked in red),
// filled in when its usage arrives.
function usageChart(keyId) {
  const figure = document.createElement("span");
  figure.className = "usage-chart";
  figure.dataset.usageFor = keyId;
  figure.setAttribute("role", "img");
  figure.setAttribute("aria-label", "Loading usage");
  return figure;
}

function drawUsage(figure, usage) {
  const days = usage.days;
  const max = Math.max(1, ...days.map((d) => d.requests));
  const width = 4 * days.length, height = 24;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width * 2));
  svg.setAttribute("height", String(height));
  days.forEach((d, i) => {
    const bar = (value, base, cls) => {
      if (!value) return;
      const rect = document.createElementNS(SVG, "rect");
      const h = Math.max(1, (value / max) * height);
      rect.setAttribute("x", String(i * 4));
      rect.setAttribute("y", String(height - base - h));
      rect.setAttribute("width", "3");
      rect.setAttribute("height", String(h));
      rect.setAttribute("class", cls);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${d.date}: ${d.allowed} allowed, ${d.denied} refused`;
      rect.append(title);
      svg.append(rect);
    };
    const allowedHeight = d.allowed ? Math.max(1, (d.allowed / max) * height) : 0;
    bar(d.allowed, 0, "allowed");
    bar(d.denied, allowedHeight, "denied");
  });
  const total = days.reduce((sum, d) => sum + d.requests, 0);
  const label = document.createElement("span");
  label.className = "usage-total";
  label.textContent = String(total);
  figure.replaceChildren(svg, label);
  figure.dataset.total = String(total);
  figure.setAttribute("aria-label", `${total} requests in the last ${days.length} days`);
}

async function loadUsage() {
  const base = `/api/billstack/teams/${encodeURIComponent(state.teamId)}/api-keys`;
  await Promise.all(state.keys.map(async (key) => {
    try {
      const usage = await api("GET", `${base}/${encodeURIComponent(key.id)}/usage?days=${USAGE_DAYS}`);
      const figure = document.querySelector(`[data-usage-for="${CSS.escape(key.id)}"]`);
      if (figure) drawUsage(figure, usage);
    } catch (e) {
      if (e instanceof Unauthenticated) return;
      const figure = document.querySelector(`[data-usage-for="${CSS.escape(key.id)}"]`);
      if (figure) { figure.textContent = "—"; figure.setAttribute("aria-label", `Usage unavailable: ${e.message}`); }
    }
  }));
}

function keysChanged() {
  renderKeys();
  refreshAudit();
}

const AUDIT_ACTIONS = {
  "key.created": "Key created", "key.rotated": "Key rotated", "key.revoked": "Key revoked",
  "policy.uploaded": "Policy uploaded", "policy.reset": "Policy reset to default",
  "auth.signed_in": "Signed in", "auth.sign_in_failed": "Failed sign-in",
  "team.created": "Team created", "project.created": "Project created",
  "user.created": "Account created", "member.set": "Membership changed",
};

function auditObject(event) {
  const key = state.keys.find((k) => k.id === event.target);
  return key ? `${key.name} (${event.target})` : event.target;
}

function renderAudit() {
  $("audit-body").replaceChildren(...state.audit.map((event) => {
    const tr = document.createElement("tr");
    tr.dataset.action = event.action;
    const who = event.actor.email || (event.actor.id === "anonymous" ? "Unknown (wrong password)" : event.actor.id);
    tr.append(
      cell("When", formatTime(event.at)), cell("What", AUDIT_ACTIONS[event.action] || event.action, "audit-action"),
      cell("Who", who), cell("Object", auditObject(event), "mono wrap"), cell("From", event.source || "command line", "mono"),
    );
    return tr;
  }));
  show($("audit-table"), state.audit.length > 0);
  show($("audit-empty"), state.audit.length === 0);
  show($("audit-more"), Boolean(state.auditCursor));
}

// Owners see the team's audit log; `fresh` starts again from the newest events.
async function loadAudit(fresh) {
  const owner = currentRole() === "owner";
  show($("audit-section"), owner);
  if (!owner) return;
  setError($("audit-error"), "");
  let path = `/api/billstack/teams/${encodeURIComponent(state.teamId)}/audit-log?limit=25`;
  if (!fresh && state.auditCursor) path += `&cursor=${encodeURIComponent(state.auditCursor)}`;
  try {
    const page = await api("GET", path);
    state.audit = fresh ? page.events : state.audit.concat(page.events);
    state.auditCursor = page.nextCursor;
    renderAudit();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("audit-error"), e.message);
  }
}

function refreshAudit() {
  loadAudit(true);
}

const FIELD_ERRORS = { name: "key-name-error", projectId: "key-project-error", scopes: "key-scopes-error", expiresAt: "key-expires-error", rateLimit: "key-rate-error" };
const WINDOW_NAMES = { 1: "second", 60: "minute", 3600: "hour", 86400: "day" };

function rateLimitText(rateLimit) {
  const per = WINDOW_NAMES[rateLimit.windowSeconds] || `${rateLimit.windowSeconds} s`;
  return `${rateLimit.limit.toLocaleString()} / ${per}`;
}

function clearCreateErrors() {
  for (const id of Object.values(FIELD_ERRORS)) setError($(id), "");
  setError($("create-error"), "");
}

function openCreate() {
  clearCreateErrors();
  $("create-dialog").showModal();
  $("key-name").focus();
}

function resetCreate() {
  $("create-form").reset();
  clearCreateErrors();
}

async function submitCreate(event) {
  event.preventDefault();
  clearCreateErrors();
  const name = $("key-name").value.trim();
  if (!name) {
    setError($("key-name-error"), "Give the key a name, such as “production server”.");
    $("key-name").focus();
    return;
  }
  const body = { name };
  if ($("key-project").value) body.projectId = $("key-project").value;
  const scopes = [...$("key-scopes").querySelectorAll("input:checked")].map((i) => i.value);
  if (scopes.length) body.scopes = scopes;
  if ($("key-expires").value) body.expiresAt = `${$("key-expires").value}T23:59:59Z`;
  const rate = $("key-rate-limit").value.trim();
  if (rate) {
    const limit = Number(rate);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000000000) {
      setError($("key-rate-error"), "Enter a whole number of requests from 1 to 1,000,000,000, or leave it empty.");
      $("key-rate-limit").focus();
      return;
    }
    body.rateLimit = { limit, windowSeconds: Number($("key-rate-window").value) };
  }
  $("create-submit").disabled = true;
  try {
    const created = await api("POST", `/api/billstack/teams/${encodeURIComponent(state.teamId)}/api-keys`, body);
    $("create-dialog").close();
    resetCreate();
    showSecret(created.rawKey);
    state.keys.push({ ...created.key, lastUsedAt: null });
    keysChanged();
  } catch (e) {
    if (e instanceof Unauthenticated) return;
    const fieldError = e.field && FIELD_ERRORS[e.field];
    setError(fieldError ? $(fieldError) : $("create-error"), e.message);
  } finally {
    $("create-submit").disabled = false;
  }
}

function showSecret(raw) {
  $("secret-value").value = raw;
  $("secret-copied").textContent = "";
  $("secret-dialog").showModal();
  $("secret-value").select();
  $("secret-copy").focus();
}

async function copySecret() {
  const input = $("secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("secret-copied").textContent = "Copied to the clipboard.";
}

function closeSecret() {
  // The raw key leaves the page and memory with the dialog.
  $("secret-value").value = "";
  $("secret-copied").textContent = "";
  if ($("secret-dialog").open) $("secret-dialog").close();
  $("open-create").focus();
}

function askRotate(key) {
  state.rotating = key;
  $("rotate-name").textContent = key.name;
  $("rotate-prefix").textContent = key.prefix;
  $("rotate-grace").value = "86400";
  setError($("rotate-error"), "");
  $("rotate-dialog").showModal();
  $("rotate-grace").focus();
}

async function confirmRotate() {
  const key = state.rotating;
  if (!key) return;
  $("rotate-confirm").disabled = true;
  const base = `/api/billstack/teams/${encodeURIComponent(state.teamId)}/api-keys`;
  try {
    const rotated = await api("POST", `${base}/${encodeURIComponent(key.id)}/rotate`,
      { gracePeriodSeconds: Number($("rotate-grace").value) });
    $("rotate-dialog").close();
    state.rotating = null;
    showSecret(rotated.rawKey);
    // The old key's new end (or its absence) comes from the server.
    state.keys = (await api("GET", base)).keys;
    keysChanged();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("rotate-error"), e.message);
  } finally {
    $("rotate-confirm").disabled = false;
  }
}

function askRevoke(key) {
  state.revoking = key;
  $("revoke-name").textContent = key.name;
  $("revoke-prefix").textContent = key.prefix;
  setError($("revoke-error"), "");
  $("revoke-dialog").showModal();
  $("revoke-cancel").focus();
}

async function confirmRevoke() {
  const key = state.revoking;
  if (!key) return;
  $("revoke-confirm").disabled = true;
  try {
    await api("DELETE", `/api/billstack/teams/${encodeURIComponent(state.teamId)}/api-keys/${encodeURIComponent(key.id)}`);
    state.keys = state.keys.filter((k) => k.id !== key.id);
    keysChanged();
    $("revoke-dialog").close();
    $("open-create").focus();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("revoke-error"), e.message);
  } finally {
    $("revoke-confirm").disabled = false;
    state.revoking = null;
  }
}

async function policyChanged(result, message) {
  state.policy = result.policy;
  refreshAudit();
  renderPolicy();
  renderCreateChoices();
  const orphans = result.keysWithUndefinedScopes || [];
  const note = orphans.length
    ? `${message} ${orphans.length} key(s) hold scopes this policy does not define: ${orphans.map((k) => `${k.name} (${k.undefinedScopes.join(", ")})`).join("; ")}.`
    : message;
  $("policy-result").textContent = note;
  show($("policy-result"), true);
}

async function uploadPolicy(event) {
  event.preventDefault();
  setError($("policy-error"), "");
  show($("policy-result"), false);
  const file = $("policy-file").files[0];
  if (!file) {
    setError($("policy-error"), "Choose a .wasm file first.");
    return;
  }
  $("policy-upload").disabled = true;
  try {
    const bytes = await file.arrayBuffer();
    const result = await api("PUT", `/api/billstack/teams/${encodeURIComponent(state.teamId)}/policy`, bytes, "application/wasm");
    $("policy-file").value = "";
    await policyChanged(result, `Policy ${result.policy.name} ${result.policy.version} is now active for this team.`);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("policy-error"), e.message);
  } finally {
    $("policy-upload").disabled = false;
  }
}

async function resetPolicy() {
  setError($("policy-error"), "");
  try {
    const result = await api("DELETE", `/api/billstack/teams/${encodeURIComponent(state.teamId)}/policy`);
    await policyChanged(result, "Back to the deployment default policy.");
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("policy-error"), e.message);
  }
}

async function signOut() {
  try { await api("POST", "/api/auth/logout"); } catch { /* signed out either way */ }
  state.me = null;
  resetCreate();
  showSignIn("");
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("open-create").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("create-cancel").addEventListener("click", () => { $("create-dialog").close(); resetCreate(); });
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", closeSecret);
  $("secret-dialog").addEventListener("close", closeSecret);
  $("rotate-cancel").addEventListener("click", () => { $("rotate-dialog").close(); state.rotating = null; });
  $("rotate-confirm").addEventListener("click", confirmRotate);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-confirm").addEventListener("click", confirmRevoke);
  $("policy-form").addEventListener("submit", uploadPolicy);
  $("policy-reset").addEventListener("click", resetPolicy);
  $("audit-more").addEventListener("click", () => loadAudit(false));
  $("team-switcher").addEventListener("change", async (e) => {
    state.teamId = e.target.value;
    sessionStorage.setItem("billstack-team", state.teamId);
    resetCreate();
    try { await loadTeam(); } catch (err) { if (!(err instanceof Unauthenticated)) setError($("keys-error"), err.message); }
  });
  try {
    const me = await api("GET", "/api/auth/me");
    await enter(me);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) showSignIn(e.message);
  }
}

start();
