#!/usr/bin/env bash
# The test command from README.md. On a fresh Debian machine it installs what the tests need
# (Debian packages from .ci/apt-packages.txt when run as root, a .venv with the project and its
# test extras) and runs the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mapfile -t pkgs < <(grep -v '^\s*#' .ci/apt-packages.txt | grep -v '^\s*$')
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import zai_proxy, pytest, openai' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ requirements.lock -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The runtime dependencies exactly as the image gets them (hashes checked), then the
  # project and its test extras around them (pip keeps what is already satisfied).
  .venv/bin/python -m pip install -q --require-hashes -r requirements.lock
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.installed
fi
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
