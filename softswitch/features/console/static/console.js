// softswitch console: live dashboard and queue wallboard, confirmations, greeting preview
// and recording.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr"); tr.className = "empty";
    const td = cell(empty); td.colSpan = columns; tr.append(td); tbody.append(tr); return;
  }
  for (const values of rows) { const tr = document.createElement("tr"); tr.className = values.cls || "";
    tr.append(...values.cells.map(cell)); tbody.append(tr); }
}

function dashboard(root) {
  const state = document.getElementById("live-state");
  const source = new EventSource(root.dataset.live);
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (event) => {
    const live = JSON.parse(event.data);
    fill(document.getElementById("calls"), live.calls.map((c) => ({ cls: "call", cells: [
      `${c.from.number} ${c.from.name}`, c.to ? `${c.to.number} ${c.to.name}` : c.dialled,
      c.state + (c.held ? " (on hold)" : ""), c.codec, `${c.seconds} s`] })), "No call", 5);
    fill(document.getElementById("regs"), live.registrations.map((r) => ({ cells: [
      r.login, r.name, r.source, r.user_agent, `${r.expires_in} s`] })), "No phone registered", 5);
    fill(document.getElementById("rooms"), live.conferences.map((r) => ({ cells: [
      r.room, r.members.join(", "), (r.locked ? "locked " : "") + (r.recording ? "recording" : "")] })),
      "No conference", 3);
    document.getElementById("calls-count").textContent = live.calls.length;
    document.getElementById("regs-count").textContent = live.registrations.length;
    document.getElementById("rooms-count").textContent = live.conferences.length;
    document.getElementById("late").textContent = live.media.late_ticks;
    document.getElementById("ticks").textContent = live.media.ticks;
    document.getElementById("skipped").textContent = live.media.skipped_ticks;
    document.getElementById("calls-total").textContent = live.counters.calls;
    // UTC, as every other time of the console
    state.textContent = `live · ${new Date(live.time * 1000).toISOString().slice(11, 19)} UTC`;
  };
}

// -- the queue wallboard -----------------------------------------------------------------
// Every second /live/queues sends the queues (the daemon's queues.snapshot); each queue's
// card is drawn again from it, the agents' rows kept (a button being clicked stays put),
// and the callers' waits tick in between.

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const whole = Math.max(0, Math.floor(seconds));
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

function percent(fraction) { return fraction === null || fraction === undefined ? "-" : `${Math.round(100 * fraction)} %`; }

function utc(at) { return new Date(at * 1000).toISOString().slice(0, 19).replace("T", " "); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "hidden") node.hidden = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);  // strings become text, never HTML
  return node;
}

function emptyRow(text, columns) { const td = el("td", {}, text); td.colSpan = columns; return el("tr", { class: "empty" }, td); }

function agentActions(a) {
  const button = (action, label) => el("button", { type: "button", class: "secondary", "data-agent": a.extension, "data-action": action }, label);
  if (a.state === "logged_out") return [button("login", "Log in")];
  return [a.paused ? button("unpause", "Resume") : button("pause", "Pause"), " ", button("logout", "Log out")];
}

function queueCard(q) {
  const figure = (cls, value, words) => el("div", {}, el("strong", { class: cls }, String(value)), ` ${words}`);
  const table = (heads, body) => el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), body);
  return el("section", { class: "card queue", "data-queue": q.extension },
    el("h2", {}, el("span", { class: "title" }), " ", el("span", { class: "muted small strategy" })),
    el("div", { class: "figures" },
      figure("n-waiting", 0, "waiting"), figure("n-answered", 0, "answered today"),
      figure("n-abandoned", 0, "hung up waiting"), figure("average", "-", "average wait"),
      figure("longest", "-", "longest wait"),
      el("div", {}, el("strong", { class: "service" }, "-"), " answered within ", el("span", { class: "target" }), " s")),
    el("p", { class: "muted small others" }, "Waited too long ", el("span", { class: "n-timeout" }),
      " · sent on ", el("span", { class: "n-overflow" }), " · left a message ", el("span", { class: "n-message" })),
    el("div", { class: "grid" },
      el("div", {}, el("h3", {}, "Callers waiting"), table(["#", "Caller", "Waiting", "Now"], el("tbody", { class: "waiting" }))),
      el("div", {}, el("h3", {}, "Agents"), table(["Agent", "State", "With", "Answered", ""], el("tbody", { class: "agents" })))),
    el("h3", {}, "Recent callers"),
    table(["When (UTC)", "Caller", "Outcome", "Waited"], el("tbody", { class: "recent" })));
}

