// The storefront: catalogue, product pages with live stock and
// recommendations, basket, checkout, orders with live status, account.
import { api, auth, session, signIn, signOut, finishExternalSignIn, externalSignInLink, h, mount, money, when, showProblem, clearProblem, toast, Live, ApiError } from "./api.js";

const main = document.getElementById("main");
const TEST_CARDS = [
  ["4242424242424242", "Approved (4242 4242 4242 4242)"],
  ["4000000000000002", "Declined (4000 0000 0000 0002)"],
  ["4000000000000119", "Processor error (4000 0000 0000 0119)"],
  ["4000000000000259", "Slow answer (4000 0000 0000 0259)"],
];

// Live stock of every product, from the `stock` topic: product id → level.
const stock = new Map();
const stockWatchers = new Set();
const live = new Live((s) => document.body.setAttribute("data-live", s));
live.subscribe("stock", (m) => {
  // A snapshot, or the newest level of each product changed since the last change.
  if (m.type === "snapshot" || m.type === "change") for (const s of m.data) stock.set(s.product_id, s);
  else return;
  for (const w of stockWatchers) w();
});

// Topics the current page subscribed to, dropped when it is left.
let pageTopics = [];
function pageSubscribe(topic, handler) {
  pageTopics.push(topic);
  live.subscribe(topic, handler);
}

/** "In stock", "Only 3 left", "Out of stock" for a level and threshold. */
function stockLabel(level, threshold) {
  if (!level) return { text: "", cls: "unknown" };
  const a = level.available;
  if (a <= 0) return { text: "Out of stock", cls: "out" };
  if (a <= Math.max(threshold ?? 5, 5)) return { text: `Only ${a} left`, cls: "low" };
  return { text: "In stock", cls: "in" };
}

function stockBadge(productId, threshold) {
  const el = h("span", { class: "stock", "data-product": productId });
  const render = () => {
    const l = stockLabel(stock.get(productId), threshold);
    el.className = `stock ${l.cls}`;
    el.textContent = l.text;
  };
  render();
  el.render = render;
  return el;
}

function watchStock(root) {
  const w = () => root.querySelectorAll(".stock").forEach((e) => e.render?.());
  stockWatchers.add(w);
  return () => stockWatchers.delete(w);
}

// ---- account bar ----------------------------------------------------------

async function refreshBasketCount() {
  const link = document.getElementById("basket-link");
  if (!link) return;
  try {
    const b = await api("GET", "/api/basket");
    link.querySelector(".count").textContent = b.items;
  } catch {
    /* the count is a nicety */
  }
}

function renderAccount() {
  const u = auth.user();
  const nav = document.getElementById("account");
  const basket = h("a", { href: "#/basket", id: "basket-link" }, "Basket ", h("span", { class: "count", "aria-label": "items" }, "0"));
  if (u) {
    mount(
      nav,
      h("a", { href: "#/profile", id: "profile-link" }, u.name),
      h("a", { href: "#/orders" }, "Orders"),
      u.role === "admin" || u.role === "supplier" ? h("a", { href: "/dashboard" }, "Dashboard") : null,
      basket,
      h("button", { type: "button", class: "link", onclick: () => { if (!signOut("storefront")) location.hash = "#/"; } }, "Sign out"),
    );
  } else {
    mount(nav, h("a", { href: "#/login" }, "Sign in"), h("a", { href: "#/register" }, "Register"), basket);
  }
  refreshBasketCount();
}
window.addEventListener("shopstream:auth", renderAccount);

async function renderCategories(active) {
  const nav = document.getElementById("categories");
  let cats = [];
  try {
    cats = await api("GET", "/api/categories");
  } catch {
    return;
  }
  mount(
    nav,
    h("a", { href: "#/", "aria-current": active ? null : "page" }, "All"),
    cats.map((c) => h("a", { href: `#/products?category=${encodeURIComponent(c)}`, "aria-current": c === active ? "page" : null }, c)),
  );
}

