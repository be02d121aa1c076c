"""Signing in to the dashboard and the storefront through an external
issuer (as with Amazon Cognito's hosted UI), in a real browser: the server's
OpenID Connect code flow with PKCE against an identity provider on loopback
that signs in whoever the test names, and the pages' half (the one-time
token in the fragment exchanged for the service's tokens)."""

import base64
import hashlib
import http.server
import json
import secrets
import socket
import threading
import time
import urllib.parse

import jwt
import pytest
from playwright.sync_api import expect

from conftest import ADMIN_EMAIL, ROOT, Server, new_page

FIXTURES = ROOT / "tests" / "fixtures"
CLIENT_ID = "shopstream-pages"
CLIENT_SECRET = "browser test secret"


class Provider:
    """Discovery, keys, an authorization endpoint that signs in
    `self.user` at once, and a token endpoint that checks the client's
    secret, the redirect URI and the PKCE verifier, one use per code."""

    def __init__(self):
        self.user = None
        self.codes = {}
        self.logouts = []
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=None, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                data = json.dumps(body).encode() if body is not None else b""
                if body is not None:
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self.reply(200, {
                        "issuer": provider.issuer,
                        "authorization_endpoint": provider.issuer + "/oauth2/authorize",
                        "token_endpoint": provider.issuer + "/oauth2/token",
                        "jwks_uri": provider.issuer + "/.well-known/jwks.json",
                        "end_session_endpoint": provider.issuer + "/logout",
                    })
                elif url.path == "/.well-known/jwks.json":
                    self.reply(200, json.loads((FIXTURES / "jwks.json").read_text()))
                elif url.path == "/oauth2/authorize":
                    assert q["client_id"] == CLIENT_ID and q["code_challenge_method"] == "S256", q
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = (dict(provider.user), q)
                    back = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q["state"]})
                    self.reply(302, headers=[("location", back)])
                elif url.path == "/logout":
                    assert q["client_id"] == CLIENT_ID, q
                    provider.logouts.append(q)
                    self.reply(302, headers=[("location", q["post_logout_redirect_uri"])])
                else:
                    self.reply(404, {"error": "not_found"})

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["content-length"])).decode()))
                basic = base64.b64encode(
                    f"{CLIENT_ID}:{urllib.parse.quote_plus(CLIENT_SECRET)}".encode()
                ).decode()
                if self.headers.get("authorization") != f"Basic {basic}":
                    return self.reply(401, {"error": "invalid_client"})
                grant = provider.codes.pop(form.get("code"), None)
                if grant is None:
                    return self.reply(400, {"error": "invalid_grant"})
                claims, asked = grant
                challenge = base64.urlsafe_b64encode(
                    hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                ).rstrip(b"=").decode()
                if challenge != asked["code_challenge"] or form.get("redirect_uri") != asked["redirect_uri"]:
                    return self.reply(400, {"error": "invalid_grant"})
                now = int(time.time())
                claims.update({"iss": provider.issuer, "aud": CLIENT_ID, "token_use": "id",
                               "iat": now, "exp": now + 3600, "nonce": asked["nonce"],
                               "email_verified": True})
                token = jwt.encode(claims, (FIXTURES / "jwks_test_key.pem").read_text(),
                                   algorithm="RS256", headers={"kid": "test-key-1"})
                self.reply(200, {"id_token": token, "access_token": "unused", "token_type": "Bearer"})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def oidc_server(provider):
    # The redirect URI names the server's address, so the port is chosen
    # first; another process may take it in between: then another port.
    for attempt in range(3):
        port = free_port()
        try:
            s = Server(listen=f"127.0.0.1:{port}", extra_env={
                "SHOPSTREAM_JWKS_URL": provider.issuer + "/.well-known/jwks.json",
                "SHOPSTREAM_JWKS_ISSUER": provider.issuer,
                "SHOPSTREAM_JWKS_AUDIENCE": CLIENT_ID,
                "SHOPSTREAM_OIDC_CLIENT_ID": CLIENT_ID,
                "SHOPSTREAM_OIDC_CLIENT_SECRET": CLIENT_SECRET,
                "SHOPSTREAM_PUBLIC_URL": f"http://127.0.0.1:{port}",
            })
            break
        except pytest.fail.Exception:
            if attempt == 2:
                raise
    yield s
    s.stop()


def stored_auth(page):
    return page.evaluate("JSON.parse(localStorage.getItem('shopstream.auth'))")


def test_a_supplier_signs_in_to_the_dashboard_through_the_issuer(browser, provider, oidc_server):
    provider.user = {"sub": "sub-supplier-1", "email": "ops@acme.example", "name": "Acme Ops",
                     "cognito:groups": ["supplier"], "custom:supplier_id": "acme-textiles"}
    with new_page(browser, oidc_server.url) as page:
        page.goto("/dashboard")
        page.click("#external-sign-in")
        expect(page.locator("#who")).to_have_text("ops@acme.example (supplier: acme-textiles)")
        # The one-time token left the address bar; the page holds the
        # service's own tokens.
        assert "oidc" not in page.url, page.url
        assert page.url.endswith("/dashboard"), page.url
        held = stored_auth(page)
        assert held["access_token"] and held["refresh_token"] and held["user"]["role"] == "supplier"
        # The supplier's own stock view loads.
        expect(page.locator("#stock-table")).to_be_visible()
        # Signing out ends the session at the provider too, and comes back.
        page.click("#account button:has-text('Sign out')")
        expect(page.locator("#login-form")).to_be_visible()
        assert page.url == oidc_server.url + "/dashboard", page.url
        assert provider.logouts[-1]["post_logout_redirect_uri"] == oidc_server.url + "/dashboard"
        assert stored_auth(page) is None


def test_a_customer_signs_in_to_the_storefront_and_a_refusal_is_shown(browser, provider, oidc_server):
    provider.user = {"sub": "sub-customer-1", "email": "ada@example.org", "name": "Ada"}
    with new_page(browser, oidc_server.url) as page:
        page.goto("/#/login")
        page.click("#external-sign-in")
        expect(page.locator("#profile-link")).to_have_text("Ada")
        assert "oidc" not in page.url, page.url
    # Someone at the issuer with the address of a password account here is
    # not let in as that account.
    provider.user = {"sub": "sub-intruder", "email": ADMIN_EMAIL}
    with new_page(browser, oidc_server.url) as page:
        page.goto("/#/login")
        page.click("#external-sign-in")
        expect(page.locator("#login-form .form-error")).to_contain_text("exists here already")
        assert stored_auth(page) is None
