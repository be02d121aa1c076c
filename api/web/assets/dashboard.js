// The operations dashboard: live stock and alerts (admin: everything; a
// supplier: its own products), analytics, pipeline health, product admin and
// supplier records (admin).
import { api, auth, signIn, signOut, finishExternalSignIn, externalSignInLink, h, mount, money, when, showProblem, clearProblem, toast, Live, ApiError } from "./api.js";

const main = document.getElementById("main");
const tabs = document.getElementById("tabs");
let live = null;
let timers = [];
let pageTopics = [];

function every(ms, f) {
  timers.push(setInterval(f, ms));
}
function subscribe(topic, handler) {
  pageTopics.push(topic);
  live.subscribe(topic, handler);
}
const isAdmin = () => auth.user()?.role === "admin";

// Product names and thresholds, for ids that come without them.
const products = new Map();
async function productName(id) {
  if (!products.has(id)) {
    products.set(id, api("GET", `/api/products/${id}`).catch(() => ({ id, name: id.slice(0, 8) })));
  }
  return (await products.get(id)).name;
}

// ---- sign in --------------------------------------------------------------------

function signInPage(message) {
  const form = h("form", { id: "login-form", class: "narrow panel", novalidate: true },
    h("h1", {}, "Operations sign in"),
    message ? h("p", { class: "form-error", role: "alert" }, message) : null,
    h("label", { class: "field" }, "E-mail ", h("input", { name: "email", type: "email", autocomplete: "email", required: true })),
    h("label", { class: "field" }, "Password ", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearProblem(form);
    const d = new FormData(form);
    try {
      await signIn(d.get("email"), d.get("password"));
      start();
    } catch (err) {
      showProblem(form, err);
    }
  });
  mount(tabs);
  mount(document.getElementById("account"));
  mount(main, form);
  form.querySelector("input").focus();
  externalSignInLink("dashboard").then((a) => a && form.append(h("p", { class: "or" }, "or ", a)));
}

// ---- stock and alerts -------------------------------------------------------------

