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
//
// # The run loop's state machine
//
// One goroutine, the run loop (supervisor.go), owns every generation and
// every socket group; signals, the control socket, gates, exits and timers
// send it events. It reaches processes and gates only through procs
// (seam.go), so loop_test.go drives every row below with fake
// generations and testing/synctest's clock. After each event the
// reuseport groups are checked against the kernel (steering.go).
//
// A generation's states (State) and what moves it:
//
//	state      event                          next state, and what the loop does                   test
//	---------  -----------------------------  ---------------------------------------------------  ---------------------------------
//	starting   gate passes, first or restart  ready: current; steered to; hotswap is ready          TestLoopGateOutcomes, ...Backoff
//	starting   gate passes, reload            ready: current; the old current drains               TestLoopGateOutcomes
//	starting   gate passes, held reload       canary at weight 0 beside the current                TestLoopCanary
//	starting   gate fails (timeout)           draining without a drain (it had no clients);        TestLoopGateOutcomes
//	                                          rolled back, the current serves on
//	starting   exits before its gate answers  exited; sockets released by the exit; rolled back    TestLoopGateOutcomes
//	starting   first generation not ready     Run returns the reason                               TestLoopFirstGenerationNotReady
//	ready      a reload's generation is ready draining (drain first); exits later                  TestLoopGateOutcomes
//	ready      exits on its own (crash)       exited; its sockets wait, queue and all, for the     TestLoopCrashBackoff
//	                                          restart after the backoff (BackoffMin doubling to
//	                                          BackoffMax, reset after BackoffReset up)
//	ready      exits while a canary is held   exited; the canary becomes current, what waited in   TestLoopCanary
//	                                          the dead one's queues is relayed to it; no restart
//	canary     SetWeight                      canary; that share of new connections                TestLoopCanary
//	canary     Promote                        ready: current; the old current drains               TestLoopCanary
//	canary     Rollback                       draining (drain first)                               TestLoopCanary
//	canary     exits on its own               exited; everything back to the current               TestLoopCanary
//	draining   exits (or SIGKILL after        exited; a reload that waited for it starts           TestLoopWaitForDrain
//	           DrainTimeout)
//	any        Run's context ends             draining; all stopped; waiting reloads: ErrStopped   TestLoopSignalAndStop
//
// Reloads (the supervisor, not a generation):
//
//	situation                                     outcome                                           test
//	--------------------------------------------  ------------------------------------------------  ----------------------------
//	one in progress, or generation 1 not ready    coalesced: one more reload after it, whose        TestLoopReloadCoalescing
//	                                              outcome every coalesced caller gets
//	reuseport: an old generation with sockets     waits (status: reloading) until it exits; later   TestLoopWaitForDrain
//	is still stopping                             reloads coalesce into it
//	MaxDraining old generations stopping          refused at once, saying so; nothing started       TestLoopMaxDraining
//	a canary is held                              refused: promote or roll it back first            TestLoopCanary
//	held reload in shared mode                    refused: needs reuseport                          TestLoopCanary
//	a self-upgrade is in progress                 refused (errHandingOff)                           TestLoopSelfUpgradeRefusals
//	self-upgrade while not quiet (nothing         refused, saying why                               TestLoopSelfUpgradeRefusals
//	serving, a reload, a canary, a drain)
//
// A worker pool (--workers N, workers.go): each generation is N workers,
// one per slot, each in the states above; the loop keeps per slot the
// serving worker, the one a reload gates and the crash restart:
//
//	situation                                     outcome                                           test
//	--------------------------------------------  ------------------------------------------------  ----------------------------
//	start-up                                      every worker of generation 1 starts; gated one    TestLoopPool*, startPool
//	                                              at a time; hotswap is ready when all are
//	rolling reload                                slot i: new worker starts, gated, steered to;     TestLoopPoolRolling
//	                                              the old one drains; slot i+1 starts once it
//	                                              has exited; answered after the last old exits
//	a new worker fails its gate (rolling)         rollout stopped: it is stopped, rolled slots      TestLoopPoolRollingStops
//	                                              keep the new workers, the others the old; the
//	                                              error names what serves each slot
//	--rollout all                                 every new worker starts; gated one by one; then   TestLoopPoolAll
//	                                              every slot cuts over, every old worker drains
//	a serving worker exits on its own             steered away from; its sockets wait, queue and    TestLoopPoolCrash
//	                                              all; restarted alone after its own backoff, in
//	                                              its generation
//
// Why a reuseport reload waits for the previous old generation, and how
// the groups keep their steering right while sockets come and go, is in
// docs/architecture.md.
package supervisor
