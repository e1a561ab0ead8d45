#!/bin/sh
# vet.sh: the hygiene make vet enforces: gofmt, go vet here and for darwin (the
# packages build behind _linux.go splits), go.mod tidy, staticcheck with
# its default checks (installed at STATICCHECK_VERSION when missing), and
# a short run of every fuzz target (FUZZTIME each).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
STATICCHECK_VERSION=${STATICCHECK_VERSION:-v0.8.2}
FUZZTIME=${FUZZTIME:-3s}

echo "gofmt -l ."
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed: $unformatted" >&2
	exit 1
fi
echo "go vet ./..."
$GO vet ./...
echo "GOOS=darwin go vet ./..."
GOOS=darwin $GO vet ./...
echo "go mod tidy -diff"
$GO mod tidy -diff
sc=$(command -v staticcheck || true)
if [ -z "$sc" ]; then
	sc="$($GO env GOPATH)/bin/staticcheck"
	if [ ! -x "$sc" ]; then
		echo "installing staticcheck $STATICCHECK_VERSION"
		$GO install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
	fi
fi
echo "staticcheck ./..."
"$sc" ./...
GO=$GO ./scripts/fuzz.sh "$FUZZTIME"
