// Shared by the console and the customer page: the token, calls to the API, and server-sent
// events read with fetch (an EventSource cannot send a token).
"use strict";

const TM = (() => {
  const key = (who) => `tenminute.${who}.token`;

  function token(who) {
    return sessionStorage.getItem(key(who)) || "";
  }

  function setToken(who, value) {
    if (value) sessionStorage.setItem(key(who), value);
    else sessionStorage.removeItem(key(who));
  }

  function headers(who, extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = token(who);
    if (t) h.Authorization = `Bearer ${t}`;
    return h;
  }

  // Calls the API; answers {status, data} (data: the JSON body, or null).
  async function call(who, method, url, body, extra) {
    const h = headers(who, extra);
    if (body !== undefined) h["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      return { status: 0, data: { error: String(err) } };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { status: response.status, data };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Reads the server-sent events of `url`: onEvent(name, data, id) for each; onState(state,
  // status) with "open", "reconnecting", "ended" (204, or a final refusal: 401, 403, 404). A
  // dropped stream is opened again with Last-Event-ID. Returns {stop()}.
  function stream(who, url, onEvent, onState) {
    let stopped = false;
    let last = null;
    let controller = null;
    const state = onState || (() => {});

    async function readAll(response) {
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          let id = null;
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let text = colon < 0 ? "" : line.slice(colon + 1);
            if (text.startsWith(" ")) text = text.slice(1);
            if (field === "event") name = text;
            else if (field === "data") data.push(text);
            else if (field === "id") id = text;
          }
          if (id !== null) last = id;
          if (data.length) onEvent(name, data.join("\n"), id);
        }
      }
    }

    (async () => {
      while (!stopped) {
        controller = new AbortController();
        const h = headers(who, { Accept: "text/event-stream" });
        if (last) h["Last-Event-ID"] = last;
        let response;
        try {
          response = await fetch(url, { headers: h, signal: controller.signal });
        } catch (_) {
          if (stopped) return;
          state("reconnecting");
          await sleep(1000);
          continue;
        }
        if (response.status === 204) {
          state("ended", 204);
          return;
        }
        if (!response.ok) {
          state("ended", response.status);
          if ([400, 401, 403, 404].includes(response.status)) return;
          await sleep(1000);
          continue;
        }
        state("open");
        try {
          await readAll(response);
        } catch (_) {
          if (stopped) return;
        }
        if (stopped) return;
        state("reconnecting");
        await sleep(300);
      }
    })();

    return {
      stop() {
        stopped = true;
        if (controller) controller.abort();
      },
    };
  }

  const entities = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value === null || value === undefined ? "" : value)
    .replace(/[&<>"']/g, (c) => entities[c]);

  // A fresh key for a new order (the same for its retries).
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return `k-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  }

  return { token, setToken, call, stream, esc, newKey };
})();
