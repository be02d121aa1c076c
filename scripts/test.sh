#!/usr/bin/env bash
# The test command: the whole workspace's tests, with the emulators and the
# Kafka broker they need installed (once, cached) and started on loopback by
# scripts/with-emulators.sh; then schemathesis over the served OpenAPI
# document (scripts/schemathesis.sh: every check, 0 failures, or red); then
# the browser tests of the storefront and the dashboard
# (scripts/browser-tests.sh installs Chromium and Playwright); then the
# checks of the AWS deployment's Terraform (scripts/terraform-check.sh:
# checkov with 0 failed checks, and the HCL against the code).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/with-emulators.sh cargo test --workspace --locked "$@"
scripts/schemathesis.sh
scripts/browser-tests.sh
scripts/terraform-check.sh