// ---- product cards ----------------------------------------------------------

function productLink(id, rec) {
  return `#/p/${id}${rec ? `?rec=${encodeURIComponent(rec)}` : ""}`;
}

/** A coloured initial where a product has no image (hue from its name). */
function placeholder(name, cls = "placeholder") {
  const el = h("div", { class: cls, "aria-hidden": "true" }, (name || "?")[0]);
  let hash = 0;
  for (const c of name || "") hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  el.style.setProperty("--hue", String(hash % 360));
  return el;
}

function card(p, rec, reason) {
  return h(
    "li",
    { class: "card" },
    h("a", { href: productLink(p.id ?? p.product_id, rec), class: "card-link" },
      p.image_url ? h("img", { src: p.image_url, alt: "", loading: "lazy" }) : placeholder(p.name),
      h("span", { class: "name" }, p.name)),
    h("span", { class: "price" }, money(p.price, p.currency)),
    stockBadge(p.id ?? p.product_id, p.low_stock_threshold),
    reason ? h("span", { class: "reason" }, reason) : null,
  );
}

/** A section of recommended items; returns null when there are none. */
function recSection(title, id, recs) {
  if (!recs?.items?.length) return null;
  return h(
    "section",
    { class: "recs", id, "aria-label": title, dataset: { model: recs.model_version || "none" } },
    h("h2", {}, title),
    h("ul", { class: "grid" }, recs.items.map((i) => card(i, i.recommendation_id, i.reason))),
  );
}

// ---- pages --------------------------------------------------------------------

async function home(params) {
  const category = params.get("category");
  const q = params.get("q");
  document.getElementById("q").value = q || "";
  renderCategories(category);
  const grid = h("ul", { class: "grid", id: "products" });
  const more = h("button", { type: "button", id: "more", hidden: true }, "More products");
  const parts = [];
  if (!category && !q) {
    const recs = await api("GET", "/api/recommendations?limit=8").catch(() => null);
    parts.push(recSection("Recommended for you", "recommended", recs));
  }
  const title = q ? `Results for “${q}”` : category ? category : "All products";
  const status = h("p", { class: "muted", id: "products-status", "aria-live": "polite" });
  // A search shows how many matches each category has, to narrow by.
  const facets = h("nav", { class: "facets", id: "facets", "aria-label": "Narrow by category" });
  mount(main, parts, h("section", { "aria-label": "Products" }, h("h1", {}, title), facets, status, grid, more));
  const stop = watchStock(main);
  let cursor = null;
  let offset = 0;
  const load = async () => {
    const qs = new URLSearchParams({ limit: "12" });
    if (category) qs.set("category", category);
    more.disabled = true;
    if (q) {
      // The search engine: ranked, typo-tolerant, with category counts.
      qs.set("q", q);
      if (offset) qs.set("offset", String(offset));
      const page = await api("GET", `/api/search?${qs}`);
      grid.append(...page.items.map((hit) => card(hit.product)));
      if (!offset) {
        mount(facets, page.categories.map((c) => h("a", {
          href: `#/products?q=${encodeURIComponent(q)}&category=${encodeURIComponent(c.category)}`,
          "aria-current": c.category === category ? "page" : null,
        }, `${c.category} (${c.count})`)));
      }
      offset = page.next_offset ?? 0;
      more.hidden = !page.next_offset;
      status.textContent = !grid.children.length ? "No products found."
        : page.relaxed ? "No product has all of those words; these have some." : "";
    } else {
      if (cursor) qs.set("cursor", cursor);
      const page = await api("GET", `/api/products?${qs}`);
      grid.append(...page.items.map((p) => card(p)));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      status.textContent = grid.children.length ? "" : cursor ? "Nothing yet; search on with “More products”." : "No products found.";
    }
    more.disabled = false;
  };
  more.addEventListener("click", load);
  await load();
  return stop;
}

async function ensureSession() {
  if (!auth.user() && !session.get()) await api("GET", "/api/basket");
}

