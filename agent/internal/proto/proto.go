// Package proto names the sessions and calls of the sbuml agent protocol
// and defines their arguments, shared by the host side (package agent)
// and the guest side (package agent/guest). The public request and reply
// types (ExecRequest, Stats) are in package agent.
package proto

import "encoding/json"

// Session kinds, opened by the host.
const (
	KindExec    = "exec"    // arguments: agent.ExecRequest
	KindCopyIn  = "copyin"  // arguments: CopyInArgs; stream 0 carries a tar stream
	KindCopyOut = "copyout" // arguments: CopyOutArgs; stream 1 carries a tar stream
)

// Calls.
const (
	OpPing    = "ping"    // host to guest: no arguments; result: the agent version
	OpStats   = "stats"   // host to guest: no arguments; result: agent.Stats
	OpSetTime = "settime" // host to guest: SetTimeArgs; no result
	OpReseed  = "reseed"  // host to guest: ReseedArgs; no result
	OpCkpt    = "ckpt"    // guest to host: CkptArgs; result: the checkpoint's number
	OpCall    = "call"    // client to keeper: CallArgs; result: the keeper's answer
)

// Session control messages, host to guest.
const (
	CtlResize = "resize" // Winsize
	CtlSignal = "signal" // a signal number
)

// ExitStatus ends a session: sent by the guest, relayed by the keeper.
type ExitStatus struct {
	// Code is an exec's exit code, or 128 plus the signal that killed it.
	Code int `json:"code"`
	// Error says why the session failed: a process that could not start,
	// a copy that failed.
	Error string `json:"error,omitempty"`
	// Lost is set by the keeper when the guest session it relayed ended
	// with the agent connection.
	Lost bool `json:"lost,omitempty"`
}

// CopyInArgs are the arguments of a copyin session.
type CopyInArgs struct {
	Dir string `json:"dir"`
}

// CopyOutArgs are the arguments of a copyout session.
type CopyOutArgs struct {
	Path string `json:"path"`
}

// SetTimeArgs are the arguments of a settime call.
type SetTimeArgs struct {
	UnixNano int64 `json:"unix_nano"`
}

// ReseedArgs are the arguments of a reseed call: random bytes from the
// host that the guest mixes into its random number generator.
type ReseedArgs struct {
	Seed []byte `json:"seed"`
}

// CkptArgs are the arguments of a ckpt call. ID is chosen by the guest
// and stays the same when the call is sent again on a new connection.
type CkptArgs struct {
	ID  uint64 `json:"id"`
	Msg string `json:"msg,omitempty"`
}

// CallArgs are the arguments of a call of the keeper's own handler.
type CallArgs struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Winsize is a terminal size.
type Winsize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}
