package sbuml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/retention"
	"github.com/sbuml/sbuml/vmm"
)

// Thinkback: the keeper of a machine takes automatic snapshots at
// intervals, as DejaView's thinkback daemon did, skips those of a guest
// that did nothing since the last one, and expires old ones by a
// retention policy (see autosnap.go for where they are kept).

// Files of a machine directory for thinkback.
const (
	autosnapFile      = "autosnap.json"       // the AutosnapConfig, while thinkback is on
	autosnapStateFile = "autosnap-state.json" // what the keeper did last (AutosnapState)
)

// MinAutosnapInterval is the shortest interval between automatic
// snapshots.
const MinAutosnapInterval = time.Second

// AutosnapConfig says when a machine's keeper takes automatic snapshots
// and which it keeps.
type AutosnapConfig struct {
	// Every is the interval between automatic snapshots.
	Every time.Duration `json:"every_ns"`
	// Keep is the retention policy (restic forget's rules); empty keeps
	// every automatic snapshot.
	Keep retention.Policy `json:"keep"`
	// Always takes a snapshot even when the guest was idle (see
	// guestIdle); by default an idle guest is not snapshot again.
	Always bool `json:"always,omitempty"`
}

// Validate checks the interval and the policy.
func (c AutosnapConfig) Validate() error {
	if c.Every < MinAutosnapInterval {
		return fmt.Errorf("autosnap interval %v: want at least %v", c.Every, MinAutosnapInterval)
	}
	return c.Keep.Validate()
}

// AutosnapState is what a machine's keeper last did for thinkback.
type AutosnapState struct {
	Config  *AutosnapConfig `json:"config,omitempty"` // nil: thinkback is off
	Running bool            `json:"running"`          // a keeper runs it
	// Last is when the keeper last looked; LastSnapshot the last
	// automatic snapshot it took, at LastTaken.
	Last         time.Time  `json:"last,omitzero"`
	LastSnapshot objects.ID `json:"last_snapshot,omitzero"`
	LastTaken    time.Time  `json:"last_taken,omitzero"`
	// LastAdded is what the last automatic snapshot added to the
	// scrapbook, in stored bytes; LastDowntime how long it froze the guest.
	LastAdded    int64         `json:"last_added_bytes,omitempty"`
	LastDowntime time.Duration `json:"last_downtime_ns,omitempty"`
	// Taken, Skipped and Expired count since the keeper started.
	Taken   int `json:"taken"`
	Skipped int `json:"skipped"`
	Expired int `json:"expired"`
	// LastSkip says why the last interval took no snapshot.
	LastSkip string `json:"last_skip,omitempty"`
	// LastError is the last failure, if the last attempt failed.
	LastError string `json:"last_error,omitempty"`
}

func readAutosnapConfig(dir string) (*AutosnapConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, autosnapFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c AutosnapConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, autosnapFile), err)
	}
	return &c, c.Validate()
}

// SetAutosnap turns thinkback on for a machine, or changes its settings:
// its keeper (started if needed) takes automatic snapshots every
// cfg.Every while the machine runs, until StopAutosnap or until the
// machine halts.
func (s *Scrapbook) SetAutosnap(ctx context.Context, machine string, cfg AutosnapConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("autosnap %s: %w", machine, err)
	}
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return fmt.Errorf("autosnap: %w", err)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, autosnapFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("autosnap %s: %w", machine, err)
	}
	if err := s.startKeeper(dir); err != nil {
		return fmt.Errorf("autosnap %s: %w", machine, err)
	}
	return nil
}

// StopAutosnap turns thinkback off for a machine. The automatic
// snapshots taken stay until expired or deleted.
func (s *Scrapbook) StopAutosnap(ctx context.Context, machine string) error {
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return fmt.Errorf("autosnap: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, autosnapFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("autosnap %s: %w", machine, err)
	}
	// An automatic snapshot the keeper has begun ends before StopAutosnap
	// returns, and none begins after.
	if keeperOf(dir).Running {
		c, err := agent.Dial(ctx, filepath.Join(dir, keeperSocket))
		if err != nil {
			return fmt.Errorf("autosnap %s: %w", machine, err)
		}
		defer c.Close()
		if err := c.Call(ctx, callAutosnapWait, nil, nil); err != nil {
			return fmt.Errorf("autosnap %s: %w", machine, err)
		}
	}
	return nil
}

// Autosnap reports a machine's thinkback settings and what its keeper
// last did.
func (s *Scrapbook) Autosnap(ctx context.Context, machine string) (*AutosnapState, error) {
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return nil, fmt.Errorf("autosnap: %w", err)
	}
	return autosnapState(dir)
}

func autosnapState(dir string) (*AutosnapState, error) {
	st := &AutosnapState{}
	if b, err := os.ReadFile(filepath.Join(dir, autosnapStateFile)); err == nil {
		json.Unmarshal(b, st) // a torn or old state file reports nothing
	}
	cfg, err := readAutosnapConfig(dir)
	if err != nil {
		return nil, err
	}
	st.Config = cfg
	st.Running = cfg != nil && keeperOf(dir).Running
	return st, nil
}

// existingMachineDir returns the directory of a machine that exists.
func (s *Scrapbook) existingMachineDir(machine string) (string, error) {
	dir, err := s.MachineDir(machine)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, vmm.ConfigFile)); err != nil {
		return "", fmt.Errorf("no machine %s (see 'sbuml ps')", machine)
	}
	return dir, nil
}

// autosnapPoll is how often the keeper looks for changed thinkback
// settings.
const autosnapPoll = time.Second

