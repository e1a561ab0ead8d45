package main

import (
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// TestDocsCoverEveryFlag keeps docs/hotswap.md true to --help: every flag
// of hotswap and of its subcommands, and every subcommand, is documented.
func TestDocsCoverEveryFlag(t *testing.T) {
	doc, err := os.ReadFile("../../docs/hotswap.md")
	if err != nil {
		t.Fatal(err)
	}
	hotswap := proctest.Build(t, hotswapPkg)
	flag := regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z][a-z-]*)`)
	helps := [][]string{{"--help"}}
	for _, sub := range []string{"reload", "status", "stop", "signal", "weight", "promote", "rollback"} {
		helps = append(helps, []string{sub, "--help"})
		if !regexp.MustCompile("`hotswap " + sub).Match(doc) {
			t.Errorf("docs/hotswap.md does not document `hotswap %s`", sub)
		}
	}
	seen := 0
	for _, args := range helps {
		out, err := exec.Command(hotswap, args...).Output()
		if err != nil {
			t.Fatalf("hotswap %v: %v", args, err)
		}
		for _, m := range flag.FindAllSubmatch(out, -1) {
			seen++
			if !regexp.MustCompile("`" + regexp.QuoteMeta(string(m[1])) + "[ `=]").Match(doc) {
				t.Errorf("hotswap %v shows %s, which docs/hotswap.md does not document", args[:len(args)-1], m[1])
			}
		}
	}
	if seen < 20 {
		t.Errorf("found only %d flags in the help texts: the pattern no longer matches them", seen)
	}
}