function drawQueue(card, q, words) {
  const set = (selector, text) => { const node = card.querySelector(selector); if (node.textContent !== text) node.textContent = text; };
  set(".title", `${q.extension} · ${q.name}`);
  set(".strategy", words.strategies[q.strategy] || q.strategy);
  const stats = q.stats || {};
  set(".n-waiting", String(q.waiting.length));
  set(".n-answered", String(stats.answered ?? 0));
  set(".n-abandoned", String(stats.abandoned ?? 0));
  set(".average", clock(stats.average_wait));
  set(".longest", clock(stats.longest_wait));
  set(".service", percent(stats.service_level));
  set(".target", String(q.service_level_seconds));
  set(".n-timeout", String(stats.timeout ?? 0));
  set(".n-overflow", String(stats.overflow ?? 0));
  set(".n-message", String(stats.message ?? 0));

  const waiting = card.querySelector("tbody.waiting");
  waiting.replaceChildren(...(q.waiting.length ? q.waiting.map((c) => el("tr", { class: "caller", "data-id": c.id },
    el("td", {}, String(c.position)), el("td", {}, `${c.caller} `, el("span", { class: "muted" }, c.number)),
    el("td", { class: "waited", "data-waited": String(c.waited) }, clock(c.waited)),
    el("td", {}, c.state === "ringing" ? `ringing ${c.agents.join(", ")}` : "waiting"))) : [emptyRow("Nobody waiting", 4)]));

  // agents: rows kept by extension, their cells changed only when their text does
  const agents = card.querySelector("tbody.agents");
  const rows = new Map([...agents.querySelectorAll("tr.agent")].map((tr) => [tr.dataset.extension, tr]));
  const wanted = [];
  for (const a of q.agents) {
    let tr = rows.get(a.extension);
    if (!tr) {
      tr = el("tr", { class: "agent", "data-extension": a.extension },
        el("td", { class: "who" }), el("td", { class: "state" }), el("td", { class: "with" }), el("td", { class: "answered" }), el("td", { class: "act" }));
    }
    tr.className = `agent state-${a.state}`;
    const cells = tr.children;
    const who = `${a.extension} ${a.name}` + (a.penalty ? ` (tier ${a.penalty})` : "");
    if (cells[0].textContent !== who) cells[0].textContent = who;
    const state = words.states[a.state] || a.state;
    if (cells[1].textContent !== state) cells[1].textContent = state;
    if (cells[2].textContent !== (a.talking_to || "")) cells[2].textContent = a.talking_to || "";
    if (cells[3].textContent !== String(a.answered)) cells[3].textContent = String(a.answered);
    const actions = agentActions(a);
    const key = actions.filter((b) => typeof b !== "string").map((b) => b.dataset.action).join(" ");
    if (cells[4].dataset.actions !== key) { cells[4].replaceChildren(...actions); cells[4].dataset.actions = key; }
    wanted.push(tr);
  }
  if (!wanted.length) wanted.push(emptyRow("No agent", 5));
  if (wanted.length !== agents.children.length || wanted.some((tr, i) => agents.children[i] !== tr)) agents.replaceChildren(...wanted);

  const recent = card.querySelector("tbody.recent");
  recent.replaceChildren(...((q.recent || []).length ? q.recent.map((r) => el("tr", { class: `outcome-${r.outcome}` },
    el("td", {}, utc(r.at)), el("td", {}, r.caller),
    el("td", {}, (words.outcomes[r.outcome] || r.outcome) + (r.outcome === "answered" && r.agent ? ` by ${r.agent_name || r.agent} (${r.agent})` : "")),
    el("td", {}, clock(r.waited)))) : [emptyRow("Nobody yet today", 4)]));
}

