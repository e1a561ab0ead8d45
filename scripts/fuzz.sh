#!/bin/sh
# fuzz.sh [DURATION]: run every fuzz target in the module for DURATION
# each (default 3s), so that make vet catches a target that no longer
# builds or an input that now panics. A failing input is written to the
# package's testdata/fuzz, where go test replays it from then on.
set -eu
cd "$(dirname "$0")/.."
t=${1:-3s}
GO=${GO:-go}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
	dir=./$(dirname "${f#./}")
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		echo "fuzz $dir $name for $t"
		$GO test -run '^$' -fuzz "^$name\$" -fuzztime "$t" "$dir"
	done
done
