"""The operations dashboard in a real browser: live stock and alerts for an
admin and a supplier, product admin with validation errors, analytics and
pipeline health."""

import base64
import random
import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect

from conftest import (
    ADMIN_EMAIL, ADMIN_PASSWORD, DESKTOP, PHONE, SUPPLIER_EMAIL, SUPPLIER_PASSWORD, shot,
)

# A 1×1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def sign_in(page, email, password):
    page.goto("/dashboard")
    page.fill("#login-form input[name=email]", email)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")


def adjust(server, product_id, delta):
    status, body, _ = server.call(
        "POST", "/api/events",
        [{"type": "stock.adjusted", "data": {"product_id": product_id, "delta": delta, "reason": "damaged"}}],
        token=server.token(),
    )
    assert status == 202 and body["accepted"] == 1, body


def test_the_stock_cell_and_the_alert_list_change_live(page, server, browser):
    tote = server.products()["BAG-TOTE"]
    pid = tote["id"]
    server.wait_for("the tote's stock", lambda: server.stock(pid)["available"] == 30)
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    row = page.locator(f"#stock-table tr[data-product='{pid}']")
    expect(page.locator(f"#avail-{pid}")).to_have_text("30")
    expect(row).not_to_have_class(re.compile(r"\blow\b"))

    # A stock event posted to the stream: the cell and the alerts change
    # without a reload.
    adjust(server, pid, -25)
    expect(page.locator(f"#avail-{pid}")).to_have_text("5")
    expect(page.locator(f"#stock-table tr[data-product='{pid}']")).to_have_class(re.compile(r"\blow\b"))
    alert = page.locator("#alerts li", has_text="Organic cotton tote bag")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("5 left (threshold 10)")

    # The filter: only low stock.
    page.check("#low-only")
    expect(page.locator("#stock-table tbody tr:visible")).to_have_count(1)
    page.uncheck("#low-only")
    page.fill("#stock-filter", "classic")
    expect(page.locator("#stock-table tbody tr:visible")).to_have_count(2)
    page.fill("#stock-filter", "")
    shot(page, "dashboard-desktop")

    # The supplier of the tote sees it and its alert, and none of another
    # supplier's products.
    ctx = browser.new_context(viewport=PHONE, base_url=server.url)
    sup = ctx.new_page()
    sign_in(sup, SUPPLIER_EMAIL, SUPPLIER_PASSWORD)
    expect(sup.locator(f"#avail-{pid}")).to_have_text("5")
    expect(sup.locator("#stock-table")).not_to_contain_text("Trail running shoe")
    expect(sup.locator("#stock-table")).to_contain_text("Classic white tee")
    expect(sup.locator("#tabs a")).to_have_count(1)
    sup_alert = sup.locator("#alerts li", has_text="Organic cotton tote bag")
    expect(sup_alert).to_have_count(1)
    # Acknowledged by the supplier; restocked, then low again: a new alert.
    sup_alert.locator("button:has-text('Acknowledge')").click()
    expect(sup_alert).to_have_class(re.compile(r"\backed\b"))
    adjust(server, pid, 20)
    expect(sup.locator(f"#avail-{pid}")).to_have_text("25")
    adjust(server, pid, -22)
    expect(sup.locator(f"#avail-{pid}")).to_have_text("3")
    expect(sup.locator("#alerts li", has_text="Organic cotton tote bag")).to_have_count(2)
    expect(page.locator("#alerts li", has_text="Organic cotton tote bag")).to_have_count(2)
    shot(sup, "dashboard-phone")
    ctx.close()


def test_a_customer_is_not_let_into_the_dashboard(page, server):
    status, body, _ = server.call(
        "POST", "/api/auth/register",
        {"email": "carol@shop.test", "password": "customer password 1", "name": "Carol"},
    )
    assert status == 201, body
    sign_in(page, "carol@shop.test", "customer password 1")
    expect(page.locator("#login-form .form-error")).to_contain_text("for admins and suppliers")


