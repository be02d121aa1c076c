"""Browser tests: the real binary on loopback, driven in Debian's headless
Chromium by Playwright. Run by scripts/browser-tests.sh (the README's test
command runs it), which installs what they need.

Screenshots go to $SHOPSTREAM_SCREENSHOTS (default target/screenshots);
`scripts/browser-tests.sh --update-screenshots` copies them into docs/.
"""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@shop.test"
ADMIN_PASSWORD = "admin password 1"
SUPPLIER_EMAIL = "acme@shop.test"
SUPPLIER_PASSWORD = "supplier password 1"
SUPPLIER_ID = "acme-textiles"
CHROMIUM = os.environ.get("SHOPSTREAM_CHROMIUM", "/usr/bin/chromium")
SHOTS = pathlib.Path(os.environ.get("SHOPSTREAM_SCREENSHOTS", ROOT / "target" / "screenshots"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def binary():
    path = pathlib.Path(os.environ.get("SHOPSTREAM_BIN", ROOT / "target" / "debug" / "shopstream"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it first (cargo build), or set SHOPSTREAM_BIN")
    return str(path)


class Server:
    """One shopstream process with the demo catalogue, on the embedded store."""

    def __init__(self, listen="127.0.0.1:0", extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="shopstream-browser-")
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "SHOPSTREAM_DATA_DIR": os.path.join(self.dir, "data"),
            "SHOPSTREAM_LISTEN": listen,
            "SHOPSTREAM_LOG": "warn",
            "SHOPSTREAM_ADMIN_EMAIL": ADMIN_EMAIL,
            "SHOPSTREAM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SHOPSTREAM_SEED_DEMO_CATALOGUE": "true",
            **(extra_env or {}),
        }
        # A supplier account, made before the server holds the store.
        subprocess.run(
            [binary(), "user", "create", "--email", SUPPLIER_EMAIL, "--password", SUPPLIER_PASSWORD,
             "--role", "supplier", "--supplier-id", SUPPLIER_ID],
            env=self.env, cwd=self.dir, check=True, capture_output=True, timeout=120,
        )
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [binary(), "serve"], env=self.env, cwd=self.dir,
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        deadline = time.time() + 60
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("shopstream listening on "):
                self.url = line.split()[-1].strip()
                break
        if not self.url:
            self.stop()
            pytest.fail(f"the server did not start; its log:\n{self.logs()}")
        # Drain stdout so the server never blocks on it.
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def logs(self):
        with open(os.path.join(self.dir, "server.log")) as f:
            return f.read()

    def call(self, method, path, body=None, token=None, headers=None):
        req = urllib.request.Request(self.url + path, method=method)
        if token:
            req.add_header("authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, data, timeout=30) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None), dict(r.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None), dict(e.headers)

    def token(self, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
        status, body, _ = self.call("POST", "/api/auth/login", {"email": email, "password": password})
        assert status == 200, body
        return body["access_token"]

    def products(self):
        status, body, _ = self.call("GET", "/api/products?limit=100")
        assert status == 200, body
        return {p["sku"]: p for p in body["items"]}

    def wait_for(self, what, check, timeout=30):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    def stock(self, product_id):
        status, body, _ = self.call("GET", f"/api/inventory/{product_id}")
        assert status == 200, body
        return body

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    # The demo stock is applied by the pipeline: wait for it.
    tee = s.products()["TEE-CLASSIC-WHT"]
    s.wait_for("the demo stock", lambda: s.stock(tee["id"])["on_hand"] > 0)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/browser-tests.sh, which installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@contextlib.contextmanager
def new_page(browser, url):
    """A fresh browser context (no storage) at desktop size on `url`. Any
    console error (a CSP violation, a script error) fails the test."""
    ctx = browser.new_context(viewport=DESKTOP, base_url=url)
    ctx.set_default_timeout(15000)
    pg = ctx.new_page()
    errors = []
    pg.on("console", lambda m: m.type == "error" and errors.append(m.text))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    # Expected failures (a declined card is a 402) are logged by Chromium as
    # failed resource loads; anything else is a bug.
    unexpected = [e for e in errors if "Failed to load resource" not in e]
    assert not unexpected, f"console errors: {unexpected}"


@pytest.fixture
def page(browser, server, request):
    with new_page(browser, server.url) as pg:
        yield pg


def shot(pg, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Passing notices would hide what the page shows.
    pg.evaluate("document.getElementById('toasts')?.replaceChildren()")
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def unique_email(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}@shop.test"
