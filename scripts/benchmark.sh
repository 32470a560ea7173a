#!/usr/bin/env bash
# Every benchmark, printing numbers (never pass/fail). Bounded in time; local traffic only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_bootstrap.sh
echo "== routing decision and route() (library)"
uv run python packages/core/tests/benchmarks/bench_routing.py "$@"
echo "== upstream HTTP client"
uv run python packages/core/tests/benchmarks/bench_http_client.py --seconds 3
