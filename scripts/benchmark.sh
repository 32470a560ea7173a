#!/usr/bin/env bash
# Every benchmark, printing numbers (never pass/fail). Bounded in time; local traffic only.
#   ./scripts/benchmark.sh                    # the library's benchmarks, then the proxy's
#   ./scripts/benchmark.sh --library-only
#   ./scripts/benchmark.sh --proxy-only [--duration 10] [--concurrency 8 1] [--with-bypass]
#                                       [--store memory redis] [--redis-url URL]
# The proxy section starts the simulated provider, the proxy (one worker) and a bare forwarder as
# separate processes on 127.0.0.1, loads each with the same client and prints req/s, p50, p99,
# CPU per request, the proxy's added latency and its throughput relative to the forwarder.
# By default the proxy runs twice side by side, on the memory store and on the Redis store (the
# local Redis, under a key prefix of its own that is deleted afterwards), and the Redis commands
# one request costs are counted; --store memory skips Redis. Then the proxy in process with
# pools of 1,000 and 10,000 keys: config load, start, a request, a /metrics scrape, a page of keys.
# Options other than --library-only/--proxy-only go to scripts/benchmark_proxy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_bootstrap.sh
library=1
proxy=1
store_given=0
args=()
for arg in "$@"; do
    case "$arg" in
        --proxy-only) library=0 ;;
        --library-only) proxy=0 ;;
        --store) store_given=1; args+=("$arg") ;;
        *) args+=("$arg") ;;
    esac
done
if [[ $store_given == 0 ]]; then
    args+=(--store memory redis)
fi
if [[ $library == 1 ]]; then
    echo "== routing decision and route() (library)"
    timeout 600 uv run python packages/core/tests/benchmarks/bench_routing.py
    echo "== upstream HTTP client"
    timeout 600 uv run python packages/core/tests/benchmarks/bench_http_client.py --seconds 3
fi
if [[ $proxy == 1 ]]; then
    echo "== proxy vs bare forwarder vs simulator"
    timeout 600 uv run python scripts/benchmark_proxy.py "${args[@]+"${args[@]}"}"
    echo "== large key pools (proxy in process)"
    timeout 600 uv run python scripts/benchmark_large_pool.py
fi
