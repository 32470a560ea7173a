#!/usr/bin/env bash
# The demo: the simulated provider and the proxy (in-memory state) with a few keys (one that
# hits its rate limit, one invalid, one flaky), driven by the openai SDK: who served what, and why.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_bootstrap.sh
exec uv run python -m apikeyrouter_proxy.demo "$@"
