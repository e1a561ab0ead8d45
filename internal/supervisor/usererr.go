package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// listenError is the user's one line for a listener that could not be
// opened: what (listen and the address as given), and why in the user's
// terms, without the layers it went through (a reuse group, a probe port).
func listenError(spec ListenSpec, err error) error {
	return fmt.Errorf("listen %s: %s", spec, listenReason(spec, err))
}

func listenReason(spec ListenSpec, err error) string {
	var dns *net.DNSError
	var errno syscall.Errno
	host, port, _ := net.SplitHostPort(spec.Address)
	switch {
	case errors.As(err, &dns):
		why := dns.Err
		if dns.IsNotFound {
			why = "no such host"
		}
		return fmt.Sprintf("cannot resolve host %q: %s", dns.Name, why)
	case errors.Is(err, reuse.ErrInUse), errors.Is(err, syscall.EADDRINUSE):
		if spec.Network == "unix" {
			return "address already in use"
		}
		if who := listenerOwner(spec.Network, port); who != "" {
			return "address already in use, by " + who
		}
		return "address already in use"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Sprintf("%s is not an address of this machine", host)
	case errors.Is(err, syscall.EACCES):
		if n, _ := strconv.Atoi(port); spec.Network != "unix" && n > 0 && n < 1024 {
			return fmt.Sprintf("permission denied: port %d needs root or CAP_NET_BIND_SERVICE", n)
		}
		return "permission denied"
	case errors.As(err, &errno):
		return errno.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// listenerOwner names the process that has a listening TCP socket (or a
// bound UDP one) on port: "pid 123 (python3)", or "" when it cannot be
// seen (another user's process, without root).
func listenerOwner(network, port string) string {
	n, err := strconv.Atoi(port)
	if err != nil || n == 0 {
		return ""
	}
	files := []string{"/proc/net/tcp", "/proc/net/tcp6"}
	state := "0A" // TCP_LISTEN
	if strings.HasPrefix(network, "udp") {
		files, state = []string{"/proc/net/udp", "/proc/net/udp6"}, "07" // TCP_CLOSE, as a bound UDP socket shows
	}
	inodes := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != state {
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == n && fs[9] != "0" {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && inodes[l] {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			return fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm)))
		}
	}
	return ""
}
