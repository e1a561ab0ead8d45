package proctest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// The variables that make a re-executed test binary run a helper main
// instead of its tests. hotswap drops HOTSWAP_* from a generation's
// environment, so a helper that hotswap starts as a generation is named in
// ChildHelperEnv.
const (
	HelperEnv      = "HOTSWAP_TEST_HELPER"
	ChildHelperEnv = "TEST_CHILD_HELPER"
)

// Helpers are the mains a package's tests run in child processes, by
// name; each returns its exit status.
type Helpers map[string]func() int

var (
	helpersMu   sync.Mutex
	helpersUsed = map[string]bool{}
)

// HelperMain is the TestMain of a package with helpers. In a test binary
// re-executed with [HelperEnv] or [ChildHelperEnv] set it runs that helper
// and exits with its status. Otherwise it runs the tests, then cleanup and
// [Cleanup]; after a full run (no -run, not -short) a helper that no test
// used fails the run, so none rots unseen.
func HelperMain(m *testing.M, helpers Helpers, cleanup ...func()) {
	for _, env := range []string{HelperEnv, ChildHelperEnv} {
		name := os.Getenv(env)
		if name == "" {
			continue
		}
		main, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(main())
	}
	code := m.Run()
	for _, c := range cleanup {
		c()
	}
	Cleanup()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		helpersMu.Lock()
		for name := range helpers {
			if !helpersUsed[name] {
				fmt.Fprintf(os.Stderr, "helper %q is never used\n", name)
				code = 1
			}
		}
		helpersMu.Unlock()
	}
	os.Exit(code)
}

// UseHelper records that a test runs helper name and returns the
// environment entry that selects it.
func UseHelper(name string) string { return use(HelperEnv, name) }

// UseChildHelper is [UseHelper] for a helper that hotswap starts as a
// generation.
func UseChildHelper(name string) string { return use(ChildHelperEnv, name) }

func use(env, name string) string {
	helpersMu.Lock()
	helpersUsed[name] = true
	helpersMu.Unlock()
	return env + "=" + name
}

// HelperCmd returns a command that runs this test binary as helper name
// with args, in this process's environment plus env.
func HelperCmd(t testing.TB, name string, args []string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), UseHelper(name)), env...)
	return cmd
}
