#!/bin/sh
# run.sh PROBE_PORT: run nginx as one hotswap generation.
#
# It renders nginx.conf (or $NGINX_TEMPLATE) with the address hotswap hands
# over as fd 3, the generation's probe port and the run directory, then
# execs nginx in the foreground, so that nginx's master keeps this pid and
# is the generation hotswap watches. nginx takes the socket from
# NGINX="3;", which hotswap sets.
#
#   hotswap -l tcp://127.0.0.1:8080 --stop-signal QUIT \
#     --ready 'http://127.0.0.1:{port}/ready' -- examples/nginx/run.sh {port}
#
# Environment:
#   NGINX_TEMPLATE  configuration template (default: nginx.conf beside this script)
#   NGINX_PREFIX    run directory for pid files, temp paths and rendered
#                   configurations (default: ./nginx-run)
#   NGINX_BIN       the nginx binary (default: /usr/sbin/nginx, else nginx on PATH)
#   NGINX_LISTEN    the public address, when fd 3 is not an IPv4 TCP socket
set -eu

here=$(cd "$(dirname "$0")" && pwd)
probe_port=${1:?usage: run.sh PROBE_PORT}
template=${NGINX_TEMPLATE:-$here/nginx.conf}
prefix=${NGINX_PREFIX:-$PWD/nginx-run}
gen=${HOTSWAP_GENERATION:?run.sh runs under hotswap, which sets HOTSWAP_GENERATION}
nginx=${NGINX_BIN:-}
if [ -z "$nginx" ]; then
	if [ -x /usr/sbin/nginx ]; then nginx=/usr/sbin/nginx; else nginx=nginx; fi
fi

# inherited_addr FD prints the local IPv4 address of the listening socket
# at FD as HOST:PORT, from /proc/net/tcp (little-endian hex).
inherited_addr() {
	link=$(readlink "/proc/$$/fd/$1") || return 1
	inode=${link#socket:[}
	inode=${inode%]}
	while read -r _ local _ st _ _ _ _ _ ino _; do
		[ "$ino" = "$inode" ] && [ "$st" = 0A ] || continue
		ip=${local%:*}
		port=${local#*:}
		printf '%d.%d.%d.%d:%d\n' "0x${ip#??????}" "0x$(echo "$ip" | cut -c5-6)" \
			"0x$(echo "$ip" | cut -c3-4)" "0x${ip%??????}" "0x$port"
		return 0
	done </proc/net/tcp
	return 1
}

listen=${NGINX_LISTEN:-}
if [ -z "$listen" ]; then
	listen=$(inherited_addr 3) || {
		echo "run.sh: fd 3 is not a listening IPv4 TCP socket; set NGINX_LISTEN=HOST:PORT" >&2
		exit 2
	}
fi

mkdir -p "$prefix/conf" "$prefix/temp"
conf=$prefix/conf/nginx.gen$gen.conf
sed -e "s|@LISTEN@|$listen|g" -e "s|@PROBE_PORT@|$probe_port|g" \
	-e "s|@PREFIX@|$prefix|g" -e "s|@GEN@|$gen|g" "$template" >"$conf"
# Generations before the previous one are gone; so are their configurations.
rm -f "$prefix/conf/nginx.gen$((gen - 2)).conf"

# -e stderr: Debian's build opens /var/log/nginx/error.log before reading
# the configuration otherwise.
exec "$nginx" -p "$prefix/" -e stderr -c "$conf"
