#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (make fuzz).
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the end of a -fuzztime window even though nothing crashed: it
# compares the parent context's error with its child's before the
# cancellation has propagated (go.dev/issue/75804, fixed in Go 1.27). A real
# finding always writes its input ("Failing input written to ...") first, so
# a failure that wrote none and says only that is run again, at most twice.
# Every other failure fails at once.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}

for spec in $(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do
	dir=$(dirname "$spec")
	for f in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$spec" | sed 's/^func //'); do
		for attempt in 1 2 3; do
			echo "fuzz $dir $f"
			out=$(mktemp)
			"$GO" test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" "$dir" 2>&1 | tee "$out"
			rc=${PIPESTATUS[0]}
			if [ "$rc" -eq 0 ]; then
				rm -f "$out"
				break
			fi
			if grep -q 'context deadline exceeded' "$out" &&
				! grep -q 'Failing input written to' "$out" &&
				! grep -qE '^\s+[a-z_]+_test\.go:[0-9]+:' "$out" &&
				[ "$attempt" -lt 3 ]; then
				echo "fuzz $dir $f: Go coordinator deadline race (go.dev/issue/75804), no input written; running again"
				rm -f "$out"
				continue
			fi
			rm -f "$out"
			echo "fuzz $dir $f: FAILED" >&2
			exit 1
		done
	done
done
