"""The storefront in a real browser: browse, recommendations, basket,
checkout with the simulated processor's test cards, orders."""

import json
import re

from playwright.sync_api import expect

from conftest import PHONE, shot, unique_email

PASSWORD = "customer password 1"


def register(page, email, name="Ada Lovelace"):
    page.fill("#register-form input[name=name]", name)
    page.fill("#register-form input[name=email]", email)
    page.fill("#register-form input[name=password]", PASSWORD)
    page.click("#register-form button[type=submit]")


def others_view(server, skus):
    """Another visitor's views, so there is something popular to recommend."""
    status, _, headers = server.call("GET", "/api/basket")
    assert status == 200
    session = headers.get("x-session-id") or headers.get("X-Session-Id")
    products = server.products()
    events = [
        {"type": "browse.viewed", "data": {"session_id": session, "product_id": products[s]["id"]}}
        for s in skus
    ]
    status, body, _ = server.call("POST", "/api/events", events, headers={"x-session-id": session})
    assert status == 202, body


def test_a_customer_browses_gets_recommendations_fills_a_basket_pays_and_sees_the_order(page, server):
    if len(server.products()) <= 12:
        status, body, _ = server.call(
            "POST", "/api/products",
            {"sku": "SCARF-WOOL", "name": "Wool scarf", "price": "29.00", "currency": "EUR",
             "category": "accessories"},
            token=server.token(),
        )
        assert status == 201, body
    response = page.goto("/")
    # The page is served with a strict policy and no framing.
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]

    # The catalogue: the demo products, with categories and live stock.
    expect(page.locator("#products .card")).to_have_count(12)
    # Paging: "More products" fetches the next page with the cursor (one
    # more product than a page holds, whichever tests ran before).
    page.click("#more")
    expect(page.locator("#products .card")).to_have_count(min(len(server.products()), 24))
    expect(page.locator("#categories a", has_text="shoes")).to_be_visible()
    expect(page.locator("#products .card", has_text="Classic white tee").locator(".stock")).to_have_text("In stock")
    page.click("#categories a:text('shoes')")
    expect(page.locator("#products .card")).to_have_count(2)
    expect(page.locator("h1")).to_have_text("shoes")

    # Search by name.
    page.fill("#q", "CLASSIC")
    page.click("#search button")
    expect(page.locator("#products .card")).to_have_count(2)
    expect(page.locator("#products")).to_contain_text("Classic white tee")
    expect(page.locator("#products")).to_contain_text("Classic black tee")
    # The search engine forgives a typo and counts the matches per category.
    page.fill("#q", "clasic tees")
    page.click("#search button")
    expect(page.locator("#products .card")).to_have_count(2)
    expect(page.locator("#facets a")).to_have_text(["shirts (2)"])
    # Typing offers the names it would find.
    page.fill("#q", "classic wh")
    expect(page.locator("#q-suggestions option")).to_have_count(1)
    assert page.locator("#q-suggestions option").get_attribute("value") == "Classic white tee"

    # Recommendations on the home page (popularity: what others viewed).
    others_view(server, ["HOODIE-GRY", "MUG-ENAMEL", "CANDLE-CEDAR", "RUN-SHOE-42"])
    server.wait_for("the views to count", lambda: server.call("GET", "/api/trending")[1]["items"])
    page.goto("/#/")
    recs = page.locator("#recommended .card")
    expect(recs.first).to_be_visible()
    assert recs.count() >= 2
    shot(page, "storefront-desktop")

    # Following a recommendation sends the view with its recommendation id.
    with page.expect_request(lambda r: r.url.endswith("/api/events") and r.method == "POST") as sent:
        recs.first.locator("a").click()
    viewed = json.loads(sent.value.post_data)[0]
    assert viewed["type"] == "browse.viewed"
    assert viewed["data"]["recommendation_id"].count("~") == 2, viewed
    assert re.search(r"#/p/[0-9a-f-]+\?rec=", page.url)
    expect(page.locator(".product h1")).to_be_visible()

    # The product page: price, live stock, similar items; add two.
    page.goto("/#/")
    page.fill("#q", "white tee")
    page.click("#search button")
    page.click("#products .card a:has-text('Classic white tee')")
    expect(page.locator(".product h1")).to_have_text("Classic white tee")
    expect(page.locator(".product .price")).to_have_text("€19.99")
    expect(page.locator("#stock")).to_have_text("In stock")
    expect(page.locator("#similar .card").first).to_be_visible()
    shot(page, "product-desktop")
    page.fill("#qty", "2")
    page.click("#add")
    expect(page.locator("#basket-link .count")).to_have_text("2")

    # The basket: change the quantity, see the total.
    page.click("#basket-link")
    expect(page.locator("#basket tbody tr")).to_have_count(1)
    expect(page.locator("#basket-total")).to_have_text("€39.98")
    page.fill("#basket tbody input[name=quantity]", "3")
    page.click("#basket tbody button:has-text('Update')")
    expect(page.locator("#basket-total")).to_have_text("€59.97")

    # Checkout needs an account; registering keeps the basket.
    page.click("#login-to-checkout")
    expect(page.locator("#login-form")).to_be_visible()
    email = unique_email("ada")
    page.goto("/#/register?next=basket")
    register(page, email)
    expect(page.locator("#basket-total")).to_have_text("€59.97")
    expect(page.locator("#profile-link")).to_have_text("Ada Lovelace")
    shot(page, "basket-desktop")

    # Pay with the approving test card (the default).
    expect(page.locator("#checkout-form input[name=card]").first).to_be_checked()
    page.click("#pay")
    expect(page.locator("#order-status .status")).to_have_text("Paid")
    expect(page.locator("#confirmation")).to_be_visible()
    order_url = page.url
    assert "#/orders/" in order_url
    expect(page.locator("#basket-link .count")).to_have_text("0")
    shot(page, "order-desktop")

    # The stock was sold: three fewer on hand.
    tee = server.products()["TEE-CLASSIC-WHT"]
    server.wait_for("the sale to be applied", lambda: server.stock(tee["id"])["on_hand"] == 27)

    # Order history, and the status changing live when the admin ships it.
    page.click("a:has-text('Orders')")
    expect(page.locator("#orders li")).to_have_count(1)
    expect(page.locator("#orders li .status")).to_have_text("Paid")
    page.click("#orders li a")
    order_id = order_url.rsplit("/", 1)[1]
    admin = server.token()
    status, body, _ = server.call("POST", f"/api/orders/{order_id}/status", {"status": "packed"}, token=admin)
    assert status == 200, body
    expect(page.locator("#order-status .status")).to_have_text("Packed")

    # The same pages at a phone's width.
    page.set_viewport_size(PHONE)
    page.goto("/#/")
    expect(page.locator("#products .card").first).to_be_visible()
    shot(page, "storefront-phone")
    page.goto(order_url)
    expect(page.locator("#order-status .status")).to_have_text("Packed")
    shot(page, "order-phone")


