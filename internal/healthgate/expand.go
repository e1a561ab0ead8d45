package healthgate

import (
	"fmt"
	"strconv"
	"strings"
)

// Vars are the per-generation values substituted for the placeholders
// {gen}, {worker}, {pid} and {port}. Gen and Worker are always
// substituted; PID and Port only
// when positive, so that a placeholder whose value is not known yet stays
// visible and [Wait] reports it instead of probing port 0.
type Vars struct {
	Gen    int // generation number
	Worker int // the process's place in a worker pool, from 0
	PID    int // the generation's pid
	Port   int // a free loopback port chosen for the generation, see FreePort
}

// sampleVars fills every placeholder, to validate a spec at parse time.
func sampleVars() Vars { return Vars{Gen: 1, PID: 1, Port: 1} }

// placeholders returns everything in s that looks like a placeholder,
// {[a-z_]+}, so that a typo such as {prot} is an error rather than a
// literal.
func placeholders(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			return out
		}
		s = s[i:]
		j := 1
		for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] == '_') {
			j++
		}
		if j > 1 && j < len(s) && s[j] == '}' {
			out = append(out, s[:j+1])
			s = s[j+1:]
			continue
		}
		s = s[1:]
	}
}

func knownPlaceholder(p string) bool {
	return p == "{gen}" || p == "{worker}" || p == "{pid}" || p == "{port}"
}

func checkPlaceholders(s string) error {
	for _, p := range placeholders(s) {
		if !knownPlaceholder(p) {
			return fmt.Errorf("unknown placeholder %s (want {gen}, {worker}, {pid} or {port})", p)
		}
	}
	return nil
}

// unexpanded returns the first placeholder left in s, or "".
func unexpanded(s string) string {
	for _, p := range placeholders(s) {
		if knownPlaceholder(p) {
			return p
		}
	}
	return ""
}

func expand(s string, v Vars) string {
	if !strings.Contains(s, "{") {
		return s
	}
	pairs := []string{"{gen}", strconv.Itoa(v.Gen), "{worker}", strconv.Itoa(v.Worker)}
	if v.PID > 0 {
		pairs = append(pairs, "{pid}", strconv.Itoa(v.PID))
	}
	if v.Port > 0 {
		pairs = append(pairs, "{port}", strconv.Itoa(v.Port))
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// Expand returns a copy of c with {gen}, {pid} and {port} substituted in
// its address or exec arguments.
func (c Check) Expand(v Vars) Check {
	c.target = expand(c.target, v)
	c.args = ExpandArgs(c.args, v)
	return c
}

// ExpandArgs returns a copy of args with {gen}, {pid} and {port}
// substituted in every argument, for the child's own command line.
func ExpandArgs(args []string, v Vars) []string {
	if args == nil {
		return nil
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(a, v)
	}
	return out
}

// unexpandedIn reports the first placeholder still in c, or "".
func (c Check) unexpandedIn() string {
	if p := unexpanded(c.target); p != "" {
		return p
	}
	return unexpanded(strings.Join(c.args, " "))
}
