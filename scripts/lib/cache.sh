# Sourced by the test scripts. The tools the tests need are installed once
# into a cache outside the clone, keyed by version.
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/shopstream"

# pip_venv VENV CHECK SPEC...: unless the Python statement CHECK runs in the
# virtualenv VENV, (re)creates VENV and installs the pip SPECs into it.
pip_venv() {
  local venv=$1 check=$2
  shift 2
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "$(basename "$0"): installing $* into $venv"
    rm -rf "$venv"
    mkdir -p "$CACHE"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
}
