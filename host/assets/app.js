// BillStack Keys dashboard: Team Settings › API Keys, Members, Projects, Policy, Audit log.
// Plain JavaScript, no build step; every request goes to this server's JSON API with the
// session cookie. Pages are chosen by the URL's hash (#keys, #key/ID, #members, #projects,
// #policy, #audit, #account; #invite=TOKEN for an invitation link).
"use strict";

const $ = (id) => document.getElementById(id);

const PAGE_SIZE = 100;
const NAME_MAX = 100;
const USAGE_DAYS = 14;
const DETAIL_USAGE_DAYS = 30;
const DAY_MS = 86400000;
const PAGES = ["keys", "key", "members", "projects", "policy", "audit", "account"];
const OWNER_PAGES = new Set(["members", "projects", "audit"]);
const PAGE_TITLES = { keys: "API Keys", key: "API Keys", members: "Members", projects: "Projects", policy: "Policy", audit: "Audit log", account: "Your password" };

const state = {
  me: null, teamId: null, projects: [], policy: null,
  keys: [], keysCursors: [null], keysNext: null,
  key: null, members: [], audit: [], auditCursor: null,
  rotating: null, revoking: null, confirming: null, renaming: null,
  reopenCreate: false, secretCopied: false, returnFocus: null, page: "keys",
};

class Unauthenticated extends Error {}

// ---------------------------------------------------------------------------------------------
// Talking to the API

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
  const signingIn = path.startsWith("/api/auth/login") || path.startsWith("/api/auth/invitations")
    || path.startsWith("/api/auth/password");
  if (response.status === 401 && !signingIn) {
    // The session ended: back to sign-in, keeping whatever the person typed.
    showSignIn(state.me ? "Your session has ended. Sign in again to continue." : "");
    throw new Unauthenticated();
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const error = new Error(humanize((data && data.error && data.error.message) || `The request failed (${response.status}).`));
    error.field = data && data.error && data.error.field;
    error.code = data && data.error && data.error.code;
    error.status = response.status;
    throw error;
  }
  return data;
}

// The API names fields as programs do; people read these messages.
const FIELD_WORDS = {
  expiresAt: "the expiration date", expires_at: "the expiration date", rateLimit: "the rate limit",
  projectId: "the project", project_id: "the project", gracePeriodSeconds: "the grace period",
  currentPassword: "the current password", newPassword: "the new password", windowSeconds: "the window",
  scopes: "scopes", name: "the name", email: "the email", role: "the role",
};

function humanize(message) {
  let text = String(message);
  text = text.replace(/\b(expiresAt|expires_at|rateLimit|projectId|project_id|gracePeriodSeconds|currentPassword|newPassword|windowSeconds)\b/g, (w) => FIELD_WORDS[w]);
  text = text.replace(/an RFC 3339 time such as [^,]+/, "a date");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

const teamPath = (rest) => `/api/billstack/teams/${encodeURIComponent(state.teamId)}${rest || ""}`;

// ---------------------------------------------------------------------------------------------
// Small helpers

function show(el, visible) { el.hidden = !visible; }

function setError(el, message) {
  el.textContent = message || "";
  show(el, Boolean(message));
}

// A field's error: shown under it, the field marked invalid, and said aloud.
function setFieldError(input, errorEl, message) {
  setError(errorEl, message);
  if (input) {
    if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  }
  if (message) announce(message);
}

function clearFieldErrors(pairs) {
  for (const [input, error] of pairs) setFieldError(input ? $(input) : null, $(error), "");
}

function announce(message) {
  const el = $("announcer");
  el.textContent = "";
  // A change the screen reader notices even when the same words come twice.
  setTimeout(() => { el.textContent = message; }, 50);
}

function plural(n, one, many) {
  return `${Number(n).toLocaleString()} ${n === 1 ? one : (many || `${one}s`)}`;
}

function formatTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function timeZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone"; } catch { return "your time zone"; }
}

function localDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// The end of a chosen day (YYYY-MM-DD) in the person's own time zone, as RFC 3339.
function endOfLocalDay(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d, 23, 59, 59).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function el(tag, options, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(options || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function cell(label, content, className) {
  const td = el("td", { class: className });
  td.dataset.label = label;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

const STATUS_WORDS = { active: "Active", expiring: "Expiring", expired: "Expired", disabled: "Disabled" };

function statusBadge(status) {
  return el("span", { class: `badge ${status}`, text: STATUS_WORDS[status] || status });
}

const WINDOW_NAMES = { 1: "second", 60: "minute", 3600: "hour", 86400: "day" };

function rateLimitText(rateLimit) {
  const per = WINDOW_NAMES[rateLimit.windowSeconds] || `${rateLimit.windowSeconds} s`;
  return `${rateLimit.limit.toLocaleString()} / ${per}`;
}

function projectName(id) {
  if (!id) return "All projects";
  const p = state.projects.find((x) => x.id === id);
  return p ? p.name : id;
}

function currentRole() {
  const team = state.me && state.me.teams.find((t) => t.id === state.teamId);
  return team ? team.role : null;
}

// A key's name and prefix, so that two keys with the same name are told apart.
const keyLabel = (key) => `${key.name} (${key.prefix}…)`;

// Dialogs return the focus to what opened them.
function openDialog(dialog, focus) {
  state.returnFocus = document.activeElement && document.activeElement !== document.body ? document.activeElement : null;
  dialog.showModal();
  if (focus) focus.focus();
}

function restoreFocus(fallback) {
  const target = state.returnFocus;
  state.returnFocus = null;
  if (target && target.isConnected && !target.closest("[hidden]")) target.focus();
  else if (fallback) fallback.focus();
}

// ---------------------------------------------------------------------------------------------
// Signing in, invitations, the team

function showSignIn(reason) {
  state.reopenCreate = $("create-dialog").open;
  for (const d of document.querySelectorAll("dialog")) if (d.open) d.close();
  show($("app-view"), false);
  show($("account"), false);
  show($("invite-view"), false);
  show($("sign-in-view"), true);
  setError($("sign-in-reason"), reason || "");
  $("email").focus();
}

async function signIn(event) {
  event.preventDefault();
  setError($("sign-in-error"), "");
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    setError($("sign-in-error"), "Enter your email and password.");
    (email ? $("password") : $("email")).focus();
    return;
  }
  $("sign-in-submit").disabled = true;
  try {
    const me = await api("POST", "/api/auth/login", { email, password });
    $("password").value = "";
    await enter(me, true);
  } catch (e) {
    setError($("sign-in-error"), e.status === 401 ? "Wrong email or password." : e.message);
  } finally {
    $("sign-in-submit").disabled = false;
  }
}

function inviteToken() {
  const m = /^#invite=([A-Za-z0-9_-]+)$/.exec(location.hash);
  return m ? m[1] : null;
}

function showInvite() {
  show($("sign-in-view"), false);
  show($("app-view"), false);
  show($("account"), false);
  show($("invite-view"), true);
  $("invite-title").focus();
}

async function acceptInvite(event) {
  event.preventDefault();
  const password = $("invite-password").value;
  const again = $("invite-password-again").value;
  setFieldError($("invite-password"), $("invite-error"), "");
  if (password.length < 12) {
    setFieldError($("invite-password"), $("invite-error"), "Choose a password of at least 12 characters.");
    $("invite-password").focus();
    return;
  }
  if (password !== again) {
    setFieldError($("invite-password-again"), $("invite-error"), "The two passwords differ. Type the same password twice.");
    $("invite-password-again").focus();
    return;
  }
  $("invite-submit").disabled = true;
  try {
    const me = await api("POST", "/api/auth/invitations/accept", { token: inviteToken(), password });
    $("invite-password").value = "";
    $("invite-password-again").value = "";
    // The token is spent: take it out of the address bar and the history.
    history.replaceState(null, "", "#keys");
    await enter(me, true);
  } catch (e) {
    const message = e.code === "invalid_invitation"
      ? "This invitation link has expired, was used already, or is not valid. Ask a team owner for a new one."
      : e.message;
    setFieldError($("invite-password"), $("invite-error"), message);
  } finally {
    $("invite-submit").disabled = false;
  }
}

async function enter(me, focusPage) {
  state.me = me;
  show($("sign-in-view"), false);
  show($("invite-view"), false);
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
    renderRole();
    setError($("team-error"), "Your account is not a member of any team. Ask a team owner to add you.");
    return;
  }
  await loadTeam();
  await route(focusPage);
  if (state.reopenCreate && state.page === "keys") {
    state.reopenCreate = false;
    $("create-dialog").showModal();
  }
}

function renderRole() {
  const role = currentRole();
  $("role-badge").textContent = role === "owner" ? "Owner" : role === "member" ? "Member" : "";
  $("role-badge").title = role ? `Your role in this team: ${role}` : "";
  show($("role-badge"), Boolean(role));
  for (const a of document.querySelectorAll(".tabs a[data-owner-only]")) show(a, role === "owner");
}

async function loadTeam() {
  const team = state.me.teams.find((t) => t.id === state.teamId);
  $("team-name").textContent = team ? team.name : state.teamId;
  renderRole();
  setError($("team-error"), "");
  const [projects, policy] = await Promise.all([api("GET", teamPath("/projects")), api("GET", teamPath("/policy"))]);
  state.projects = projects.projects;
  state.policy = policy.policy;
  state.keysCursors = [null];
  renderProjectChoices();
  renderPolicy();
  renderScopeChoices($("key-scopes"), []);
}

// Re-reads the account's teams and roles (after a role change of one's own, say).
async function refreshMe() {
  state.me = await api("GET", "/api/auth/me");
  if (!state.me.teams.some((t) => t.id === state.teamId)) {
    await enter(state.me, true);
    return;
  }
  renderRole();
}

// ---------------------------------------------------------------------------------------------
// Pages

async function route(focusPage) {
  if (!state.me) return;
  const hash = location.hash.replace(/^#/, "");
  let [page, arg] = hash.split("/");
  if (!PAGES.includes(page) || (page === "key" && !arg)) page = "keys";
  if (OWNER_PAGES.has(page) && currentRole() !== "owner") page = "keys";
  state.page = page;
  for (const p of PAGES) show($(`page-${p}`), p === page);
  $("crumb-page").textContent = PAGE_TITLES[page];
  for (const a of document.querySelectorAll(".tabs a")) {
    if (a.dataset.page === page || (page === "key" && a.dataset.page === "keys")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${PAGE_TITLES[page]} · BillStack`;
  try {
    if (page === "keys") await loadKeys();
    else if (page === "key") await loadKey(decodeURIComponent(arg));
    else if (page === "members") await loadMembers();
    else if (page === "projects") renderProjects();
    else if (page === "policy") renderPolicy();
    else if (page === "audit") await loadAudit(true);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("team-error"), e.message);
  }
  if (focusPage) {
    const heading = $(`page-${page}`).querySelector("h1");
    if (heading) heading.focus();
  }
}

// ---------------------------------------------------------------------------------------------
// API Keys: the list

function keysQuery() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = state.keysCursors[state.keysCursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const q = $("keys-search").value.trim();
  if (q) params.set("q", q);
  if ($("keys-status").value) params.set("status", $("keys-status").value);
  if ($("keys-project").value) params.set("projectId", $("keys-project").value);
  return params.toString();
}

function filtering() {
  return Boolean($("keys-search").value.trim() || $("keys-status").value || $("keys-project").value);
}

async function loadKeys() {
  setError($("keys-error"), "");
  try {
    const page = await api("GET", teamPath(`/api-keys?${keysQuery()}`));
    state.keys = page.keys;
    state.keysNext = page.nextCursor || null;
    renderKeys();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("keys-error"), e.message);
  }
}

function renderKeys() {
  const body = $("keys-body");
  body.replaceChildren(...state.keys.map(keyRow));
  const first = state.keysCursors.length === 1;
  const none = state.keys.length === 0;
  show($("keys-table"), !none);
  show($("keys-empty"), none && first && !filtering() && !state.keysNext);
  show($("keys-none-match"), none && (filtering() || !first || Boolean(state.keysNext)));
  // A search of a large team reads a bounded number of keys per page: an empty page with more
  // to read says so, rather than "no match".
  $("keys-none-match").textContent = state.keysNext
    ? "No match among the keys searched so far. Next page searches further."
    : "No key matches. Change the search or the filters.";
  show($("keys-prev"), !first);
  show($("keys-next"), Boolean(state.keysNext));
  const pageNo = state.keysCursors.length;
  $("keys-page-info").textContent = (!first || state.keysNext) ? `Page ${pageNo}` : "";
  loadUsage();
}

function keyRow(key) {
  const tr = el("tr");
  tr.dataset.keyId = key.id;
  const scopes = el("span");
  if (key.scopes.length === 0) scopes.textContent = "Full access";
  for (const s of key.scopes) scopes.append(el("span", { class: "tag mono", text: s }));
  const open = el("button", { type: "button", class: "link open-key", title: key.name, onclick: () => { location.hash = `#key/${encodeURIComponent(key.id)}`; } },
    el("span", { class: "name-text", text: key.name }), el("span", { class: "visually-hidden", text: ` (${key.prefix}…)` }));
  const name = el("span", {}, open);
  if (key.rateLimit) {
    name.append(el("br"), el("span", { class: "tag rate-limit", title: "Rate limit", text: rateLimitText(key.rateLimit) }));
  }
  const status = el("span", {}, statusBadge(key.status));
  if (key.rotatedTo) {
    status.append(" ", el("a", { class: "badge rotated", href: `#key/${encodeURIComponent(key.rotatedTo)}`, text: "Rotated → new key",
      "aria-label": `Rotated: open the key that replaced ${keyLabel(key)}` }));
  }
  const actions = el("span");
  if (canRotate(key)) {
    actions.append(el("button", { type: "button", class: "link rotate", text: "Rotate", "aria-label": `Rotate ${keyLabel(key)}`, onclick: () => askRotate(key) }));
  }
  actions.append(el("button", { type: "button", class: "link revoke", text: "Revoke", "aria-label": `Revoke ${keyLabel(key)}`, onclick: () => askRevoke(key) }));
  tr.append(
    cell("Name", name, "key-name"), cell("Status", status), cell("Key", el("span", { class: "mono", text: `${key.prefix}…` })),
    cell("Project", projectName(key.projectId)), cell("Scopes", scopes),
    cell("Expires", key.expiresAt ? formatTime(key.expiresAt) : "Never"),
    cell("Last used", key.lastUsedAt ? formatTime(key.lastUsedAt) : "Never"),
    cell("Requests, 14 days", usageChart(key.id), "usage"),
    cell("", actions, "row-actions"),
  );
  return tr;
}

// Rotation needs a key that still works and has not been replaced already.
function canRotate(key) {
  return key.status !== "expired" && !key.rotatedTo;
}

const SVG = "http://www.w3.org/2000/svg";

// A small bar chart of a key's requests per day (allowed in blue, refused stacked in red),
// filled in when its usage arrives.
function usageChart(keyId) {
  const figure = el("span", { class: "usage-chart", role: "img", "aria-label": "Loading usage" });
  figure.dataset.usageFor = keyId;
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
  svg.setAttribute("aria-hidden", "true");
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
  figure.replaceChildren(svg, el("span", { class: "usage-total", text: String(total) }));
  figure.dataset.total = String(total);
  figure.setAttribute("aria-label", `${plural(total, "request")} in the last ${plural(days.length, "day")}`);
}

async function loadUsage() {
  const keys = state.keys;
  // A few at a time, so a page of 100 keys does not queue 100 requests at once.
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++];
      const figure = document.querySelector(`[data-usage-for="${CSS.escape(key.id)}"]`);
      if (!figure) continue;
      try {
        const usage = await api("GET", teamPath(`/api-keys/${encodeURIComponent(key.id)}/usage?days=${USAGE_DAYS}`));
        drawUsage(figure, usage);
      } catch (e) {
        if (e instanceof Unauthenticated) return;
        figure.textContent = "—";
        figure.setAttribute("aria-label", `Usage unavailable: ${e.message}`);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

let searchTimer = null;

function filtersChanged() {
  // One load for the latest filters, not one per keystroke or choice.
  clearTimeout(searchTimer);
  state.keysCursors = [null];
  loadKeys();
}

// ---------------------------------------------------------------------------------------------
// API Keys: one key

async function loadKey(keyId) {
  setError($("key-error"), "");
  show($("edit-result"), false);
  const [one, usage] = await Promise.all([
    api("GET", teamPath(`/api-keys/${encodeURIComponent(keyId)}`)),
    api("GET", teamPath(`/api-keys/${encodeURIComponent(keyId)}/usage?days=${DETAIL_USAGE_DAYS}`)),
  ]).catch((e) => {
    if (e.status === 404) {
      setError($("key-error"), "This key does not exist any more: it was revoked, or it ended more than 30 days ago.");
      $("key-title").textContent = "Key not found";
      state.key = null;
      renderKey(null, null);
      return [null, null];
    }
    throw e;
  });
  if (!one) return;
  state.key = one.key;
  renderKey(one.key, usage);
}

function renderKey(key, usage) {
  for (const id of ["key-toggle", "key-rotate", "key-revoke", "edit-save"]) $(id).disabled = !key;
  if (!key) {
    $("key-usage-body").replaceChildren();
    show($("key-status"), false);
    return;
  }
  show($("key-status"), true);
  $("key-title").textContent = key.name;
  $("key-status").className = `badge ${key.status}`;
  $("key-status").textContent = STATUS_WORDS[key.status] || key.status;
  $("key-prefix").textContent = `${key.prefix}…`;
  $("key-project").textContent = projectName(key.projectId);
  $("key-created").textContent = formatTime(key.createdAt);
  $("key-created-by").textContent = !key.createdBy ? "Not recorded"
    : key.createdBy.cli ? "The operator (command line)" : (key.createdBy.email || key.createdBy.userId);
  $("key-last-used").textContent = key.lastUsedAt ? formatTime(key.lastUsedAt) : "Never";
  $("key-expires-at").textContent = key.expiresAt ? formatTime(key.expiresAt) : "Never";
  $("key-rate").textContent = key.rateLimit ? rateLimitText(key.rateLimit) : "No limit";
  const rotatedTo = $("key-rotated-to");
  rotatedTo.replaceChildren(key.rotatedTo
    ? el("a", { href: `#key/${encodeURIComponent(key.rotatedTo)}`, class: "mono", text: key.rotatedTo })
    : document.createTextNode("—"));
  const disabled = key.status === "disabled";
  $("key-toggle").textContent = disabled ? "Enable" : "Disable";
  $("key-toggle").setAttribute("aria-label", `${disabled ? "Enable" : "Disable"} ${keyLabel(key)}`);
  show($("key-rotate"), canRotate(key));
  $("key-rotate").setAttribute("aria-label", `Rotate ${keyLabel(key)}`);
  $("key-revoke").setAttribute("aria-label", `Revoke ${keyLabel(key)}`);
  // The edit form starts from the key as it is.
  $("edit-name").value = key.name;
  updateCounter($("edit-name"), $("edit-name-count"));
  renderScopeChoices($("edit-scopes"), key.scopes, "edit-scope");
  $("edit-expiry").value = "keep";
  $("edit-expiry").disabled = Boolean(key.rotatedTo);
  $("edit-expiry").title = key.rotatedTo ? "A rotated key ends with its grace period." : "";
  expiryChoiceChanged("edit");
  $("edit-rate-limit").value = key.rateLimit ? String(key.rateLimit.limit) : "";
  $("edit-rate-window").value = key.rateLimit ? String(key.rateLimit.windowSeconds) : "60";
  clearFieldErrors([["edit-name", "edit-name-error"], [null, "edit-scopes-error"], ["edit-expires", "edit-expires-error"], ["edit-rate-limit", "edit-rate-error"]]);
  if (usage) renderKeyUsage(usage);
}

const REFUSAL_WORDS = {
  insufficient_scope: "missing scope", rate_limited: "over its rate limit", team_mismatch: "another team's path",
  project_mismatch: "another project", unknown_route: "unknown route", policy_error: "policy error",
  expired_key: "expired", disabled_key: "disabled", invalid_key: "invalid",
};

function renderKeyUsage(usage) {
  const days = usage.days.filter((d) => d.requests > 0).reverse();
  $("key-usage-body").replaceChildren(...days.map((d) => {
    const why = Object.entries(d.refused || {}).map(([reason, n]) => `${REFUSAL_WORDS[reason] || reason}: ${n.toLocaleString()}`).join(", ");
    return el("tr", {}, cell("Day", d.date), cell("Allowed", d.allowed.toLocaleString()), cell("Refused", d.denied.toLocaleString()),
      cell("Why refused", why || (d.denied ? "not recorded" : "—"), "refusals"));
  }));
  show($("key-usage-table"), days.length > 0);
  show($("key-usage-empty"), days.length === 0);
}

async function toggleKey() {
  const key = state.key;
  if (!key) return;
  const enable = key.status === "disabled";
  $("key-toggle").disabled = true;
  try {
    const changed = await api("PATCH", teamPath(`/api-keys/${encodeURIComponent(key.id)}`), { enabled: enable });
    state.key = changed.key;
    renderKey(changed.key, null);
    announce(enable ? `${key.name} is enabled.` : `${key.name} is disabled: requests with it are refused.`);
    $("key-toggle").focus();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("key-error"), e.message);
  } finally {
    $("key-toggle").disabled = false;
  }
}

async function saveKey(event) {
  event.preventDefault();
  const key = state.key;
  if (!key) return;
  show($("edit-result"), false);
  clearFieldErrors([["edit-name", "edit-name-error"], [null, "edit-scopes-error"], ["edit-expires", "edit-expires-error"], ["edit-rate-limit", "edit-rate-error"]]);
  const changes = {};
  const name = $("edit-name").value.trim();
  if (!checkName($("edit-name"), $("edit-name-error"))) return;
  if (name !== key.name) changes.name = name;
  const scopes = [...$("edit-scopes").querySelectorAll("input:checked")].map((i) => i.value);
  const same = scopes.length === key.scopes.length && scopes.every((s) => key.scopes.includes(s));
  if (!same) changes.scopes = scopes;
  const expiry = readExpiry("edit");
  if (expiry === false) return;
  if (expiry !== undefined) changes.expiresAt = expiry;
  const rate = readRateLimit($("edit-rate-limit"), $("edit-rate-window"), $("edit-rate-error"));
  if (rate === false) return;
  const before = key.rateLimit ? `${key.rateLimit.limit}/${key.rateLimit.windowSeconds}` : "";
  const after = rate ? `${rate.limit}/${rate.windowSeconds}` : "";
  if (before !== after) changes.rateLimit = rate;
  if (Object.keys(changes).length === 0) {
    $("edit-result").textContent = "Nothing changed.";
    show($("edit-result"), true);
    return;
  }
  $("edit-save").disabled = true;
  try {
    const changed = await api("PATCH", teamPath(`/api-keys/${encodeURIComponent(key.id)}`), changes);
    state.key = changed.key;
    renderKey(changed.key, null);
    $("edit-result").textContent = "Saved. Every request from now on sees the change.";
    show($("edit-result"), true);
  } catch (e) {
    if (e instanceof Unauthenticated) return;
    const fields = { name: ["edit-name", "edit-name-error"], scopes: [null, "edit-scopes-error"], expiresAt: ["edit-expires", "edit-expires-error"], rateLimit: ["edit-rate-limit", "edit-rate-error"] };
    const pair = e.field && fields[e.field];
    if (pair) setFieldError(pair[0] ? $(pair[0]) : null, $(pair[1]), e.message);
    else setError($("key-error"), e.message);
  } finally {
    $("edit-save").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Create, rotate, revoke

function renderProjectChoices() {
  // Keep what the person already chose when the lists are refreshed.
  for (const [id, all] of [["key-project", "All projects"], ["keys-project", "Any project"]]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(new Option(all, ""), ...state.projects.map((p) => new Option(`${p.name} (${p.id})`, p.id)));
    if (state.projects.some((p) => p.id === chosen)) select.value = chosen;
  }
}

function renderScopeChoices(box, selected, idPrefix) {
  const chosen = new Set(box.id === "key-scopes" ? [...box.querySelectorAll("input:checked")].map((i) => i.value) : selected);
  box.replaceChildren(...state.policy.scopes.map((scope, i) => {
    const input = el("input", { type: "checkbox", name: "scopes", value: scope.name, id: `${idPrefix || "scope"}-${i}` });
    input.checked = chosen.has(scope.name);
    return el("label", {}, input, el("span", {}, el("span", { class: "name mono", text: scope.name }), el("span", { class: "desc", text: scope.description })));
  }));
}

function updateCounter(input, counter) {
  const n = [...input.value].length;
  const left = NAME_MAX - n;
  counter.textContent = left >= 0 ? `${plural(left, "character")} left` : `${plural(-left, "character")} over the limit of ${NAME_MAX}`;
  counter.classList.toggle("over", left < 0);
}

function checkName(input, errorEl) {
  const name = input.value.trim();
  if (!name) {
    setFieldError(input, errorEl, "Give the key a name, such as “production server”.");
    input.focus();
    return false;
  }
  if ([...name].length > NAME_MAX) {
    setFieldError(input, errorEl, `The name is ${[...name].length} characters long; shorten it to ${NAME_MAX} or fewer.`);
    input.focus();
    return false;
  }
  return true;
}

function expiryChoiceChanged(prefix) {
  const choice = $(`${prefix}-expiry`).value;
  show($(`${prefix}-custom-field`), choice === "custom");
  show($(`${prefix}-expiry-warning`), choice === "none");
  const input = $(`${prefix}-expires`);
  // The picker offers no day before today (the person's today, in their zone).
  input.min = localDate(new Date());
  $(`${prefix}-expires-help`).textContent = `The key works until the end of this day in your time zone (${timeZone()}).`;
}

// The chosen expiry: an RFC 3339 time, null for none, undefined for "keep", or false (with the
// error shown) when the choice is not valid.
function readExpiry(prefix) {
  const choice = $(`${prefix}-expiry`).value;
  if (choice === "keep") return undefined;
  if (choice === "none") return null;
  if (choice === "custom") {
    const input = $(`${prefix}-expires`);
    if (!input.value) {
      setFieldError(input, $(`${prefix}-expires-error`), "Choose the last day the key works.");
      input.focus();
      return false;
    }
    if (input.value < localDate(new Date())) {
      setFieldError(input, $(`${prefix}-expires-error`), "Choose today or a later day: the key cannot expire in the past.");
      input.focus();
      return false;
    }
    return endOfLocalDay(input.value);
  }
  return new Date(Date.now() + Number(choice) * DAY_MS).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function readRateLimit(input, windowSelect, errorEl) {
  const text = input.value.trim();
  if (!text) return null;
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000000000) {
    setFieldError(input, errorEl, "Enter a whole number of requests from 1 to 1,000,000,000, or leave it empty.");
    input.focus();
    return false;
  }
  return { limit, windowSeconds: Number(windowSelect.value) };
}

const CREATE_FIELDS = { name: ["key-name", "key-name-error"], projectId: ["key-project", "key-project-error"], scopes: [null, "key-scopes-error"], expiresAt: ["key-expires", "key-expires-error"], rateLimit: ["key-rate-limit", "key-rate-error"] };

function clearCreateErrors() {
  clearFieldErrors(Object.values(CREATE_FIELDS));
  setError($("create-error"), "");
}

function openCreate() {
  clearCreateErrors();
  expiryChoiceChanged("key");
  updateCounter($("key-name"), $("key-name-count"));
  openDialog($("create-dialog"), $("key-name"));
}

function resetCreate() {
  $("create-form").reset();
  clearCreateErrors();
  expiryChoiceChanged("key");
  updateCounter($("key-name"), $("key-name-count"));
}

function closeCreate() {
  $("create-dialog").close();
  resetCreate();
  restoreFocus($("open-create"));
}

async function submitCreate(event) {
  event.preventDefault();
  clearCreateErrors();
  if (!checkName($("key-name"), $("key-name-error"))) return;
  const body = { name: $("key-name").value.trim() };
  if ($("key-project").value) body.projectId = $("key-project").value;
  const scopes = [...$("key-scopes").querySelectorAll("input:checked")].map((i) => i.value);
  if (scopes.length) body.scopes = scopes;
  const expiry = readExpiry("key");
  if (expiry === false) return;
  if (expiry) body.expiresAt = expiry;
  const rate = readRateLimit($("key-rate-limit"), $("key-rate-window"), $("key-rate-error"));
  if (rate === false) return;
  if (rate) body.rateLimit = rate;
  $("create-submit").disabled = true;
  try {
    const created = await api("POST", teamPath("/api-keys"), body);
    $("create-dialog").close();
    resetCreate();
    showSecret(created.rawKey, "key");
    state.keysCursors = [null];
    if (state.page === "keys") await loadKeys(); else location.hash = "#keys";
  } catch (e) {
    if (e instanceof Unauthenticated) return;
    const pair = e.field && CREATE_FIELDS[e.field];
    if (pair) setFieldError(pair[0] ? $(pair[0]) : null, $(pair[1]), e.message);
    else setError($("create-error"), e.message);
  } finally {
    $("create-submit").disabled = false;
  }
}

// The one-time dialog, for a raw key or an invitation link.
function showSecret(value, kind) {
  const invite = kind === "invite";
  $("secret-title").textContent = invite ? "Invitation link" : "Your new API key";
  $("secret-notice").textContent = invite
    ? "Send this link to the person you invited. It works once, for 7 days, and will not be shown again."
    : "Store it now: it will not be shown again. BillStack keeps only a hash of it.";
  $("secret-label").textContent = invite ? "Invitation link" : "API key";
  $("secret-confirm-text").replaceChildren(el("strong", { text: invite ? "Have you copied the link?" : "Have you copied the key?" }),
    ` Once this closes, nobody can see it again.`);
  $("secret-discard").textContent = "Close without copying";
  $("secret-value").value = value;
  $("secret-copied").textContent = "";
  state.secretCopied = false;
  show($("secret-confirm"), false);
  show($("secret-actions"), true);
  if (!state.returnFocus) state.returnFocus = document.activeElement !== document.body ? document.activeElement : null;
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
  state.secretCopied = true;
  $("secret-copied").textContent = "Copied to the clipboard.";
}

// Done (or Escape) asks first unless the secret was copied.
function requestCloseSecret(event) {
  if (event) event.preventDefault();
  if (state.secretCopied) { closeSecret(); return; }
  show($("secret-confirm"), true);
  show($("secret-actions"), false);
  $("secret-back").focus();
}

function closeSecret() {
  // The secret leaves the page and memory with the dialog.
  $("secret-value").value = "";
  $("secret-copied").textContent = "";
  show($("secret-confirm"), false);
  show($("secret-actions"), true);
  if ($("secret-dialog").open) $("secret-dialog").close();
  restoreFocus(state.page === "keys" ? $("open-create") : $(`page-${state.page}`).querySelector("h1"));
}

function askRotate(key) {
  state.rotating = key;
  $("rotate-name").textContent = key.name;
  $("rotate-prefix").textContent = key.prefix;
  $("rotate-grace").value = "86400";
  setError($("rotate-error"), "");
  openDialog($("rotate-dialog"), $("rotate-grace"));
}

async function confirmRotate() {
  const key = state.rotating;
  if (!key) return;
  $("rotate-confirm").disabled = true;
  try {
    const rotated = await api("POST", teamPath(`/api-keys/${encodeURIComponent(key.id)}/rotate`),
      { gracePeriodSeconds: Number($("rotate-grace").value) });
    $("rotate-dialog").close();
    state.rotating = null;
    // The old key's new end (or its absence) comes from the server.
    if (state.page === "key") {
      state.returnFocus = null;
      location.hash = `#key/${encodeURIComponent(rotated.key.id)}`;
    } else {
      await loadKeys();
    }
    showSecret(rotated.rawKey, "key");
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
  openDialog($("revoke-dialog"), $("revoke-cancel"));
}

async function confirmRevoke() {
  const key = state.revoking;
  if (!key) return;
  $("revoke-confirm").disabled = true;
  try {
    await api("DELETE", teamPath(`/api-keys/${encodeURIComponent(key.id)}`));
    // Only a revocation that succeeded forgets the key: a failed one can be retried here.
    state.revoking = null;
    $("revoke-dialog").close();
    announce(`${key.name} is revoked.`);
    if (state.page === "key") {
      state.returnFocus = null;
      location.hash = "#keys";
    } else {
      const index = state.keys.findIndex((k) => k.id === key.id);
      state.keys = state.keys.filter((k) => k.id !== key.id);
      renderKeys();
      // Focus goes to the next row's name (or the Create button when none is left).
      const rows = [...document.querySelectorAll("#keys-body .open-key")];
      state.returnFocus = null;
      (rows[Math.min(index, rows.length - 1)] || $("open-create")).focus();
    }
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("revoke-error"), e.message);
  } finally {
    $("revoke-confirm").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Members

async function loadMembers() {
  setError($("members-error"), "");
  const data = await api("GET", teamPath("/members"));
  state.members = data.members;
  renderMembers();
}

function renderMembers() {
  const me = state.me.user.id;
  $("members-body").replaceChildren(...state.members.map((m) => {
    const role = el("select", { "aria-label": `Role of ${m.email}`, class: "member-role" },
      new Option("Member", "member"), new Option("Owner", "owner"));
    role.value = m.role;
    role.addEventListener("change", () => changeRole(m, role));
    const remove = el("button", { type: "button", class: "link remove-member", text: m.userId === me ? "Leave team" : "Remove",
      "aria-label": m.userId === me ? "Leave this team" : `Remove ${m.email}`, onclick: () => askRemoveMember(m) });
    const email = el("span", { class: "wrap", text: m.email });
    if (m.userId === me) email.append(" ", el("span", { class: "muted", text: "(you)" }));
    return el("tr", { "data-user-id": m.userId }, cell("Email", email), cell("Role", role), cell("Member since", formatTime(m.addedAt)), cell("", remove, "row-actions"));
  }));
}

async function changeRole(member, select) {
  setError($("members-error"), "");
  const role = select.value;
  select.disabled = true;
  try {
    await api("PATCH", teamPath(`/members/${encodeURIComponent(member.userId)}`), { role });
    member.role = role;
    announce(`${member.email} is now ${role === "owner" ? "an owner" : "a member"}.`);
    if (member.userId === state.me.user.id) {
      await refreshMe();
      if (currentRole() !== "owner") { location.hash = "#keys"; return; }
    }
  } catch (e) {
    if (e instanceof Unauthenticated) return;
    select.value = member.role;
    setError($("members-error"), e.code === "last_owner"
      ? "A team needs at least one owner: make someone else an owner first." : e.message);
  } finally {
    select.disabled = false;
  }
}

function askConfirm(text, okLabel, action) {
  state.confirming = action;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  setError($("confirm-error"), "");
  openDialog($("confirm-dialog"), $("confirm-cancel"));
}

async function runConfirm() {
  const action = state.confirming;
  if (!action) return;
  $("confirm-ok").disabled = true;
  try {
    await action();
    state.confirming = null;
    $("confirm-dialog").close();
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("confirm-error"), e.message);
  } finally {
    $("confirm-ok").disabled = false;
  }
}

function askRemoveMember(member) {
  const self = member.userId === state.me.user.id;
  askConfirm(self ? "Leave this team? You lose access to its keys at once." : `Remove ${member.email} from this team? Their access ends at once; the keys they created keep working.`,
    self ? "Leave team" : "Remove member", async () => {
      try {
        await api("DELETE", teamPath(`/members/${encodeURIComponent(member.userId)}`));
      } catch (e) {
        if (e.code === "last_owner") throw new Error("A team needs at least one owner: make someone else an owner first.");
        throw e;
      }
      announce(`${member.email} was removed.`);
      state.returnFocus = null;
      if (self) { await refreshMe(); return; }
      await loadMembers();
      $("member-email").focus();
    });
}

async function addMember(event) {
  event.preventDefault();
  const input = $("member-email");
  setFieldError(input, $("member-email-error"), "");
  show($("member-result"), false);
  const email = input.value.trim();
  if (!/^[^\s@]+@[^\s@]+$/.test(email)) {
    setFieldError(input, $("member-email-error"), "Enter the person's email address, such as ana@example.com.");
    input.focus();
    return;
  }
  $("member-add").disabled = true;
  try {
    const added = await api("POST", teamPath("/members"), { email, role: $("member-role").value });
    input.value = "";
    await loadMembers();
    if (added.inviteUrl) {
      $("member-result").textContent = `${email} was invited. They join when they open the link and choose a password.`;
      show($("member-result"), true);
      state.returnFocus = input;
      showSecret(added.inviteUrl, "invite");
    } else {
      $("member-result").textContent = `${email} joined the team as ${added.member.role === "owner" ? "an owner" : "a member"}.`;
      show($("member-result"), true);
    }
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setFieldError(input, $("member-email-error"), e.status === 409 ? `${email} is already a member of this team.` : e.message);
  } finally {
    $("member-add").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Projects

function renderProjects() {
  setError($("projects-error"), "");
  $("projects-body").replaceChildren(...state.projects.map((p) => el("tr", { "data-project-id": p.id },
    cell("Name", el("span", { class: "wrap", text: p.name })), cell("Id", p.id, "mono"),
    cell("", el("span", {},
      el("button", { type: "button", class: "link rename-project", text: "Rename", "aria-label": `Rename ${p.name} (${p.id})`, onclick: () => askRename(p) }),
      el("button", { type: "button", class: "link delete-project", text: "Delete", "aria-label": `Delete ${p.name} (${p.id})`, onclick: () => askDeleteProject(p) }),
    ), "row-actions"))));
}

async function reloadProjects() {
  state.projects = (await api("GET", teamPath("/projects"))).projects;
  renderProjectChoices();
  renderProjects();
}

async function createProject(event) {
  event.preventDefault();
  const input = $("project-name");
  setFieldError(input, $("project-name-error"), "");
  const name = input.value.trim();
  if (!name || [...name].length > NAME_MAX) {
    setFieldError(input, $("project-name-error"), name ? `Shorten the name to ${NAME_MAX} characters or fewer.` : "Give the project a name.");
    input.focus();
    return;
  }
  $("project-create").disabled = true;
  try {
    await api("POST", teamPath("/projects"), { name });
    input.value = "";
    await reloadProjects();
    announce(`Project ${name} created.`);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setFieldError(input, $("project-name-error"), e.message);
  } finally {
    $("project-create").disabled = false;
  }
}

function askRename(project) {
  state.renaming = project;
  $("rename-name").value = project.name;
  setFieldError($("rename-name"), $("rename-error"), "");
  openDialog($("rename-dialog"), $("rename-name"));
}

async function saveRename(event) {
  event.preventDefault();
  const project = state.renaming;
  if (!project) return;
  const name = $("rename-name").value.trim();
  if (!name || [...name].length > NAME_MAX) {
    setFieldError($("rename-name"), $("rename-error"), name ? `Shorten the name to ${NAME_MAX} characters or fewer.` : "Give the project a name.");
    return;
  }
  $("rename-save").disabled = true;
  try {
    await api("PATCH", teamPath(`/projects/${encodeURIComponent(project.id)}`), { name });
    state.renaming = null;
    $("rename-dialog").close();
    await reloadProjects();
    restoreFocus($("project-name"));
    announce(`Project renamed to ${name}.`);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setFieldError($("rename-name"), $("rename-error"), e.message);
  } finally {
    $("rename-save").disabled = false;
  }
}

function askDeleteProject(project) {
  askConfirm(`Delete the project ${project.name} (${project.id})? This cannot be undone.`, "Delete project", async () => {
    try {
      await api("DELETE", teamPath(`/projects/${encodeURIComponent(project.id)}`));
    } catch (e) {
      if (e.code === "project_in_use") throw new Error("Keys are still limited to this project. Revoke them first, then delete it.");
      throw e;
    }
    state.returnFocus = null;
    await reloadProjects();
    $("project-name").focus();
    announce(`Project ${project.name} deleted.`);
  });
}

// ---------------------------------------------------------------------------------------------
// Policy

function renderPolicy() {
  const p = state.policy;
  if (!p) return;
  show($("policy-form"), currentRole() === "owner");
  show($("policy-reset"), p.source === "team");
  $("policy-source").textContent = p.source === "team" ? "Uploaded by this team" : "Deployment default";
  $("policy-name").textContent = p.name;
  $("policy-version").textContent = p.version;
  $("policy-sha").textContent = p.sha256;
  $("policy-scopes").replaceChildren(...(p.scopes || []).map((s) => el("li", {}, el("span", { class: "mono", text: s.name }), ` — ${s.description}`)));
  const failed = p.status === "failed";
  $("policy-failed").textContent = failed
    ? `This team's policy did not load (${p.error}). Its API requests are refused (503 policy_error) until an owner uploads a working policy or resets to the deployment default.`
    : "";
  show($("policy-failed"), failed);
}

async function policyChanged(result, message) {
  state.policy = result.policy;
  renderPolicy();
  renderScopeChoices($("key-scopes"), []);
  const orphans = result.keysWithUndefinedScopes || [];
  const note = orphans.length
    ? `${message} ${plural(orphans.length, "key")} hold scopes this policy does not define: ${orphans.map((k) => `${k.name} (${k.undefinedScopes.join(", ")})`).join("; ")}.`
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
    const result = await api("PUT", teamPath("/policy"), bytes, "application/wasm");
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
    const result = await api("DELETE", teamPath("/policy"));
    await policyChanged(result, "Back to the deployment default policy.");
  } catch (e) {
    if (!(e instanceof Unauthenticated)) setError($("policy-error"), e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Audit log

const AUDIT_ACTIONS = {
  "key.created": "Key created", "key.rotated": "Key rotated", "key.revoked": "Key revoked", "key.updated": "Key changed",
  "policy.uploaded": "Policy uploaded", "policy.reset": "Policy reset to default",
  "auth.signed_in": "Signed in", "auth.sign_in_failed": "Failed sign-in",
  "team.created": "Team created", "project.created": "Project created", "project.renamed": "Project renamed", "project.deleted": "Project deleted",
  "user.created": "Account created", "member.set": "Membership changed", "member.added": "Member added", "member.invited": "Member invited",
  "member.role_changed": "Role changed", "member.removed": "Member removed", "invitation.accepted": "Invitation accepted",
  "user.password_changed": "Password changed",
};

function grace(seconds) {
  if (!seconds) return "stopped at once";
  if (seconds % 86400 === 0) return `works ${plural(seconds / 86400, "more day")}`;
  if (seconds % 3600 === 0) return `works ${plural(seconds / 3600, "more hour")}`;
  return `works ${plural(seconds, "more second")}`;
}

function auditDetails(event) {
  const d = event.details;
  if (!d) return "";
  if (event.action === "key.rotated") return `New key ${d.newKeyId}; the old one ${grace(d.gracePeriodSeconds)}`;
  if (event.action === "key.updated" && d.changed) {
    return Object.entries(d.changed).map(([field, value]) => {
      if (field === "enabled") return value ? "enabled" : "disabled";
      if (field === "expiresAt") return value ? `expires ${formatTime(value)}` : "no expiration";
      if (field === "rateLimit") return value ? `rate limit ${rateLimitText(value)}` : "no rate limit";
      if (field === "scopes") return value.length ? `scopes ${value.join(", ")}` : "full access";
      return `name “${value}”`;
    }).join("; ");
  }
  if (event.action === "member.role_changed") return `${d.from} → ${d.role}`;
  if (event.action === "project.renamed") return `“${d.from}” → “${d.name}”`;
  if (d.rotatedFrom) return `Replaces ${d.rotatedFrom}`;
  if (d.role) return `as ${d.role}`;
  return "";
}

function renderAudit() {
  $("audit-body").replaceChildren(...state.audit.map((event) => {
    const tr = el("tr");
    tr.dataset.action = event.action;
    const who = event.actor.email || (event.actor.id === "anonymous" ? "Unknown (wrong password)" : event.actor.id === "cli" ? "Operator (command line)" : event.actor.id);
    const object = event.targetName ? `${event.targetName} (${event.target})` : event.target;
    tr.append(
      cell("When", formatTime(event.at)), cell("What", AUDIT_ACTIONS[event.action] || event.action, "audit-action"),
      cell("Who", who, "wrap"), cell("Object", object, "wrap audit-object"), cell("Details", auditDetails(event), "wrap audit-details"),
      cell("From", event.source || "command line", "mono"),
    );
    return tr;
  }));
  show($("audit-table"), state.audit.length > 0);
  show($("audit-empty"), state.audit.length === 0);
  show($("audit-more"), Boolean(state.auditCursor));
}

// `fresh` starts again from the newest events.
async function loadAudit(fresh) {
  if (currentRole() !== "owner") return;
  setError($("audit-error"), "");
  let path = teamPath("/audit-log?limit=50");
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

// ---------------------------------------------------------------------------------------------
// Password

async function changePassword(event) {
  event.preventDefault();
  const current = $("current-password"), fresh = $("new-password");
  clearFieldErrors([["current-password", "current-password-error"], ["new-password", "new-password-error"]]);
  show($("password-result"), false);
  if (!current.value) {
    setFieldError(current, $("current-password-error"), "Enter your current password.");
    current.focus();
    return;
  }
  if ([...fresh.value].length < 12 || [...fresh.value].length > 1024) {
    setFieldError(fresh, $("new-password-error"), "Choose a new password of 12 to 1,024 characters.");
    fresh.focus();
    return;
  }
  $("password-save").disabled = true;
  try {
    await api("POST", "/api/auth/password", { currentPassword: current.value, newPassword: fresh.value });
    current.value = "";
    fresh.value = "";
    $("password-result").textContent = "Password changed. Your other sessions have ended; this one goes on.";
    show($("password-result"), true);
  } catch (e) {
    if (e.field === "newPassword") setFieldError(fresh, $("new-password-error"), e.message);
    else if (e.field === "currentPassword" || e.status === 401 || e.status === 403) setFieldError(current, $("current-password-error"), "That is not your current password.");
    else setError($("password-result"), e.message);
  } finally {
    $("password-save").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------

async function signOut() {
  try { await api("POST", "/api/auth/logout"); } catch { /* signed out either way */ }
  state.me = null;
  resetCreate();
  showSignIn("");
}

function hashChanged() {
  if (inviteToken()) { showInvite(); return; }
  if (state.me) route(true);
  else if (!$("invite-view").hidden) showSignIn("");
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("invite-form").addEventListener("submit", acceptInvite);
  $("sign-out").addEventListener("click", signOut);
  $("open-create").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("create-cancel").addEventListener("click", closeCreate);
  $("create-dialog").addEventListener("cancel", (e) => { e.preventDefault(); closeCreate(); });
  $("key-name").addEventListener("input", () => updateCounter($("key-name"), $("key-name-count")));
  $("edit-name").addEventListener("input", () => updateCounter($("edit-name"), $("edit-name-count")));
  $("key-expiry").addEventListener("change", () => expiryChoiceChanged("key"));
  $("edit-expiry").addEventListener("change", () => expiryChoiceChanged("edit"));
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", () => requestCloseSecret());
  $("secret-dialog").addEventListener("cancel", requestCloseSecret);
  $("secret-back").addEventListener("click", () => { show($("secret-confirm"), false); show($("secret-actions"), true); $("secret-copy").focus(); });
  $("secret-discard").addEventListener("click", closeSecret);
  $("rotate-cancel").addEventListener("click", () => { $("rotate-dialog").close(); });
  $("rotate-dialog").addEventListener("close", () => { state.rotating = null; if (!$("secret-dialog").open) restoreFocus($("open-create")); });
  $("rotate-confirm").addEventListener("click", confirmRotate);
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  $("revoke-dialog").addEventListener("close", () => { state.revoking = null; if (state.returnFocus) restoreFocus($("open-create")); });
  $("revoke-confirm").addEventListener("click", confirmRevoke);
  $("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
  $("confirm-dialog").addEventListener("close", () => { state.confirming = null; if (state.returnFocus) restoreFocus(null); });
  $("confirm-ok").addEventListener("click", runConfirm);
  $("rename-form").addEventListener("submit", saveRename);
  $("rename-cancel").addEventListener("click", () => $("rename-dialog").close());
  $("rename-dialog").addEventListener("close", () => { state.renaming = null; if (state.returnFocus) restoreFocus(null); });
  $("policy-form").addEventListener("submit", uploadPolicy);
  $("policy-reset").addEventListener("click", resetPolicy);
  $("audit-more").addEventListener("click", () => loadAudit(false));
  $("keys-filter").addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });
  $("keys-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(filtersChanged, 250); });
  $("keys-status").addEventListener("change", filtersChanged);
  $("keys-project").addEventListener("change", filtersChanged);
  $("keys-next").addEventListener("click", async () => {
    state.keysCursors.push(state.keysNext);
    await loadKeys();
    (state.keysNext ? $("keys-next") : $("keys-prev")).focus();
  });
  $("keys-prev").addEventListener("click", async () => {
    if (state.keysCursors.length > 1) state.keysCursors.pop();
    await loadKeys();
    (state.keysCursors.length > 1 ? $("keys-prev") : $("keys-next")).focus();
  });
  $("key-toggle").addEventListener("click", toggleKey);
  $("key-rotate").addEventListener("click", () => state.key && askRotate(state.key));
  $("key-revoke").addEventListener("click", () => state.key && askRevoke(state.key));
  $("edit-form").addEventListener("submit", saveKey);
  $("add-member-form").addEventListener("submit", addMember);
  $("project-form").addEventListener("submit", createProject);
  $("password-form").addEventListener("submit", changePassword);
  $("team-switcher").addEventListener("change", async (e) => {
    state.teamId = e.target.value;
    sessionStorage.setItem("billstack-team", state.teamId);
    resetCreate();
    try {
      await loadTeam();
      if (location.hash === "#keys") await route(false); else location.hash = "#keys";
    } catch (err) { if (!(err instanceof Unauthenticated)) setError($("team-error"), err.message); }
  });
  window.addEventListener("hashchange", hashChanged);
  if (inviteToken()) { showInvite(); return; }
  try {
    const me = await api("GET", "/api/auth/me");
    await enter(me, false);
  } catch (e) {
    if (!(e instanceof Unauthenticated)) showSignIn(e.message);
  }
}

start();
