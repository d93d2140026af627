#!/usr/bin/env bash
# CI step: mutation testing of the modules where a silent bug costs money or leaks
# (scripts/mutation.py). Fails when a module has more undetected mutants (survived + timeout +
# no test) than its budget in .ci/mutation-budget.json.
#
# Incremental: .ci/mutation-results.json (committed) holds each module's last result, keyed by
# a hash of the module's source, of the unit-test files that ran it, of the test helpers and of
# the mutmut version. A module whose key still matches is not re-run. Changed ones are run here
# on the unit tests when their last run took at most ZAI_MUTATION_MAX_MINUTES (default 10) on
# this machine's cores; more than that fails the step at once, naming the command that refreshes
# the cache (`python scripts/mutation.py --update MODULE...`), so .ci/run stays under 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
python scripts/mutation.py --check -j "${ZAI_MUTATION_JOBS:-$(nproc)}" \
  --max-minutes "${ZAI_MUTATION_MAX_MINUTES:-10}"
echo "[30-mutation] done in $(($(date +%s) - started)) s"
