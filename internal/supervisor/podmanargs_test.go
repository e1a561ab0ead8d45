package supervisor

import (
	"strings"
	"testing"
)

func TestParsePodmanRun(t *testing.T) {
	for _, tc := range []struct {
		argv       string
		ok         bool
		run, image int
		flags      map[string]string
	}{
		{"podman run img:v1", true, 1, 2, map[string]string{}},
		{"/usr/bin/podman --runtime /usr/sbin/runc run --rm --network host -it --name app-{gen} img:v1 --flag x", true, 3, 10,
			map[string]string{"rm": "true", "network": "host", "interactive": "true", "tty": "true", "name": "app-{gen}"}},
		{"podman --log-level=debug container run -p8080:80 -e A=1 --sig-proxy=false img", true, 3, 8,
			map[string]string{"publish": "8080:80", "env": "A=1", "sig-proxy": "false"}},
		{"podman run --preserve-fds 2 -- img", true, 1, 5, map[string]string{"preserve-fds": "2"}},
		{"podman ps", false, 0, 0, nil},
		{"podman images run", false, 0, 0, nil},
		{"/bin/goapp run x", false, 0, 0, nil},
	} {
		p, ok, err := parsePodmanRun(strings.Fields(tc.argv))
		if err != nil || ok != tc.ok {
			t.Errorf("%s: ok %v, err %v; want ok %v", tc.argv, ok, err, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if p.run != tc.run || p.image != tc.image {
			t.Errorf("%s: run at %d, image at %d; want %d, %d", tc.argv, p.run, p.image, tc.run, tc.image)
		}
		for k, v := range tc.flags {
			if p.flags[k] != v {
				t.Errorf("%s: --%s = %q, want %q", tc.argv, k, p.flags[k], v)
			}
		}
	}
}

func TestPodmanRunRefused(t *testing.T) {
	for _, tc := range []struct {
		argv   string
		notify bool
		want   string // in the error; "" for none
	}{
		{"podman run --rm img", true, ""},
		{"podman run -d img", false, "--detach"},
		{"podman run -dit img", false, "--detach"},
		{"podman run --detach=false img", false, ""},
		{"podman run --sig-proxy=false img", false, "--sig-proxy=false"},
		{"podman run --preserve-fds 1 img", false, ""},
		{"podman run --preserve-fds 3 img", false, "hotswap passes 1 listener"},
		{"podman run --cidfile /x img", false, "hotswap's"},
		{"podman run --sdnotify=conmon img", true, "--sdnotify=container"},
		{"podman run --sdnotify=conmon img", false, ""},
		{"podman run --rm", false, "no image"},
		{"podman run --name", false, "needs a value"},
	} {
		p, ok, err := parsePodmanRun(strings.Fields(tc.argv))
		if !ok {
			t.Fatalf("%s: not recognised", tc.argv)
		}
		if err == nil {
			err = p.check(1, tc.notify)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", tc.argv, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error with %q", tc.argv, err, tc.want)
		}
	}
}
