// The operations console: renders each snapshot the console streams (`GET /api/live`), and
// acts on stuck orders and dead letters with the operator's own token.
"use strict";

(() => {
  const WHO = "operator";
  const $ = (id) => document.getElementById(id);
  const esc = TM.esc;
  let live = null;
  let dryRunOf = null;

  function say(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  const age = (seconds) => {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    return `${(seconds / 3600).toFixed(1)} h`;
  };
  const count = (map, key) => (map && map[key]) || 0;
  // UUIDv7 ids begin with their time: the end tells orders apart.
  const short = (id) => String(id).slice(-8);

  function renderRates(snapshot) {
    const kinds = ["placed", "not_placed", "picked_up", "delivered", "cancelled"];
    $("rates").innerHTML = kinds.map((k) =>
      `<div class="rate"><span class="value" data-rate="${k}">${count(snapshot.rates, k).toFixed(1)}</span>` +
      `<span class="label">${k.replace("_", " ")} / s</span></div>`).join("");
    $("updated").textContent = snapshot.at
      ? `read ${new Date(snapshot.at).toLocaleTimeString()}; events counted since ${new Date(snapshot.counted_since).toLocaleTimeString()}`
      : "";
    const problems = snapshot.problems || [];
    $("problems").textContent = problems.length ? `Not read this time: ${problems.join("; ")}` : "";
    $("problems").hidden = !problems.length;
  }

  function renderHub(hub) {
    const stock = (hub.stock || []).map((f) =>
      `<tr data-food="${esc(f.food_id)}"><td>${esc(f.name || `food ${f.food_id}`)}</td>` +
      `<td class="n" data-stock="available">${esc(f.available)}</td>` +
      `<td class="n" data-stock="reserved">${esc(f.reserved)}</td>` +
      `<td class="n" data-stock="assigned">${esc(f.assigned)}</td></tr>`).join("");
    const riderStates = ["available", "reserved", "assigned", "delivering", "off_duty"];
    const riders = riderStates.map((s) =>
      `<div><span class="value" data-riders="${s}">${count(hub.riders, s)}</span>` +
      `<span class="label">${s.replace("_", " ")}</span></div>`).join("");
    const inFlight = Object.entries(hub.in_flight || {}).map(([state, n]) =>
      `<span class="pill" data-in-flight="${esc(state)}">${esc(state.replace("_", " "))} ${esc(n)}</span>`).join(" ");
    const orders = (hub.orders || []).map((o) =>
      `<li data-order="${esc(o.order_id)}" data-state="${esc(o.state)}"><code>${esc(short(o.order_id))}</code> ` +
      `<span class="state ${esc(o.state)}">${esc(o.state.replace("_", " "))}</span> ` +
      `<span class="muted">${age(o.age_seconds)}${o.agent_id ? ` · agent ${esc(o.agent_id)}` : ""}</span></li>`).join("");
    const oldest = (hub.orders || [])[0];
    const hour = hub.last_hour || {};
    const outcomes = ["placed", "delivered", "cancelled", "not_placed"].map((k) =>
      `<div><span class="value" data-last-hour="${k}">${count(hour, k)}</span><span class="label">${k.replace("_", " ")}</span></div>`).join("");
    const refusals = Object.entries(hub.refusals || {}).map(([reason, n]) =>
      `<li data-refusal="${esc(reason)}">${esc(reason.replace(/_/g, " "))}: <b>${esc(n)}</b></li>`).join("")
      || `<li class="muted">none</li>`;
    return `<article class="hub" id="hub-${esc(hub.id)}" data-hub="${esc(hub.id)}">
      <h2>${esc(hub.name)} <span class="muted">hub ${esc(hub.id)}</span></h2>
      <h3>Stock</h3>
      <table class="stock"><thead><tr><th>food</th><th class="n">available</th><th class="n">reserved</th><th class="n">assigned</th></tr></thead><tbody>${stock}</tbody></table>
      <h3>Riders</h3><div class="counts riders">${riders}</div>
      <h3>Orders in flight ${inFlight}</h3>
      <p class="oldest">oldest unfinished: <span data-oldest>${oldest ? `${esc(oldest.state.replace("_", " "))}, ${age(oldest.age_seconds)}` : "none"}</span></p>
      <ul class="orders">${orders || `<li class="muted">none</li>`}</ul>
      <h3>Last hour</h3><div class="counts">${outcomes}</div>
      <h3>Refusals, last 10 minutes</h3><ul class="refusals">${refusals}</ul>
    </article>`;
  }

  // Updates the rows of `tbody` in place, keyed by `attr`: a row's cells change only where
  // their HTML does, so that a button under the operator's pointer is not replaced by the next
  // snapshot. rows: [{key, cells: [html, ...]}]; `empty` is shown when there are none.
  function patchRows(tbody, attr, rows, empty) {
    const keep = new Set(rows.map((r) => r.key));
    for (const tr of [...tbody.children]) {
      if (!keep.has(tr.getAttribute(attr))) tr.remove();
    }
    if (!rows.length) {
      tbody.innerHTML = `<tr><td colspan="6" class="muted">${empty}</td></tr>`;
      return;
    }
    for (const row of rows) {
      let tr = [...tbody.children].find((t) => t.getAttribute(attr) === row.key);
      if (!tr) {
        tr = document.createElement("tr");
        tr.setAttribute(attr, row.key);
      }
      row.cells.forEach((html, i) => {
        let td = tr.children[i];
        if (!td) td = tr.appendChild(document.createElement("td"));
        if (td.dataset.html !== html) {
          td.innerHTML = html;
          td.dataset.html = html;
        }
      });
      tbody.appendChild(tr);
    }
  }

  function renderStuck(stuck) {
    patchRows($("stuck").querySelector("tbody"), "data-stuck", (stuck || []).map((o) => ({
      key: String(o.order_id),
      cells: [
        `<code>${esc(short(o.order_id))}</code>`, esc(o.hub_id), esc(o.state), age(o.age_seconds),
        o.lease_expired ? "expired" : esc(o.lease_holder || ""),
        o.state !== "reserving" ? `<button data-retry="${esc(o.order_id)}">Retry</button>`
          : `<button data-abort="${esc(o.order_id)}">Abort</button>`,
      ],
    })), "none");
  }

  function renderDeadLetters(queues) {
    patchRows($("dead-letters").querySelector("tbody"), "data-dlq", (queues || []).map((q) => ({
      key: q.queue,
      cells: [
        `<code>${esc(q.queue)}</code>`,
        `<span data-depth>${q.depth === null ? "–" : esc(q.depth)}</span>`,
        `<button data-dry-run="${esc(q.queue)}" ${q.depth ? "" : "disabled"}>Dry run</button> ` +
          `<button data-replay="${esc(q.queue)}" ${dryRunOf === q.queue ? "" : "disabled"}>Replay</button>`,
      ],
    })), "none");
  }

  function render(snapshot) {
    renderRates(snapshot);
    $("hubs").innerHTML = (snapshot.hubs || []).map(renderHub).join("");
    renderStuck(snapshot.stuck);
    renderDeadLetters(snapshot.dead_letters);
  }

  async function act(kind, id) {
    const { status, data } = await TM.call(WHO, "POST", `/api/orders/${id}/${kind}`);
    const what = data && (data.error || data.state || JSON.stringify(data));
    $("action-result").textContent = `${kind} ${short(id)}: ${status} ${what || ""}`;
    $("action-result").dataset.status = status;
  }

  async function dryRun(queue) {
    const { status, data } = await TM.call(WHO, "GET", `/api/dead-letters/${encodeURIComponent(queue)}`);
    if (status !== 200) {
      $("dry-run").textContent = `dry run of ${queue}: ${status} ${data && data.error}`;
      return;
    }
    dryRunOf = queue;
    const rows = data.messages.map((m) =>
      `<li>${esc(m.kind || "message")} ${m.order_id ? `for <code>${esc(short(m.order_id))}</code>` : ""}: ${esc(m.reason)}` +
      `${m.left ? ` <b>stays: ${esc(m.left)}</b>` : ""}</li>`).join("");
    $("dry-run").innerHTML = `<p data-dry-run-result="${esc(queue)}">Dry run of <code>${esc(queue)}</code>: ` +
      `<b>${esc(data.would_move)}</b> would move back to <code>${esc(data.target)}</code>, ${esc(data.would_leave)} would stay. Nothing moved.</p><ul>${rows}</ul>`;
    document.querySelectorAll(`button[data-replay]`).forEach((b) => { b.disabled = b.dataset.replay !== queue; });
  }

  async function replay(queue) {
    const { status, data } = await TM.call(WHO, "POST", `/api/dead-letters/${encodeURIComponent(queue)}/replay`);
    dryRunOf = null;
    $("dry-run").innerHTML = status === 200
      ? `<p data-replayed="${esc(queue)}">Moved <b>${esc(data.moved)}</b> back to <code>${esc(data.target)}</code>; ${esc(data.left.length)} stayed.</p>`
      : `<p>replay of ${esc(queue)}: ${status} ${esc(data && data.error)}</p>`;
  }

  document.addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    if (b.dataset.abort) act("abort", b.dataset.abort);
    else if (b.dataset.retry) act("retry", b.dataset.retry);
    else if (b.dataset.dryRun) dryRun(b.dataset.dryRun);
    else if (b.dataset.replay) replay(b.dataset.replay);
  });

  function connect() {
    if (live) live.stop();
    $("sign-in").hidden = true;
    $("signed-in").hidden = false;
    live = TM.stream(WHO, "/api/live", (name, data) => {
      if (name === "snapshot") render(JSON.parse(data));
    }, (state, status) => {
      $("link").textContent = state === "open" ? "live" : state;
      $("link").className = `link ${state}`;
      if (status === 401 || status === 403) {
        TM.setToken(WHO, "");
        say(status === 401 ? "The token was refused: sign in again." : "That token is not an operator's.");
        signIn();
      }
    });
  }

  let session = { identity: true, dev_sign_in: false };

  function signIn() {
    if (live) live.stop();
    $("signed-in").hidden = true;
    $("sign-in").hidden = false;
    $("dev-sign-in").hidden = !session.dev_sign_in;
  }

  $("use-token").addEventListener("click", () => {
    TM.setToken(WHO, $("token").value.trim());
    $("token").value = "";
    say("");
    connect();
  });
  $("dev-sign-in").addEventListener("click", async () => {
    const { status, data } = await TM.call(WHO, "POST", "/api/dev/token", { role: "operator", subject: "console-dev" });
    if (status === 200) {
      TM.setToken(WHO, data.token);
      say("");
      connect();
    } else say(`development sign-in: ${status}`);
  });
  $("sign-out").addEventListener("click", () => {
    TM.setToken(WHO, "");
    signIn();
  });

  (async () => {
    const { data } = await TM.call(WHO, "GET", "/api/session");
    if (data) session = data;
    if (!session.identity || TM.token(WHO)) connect();
    else signIn();
  })();
})();