/** Sends a behaviour event about the caller (user or anonymous session). */
async function track(type, data) {
  await ensureSession();
  const u = auth.user();
  const who = u ? { user_id: u.id } : { session_id: session.get() };
  await api("POST", "/api/events", [{ type, source: "storefront", data: { ...who, ...data } }]);
}

async function productPage(id, params) {
  const rec = params.get("rec");
  const p = await api("GET", `/api/products/${id}`);
  renderCategories(p.category);
  const qty = h("input", { type: "number", name: "quantity", min: "1", max: "99", value: "1", id: "qty" });
  const form = h(
    "form",
    { id: "add-form", class: "buy" },
    h("label", { class: "field" }, "Quantity ", qty),
    h("button", { type: "submit", id: "add" }, "Add to basket"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearProblem(form);
    try {
      await api("POST", "/api/basket/items", { product_id: id, quantity: Number(qty.value), ...(rec ? { recommendation_id: rec } : {}) });
      toast(`Added ${qty.value} × ${p.name} to the basket`);
      refreshBasketCount();
    } catch (err) {
      showProblem(form, err);
    }
  });
  const badge = stockBadge(id, p.low_stock_threshold);
  badge.id = "stock";
  badge.setAttribute("aria-live", "polite");
  const similar = h("div", { id: "similar-slot" });
  const together = h("div", { id: "together-slot" });
  const forYou = h("div", { id: "foryou-slot" });
  mount(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Shop"), " / ",
      h("a", { href: `#/products?category=${encodeURIComponent(p.category)}` }, p.category)),
    h(
      "article",
      { class: "product", dataset: { id } },
      p.image_url ? h("img", { src: p.image_url, alt: p.name, class: "hero" }) : placeholder(p.name, "placeholder hero"),
      h("div", { class: "info" },
        h("h1", {}, p.name),
        h("p", { class: "price big" }, money(p.price, p.currency)),
        badge,
        h("p", {}, p.description),
        Object.keys(p.attributes || {}).length
          ? h("dl", { class: "attrs" }, Object.entries(p.attributes).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
          : null,
        form),
    ),
    together,
    similar,
    forYou,
  );
  const stop = watchStock(main);
  // This product's own topic, so its level is current even beyond the
  // `stock` snapshot's first thousand products.
  pageSubscribe(`stock:${id}`, (m) => {
    if (m.type === "snapshot" || m.type === "change") {
      stock.set(id, m.data);
      badge.render();
    }
  });
  // The view, with the recommendation that led here; then what to show next.
  track("browse.viewed", { product_id: id, ...(rec ? { recommendation_id: rec } : {}) }).catch(() => {});
  const [sim, bt] = await Promise.all([
    api("GET", `/api/products/${id}/similar?limit=4`).catch(() => null),
    api("GET", `/api/products/${id}/bought-together?limit=4`).catch(() => null),
  ]);
  mount(together, recSection("Frequently bought together", "together", bt));
  mount(similar, recSection("Similar items", "similar", sim));
  const mine = await api("GET", `/api/recommendations?limit=4&context_product=${id}`).catch(() => null);
  mount(forYou, recSection("Recommended for you", "recommended", mine));
  return stop;
}

