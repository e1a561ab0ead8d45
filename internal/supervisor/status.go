package supervisor

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
)

// ReloadError says why a reload was rolled back, and what still serves.
type ReloadError struct {
	Gen, PID int   // the generation that failed; PID 0 if it never started
	Err      error // why
	// Serving and ServingPID name the generation still serving, 0 if none
	// (worker 0's in a pool).
	Serving, ServingPID int
	// Pool, for a worker pool, says which generation serves each worker:
	// "worker 0 generation 5, worker 1 generation 4".
	Pool string
}

func (e *ReloadError) Error() string {
	if e.PID == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("generation %d (pid %d) %v", e.Gen, e.PID, e.Err)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// StillServing says what is true after the failure, for the user.
func (e *ReloadError) StillServing() string {
	if e.Pool != "" {
		return "serving: " + e.Pool
	}
	if e.Serving == 0 {
		return "no generation is serving"
	}
	return fmt.Sprintf("still serving generation %d (pid %d)", e.Serving, e.ServingPID)
}

// Status is a snapshot of the supervisor.
type Status struct {
	PID         int                `json:"pid"`
	Started     time.Time          `json:"started"`
	Listeners   []ListenerStatus   `json:"listeners"`
	Generations []GenerationStatus `json:"generations"`
	Current     int                `json:"current"`
	// Workers, for a worker pool (--workers), is one entry per worker
	// slot: who serves it and its socket's queue.
	Workers []WorkerStatus `json:"workers,omitempty"`
	Canary  int            `json:"canary,omitempty"`
	Weight  int            `json:"canary_weight,omitempty"`
	// CanaryWorkers, for a worker pool, is how many workers the canary
	// runs.
	CanaryWorkers int          `json:"canary_workers,omitempty"`
	Reloads       ReloadCounts `json:"reloads"`
	Restarts      int          `json:"restarts"`
	// NextRestart, when set, is when a generation that crashed is started
	// again, after Backoff (exponential, capped at Config.BackoffMax).
	NextRestart time.Time     `json:"next_restart,omitzero"`
	Backoff     time.Duration `json:"restart_backoff_ns,omitempty"`
	LastFailure string        `json:"last_failure,omitempty"`
	// Reloading is set while a reload is in progress or queued (waiting
	// for its gate, for an old generation to exit, or coalesced).
	Reloading bool `json:"reloading,omitempty"`
	// SteeringRepairs counts mismatches between a reuseport group's model
	// and the kernel that hotswap found and repaired (a leaked socket, a
	// member shut down behind its back); ForeignSockets counts sockets of
	// other processes found in a group, never steered to.
	SteeringRepairs int `json:"steering_repairs"`
	ForeignSockets  int `json:"foreign_sockets"`
}

// ListenerStatus describes one socket the supervisor owns.
type ListenerStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Mode    string `json:"mode"`
	Queue   uint32 `json:"queue"`
	Backlog uint32 `json:"backlog"`
	// Spares counts the reuseport group's spare sockets: listening,
	// never steered to, each a next generation's; at the tail of the
	// group, or an exited generation's kept for the next one
	// (docs/architecture.md).
	Spares int `json:"spares,omitempty"`
}

// GenerationStatus describes one generation that has not been reaped.
type GenerationStatus struct {
	ID         int           `json:"gen"`
	Worker     int           `json:"worker"` // its slot in a worker pool
	PID        int           `json:"pid"`
	State      State         `json:"state"`
	Started    time.Time     `json:"started"`
	ReadyAfter time.Duration `json:"ready_after_ns,omitempty"`
	// Queues are the accept queues of its own reuseport sockets.
	Queues []ListenerQueue `json:"queues,omitempty"`
	// QUICCID is its HOTSWAP_QUIC_CID, with UDP listeners in reuseport
	// mode: the first byte of PREFIX is its slot.
	QUICCID string `json:"quic_cid,omitempty"`
	// Container is set when the command is `podman run`.
	Container *ContainerStatus `json:"container,omitempty"`
}

// WorkerStatus is one slot of a worker pool.
type WorkerStatus struct {
	Worker int `json:"worker"`
	// Gen and PID are the worker serving the slot (0 while it restarts);
	// State is its state.
	Gen   int   `json:"gen"`
	PID   int   `json:"pid"`
	State State `json:"state,omitempty"`
	CPU   *int  `json:"cpu,omitempty"` // pinned with --cpu-affinity
	// Pending is the worker a reload is gating for the slot, if any.
	Pending int `json:"pending_pid,omitempty"`
	// Queue is the accept queue of the slot's sockets (the serving
	// worker's, or the ones a crashed worker's restart will take).
	Queue    uint32 `json:"queue"`
	Restarts int    `json:"restarts"`
	// Conns is how many connections on the TCP listeners' ports the
	// serving worker (and its children) holds open at the moment of the
	// status, from sock_diag and /proc/PID/fd (reuse.OpenConns): the kernel
	// counts no connections accepted per socket.
	Conns int `json:"open_conns"`
	// NextRestart is when its crashed worker is started again.
	NextRestart time.Time `json:"next_restart,omitzero"`
}

// ContainerStatus is the container of a `podman run` generation.
type ContainerStatus struct {
	Image string `json:"image"`          // as on the command line, {file:} expanded
	ID    string `json:"id,omitempty"`   // empty until podman has created it
	Name  string `json:"name,omitempty"` // --name, if given
}