async function stockPage() {
  const admin = isAdmin();
  const rows = new Map(); // product id → {product, stock, tr}
  const filter = h("input", { type: "search", id: "stock-filter", placeholder: "Name or SKU", "aria-label": "Filter products" });
  const lowOnly = h("input", { type: "checkbox", id: "low-only" });
  const tbody = h("tbody");
  const table = h("table", { id: "stock-table" },
    h("caption", { class: "sr-only" }, "Live stock"),
    h("thead", {}, h("tr", {}, ["Product", "SKU", "Supplier", "On hand", "Reserved", "Available", "Threshold"].map((c, i) =>
      h("th", { scope: "col", class: i >= 3 ? "num" : i === 1 || i === 2 ? "hide-narrow" : null }, c)))),
    tbody);
  const alertList = h("ul", { class: "alerts", id: "alerts", "aria-live": "polite" });
  const alertsEmpty = h("p", { class: "muted", id: "alerts-empty" }, "No alerts.");
  mount(main,
    h("div", { class: "split" },
      h("section", { class: "panel", "aria-labelledby": "stock-h" }, h("h2", { id: "stock-h" }, "Live stock"),
        h("div", { class: "toolbar" }, h("label", { class: "field" }, "Filter ", filter), h("label", { class: "radio" }, lowOnly, "Only low stock")),
        table),
      h("section", { class: "panel", "aria-labelledby": "alerts-h" }, h("h2", { id: "alerts-h" }, "Low-stock alerts"), alertsEmpty, alertList)));

  const below = (r) => r.stock && r.product && r.stock.available < r.product.low_stock_threshold;
  const applyFilter = () => {
    const q = filter.value.trim().toLowerCase();
    for (const r of rows.values()) {
      const text = `${r.product?.name} ${r.product?.sku}`.toLowerCase();
      r.tr.hidden = (q && !text.includes(q)) || (lowOnly.checked && !below(r));
    }
  };
  filter.addEventListener("input", applyFilter);
  lowOnly.addEventListener("change", applyFilter);
  const cell = (id, k, v) => h("td", { class: "num", id: `${k}-${id}` }, v ?? "–");
  const render = (r, flash) => {
    const s = r.stock || {};
    const p = r.product;
    const tr = h("tr", { dataset: { product: p.id }, class: [below(r) ? "low" : "", flash ? "flash" : ""].join(" ").trim() || null },
      h("th", { scope: "row" }, p.name),
      h("td", { class: "hide-narrow mono" }, p.sku),
      h("td", { class: "hide-narrow" }, p.supplier_id || "–"),
      cell(p.id, "onhand", s.on_hand), cell(p.id, "reserved", s.reserved), cell(p.id, "avail", s.available),
      cell(p.id, "threshold", p.low_stock_threshold));
    if (r.tr) r.tr.replaceWith(tr);
    else tbody.append(tr);
    r.tr = tr;
  };

  // The catalogue (admin) or the supplier's own products, then live levels.
  if (admin) {
    let cursor = null;
    do {
      const page = await api("GET", `/api/products?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
      for (const p of page.items) rows.set(p.id, { product: p, stock: null });
      cursor = page.next_cursor;
    } while (cursor && rows.size < 500);
  } else {
    const page = await api("GET", "/api/supplier/products?limit=100");
    for (const i of page.items) rows.set(i.product.id, { product: i.product, stock: i.stock });
  }
  for (const r of rows.values()) {
    products.set(r.product.id, Promise.resolve(r.product));
    render(r);
  }
  applyFilter();
  subscribe("stock", (m) => {
    // A change carries the newest level of each product changed since the last one.
    const levels = m.type === "snapshot" || m.type === "change" ? m.data : [];
    for (const s of levels) {
      const r = rows.get(s.product_id);
      if (!r) continue;
      r.stock = s;
      render(r, m.type === "change");
    }
    applyFilter();
  });

  // Alerts: a supplier's own history; an admin's, per supplier of the
  // products listed. New ones arrive live.
  const alerts = new Map();
  const renderAlert = async (a) => {
    const name = a.product_name || (await productName(a.product_id));
    const ack = h("button", { type: "button", class: "secondary", onclick: async () => {
      try {
        const q = admin ? `?supplier_id=${encodeURIComponent(a.supplier_id)}` : "";
        const done = await api("POST", `/api/supplier/alerts/${a.id}/ack${q}`, {});
        alerts.set(a.id, done);
        renderAlert(done);
      } catch (e) {
        toast(e.message, "error");
      }
    } }, "Acknowledge");
    const li = h("li", { id: `alert-${a.id}`, class: a.acknowledged ? "acked" : null, dataset: { product: a.product_id } },
      h("span", { class: "what" }, h("strong", {}, name), ` — ${a.available} left (threshold ${a.threshold})`, h("br"), h("small", { class: "muted" }, `${a.supplier_id} · ${when(a.at)}`)),
      a.acknowledged ? null : ack);
    const old = document.getElementById(li.id);
    if (old) old.replaceWith(li);
    else alertList.prepend(li);
    alertsEmpty.hidden = true;
  };
  const suppliers = admin ? [...new Set([...rows.values()].map((r) => r.product.supplier_id).filter(Boolean)), "-"] : [null];
  const lists = await Promise.all(suppliers.map((s) =>
    api("GET", `/api/supplier/alerts?limit=20${s ? `&supplier_id=${encodeURIComponent(s)}` : ""}`).then((p) => p.items).catch(() => [])));
  const initial = lists.flat().sort((a, b) => a.at - b.at);
  for (const a of initial) {
    alerts.set(a.id, a);
    await renderAlert(a);
  }
  subscribe("alerts", (m) => {
    const list = m.type === "snapshot" ? m.data : m.type === "change" ? [m.data] : [];
    for (const a of list) {
      if (m.type === "snapshot" && alerts.has(a.id)) continue;
      alerts.set(a.id, a);
      renderAlert(a);
      if (m.type === "change") toast(`Low stock: ${a.product_name || a.product_id} (${a.available} left)`);
    }
  });
}

/** A key figure: its value large, its name below. */
function kpi(name, value, id) {
  return h("div", { class: "kpi", id }, h("div", { class: "v" }, value), h("div", { class: "k" }, name));
}

// ---- analytics ----------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

/** A bar chart of one value per minute, with its title as text for readers. */
function barChart(title, minutes, key, alt) {
  const W = 600, H = 140, pad = 18;
  const values = minutes.map((m) => Number(m[key]) || 0);
  const max = Math.max(1, ...values);
  const bw = (W - pad) / Math.max(values.length, 1);
  const total = values.reduce((a, b) => a + b, 0);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} per minute, last ${values.length} minutes: total ${Math.round(total * 100) / 100}, peak ${max}` },
    svg("line", { class: "axis", x1: pad, y1: H - pad, x2: W, y2: H - pad }),
    svg("text", { x: 0, y: 10 }, String(max)),
    svg("text", { x: 0, y: H - pad }, "0"),
    ...values.map((v, i) => {
      const bh = ((H - 2 * pad) * v) / max;
      return svg("rect", { class: alt ? "bar alt" : "bar", x: pad + i * bw + 1, y: H - pad - bh, width: Math.max(bw - 2, 1), height: bh },
        svg("title", {}, `${minutes[i].minute}: ${v}`));
    }),
    minutes.length ? svg("text", { x: pad, y: H - 4 }, `${minutes[0].minute.slice(11)} UTC`) : "",
    minutes.length ? svg("text", { x: W - 30, y: H - 4 }, minutes[minutes.length - 1].minute.slice(11)) : "");
  const nonzero = values.filter((v) => v > 0).length;
  return h("figure", { class: "panel", dataset: { chart: key, minutes: String(nonzero) } },
    h("h3", {}, title, " ", h("span", { class: "legend" }, `total ${Math.round(total * 100) / 100}`)), chart);
}

async function analyticsPage() {
  const kpis = h("div", { class: "kpis", id: "kpis" });
  const charts = h("div", { class: "panels", id: "charts" });
  const trending = h("section", { class: "panel", id: "trending" });
  const funnel = h("section", { class: "panel", id: "funnel" });
  mount(main, h("h1", {}, "Analytics, last hour"), kpis, charts, h("div", { class: "panels" }, trending, funnel));
  let windowName = "1h";

  const loadSummary = async () => {
    const s = await api("GET", "/api/analytics/summary?minutes=60");
    const t = s.totals;
    mount(kpis, kpi("Views", t.views, "kpi-views"), kpi("Basket adds", t.basket_adds, "kpi-adds"), kpi("Purchases", t.purchases, "kpi-purchases"),
      kpi("Units sold", t.units, "kpi-units"), kpi("Revenue", t.revenue, "kpi-revenue"), kpi("Conversion", `${(t.conversion_rate * 100).toFixed(1)} %`, "kpi-conversion"));
    // Every minute of the window, the quiet ones too.
    const by = new Map(s.minutes.map((m) => [m.minute, m]));
    const now = Date.now();
    const minutes = [];
    for (let i = s.window_minutes - 1; i >= 0; i--) {
      const key = new Date(now - i * 60000).toISOString().slice(0, 16);
      minutes.push(by.get(key) || { minute: key, views: 0, basket_adds: 0, purchases: 0, revenue: "0" });
    }
    s.minutes = minutes;
    mount(charts, barChart("Views", s.minutes, "views"), barChart("Basket adds", s.minutes, "basket_adds", true),
      barChart("Purchases", s.minutes, "purchases"), barChart("Revenue", s.minutes, "revenue", true));
  };
  const loadTrending = async () => {
    const items = await api("GET", `/api/analytics/trending?window=${windowName}&limit=10`);
    const names = await Promise.all(items.map((i) => productName(i.product_id)));
    const pick = (w) => h("button", { type: "button", class: w === windowName ? null : "secondary", "aria-pressed": String(w === windowName), onclick: () => { windowName = w; loadTrending(); } }, w);
    mount(trending, h("h2", {}, "Trending products"), h("div", { class: "actions" }, pick("1h"), pick("24h")),
      items.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Product", "Views", "Basket adds", "Purchases", "Revenue"].map((c, i) => h("th", { scope: "col", class: i ? "num" : null }, c)))),
          h("tbody", {}, items.map((i, k) => h("tr", {}, h("th", { scope: "row" }, names[k]), h("td", { class: "num" }, i.views), h("td", { class: "num" }, i.basket_adds), h("td", { class: "num" }, i.purchases), h("td", { class: "num" }, i.revenue)))))
        : h("p", { class: "muted" }, "Nothing yet in this window."));
  };
  const loadFunnel = async () => {
    const rows = await api("GET", "/api/analytics/recommendations");
    mount(funnel, h("h2", {}, "Recommendations: impressions → clicks → purchases"),
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, ["Model", "Responses", "Impressions", "Clicks", "Basket adds", "Purchases", "Click rate"].map((c, i) => h("th", { scope: "col", class: i ? "num" : null }, c)))),
          h("tbody", {}, rows.map((r) => h("tr", {}, h("th", { scope: "row", class: "mono" }, r.model_version), h("td", { class: "num" }, r.responses), h("td", { class: "num" }, r.totals.impressions),
            h("td", { class: "num" }, r.totals.clicks), h("td", { class: "num" }, r.totals.basket_adds), h("td", { class: "num" }, r.totals.purchases), h("td", { class: "num" }, `${(r.totals.click_rate * 100).toFixed(1)} %`)))))
        : h("p", { class: "muted" }, "No recommendations served yet."));
  };
  await Promise.all([loadSummary(), loadTrending(), loadFunnel()]);
  // Live: every tick refreshes (at most once a second).
  let pending = null;
  subscribe("analytics", (m) => {
    if (m.type !== "change" || pending) return;
    pending = setTimeout(() => {
      pending = null;
      loadSummary();
      if (m.data.model_version) loadFunnel();
    }, 1000);
  });
  every(30000, () => { loadTrending(); loadFunnel(); });
}

