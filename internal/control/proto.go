package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Version is the version of the control protocol. A request names
// the version it speaks in "v"; the server answers a version it does not
// speak with an error and the version it does.
//
// The protocol is line-oriented JSON over a unix stream socket. Each request
// is one object on one line, at most [MaxLine] bytes with its newline;
// each answer is one object on one line. A connection may carry several
// requests, one at a time:
//
//	-> {"v":1,"op":"reload"}
//	<- {"v":1,"ok":true,"gen":4,"pid":8123}
//	-> {"v":1,"op":"reload"}
//	<- {"v":1,"ok":false,"error":"generation 5 (pid 8130) exited with status 1","gen":5,"pid":8130,"still_serving":"still serving generation 4 (pid 8123)","serving":4,"serving_pid":8123}
//	-> {"v":1,"op":"status"}
//	<- {"v":1,"ok":true,"status":{...}}
//	-> {"v":1,"op":"signal","signal":"USR1"}
//	<- {"v":1,"ok":true}
//	-> {"v":1,"op":"reload","hold":true}        (reuseport: keep it as a canary at weight 0)
//	-> {"v":1,"op":"reload","hold":true,"workers":1}  (a worker pool's canary of 1 worker)
//	-> {"v":1,"op":"weight","percent":20}       (that share of new connections to the canary)
//	-> {"v":1,"op":"promote"}                   (or "rollback")
//	-> {"v":1,"op":"status","deadline":1764628800000}  (Unix ms: not carried out after it)
//	-> {"v":1,"op":"stop"}
//	<- {"v":1,"ok":true}            (the connection closes once hotswap has stopped)
//
// Unknown fields are ignored, so a newer client can talk to this server as
// long as it speaks version 1.
const Version = 1

// MaxLine bounds a request line, newline included.
const MaxLine = 4096

// Operations.
const (
	OpReload = "reload" // start a new generation and answer its outcome
	OpStatus = "status" // answer a [supervisor.Status]
	OpSignal = "signal" // forward Signal to the current generation
	OpStop   = "stop"   // stop every generation and exit

	// Blue/green, reuseport mode (see [supervisor.Supervisor.ReloadHold]).
	OpWeight   = "weight"   // Percent of new connections to the canary
	OpPromote  = "promote"  // the canary becomes current, the old one drains
	OpRollback = "rollback" // everything back to current, the canary drains
)

// Request is one control request.
type Request struct {
	V      int    `json:"v"`
	Op     string `json:"op"`
	Signal string `json:"signal,omitempty"` // OpSignal: TERM, SIGUSR1, 10, ...
	// Hold, with OpReload, keeps the new generation as a canary.
	Hold bool `json:"hold,omitempty"`
	// Workers, with Hold, is how many workers a worker pool's canary
	// runs (0 or absent: as many as the pool).
	Workers int `json:"workers,omitempty"`
	// Percent, with OpWeight, is the canary's share, 0 to 100.
	Percent *int `json:"percent,omitempty"`
	// Deadline, if set, is when the client stops waiting, in Unix
	// milliseconds: the server carries out nothing after it, and bounds
	// the request's wait by it.
	Deadline int64 `json:"deadline,omitempty"`
}

// Response is the answer to one request.
type Response struct {
	V     int    `json:"v"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Gen and PID name, for a reload, the generation serving after it, or
	// the one rolled back when it failed.
	Gen int `json:"gen,omitempty"`
	PID int `json:"pid,omitempty"`
	// StillServing, Serving and ServingPID say what serves after a failed
	// reload (see [supervisor.ReloadError]).
	StillServing string             `json:"still_serving,omitempty"`
	Serving      int                `json:"serving,omitempty"`
	ServingPID   int                `json:"serving_pid,omitempty"`
	Status       *supervisor.Status `json:"status,omitempty"`
}

// Errors of [DecodeRequest].
var (
	ErrLineTooLong = fmt.Errorf("control: request longer than %d bytes", MaxLine)
	ErrBadVersion  = errors.New("control: unsupported protocol version")
	ErrBadOp       = errors.New("control: unknown operation")
)

// DecodeRequest parses and checks one request line, with or without its
// newline.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxLine {
		return r, ErrLineTooLong
	}
	line = bytes.TrimRight(line, "\r\n")
	if err := json.Unmarshal(line, &r); err != nil {
		return Request{}, fmt.Errorf("decode control request: %w", err)
	}
	if r.V != Version {
		return Request{}, fmt.Errorf("%w %d (this hotswap speaks %d)", ErrBadVersion, r.V, Version)
	}
	if r.Signal != "" && r.Op != OpSignal {
		return Request{}, fmt.Errorf("decode control request: %s takes no signal", r.Op)
	}
	if r.Hold && r.Op != OpReload {
		return Request{}, fmt.Errorf("decode control request: %s takes no hold", r.Op)
	}
	if r.Workers != 0 && !r.Hold {
		return Request{}, fmt.Errorf("decode control request: workers goes with a held reload, and only there")
	}
	if r.Workers < 0 {
		return Request{}, fmt.Errorf("decode control request: workers %d: want 1 or more", r.Workers)
	}
	if (r.Percent != nil) != (r.Op == OpWeight) {
		return Request{}, fmt.Errorf("decode control request: percent goes with weight, and only there")
	}
	switch r.Op {
	case OpReload, OpStatus, OpStop, OpPromote, OpRollback:
	case OpWeight:
		if *r.Percent < 0 || *r.Percent > 100 {
			return Request{}, fmt.Errorf("decode control request: percent %d: want 0 to 100", *r.Percent)
		}
	case OpSignal:
		if _, err := supervisor.ParseSignal(r.Signal); err != nil {
			return Request{}, fmt.Errorf("decode control request: %w", err)
		}
	default:
		return Request{}, fmt.Errorf("%w %q (want reload, status, signal, stop, weight, promote or rollback)", ErrBadOp, truncate(r.Op, 32))
	}
	return r, nil
}

// EncodeLine marshals v as one line, newline included.
func EncodeLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode control message: %w", err)
	}
	return append(b, '\n'), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
