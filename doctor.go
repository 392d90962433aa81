package sbuml

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sbuml/sbuml/image"
	iunits "github.com/sbuml/sbuml/internal/units"
	"github.com/sbuml/sbuml/scrapbook"
	"github.com/sbuml/sbuml/vmm"
)

// DoctorCheck is one line of Doctor's report.
type DoctorCheck struct {
	Check string `json:"check"`
	// Status is "ok", "warn" (works, but not as well as it could) or
	// "fail" (a command will fail).
	Status string `json:"status"`
	// OK is false only for a failed check.
	OK   bool   `json:"ok"`
	Info string `json:"info"`
	Fix  string `json:"fix,omitempty"`
}

// The values of DoctorCheck.Status.
const (
	CheckOK     = "ok"
	CheckWarn   = "warn"
	CheckFailed = "fail"
)

func checkOK(check, info string) DoctorCheck {
	return DoctorCheck{Check: check, Status: CheckOK, OK: true, Info: info}
}

func checkWarn(check, info, fix string) DoctorCheck {
	return DoctorCheck{Check: check, Status: CheckWarn, OK: true, Info: info, Fix: fix}
}

func checkFail(check, info, fix string) DoctorCheck {
	return DoctorCheck{Check: check, Status: CheckFailed, Info: info, Fix: fix}
}

// Doctor checks what the commands need, on this host and in the
// scrapbook in dir: QEMU and the accelerator (it warns when machines run
// under TCG, and says why KVM was refused), tmpfs for guest RAM, the
// programs that image builds, imports and exports run, whether commits
// can use a dirty-page log, the agent that
// images carry, and the scrapbook: there, readable, writable, with free
// space, and its default image. Each problem comes with its fix. Doctor
// creates nothing: it probes no accelerator and makes no scrapbook.
func Doctor(ctx context.Context, dir string) []DoctorCheck {
	var checks []DoctorCheck
	qemu := doctorQEMU(ctx)
	checks = append(checks, qemu)
	if qemu.OK {
		checks = append(checks, doctorAccel(ctx))
	}
	checks = append(checks, doctorTmpfs(), doctorDirtyLog(), doctorAgent())
	checks = append(checks, doctorTools()...)
	return append(checks, doctorScrapbook(ctx, dir)...)
}

func doctorQEMU(ctx context.Context) DoctorCheck {
	qi, err := vmm.AskQEMU(ctx, "") // InspectQEMU would write its cache file
	if err != nil {
		return checkFail("qemu", err.Error(), "apt-get install qemu-system-x86")
	}
	return checkOK("qemu", fmt.Sprintf("%s %s, machine type %s", qi.Path, qi.Version, qi.Q35()))
}

// doctorAccel says which accelerator machines get: KVM only where
// /dev/kvm opens and a probe boot (made by the first boot, cached per
// host kernel and QEMU) found it runs guests.
func doctorAccel(ctx context.Context) DoctorCheck {
	if err := vmm.CheckKVM(); err != nil {
		return checkWarn("accel", "machines run under TCG, which is slower than KVM: "+err.Error(),
			"load the kvm module and give this user /dev/kvm (the kvm group), where the host has hardware virtualization")
	}
	v, err := vmm.CachedAccel(ctx, AccelCachePath())
	switch {
	case err != nil:
		return checkWarn("accel", "cannot read the accelerator verdict: "+err.Error(), "")
	case v == nil:
		return checkOK("accel", "/dev/kvm opens; the first boot probes whether KVM runs guests here (once per host)")
	case v.Accel == "tcg":
		return checkWarn("accel", "machines run under TCG: KVM was refused when probed on "+v.Checked.Format("2006-01-02")+": "+v.Reason,
			"if KVM works now, remove "+AccelCachePath()+" to probe again, or boot with --accel kvm")
	}
	return checkOK("accel", "kvm (probed on "+v.Checked.Format("2006-01-02")+", cached in "+AccelCachePath()+")")
}

func doctorTmpfs() DoctorCheck {
	root := filepath.Dir(vmm.DefaultRAMRoot)
	free, err := freeBytes(root)
	switch {
	case err != nil:
		return checkFail("tmpfs", err.Error(), "mount a tmpfs on "+root+", or boot with --ram-in-dir")
	case free < 1<<30:
		return checkWarn("tmpfs", fmt.Sprintf("%s has %s free for guest RAM", root, iunits.Bytes(free)),
			"free space on "+root+" (halt machines), or boot with --ram-in-dir")
	}
	return checkOK("tmpfs", fmt.Sprintf("%s has %s free for guest RAM", root, iunits.Bytes(free)))
}

// doctorDirtyLog says whether commits can compare only the RAM pages a
// machine wrote (vmm.DirtyLog), or all of its RAM while it is frozen.
func doctorDirtyLog() DoctorCheck {
	if err := vmm.CheckDirtyLog(); err != nil {
		return checkWarn("dirty-log", "commits compare all of a machine's RAM while it is frozen, so their downtime grows with its memory: "+err.Error(),
			"run sbuml as root (or with kernel.yama.ptrace_scope at 0), on Linux 6.9 or later on amd64")
	}
	return checkOK("dirty-log", "commits compare only the RAM pages a machine wrote since its last snapshot")
}

