// The customer page: choose a dark store and a basket, place it, watch it move (the order's
// server-sent events, `GET /orders/{id}/events`), and cancel it while that is allowed.
"use strict";

(() => {
  const WHO = "customer";
  const $ = (id) => document.getElementById(id);
  const esc = TM.esc;
  let session = { identity: true, dev_sign_in: false };
  let watching = null;
  let current = null;

  function say(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  const LABELS = {
    pending: "being placed",
    placed: "placed: your rider is on the way to the store",
    not_placed: "not placed",
    picked_up: "picked up: on its way to you",
    delivered: "delivered",
    cancelling: "being cancelled",
    cancelled: "cancelled",
  };

  let names = {};

  async function loadHubs() {
    const foods = await TM.call(WHO, "GET", "/api/shop/foods");
    if (foods.status === 200) names = Object.fromEntries(foods.data.map((f) => [f.id, f.name]));
    const { status, data } = await TM.call(WHO, "GET", "/api/shop/hubs");
    if (status !== 200) {
      say(`The dark stores could not be read (${status}).`);
      return;
    }
    $("hub").innerHTML = data.map((h) => `<option value="${esc(h.id)}">${esc(h.name)}</option>`).join("");
    await loadFoods();
  }

  async function loadFoods() {
    const hub = $("hub").value;
    if (!hub) return;
    const { status, data } = await TM.call(WHO, "GET", `/api/shop/hubs/${hub}`);
    if (status !== 200) return;
    $("foods").querySelector("tbody").innerHTML = data.foods.map((f) =>
      `<tr data-food="${esc(f.food_id)}"><td>${esc(names[f.food_id] || `food ${f.food_id}`)}</td><td class="n">${esc(f.available)}</td>` +
      `<td><input type="number" min="0" max="20" value="0" data-quantity="${esc(f.food_id)}"></td></tr>`).join("");
  }

  function show(order) {
    current = order;
    $("order").hidden = false;
    $("order-id").textContent = order.order_id;
    $("order-status").textContent = order.status;
    $("order-status").dataset.status = order.status;
    $("order-reason").textContent = order.reason ? `(${order.reason.replace(/_/g, " ")})` : "";
    $("cancel").disabled = order.status !== "placed";
  }

  function step(status, data) {
    const li = document.createElement("li");
    li.dataset.step = status;
    li.innerHTML = `<b>${esc(LABELS[status] || status)}</b> <span class="muted">${new Date().toLocaleTimeString()}</span>`;
    $("timeline").appendChild(li);
    show(Object.assign({}, current, data, { status }));
  }

  function watch(orderId) {
    if (watching) watching.stop();
    $("timeline").innerHTML = "";
    watching = TM.stream(WHO, `/api/shop/orders/${orderId}/events`, (name, data) => {
      step(name, JSON.parse(data));
    });
  }

  $("place").addEventListener("click", async () => {
    const lines = [...document.querySelectorAll("input[data-quantity]")]
      .map((i) => ({ food_id: Number(i.dataset.quantity), quantity: Number(i.value) }))
      .filter((l) => l.quantity > 0);
    if (!lines.length) {
      say("Choose at least one food.");
      return;
    }
    say("");
    $("place").disabled = true;
    const body = { hub_id: Number($("hub").value), lines };
    if (!session.identity) body.customer_id = $("customer").value.trim() || "c-web";
    const { status, data } = await TM.call(WHO, "POST", "/api/shop/orders", body, { "Idempotency-Key": TM.newKey() });
    $("place").disabled = false;
    if (data && data.order_id) {
      show(data);
      watch(data.order_id);
    } else {
      say(`Not taken (${status}): ${data && data.error}`);
    }
    loadFoods();
  });

  $("cancel").addEventListener("click", async () => {
    if (!current) return;
    const body = session.identity ? {} : { customer_id: $("customer").value.trim() || "c-web" };
    const { status, data } = await TM.call(WHO, "POST", `/api/shop/orders/${current.order_id}/cancel`, body);
    $("cancel-result").textContent = status === 200 ? "Cancelled." : `${status}: ${(data && (data.reason || data.status || data.error)) || ""}`;
  });

  $("hub").addEventListener("change", loadFoods);

  function signedIn(name) {
    $("sign-in").hidden = true;
    $("signed-in").hidden = false;
    $("who").textContent = !session.identity ? "identity is off" : name ? `signed in as ${name}` : "signed in with a token";
    loadHubs();
  }

  function signIn() {
    $("signed-in").hidden = true;
    $("sign-in").hidden = false;
    $("dev-sign-in").hidden = !session.dev_sign_in;
  }

  $("dev-sign-in").addEventListener("click", async () => {
    const subject = $("customer").value.trim() || "c-web";
    const { status, data } = await TM.call(WHO, "POST", "/api/dev/token", { role: "customer", subject });
    if (status === 200) {
      TM.setToken(WHO, data.token);
      sessionStorage.setItem("tenminute.customer.name", subject);
      signedIn(subject);
    } else say(`development sign-in: ${status}`);
  });
  $("use-token").addEventListener("click", () => {
    TM.setToken(WHO, $("token").value.trim());
    $("token").value = "";
    sessionStorage.setItem("tenminute.customer.name", "");
    signedIn("");
  });
  $("sign-out").addEventListener("click", () => {
    TM.setToken(WHO, "");
    if (watching) watching.stop();
    signIn();
  });

  (async () => {
    const { data } = await TM.call(WHO, "GET", "/api/session");
    if (data) session = data;
    if (!session.identity) signedIn("");
    else if (TM.token(WHO)) signedIn(sessionStorage.getItem("tenminute.customer.name") || "");
    else signIn();
  })();
})();