// keepAutosnaps is the keeper's thinkback loop.
func (k *keeper) keepAutosnaps(ctx context.Context) {
	st := &AutosnapState{}
	var last time.Time // when the last interval began
	var before *guestActivity
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(autosnapPoll):
		}
		cfg, err := readAutosnapConfig(k.dir)
		if err != nil {
			st.LastError = err.Error()
			k.saveAutosnapState(st)
			continue
		}
		if cfg == nil {
			last, before = time.Time{}, nil
			continue
		}
		if last.IsZero() {
			last = time.Now()
			before, _ = k.guestActivity(ctx)
			continue
		}
		if time.Since(last) < cfg.Every {
			continue
		}
		last = time.Now()
		before = k.autosnapOnce(ctx, cfg, st, before)
		k.saveAutosnapState(st)
	}
}

// autosnapOnce takes one automatic snapshot unless the guest was idle or
// the machine is not running, then expires old ones. It returns the
// guest's activity counters to compare with next time.
func (k *keeper) autosnapOnce(ctx context.Context, cfg *AutosnapConfig, st *AutosnapState, before *guestActivity) *guestActivity {
	k.autosnapMu.Lock()
	defer k.autosnapMu.Unlock()
	// Turned off meanwhile? (StopAutosnap removes the file, then waits
	// for this lock.)
	if c, err := readAutosnapConfig(k.dir); err != nil || c == nil {
		return before
	}
	st.Last, st.LastError, st.LastSkip = time.Now(), "", ""
	now, aerr := k.guestActivity(ctx)
	if why := k.skipAutosnap(ctx, cfg, before, now, aerr); why != "" {
		st.Skipped++
		st.LastSkip = why
		if why == skipIdle {
			return now // the next interval is judged on its own
		}
		return before
	}
	res, err := k.commit(ctx, CommitOptions{Auto: true, Message: "autosnap " + k.name})
	if err != nil {
		st.LastError = err.Error()
		log.Printf("autosnap: %v", err)
		return before
	}
	st.Taken++
	st.LastSnapshot, st.LastTaken = res.ID, time.Now()
	st.LastAdded, st.LastDowntime = res.Stats.NewBytes, res.Downtime
	log.Printf("autosnap: %s (+%d bytes, downtime %v)", res.ID.Short(), res.Stats.NewBytes, res.Downtime.Round(time.Millisecond))
	if !cfg.Keep.Empty() {
		n, err := k.expire(ctx, cfg.Keep)
		st.Expired += n
		if err != nil {
			st.LastError = err.Error()
			log.Printf("autosnap: %v", err)
		}
	}
	// Count from after the snapshot: the commit itself is no activity.
	if after, err := k.guestActivity(ctx); err == nil {
		return after
	}
	return now
}

// skipAutosnap says why this interval takes no snapshot, or "".
func (k *keeper) skipAutosnap(ctx context.Context, cfg *AutosnapConfig, before, now *guestActivity, aerr error) string {
	if st := k.status(ctx); st != vmm.StateRunning {
		return "machine " + string(st)
	}
	if cfg.Always || before == nil || aerr != nil {
		return ""
	}
	if now.idleSince(before) {
		return skipIdle
	}
	log.Printf("autosnap: the guest was active: %d processes started, %d sectors written, %d ticks of user and %d of system time",
		now.Forks-before.Forks, now.SectorsWritten-before.SectorsWritten, now.userBusy(before), now.SystemTicks-before.SystemTicks)
	return ""
}

// expire applies the retention policy to the machine's automatic
// snapshots and returns how many it dropped.
func (k *keeper) expire(ctx context.Context, p retention.Policy) (int, error) {
	s, err := k.openBook()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	ds, err := s.ExpireAutosnaps(ctx, k.name, p, false)
	n := 0
	for _, d := range ds {
		if !d.Keep {
			n++
		}
	}
	return n, err
}

func (k *keeper) saveAutosnapState(st *AutosnapState) {
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(k.dir, autosnapStateFile), append(b, '\n'), 0o644); err != nil {
		log.Printf("autosnap: %v", err)
	}
}

// skipIdle is why an interval whose guest was idle takes no snapshot.
const skipIdle = "guest idle"

// guestActivity is what the guest's agent counts, to tell an idle guest.
type guestActivity struct {
	At             time.Time // when the host read them
	Forks          uint64    // processes created since boot
	UserTicks      uint64    // user and nice CPU time, in clock ticks
	AgentTicks     uint64    // the agent's own user time, in clock ticks
	SystemTicks    uint64    // system CPU time, in clock ticks (reported, not judged)
	SectorsWritten uint64    // to block devices
}

// idleSince reports whether the guest did nothing since before: it
// started no process, wrote no sector to a disk, and its CPUs ran
// programs other than the agent (user and nice time) for at most idleBusy
// of the time between the two readings plus two ticks. Kernel time is not
// counted: the kernel of an idle guest works after every resume (a commit
// freezes it) and for every answer of the agent.
func (a *guestActivity) idleSince(before *guestActivity) bool {
	budget := 2 + uint64(a.At.Sub(before.At).Seconds()*userHZ*idleBusy)
	return a.Forks == before.Forks && a.SectorsWritten == before.SectorsWritten && a.userBusy(before) <= budget
}

// userBusy returns the user and nice ticks since before that are not the
// agent's. The two counts are kept differently by the guest kernel
// (/proc/stat samples ticks, a process's time is split from its run
// time), so the agent's may exceed the total: never below zero.
func (a *guestActivity) userBusy(before *guestActivity) uint64 {
	user := a.UserTicks - min(a.UserTicks, before.UserTicks)
	agent := a.AgentTicks - min(a.AgentTicks, before.AgentTicks)
	return user - min(user, agent)
}

// userHZ is the unit of /proc/stat's CPU times: always 100 per second.
const userHZ = 100

// idleBusy is the share of an interval an idle guest's CPUs may run
// programs.
const idleBusy = 0.005
