package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestChooseAccelExplicit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	noProbe := func(context.Context, string) error {
		t.Error("probe called")
		return nil
	}
	cache := filepath.Join(t.TempDir(), "accel.json")
	if a, err := ChooseAccel(ctx, "tcg", cache, noProbe); a != "tcg" || err != nil {
		t.Errorf("tcg: %q, %v", a, err)
	}
	if _, err := ChooseAccel(ctx, "hvf", cache, noProbe); err == nil || !strings.Contains(err.Error(), `"hvf"`) {
		t.Errorf("unknown accelerator: %v", err)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("explicit choices wrote the cache: %v", err)
	}
	if kvmErr := CheckKVM(); kvmErr != nil {
		if a, err := ChooseAccel(ctx, "kvm", cache, noProbe); err == nil || !strings.Contains(err.Error(), "/dev/kvm") {
			t.Errorf("kvm without /dev/kvm: %q, %v", a, err)
		}
		return
	}
	// With /dev/kvm, an explicit kvm is held to the host's verdict: a KVM
	// the probe found hanging is refused, saying why.
	hangs := func(ctx context.Context, accel string) error {
		if accel == "kvm" {
			return errors.New("the guest hung under KVM")
		}
		return nil
	}
	if a, err := ChooseAccel(ctx, "kvm", cache, hangs); err == nil || !strings.Contains(err.Error(), "hung under KVM") || !strings.Contains(err.Error(), "--accel tcg") {
		t.Errorf("kvm where the probe found it hanging: %q, %v", a, err)
	}
	works := func(context.Context, string) error { return nil }
	if a, err := ChooseAccel(ctx, "kvm", filepath.Join(t.TempDir(), "accel.json"), works); a != "kvm" || err != nil {
		t.Errorf("kvm where the probe found it working: %q, %v", a, err)
	}
}

// TestChooseAccelCache checks the verdict cache with stand-in probes; the
// real probe is exercised by TestChooseAccelAutoOnThisHost.
func TestChooseAccelCache(t *testing.T) {
	t.Parallel()
	if err := CheckKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	ctx := testContext(t, time.Minute)
	tests := []struct {
		name     string
		probeErr error
		want     string
	}{
		{"kvm works", nil, "kvm"},
		{"kvm fails", errors.New("wait for ready marker: context deadline exceeded"), "tcg"},
	}
	for _, tt := range tests {
		cache := filepath.Join(t.TempDir(), "sub", "accel.json")
		var mu sync.Mutex
		calls := map[string]int{}
		probe := func(ctx context.Context, accel string) error {
			mu.Lock()
			calls[accel]++
			mu.Unlock()
			if d, ok := ctx.Deadline(); !ok || time.Until(d) > AccelProbeTimeout {
				t.Errorf("%s: probe without the probe deadline", tt.name)
			}
			if accel == "tcg" {
				return nil
			}
			return tt.probeErr
		}
		for i := 0; i < 3; i++ {
			a, err := ChooseAccel(ctx, "auto", cache, probe)
			if err != nil || a != tt.want {
				t.Fatalf("%s: call %d: %q, %v; want %s", tt.name, i, a, err, tt.want)
			}
		}
		if calls["kvm"] != 1 || calls["tcg"] > 1 {
			t.Errorf("%s: probes %v for 3 calls, want one of KVM and at most one of TCG", tt.name, calls)
		}
		b, err := os.ReadFile(cache)
		if err != nil {
			t.Fatal(err)
		}
		var c accelCache
		if err := json.Unmarshal(b, &c); err != nil || len(c.Verdicts) != 1 {
			t.Fatalf("%s: cache %s: %v", tt.name, b, err)
		}
		v := c.Verdicts[0]
		kernel, _ := kernelRelease()
		qi, _ := InspectQEMU(ctx, "")
		if v.Kernel != kernel || v.QEMU != qi.Version || v.Accel != tt.want || v.Checked.IsZero() {
			t.Errorf("%s: verdict %+v", tt.name, v)
		}
		if tt.probeErr != nil && !strings.Contains(v.Reason, "deadline") {
			t.Errorf("%s: reason %q does not say why", tt.name, v.Reason)
		}
	}
}

