package vmm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/internal/testimage"
)

// guestConfig is a machine running the test image: a real Linux guest
// that prints img.ReadyMarker and gives a shell on the serial console.
func guestConfig(t testing.TB) (Config, *image.Image) {
	t.Helper()
	img := testimage.Get(t)
	return Config{
		Memory:  256 << 20,
		Accel:   "tcg",
		Kernel:  img.Kernel,
		Initrd:  img.Initrd,
		Cmdline: img.Cmdline,
		Disks:   []string{img.Disk},
	}, img
}

// bootGuest boots the test image and waits until its shell is ready.
func bootGuest(t testing.TB) (*Machine, *image.Image) {
	t.Helper()
	cfg, img := guestConfig(t)
	m := bootTest(t, cfg)
	ctx := testContext(t, 2*time.Minute)
	if err := m.WaitConsole(ctx, img.ReadyMarker); err != nil {
		t.Fatal(err)
	}
	return m, img
}

func TestGuestConsole(t *testing.T) {
	t.Parallel()
	m, _ := bootGuest(t)
	ctx := testContext(t, time.Minute)

	if err := m.SendLine(ctx, "echo sum-$((6*7))"); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitConsole(ctx, "sum-42"); err != nil {
		t.Fatal(err)
	}

	// Attach: typed input reaches the guest, its output comes back, and
	// the escape sequence detaches.
	inR, inW := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- m.Attach(ctx, inR, out) }()
	fmt.Fprintf(inW, "echo attached-$((40+2))\n")
	for !strings.Contains(out.String(), "attached-42") {
		select {
		case err := <-done:
			t.Fatalf("Attach returned early: %v; output %q", err, out.String())
		case <-ctx.Done():
			t.Fatalf("no echo through Attach; output %q", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	inW.Write([]byte{EscapeChar, 'q'})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Attach after Ctrl-] q: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Ctrl-] q did not detach")
	}
	// The console still works after detaching.
	off, err := m.WaitConsoleAfter(ctx, 0, "attached-42")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendLine(ctx, "echo after-$((1+1))"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitConsoleAfter(ctx, off, "after-2"); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var tickRE = regexp.MustCompile(`tick-(\d+)\r?\n`)

// ticks returns the complete tick lines in a console log.
func ticks(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n []int
	for _, m := range tickRE.FindAllSubmatch(b, -1) {
		v, _ := strconv.Atoi(string(m[1]))
		n = append(n, v)
	}
	return n
}

// TestGuestSurvivesSaveAndRestore saves a guest running a counter, halts
// it, restores it in a new machine from the RAM copy and the device state,
// and checks that the counter carries on from where it was.
func TestGuestSurvivesSaveAndRestore(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 2*time.Minute)
	state, saved, cfg, last := savedCounter(t, ctx)
	// The saved RAM in place of the empty RAM file savedCounter made.
	if err := os.Remove(cfg.RAMFile); err != nil {
		t.Fatal(err)
	}
	if err := CloneFile(cfg.RAMFile, saved); err != nil {
		t.Fatal(err)
	}
	dst, err := Boot(ctx, filepath.Join(t.TempDir(), "restored"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, dst)
	if err := dst.LoadDeviceState(ctx, bytes.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	if err := dst.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	after := requireCountsOn(t, ctx, dst, last)
	t.Logf("counter: %d before save, %v after restore; device state %d bytes", last, after[:3], len(state))
}

// requireCountsOn waits for the counter of savedCounter to count five
// more in the restored machine dst, and checks that it carried on from
// last: the first tick printed after the restore follows the last one
// printed before the save (or finishes a line cut by the freeze), and
// none is skipped. It returns the ticks printed after the restore.
func requireCountsOn(t *testing.T, ctx context.Context, dst *Machine, last int) []int {
	t.Helper()
	if err := dst.WaitConsole(ctx, fmt.Sprintf("tick-%d\r", last+5)); err != nil {
		t.Fatal(err)
	}
	after := ticks(t, dst.ConsoleLog())
	if first := after[0]; first != last+1 && first != last {
		t.Fatalf("counter went from %d before the save to %d after the restore (%v)", last, first, after)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Fatalf("counter skipped after restore: %v", after)
		}
	}
	return after
}

// TestGuestPowerOff lets the guest power itself off: QEMU exits without
// Halt, which Status reports as crashed, with the console's last words.
func TestGuestPowerOff(t *testing.T) {
	t.Parallel()
	m, _ := bootGuest(t)
	ctx := testContext(t, time.Minute)
	pid := m.PID()
	if err := m.SendLine(ctx, "echo going-down; poweroff -f"); err != nil {
		t.Fatal(err)
	}
	if !m.waitExit(pid, 30*time.Second) {
		t.Fatal("qemu still running after guest poweroff")
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateStopped || !strings.Contains(st.Detail, "going-down") || !strings.Contains(st.Detail, "powered off") {
		t.Errorf("after guest poweroff: %+v", st)
	}
	if err := m.WaitConsole(ctx, "never printed"); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("WaitConsole on a stopped machine: %v", err)
	}
}

func TestBootProbe(t *testing.T) {
	t.Parallel()
	cfg, img := guestConfig(t)
	ctx := testContext(t, 2*time.Minute)
	probe := BootProbe(cfg, img.ReadyMarker)
	if err := probe(ctx, "tcg"); err != nil {
		t.Fatalf("probe under TCG: %v", err)
	}
	// A marker the guest never prints fails the probe at the deadline.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := BootProbe(cfg, "NEVER-PRINTED")(short, "tcg"); err == nil {
		t.Fatal("probe waiting for a marker that never comes succeeded")
	}
	// The probe left no machine and did not write to the image's disk.
	if matches, _ := filepath.Glob(filepath.Join(DefaultRAMRoot, "probe-tcg-*")); len(matches) != 0 {
		t.Errorf("probe left RAM directories: %v", matches)
	}
}