// ---- pipeline ---------------------------------------------------------------------------

/** Prometheus text → [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
const sum = (ms, name) => ms.filter((m) => m.name === name).reduce((a, m) => a + m.value, 0);

async function pipelinePage() {
  const rates = h("div", { class: "kpis", id: "rates" });
  const lag = h("section", { class: "panel", id: "lag" });
  const leases = h("section", { class: "panel", id: "leases" });
  const dead = h("section", { class: "panel", id: "dead-letters" });
  const model = h("section", { class: "panel", id: "model" });
  mount(main, h("h1", {}, "Pipeline health"), rates, h("div", { class: "panels" }, lag, leases), h("div", { class: "panels" }, dead, model));
  let last = null;
  const loadMetrics = async () => {
    const text = await fetch("/metrics").then((r) => r.text());
    const ms = parseMetrics(text);
    const now = { t: performance.now(), in: sum(ms, "shopstream_events_received_total"), applied: sum(ms, "shopstream_events_applied_total"), dead: sum(ms, "shopstream_events_dead_lettered_total") };
    const rate = (k) => (last ? ((now[k] - last[k]) / ((now.t - last.t) / 1000)).toFixed(1) : "…");
    mount(rates, kpi("Events in / s", rate("in"), "rate-in"), kpi("Applied / s", rate("applied"), "rate-applied"), kpi("Dead-lettered / s", rate("dead"), "rate-dead"),
      kpi("Applied in all", now.applied, "total-applied"), kpi("Dead letters in all", now.dead, "total-dead"));
    last = now;
    const lags = ms.filter((m) => m.name === "shopstream_partition_lag_records" || m.name === "shopstream_kinesis_millis_behind_latest");
    mount(lag, h("h2", {}, "Lag per shard / partition"),
      lags.length
        ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Stream"), h("th", { scope: "col" }, "Shard"), h("th", { scope: "col", class: "num" }, "Lag"))),
          h("tbody", {}, lags.map((m) => h("tr", {}, h("td", {}, m.labels.stream || ""), h("td", { class: "mono" }, m.labels.shard || ""),
            h("td", { class: "num" }, m.name.includes("millis") ? `${m.value} ms` : `${m.value} records`)))))
        : h("p", { class: "muted" }, "No lag reported yet."));
  };
  const loadLeases = async () => {
    const ls = await api("GET", "/api/admin/leases");
    mount(leases, h("h2", {}, "Shard leases"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Shard", "Owner", "Counter", "Checkpoint", "Expires"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ls.map((l) => h("tr", {}, h("td", { class: "mono" }, l.shard, l.finished ? " (finished)" : ""), h("td", { class: "mono" }, l.owner || "free"),
          h("td", { class: "num" }, l.counter), h("td", { class: "mono" }, l.checkpoint || "–"), h("td", {}, when(l.expires_at)))))));
  };
  const loadDead = async () => {
    const page = await api("GET", "/api/admin/dead-letters?limit=20");
    mount(dead, h("h2", {}, "Dead letters"),
      page.items.length
        ? h("ul", { class: "alerts" }, page.items.map((d) => h("li", { id: `dl-${d.id}` },
          h("span", {}, h("strong", {}, d.reason), ` ${d.detail}`, h("br"), h("small", { class: "muted" }, `${d.stream}/${d.shard} @ ${d.position} · ${when(d.at)}`), h("br"), h("code", {}, d.raw.slice(0, 160))),
          h("button", { type: "button", class: "secondary", onclick: async () => {
            try {
              const r = await api("POST", `/api/admin/dead-letters/${d.id}/replay`, {});
              toast(`Replayed to ${r.to}`);
              loadDead();
            } catch (e) {
              toast(e.message, "error");
            }
          } }, "Replay"))))
        : h("p", { class: "muted" }, "No dead letters."));
  };
  const loadModel = async () => {
    const m = await api("GET", "/api/admin/model");
    const v = m.report?.validation;
    const train = h("button", { type: "button", id: "train", onclick: async () => {
      train.disabled = true;
      train.textContent = "Training…";
      try {
        await api("POST", "/api/admin/model/train", {});
        toast("A new model is being served");
      } catch (e) {
        toast(e.message, "error");
      }
      loadModel();
    } }, "Train now");
    mount(model, h("h2", {}, "Recommendation model"),
      m.trained
        ? h("dl", { class: "attrs" }, h("dt", {}, "Version"), h("dd", { class: "mono", id: "model-version" }, m.version), h("dt", {}, "Trained"), h("dd", {}, when(m.trained_at)),
          h("dt", {}, "Interactions"), h("dd", {}, m.interactions), h("dt", {}, "Items"), h("dd", {}, m.items), h("dt", {}, "Training time"), h("dd", {}, `${m.training_ms} ms`),
          h("dt", {}, "HR@10 (held out)"), h("dd", {}, v ? v.hr_at_10.toFixed(3) : "–"), h("dt", {}, "NDCG@10 (held out)"), h("dd", {}, v ? v.ndcg_at_10.toFixed(3) : "–"))
        : h("p", { class: "muted", id: "model-version" }, "No model trained yet: popularity answers."),
      train);
  };
  await Promise.all([loadMetrics(), loadLeases(), loadDead(), loadModel()]);
  every(2000, loadMetrics);
  every(10000, loadLeases);
}

// ---- product admin -------------------------------------------------------------------------

const FIELDS = [
  ["sku", "SKU"], ["name", "Name"], ["price", "Price (e.g. 19.99)"], ["currency", "Currency"], ["category", "Category"],
  ["supplier_id", "Supplier id"], ["low_stock_threshold", "Low-stock threshold", "number"],
];

async function productsPage() {
  const list = h("tbody");
  const editor = h("section", { class: "panel", id: "editor" });
  mount(main, h("h1", {}, "Products"), h("div", { class: "panels" }, editor,
    h("section", { class: "panel" }, h("h2", {}, "Catalogue"), h("table", { id: "product-list" },
      h("thead", {}, h("tr", {}, ["Product", "Price", "Category", ""].map((c) => h("th", { scope: "col" }, c)))), list))));

  const load = async () => {
    const page = await api("GET", "/api/products?limit=100");
    mount(list, page.items.map((p) => h("tr", { dataset: { product: p.id } },
      h("th", { scope: "row" }, p.name, h("br"), h("small", { class: "mono muted" }, p.sku)),
      h("td", { class: "num" }, money(p.price, p.currency)), h("td", {}, p.category),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => edit(p) }, "Edit"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Delete ${p.name}?`)) return;
          try {
            await api("DELETE", `/api/products/${p.id}`, undefined, { "if-match": `"${p.version}"` });
            toast(`Deleted ${p.name}`);
            edit(null);
            load();
          } catch (e) {
            toast(e.message, "error");
          }
        } }, "Delete"))))));
  };

  const edit = (p) => {
    const input = ([name, label, type]) => h("label", { class: "field" }, `${label} `,
      h("input", { name, type: type || "text", value: p ? String(p[name] ?? "") : name === "currency" ? "EUR" : name === "low_stock_threshold" ? "5" : "" }));
    const form = h("form", { id: "product-form", novalidate: true },
      h("h2", {}, p ? `Edit ${p.name}` : "New product"),
      h("div", { class: "form-grid" }, FIELDS.map(input)),
      h("label", { class: "field" }, "Description ", h("textarea", { name: "description", rows: "3" }, p?.description || "")),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "save-product" }, p ? "Save changes" : "Create product"),
        p ? h("button", { type: "button", class: "secondary", onclick: () => edit(null) }, "New product instead") : null));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearProblem(form);
      const d = new FormData(form);
      const body = {};
      for (const [name, , type] of FIELDS) {
        const v = d.get(name).trim();
        if (v === "" && (name === "supplier_id")) continue;
        body[name] = type === "number" && v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v;
      }
      body.description = d.get("description");
      try {
        const saved = p
          ? await api("PATCH", `/api/products/${p.id}`, body, { "if-match": `"${p.version}"` })
          : await api("POST", "/api/products", body);
        toast(p ? `Saved ${saved.name}` : `Created ${saved.name}`);
        load();
        edit(saved);
      } catch (err) {
        showProblem(form, err);
      }
    });
    const parts = [form];
    if (p) {
      // Stock: a count replaces on-hand (newer warehouse sequence wins).
      const count = h("input", { name: "on_hand", type: "number", min: "0", id: "on-hand" });
      const stockForm = h("form", { id: "stock-form", class: "toolbar" }, h("label", { class: "field" }, "Set on-hand count ", count), h("button", { type: "submit" }, "Set stock"));
      stockForm.addEventListener("submit", async (e) => {
        e.preventDefault();
        clearProblem(stockForm);
        try {
          const r = await api("POST", "/api/events", [{ type: "stock.counted", source: "dashboard", data: { product_id: p.id, on_hand: Number(count.value), sequence: Date.now() } }]);
          if (r.rejected?.length) throw new ApiError(422, { errors: [{ field: "on_hand", message: r.rejected[0].detail }] });
          toast(`Stock of ${p.name} set to ${count.value}`);
        } catch (err) {
          showProblem(stockForm, err);
        }
      });
      const file = h("input", { type: "file", name: "image", accept: "image/jpeg,image/png,image/webp", id: "image-file" });
      const imageForm = h("form", { id: "image-form", class: "toolbar" }, h("label", { class: "field" }, "Image (JPEG, PNG or WebP) ", file), h("button", { type: "submit" }, "Upload"),
        p.image_url ? h("img", { src: p.image_url, alt: `Current image of ${p.name}`, width: "80" }) : null);
      imageForm.addEventListener("submit", async (e) => {
        e.preventDefault();
        clearProblem(imageForm);
        if (!file.files[0]) return showProblem(imageForm, new ApiError(422, { errors: [{ field: "image", message: "choose a file" }] }));
        try {
          const saved = await api("PUT", `/api/products/${p.id}/image`, file.files[0]);
          toast("Image uploaded");
          edit(saved);
          load();
        } catch (err) {
          if (err.problem && !err.problem.errors) err.problem.errors = [{ field: "image", message: err.message }];
          showProblem(imageForm, err);
        }
      });
      parts.push(h("h3", {}, "Stock"), stockForm, h("h3", {}, "Image"), imageForm);
    }
    mount(editor, parts);
  };
  edit(null);
  await load();
}

// ---- suppliers (admin) -------------------------------------------------------------

// Who gets each product's low-stock alerts, and how: the contact e-mail
// (notifier ses) or a signed webhook (notifier webhook).
async function suppliersPage() {
  const list = h("tbody");
  const editor = h("section", { class: "panel", id: "supplier-editor" });
  mount(main, h("h1", {}, "Suppliers"), h("div", { class: "panels" }, editor,
    h("section", { class: "panel" }, h("h2", {}, "All suppliers"), h("table", { id: "supplier-list" },
      h("thead", {}, h("tr", {}, ["Supplier", "Contact e-mail", "Webhook", ""].map((c) => h("th", { scope: "col" }, c)))), list))));

  // A webhook secret is shown once, when it is made.
  const showSecret = (s) => mount(editor, h("h2", {}, `Webhook secret of ${s.name}`),
    h("p", {}, "Give it to the supplier now: it signs every webhook (", h("code", {}, "Shopstream-Signature"), ") and is not shown again."),
    h("p", { class: "mono", id: "webhook-secret" }, s.webhook_secret),
    h("button", { type: "button", onclick: () => edit(null) }, "Done"));

  const load = async () => {
    const all = await api("GET", "/api/admin/suppliers");
    mount(list, all.length ? all.map((s) => h("tr", { dataset: { supplier: s.id } },
      h("th", { scope: "row" }, s.name, h("br"), h("small", { class: "mono muted" }, s.id)),
      h("td", {}, s.contact_email || "–"), h("td", { class: "mono" }, s.webhook_url || "–"),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => edit(s) }, "Edit"),
        h("button", { type: "button", class: "secondary", onclick: async () => {
          if (!confirm(`Make a new webhook secret for ${s.name}? The old one stops working at once.`)) return;
          try {
            showSecret(await api("POST", `/api/admin/suppliers/${encodeURIComponent(s.id)}/webhook-secret`));
            load();
          } catch (e) {
            toast(e.message, "error");
          }
        } }, "New secret"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Delete ${s.name}? Its alerts are then delivered to nobody.`)) return;
          try {
            await api("DELETE", `/api/admin/suppliers/${encodeURIComponent(s.id)}`);
            toast(`Deleted ${s.name}`);
            edit(null);
            load();
          } catch (e) {
            toast(e.message, "error");
          }
        } }, "Delete"))))) : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "No suppliers yet.")));
  };

  const edit = (s) => {
    const input = (name, label, type) => h("label", { class: "field" }, `${label} `,
      h("input", { name, type: type || "text", value: s ? String(s[name] ?? "") : "", readonly: s && name === "id" ? true : null }));
    const form = h("form", { id: "supplier-form", novalidate: true },
      h("h2", {}, s ? `Edit ${s.name}` : "New supplier"),
      h("div", { class: "form-grid" },
        input("id", "Id (the products' supplier_id)"), input("name", "Name"),
        input("contact_email", "Contact e-mail", "email"), input("webhook_url", "Webhook URL (https://)", "url")),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "save-supplier" }, s ? "Save changes" : "Add supplier"),
        s ? h("button", { type: "button", class: "secondary", onclick: () => edit(null) }, "New supplier instead") : null));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearProblem(form);
      const d = new FormData(form);
      const body = {};
      for (const name of s ? ["name", "contact_email", "webhook_url"] : ["id", "name", "contact_email", "webhook_url"]) {
        const v = d.get(name).trim();
        if (v !== "" || name === "name" || name === "id") body[name] = v;
      }
      try {
        const saved = s
          ? await api("PUT", `/api/admin/suppliers/${encodeURIComponent(s.id)}`, body, { "if-match": `"${s.version}"` })
          : await api("POST", "/api/admin/suppliers", body);
        toast(s ? `Saved ${saved.name}` : `Added ${saved.name}`);
        load();
        if (saved.webhook_secret && saved.webhook_url) showSecret(saved);
        else edit(null);
      } catch (err) {
        showProblem(form, err);
      }
    });
    mount(editor, form);
  };
  edit(null);
  await load();
}

// ---- shell ---------------------------------------------------------------------------------

const PAGES = {
  stock: ["Stock & alerts", stockPage, false],
  analytics: ["Analytics", analyticsPage, true],
  pipeline: ["Pipeline", pipelinePage, true],
  products: ["Products", productsPage, true],
  suppliers: ["Suppliers", suppliersPage, true],
};

async function route() {
  if (location.hash && !location.hash.startsWith("#/")) return;
  timers.forEach(clearInterval);
  timers = [];
  for (const t of pageTopics) live.unsubscribe(t);
  pageTopics = [];
  const name = location.hash.slice(2) || "stock";
  const page = PAGES[name] && (!PAGES[name][2] || isAdmin()) ? name : "stock";
  mount(tabs, Object.entries(PAGES).filter(([, p]) => !p[2] || isAdmin())
    .map(([k, p]) => h("a", { href: `#/${k}`, "aria-current": k === page ? "page" : null }, p[0])));
  main.setAttribute("aria-busy", "true");
  try {
    await PAGES[page][1]();
  } catch (err) {
    mount(main, h("p", { class: "form-error", role: "alert" }, err.message));
  } finally {
    main.removeAttribute("aria-busy");
    main.dataset.page = page;
  }
}

function start() {
  const u = auth.user();
  if (!u) return signInPage();
  if (u.role !== "admin" && u.role !== "supplier") {
    signOut();
    return signInPage("The dashboard is for admins and suppliers. Customers: the shop is at /.");
  }
  mount(document.getElementById("account"), h("span", { id: "who" }, `${u.email} (${u.role}${u.supplier_id ? `: ${u.supplier_id}` : ""})`),
    h("a", { href: "/" }, "Shop"),
    h("button", { type: "button", class: "link", onclick: () => { if (!signOut("dashboard")) { live?.reconnect(); signInPage(); } } }, "Sign out"));
  if (!live) live = new Live((s) => document.body.setAttribute("data-live", s));
  route();
}

window.addEventListener("hashchange", () => auth.user() && route());
// Back from the external issuer's sign-in, or a plain visit.
finishExternalSignIn().then((r) => (r?.error ? signInPage(r.error) : start()));
