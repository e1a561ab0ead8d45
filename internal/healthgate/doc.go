// Package healthgate decides when a new generation is ready to take
// traffic. It parses the --ready spec, runs the generation's sd_notify
// socket and probes over HTTP, HTTPS, TCP or a command; the client side of
// sd_notify is fdpass.Notify. It knows nothing about generations beyond a pid
// and never logs: [Wait] returns an error that says why a generation is not
// ready, and [NotifySocket] hands every datagram to a callback.
//
// # Readiness forms
//
//	notify                  READY=1 on the generation's NOTIFY_SOCKET
//	http://HOST:PORT/PATH   GET until a 2xx (3xx is not followed)
//	https://HOST:PORT/PATH  the same over TLS
//	tcp://HOST:PORT         connect until accepted
//	exec:COMMAND ARGS       run until it exits 0 (no shell unless you
//	                        write exec:sh -c ...; its output is in the error)
//	DURATION                the generation stayed up that long (500ms, 2s)
//
// Addresses and exec arguments may hold {gen}, {pid} and {port}. {port} is
// the port of a [HealthSocket] the supervisor binds per generation and hands
// to it (named [HealthName]); it also substitutes the port into the child's
// own arguments ([ExpandArgs]), so a probe reaches an address that only the
// new generation serves and nobody else can bind:
//
//	hotswap --ready 'http://127.0.0.1:{port}/healthz' -- ./server --admin 127.0.0.1:{port}
//
// Probes run every [DefaultInterval], each limited by
// [DefaultAttemptTimeout]; see [Options]. HTTP probes use a fresh
// connection per attempt (keep-alive off, no proxy), so that every attempt
// is steered anew.
//
// # Certificates
//
// An https probe completes the TLS handshake but does not verify the
// certificate unless [Options].TLSConfig says so: the probe usually dials a
// loopback address the certificate does not name, and it asks whether the
// new generation serves, not who it is. A generation that cannot load its
// key or certificate still fails the handshake. To gate certificate
// rotation on a valid chain, pass a TLSConfig with ServerName (and RootCAs).
//
// # The notify protocol
//
// The supervisor creates one [NotifySocket] per generation before starting
// it, puts [NotifySocket.Path] in the child's NOTIFY_SOCKET, and attaches
// the child's pid once it is known. The socket has SO_PASSCRED, so the
// kernel stamps every datagram with its sender's pid:
//
//	generation pid P --READY=1--> credited: ready
//	grandchild of P  --READY=1--> not credited (Message.Err wraps ErrUncredited)
//	old generation   --READY=1--> not credited
//	P --MAINPID=Q--> then Q --READY=1--> credited: ready
//
// Datagrams are parsed strictly ([ParseMessage]); a malformed one is handed
// to the callback with Message.Err set and otherwise ignored. The socket
// keeps reading after the gate, so STATUS=, RELOADING=1, STOPPING=1 and
// WATCHDOG=1 stay visible through [NotifySocket.State] and
// [NotifySocket.OnMessage] until Close. EXTEND_TIMEOUT_USEC= extends
// [Options].Timeout (not a ctx deadline). A generation that sends
// STOPPING=1 before READY=1 fails the gate at once.
//
// # Shared mode
//
// In shared mode every generation accepts from the same socket, so a probe
// sent to the public port may be answered by the old generation and proves
// nothing about the new one. Use notify, a {port} address that only the new
// generation serves, exec, a duration, or reuseport mode, where the
// supervisor's steering program sends connections from a known source port
// ([Options].LocalAddr) to the new generation's socket.
//
// # Under systemd
//
// hotswap forwards its own state to its service manager with fdpass.NotifyTo:
//
//	[Service]
//	Type=notify
//	NotifyAccess=main
//	ExecStart=/usr/bin/hotswap --ready notify -- /usr/bin/myserver
//	ExecReload=/bin/kill -HUP $MAINPID
package healthgate
