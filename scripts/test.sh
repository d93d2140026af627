#!/usr/bin/env bash
# The test command from README.md: creates .venv if needed, installs the project with its test
# extras, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
fi
exec .venv/bin/python -m pytest -q -rs "$@"
