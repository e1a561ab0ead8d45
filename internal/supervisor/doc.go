// Package supervisor runs generations of one command on listening sockets
// it owns and replaces the current generation with a new one on a reload,
// without closing a socket that still has connections queued. One
// goroutine, the run loop (supervisor.go), owns every generation; signals,
// the control socket and timers reach it as messages. See
// docs/architecture.md for the design and docs/kernel.md for the kernel
// facts it rests on.
//
// # Generation states
//
// Each generation is in one [State]; [Supervisor.Status] shows it.
//
//	state     entered when                             left when
//	starting  the process started (startGen)           its gate passed: ready, or canary for a
//	                                                   held reload; its gate failed or it
//	                                                   exited: draining (rolled back) or exited
//	ready     its gate passed and it is current        a newer generation is ready (reload,
//	          (markReady; the cutover steers to it)    promote): draining; it exits: exited
//	canary    ready in a held reload, beside the       promote: ready (the old one drains);
//	          current one (reuseport mode only)        rollback or exit: draining or exited
//	draining  it is being replaced or stopped: in      it exits (or is killed after
//	          reuseport mode it still accepts until    --drain-timeout): exited
//	          its queue and connections are done,
//	          then gets the stop signal
//	exited    the process was reaped (onExit)          never: it leaves the status
//
// # The reload, step by step
//
//	reload requested   coalesced into one in progress; refused while a canary is held
//	                   or a self-upgrade hands over; in reuseport mode it waits until
//	                   the previous old generation has exited, in shared mode one
//	                   over --max-draining fails at once
//	start N+1          fails: rolled back, N keeps serving
//	gate N+1           --ready within --ready-timeout; fails or exits: N+1 drains,
//	                   rolled back
//	cutover            N+1 becomes current; in reuseport mode the steering program
//	                   names its socket
//	drain N            reuseport: queue empty, connections idle (bounded by
//	                   --drain-conn-wait), then the stop signal; shared: the stop
//	                   signal at once; SIGKILL after --drain-timeout
//	outcome            every caller waiting on the reload learns it (nil or a
//	                   [ReloadError] that says what still serves)
//
// A current generation that exits on its own is restarted with exponential
// backoff; its sockets stay open meanwhile, so clients queue.
package supervisor