// doctorAgent looks for the agent (sbuml-guest) that images carry.
func doctorAgent() DoctorCheck {
	p, err := GuestAgentPath()
	if err != nil {
		return checkWarn("agent", err.Error(), "make build (it puts sbuml-guest next to sbuml)")
	}
	return checkOK("agent", p)
}

// doctorTools checks the programs image builds, imports and exports run,
// one line for those present and one per package to install.
func doctorTools() []DoctorCheck {
	missing := map[string][]string{} // package -> programs
	var pkgs []string
	for _, t := range image.Tools {
		if _, err := exec.LookPath(t.Name); err != nil {
			if missing[t.Package] == nil {
				pkgs = append(pkgs, t.Package)
			}
			missing[t.Package] = append(missing[t.Package], t.Name+" ("+t.For+")")
		}
	}
	if len(pkgs) == 0 {
		return []DoctorCheck{checkOK("tools", fmt.Sprintf("the %d programs image builds, imports and exports run are installed", len(image.Tools)))}
	}
	var checks []DoctorCheck
	for _, pkg := range pkgs {
		checks = append(checks, checkFail("tools", "missing: "+strings.Join(missing[pkg], ", "), "apt-get install "+pkg))
	}
	return checks
}

// doctorScrapbook checks the scrapbook in dir, without making one.
func doctorScrapbook(ctx context.Context, dir string) []DoctorCheck {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return []DoctorCheck{checkFail("scrapbook", err.Error(), "")}
	}
	s, err := Open(abs)
	if errors.Is(err, ErrNotScrapbook) {
		return []DoctorCheck{checkFail("scrapbook", "no scrapbook at "+abs, "sbuml init "+abs)}
	}
	if err != nil {
		return []DoctorCheck{checkFail("scrapbook", err.Error(), "")}
	}
	defer s.Close()
	checks := []DoctorCheck{checkOK("scrapbook", abs)}
	if err := unix.Access(filepath.Join(abs, scrapbook.ObjectsDir), unix.W_OK); err != nil {
		checks = append(checks, checkFail("writable", fmt.Sprintf("cannot write %s: %v", filepath.Join(abs, scrapbook.ObjectsDir), err), "run sbuml as the scrapbook's owner, or fix its permissions"))
	} else {
		checks = append(checks, checkOK("writable", abs))
	}
	checks = append(checks, doctorSpace(abs), s.doctorImage(ctx))
	if c, ok := s.doctorSpares(); ok {
		checks = append(checks, c)
	}
	return checks
}

// doctorSpares counts the scrapbook's spares, if it has any: each holds
// a QEMU and its RAM until claimed. Dead ones are only litter.
func (s *Scrapbook) doctorSpares() (DoctorCheck, bool) {
	infos, err := s.Spares()
	if err != nil {
		return checkWarn("spares", err.Error(), ""), true
	}
	if len(infos) == 0 {
		return DoctorCheck{}, false
	}
	dead := 0
	for _, in := range infos {
		if !in.Alive {
			dead++
		}
	}
	info := fmt.Sprintf("%d spare QEMU(s) waiting for checkouts (sbuml spare --list)", len(infos)-dead)
	if dead > 0 {
		return checkWarn("spares", fmt.Sprintf("%s, %d dead", info, dead), "sbuml spare --stop --all"), true
	}
	return checkOK("spares", info), true
}

// doctorSpace checks the free space beside the scrapbook: commits and
// imports store there, and gc needs room to copy what it keeps.
func doctorSpace(dir string) DoctorCheck {
	free, err := freeBytes(dir)
	switch {
	case err != nil:
		return checkFail("space", err.Error(), "")
	case free < 256<<20:
		return checkFail("space", fmt.Sprintf("%s free in %s", iunits.Bytes(free), dir), "free space there (sbuml gc frees what no snapshot needs)")
	case free < 2<<30:
		return checkWarn("space", fmt.Sprintf("only %s free in %s: a commit stores up to a machine's RAM and disks", iunits.Bytes(free), dir), "free space there (sbuml gc frees what no snapshot needs)")
	}
	return checkOK("space", fmt.Sprintf("%s free in %s", iunits.Bytes(free), dir))
}

func (s *Scrapbook) doctorImage(ctx context.Context) DoctorCheck {
	imgs, err := s.Images(ctx)
	if err != nil {
		return checkFail("image", err.Error(), "sbuml fsck")
	}
	for _, img := range imgs {
		if img.Name == DefaultImage {
			return checkOK("image", fmt.Sprintf("%s %s, kernel %s", img.Name, img.ID.Short(), img.KernelVersion))
		}
	}
	return checkWarn("image", "default image "+DefaultImage+" not built yet", "sbuml image build (or just sbuml boot: it builds on first use)")
}

// freeBytes is the space available to this user on the file system
// holding path.
func freeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}
