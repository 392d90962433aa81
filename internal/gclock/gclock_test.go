package gclock

import (
	"errors"
	"testing"
)

func TestLock(t *testing.T) {
	type step struct {
		take    func(string) (func(), error)
		busy    bool
		release bool // release every lock held so far before this step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"writers share", []step{{take: Shared}, {take: Shared}}},
		{"gc waits for writers", []step{{take: Shared}, {take: Exclusive, busy: true}}},
		{"writers wait for gc", []step{{take: Exclusive}, {take: Shared, busy: true}}},
		{"one gc at a time", []step{{take: Exclusive}, {take: Exclusive, busy: true}}},
		{"release lets gc in", []step{{take: Shared}, {take: Exclusive, release: true}}},
		{"release lets writers in", []step{{take: Exclusive}, {take: Shared, release: true}, {take: Shared}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var held []func()
			defer func() {
				for _, r := range held {
					r()
				}
			}()
			for i, s := range tt.steps {
				if s.release {
					for _, r := range held {
						r()
					}
					held = nil
				}
				r, err := s.take(dir)
				if s.busy {
					if !errors.Is(err, ErrBusy) {
						t.Fatalf("step %d: err = %v, want ErrBusy", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				held = append(held, r)
			}
		})
	}
}
