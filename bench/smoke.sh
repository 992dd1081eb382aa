#!/usr/bin/env bash
# CI smoke for the benchmark harness: builds, runs 100 clients against our
# gateway for a 5 s window (no Node), and fails unless every client got
# ready and at least 99 % of the quotes arrived. Results go to a temporary
# file; nothing under bench/ changes. Takes about 30 s after the build.
#   bench/smoke.sh [--no-build] [--with-node]
set -euo pipefail
args=(--quick --ours-only --require-delivery 0.99)
for a in "$@"; do
  case "$a" in
    --no-build) args+=(--no-build) ;;
    --with-node) args=("${args[@]/--ours-only/}") ;;
    *) echo "smoke.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
out=$(mktemp /tmp/mt5-bench-smoke.XXXXXX.jsonl)
trap 'rm -f "$out"' EXIT
exec_args=()
for a in "${args[@]}"; do [ -n "$a" ] && exec_args+=("$a"); done
bash "$(dirname "$0")/run.sh" "${exec_args[@]}" --results "$out" --report /dev/null
