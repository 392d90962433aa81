package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sbuml/sbuml/internal/atomicfile"
)

// AccelProbeTimeout bounds a KVM probe in ChooseAccel. A guest that has not
// reached its ready marker by then counts as not running under KVM.
const AccelProbeTimeout = 25 * time.Second

// kvmGraceMin is the least time a KVM probe is given after the same guest
// got up under TCG (see ChooseAccel). A variable so tests can shorten it.
var kvmGraceMin = 5 * time.Second

// ProbeFunc boots a real guest with the given accelerator and returns nil
// once it is known to run, or an error. BootProbe makes one.
type ProbeFunc func(ctx context.Context, accel string) error

// AccelVerdict is a cached answer to "does KVM run guests on this host?".
type AccelVerdict struct {
	Kernel  string    `json:"kernel"`        // host kernel release
	QEMU    string    `json:"qemu"`          // QEMU version
	Accel   string    `json:"accel"`         // "kvm" or "tcg"
	Reason  string    `json:"reason"`        // why not kvm, if tcg
	Checked time.Time `json:"checked"`       // when the probe ran
	Seconds float64   `json:"probe_seconds"` // how long it took
}

type accelCache struct {
	Verdicts []AccelVerdict `json:"verdicts"`
}

// ChooseAccel resolves the accelerator a machine should use. want is
// "kvm", "tcg" or "auto" (empty means auto).
//
// For auto, the existence of /dev/kvm proves nothing: some hosts offer a
// /dev/kvm that hangs ordinary guests. So the first time on a host, probe
// boots a real guest under KVM with a deadline of AccelProbeTimeout; KVM is
// chosen only if the guest gets up. Meanwhile the same guest boots under
// TCG: a working KVM is faster, so once the TCG guest is up, the KVM one
// gets as long again (at least kvmGraceMin) before it counts as hanging,
// which brings the verdict on such a host from AccelProbeTimeout down to
// about two TCG boots. A KVM slower than TCG is not worth choosing either.
// The verdict is cached in the JSON file at cachePath, keyed by host
// kernel release and QEMU version, so later calls answer at once.
// Anything short of a working KVM means TCG.
//
// For kvm, the same verdict is needed (probed once if there is none yet):
// a KVM that the probe found hanging or failing is refused with its
// reason, rather than giving a machine that reports running while its
// vCPUs are stuck in an internal error.
func ChooseAccel(ctx context.Context, want, cachePath string, probe ProbeFunc) (string, error) {
	switch want {
	case "tcg":
		return "tcg", nil
	case "kvm", "auto", "":
	default:
		return "", fmt.Errorf("unknown accelerator %q: want kvm, tcg or auto", want)
	}
	if err := CheckKVM(); err != nil {
		if want == "kvm" {
			return "", err
		}
		return "tcg", nil
	}
	v, err := accelVerdict(ctx, cachePath, probe)
	if err != nil {
		return "", err
	}
	if want == "kvm" && v.Accel != "kvm" {
		return "", fmt.Errorf("KVM does not run guests on this host: the probe of %s found %s; use --accel tcg or auto (or delete %s to probe again)",
			v.Checked.Local().Format("2006-01-02 15:04"), v.Reason, cachePath)
	}
	return v.Accel, nil
}

// accelVerdict returns this host's verdict on KVM, from the cache, or by
// probing once and caching the result.
func accelVerdict(ctx context.Context, cachePath string, probe ProbeFunc) (AccelVerdict, error) {
	host, err := thisHost(ctx, true)
	if err != nil {
		return AccelVerdict{}, err
	}
	cache, err := readAccelCache(cachePath)
	if err != nil {
		return AccelVerdict{}, err
	}
	if v := cache.find(host); v != nil {
		return *v, nil
	}

	start := time.Now()
	perr := raceProbes(ctx, probe)
	if perr != nil && ctx.Err() != nil {
		return AccelVerdict{}, fmt.Errorf("choose accelerator: %w", ctx.Err()) // interrupted: no verdict
	}
	v := AccelVerdict{Kernel: host.Kernel, QEMU: host.QEMU, Accel: "kvm", Checked: time.Now().UTC(),
		Seconds: time.Since(start).Seconds()}
	if perr != nil {
		v.Accel = "tcg"
		v.Reason = perr.Error()
	}
	var keep []AccelVerdict
	for _, o := range cache.Verdicts {
		if o.Kernel != host.Kernel || o.QEMU != host.QEMU {
			keep = append(keep, o)
		}
	}
	cache.Verdicts = append(keep, v)
	if err := writeAccelCache(cachePath, cache); err != nil {
		return AccelVerdict{}, err
	}
	return v, nil
}

