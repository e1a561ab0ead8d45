package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	core "github.com/hotswap-dev/hotswap/internal/proc"
)

// findNginx returns the nginx binary, or "" when it is not installed.
func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// nginx is one nginx instance in a directory of its own.
type nginx struct {
	bin, dir, port string
	daemon         bool
	upstream       string // proxy_pass to this address instead of answering
	fg             *proc  // the master when not a daemon
}

func newNginx(b *bins, daemon bool) (*nginx, error) {
	dir, err := os.MkdirTemp(b.dir, "nginx-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	// nginx binds a fixed port from its configuration: take one the kernel
	// just handed out.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return &nginx{bin: b.nginx, dir: dir, port: port, daemon: daemon}, nil
}

func (x *nginx) addr() string { return "127.0.0.1:" + x.port }

func (x *nginx) conf() string { return filepath.Join(x.dir, "nginx.conf") }

func (x *nginx) pidFile() string { return filepath.Join(x.dir, "nginx.pid") }

func (x *nginx) write(v string) error {
	daemon := "off"
	if x.daemon {
		daemon = "on"
	}
	loc := fmt.Sprintf(`add_header X-Version %s always; return 200 "version=%s\n";`, v, v)
	up := ""
	if x.upstream != "" {
		up = fmt.Sprintf("upstream app { server %s; keepalive 64; }\n", x.upstream)
		loc = `proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";`
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user nobody nogroup;\n"
	}
	conf := fmt.Sprintf(`%sdaemon %s;
worker_processes 2;
pid %s;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[4]s/body; proxy_temp_path %[4]s/proxy; fastcgi_temp_path %[4]s/fastcgi;
  uwsgi_temp_path %[4]s/uwsgi; scgi_temp_path %[4]s/scgi;
  %[5]s
  server {
    listen 127.0.0.1:%[6]s backlog=4096;
    location / { %[7]s }
  }
}
`, user, daemon, x.pidFile(), x.dir, up, x.port, loc)
	return os.WriteFile(x.conf(), []byte(conf), 0o644)
}

func (x *nginx) args(extra ...string) []string {
	return append([]string{"-p", x.dir, "-c", x.conf(), "-e", filepath.Join(x.dir, "error.log")}, extra...)
}

// start runs nginx with version v.
func (x *nginx) start(v string) error {
	if err := x.write(v); err != nil {
		return err
	}
	if x.daemon {
		if out, err := exec.Command(x.bin, x.args()...).CombinedOutput(); err != nil {
			return fmt.Errorf("nginx: %w: %s", err, out)
		}
		return nil
	}
	p, err := startProc(exec.Command(x.bin, x.args()...))
	if err != nil {
		return err
	}
	x.fg = p
	return nil
}

func (x *nginx) masterPID() int {
	b, err := os.ReadFile(x.pidFile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// stop sends QUIT to the master (by pid), then KILL after d.
func (x *nginx) stop(d time.Duration) {
	if x.fg != nil {
		x.fg.stop(syscall.SIGQUIT, d)
		return
	}
	for _, f := range []string{x.pidFile() + ".oldbin", x.pidFile()} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			stopPID(pid, syscall.SIGQUIT, d)
		}
	}
}

// stopPID signals pid and waits up to d for it to go, then SIGKILLs it.
func stopPID(pid int, sig syscall.Signal, d time.Duration) {
	syscall.Kill(pid, sig)
	deadline := time.Now().Add(d)
	for core.Alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasChildren reports whether pid has started children (nginx's workers).
func hasChildren(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	return err == nil && len(strings.TrimSpace(string(b))) > 0
}

// nginxUpgrade is nginx's binary upgrade: USR2 to the master starts a new
// master on the inherited sockets, then QUIT stops the old one gracefully.
type nginxUpgrade struct {
	b *bins
	x *nginx
}

func (t *nginxUpgrade) start() (string, error) {
	x, err := newNginx(t.b, true)
	if err != nil {
		return "", err
	}
	t.x = x
	return x.addr(), x.start("v1")
}

func (t *nginxUpgrade) restart(n int) (time.Time, error) {
	old := t.x.masterPID()
	if err := t.x.write(version(n)); err != nil {
		return time.Now(), err
	}
	t0 := time.Now()
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		return t0, fmt.Errorf("USR2 to nginx %d: %w", old, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid := t.x.masterPID(); pid != 0 && pid != old && hasChildren(pid) {
			break
		}
		if time.Now().After(deadline) {
			return t0, fmt.Errorf("nginx: no new master with workers 10s after USR2 to %d", old)
		}
		time.Sleep(time.Millisecond)
	}
	stopPID(old, syscall.SIGQUIT, 15*time.Second)
	return t0, nil
}

func (t *nginxUpgrade) close() {
	if t.x != nil {
		t.x.stop(15 * time.Second)
	}
}

// nginxReload is `nginx -s reload`: the master rereads its configuration,
// starts new workers and stops the old ones gracefully.
type nginxReload struct {
	b *bins
	x *nginx
}

func (t *nginxReload) start() (string, error) {
	x, err := newNginx(t.b, false)
	if err != nil {
		return "", err
	}
	t.x = x
	return x.addr(), x.start("v1")
}

func (t *nginxReload) restart(n int) (time.Time, error) {
	if err := t.x.write(version(n)); err != nil {
		return time.Now(), err
	}
	t0 := time.Now()
	if out, err := exec.Command(t.x.bin, t.x.args("-s", "reload")...).CombinedOutput(); err != nil {
		return t0, fmt.Errorf("nginx -s reload: %w: %s", err, out)
	}
	return t0, nil
}

func (t *nginxReload) close() {
	if t.x != nil {
		t.x.stop(15 * time.Second)
	}
}
