# Sourced by the scripts: make sure uv exists and the workspace environment is in sync.
# A fresh machine needs only Python 3.11+; uv comes from PyPI if it is not installed.
set -euo pipefail
if ! command -v uv >/dev/null 2>&1; then
    echo "uv not found: installing it from PyPI (python3 -m pip install --user uv)" >&2
    python3 -m pip install --quiet --user "uv>=0.5" || python3 -m pip install --quiet "uv>=0.5"
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --all-packages --quiet
