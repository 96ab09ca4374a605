// The meeting page: microphone → Palabre over WebRTC (or the WebSocket), live transcript, ask, summary.
//
// One WebSocket to /v1/stream carries the control messages and the events. The audio goes over
// WebRTC (`"transport":"webrtc"` + `webrtc.offer`) unless the page is opened with
// ?transport=socket or WebRTC fails; then an AudioWorklet sends 48 kHz PCM16 frames on the socket.
//
// A meeting has several participants, each on their own page (the join link is the conversation's
// URL): each streams on their own `track`, their name, with a `client_id` kept for the browser tab
// (a reconnection, or a reload, resumes that participant's track only). The other participants'
// partials and finals come from /v1/watch, followed for this conversation only.
"use strict";

(() => {
  const { el, clock } = Palabre;
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    banner: $("banner"),
    name: $("name"),
    room: $("room"),
    join: $("join"),
    joinLink: $("join-link"),
    copy: $("copy"),
    participants: $("participants"),
    language: $("language"),
    transport: $("transport"),
    mic: $("mic"),
    level: $("level"),
    conversation: $("conversation"),
    transcript: $("transcript"),
    empty: $("transcript-empty"),
    askForm: $("ask-form"),
    question: $("question"),
    answer: $("answer"),
    answerText: $("answer-text"),
    citations: $("citations"),
    summary: $("summary"),
    summaryMeta: $("summary-meta"),
  };

  const SAMPLE_RATE = 48000;
  const WEBRTC_CONNECT_MS = 8000;
  const ICE_GATHERING_MS = 3000;

  const state = {
    running: false, // the microphone is on (the user pressed Start)
    stopping: false, // `stop` sent, waiting for `closed`
    ws: null,
    ready: false,
    conversationId: Palabre.query.get("conversation"),
    sessionId: null, // of this page's live session: its events also come back on the watch channel
    clientId: clientId(),
    // A reload of a page that was streaming into this conversation resumes its track.
    resuming: Boolean(Palabre.query.get("conversation")) && sessionStorage.getItem("palabre.streamed") === Palabre.query.get("conversation"),
    unwatch: null, // stops following the conversation on /v1/watch
    names: new Map(), // speaker label → name (GET /v1/conversations/{id})
    present: [], // the participants streaming now (their tracks), from the watch channel
    active: null, // what carries the audio now: "webrtc" | "socket" | null
    stream: null,
    ctx: null,
    source: null,
    worklet: null,
    analyser: null,
    meterTimer: null,
    pc: null,
    offerPending: false, // `webrtc.offer` sent, no answer yet
    rtcTimer: null,
    retries: 0,
    retryTimer: null,
    lastSeq: -1, // the seq of the last final received: a reconnection resumes after it
    utterances: new Map(), // utterance_id → <li>
    answerId: null,
  };

  ui.transport.value = Palabre.query.get("transport") === "socket" ? "socket" : "webrtc";
  ui.name.value = localStorage.getItem("palabre.name") || "";

  // Who this browser tab is to the server: made once, kept across reloads of the tab (not shared
  // with other tabs), so that resuming never takes over another participant's session.
  function clientId() {
    let id = sessionStorage.getItem("palabre.client_id");
    if (!id) {
      id = crypto.randomUUID ? crypto.randomUUID() : `c${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
      sessionStorage.setItem("palabre.client_id", id);
    }
    return id;
  }

  const myName = () => ui.name.value.trim();
  ui.language.value = pageLanguage(Palabre.query.get("language"), navigator.languages || [navigator.language]);

  // The language asked for: ?language= when the page offers it, else the first of the browser's
  // languages it offers ("fr-FR" → French), else the page's default (English).
  function pageLanguage(asked, browserLanguages) {
    const offered = new Set(Array.from(ui.language.options, (option) => option.value));
    if (asked && offered.has(asked)) return asked;
    for (const tag of browserLanguages) {
      const code = String(tag || "").toLowerCase().split("-")[0];
      if (offered.has(code)) return code;
    }
    return ui.language.value;
  }

  // --- status and errors ------------------------------------------------------------------------

  const setStatus = (kind, text) => Palabre.status(ui.status, kind, text);
  const showBanner = (kind, message) => Palabre.banner(ui.banner, kind, message);

  function micMessage(error) {
    if (!navigator.mediaDevices) {
      return "This page cannot use the microphone here: open it over https:// or from localhost.";
    }
    switch (error && error.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and press Start again.";
      case "NotFoundError":
        return "No microphone was found. Plug one in and press Start again.";
      case "NotReadableError":
        return "The microphone is busy in another application.";
      default:
        return `The microphone could not be opened: ${error && error.message ? error.message : error}`;
    }
  }

  // --- start and stop ---------------------------------------------------------------------------

  async function start() {
    if (!myName()) {
      showBanner("info", "Enter your name first: the others see your words under it.");
      ui.name.focus();
      return;
    }
    localStorage.setItem("palabre.name", myName());
    showBanner(null);
    ui.mic.disabled = true;
    setStatus("connecting", "opening microphone…");
    try {
      if (!navigator.mediaDevices) throw new Error("no mediaDevices");
      state.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
    } catch (error) {
      ui.mic.disabled = false;
      setStatus("error", "microphone blocked");
      showBanner("error", micMessage(error));
      return;
    }
    state.running = true;
    state.stopping = false;
    state.retries = 0;
    ui.mic.textContent = "Stop";
    ui.mic.classList.add("recording");
    ui.mic.disabled = false;
    ui.language.disabled = ui.transport.disabled = ui.name.disabled = ui.room.disabled = true;
    try {
      state.ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
      await state.ctx.resume();
      state.source = state.ctx.createMediaStreamSource(state.stream);
      startMeter();
    } catch (error) {
      state.ctx = null; // the level meter and the socket path need it; WebRTC does not
    }
    connect();
  }

  function stop() {
    state.running = false;
    clearTimeout(state.retryTimer);
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN && state.ready) {
      state.stopping = true;
      ws.send(JSON.stringify({ type: "stop" }));
      setStatus("connecting", "finishing…");
    } else {
      if (ws) ws.close();
      state.ws = null;
      finished();
    }
    stopAudio();
    for (const track of state.stream ? state.stream.getTracks() : []) track.stop();
    state.stream = null;
    stopMeter();
    if (state.ctx) state.ctx.close();
    state.ctx = state.source = null;
    ui.mic.textContent = "Start microphone";
    ui.mic.classList.remove("recording");
  }

  function finished() {
    state.stopping = false;
    state.ready = false;
    ui.language.disabled = ui.transport.disabled = ui.name.disabled = ui.room.disabled = false;
    for (const li of state.utterances.values()) {
      if (!li.classList.contains("final")) li.remove();
    }
    setStatus("idle", "stopped");
  }

  // --- the socket -------------------------------------------------------------------------------

  function connect() {
    const ws = new WebSocket(Palabre.wsUrl("/v1/stream"));
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    state.ready = false;
    let opened = false;
    setStatus("connecting", "connecting…");
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify(startMessage()));
    };
    ws.onmessage = (message) => {
      if (typeof message.data === "string") onEvent(JSON.parse(message.data));
    };
    ws.onclose = (close) => onSocketClosed(ws, close, opened);
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function wantsWebRtc() {
    return ui.transport.value === "webrtc" && typeof RTCPeerConnection === "function";
  }

  function startMessage() {
    const message = { type: "start", language: ui.language.value, track: myName(), client_id: state.clientId };
    if (ui.room.checked) message.diarize = true;
    if (wantsWebRtc()) {
      message.transport = "webrtc"; // 48 kHz mono PCM16: also what the socket fallback sends
    } else {
      Object.assign(message, { transport: "socket", sample_rate: SAMPLE_RATE, encoding: "pcm_s16le", channels: 1 });
    }
    if (state.conversationId) message.conversation_id = state.conversationId;
    // Reconnecting (or reloaded): the server lets the session that lost us store its last finals,
    // then replays those of our track we did not receive (the utterance cut by the drop, usually).
    if (state.conversationId && (state.retries > 0 || state.resuming)) message.resume_after = state.lastSeq;
    return message;
  }

  function onSocketClosed(ws, close, opened) {
    if (ws !== state.ws) return;
    state.ws = null;
    state.ready = false;
    stopAudio();
    if (!state.running) {
      finished();
      return;
    }
    if (close.code === 1008) {
      showBanner("error", `The server refused the connection (${close.reason || "policy"}). Check the page's token.`);
      stop();
      return;
    }
    const delay = Palabre.backoff(state.retries++);
    const why = opened ? "The connection to the server was lost." : "The server cannot be reached.";
    showBanner("warn", `${why} Reconnecting in ${Math.round(delay / 1000)} s; the conversation continues when it is back.`);
    setStatus("reconnecting", "reconnecting…");
    state.retryTimer = setTimeout(() => {
      if (state.running) connect();
    }, delay);
  }

  // --- events -----------------------------------------------------------------------------------

  function onEvent(event) {
    switch (event.type) {
      case "ready":
        return onReady(event);
      case "webrtc.answer":
        return onAnswerSdp(event);
      case "speech_started":
        return upsertUtterance(event.utterance_id, myName(), event.start, "", "");
      case "partial":
        return upsertUtterance(event.utterance_id, myName(), event.start, event.stable, event.unstable);
      case "speech_stopped": {
        const li = state.utterances.get(event.utterance_id);
        if (li) li.classList.add("settling");
        return;
      }
      case "final":
        return onFinal(event, true);
      case "speakers":
        return onSpeakersMerged(event);
      case "summary":
        return renderSummary(event);
      case "answer.delta":
        return onAnswerDelta(event);
      case "answer.done":
        return onAnswerDone(event);
      case "error":
        return onError(event);
      case "closed":
        return; // the server closes the socket next
      default:
        return; // events this page does not show
    }
  }

  function onReady(event) {
    state.ready = true;
    const resumed = state.retries > 0;
    state.retries = 0;
    state.resuming = false;
    state.sessionId = event.session_id;
    state.conversationId = event.conversation_id;
    sessionStorage.setItem("palabre.streamed", event.conversation_id);
    ui.conversation.textContent = `conversation ${event.conversation_id}`;
    const url = new URL(location.href);
    url.searchParams.set("conversation", event.conversation_id);
    history.replaceState(null, "", url);
    follow(event.conversation_id);
    if (resumed) showBanner("info", "Reconnected: the conversation continues.");
    if (ui.summaryMeta.textContent === "· final") ui.summaryMeta.textContent = "· until the last stop";
    if (wantsWebRtc()) startWebRtc();
    else startSocketAudio(false);
  }

  function onError(event) {
    const webrtcCodes = ["bad_offer", "webrtc_failed"];
    if (webrtcCodes.includes(event.code) || (event.code === "unavailable" && state.offerPending)) {
      fallback(event.message);
      return;
    }
    if (event.code === "bad_start") {
      showBanner("error", `The server refused to start: ${event.message}`);
      stop();
      return;
    }
    if (["bad_ask", "conversation_not_found", "unavailable"].includes(event.code) && state.answerId) {
      ui.answer.classList.remove("streaming");
      ui.answerText.textContent = `No answer: ${event.message}`;
      ui.answerText.classList.add("error-text");
      return;
    }
    showBanner("error", `Server error (${event.code}): ${event.message}`);
  }

  // --- transcript -------------------------------------------------------------------------------

  function upsertUtterance(id, speaker, startSeconds, stable, unstable) {
    let li = state.utterances.get(id);
    if (li && li.classList.contains("final")) return li;
    if (!li) {
      li = el(
        "li",
        { class: "utterance partial", dataset: { utteranceId: id } },
        el("span", { class: "time" }, clock(startSeconds)),
        Palabre.who(speaker),
        el("span", { class: "text" }),
      );
      state.utterances.set(id, li);
      Palabre.insertUtterance(ui.transcript, li);
      ui.empty.hidden = true;
    }
    const text = li.querySelector(".text");
    text.replaceChildren(
      el("span", { class: "stable" }, stable),
      el("span", { class: "unstable" }, unstable || (stable ? "" : "…")),
    );
    scrollTranscript();
    return li;
  }

  /** A final: of this page's track (`own`: a reconnection resumes after its seq) or another's. */
  function onFinal(event, own) {
    if (own && Number.isInteger(event.seq)) state.lastSeq = Math.max(state.lastSeq, event.seq);
    const li = state.utterances.get(event.utterance_id);
    if (!event.text) {
      if (li) li.remove();
      state.utterances.delete(event.utterance_id);
      return;
    }
    const speaker = Palabre.speakerOf(event, state.names);
    const node = li || upsertUtterance(event.utterance_id, speaker, event.start, "", "");
    node.classList.remove("partial", "settling");
    node.classList.add("final");
    node.dataset.speaker = event.speaker || "";
    node.querySelector(".time").textContent = clock(event.start);
    node.querySelector(".who").replaceWith(Palabre.who(speaker));
    node.querySelector(".text").textContent = event.text;
    scrollTranscript();
  }

  /** Two speaker labels were one speaker: the merged label's finals show the kept one. */
  function onSpeakersMerged(event) {
    for (const [from, to] of Object.entries(event.merged || {})) {
      for (const li of ui.transcript.querySelectorAll(`li[data-speaker="${CSS.escape(from)}"]`)) {
        li.dataset.speaker = to;
        li.querySelector(".who").replaceWith(Palabre.who(state.names.get(to) || to));
      }
    }
  }

  function scrollTranscript() {
    const box = ui.transcript;
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
  }

  async function loadHistory() {
    if (!state.conversationId) return;
    try {
      const body = await Palabre.getJson(`/v1/conversations/${encodeURIComponent(state.conversationId)}`);
      for (const s of body.speakers || []) if (s.name) state.names.set(s.label, s.name);
      for (const u of body.utterances) onFinal(u, state.resuming && u.track === myName());
      if (body.summary) {
        renderSummary({ items: body.summary.items, method: body.summary.method, final: false });
      }
      ui.conversation.textContent = `conversation ${state.conversationId}`;
    } catch (error) {
      if (!String(error.message).startsWith("404")) showBanner("warn", `Could not load the conversation: ${error.message}`);
    }
  }

  // --- the other participants -------------------------------------------------------------------

  /** Follow the conversation on /v1/watch (once): the other participants' words and presence. */
  function follow(conversationId) {
    showJoinLink(conversationId);
    if (state.unwatch) return;
    state.unwatch = Palabre.watch(conversationId, onWatch, (kind) => {
      if (kind === "refused") showBanner("warn", "The other participants' words need a token with the read scope.");
    });
  }

  function onWatch(message) {
    switch (message.type) {
      case "snapshot":
        return showParticipants(message.conversations[0]?.participants || []);
      case "conversation.started":
      case "conversation.updated":
        return showParticipants(message.participants);
      case "conversation.ended":
        return showParticipants([]);
    }
    if (message.session_id === state.sessionId) return; // this page's own: they came on /v1/stream
    switch (message.type) {
      case "speech_started":
      case "partial":
        return upsertUtterance(message.utterance_id, message.track, message.start, message.stable || "", message.unstable || "");
      case "speech_stopped":
        return state.utterances.get(message.utterance_id)?.classList.add("settling");
      case "final":
        return onFinal(message, false);
      case "summary":
        return renderSummary(message);
    }
  }

  function showParticipants(tracks) {
    state.present = tracks;
    const names = [...new Set([...(state.ready ? [myName()] : []), ...tracks])];
    ui.participants.replaceChildren(...names.map((name) => el("li", {}, Palabre.who(name))));
  }

  function showJoinLink(conversationId) {
    const url = new URL("/", location.href);
    url.searchParams.set("conversation", conversationId);
    ui.joinLink.value = url.toString();
    ui.join.hidden = false;
  }

  async function copyJoinLink() {
    ui.joinLink.select();
    try {
      await navigator.clipboard.writeText(ui.joinLink.value);
      ui.copy.textContent = "Copied";
    } catch (error) {
      document.execCommand("copy"); // no clipboard API (plain http): the selected text
      ui.copy.textContent = "Copied";
    }
    setTimeout(() => (ui.copy.textContent = "Copy"), 1500);
  }

  // --- summary ----------------------------------------------------------------------------------

  function renderSummary(event) {
    ui.summary.replaceChildren(Palabre.summaryList(event.items, (id) => jumpTo(id)));
    ui.summaryMeta.textContent = event.final ? "· final" : `· ${event.method}, updated ${new Date().toLocaleTimeString()}`;
  }

  // --- ask --------------------------------------------------------------------------------------

  function ask(question) {
    const answerId = `a${Date.now().toString(36)}`;
    state.answerId = answerId;
    ui.answer.hidden = false;
    ui.answer.classList.add("streaming");
    ui.answerText.classList.remove("error-text");
    ui.answerText.textContent = "";
    ui.citations.replaceChildren();
    const message = { type: "ask", question, answer_id: answerId };
    if (state.conversationId) message.conversation_id = state.conversationId;
    else message.scope = "tenant";
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(message));
      return;
    }
    // No stream open (stopped, or never started): a short-lived socket just for the answer.
    const side = new WebSocket(Palabre.wsUrl("/v1/stream"));
    side.onopen = () => side.send(JSON.stringify(message));
    side.onmessage = (m) => {
      const event = JSON.parse(m.data);
      onEvent(event);
      if (event.type === "answer.done" || event.type === "error") side.close();
    };
    side.onerror = () => {
      ui.answer.classList.remove("streaming");
      ui.answerText.textContent = "The server cannot be reached to answer.";
      ui.answerText.classList.add("error-text");
    };
  }

  function onAnswerDelta(event) {
    if (event.answer_id !== state.answerId) return;
    ui.answerText.textContent += event.text;
  }

  function onAnswerDone(event) {
    if (event.answer_id !== state.answerId) return;
    ui.answer.classList.remove("streaming");
    ui.answerText.textContent = event.text;
    const passages = new Map(event.passages.map((p) => [p.utterance_id, p]));
    ui.citations.replaceChildren(
      ...event.citations.map((id) => {
        const passage = passages.get(id);
        const label = passage ? `${clock(passage.start)}  ${passage.text}` : id;
        return el(
          "li",
          {},
          el("button", { type: "button", class: "cite", dataset: { utteranceId: id }, title: "Show in the transcript", onclick: () => jumpTo(id, passage) }, label),
        );
      }),
    );
  }

  function jumpTo(id, passage) {
    for (const node of ui.transcript.querySelectorAll(".highlight")) node.classList.remove("highlight");
    let li = state.utterances.get(id);
    if (!li && passage) {
      onFinal({ utterance_id: id, text: passage.text, start: passage.start, speaker: passage.speaker }); // cited from before this page
      li = state.utterances.get(id);
    }
    if (!li) return;
    li.classList.add("highlight");
    li.scrollIntoView({ block: "center", behavior: "smooth" });
  }

  // --- audio: WebRTC ----------------------------------------------------------------------------

  async function startWebRtc() {
    state.active = "webrtc";
    setStatus("connecting", "connecting WebRTC…");
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: [] });
      state.pc = pc;
      for (const track of state.stream.getAudioTracks()) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [state.stream] });
      }
      pc.onconnectionstatechange = () => {
        if (pc !== state.pc) return;
        if (pc.connectionState === "connected") {
          clearTimeout(state.rtcTimer);
          setStatus("live", "live · WebRTC");
        } else if (pc.connectionState === "failed") {
          fallback("the connection failed");
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc);
      if (pc !== state.pc) return;
      state.offerPending = true;
      send({ type: "webrtc.offer", sdp: pc.localDescription.sdp });
      state.rtcTimer = setTimeout(() => {
        if (pc === state.pc && pc.connectionState !== "connected") fallback(`no connection within ${WEBRTC_CONNECT_MS / 1000} s`);
      }, WEBRTC_CONNECT_MS);
    } catch (error) {
      if (!pc || pc === state.pc) fallback(error.message || String(error));
    }
  }

  function iceGathered(pc) {
    // The server takes no trickled candidates: the offer goes once gathering completes.
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, ICE_GATHERING_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function onAnswerSdp(event) {
    state.offerPending = false;
    if (!state.pc) return;
    try {
      await state.pc.setRemoteDescription({ type: "answer", sdp: event.sdp });
    } catch (error) {
      fallback(`bad answer: ${error.message}`);
    }
  }

  function fallback(reason) {
    if (!state.running || state.active !== "webrtc") return;
    closePeer();
    showBanner("info", `WebRTC is unavailable (${reason}); sending the audio over the WebSocket instead.`);
    startSocketAudio(true);
  }

  function closePeer() {
    clearTimeout(state.rtcTimer);
    state.offerPending = false;
    if (state.pc) state.pc.close();
    state.pc = null;
  }

  // --- audio: the socket ------------------------------------------------------------------------

  async function startSocketAudio(isFallback) {
    state.active = "socket";
    try {
      if (!state.ctx) throw new Error("Web Audio is not available");
      if (!state.ctx.workletLoaded) {
        await state.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
        state.ctx.workletLoaded = true;
      }
      if (!state.running || state.active !== "socket") return;
      const node = new AudioWorkletNode(state.ctx, "pcm16-capture", { numberOfOutputs: 1, outputChannelCount: [1] });
      node.port.onmessage = (message) => {
        if (state.active === "socket" && state.ready && state.ws && state.ws.readyState === WebSocket.OPEN) {
          state.ws.send(message.data);
        }
      };
      const mute = state.ctx.createGain();
      mute.gain.value = 0; // pulled by the destination, heard by nobody
      state.source.connect(node).connect(mute).connect(state.ctx.destination);
      state.worklet = node;
      setStatus("live", isFallback ? "live · WebSocket (fallback)" : "live · WebSocket");
    } catch (error) {
      showBanner("error", `The audio cannot be captured: ${error.message || error}`);
      stop();
    }
  }

  function stopAudio() {
    closePeer();
    if (state.worklet) {
      state.worklet.port.onmessage = null;
      state.worklet.disconnect();
      if (state.source) state.source.disconnect(state.worklet);
    }
    state.worklet = null;
    state.active = null;
  }

  // --- level meter ------------------------------------------------------------------------------

  function startMeter() {
    state.analyser = state.ctx.createAnalyser();
    state.analyser.fftSize = 512;
    state.source.connect(state.analyser);
    const samples = new Float32Array(state.analyser.fftSize);
    state.meterTimer = setInterval(() => {
      state.analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      ui.level.style.width = `${Math.min(100, Math.round(Math.sqrt(peak) * 100))}%`;
    }, 100);
  }

  function stopMeter() {
    clearInterval(state.meterTimer);
    state.analyser = null;
    ui.level.style.width = "0";
  }

  // --- wiring -----------------------------------------------------------------------------------

  ui.mic.addEventListener("click", () => (state.running ? stop() : start()));
  ui.copy.addEventListener("click", copyJoinLink);
  ui.askForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = ui.question.value.trim();
    if (question) ask(question);
  });
  window.addEventListener("beforeunload", () => {
    if (state.running) send({ type: "stop" });
  });
  loadHistory();
  if (state.conversationId) follow(state.conversationId);
})();