function wallboard(root) {
  const state = document.getElementById("live-state");
  const problem = document.getElementById("board-error");
  const words = JSON.parse(root.dataset.words);
  const only = root.dataset.queue;
  let received = Date.now();
  // the server drew the first look: its agents' buttons are kept the same way
  for (const cell of root.querySelectorAll("td.act")) {
    cell.dataset.actions = [...cell.querySelectorAll("button")].map((b) => b.dataset.action).join(" ");
  }
  const source = new EventSource(root.dataset.live);
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (event) => {
    const board = JSON.parse(event.data);
    received = Date.now();
    problem.textContent = board.error || "";
    problem.hidden = !board.error;
    const queues = board.queues.filter((q) => !only || q.extension === only);
    const cards = new Map([...root.querySelectorAll("section.queue")].map((c) => [c.dataset.queue, c]));
    const wanted = queues.map((q) => {
      const card = cards.get(q.extension) || queueCard(q);
      drawQueue(card, q, words);
      return card;
    });
    if (!wanted.length) {
      const link = el("a", { href: "/admin/queues/new" }, "add one");
      wanted.push(el("p", { class: "card empty" }, `No queue${only ? ` ${only} in the PBX yet` : ""}: `, link, "."));
    }
    if (wanted.length !== root.children.length || wanted.some((c, i) => root.children[i] !== c)) root.replaceChildren(...wanted);
    state.textContent = `live · ${new Date(board.time * 1000).toISOString().slice(11, 19)} UTC`;
  };
  setInterval(() => {  // the waits tick between two updates
    const since = (Date.now() - received) / 1000;
    for (const cell of root.querySelectorAll("td.waited")) cell.textContent = clock(Number(cell.dataset.waited) + since);
  }, 1000);
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    try {
      const answer = await fetch(`/api/queues/agents/${encodeURIComponent(button.dataset.agent)}`, {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify({ action: button.dataset.action }) });
      if (!answer.ok) {
        const body = await answer.json().catch(() => ({}));
        problem.textContent = `${button.dataset.agent}: ${body.error || answer.status}`;
        problem.hidden = false;
      }
    } finally { button.disabled = false; }
  });
}

async function listen(button) {
  const text = document.getElementById("greeting").value;
  const audio = document.getElementById("preview");
  button.disabled = true;
  try {
    const answer = await fetch(`${button.dataset.tts}?text=${encodeURIComponent(text)}`);
    if (!answer.ok) { alert(`Cannot play it (${answer.status})`); return; }
    audio.src = URL.createObjectURL(await answer.blob());
    audio.hidden = false;
    await audio.play().catch(() => {});
  } finally { button.disabled = false; }
}

function wav(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const buffer = new ArrayBuffer(44 + 2 * length);
  const view = new DataView(buffer);
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * length, true);
  let at = 44;
  for (const chunk of chunks) for (const x of chunk) {
    view.setInt16(at, Math.max(-1, Math.min(1, x)) * 0x7fff, true); at += 2; }
  return new Blob([buffer], { type: "audio/wav" });
}

function recorder(button) {
  const state = document.getElementById("record-state");
  let stop = null;
  button.addEventListener("click", async () => {
    if (stop) { stop(); return; }
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
    catch (error) { state.textContent = `no microphone (${error.name})`; return; }
    const context = new AudioContext();
    const input = context.createMediaStreamSource(stream);
    const node = context.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    input.connect(node); node.connect(context.destination);
    button.textContent = "Stop and save"; state.textContent = "recording…";
    stop = async () => {
      stop = null; node.disconnect(); input.disconnect(); stream.getTracks().forEach((t) => t.stop());
      const form = new FormData();
      form.append("csrf", csrf());
      form.append("file", wav(chunks, context.sampleRate), "greeting.wav");
      await context.close();
      state.textContent = "saving…";
      const answer = await fetch(button.dataset.upload, { method: "POST", body: form });
      window.location = answer.url || "/portal";
    };
  });
}

// The user page holds no secret: Show asks for them (a POST with the CSRF token) and
// fills the empty fields, which a save then keeps as they are.
function revealer(button) {
  const form = button.closest("form");
  button.addEventListener("click", async () => {
    const body = new FormData();
    body.append("csrf", csrf());
    button.disabled = true;
    try {
      const answer = await fetch(button.dataset.url, { method: "POST", body });
      if (!answer.ok) { button.textContent = `Cannot show them (${answer.status})`; return; }
      for (const [name, value] of Object.entries(await answer.json())) {
        const input = form.elements.namedItem(name);
        if (input && !input.value) input.value = value;
      }
      button.hidden = true;
    } finally { button.disabled = false; }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (e) => { if (!confirm(form.dataset.confirm)) e.preventDefault(); });
  }
  const reveal = document.getElementById("reveal");
  if (reveal) revealer(reveal);
  const root = document.getElementById("dashboard");
  if (root) dashboard(root);
  const board = document.getElementById("wallboard");
  if (board) wallboard(board);
  const button = document.getElementById("listen");
  if (button) button.addEventListener("click", () => listen(button));
  const record = document.getElementById("record");
  if (record) recorder(record);
});
