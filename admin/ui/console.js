// pgmoat console: holds, pre-approvals and the audit trail, live over
// server-sent events. Plain JavaScript, no dependencies; every piece of
// server data reaches the page through textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { me: null, holds: new Map(), pre: new Map(), cards: new Map(), events: null, filter: "" };

  // ---- HTTP --------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && state.me && state.me.csrf) headers["X-CSRF-Token"] = state.me.csrf;
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (_) { /* no body */ }
    if (!resp.ok) {
      if (resp.status === 401 && path !== "/ui/login") signedOut("Your session ended: sign in again.");
      throw new APIError(resp.status, (data && data.error) || resp.statusText);
    }
    return data;
  }

  // ---- elements ----------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const fmtTime = (t) => new Date(t).toLocaleString();
  function ago(t) {
    const s = Math.round((Date.now() - new Date(t)) / 1000);
    return span(s) + " ago";
  }
  function span(s) {
    s = Math.max(0, s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    const h = Math.floor(s / 3600);
    return h + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  const badge = (st) => el("span", { class: "badge " + st, text: st.replace("_", " ") });
  const isApprover = () => state.me && state.me.role === "approver";
  const session = (x) => `${x.user || "?"}@${x.database || "?"}`;

  // ---- SQL display: highlighting and light formatting ---------------------
  // For display only: pgmoat decides from libpg_query's parse tree, never
  // from this.

  const KEYWORDS = new Set(("select from where and or not insert into values update set delete truncate drop alter table " +
    "create index schema cascade restrict if exists only join left right inner outer full on using group by order " +
    "having limit offset returning union all with as distinct begin commit rollback column add rename to grant revoke " +
    "view materialized function procedure trigger sequence database role do case when then else end is null in like " +
    "between vacuum analyze cluster reindex copy lock execute prepare default primary key references foreign constraint").split(" "));
  const BREAK_BEFORE = new Set(["from", "where", "set", "values", "returning", "group", "order", "having", "limit",
    "union", "join", "left", "right", "inner", "cascade", "using"]);

  function tokens(sql) {
    const out = [];
    let i = 0;
    while (i < sql.length) {
      const c = sql[i], rest = sql.slice(i);
      let m;
      if (rest.startsWith("--")) { const j = sql.indexOf("\n", i); m = j < 0 ? rest : sql.slice(i, j); out.push(["c", m]); }
      else if (rest.startsWith("/*")) { const j = sql.indexOf("*/", i + 2); m = j < 0 ? rest : sql.slice(i, j + 2); out.push(["c", m]); }
      else if (c === "'" || ((c === "E" || c === "e") && sql[i + 1] === "'")) {
        let j = i + (c === "'" ? 1 : 2);
        for (; j < sql.length; j++) {
          if (sql[j] === "\\" && c !== "'") { j++; continue; }
          if (sql[j] === "'") { if (sql[j + 1] === "'") { j++; continue; } break; }
        }
        m = sql.slice(i, j + 1); out.push(["s", m]);
      } else if (c === '"') { const j = sql.indexOf('"', i + 1); m = j < 0 ? rest : sql.slice(i, j + 1); out.push(["i", m]); }
      else if (c === "$" && (m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(rest))) {
        const j = sql.indexOf(m[0], i + m[0].length);
        m = j < 0 ? rest : sql.slice(i, j + m[0].length); out.push(["s", m]);
      } else if ((m = /^\s+/.exec(rest))) { m = m[0]; out.push(["w", m]); }
      else if ((m = /^[0-9]+(\.[0-9]+)?/.exec(rest))) { m = m[0]; out.push(["n", m]); }
      else if ((m = /^[A-Za-z_][A-Za-z0-9_$]*/.exec(rest))) { m = m[0]; out.push([KEYWORDS.has(m.toLowerCase()) ? "k" : "t", m]); }
      else { m = c; out.push(["p", m]); }
      i += m.length;
    }
    return out;
  }

  // format puts major clauses of a long one-line statement on their own
  // lines; a statement its author already laid out is left as is.
  function format(toks, text) {
    if (text.includes("\n") || text.length < 90) return toks;
    let depth = 0;
    const out = [];
    for (const t of toks) {
      if (t[0] === "p" && t[1] === "(") depth++;
      if (t[0] === "p" && t[1] === ")") depth--;
      if (t[0] === "k" && depth === 0 && BREAK_BEFORE.has(t[1].toLowerCase()) && out.length) {
        const last = out[out.length - 1];
        if (last[0] === "w") out[out.length - 1] = ["w", "\n  "];
      }
      if (t[0] === "p" && t[1] === ";" && depth === 0) { out.push(t, ["w", "\n"]); continue; }
      if (t[0] === "w" && out.length && out[out.length - 1][1] === "\n") continue;
      out.push(t);
    }
    return out;
  }

  function sqlBlock(text, clip) {
    const pre = el("pre", { class: "sql" + (clip ? " clipped" : "") });
    for (const [kind, s] of format(tokens(text), text)) {
      pre.append(kind === "w" || kind === "t" || kind === "p" ? document.createTextNode(s) : el("span", { class: kind, text: s }));
    }
    return pre;
  }

  function statementView(text) {
    const long = text.split("\n").length > 6 || text.length > 600;
    const box = el("div", {}, sqlBlock(text, long));
    if (long) {
      const btn = el("button", { type: "button", class: "link", "aria-expanded": "false", text: "Show the full statement" });
      btn.addEventListener("click", () => {
        const pre = box.querySelector("pre");
        const open = pre.classList.toggle("clipped") === false;
        btn.setAttribute("aria-expanded", String(open));
        btn.textContent = open ? "Show less" : "Show the full statement";
      });
      box.append(btn);
    }
    return box;
  }

  // ---- holds -------------------------------------------------------------

  function holdCard(h) {
    const n = h.approvals.length;
    const card = el("article", { class: "card hold", "data-id": h.id, "aria-label": "Hold " + h.id });
    card.append(...[
      el("h3", {}, el("span", {}, badge(h.status), " ", h.rule || "hold"), el("span", { class: "id", text: h.id })),
      el("p", { class: "sentence", text: h.reason }),
      statementView(h.statement),
      h.blast_radius ? el("p", { class: "blast", text: "Measured: " + h.blast_radius }) : null,
      el("dl", { class: "meta" },
        metaItem("Session", `${session(h)}${h.application ? " · " + h.application : ""}`),
        metaItem("Client", h.client || "—"),
        h.instance ? metaItem("Held by instance", h.instance) : null,
        metaItem("Arrived", el("time", { datetime: h.created_at, title: fmtTime(h.created_at), "data-ago": h.created_at, text: ago(h.created_at) })),
        metaItem("Expires", el("time", { datetime: h.expires_at, title: fmtTime(h.expires_at), "data-expires": h.expires_at, text: "" })),
        metaItem("Approvals", `${n} of ${h.approvals_required}` + (n ? " (" + h.approvals.map((a) => a.approver).join(", ") + ")" : ""))),
    ].filter(Boolean));
    if (n) {
      const ul = el("ul", { class: "approvals" });
      for (const a of h.approvals) ul.append(el("li", { text: `${a.approver} at ${fmtTime(a.at)}: ${a.reason}` }));
      card.append(ul);
    }
    const reasonID = "reason-" + h.id;
    const reason = el("input", { id: reasonID, type: "text", placeholder: "Reason (required, goes to the audit log)", autocomplete: "off" });
    const err = el("p", { class: "error", role: "alert" });
    const approve = el("button", { type: "button", class: "approve", text: "Approve" });
    const deny = el("button", { type: "button", class: "deny", text: "Deny" });
    if (!isApprover()) {
      for (const b of [approve, deny, reason]) { b.disabled = true; b.title = "A viewer token cannot approve or deny"; }
    }
    const decide = async (verb) => {
      if (!reason.value.trim()) { err.textContent = "A reason is required: it goes to the audit log."; reason.focus(); return; }
      approve.disabled = deny.disabled = true;
      err.textContent = "";
      try {
        const info = await api("POST", `/api/v1/holds/${encodeURIComponent(h.id)}/${verb}`, { reason: reason.value });
        upsertHold(info);
      } catch (e) {
        err.textContent = e.message;
        approve.disabled = deny.disabled = !isApprover();
      }
    };
    approve.addEventListener("click", () => decide("approve"));
    deny.addEventListener("click", () => decide("deny"));
    card.append(el("div", { class: "decide" },
      el("label", { for: reasonID, class: "visually-hidden", text: "Reason for hold " + h.id }), reason, approve, deny), err);
    return card;
  }

  function metaItem(label, value) {
    return [el("div", {}, el("dt", { text: label }), el("dd", {}, value))];
  }

  function matches(h) {
    if (!state.filter) return true;
    const f = state.filter;
    return [h.statement, h.user, h.database, h.application, h.client, h.rule, h.reason, h.id, h.instance]
      .some((s) => s && s.toLowerCase().includes(f));
  }

  function upsertHold(h) {
    const prev = state.holds.get(h.id);
    if (prev && prev.status !== "pending" && h.status === "pending") return; // stale
    state.holds.set(h.id, h);
    const old = state.cards.get(h.id);
    if (h.status === "pending") {
      // Keep what the approver was typing across updates of the card.
      const typed = old && old.querySelector("input") ? old.querySelector("input").value : "";
      const focused = old && old.contains(document.activeElement);
      const card = holdCard(h);
      card.hidden = !matches(h);
      if (typed) card.querySelector("input").value = typed;
      if (old) old.replaceWith(card); else placeCard(card, h);
      state.cards.set(h.id, card);
      if (focused) card.querySelector("input").focus();
    } else if (old) {
      old.remove();
      state.cards.delete(h.id);
    }
    renderCounts();
    renderEnded();
    tick();
  }

  // placeCard inserts a new card in expiry order: the most urgent first.
  function placeCard(card, h) {
    const list = $("pending");
    for (const other of list.children) {
      const o = state.holds.get(other.dataset.id);
      if (o && o.expires_at > h.expires_at) { list.insertBefore(card, other); return; }
    }
    list.append(card);
  }

  function renderHolds() {
    const list = $("pending");
    list.replaceChildren();
    state.cards.clear();
    const pending = [...state.holds.values()].filter((h) => h.status === "pending")
      .sort((a, b) => (a.expires_at < b.expires_at ? -1 : 1));
    const frag = document.createDocumentFragment();
    for (const h of pending) {
      const card = holdCard(h);
      card.hidden = !matches(h);
      state.cards.set(h.id, card);
      frag.append(card);
    }
    list.append(frag);
    renderCounts();
    renderEnded();
    tick();
  }

  function renderCounts() {
    let n = 0;
    for (const h of state.holds.values()) if (h.status === "pending") n++;
    $("count-pending").textContent = n;
    $("none-pending").hidden = n > 0;
    document.title = (n ? `(${n}) ` : "") + "pgmoat approvals";
  }

  function renderEnded() {
    const ended = [...state.holds.values()].filter((h) => h.status !== "pending")
      .sort((a, b) => (a.resolved_at < b.resolved_at ? 1 : -1));
    $("none-ended").hidden = ended.length > 0;
    $("ended").replaceChildren(...ended.map((h) => el("tr", {},
      el("td", {}, el("time", { datetime: h.resolved_at, title: fmtTime(h.resolved_at), text: fmtTime(h.resolved_at) })),
      el("td", {}, badge(h.status)),
      el("td", { class: "stmt", text: h.statement.length > 200 ? h.statement.slice(0, 199) + "…" : h.statement }),
      el("td", { text: session(h) + (h.instance ? " on " + h.instance : "") }),
      el("td", { text: (h.resolved_by ? h.resolved_by + ": " : "") + (h.resolution || "") }))));
  }

  // tick refreshes the clocks once a second; cheap with hundreds of cards.
  function tick() {
    const now = Date.now();
    for (const t of document.querySelectorAll("[data-expires]")) {
      const left = Math.round((new Date(t.dataset.expires) - now) / 1000);
      t.textContent = left > 0 ? "in " + span(left) : "now";
      t.closest(".hold")?.classList.toggle("urgent", left < 120);
    }
    for (const t of document.querySelectorAll("[data-ago]")) t.textContent = ago(t.dataset.ago);
  }

  // ---- pre-approvals -----------------------------------------------------

  function renderPre() {
    const ps = [...state.pre.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    $("none-pre").hidden = ps.length > 0;
    $("pre").replaceChildren(...ps.map((p) => {
      const revoke = el("button", { type: "button", class: "deny", text: "Revoke" });
      revoke.disabled = !isApprover() || p.status !== "active";
      if (!isApprover()) revoke.title = "A viewer token cannot revoke";
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        try { upsertPre(await api("DELETE", "/api/v1/preapprovals/" + encodeURIComponent(p.id))); }
        catch (e) { banner(e.message); revoke.disabled = false; }
      });
      return el("tr", {},
        el("td", {}, badge(p.status)),
        el("td", { class: "stmt", text: p.sql.trim().length > 240 ? p.sql.trim().slice(0, 239) + "…" : p.sql.trim() }),
        el("td", { text: p.max_uses ? `${p.uses} of ${p.max_uses}` : String(p.uses) }),
        el("td", { text: p.approver + (p.database || p.user ? ` (only ${[p.user, p.database].filter(Boolean).join("@")})` : "") }),
        el("td", {}, el("time", { datetime: p.expires_at, title: fmtTime(p.expires_at), text: fmtTime(p.expires_at) })),
        el("td", { text: p.reason }),
        el("td", {}, revoke));
    }));
  }

  function upsertPre(p) { state.pre.set(p.id, p); renderPre(); }

  $("pre-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const errEl = $("pre-error");
    errEl.textContent = "";
    const body = {
      sql: $("pre-sql").value, ttl: $("pre-ttl").value, reason: $("pre-reason").value,
      database: $("pre-db").value.trim() || undefined, user: $("pre-user").value.trim() || undefined,
      max_uses: parseInt($("pre-uses").value, 10) || undefined,
    };
    try {
      upsertPre(await api("POST", "/api/v1/preapprovals", body));
      $("pre-form").reset();
    } catch (e) { errEl.textContent = e.message; }
  });

  // ---- audit trail -------------------------------------------------------

  async function loadAudit() {
    const q = new URLSearchParams({ limit: "300" });
    if ($("audit-kind").value) q.set("kind", $("audit-kind").value);
    if ($("audit-q").value.trim()) q.set("q", $("audit-q").value.trim());
    try {
      const out = await api("GET", "/api/v1/audit?" + q);
      $("audit-note").textContent = `The ${out.events.length} most recent matching events of ` +
        (out.instance ? `instance ${out.instance}'s audit log (each instance keeps its own), ` : "the audit log, ") + "newest first.";
      $("audit").replaceChildren(...out.events.reverse().map((e) => el("tr", {},
        el("td", {}, el("time", { datetime: e.time, text: fmtTime(e.time) })),
        el("td", {}, badge(e.decision && e.event === "decision" ? e.decision : e.event)),
        el("td", { text: e.user ? session(e) + (e.application ? " · " + e.application : "") : "" }),
        el("td", { class: "stmt", text: e.statement ? (e.statement.length > 200 ? e.statement.slice(0, 199) + "…" : e.statement) : (e.hold_id || e.preapproval_id || "") }),
        el("td", { text: [e.rule, e.reason, e.blast_radius, e.error].filter(Boolean).join(" — ") }),
        el("td", { text: (e.approvers || []).join(", ") + (e.approval_reason ? ": " + e.approval_reason : "") }))));
    } catch (e) {
      $("audit-note").textContent = e.message;
      $("audit").replaceChildren();
    }
  }
  $("audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadAudit(); });
  $("audit-kind").addEventListener("change", loadAudit);

  // ---- tabs --------------------------------------------------------------

  const tabs = ["pending", "ended", "pre", "audit"];
  function show(name) {
    for (const t of tabs) {
      const on = t === name;
      $("tab-" + t).setAttribute("aria-selected", String(on));
      $("tab-" + t).tabIndex = on ? 0 : -1;
      $("view-" + t).hidden = !on;
    }
    if (name === "audit") loadAudit();
  }
  for (const t of tabs) $("tab-" + t).addEventListener("click", () => show(t));
  $("app").querySelector(".tabs").addEventListener("keydown", (ev) => {
    const i = tabs.findIndex((t) => $("tab-" + t).getAttribute("aria-selected") === "true");
    const next = ev.key === "ArrowRight" ? (i + 1) % tabs.length : ev.key === "ArrowLeft" ? (i + tabs.length - 1) % tabs.length : -1;
    if (next >= 0) { show(tabs[next]); $("tab-" + tabs[next]).focus(); }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
      ev.preventDefault(); show("pending"); $("filter").focus();
    }
  });
  $("filter").addEventListener("input", () => {
    state.filter = $("filter").value.trim().toLowerCase();
    for (const [id, card] of state.cards) card.hidden = !matches(state.holds.get(id));
  });

  function banner(text) {
    $("banner").textContent = text;
    $("banner").hidden = !text;
  }

  // ---- live updates ------------------------------------------------------

  async function reload() {
    try {
      const [holds, pre] = await Promise.all([api("GET", "/api/v1/holds"), api("GET", "/api/v1/preapprovals")]);
      state.holds = new Map(holds.holds.map((h) => [h.id, h]));
      state.pre = new Map(pre.preapprovals.map((p) => [p.id, p]));
      renderHolds();
      renderPre();
      banner("");
    } catch (e) {
      if (e.status !== 401) banner("Could not load the holds: " + e.message);
    }
  }

  function listen() {
    if (state.events) state.events.close();
    const es = new EventSource("/api/v1/events");
    state.events = es;
    let broke = false;
    es.addEventListener("open", () => {
      $("live").classList.remove("down");
      $("live").textContent = "live";
      if (broke) reload();
    });
    es.addEventListener("error", () => {
      broke = true;
      $("live").classList.add("down");
      $("live").textContent = "reconnecting";
    });
    es.addEventListener("hold", (ev) => upsertHold(JSON.parse(ev.data)));
    es.addEventListener("hold_gone", (ev) => {
      const { id } = JSON.parse(ev.data);
      state.holds.delete(id);
      state.cards.get(id)?.remove();
      state.cards.delete(id);
      renderCounts(); renderEnded();
    });
    es.addEventListener("preapproval", (ev) => upsertPre(JSON.parse(ev.data)));
    es.addEventListener("resync", reload);
    es.addEventListener("signed_out", () => signedOut("Your session ended: sign in again."));
  }

  // ---- sign-in -----------------------------------------------------------

  function signedIn(me) {
    state.me = me;
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-name").replaceChildren(me.name, " ", el("span", { class: "role", text: me.role }),
      me.instance ? el("span", { class: "note", text: " on " + me.instance }) : null);
    $("viewer-note").hidden = isApprover();
    for (const b of document.querySelectorAll("[data-needs-approver]")) {
      b.disabled = !isApprover();
      if (!isApprover()) b.title = "A viewer token cannot pre-approve";
    }
    reload();
    listen();
  }

  function signedOut(message) {
    state.me = null;
    if (state.events) { state.events.close(); state.events = null; }
    $("app").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const me = await api("POST", "/ui/login", { token: $("token").value });
      $("token").value = "";
      signedIn(me);
    } catch (e) {
      $("login-error").textContent = e.status === 401 ? "That token is not known to this pgmoat." : e.message;
    }
  });

  $("signout").addEventListener("click", async () => {
    try { await api("POST", "/ui/logout", {}); } catch (_) { /* signed out anyway */ }
    signedOut("");
  });

  setInterval(tick, 1000);
  api("GET", "/api/v1/session").then(signedIn, () => signedOut(""));
})();
