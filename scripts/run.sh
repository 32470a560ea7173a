#!/usr/bin/env bash
# The demo: a simulated provider with a few keys (one that hits its rate limit, one invalid)
# and the library routing a stream of requests across them, printing who served what and why.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_bootstrap.sh
exec uv run python -m apikeyrouter.demo "$@"
