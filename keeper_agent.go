package sbuml

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/vmm"
)

// agentRedial is how long the keeper waits before connecting to the
// agent socket again after a connection ended.
const agentRedial = 200 * time.Millisecond

// keepAgent holds the host end of the machine's agent channel while QEMU
// runs, connecting again whenever the connection ends. Machines without
// an agent port (booted by an older sbuml) have none to keep.
func (k *keeper) keepAgent(ctx context.Context) {
	if !k.cfg.Agent {
		return
	}
	sock := filepath.Join(k.dir, vmm.AgentSocket)
	for ctx.Err() == nil {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", sock)
		if err == nil {
			k.prepared.Store(false)
			go k.whenReady(ctx)
			err = k.host.Serve(ctx, conn)
			if ctx.Err() == nil {
				log.Printf("agent connection ended: %v", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(agentRedial):
		}
	}
}

// whenReady sets the guest's clock and reseeds its random number
// generator as soon as its agent answers on a new connection: the guest
// may have been restored from a snapshot, with the clock of the instant
// of the snapshot and the generator state every machine checked out of
// it shares.
func (k *keeper) whenReady(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := k.host.WaitReady(ctx); err != nil {
		return
	}
	k.syncClock(ctx)
	seed := make([]byte, 64)
	rand.Read(seed)
	if err := k.host.Reseed(ctx, seed); err != nil {
		log.Printf("%v", err)
	}
	k.prepared.Store(true)
}

// guestResumed is called when QEMU reports that the guest runs again
// (after a freeze, a commit, or a checkout's continue).
func (k *keeper) guestResumed(ctx context.Context) {
	if k.cfg.Agent {
		go k.syncClock(ctx)
	}
}

// syncClock sets the guest's wall clock to the host's. The guest's clock
// stands still while it is frozen or saved, so without this a restored
// guest lives in the past.
func (k *keeper) syncClock(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := k.host.SetTime(ctx, time.Now()); err != nil {
		log.Printf("set the guest's clock: %v", err)
	}
}

// guestActivity reads the guest's activity counters through its agent.
func (k *keeper) guestActivity(ctx context.Context) (*guestActivity, error) {
	if !k.cfg.Agent {
		return nil, fmt.Errorf("machine %s has no agent", k.name)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := k.host.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return &guestActivity{
		At:             time.Now(),
		Forks:          st.Processes,
		UserTicks:      st.User + st.Nice,
		AgentTicks:     st.AgentUser,
		SystemTicks:    st.System,
		SectorsWritten: st.SectorsWritten,
	}, nil
}

// Checkpoint answers a ckpt() request of the guest (agent.Handler): it
// commits the machine and answers 0, unless the machine owes this request
// an answer already: a request the guest sends again after the snapshot
// was taken (the keeper died before answering) gets 0 again, and one its
// snapshot was taken by, in a machine checked out of that snapshot, gets
// the machine's child number.
func (k *keeper) Checkpoint(ctx context.Context, id uint64, msg string) (int, error) {
	k.ckptMu.Lock()
	defer k.ckptMu.Unlock()
	head, err := readHead(k.dir)
	if err != nil {
		return -1, err
	}
	if n, ok := head.answered(id); ok {
		log.Printf("ckpt %x: answered before: %d", id, n)
		return n, nil
	}
	if st := k.status(ctx); st != vmm.StateRunning {
		return -1, fmt.Errorf("machine %s is %s: ckpt() needs it running ('sbuml continue %s', then call ckpt() again)", k.name, st, k.name)
	}
	if msg == "" {
		msg = "ckpt " + k.name
	}
	res, err := k.commit(ctx, CommitOptions{Message: msg, Ckpt: id})
	if err != nil {
		log.Printf("ckpt %x: %v", id, err)
		return -1, err
	}
	log.Printf("ckpt %x: snapshot %s (downtime %v)", id, res.ID.Short(), res.Downtime.Round(time.Millisecond))
	return 0, nil
}

// serveClients relays the requests of command-line processes (exec, cp)
// to the guest and answers the keeper's own calls.
func (k *keeper) serveClients(ctx context.Context, ln net.Listener) {
	err := agent.Serve(ctx, ln, k.host, k.call)
	if err != nil && ctx.Err() == nil {
		log.Printf("serve clients: %v", err)
	}
}

// Calls a command-line process may make to the keeper (agent.Client.Call).
const (
	callKeeperStatus = "keeper.status" // reply: keeperStatus
	callAutosnapWait = "autosnap.wait" // returns once no automatic snapshot is being taken
)

// keeperStatus is the reply to callKeeperStatus.
type keeperStatus struct {
	PID   int    `json:"pid"`
	QEMU  int    `json:"qemu_pid"`
	Agent bool   `json:"agent"` // the guest's agent is connected
	Name  string `json:"machine"`
	// Prepared says the keeper has set the clock and reseeded the random
	// number generator of the guest since the agent last connected.
	Prepared bool `json:"prepared"`
}

// call answers the keeper's own calls.
func (k *keeper) call(ctx context.Context, name string, args json.RawMessage) (any, error) {
	switch name {
	case callKeeperStatus:
		ready, cancel := context.WithTimeout(ctx, 0)
		defer cancel()
		connected := k.cfg.Agent && k.host.WaitReady(ready) == nil
		return keeperStatus{PID: os.Getpid(), QEMU: k.qemu, Agent: connected, Name: k.name, Prepared: k.prepared.Load()}, nil
	case callAutosnapWait:
		k.autosnapMu.Lock()
		k.autosnapMu.Unlock()
		return nil, nil
	}
	return nil, fmt.Errorf("the keeper has no call %q", name)
}
