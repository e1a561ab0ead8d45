#!/usr/bin/env bash
# Installs what the tests and benchmarks drive for real: nginx, busybox,
# python3, gunicorn (a server that speaks systemd socket activation),
# libnss-extrausers (a user only NSS knows, for --user),
# iproute2 (ip), util-linux (unshare, prlimit), prometheus (promtool, which
# checks the metrics), vim (an editor's save for --watch), certbot and pebble
# (the ACME test server: a real certificate renewal), and the servers of
# docs/servers.md (HAProxy, Puma, uWSGI with its Python 3 plugin, uvicorn,
# Node.js), and podman with the runc runtime (the container tests and
# benchmarks), from Debian packages.
# As root it installs what is missing; otherwise it says what is missing
# (under CI=true the tests that need it then fail, they never skip).
set -euo pipefail

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v gunicorn >/dev/null 2>&1 || need+=(gunicorn)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v vim >/dev/null 2>&1 || need+=(vim)
command -v certbot >/dev/null 2>&1 || need+=(certbot)
command -v pebble >/dev/null 2>&1 || need+=(pebble)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux) # hotswap out of descriptors (security tests)
# A user only NSS knows (--user through getent; TestHardeningUserFromNSS).
[ -e /usr/lib/x86_64-linux-gnu/libnss_extrausers.so.2 ] || [ -e /usr/lib/libnss_extrausers.so.2 ] || need+=(libnss-extrausers)
# docs/servers.md recipes (examples/recipes).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v puma >/dev/null 2>&1 || need+=(puma)
command -v uwsgi >/dev/null 2>&1 || need+=(uwsgi)
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || need+=(uwsgi-plugin-python3)
[ -d /usr/lib/python3/dist-packages/uvicorn ] || need+=(python3-uvicorn)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v podman >/dev/null 2>&1 || need+=(podman)
[ -x /usr/sbin/runc ] || need+=(runc)
for pkg in ${HOTSWAP_EXTRA_PACKAGES:-}; do
	dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]}; install them as root (apt-get install -y ${need[*]})" >&2
	exit 0
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package scripts must not start a service (nginx, haproxy, uwsgi) on
# this machine.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq "${need[@]}" >/dev/null
