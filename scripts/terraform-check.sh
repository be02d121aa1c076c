#!/usr/bin/env bash
# Checks deploy/terraform without Terraform or an AWS account (no Terraform
# binary or provider registry is reachable here, so `terraform validate`
# cannot run): checkov over the folder, 0 failed checks (each skip carries
# its reason next to it), then deploy/terraform/test_terraform.py, which
# parses the HCL with python-hcl2 and checks it against the code (the tables,
# stream and bucket `shopstream init --plan` names, the IAM actions of the
# SDK calls, the settings the binary accepts). Both tools are installed once
# into the cache, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cache.sh
CHECKOV_VERSION=3.3.30
HCL2_VERSION=8.1.4
CHECKOV="$CACHE/checkov-$CHECKOV_VERSION"
HCL2="$CACHE/python-hcl2-$HCL2_VERSION"
pip_venv "$CHECKOV" "import checkov" "checkov==$CHECKOV_VERSION"
pip_venv "$HCL2" "import hcl2" "python-hcl2==$HCL2_VERSION"
echo "== checkov over deploy/terraform"
# --skip-download: no call to the vendor's platform (not reachable here).
"$CHECKOV/bin/checkov" --directory deploy/terraform --framework terraform --quiet --compact \
  --skip-download --download-external-modules false
echo "== deploy/terraform/test_terraform.py"
cargo build --quiet --locked --bin shopstream
SHOPSTREAM_BIN="$PWD/target/debug/shopstream" "$HCL2/bin/python" deploy/terraform/test_terraform.py