// CachedAccel returns the verdict ChooseAccel cached in cachePath for this
// host's kernel and QEMU, or nil if it has not probed them yet. It probes
// nothing and writes nothing.
func CachedAccel(ctx context.Context, cachePath string) (*AccelVerdict, error) {
	host, err := thisHost(ctx, false)
	if err != nil {
		return nil, err
	}
	cache, err := readAccelCache(cachePath)
	if err != nil {
		return nil, err
	}
	return cache.find(host), nil
}

// thisHost returns what a verdict is kept for: this host's kernel release
// and QEMU version (the other fields empty). It writes QEMU's cache file
// (see InspectQEMU) only if remember is set.
func thisHost(ctx context.Context, remember bool) (AccelVerdict, error) {
	qi, err := inspectQEMU(ctx, "", remember)
	if err != nil {
		return AccelVerdict{}, err
	}
	kernel, err := kernelRelease()
	if err != nil {
		return AccelVerdict{}, fmt.Errorf("choose accelerator: %w", err)
	}
	return AccelVerdict{Kernel: kernel, QEMU: qi.Version}, nil
}

// find returns the verdict kept for host's kernel and QEMU, or nil.
func (c *accelCache) find(host AccelVerdict) *AccelVerdict {
	for _, v := range c.Verdicts {
		if v.Kernel == host.Kernel && v.QEMU == host.QEMU {
			return &v
		}
	}
	return nil
}

// raceProbes probes KVM, with TCG alongside as the pace to beat (see
// ChooseAccel), and returns nil if KVM works. Both probes have ended when
// it returns.
func raceProbes(ctx context.Context, probe ProbeFunc) error {
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, AccelProbeTimeout)
	defer cancel()
	kvm, tcg := make(chan error, 1), make(chan error, 1)
	go func() { kvm <- probe(pctx, "kvm") }()
	go func() { tcg <- probe(pctx, "tcg") }()
	defer func() {
		cancel()
		<-tcg // the TCG guest is halted
	}()
	select {
	case err := <-kvm:
		return err
	case err := <-tcg:
		tcg <- err // for the deferred receive
		if err != nil {
			// TCG cannot boot the guest either: no pace to compare
			// with, so KVM has until the deadline.
			return <-kvm
		}
	}
	tcgTook := time.Since(start)
	grace := max(tcgTook, kvmGraceMin)
	select {
	case err := <-kvm:
		return err
	case <-time.After(grace):
		cancel()
		<-kvm
		return fmt.Errorf("the guest was not up under KVM %v after it was under TCG (in %v)", grace.Round(time.Second), tcgTook.Round(100*time.Millisecond))
	}
}

// BootProbe returns a ProbeFunc that boots a throwaway machine from cfg
// (kernel, initrd, cmdline, disks) under the accelerator asked for, waits
// for marker on its console, and halts it. Disks are attached with
// snapshot=on, so the probe never writes to them.
func BootProbe(cfg Config, marker string) ProbeFunc {
	return func(ctx context.Context, accel string) error {
		dir, err := os.MkdirTemp("", "sbuml-probe-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c := cfg
		c.Name = "probe-" + accel
		c.Accel = accel
		c.RAMFile, c.RAMDir = "", ""
		c.Boot.Incoming = false
		c.Boot.Snapshot = true
		m, err := Boot(ctx, dir, c)
		if err != nil {
			return err
		}
		defer func() {
			m.Halt(context.Background())
			m.Close()
		}()
		return m.WaitConsole(ctx, marker)
	}
}

// CheckKVM reports whether /dev/kvm can be opened for use; that alone
// does not prove KVM runs guests (see ChooseAccel).
func CheckKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("kvm unavailable: %w", err)
	}
	f.Close()
	return nil
}

func kernelRelease() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b), nil
}

func readAccelCache(path string) (*accelCache, error) {
	var c accelCache
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read accelerator cache: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		// A damaged cache costs one probe, not a failure.
		return &accelCache{}, nil
	}
	return &c, nil
}

func writeAccelCache(path string, c *accelCache) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write accelerator cache: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write accelerator cache %s: %w", path, err)
	}
	return nil
}
