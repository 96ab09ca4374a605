// Helpers shared by the meeting page and the dashboard (no framework, no build step).
"use strict";

const Palabre = (() => {
  const query = new URLSearchParams(location.search);
  const token = query.get("token");

  /** The WebSocket URL of a server path, carrying ?token= when the page was given one. */
  function wsUrl(path) {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  /** The HTTP URL of a server path, with the token. */
  function httpUrl(path) {
    const url = new URL(path, location.href);
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  /** GET a JSON resource; throws an Error with the server's message when it is not 2xx. */
  async function getJson(path) {
    const response = await fetch(httpUrl(path), { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = body.error ? body.error.message : response.statusText;
      throw new Error(`${response.status} ${message}`);
    }
    return body;
  }

  /** Seconds as m:ss (or h:mm:ss). */
  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  /** A DOM element: el("li", {class: "x", dataset: {id: 1}}, "text", child). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Show a message in a banner element ("error", "warn" or "info"); null hides it. */
  function banner(node, kind, message) {
    if (!message) {
      node.hidden = true;
      node.textContent = "";
      return;
    }
    node.className = `banner ${kind}`;
    node.textContent = message;
    node.hidden = false;
  }

  /** Set a status pill: its class (idle, connecting, live, reconnecting, error) and text. */
  function status(node, kind, text) {
    node.className = `pill ${kind}`;
    node.textContent = text;
  }

  /** The position of an utterance in its conversation: the number after the last ':' of its id. */
  function seqOf(utteranceId) {
    return Number(String(utteranceId).split(":").pop());
  }

  /** Insert an utterance's <li> (data-utterance-id) into a list ordered by seq. */
  function insertUtterance(list, li) {
    const seq = seqOf(li.dataset.utteranceId);
    for (const other of list.children) {
      if (seqOf(other.dataset.utteranceId) > seq) {
        list.insertBefore(li, other);
        return;
      }
    }
    list.append(li);
  }

  /**
   * Who said an utterance (a `final`, a stored utterance, a watch event): its speaker's name
   * (`names`: label → name, or the utterance's `speaker_name`), else its speaker label, else its
   * track (a participant's name); null when unknown.
   */
  function speakerOf(u, names) {
    return (names && names.get(u.speaker)) || u.speaker_name || u.speaker || u.track || null;
  }

  /** A stable colour per speaker: a hue from the name's hash. */
  function colourOf(name) {
    let hash = 0;
    for (const char of String(name)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return `hsl(${hash % 360} 60% 38%)`;
  }

  /** A speaker's name in their colour (an empty span when unknown). */
  function who(name) {
    return el("span", { class: "who", style: name ? `--who: ${colourOf(name)}` : null, title: name }, name || "");
  }

  /**
   * Follow /v1/watch (of one conversation when `conversationId` is given), reconnecting with
   * backoff: `onMessage(message)` for each message, `onState("live" | "reconnecting" |
   * "refused", close)` on changes. Returns a function that stops following.
   */
  function watch(conversationId, onMessage, onState) {
    let ws = null;
    let retries = 0;
    let timer = null;
    let stopped = false;
    const connect = () => {
      const url = new URL(wsUrl("/v1/watch"));
      if (conversationId) url.searchParams.set("conversation_id", conversationId);
      const socket = new WebSocket(url);
      ws = socket;
      socket.onmessage = (message) => {
        const data = JSON.parse(message.data);
        if (data.type === "snapshot") {
          retries = 0;
          onState("live");
        }
        onMessage(data);
      };
      socket.onclose = (close) => {
        if (socket !== ws || stopped) return;
        if (close.code === 1008) return onState("refused", close);
        onState("reconnecting", close, backoff(retries));
        timer = setTimeout(connect, backoff(retries++));
      };
    };
    connect();
    return () => {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close();
    };
  }

  /** Reconnection delays: 1, 2, 4, 8, then 10 s. */
  function backoff(attempt) {
    return Math.min(1000 * 2 ** attempt, 10000);
  }

  const SECTION_TITLES = { key_points: "Key points", decisions: "Decisions", action_items: "Action items" };

  /**
   * A summary's items (`summary` events, `summary.items` of /v1/conversations/{id}) as lists, one
   * per section with its title. An item with utterances is a link: `jump(utteranceId)` shows the
   * first one.
   */
  function summaryList(items, jump) {
    const box = el("div", {});
    if (!items || !items.length) {
      box.append(el("p", { class: "empty" }, "Nothing to summarise yet."));
      return box;
    }
    let list = null;
    let section;
    for (const item of items) {
      if (!list || item.section !== section) {
        section = item.section;
        if (section) box.append(el("h4", {}, SECTION_TITLES[section] || section));
        list = el("ul", {});
        box.append(list);
      }
      const ids = item.utterance_ids || [];
      const text = ids.length
        ? el("a", { href: "#", title: ids.join(", "), onclick: (e) => { e.preventDefault(); jump(ids[0]); } }, item.text)
        : item.text;
      list.append(el("li", {}, text));
    }
    return box;
  }

  return {
    query, token, wsUrl, httpUrl, getJson, clock, el, banner, status, backoff, seqOf, insertUtterance, summaryList,
    speakerOf, colourOf, who, watch,
  };
})();
