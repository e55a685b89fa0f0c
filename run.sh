#!/usr/bin/env bash
# One entry point for a fresh machine: builds .venv on first use (or when setup.cfg changes), then
#   ./run.sh demo [featbank demo options]   end-to-end demo on synthesized data (no network, GPU or weights)
#   ./run.sh test [pytest options]          the test suite (runs in the repository)
#   ./run.sh bench [NAME]                   the benchmarks in benchmarks/ (on demand; slow; in the repository)
#   ./run.sh featbank ARGS...               any featbank command inside the environment
# demo and featbank run in the folder you call from, so relative paths mean what you typed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${FEATBANK_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

ensure_env() {
    local stamp="$VENV/.featbank-installed" want
    want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
    echo "run.sh: preparing $VENV (first run or setup.cfg changed; takes a few minutes)" >&2
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
    echo "$want" > "$stamp"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    demo)     ensure_env; exec "$VENV/bin/featbank" demo "$@" ;;
    test)     ensure_env; cd "$ROOT"; exec "$VENV/bin/python" -m pytest "$@" ;;
    bench)    ensure_env; cd "$ROOT"; exec "$VENV/bin/python" -m benchmarks "$@" ;;
    featbank) ensure_env; exec "$VENV/bin/featbank" "$@" ;;
    *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