// ListenerQueue is the accept-queue length of one generation's socket.
type ListenerQueue struct {
	Name  string `json:"name"`
	Queue uint32 `json:"queue"`
	Inode uint64 `json:"inode"` // the socket's, as sock_diag and /proc/PID/fd name it
}

// ReloadCounts counts reloads by outcome.
type ReloadCounts struct {
	OK     int `json:"ok"`
	Failed int `json:"failed"`
}

// Status returns a snapshot taken by the run loop.
func (s *Supervisor) Status(ctx context.Context) (Status, error) {
	c := make(chan Status, 1)
	select {
	case s.statusc <- c:
		return <-c, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	case <-s.done:
		return Status{}, ErrStopped
	}
}

func (s *Supervisor) status() Status {
	st := Status{
		PID:         os.Getpid(),
		Started:     s.started,
		Reloads:     ReloadCounts{OK: s.stats.reloadsOK, Failed: s.stats.reloadsFailed},
		Restarts:    s.stats.restarts,
		LastFailure: s.lastFailed,

		Reloading:       s.reloading() || s.waitDrain || len(s.waiting)+len(s.queued) > 0,
		SteeringRepairs: s.stats.repairs,
		ForeignSockets:  s.stats.foreign,
	}
	st.Current = s.servingID()
	if len(s.canary) > 0 {
		st.Canary, st.Weight = s.canary[0].id, s.weight
		if s.pool() {
			st.CanaryWorkers = len(s.canary)
		}
	}
	for _, sl := range s.slots {
		if !sl.restartAt.IsZero() && (st.NextRestart.IsZero() || sl.restartAt.Before(st.NextRestart)) {
			st.NextRestart, st.Backoff = sl.restartAt, sl.backoff
		}
	}
	if s.pool() {
		st.Workers = s.workerStatus()
	}
	for i, l := range s.listeners {
		ls := ListenerStatus{Name: l.spec.Name, Address: l.addr(), Mode: string(l.mode)}
		switch {
		case l.shared != nil && strings.HasPrefix(l.spec.Network, "tcp"):
			ls.Queue, ls.Backlog, _ = reuse.QueueLen(l.shared)
		case l.reuseport():
			// The generations' own sockets, each with backlog somaxconn.
			ls.Backlog = uint32(reuse.Somaxconn())
			ls.Spares = l.group.Spares()
			for _, g := range s.live {
				if m := member(g, i); m != nil {
					q, _ := m.QueueLen()
					ls.Queue += q
				}
			}
		}
		st.Listeners = append(st.Listeners, ls)
	}
	gens := slices.Collect(maps.Values(s.live))
	slices.SortFunc(gens, func(a, b *gen) int { return cmp.Or(a.id-b.id, a.worker-b.worker) })
	for _, g := range gens {
		gs := GenerationStatus{ID: g.id, Worker: g.worker, PID: g.pid, State: g.state, Started: g.started}
		for i, m := range g.members {
			if m != nil {
				q, _ := m.QueueLen()
				gs.Queues = append(gs.Queues, ListenerQueue{Name: s.listeners[i].spec.Name, Queue: q, Inode: m.Inode()})
			}
		}
		if g.ctr != nil {
			id, _ := g.ctr.known()
			gs.Container = &ContainerStatus{Image: g.ctr.image, ID: id, Name: g.ctr.name}
		}
		if !g.readyAt.IsZero() {
			gs.ReadyAfter = g.readyAt.Sub(g.started)
		}
		if s.udp != nil {
			if sl, ok := s.udp.slots[g.id]; ok {
				gs.QUICCID = s.udp.cid(sl)
			}
		}
		st.Generations = append(st.Generations, gs)
	}
	return st
}

// workerStatus is one entry per slot of the pool.
func (s *Supervisor) workerStatus() []WorkerStatus {
	var ws []WorkerStatus
	conns := s.workerConns()
	for _, sl := range s.slots {
		w := WorkerStatus{Worker: sl.i, Restarts: sl.restarts, NextRestart: sl.restartAt}
		ms := sl.orphans
		if g := sl.current; g != nil {
			w.Gen, w.PID, w.State, ms = g.id, g.pid, g.state, g.members
			w.Conns = conns[g.pid]
			if s.cfg.CPUAffinity && g.cpu >= 0 {
				w.CPU = &g.cpu
			}
		}
		if sl.pending != nil {
			w.Pending = sl.pending.pid
		}
		for _, m := range ms {
			if m != nil {
				q, _ := m.QueueLen()
				w.Queue += q
			}
		}
		ws = append(ws, w)
	}
	return ws
}

// workerConns counts the connections each serving worker holds open on
// the TCP listeners' ports, by pid.
func (s *Supervisor) workerConns() map[int]int {
	var ports, pids []int
	for _, l := range s.listeners {
		if !strings.HasPrefix(l.spec.Network, "tcp") {
			continue
		}
		if _, p, err := net.SplitHostPort(l.addr()); err == nil {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				ports = append(ports, n)
			}
		}
	}
	for _, sl := range s.slots {
		if g := sl.current; g != nil && g.pid > 0 {
			pids = append(pids, g.pid)
		}
	}
	if len(ports) == 0 || len(pids) == 0 {
		return nil
	}
	conns, err := reuse.OpenConns("tcp", ports, pids)
	if err != nil {
		s.log.Debug("count the workers' open connections", "error", err)
	}
	return conns
}