def test_a_declined_card_shows_the_error_and_leaves_the_basket_intact(page, server):
    page.goto("/#/register")
    register(page, unique_email("bob"), name="Bob")
    expect(page.locator("#profile-link")).to_have_text("Bob")
    page.fill("#q", "canvas")
    page.click("#search button")
    page.click("#products .card a")
    expect(page.locator("#stock")).to_have_text("In stock")
    page.click("#add")
    expect(page.locator("#basket-link .count")).to_have_text("1")
    page.click("#basket-link")
    page.check("#checkout-form input[value='4000000000000002']")
    page.click("#pay")
    error = page.locator("#payment-error")
    expect(error).to_contain_text("declined")
    expect(error).to_contain_text("basket is unchanged")
    # Still in the basket, and the stock was released.
    expect(page.locator("#basket tbody tr")).to_have_count(1)
    expect(page.locator("#basket-link .count")).to_have_text("1")
    shot(page, "declined-desktop")
    sneaker = server.products()["SNEAKER-CNV"]
    assert server.stock(sneaker["id"])["reserved"] == 0

    # The processor error card, then the approving one: one paid order.
    page.check("#checkout-form input[value='4000000000000119']")
    page.click("#pay")
    expect(page.locator("#payment-error")).to_contain_text("could not be processed")
    page.check("#checkout-form input[value='4242424242424242']")
    page.click("#pay")
    expect(page.locator("#order-status .status")).to_have_text("Paid")


def test_bad_sign_in_and_registration_are_shown_next_to_the_field(page, server):
    page.goto("/#/register")
    page.fill("#register-form input[name=name]", "Eve")
    page.fill("#register-form input[name=email]", "not-an-email")
    page.fill("#register-form input[name=password]", "short")
    page.click("#register-form button[type=submit]")
    expect(page.locator("#register-form input[name=email]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#register-form label:has(input[name=email]) .field-error")).to_contain_text("e-mail")
    expect(page.locator("#register-form label:has(input[name=password]) .field-error")).to_be_visible()
    page.goto("/#/login")
    page.fill("#login-form input[name=email]", "nobody@shop.test")
    page.fill("#login-form input[name=password]", "wrong password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-form .form-error")).to_contain_text("wrong e-mail address or password")


def test_the_storefront_is_usable_with_the_keyboard(page, server):
    page.goto("/")
    expect(page.locator("#products .card").first).to_be_visible()
    # The first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Enter")
    # Search from the keyboard.
    page.focus("#q")
    page.keyboard.type("mug")
    page.keyboard.press("Enter")
    expect(page.locator("#products .card")).to_have_count(1)
    # Tab to the product link and open it with Enter.
    page.locator("#products .card a").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".product h1")).to_have_text("Enamel camping mug")
    page.focus("#qty")
    page.keyboard.press("Enter")
    expect(page.locator("#basket-link .count")).to_have_text("1")


def test_the_product_page_stock_changes_live(page, server):
    candle = server.products()["CANDLE-CEDAR"]
    server.wait_for("the candle's stock", lambda: server.stock(candle["id"])["available"] == 24)
    page.goto(f"/#/p/{candle['id']}")
    expect(page.locator("#stock")).to_have_text("In stock")
    admin = server.token()

    def adjust(delta):
        status, body, _ = server.call(
            "POST", "/api/events",
            [{"type": "stock.adjusted", "data": {"product_id": candle["id"], "delta": delta, "reason": "sold in shop"}}],
            token=admin,
        )
        assert status == 202, body

    adjust(-21)
    expect(page.locator("#stock")).to_have_text("Only 3 left")
    adjust(-3)
    expect(page.locator("#stock")).to_have_text("Out of stock")
    adjust(10)
    expect(page.locator("#stock")).to_have_text("In stock")