// TestChooseAccelAutoOnThisHost runs the real KVM probe once, checks that
// the verdict is cached, and that the next call does not probe again.
// On a host whose /dev/kvm hangs guests this takes AccelProbeTimeout.
func TestChooseAccelAutoOnThisHost(t *testing.T) {
	t.Parallel()
	cfg, img := guestConfig(t)
	ctx := testContext(t, 2*time.Minute)
	cache := filepath.Join(t.TempDir(), "accel.json")
	var (
		mu       sync.Mutex
		probeErr error // of the KVM probe
		probes   int   // of KVM
	)
	probe := func(ctx context.Context, accel string) error {
		start := time.Now()
		err := BootProbe(cfg, img.ReadyMarker)(ctx, accel)
		t.Logf("probe %s: %v after %v", accel, err, time.Since(start).Round(time.Millisecond))
		if accel == "kvm" {
			mu.Lock()
			probes++
			probeErr = err
			mu.Unlock()
		}
		return err
	}
	start := time.Now()
	accel, err := ChooseAccel(ctx, "auto", cache, probe)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > AccelProbeTimeout+30*time.Second {
		t.Errorf("ChooseAccel took %v", took)
	}
	if CheckKVM() == nil {
		if want := map[bool]string{true: "kvm", false: "tcg"}[probeErr == nil]; accel != want || probes != 1 {
			t.Errorf("accel %s after %d probes (probe error %v), want %s", accel, probes, probeErr, want)
		}
	} else if accel != "tcg" || probes != 0 {
		t.Errorf("without /dev/kvm: accel %s after %d probes", accel, probes)
	}
	again, err := ChooseAccel(ctx, "auto", cache, probe)
	if err != nil || again != accel || probes > 1 {
		t.Errorf("second ChooseAccel: %s, %v after %d probes; want the cached %s", again, err, probes, accel)
	}
}

// hardwareVariants are the optional devices benchmarks compare: none,
// a network card, a network card and a display.
var hardwareVariants = []struct {
	name string
	net  bool
	vnc  bool
}{{"plain", false, false}, {"net", true, false}, {"net+vnc", true, true}}

// variantConfig is the test guest with the devices of a variant.
func variantConfig(b *testing.B, net, vnc bool) (Config, *image.Image) {
	cfg, img := guestConfig(b)
	if net {
		cfg.Net = &Net{Mode: NetUser, Forwards: []Forward{{GuestPort: 80}}}
	}
	if vnc {
		cfg.Display = DisplayVNC
	}
	return cfg, img
}