def test_an_admin_creates_a_product_and_sees_validation_errors(page, server, tmp_path):
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.click("#tabs a:has-text('Products')")
    form = page.locator("#product-form")
    form.locator("input[name=name]").fill("Desk lamp")
    form.locator("input[name=price]").fill("cheap")
    form.locator("input[name=category]").fill("home")
    form.locator("input[name=low_stock_threshold]").fill("-1")
    form.locator("button[type=submit]").click()
    # Each error next to its field.
    for field in ["sku", "price", "low_stock_threshold"]:
        expect(form.locator(f"label:has(input[name={field}]) .field-error")).to_be_visible()
        expect(form.locator(f"input[name={field}]")).to_have_attribute("aria-invalid", "true")
    expect(form.locator("label:has(input[name=name]) .field-error")).to_have_count(0)
    shot(page, "product-admin-desktop")

    form.locator("input[name=sku]").fill("LAMP-DESK")
    form.locator("input[name=price]").fill("39.00")
    form.locator("input[name=low_stock_threshold]").fill("2")
    form.locator("button[type=submit]").click()
    expect(page.locator("#product-list")).to_contain_text("Desk lamp")
    expect(page.locator("#editor h2").first).to_have_text("Edit Desk lamp")
    lamp = server.products()["LAMP-DESK"]
    assert lamp["price"] == "39.00" and lamp["category"] == "home"

    # A duplicate SKU is refused with the reason.
    page.click("#editor button:has-text('New product instead')")
    form.locator("input[name=sku]").fill("LAMP-DESK")
    form.locator("input[name=name]").fill("Another lamp")
    form.locator("input[name=price]").fill("10")
    form.locator("input[name=category]").fill("home")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-error")).to_contain_text("LAMP-DESK")
    page.locator("#product-list tr", has_text="Desk lamp").locator("button:has-text('Edit')").click()

    # Stock, through a stock.counted event.
    page.fill("#on-hand", "7")
    page.click("#stock-form button")
    server.wait_for("the count", lambda: server.stock(lamp["id"])["on_hand"] == 7)

    # The image: a text file is refused by content, a PNG is kept.
    bad = tmp_path / "lamp.png"
    bad.write_text("not an image")
    page.set_input_files("#image-file", str(bad))
    page.click("#image-form button")
    expect(page.locator("#image-form .field-error")).to_be_visible()
    good = tmp_path / "lamp-real.png"
    good.write_bytes(PNG)
    page.set_input_files("#image-file", str(good))
    page.click("#image-form button")
    expect(page.locator("#image-form img")).to_be_visible()
    assert server.products()["LAMP-DESK"]["image_url"]

    # The storefront shows it, with its stock.
    page.goto("/#/products?q=desk%20lamp")
    expect(page.locator("#products .card")).to_have_count(1)
    expect(page.locator("#products .card img")).to_be_visible()
    expect(page.locator("#products .card .stock")).to_have_text("In stock")


def new_session(server):
    status, _, headers = server.call("GET", "/api/basket")
    assert status == 200
    return {k.lower(): v for k, v in headers.items()}["x-session-id"]


def summary_views(server):
    status, body, _ = server.call("GET", "/api/analytics/summary?minutes=60", token=server.token())
    assert status == 200, body
    return body["totals"]["views"]


