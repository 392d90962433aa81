package sbuml

import (
	"testing"
	"time"
)

func TestGuestIdleSince(t *testing.T) {
	t0 := time.Unix(1000, 0)
	base := guestActivity{At: t0, Forks: 100, UserTicks: 500, AgentTicks: 50, SectorsWritten: 8}
	for _, tc := range []struct {
		name string
		now  guestActivity
		idle bool
	}{
		{"nothing", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 500, AgentTicks: 50, SectorsWritten: 8}, true},
		{"a fork", guestActivity{At: t0.Add(2 * time.Second), Forks: 101, UserTicks: 500, AgentTicks: 50, SectorsWritten: 8}, false},
		{"a sector", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 500, AgentTicks: 50, SectorsWritten: 9}, false},
		{"3 ticks in 2 s", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 503, AgentTicks: 50, SectorsWritten: 8}, true},
		{"4 ticks in 2 s", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 504, AgentTicks: 50, SectorsWritten: 8}, false},
		{"4 ticks in 2 s, 2 the agent's", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 504, AgentTicks: 52, SectorsWritten: 8}, true},
		{"4 ticks in 10 s", guestActivity{At: t0.Add(10 * time.Second), Forks: 100, UserTicks: 504, AgentTicks: 50, SectorsWritten: 8}, true},
		// The agent's time can exceed the sampled total.
		{"agent more than all", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 501, AgentTicks: 55, SectorsWritten: 8}, true},
		{"busy", guestActivity{At: t0.Add(2 * time.Second), Forks: 100, UserTicks: 700, AgentTicks: 51, SectorsWritten: 8}, false},
	} {
		if got := tc.now.idleSince(&base); got != tc.idle {
			t.Errorf("%s: idleSince = %v, want %v (busy %d ticks)", tc.name, got, tc.idle, tc.now.userBusy(&base))
		}
	}
}
