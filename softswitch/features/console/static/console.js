// softswitch console: live dashboard, confirmations, greeting preview and recording.
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
  const button = document.getElementById("listen");
  if (button) button.addEventListener("click", () => listen(button));
  const record = document.getElementById("record");
  if (record) recorder(record);
});
