// Package intercept gives unmodified servers a listening socket that the
// supervisor owns, by answering their bind() with a seccomp user
// notification filter. It works for binaries that LD_PRELOAD cannot reach,
// such as statically linked Go servers.
//
// # Protocol
//
//	supervisor                               exec shim (same pid as the target)
//	socketpair(AF_UNIX, SOCK_SEQPACKET)  ──► fd 3, Pdeathsig SIGKILL
//	                                         runtime.LockOSThread()
//	                                         InstallAndSend(3):
//	                                           prctl(PR_SET_NO_NEW_PRIVS)
//	                                           seccomp(NEW_LISTENER|WAIT_KILLABLE_RECV)
//	Receive(ctx, sock) ◄──────────────────── sendmsg("N", SCM_RIGHTS{notify fd})
//	Serve(ctx, notify, pid, table)           close(notify), close(3)
//	                                         unix.Exec(target) on the same thread
//
// The filter traps bind(2), listen(2), and shutdown(2) unless how is
// SHUT_WR; everything else is allowed by a constant path, so serving costs
// nothing. [Serve] answers:
//
//   - bind of a TCP (or MPTCP) or UDP socket to a supervised address: the
//     supervisor's socket replaces the child's at the same descriptor
//     (SECCOMP_IOCTL_NOTIF_ADDFD with SETFD, keeping the child's FD_CLOEXEC;
//     the child's O_NONBLOCK is copied onto the supervisor's socket), then
//     bind() returns 0. Any other bind runs unchanged.
//   - listen on a supervisor socket: [Table.Listen] is called and the call
//     returns 0 without running, so the child's backlog (5 for Python) never
//     replaces the supervisor's.
//   - shutdown(SHUT_RD or SHUT_RDWR) on a supervisor socket: returns 0
//     without running, since it would stop the socket for everyone.
//
// listen and shutdown are recognised (kcmp KCMP_FILE) only on sockets that
// Serve installed for this child; a socket the child inherited through
// LISTEN_FDS is not, and its listen() runs.
//
// # Address matching
//
// A bind matches a supervised socket of the same network ("tcp", "udp") and
// the same non-zero port when, in order of preference:
//
//  1. the address is the same, family included (127.0.0.1:P, [::1]:P);
//  2. within one family, either side is the wildcard: a child binding
//     0.0.0.0:P receives the supervisor's 127.0.0.1:P socket (it asked for
//     every address and gets the one supervised), a child binding
//     127.0.0.1:P receives the supervisor's 0.0.0.0:P socket (which covers
//     it);
//  3. across families, the child binds a wildcard ([::]:P, as Go does for
//     ":P", or 0.0.0.0:P next to a supervised IPv6 address), or the
//     supervisor's socket is [::]:P and the child binds an IPv4 (or
//     IPv4-mapped) address. The child then holds a socket of the other
//     family; getsockname returns the supervised address.
//
// Among several matches the best rank wins, then the first in the table
// ([Listeners] order). Any other bind runs unchanged: an IPv6 address next
// to a supervised 0.0.0.0:P does not conflict in the kernel, and a
// different specific address (127.0.0.2:P) binds normally, so no
// supervised port is answered with a silent EADDRINUSE. [MatchScore]
// implements the ranking.
//
// # What cannot be intercepted
//
//   - io_uring IORING_OP_BIND and IORING_OP_LISTEN (Linux 6.11+) bypass
//     seccomp.
//   - On amd64, i386 system calls (int 0x80, socketcall) and x32 calls
//     (nr | 0x40000000) do not match the filter and run unchanged; on arm64,
//     AArch32 calls likewise. Other architectures are refused by
//     [Supported].
//   - A program that itself installs a user notification listener (hotswap
//     under hotswap, some sandboxes and container managers): the kernel
//     refuses nested listeners and [InstallAndSend] returns [ErrNested].
//   - A server that registers its socket with epoll before bind keeps
//     watching the replaced socket.
//
// # When the supervisor goes away
//
// Once no process holds the notification fd, every trapped call of the
// child fails with ENOSYS: a bind pending at that moment, every later
// bind (even one to port 0 or an unsupervised address), every listen and
// shutdown(SHUT_RD). Sockets already installed keep working, as do
// untrapped calls such as shutdown(SHUT_WR). The supervisor therefore
// starts the shim with Pdeathsig SIGKILL.
//
// # Requirements
//
// Linux 5.9 (ADDFD), 5.19 or later preferred (WAIT_KILLABLE_RECV: with it a
// received notification cannot be interrupted by Go's preemption signals).
// No privilege: the shim sets no_new_privs itself; the supervisor needs
// ptrace access to its children (the same uid, or CAP_SYS_PTRACE) for
// process_vm_readv, pidfd_getfd and kcmp.
//
// Example systemd unit for a wrapped, unmodified server:
//
//	[Service]
//	ExecStart=/usr/local/bin/hotswap --listen http=tcp://0.0.0.0:8080 -- /usr/bin/python3 -m http.server 8080
//	ExecReload=/bin/kill -HUP $MAINPID
//	User=www-data
//	NoNewPrivileges=yes
package intercept
