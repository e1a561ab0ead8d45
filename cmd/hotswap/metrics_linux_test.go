package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// promtoolCheck runs `promtool check metrics` on a scrape and fails the
// test with promtool's findings.
func promtoolCheck(t *testing.T, promtool, when, body string) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics %s: %v\n%s", when, err, out)
	}
}

// TestMetricsPromtool scrapes /metrics after a reload, a rollback and a
// crash restart; each scrape must pass `promtool check metrics` (the
// Prometheus project's linter: _total on counters, base units, help) and
// carry the generation info and build info.
func TestMetricsPromtool(t *testing.T) {
	promtool := proctest.Command(t, "promtool", "prometheus")
	a := startApp(t, []string{"--ready", "200ms", "--metrics", "127.0.0.1:0"})
	// The status lists the supervisor's listeners, not --metrics: its
	// port 0 is resolved only in the log.
	metrics := a.hs.WaitEvent(10*time.Second, "metrics listening", nil).Str("address")
	b, err := os.ReadFile(proctest.Build(t, goappPkg))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	goappVersion := "sha256:" + hex.EncodeToString(sum[:6])
	info := func(gen int, state string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^hotswap_generation_info\{executable="[^"]*/goapp[^"/]*",generation="` + itoa(gen) +
			`",pid="\d+",state="` + state + `",version="` + regexp.QuoteMeta(goappVersion) + `"\} 1$`)
	}
	check := func(when string, want ...*regexp.Regexp) string {
		t.Helper()
		body := scrape(t, metrics)
		promtoolCheck(t, promtool, when, body)
		want = append(want,
			regexp.MustCompile(`(?m)^hotswap_build_info\{goversion="go[^"]+",version="dev"\} 1$`),
			regexp.MustCompile(`(?m)^hotswap_up 1$`))
		for _, re := range want {
			if !re.MatchString(body) {
				t.Errorf("metrics %s lack a line matching %s:\n%s", when, re, body)
			}
		}
		return body
	}
	check("at start", info(1, "ready"))

	if r := a.reload(2, "v2", ""); !r.OK {
		t.Fatalf("reload: %v", r)
	}
	a.waitGone(1, 10*time.Second)
	check("after a reload", info(2, "ready"),
		regexp.MustCompile(`(?m)^hotswap_reloads_total\{outcome="ok"\} 1$`))

	if r := a.reload(3, "v3", "--exit-at-start 1"); r.OK {
		t.Fatalf("reload to a version that exits: %v", r)
	}
	body := check("after a rollback", info(2, "ready"),
		regexp.MustCompile(`(?m)^hotswap_reloads_total\{outcome="failed"\} 1$`),
		regexp.MustCompile(`(?m)^hotswap_reload_duration_seconds_count\{outcome="failed"\} 1$`))
	if strings.Contains(body, `generation="3"`) {
		t.Errorf("metrics after the rollback still list generation 3:\n%s", body)
	}

	if r := a.reload(4, "v4", "--crash-after 300ms"); !r.OK {
		t.Fatalf("reload to a crashing version: %v", r)
	}
	a.write("v5", "") // what the restart runs
	a.waitServing(5, 20*time.Second)
	check("after a crash restart", info(5, "ready"),
		regexp.MustCompile(`(?m)^hotswap_child_restarts_total 1$`),
		regexp.MustCompile(`(?m)^hotswap_generation_start_time_seconds\{generation="5"\} \d`))
}