async function basketPage() {
  const b = await api("GET", "/api/basket");
  document.querySelector("#basket-link .count").textContent = b.items;
  if (!b.lines.length) {
    mount(main, h("h1", {}, "Your basket"), h("p", { id: "basket-empty" }, "Your basket is empty. ", h("a", { href: "#/" }, "Browse the shop")));
    return;
  }
  const rows = b.lines.map((l) => {
    const q = h("input", { type: "number", min: "1", max: "99", value: String(l.quantity), name: "quantity", "aria-label": `Quantity of ${l.name}` });
    const lineForm = h("form", { class: "line-qty" }, q, h("button", { type: "submit" }, "Update"));
    lineForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("PATCH", `/api/basket/items/${l.product_id}`, { quantity: Number(q.value) });
        route();
      } catch (err) {
        showProblem(lineForm, err);
      }
    });
    return h(
      "tr",
      { dataset: { product: l.product_id } },
      h("td", {}, h("a", { href: productLink(l.product_id) }, l.name), l.in_stock ? null : h("p", { class: "warn" }, `Only ${l.available} available`)),
      h("td", { class: "num" }, money(l.unit_price, b.currency)),
      h("td", {}, lineForm),
      h("td", { class: "num" }, money(l.line_total, b.currency)),
      h("td", {}, h("button", { type: "button", class: "link", onclick: async () => { await api("DELETE", `/api/basket/items/${l.product_id}`); route(); } }, "Remove")),
    );
  });
  const table = h(
    "table",
    { id: "basket" },
    h("caption", { class: "sr-only" }, "Basket lines"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col", class: "num" }, "Price"), h("th", { scope: "col" }, "Quantity"), h("th", { scope: "col", class: "num" }, "Total"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
    h("tbody", {}, rows),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "3" }, "Total"), h("td", { class: "num", id: "basket-total" }, money(b.total, b.currency)), h("td"))),
  );
  const checkout = checkoutForm(b);
  const sugg = await api("GET", "/api/basket/suggestions?limit=4").catch(() => null);
  mount(main, h("h1", {}, "Your basket"), table, checkout, recSection("Goes well with your basket", "suggestions", sugg));
}

function checkoutForm() {
  if (!auth.user()) {
    return h("section", { class: "checkout" }, h("h2", {}, "Checkout"), h("p", {}, h("a", { href: "#/login?next=basket", id: "login-to-checkout" }, "Sign in"), " or ", h("a", { href: "#/register?next=basket" }, "register"), " to check out. Your basket is kept."));
  }
  // One key per checkout attempt: a retry of the same attempt (a network
  // error) cannot pay twice.
  let key = crypto.randomUUID();
  const cards = h(
    "fieldset",
    { class: "field" },
    h("legend", {}, "Test card"),
    TEST_CARDS.map(([n, label], i) => h("label", { class: "radio" }, h("input", { type: "radio", name: "card", value: n, checked: i === 0 }), label)),
  );
  const number = h("input", { name: "card_number", inputmode: "numeric", autocomplete: "cc-number", placeholder: "or type a card number", id: "card-number" });
  const pay = h("button", { type: "submit", id: "pay" }, "Pay now");
  const form = h("form", { id: "checkout-form", class: "checkout" }, h("h2", {}, "Checkout"), cards, h("label", { class: "field" }, "Card number ", number), pay);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearProblem(form);
    const card = number.value.replace(/\s+/g, "") || form.querySelector("input[name=card]:checked").value;
    pay.disabled = true;
    pay.textContent = "Paying…";
    try {
      const order = await api("POST", "/api/checkout", { card_number: card }, { "idempotency-key": key });
      location.hash = `#/orders/${order.id}`;
      refreshBasketCount();
    } catch (err) {
      if (err instanceof ApiError) key = crypto.randomUUID();
      if (err instanceof ApiError && err.problem?.shortages) {
        err.problem.errors = err.problem.shortages.map((s) => ({ field: "basket", message: `${s.name || s.product_id}: only ${s.available} available` }));
      }
      showProblem(form, err);
      form.querySelector(".form-error")?.setAttribute("id", "payment-error");
    } finally {
      pay.disabled = false;
      pay.textContent = "Pay now";
    }
  });
  return form;
}

const STATUS_TEXT = {
  pending_payment: "Waiting for payment",
  paid: "Paid",
  packed: "Packed",
  shipped: "Shipped",
  delivered: "Delivered",
  cancelled: "Cancelled",
  payment_failed: "Payment failed",
  refunded: "Refunded",
};

function statusBadge(s) {
  return h("span", { class: `status s-${s}`, "data-status": s }, STATUS_TEXT[s] || s);
}

