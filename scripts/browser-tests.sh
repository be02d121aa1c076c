#!/usr/bin/env bash
# The browser tests: the storefront and the dashboard driven in Debian's
# headless Chromium by Playwright for Python, against the real binary on
# loopback. Installs what they need when absent: Debian's `chromium` (apt)
# and Playwright + pytest in a virtualenv cached outside the clone, keyed by
# version. Builds the debug binary, then runs tests/browser.
#   scripts/browser-tests.sh [--update-screenshots] [PYTEST ARGS...]
# --update-screenshots copies the screenshots the tests take
# (target/screenshots) into docs/screenshots, which the README shows.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/cache.sh
PLAYWRIGHT_VERSION=1.56.0
PYTEST_VERSION=8.4.2
# The external sign-in test's identity provider signs ID tokens (RS256).
PYJWT_VERSION=2.10.1
CRYPTOGRAPHY_VERSION=46.0.3
VENV="$CACHE/browser-tests-playwright-$PLAYWRIGHT_VERSION-pytest-$PYTEST_VERSION-pyjwt-$PYJWT_VERSION-cryptography-$CRYPTOGRAPHY_VERSION"
CHROMIUM="${SHOPSTREAM_CHROMIUM:-/usr/bin/chromium}"

UPDATE=0
if [ "${1:-}" = "--update-screenshots" ]; then
  UPDATE=1
  shift
fi

if [ ! -x "$CHROMIUM" ]; then
  echo "browser-tests.sh: installing Debian's chromium (apt)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
      echo "browser-tests.sh: Chromium is missing and this user cannot install it; run: apt-get install chromium" >&2
      exit 1
    }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null ||
    { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
fi

pip_venv "$VENV" "import playwright, pytest, jwt, cryptography" "playwright==$PLAYWRIGHT_VERSION" \
  "pytest==$PYTEST_VERSION" "pyjwt==$PYJWT_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"

cargo build --locked --quiet --bin shopstream
export SHOPSTREAM_CHROMIUM="$CHROMIUM"
export SHOPSTREAM_SCREENSHOTS="${SHOPSTREAM_SCREENSHOTS:-$PWD/target/screenshots}"
rm -rf "$SHOPSTREAM_SCREENSHOTS"
"$VENV/bin/python" -m pytest tests/browser -q -p no:cacheprovider "$@"

if [ "$UPDATE" = 1 ]; then
  mkdir -p docs/screenshots
  cp "$SHOPSTREAM_SCREENSHOTS"/*.png docs/screenshots/
  echo "browser-tests.sh: screenshots copied into docs/screenshots"
fi
