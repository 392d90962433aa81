package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	a, err := ChooseAccel(ctx, "kvm", cache, noProbe)
	if kvmErr := checkKVM(); kvmErr == nil {
		if a != "kvm" || err != nil {
			t.Errorf("kvm with /dev/kvm: %q, %v", a, err)
		}
	} else if err == nil || !strings.Contains(err.Error(), "/dev/kvm") {
		t.Errorf("kvm without /dev/kvm: %q, %v", a, err)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("explicit choices wrote the cache: %v", err)
	}
}

// TestChooseAccelCache checks the verdict cache with stand-in probes; the
// real probe is exercised by TestChooseAccelAutoOnThisHost.
func TestChooseAccelCache(t *testing.T) {
	t.Parallel()
	if err := checkKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	ctx := testContext(t, time.Minute)
	tests := []struct {
		name     string
		probeErr error
		want     string
	}{
		{"kvm works", nil, "kvm"},
		{"kvm hangs", errors.New("wait for ready marker: context deadline exceeded"), "tcg"},
	}
	for _, tt := range tests {
		cache := filepath.Join(t.TempDir(), "sub", "accel.json")
		calls := 0
		probe := func(ctx context.Context, accel string) error {
			calls++
			if accel != "kvm" {
				t.Errorf("%s: probe for %q", tt.name, accel)
			}
			if d, ok := ctx.Deadline(); !ok || time.Until(d) > AccelProbeTimeout {
				t.Errorf("%s: probe without the probe deadline", tt.name)
			}
			return tt.probeErr
		}
		for i := 0; i < 3; i++ {
			a, err := ChooseAccel(ctx, "auto", cache, probe)
			if err != nil || a != tt.want {
				t.Fatalf("%s: call %d: %q, %v; want %s", tt.name, i, a, err, tt.want)
			}
		}
		if calls != 1 {
			t.Errorf("%s: %d probes for 3 calls, want 1", tt.name, calls)
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
	if err := checkKVM(); err != nil {
		t.Skipf("auto never probes without KVM: %v", err)
	}
	ctx := testContext(t, time.Minute)
	cache := filepath.Join(t.TempDir(), "accel.json")
	// A verdict for another kernel does not apply here, and survives.
	other := accelCache{Verdicts: []AccelVerdict{{Kernel: "0.0.0-other", QEMU: "1.0.0", Accel: "kvm"}}}
	if err := writeAccelCache(cache, &other); err != nil {
		t.Fatal(err)
	}
	calls := 0
	a, err := ChooseAccel(ctx, "auto", cache, func(context.Context, string) error {
		calls++
		return errors.New("no")
	})
	if err != nil || a != "tcg" || calls != 1 {
		t.Fatalf("ChooseAccel: %q, %v, %d probes", a, err, calls)
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

func TestChooseAccelInterrupted(t *testing.T) {
	t.Parallel()
	if err := checkKVM(); err != nil {
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