func TestChooseAccelCacheKeyedByHost(t *testing.T) {
	t.Parallel()
	if err := CheckKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	ctx := testContext(t, time.Minute)
	cache := filepath.Join(t.TempDir(), "accel.json")
	// A verdict for another kernel does not apply here, and survives.
	other := accelCache{Verdicts: []AccelVerdict{{Kernel: "0.0.0-other", QEMU: "1.0.0", Accel: "kvm"}}}
	if err := writeAccelCache(cache, &other); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	a, err := ChooseAccel(ctx, "auto", cache, func(context.Context, string) error {
		calls.Add(1)
		return errors.New("no")
	})
	if err != nil || a != "tcg" || calls.Load() != 2 {
		t.Fatalf("ChooseAccel: %q, %v, %d probes", a, err, calls.Load())
	}
	c, err := readAccelCache(cache)
	if err != nil || len(c.Verdicts) != 2 || c.Verdicts[0].Kernel != "0.0.0-other" {
		t.Errorf("cache after probing: %+v, %v", c, err)
	}

	// A damaged cache costs a probe, not a failure.
	os.WriteFile(cache, []byte("{not json"), 0o644)
	if a, err := ChooseAccel(ctx, "auto", cache, func(context.Context, string) error { return nil }); err != nil || a != "kvm" {
		t.Errorf("with a damaged cache: %q, %v", a, err)
	}
}

// TestChooseAccelRace checks the race between the KVM probe and the TCG
// one that sets its pace, with stand-in probes that take the given times
// (a KVM probe that never ends runs into the probe deadline).
func TestChooseAccelRace(t *testing.T) {
	if err := CheckKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	defer func(g time.Duration) { kvmGraceMin = g }(kvmGraceMin)
	kvmGraceMin = 200 * time.Millisecond
	const never = time.Hour
	tests := []struct {
		name     string
		kvm, tcg time.Duration
		tcgFails bool
		want     string
		within   time.Duration // the verdict comes this soon
	}{
		{"kvm first", 100 * time.Millisecond, 2 * time.Second, false, "kvm", time.Second},
		{"kvm a little after tcg", 400 * time.Millisecond, 300 * time.Millisecond, false, "kvm", time.Second},
		{"kvm hangs", never, 300 * time.Millisecond, false, "tcg", 2 * time.Second},
		{"kvm far slower than tcg", 3 * time.Second, 500 * time.Millisecond, false, "tcg", 2 * time.Second},
		{"tcg cannot boot either, kvm works", time.Second, 100 * time.Millisecond, true, "kvm", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			cache := filepath.Join(t.TempDir(), "accel.json")
			var running atomic.Int32
			probe := func(ctx context.Context, accel string) error {
				running.Add(1)
				defer running.Add(-1)
				d := map[string]time.Duration{"kvm": tt.kvm, "tcg": tt.tcg}[accel]
				select {
				case <-time.After(d):
					if accel == "tcg" && tt.tcgFails {
						return errors.New("tcg failed")
					}
					return nil
				case <-ctx.Done():
					return fmt.Errorf("wait for ready marker: %w", ctx.Err())
				}
			}
			start := time.Now()
			a, err := ChooseAccel(ctx, "auto", cache, probe)
			took := time.Since(start)
			if err != nil || a != tt.want {
				t.Fatalf("ChooseAccel: %q, %v; want %s", a, err, tt.want)
			}
			if took > tt.within {
				t.Errorf("the verdict took %v, want under %v", took, tt.within)
			}
			if n := running.Load(); n != 0 {
				t.Errorf("%d probes still running after the verdict", n)
			}
		})
	}
}

func TestChooseAccelInterrupted(t *testing.T) {
	t.Parallel()
	if err := CheckKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	ctx, cancel := context.WithCancel(testContext(t, time.Minute))
	cache := filepath.Join(t.TempDir(), "accel.json")
	_, err := ChooseAccel(ctx, "auto", cache, func(pctx context.Context, _ string) error {
		cancel()
		<-pctx.Done()
		return pctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted probe: %v", err)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("an interrupted probe left a verdict: %v", err)
	}
}
