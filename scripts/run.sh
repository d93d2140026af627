#!/usr/bin/env bash
# The run command from README.md: creates .venv with the project on first use, then starts the
# proxy. Without ZAI_API_KEY it serves against its built-in simulated upstream (offline).
# Arguments go to `zai-proxy serve` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/zai-proxy ] || [ pyproject.toml -nt .venv/.run-installed ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
  touch .venv/.run-installed
fi
exec .venv/bin/zai-proxy serve "$@"
