// Package fdpass is the wire between hotswap and its children: the
// inherited-descriptor environment protocols (both ends), the exec shim that
// makes LISTEN_PID true, and descriptor duplication that leaves the shared
// open file description alone.
//
// A generation receives its listeners as fds 3, 4, ... in listener order, and
// every protocol below at once, so any server finds its own:
//
//	LISTEN_FDS=2 LISTEN_FDNAMES=http:admin LISTEN_PID=<child pid>   systemd, sd_listen_fds(3)
//	NGINX=3;4;                                                     nginx (the trailing ';' is required)
//	EINHORN_FD_COUNT=2 EINHORN_FD_0=3 EINHORN_FD_1=4                einhorn
//	HOTSWAP_GENERATION=7                                           hotswap's own
//
// os/exec cannot set LISTEN_PID to the child's own pid, so hotswap starts
// itself as a shim (HOTSWAP_SHIM=1) that sets LISTEN_PID=getpid() and execs
// the target: the pid does not change across execve.
//
// On the child side, [Listeners] and [Listen] return the inherited sockets by
// name, and [ServeHTTP] drains a Go HTTP server without losing a connection
// it had already accepted. Datagram sockets come from [PacketConns] and
// [ListenPacket]; a repeated name keys later descriptors as "name:fd".
//
// A systemd unit that runs a server under hotswap:
//
//	[Service]
//	ExecStart=/usr/local/bin/hotswap --listen http=tcp://0.0.0.0:80 --ready notify -- /usr/local/bin/myserver
//	ExecReload=/bin/kill -HUP $MAINPID
//	Type=notify
//	KillMode=mixed
package fdpass