async function ordersPage() {
  if (!auth.user()) return (location.hash = "#/login?next=orders");
  const page = await api("GET", "/api/orders?limit=50");
  mount(
    main,
    h("h1", {}, "Your orders"),
    page.items.length
      ? h("ul", { class: "orders", id: "orders" }, page.items.map((o) => h("li", {}, h("a", { href: `#/orders/${o.id}` }, `Order ${o.id.slice(0, 8)}`), " ", when(o.created_at), " · ", money(o.total, o.currency), " ", statusBadge(o.status))))
      : h("p", {}, "No orders yet."),
  );
  pageSubscribe("orders", (m) => m.type === "change" && route());
}

async function orderPage(id) {
  if (!auth.user()) return (location.hash = "#/login");
  const render = async () => {
    const o = await api("GET", `/api/orders/${id}`);
    const cancellable = ["pending_payment", "paid", "packed"].includes(o.status);
    mount(
      main,
      h("h1", {}, `Order ${o.id.slice(0, 8)}`),
      h("p", { id: "order-status", "aria-live": "polite" }, "Status: ", statusBadge(o.status)),
      o.status === "paid" ? h("p", { class: "ok", id: "confirmation" }, "Thank you! Your payment was approved and your order is confirmed.") : null,
      o.shipment ? h("p", {}, `Shipped with ${o.shipment.carrier}, tracking number ${o.shipment.tracking_number}`) : null,
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col", class: "num" }, "Quantity"), h("th", { scope: "col", class: "num" }, "Total"))),
        h("tbody", {}, o.lines.map((l) => h("tr", {}, h("td", {}, l.name), h("td", { class: "num" }, l.quantity), h("td", { class: "num" }, money(l.line_total, o.currency))))),
        h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "2" }, "Total"), h("td", { class: "num" }, money(o.total, o.currency))))),
      h("h2", {}, "History"),
      h("ol", { class: "history" }, o.history.map((c) => h("li", {}, statusBadge(c.status), ` ${when(c.at)}`, c.note ? ` — ${c.note}` : ""))),
      cancellable
        ? h("button", { type: "button", id: "cancel-order", onclick: async () => { try { await api("POST", `/api/orders/${id}/cancel`, {}); render(); } catch (e) { toast(e.message, "error"); } } }, "Cancel order")
        : null,
    );
  };
  await render();
  pageSubscribe("orders", (m) => m.type === "change" && m.data.order_id === id && render());
}

function authPage(kind, params) {
  const next = params.get("next");
  const fields = [
    kind === "register" ? h("label", { class: "field" }, "Name ", h("input", { name: "name", autocomplete: "name", required: true })) : null,
    h("label", { class: "field" }, "E-mail ", h("input", { name: "email", type: "email", autocomplete: "email", required: true })),
    h("label", { class: "field" }, "Password ", h("input", { name: "password", type: "password", autocomplete: kind === "register" ? "new-password" : "current-password", required: true, minlength: kind === "register" ? "12" : null })),
  ];
  const error = params.get("error");
  const form = h("form", { id: `${kind}-form`, class: "narrow", novalidate: true }, h("h1", {}, kind === "register" ? "Create an account" : "Sign in"),
    error ? h("p", { class: "form-error", role: "alert" }, error) : null, fields,
    h("button", { type: "submit" }, kind === "register" ? "Register" : "Sign in"),
    kind === "register" ? h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Sign in")) : h("p", {}, "New here? ", h("a", { href: "#/register" }, "Create an account")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearProblem(form);
    const d = new FormData(form);
    try {
      await signIn(d.get("email"), d.get("password"), kind === "register" ? d.get("name") : null);
      location.hash = next ? `#/${next}` : "#/";
    } catch (err) {
      showProblem(form, err);
    }
  });
  mount(main, form);
  form.querySelector("input").focus();
  if (kind === "login") externalSignInLink("storefront").then((a) => a && form.append(h("p", { class: "or" }, "or ", a)));
}

