package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// A lease is an object under locks/ that a process writing to the
// bucket rewrites every LeaseTimes.Refresh for as long as it works: its
// key names it, and its time, by the store's clock, says it is alive.
// A lease not rewritten for LeaseTimes.Stale belongs to a process that
// died. A push holds one from before it looks at the packs until it
// ends; gc waits for the pushes that might have missed what it condemned
// (see GCS3).
type lease struct {
	s     *S3
	key   string
	body  []byte
	times LeaseTimes

	mu        sync.Mutex
	etag      string    // of the last write, for leases rewritten with If-Match
	renewed   time.Time // when the last write succeeded
	exclusive bool      // rewritten with If-Match, so a lost lease is noticed
	lost      error
	stop      chan struct{}
	done      chan struct{}
}

// leaseInfo is the content of a lease, for people looking at the bucket.
type leaseInfo struct {
	Kind    string    `json:"kind"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

func newLeaseBody(kind string) []byte {
	host, _ := os.Hostname()
	b, _ := json.Marshal(leaseInfo{Kind: kind, Host: host, PID: os.Getpid(), Started: time.Now().UTC()})
	return b
}

// takeLease writes a new lease of kind ("push") and keeps it alive.
func (s *S3) takeLease(ctx context.Context, kind string) (*lease, error) {
	l := &lease{s: s, key: "locks/" + kind + "-" + randomName(), body: newLeaseBody(kind), times: s.opts.Lease}
	if err := s.putObject(ctx, l.key, l.body, putPlain); err != nil {
		return nil, err
	}
	l.renewed = time.Now()
	l.start()
	return l, nil
}

// gcLockKey is the lease of the gc under way.
const gcLockKey = "locks/gc"

// takeGCLock takes the bucket's gc lock: created if absent, taken over if
// its holder's lease is stale, else refused.
func (s *S3) takeGCLock(ctx context.Context) (*lease, error) {
	l := &lease{s: s, key: gcLockKey, body: newLeaseBody("gc"), times: s.opts.Lease, exclusive: true}
	etag, err := s.putObjectETag(ctx, l.key, l.body, putCond{ifNoneMatch: true})
	if errors.Is(err, errPrecondition) {
		etag, err = s.takeOverGCLock(ctx, l)
	}
	if err != nil {
		return nil, err
	}
	l.etag, l.renewed = etag, time.Now()
	l.start()
	return l, nil
}

// takeOverGCLock replaces a gc lock whose holder died.
func (s *S3) takeOverGCLock(ctx context.Context, l *lease) (string, error) {
	_, etag, err := s.getObjectETag(ctx, l.key, 4096)
	if err != nil {
		return "", err
	}
	leases, now, err := s.listLeases(ctx)
	if err != nil {
		return "", err
	}
	if t, ok := leases[l.key]; ok && now.Sub(t) < l.times.Stale {
		return "", fmt.Errorf("remote %s: another gc is running (its lock %s was renewed %v ago); try again when it is done", s.url, s.key(l.key), now.Sub(t).Round(time.Second))
	}
	etag, err = s.putObjectETag(ctx, l.key, l.body, putCond{ifMatch: etag})
	if errors.Is(err, errPrecondition) {
		return "", fmt.Errorf("remote %s: another gc took the gc lock at the same moment; try again when it is done", s.url)
	}
	return etag, err
}

// start renews the lease every Refresh until release.
func (l *lease) start() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.times.Refresh)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.renew()
			}
		}
	}()
}

// renew rewrites the lease; an exclusive lease that someone else took
// over is lost.
func (l *lease) renew() {
	ctx, cancel := context.WithTimeout(context.Background(), l.times.Refresh)
	defer cancel()
	l.mu.Lock()
	cond := putPlain
	if l.exclusive {
		cond = putCond{ifMatch: l.etag}
	}
	l.mu.Unlock()
	etag, err := l.s.putObjectETag(ctx, l.key, l.body, cond)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.etag, l.renewed = etag, time.Now()
	case errors.Is(err, errPrecondition):
		l.lost = fmt.Errorf("lost the lease %s: someone else took it over", l.s.key(l.key))
	}
}

// check reports an error if the lease may have gone stale in the eyes
// of others: not renewed for half of LeaseTimes.Stale, or taken over.
func (l *lease) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if d := time.Since(l.renewed); d > l.times.Stale/2 {
		return fmt.Errorf("the lease %s on the bucket was last renewed %v ago, so a gc may count this process as dead; run it again", l.s.key(l.key), d.Round(time.Second))
	}
	return nil
}

// release stops renewing the lease and removes it.
func (l *lease) release(ctx context.Context) error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost != nil {
		return nil // not ours any more
	}
	return l.s.deleteObject(ctx, l.key)
}

// checkLease checks the push's lease, if the remote holds one.
func (s *S3) checkLease() error {
	s.mu.Lock()
	l := s.lease
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	return l.check()
}

// listLeases returns the time of every lease (by keys below the prefix,
// such as "locks/push-R") and the store's present time.
func (s *S3) listLeases(ctx context.Context) (map[string]time.Time, time.Time, error) {
	leases := map[string]time.Time{}
	err := s.list(ctx, "locks/", func(name string, _ int64, modified time.Time) {
		if !strings.Contains(name, "/") {
			leases["locks/"+name] = modified
		}
	})
	now := s.clock.now()
	if err == nil && now.IsZero() {
		err = fmt.Errorf("remote %s: the store's answers carry no Date, so sbuml cannot tell live leases from dead ones", s.url)
	}
	return leases, now, err
}
