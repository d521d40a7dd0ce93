#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (make fuzz).
#
# Go before 1.27 can fail a target with a bare "context deadline exceeded"
# at the very end of a duration -fuzztime when its workers were starved of
# CPU (the coordinator's shutdown race, Go issue 75804): no input failed and
# none was written. It struck one target in twelve in some clean-clone CI
# runs here, even on an idle machine. Such a run is repeated, up to twice;
# any other failure, or the same one three times, fails.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $($GO list ./...); do
  for f in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $f"
    for try in 1 2 3; do
      if $GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
        cat "$log"
        continue 2
      fi
      cat "$log"
      if [ "$try" = 3 ] || ! grep -q 'context deadline exceeded' "$log" ||
        grep -qE 'Failing input written|panic:' "$log"; then
        exit 1
      fi
      echo "== $pkg $f: a bare deadline at the end of -fuzztime, no failing input; once more"
    done
  done
done
