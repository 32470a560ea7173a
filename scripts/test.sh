#!/usr/bin/env bash
# The whole check: lint, format, types, then every test. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_bootstrap.sh
echo "== ruff check" && uv run ruff check .
echo "== ruff format --check" && uv run ruff format --check .
echo "== mypy" && uv run mypy
echo "== pytest" && uv run pytest "$@"
