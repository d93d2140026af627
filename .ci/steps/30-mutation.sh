#!/usr/bin/env bash
# CI step: mutation testing of the modules where a silent bug costs money or leaks
# (scripts/mutation.py). Fails when a module has more undetected mutants (survived + timeout +
# no test) than its budget in .ci/mutation-budget.json.
#
# Incremental: .ci/mutation-results.json (committed) holds each module's last result, keyed by
# a hash of the module's source, of the unit-test files that ran it, of the test helpers and of
# the mutmut version. A module whose key still matches is not re-run; a changed one is run here
# on the unit tests (about 2-15 minutes per module on 2 cores; see README "Mutation testing").
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
python scripts/mutation.py --check -j "${ZAI_MUTATION_JOBS:-$(nproc)}"
echo "[30-mutation] done in $(($(date +%s) - started)) s"