async function profilePage() {
  if (!auth.user()) return (location.hash = "#/login?next=profile");
  const me = await api("GET", "/api/me");
  const a = me.shipping_address || {};
  const input = (name, label, value, extra = {}) => h("label", { class: "field" }, `${label} `, h("input", { name, value: value || "", ...extra }));
  const form = h("form", { id: "profile-form", class: "narrow", novalidate: true },
    h("h1", {}, "Your profile"),
    h("p", {}, `${me.email} · ${me.role}`),
    input("name", "Name", me.name),
    h("fieldset", {}, h("legend", {}, "Shipping address"),
      input("shipping_address.line1", "Street", a.line1),
      input("shipping_address.city", "City", a.city),
      input("shipping_address.postal_code", "Postal code", a.postal_code),
      input("shipping_address.country", "Country (2 letters)", a.country, { maxlength: "2" })),
    h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearProblem(form);
    const d = new FormData(form);
    const addr = { line1: d.get("shipping_address.line1"), city: d.get("shipping_address.city"), postal_code: d.get("shipping_address.postal_code"), country: d.get("shipping_address.country") };
    const body = { name: d.get("name") };
    if (Object.values(addr).some((v) => v)) body.shipping_address = addr;
    try {
      const u = await api("PATCH", "/api/me", body);
      auth.set({ ...auth.get(), user: u });
      toast("Saved");
    } catch (err) {
      showProblem(form, err);
    }
  });
  mount(main, form);
}

// ---- routing --------------------------------------------------------------------

let leave = null;

async function route() {
  // "#main" and the like are in-page anchors (the skip link), not routes.
  if (location.hash && !location.hash.startsWith("#/")) return;
  leave?.();
  leave = null;
  for (const t of pageTopics) live.unsubscribe(t);
  pageTopics = [];
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  main.setAttribute("aria-busy", "true");
  try {
    let r;
    if (parts.length === 0 || parts[0] === "products") r = await home(params);
    else if (parts[0] === "p" && parts[1]) r = await productPage(parts[1], params);
    else if (parts[0] === "basket") r = await basketPage();
    else if (parts[0] === "orders" && parts[1]) r = await orderPage(parts[1]);
    else if (parts[0] === "orders") r = await ordersPage();
    else if (parts[0] === "login" || parts[0] === "register") r = authPage(parts[0], params);
    else if (parts[0] === "profile") r = await profilePage();
    else mount(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the shop")));
    if (typeof r === "function") leave = r;
  } catch (err) {
    const msg = err instanceof ApiError && err.status === 404 ? "That page does not exist (any more)." : err.message;
    mount(main, h("h1", {}, "Sorry"), h("p", { class: "form-error", role: "alert" }, msg), h("p", {}, h("a", { href: "#/" }, "Back to the shop")));
  } finally {
    main.removeAttribute("aria-busy");
    main.dataset.page = parts[0] || "home";
  }
}

document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = document.getElementById("q").value.trim();
  location.hash = q ? `#/products?q=${encodeURIComponent(q)}` : "#/";
});

// Search as you type: the best few names for what is typed so far (the
// last word counts as a prefix), offered as the box's suggestions.
{
  const box = document.getElementById("q");
  const list = document.getElementById("q-suggestions");
  let timer = null;
  let asked = 0;
  box.addEventListener("input", () => {
    clearTimeout(timer);
    const q = box.value.trim();
    if (q.length < 2) return mount(list);
    timer = setTimeout(async () => {
      const mine = ++asked;
      const page = await api("GET", `/api/search?${new URLSearchParams({ q, limit: "6" })}`).catch(() => null);
      // An answer to an older keystroke is dropped.
      if (page && mine === asked) mount(list, page.items.map((hit) => h("option", { value: hit.product.name })));
    }, 150);
  });
}
window.addEventListener("hashchange", route);
// Back from the external issuer's sign-in, or a plain visit.
finishExternalSignIn().then((r) => {
  renderAccount();
  if (r?.error) location.hash = `#/login?${new URLSearchParams({ error: r.error })}`;
  else route();
});
