// The user portal's phone: JsSIP over the PBX's WebSocket listener (RFC 7118), WebRTC media
// (the PBX answers ICE-lite and DTLS-SRTP). One call at a time, as a desk phone line.
"use strict";
(() => {
  const box = document.getElementById("phone");
  if (!box || !window.JsSIP) return;
  const $ = (id) => document.getElementById(id);
  const state = $("phone-state"), peer = $("phone-peer"), number = $("phone-number");
  const remote = $("phone-remote");
  const buttons = ["call", "answer", "hangup", "hold", "mute", "transfer"];
  let session = null, held = false, muted = false;

  const show = (text, who) => {
    state.textContent = text;
    peer.textContent = who || "";
    const inCall = session && session.isEstablished();
    const ringing = session && session.direction === "incoming" && !session.isEstablished();
    $("phone-call").disabled = !!session;
    $("phone-answer").disabled = !ringing;
    $("phone-hangup").disabled = !session;
    for (const name of ["hold", "mute", "transfer"]) $("phone-" + name).disabled = !inCall;
  };

  const media = () => {
    const mic = $("phone-mic").value;
    return {mediaConstraints: {audio: mic ? {deviceId: {exact: mic}} : true, video: false},
            pcConfig: {iceServers: []}, rtcOfferConstraints: {offerToReceiveAudio: true}};
  };

  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(box.dataset.ws)],
    uri: `sip:${box.dataset.user}@${box.dataset.domain}`,
    password: box.dataset.password,
    register: true,
    session_timers: false,
  });
  ua.on("registered", () => show(session ? state.textContent : "ready"));
  ua.on("unregistered", () => show("offline"));
  ua.on("registrationFailed", (e) => show("not registered: " + e.cause));
  ua.on("disconnected", () => show("disconnected"));
  ua.on("newRTCSession", (e) => {
    if (session) {  // one line: a second call is refused busy
      e.session.terminate({status_code: 486});
      return;
    }
    session = e.session;
    held = muted = false;
    const who = session.remote_identity.display_name || session.remote_identity.uri.user;
    const attach = (pc) => pc.addEventListener("track", (t) => {
      remote.srcObject = t.streams[0] || new MediaStream([t.track]);
    });
    if (session.connection) attach(session.connection);
    session.on("peerconnection", (p) => attach(p.peerconnection));
    session.on("progress", () => show(e.originator === "remote" ? "ringing" : "calling", who));
    session.on("accepted", () => show("in call", who));
    session.on("confirmed", () => show("in call", who));
    session.on("hold", () => show("on hold", who));
    session.on("unhold", () => show("in call", who));
    const done = (why) => { session = null; remote.srcObject = null; show("ready " + (why || "")); };
    session.on("ended", () => done(""));
    session.on("failed", (f) => done("(" + f.cause + ")"));
    if (e.originator === "remote") {
      show("ringing", who);
      if (window.Notification && Notification.permission === "granted") {
        new Notification("Incoming call", {body: who});
      }
    } else {
      show("calling", who);
    }
  });
  ua.start();
  show("registering");

  $("phone-call").addEventListener("click", () => {
    const target = number.value.trim();
    if (!target || session) return;
    ua.call(`sip:${target}@${box.dataset.domain}`, media());
  });
  $("phone-answer").addEventListener("click", () => session && session.answer(media()));
  $("phone-hangup").addEventListener("click", () => session && session.terminate());
  $("phone-hold").addEventListener("click", () => {
    if (!session) return;
    held ? session.unhold() : session.hold();
    held = !held;
    $("phone-hold").textContent = held ? "Resume" : "Hold";
  });
  $("phone-mute").addEventListener("click", () => {
    if (!session) return;
    muted ? session.unmute({audio: true}) : session.mute({audio: true});
    muted = !muted;
    $("phone-mute").textContent = muted ? "Unmute" : "Mute";
  });
  $("phone-transfer").addEventListener("click", () => {
    const target = number.value.trim();
    if (session && target) session.refer(`sip:${target}@${box.dataset.domain}`);
  });
  document.getElementById("dialpad").addEventListener("click", (e) => {
    const key = e.target.dataset && e.target.dataset.key;
    if (!key) return;
    if (session && session.isEstablished()) {
      session.sendDTMF(key, {transportType: "RFC2833"});  // RFC 4733, in the SRTP stream
    } else {
      number.value += key;
    }
  });
  const devices = async () => {
    const all = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, id] of [["audioinput", "phone-mic"], ["audiooutput", "phone-speaker"]]) {
      const select = $(id);
      for (const d of all.filter((x) => x.kind === kind && x.deviceId)) {
        select.add(new Option(d.label || d.deviceId.slice(0, 8), d.deviceId));
      }
    }
  };
  $("phone-speaker").addEventListener("change", (e) => {
    if (remote.setSinkId) remote.setSinkId(e.target.value);
  });
  // the microphone permission is asked for once, on the first click on the page
  document.addEventListener("click", () => {
    navigator.mediaDevices.getUserMedia({audio: true})
      .then((s) => { s.getTracks().forEach((t) => t.stop()); return devices(); })
      .catch(() => show("the microphone is not allowed"));
    if (window.Notification && Notification.permission === "default") Notification.requestPermission();
  }, {once: true});
  window.addEventListener("beforeunload", () => ua.stop());
})();
