package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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

// TestArchitectureListsEveryPackage keeps docs/architecture.md's package
// list true to the tree: every product package (cmd/hotswap, fdpass and
// internal/ but for the test tools) is listed, and nothing else is.
func TestArchitectureListsEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)Packages \\(.*?```\n(.*?)```").FindSubmatch(doc)
	if block == nil {
		t.Fatal("docs/architecture.md has no package list")
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(\S+)`).FindAllSubmatch(block[1], -1) {
		listed[string(m[1])] = true
	}
	tools := map[string]bool{"internal/proc": true, "internal/proctest": true, "internal/load": true}
	tree := map[string]bool{"cmd/hotswap": true, "fdpass": true}
	dirs, _ := filepath.Glob("../../internal/*")
	for _, d := range dirs {
		if p := strings.TrimPrefix(d, "../../"); !tools[p] {
			tree[p] = true
		}
	}
	for p := range tree {
		if !listed[p] {
			t.Errorf("package %s is missing from docs/architecture.md's list", p)
		}
	}
	for p := range listed {
		if !tree[p] {
			t.Errorf("docs/architecture.md lists %s, which is not a product package", p)
		}
	}
}
