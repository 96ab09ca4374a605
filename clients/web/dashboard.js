// The dashboard: running conversations and server figures from the /v1/watch channel.
//
// The watch socket sends a `snapshot`, then conversation.started/updated/ended, speech_started/stopped,
// partial, final, summary (each with conversation_id) and `stats` every 2 s. Each conversation
// lists its participants (the tracks of its live sessions, and the speakers of its finals).
// Selecting a conversation loads its stored utterances and speakers over HTTP, then follows it
// live from the same channel.
"use strict";

(() => {
  const { el, clock } = Palabre;
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    banner: $("banner"),
    rows: document.querySelector("#conversations tbody"),
    none: $("no-conversations"),
    detailTitle: $("detail-title"),
    detailBody: $("detail-body"),
    transcript: $("d-transcript"),
    speakers: $("d-speakers"),
    summary: $("d-summary"),
  };

  const RECENT = 8;

  const state = {
    conversations: new Map(), // conversation_id → view (as in the snapshot) + {ended, row}
    selected: null,
    utterances: new Map(), // utterance_id → <li> of the selected conversation
  };

  // --- the watch channel ------------------------------------------------------------------------

  function onWatchState(kind, close, delay) {
    if (kind === "refused") {
      Palabre.status(ui.status, "error", "refused");
      Palabre.banner(ui.banner, "error", "The server refused the watch channel: this page needs a token with the read scope (?token=…).");
    } else if (kind === "reconnecting") {
      Palabre.status(ui.status, "reconnecting", "reconnecting…");
      Palabre.banner(ui.banner, "warn", `Lost the connection to the server. Retrying in ${Math.round(delay / 1000)} s.`);
    }
  }

  function onMessage(message) {
    switch (message.type) {
      case "snapshot":
        return onSnapshot(message);
      case "stats":
        return renderFigures(message);
      case "conversation.started":
      case "conversation.updated":
        return upsertConversation(message);
      case "conversation.ended":
        return onEnded(message);
      default:
        return onConversationEvent(message);
    }
  }

  function onSnapshot(message) {
    Palabre.status(ui.status, "live", "live");
    Palabre.banner(ui.banner, null);
    for (const view of state.conversations.values()) {
      if (!view.ended) markEnded(view); // what ran before a reconnection and is gone now
    }
    for (const view of message.conversations) upsertConversation(view);
    renderFigures(message.stats);
    if (state.selected) select(state.selected); // catch up on what was missed
    loadRecent();
  }

  /** The latest stored conversations that are not running, below the running ones. */
  async function loadRecent() {
    try {
      const body = await Palabre.getJson(`/v1/conversations?limit=${RECENT}`);
      for (const row of body.conversations) {
        if (state.conversations.has(row.id)) continue;
        const view = {
          conversation_id: row.id,
          language: row.language,
          utterances: row.utterance_count,
          last_final: "",
          final_latency_ms: null,
          transports: [],
          participants: [],
          ended: true,
          history: true,
        };
        state.conversations.set(row.id, view);
        renderRow(view);
      }
    } catch (error) {
      // the list of running conversations does not depend on it
    }
  }

  // --- conversations ----------------------------------------------------------------------------

  function upsertConversation(data) {
    const known = state.conversations.get(data.conversation_id);
    const view = Object.assign(known || {}, data, { ended: false, history: false });
    delete view.type;
    view.speakers = new Set([...(view.speakers || []), ...(data.participants || [])]);
    state.conversations.set(view.conversation_id, view);
    renderRow(view);
    return view;
  }

  function onEnded(message) {
    const view = state.conversations.get(message.conversation_id);
    if (view) markEnded(view);
  }

  function markEnded(view) {
    view.ended = true;
    view.speaking = false;
    renderRow(view);
  }

  function onConversationEvent(event) {
    const view = state.conversations.get(event.conversation_id);
    if (!view) return;
    switch (event.type) {
      case "speech_started":
        view.speaking = true;
        break;
      case "final":
        view.speaking = false;
        if (event.text && Palabre.speakerOf(event)) view.speakers.add(Palabre.speakerOf(event));
        if (event.text) {
          view.utterances += 1;
          view.last_final = event.text;
          if (event.final_latency_ms !== null && event.final_latency_ms !== undefined) view.final_latency_ms = event.final_latency_ms;
        }
        break;
      case "summary":
        view.summary = event.items;
        break;
      case "partial":
      case "speech_stopped":
        break;
      default:
        return;
    }
    renderRow(view);
    if (event.conversation_id === state.selected) followEvent(event);
  }

  function renderRow(view) {
    const state_ = view.ended ? "ended" : view.speaking ? "speaking" : "listening";
    const row = el(
      "tr",
      {
        class: `${state_}${view.history ? " history" : ""}${view.conversation_id === state.selected ? " selected" : ""}`,
        dataset: { conversationId: view.conversation_id },
        tabindex: 0,
        onclick: () => select(view.conversation_id),
        onkeydown: (e) => { if (e.key === "Enter") select(view.conversation_id); },
      },
      el("td", {}, el("span", { class: `dot ${state_}` }), el("span", { class: "state" }, state_)),
      el("td", { class: "mono" }, view.conversation_id, view.language ? el("span", { class: "muted small" }, ` · ${view.language}`) : null),
      el("td", {}, (view.transports || []).join(", ") || "–"),
      el("td", { class: "participants-cell" }, ...[...(view.speakers || [])].map((name) => Palabre.who(name))),
      el("td", { class: "num" }, view.utterances),
      el("td", { class: "last-final", title: view.last_final || "" }, view.last_final || el("span", { class: "muted" }, "–")),
      el("td", { class: "num" }, view.final_latency_ms === null || view.final_latency_ms === undefined ? "–" : `${Math.round(view.final_latency_ms)} ms`),
    );
    if (view.row && view.row.isConnected) view.row.replaceWith(row);
    else if (view.history) ui.rows.append(row);
    else ui.rows.prepend(row);
    view.row = row;
    ui.none.hidden = [...state.conversations.values()].some((v) => !v.ended);
  }

  // --- the followed conversation ----------------------------------------------------------------

  async function select(conversationId) {
    state.selected = conversationId;
    for (const view of state.conversations.values()) view.row.classList.toggle("selected", view.conversation_id === conversationId);
    ui.detailTitle.replaceChildren("Conversation", el("span", { class: "id mono" }, conversationId));
    ui.detailBody.hidden = false;
    state.utterances.clear();
    ui.transcript.replaceChildren();
    ui.summary.replaceChildren(el("p", { class: "empty" }, "No summary yet."));
    ui.speakers.replaceChildren();
    try {
      const body = await Palabre.getJson(`/v1/conversations/${encodeURIComponent(conversationId)}`);
      if (state.selected !== conversationId) return;
      renderSpeakers(body.speakers || []);
      for (const u of body.utterances) {
        if (!state.utterances.has(u.utterance_id)) showFinal(u);
      }
      if (body.summary) renderSummary(body.summary.items);
      else if (state.conversations.get(conversationId)?.summary) renderSummary(state.conversations.get(conversationId).summary);
    } catch (error) {
      if (!String(error.message).startsWith("404")) Palabre.banner(ui.banner, "warn", `Could not load ${conversationId}: ${error.message}`);
    }
  }

  function followEvent(event) {
    if (event.type === "partial" || event.type === "speech_started") {
      const li = utteranceItem(event.utterance_id, event.start, event.track);
      if (li.classList.contains("final")) return;
      li.querySelector(".text").textContent = event.text || "…";
    } else if (event.type === "final") {
      if (event.text) showFinal(event);
      else {
        state.utterances.get(event.utterance_id)?.remove();
        state.utterances.delete(event.utterance_id);
      }
    } else if (event.type === "summary") {
      renderSummary(event.items);
    }
  }

  /** Who spoke in the selected conversation, with their talk time. */
  function renderSpeakers(speakers) {
    ui.speakers.replaceChildren(
      ...speakers.map((s) => el("li", {}, Palabre.who(s.name || s.label), ` ${clock(s.talk_time_s)} · ${s.utterances}`)),
    );
  }

  function utteranceItem(id, start, speaker) {
    let li = state.utterances.get(id);
    if (!li) {
      li = el(
        "li",
        { class: "utterance partial", dataset: { utteranceId: id } },
        el("span", { class: "time" }, clock(start)),
        Palabre.who(speaker),
        el("span", { class: "text" }),
      );
      state.utterances.set(id, li);
      Palabre.insertUtterance(ui.transcript, li);
    }
    return li;
  }

  function showFinal(u) {
    const li = utteranceItem(u.utterance_id, u.start, Palabre.speakerOf(u));
    li.querySelector(".who").replaceWith(Palabre.who(Palabre.speakerOf(u)));
    li.classList.remove("partial");
    li.classList.add("final");
    li.querySelector(".text").textContent = u.text;
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function renderSummary(items) {
    ui.summary.replaceChildren(Palabre.summaryList(items, (id) => state.utterances.get(id)?.scrollIntoView({ block: "nearest" })));
  }

  // --- figures ----------------------------------------------------------------------------------

  function renderFigures(stats) {
    if (!stats) return;
    $("f-sessions").textContent = stats.sessions;
    $("f-conversations").textContent = stats.conversations;
    $("f-audio").textContent = stats.audio_seconds_per_second.toFixed(2);
    const asr = stats.server && stats.server.asr;
    if (!asr) return;
    const sizes = Object.entries(asr.batch_sizes).map(([size, count]) => `${size}×${count}`);
    const batched = Object.entries(asr.batch_sizes).reduce((n, [size, count]) => n + size * count, 0);
    const mean = asr.mean_batch_recent ?? (asr.batches ? batched / asr.batches : null);
    $("f-batch").textContent = mean === null ? "–" : mean.toFixed(2);
    $("f-batches").textContent = sizes.length ? `batches: ${sizes.join(" · ")}` : "no batch yet";
    const wait = (ms) => (ms === null || ms === undefined ? "–" : Math.round(ms));
    $("f-wait").textContent = `${wait(asr.queue_wait_ms_p50)} / ${wait(asr.queue_wait_ms_p95)}`;
    $("f-workers").textContent = `${asr.busy_workers} / ${asr.workers}`;
    $("f-pending").textContent = `busy · ${asr.pending} queued`;
  }

  Palabre.watch(null, onMessage, onWatchState);
})();