def test_analytics_and_pipeline_health(page, server):
    # A visitor's activity over the last half hour, so the per-minute charts
    # have something to show. Sent by a trusted (admin) caller: the server
    # clamps a browser's own `occurred_at` to its clock.
    session = new_session(server)
    products = list(server.products().values())
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    events = []
    for m in range(30):
        at = (now - timedelta(minutes=m)).isoformat().replace("+00:00", "Z")
        for _ in range(rng.randint(1, 8)):
            p = rng.choice(products)
            events.append({"type": "browse.viewed", "occurred_at": at,
                           "data": {"session_id": session, "product_id": p["id"]}})
        if rng.random() < 0.5:
            events.append({"type": "basket.added", "occurred_at": at,
                           "data": {"session_id": session, "product_id": rng.choice(products)["id"], "quantity": 1}})
    views = sum(e["type"] == "browse.viewed" for e in events)
    before = summary_views(server)
    status, body, _ = server.call("POST", "/api/events", events, token=server.token())
    assert status == 202 and body["accepted"] == len(events), body
    server.wait_for("the views to be counted", lambda: summary_views(server) >= before + views)

    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    expect(page.locator("#stock-table")).to_be_visible()
    page.click("#tabs a:has-text('Analytics')")
    expect(page.locator("#kpi-views .v")).to_have_text(str(before + views))
    # One bar a minute over the hour; the visitor was active in 30 of them.
    expect(page.locator("#charts figure[data-chart=views] rect")).to_have_count(60)
    assert int(page.locator("#charts figure[data-chart=views]").get_attribute("data-minutes")) >= 30
    expect(page.locator("#kpi-views .v")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#charts figure")).to_have_count(4)
    expect(page.locator("#trending h2")).to_have_text("Trending products")
    expect(page.locator("#funnel h2")).to_contain_text("Recommendations")
    shot(page, "analytics-desktop")

    # A view from a visitor reaches the live counters.
    before = int(page.locator("#kpi-views .v").inner_text())
    mug = server.products()["MUG-ENAMEL"]
    status, body, _ = server.call(
        "POST", "/api/events",
        [{"type": "browse.viewed", "data": {"session_id": session, "product_id": mug["id"]}}],
        headers={"x-session-id": session},
    )
    assert status == 202, body
    expect(page.locator("#kpi-views .v")).to_have_text(str(before + 1))

    page.click("#tabs a:has-text('Pipeline')")
    expect(page.locator("#rate-applied .v")).not_to_have_text("…", timeout=10000)
    expect(page.locator("#leases tbody tr").first).to_be_visible()
    expect(page.locator("#dead-letters h2")).to_have_text("Dead letters")
    expect(page.locator("#model h2")).to_have_text("Recommendation model")
    assert int(page.locator("#total-applied .v").inner_text()) > 0
    page.set_viewport_size(DESKTOP)
    shot(page, "pipeline-desktop")


def test_an_admin_manages_suppliers_and_their_webhook_secret(page, server):
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.click("#tabs a:has-text('Suppliers')")
    form = page.locator("#supplier-form")
    # Errors next to their fields: no name, a webhook that is not https.
    form.locator("input[name=id]").fill("socks-ltd")
    form.locator("input[name=webhook_url]").fill("http://hooks.example/stock")
    form.locator("button[type=submit]").click()
    for field in ["name", "webhook_url"]:
        expect(form.locator(f"label:has(input[name={field}]) .field-error")).to_be_visible()
    form.locator("input[name=name]").fill("Socks Ltd")
    form.locator("input[name=contact_email]").fill("Stock@Socks.example")
    form.locator("input[name=webhook_url]").fill("https://hooks.example/stock")
    form.locator("button[type=submit]").click()
    # The secret is shown once, and is the one the API signs with.
    secret = page.locator("#webhook-secret")
    expect(secret).to_have_text(re.compile(r"^[A-Za-z0-9_-]{43}$"))
    row = page.locator("#supplier-list tr[data-supplier='socks-ltd']")
    expect(row).to_contain_text("stock@socks.example")
    status, body, _ = server.call("GET", "/api/admin/suppliers/socks-ltd", token=server.token())
    assert status == 200 and body["name"] == "Socks Ltd" and "webhook_secret" not in body, body
    first = secret.inner_text()

    # A new secret replaces it.
    page.on("dialog", lambda d: d.accept())
    row.locator("button:has-text('New secret')").click()
    expect(page.locator("#webhook-secret")).not_to_have_text(first)
    page.click("#supplier-editor button:has-text('Done')")

    # Edit, then delete.
    row.locator("button:has-text('Edit')").click()
    page.locator("#supplier-form input[name=name]").fill("Socks Limited")
    page.locator("#supplier-form button[type=submit]").click()
    expect(row).to_contain_text("Socks Limited")
    row.locator("button:has-text('Delete')").click()
    expect(page.locator("#supplier-list tr[data-supplier='socks-ltd']")).to_have_count(0)
    status, _, _ = server.call("GET", "/api/admin/suppliers/socks-ltd", token=server.token())
    assert status == 404