// BenchmarkBootToReady measures booting the test image under TCG until
// its shell is ready, and halting it, with and without a network card
// and a display.
func BenchmarkBootToReady(b *testing.B) {
	for _, v := range hardwareVariants {
		b.Run(v.name, func(b *testing.B) {
			cfg, img := variantConfig(b, v.net, v.vnc)
			ctx := testContext(b, 10*time.Minute)
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(b.TempDir(), "m")
				m, err := Boot(ctx, dir, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := m.WaitConsole(ctx, img.ReadyMarker); err != nil {
					m.Halt(ctx)
					m.Close()
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Halt(ctx); err != nil {
					b.Fatal(err)
				}
				m.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSaveDeviceState measures freezing a booted guest, saving its
// device state and continuing it: the pause a commit imposes on a running
// machine, apart from copying RAM and disks. The state grows with the
// devices: a display adds its video memory.
func BenchmarkSaveDeviceState(b *testing.B) {
	for _, v := range hardwareVariants {
		b.Run(v.name, func(b *testing.B) {
			cfg, img := variantConfig(b, v.net, v.vnc)
			m := bootTest(b, cfg)
			ctx := testContext(b, 10*time.Minute)
			if err := m.WaitConsole(ctx, img.ReadyMarker); err != nil {
				b.Fatal(err)
			}
			var size int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.Freeze(ctx); err != nil {
					b.Fatal(err)
				}
				var buf bytes.Buffer
				if err := m.SaveDeviceState(ctx, &buf); err != nil {
					b.Fatal(err)
				}
				if err := m.Continue(ctx); err != nil {
					b.Fatal(err)
				}
				size = buf.Len()
			}
			b.ReportMetric(float64(size), "state-bytes")
		})
	}
}

// BenchmarkFrozenWindow compares, on one idle 512 MiB test guest, the
// frozen window of a save done all at once (Freeze, SaveDeviceState,
// Continue) with a commit's (PrepareDeviceStateSave while the guest
// runs, then FreezeAt, Save, Resume), alternating the two. It reports
// the medians of how long QEMU had the vCPUs stopped, by its STOP and
// RESUME events.
func BenchmarkFrozenWindow(b *testing.B) {
	cfg, img := guestConfig(b)
	cfg.Memory = 512 << 20
	m := bootTest(b, cfg)
	ctx := testContext(b, 10*time.Minute)
	if err := m.WaitConsole(ctx, img.ReadyMarker); err != nil {
		b.Fatal(err)
	}
	var whole, prepared []time.Duration
	for i := 0; i < b.N; i++ {
		d, err := wholeWindow(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		whole = append(whole, d)
		if d, err = preparedWindow(ctx, m); err != nil {
			b.Fatal(err)
		}
		prepared = append(prepared, d)
	}
	b.ReportMetric(float64(median(whole))/1e6, "whole-ms")
	b.ReportMetric(float64(median(prepared))/1e6, "prepared-ms")
}

// wholeWindow freezes m, saves its device state and continues it, and
// returns how long QEMU had its vCPUs stopped.
func wholeWindow(ctx context.Context, m *Machine) (time.Duration, error) {
	q, err := m.QMP(ctx)
	if err != nil {
		return 0, err
	}
	events := q.Subscribe("STOP", "RESUME")
	defer events.Close()
	if err := m.Freeze(ctx); err != nil {
		return 0, err
	}
	if err := m.SaveDeviceState(ctx, io.Discard); err != nil {
		return 0, err
	}
	if err := m.Continue(ctx); err != nil {
		return 0, err
	}
	stop, err := events.Wait(ctx, "STOP")
	if err != nil {
		return 0, err
	}
	resume, err := events.Wait(ctx, "RESUME")
	return resume.Time.Sub(stop.Time), err
}

// preparedWindow is wholeWindow the way a commit does it.
func preparedWindow(ctx context.Context, m *Machine) (time.Duration, error) {
	sv, err := m.PrepareDeviceStateSave(ctx)
	if err != nil {
		return 0, err
	}
	defer sv.Close()
	stopped, err := m.FreezeAt(ctx)
	if err != nil {
		return 0, err
	}
	if err := sv.Save(ctx, io.Discard); err != nil {
		return 0, err
	}
	resumed, err := m.Resume(ctx)
	return resumed.Sub(stopped), err
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkRestore measures bringing a saved guest back: cloning its RAM
// file on tmpfs, booting QEMU with -incoming, loading the device state and
// continuing, up to the guest answering on its console.
func BenchmarkRestore(b *testing.B) {
	src, _ := bootGuest(b)
	ctx := testContext(b, 10*time.Minute)
	if err := src.Freeze(ctx); err != nil {
		b.Fatal(err)
	}
	var state bytes.Buffer
	if err := src.SaveDeviceState(ctx, &state); err != nil {
		b.Fatal(err)
	}
	cfg := src.Config()
	cfg.Name, cfg.RAMDir = "restored", ""
	cfg.Boot.Incoming = true
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ram, err := NewRAMFile("", "restored")
		if err != nil {
			b.Fatal(err)
		}
		if err := CloneFile(ram, src.RAMFile()); err != nil {
			b.Fatal(err)
		}
		cfg.RAMFile = ram
		m, err := Boot(ctx, filepath.Join(b.TempDir(), "m"), cfg)
		if err != nil {
			b.Fatal(err)
		}
		err = m.LoadDeviceState(ctx, bytes.NewReader(state.Bytes()))
		if err == nil {
			err = m.Continue(ctx)
		}
		if err == nil {
			err = m.SendLine(ctx, "echo back-$((2+3))")
		}
		if err == nil {
			err = m.WaitConsole(ctx, "back-5")
		}
		b.StopTimer()
		m.Halt(ctx)
		m.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
