package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(bootCmd(), haltCmd(), freezeCmd(), continueCmd(), psCmd(), consoleCmd(), doctorCmd(), imageCmd())
}

// sizeFlag parses sizes such as 512M, 1G, 1048576.
type sizeFlag int64

func (s *sizeFlag) String() string {
	if *s == 0 {
		return "0"
	}
	return humanBytes(int64(*s))
}
func (s *sizeFlag) Type() string { return "size" }
func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSuffix(strings.TrimSuffix(v, "B"), "i")
	if num != "" {
		switch num[len(num)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			num = num[:len(num)-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M, G or T suffix", v)
	}
	return n * mult, nil
}

// progressWriter shows progress lines on a terminal only.
func progressWriter() io.Writer {
	if isTerminal(os.Stderr) {
		return os.Stderr
	}
	return nil
}

func bootCmd() *cobra.Command {
	var opts sbuml.BootOptions
	var forwards []string
	var autosnap sbuml.AutosnapConfig
	var memory, disk sizeFlag
	var c *cobra.Command
	c = &cobra.Command{
		Use:   "boot NAME|DIR",
		Short: "Create a machine from a base image and start it",
		Long: `Create a machine from a base image and start it (SBUML's sbumlboot). A machine
is a name, kept under the scrapbook's machines/ directory, or a directory of
your choosing (any argument with a '/'). It is a plain directory: du -s shows
its resources. The default image is built from Debian packages on first use.
Returns once the guest's shell is ready.`,
		Example: `  sbuml boot m1
  sbuml boot web --base debian --memory 1G --forward 8080:80
  sbuml boot m2 --autosnap 1m --keep-last 10`,
		Args: cobra.ExactArgs(1),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (bootReport, error) {
			opts.Memory, opts.DiskSize = int64(memory), int64(disk)
			opts.Progress = progressWriter()
			var err error
			if opts.Forwards, err = parseForwards(forwards); err != nil {
				return bootReport{}, usageError{err}
			}
			if c.Flags().Changed("autosnap") {
				opts.Autosnap = &autosnap
			}
			start := time.Now()
			m, err := s.Boot(ctx, args[0], opts)
			if m != nil {
				m.Close()
			}
			if err != nil {
				return bootReport{}, err
			}
			cfg := m.Config()
			return bootReport{Name: cfg.Name, Dir: m.Dir(), Config: cfg, Ready: time.Since(start)}, nil
		}, func(r bootReport) {
			cfg := r.Config
			fmt.Printf("%s running: %s RAM, %d CPU%s, %s, ready in %.1fs\n", cfg.Name, humanBytes(cfg.Memory), cfg.CPUs, pluralS(cfg.CPUs), cfg.Accel, r.Ready.Seconds())
			printForwards(cfg.Name, cfg.Net)
		}),
	}
	c.Flags().StringVar(&opts.Net, "net", "", "network: user (a card on QEMU's user-mode network) or none (default: user if the image configures a card)")
	c.Flags().StringArrayVar(&forwards, "forward", nil, "forward a host TCP port to the guest, [HOSTADDR:]HOSTPORT:GUESTPORT (HOSTPORT 0: any free port; repeatable)")
	c.Flags().StringVar(&opts.Display, "display", "", "vnc: give the machine a screen that 'sbuml vnc' shows")
	c.Flags().DurationVar(&autosnap.Every, "autosnap", 0, "take automatic snapshots at this interval (see 'sbuml autosnap')")
	addKeepFlags(c.Flags(), &autosnap.Keep)
	addJSONFlag(c)
	c.Flags().StringVar(&opts.Base, "base", sbuml.DefaultImage, "base image to boot")
	c.Flags().Var(&memory, "memory", "guest RAM, e.g. 512M (default 512M)")
	c.Flags().IntVar(&opts.CPUs, "cpus", 1, "number of vCPUs")
	c.Flags().Var(&disk, "disk-size", "grow the root disk to this size, e.g. 1G")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto (KVM only where a probe boot works)")
	c.Flags().BoolVar(&opts.RAMInDir, "ram-in-dir", false, "keep guest RAM in the machine directory instead of /dev/shm")
	completeFlag(c, "base", completeImages)
	completeWords(c, "net", "user", "none")
	completeWords(c, "display", "vnc")
	completeWords(c, "accel", "auto", "kvm", "tcg")
	return c
}

// machineState is what halt, freeze and continue report of each machine.
type machineState struct {
	Machine string `json:"machine"`
	State   string `json:"state"` // "halted", "frozen", "running"
}

func haltCmd() *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:               "halt NAME|DIR... | --all",
		Short:             "Stop machines and delete their resources",
		Long:              "Stop machines and delete their resources (SBUML's sbumlhalt): QEMU, guest RAM and the machine directory.",
		Example:           "  sbuml halt m1 m2\n  sbuml halt --all",
		ValidArgsFunction: completeEach(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) ([]machineState, error) {
			if all == (len(args) > 0) {
				return nil, usagef("halt: name machines or give --all")
			}
			var done []machineState
			if all {
				names, err := s.HaltAll(context.WithoutCancel(ctx))
				for _, n := range names {
					done = append(done, machineState{n, "halted"})
				}
				return done, err
			}
			for _, a := range args {
				if err := s.Halt(context.WithoutCancel(ctx), a); err != nil {
					printMachineStates(done)
					return nil, err
				}
				done = append(done, machineState{a, "halted"})
			}
			return done, nil
		}, printMachineStates),
	}
	c.Flags().BoolVar(&all, "all", false, "halt every machine")
	addJSONFlag(c)
	return c
}

func printMachineStates(ms []machineState) {
	if flagJSON {
		return
	}
	for _, m := range ms {
		fmt.Printf("%s %s\n", m.Machine, m.State)
	}
}

func freezeCmd() *cobra.Command {
	return stateCmd("freeze", "Stop a machine's CPUs so its state does not change", "frozen", (*sbuml.Scrapbook).Freeze)
}

func continueCmd() *cobra.Command {
	return stateCmd("continue", "Resume a frozen machine", "running", (*sbuml.Scrapbook).Continue)
}

// stateCmd makes a command that changes one machine's run state.
func stateCmd(use, short, done string, change func(*sbuml.Scrapbook, context.Context, string) error) *cobra.Command {
	c := &cobra.Command{
		Use:               use + " NAME|DIR",
		Short:             short,
		Example:           "  sbuml " + use + " m1",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (machineState, error) {
			err := change(s, context.WithoutCancel(ctx), args[0])
			return machineState{args[0], done}, err
		}, func(m machineState) { printMachineStates([]machineState{m}) }),
	}
	addJSONFlag(c)
	return c
}

func psCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "ps",
		Short:   "List machines with their state, memory, uptime and accelerator",
		Example: "  sbuml ps\n  sbuml ps --json",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, _ []string) ([]sbuml.MachineInfo, error) {
			return s.Machines(ctx)
		}, printPs),
	}
	addJSONFlag(c)
	return c
}

func printPs(ms []sbuml.MachineInfo) {
	fmt.Printf("%-16s %-8s %9s %4s %-5s %10s  %-28s %s\n", "NAME", "STATE", "MEMORY", "CPUS", "ACCEL", "UPTIME", "FORWARDS", "DETAIL")
	for _, m := range ms {
		up := ""
		if m.Uptime > 0 {
			up = m.Uptime.Truncate(time.Second).String()
		}
		fmt.Printf("%-16s %-8s %9s %4d %-5s %10s  %-28s %s\n", m.Name, m.State, humanBytes(m.Memory), m.CPUs, m.Accel, up, forwardsText(m.Forwards), machineDetail(m))
	}
}

func consoleCmd() *cobra.Command {
	var tail bool
	c := &cobra.Command{
		Use:   "console NAME|DIR",
		Short: "Attach to a machine's serial console (Ctrl-] then q detaches)",
		Long: `Attach the terminal to the machine's serial console. Type Ctrl-] then q to
detach (Ctrl-] twice sends a literal Ctrl-]). With --tail, print what the
console has shown so far and return.`,
		Example: `  sbuml console m1
  echo 'uname -a' | sbuml console m1
  sbuml console m1 --tail | tail`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			if tail {
				return nil, printConsoleLog(s, args[0])
			}
			return nil, attachConsole(s, args[0])
		}, nil),
	}
	c.Flags().BoolVar(&tail, "tail", false, "print the console log and return")
	return c
}

// printConsoleLog copies a machine's console log to standard output.
func printConsoleLog(s *sbuml.Scrapbook, machine string) error {
	dir, err := s.MachineDir(machine)
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, vmm.ConsoleLog))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no machine %s (see 'sbuml ps')", machine)
	}
	if err != nil {
		return fmt.Errorf("console %s: %w", machine, err)
	}
	defer f.Close()
	_, err = io.Copy(os.Stdout, f)
	return err
}

// attachConsole attaches the terminal to a machine's serial console until
// the user detaches or QEMU exits.
func attachConsole(s *sbuml.Scrapbook, machine string) error {
	m, err := s.OpenMachine(machine)
	if err != nil {
		return err
	}
	defer m.Close()
	// Typed from a pipe into a frozen guest, the input would wait for it:
	// say so at once.
	if !isTerminal(os.Stdin) {
		if st, err := m.Status(context.Background()); err == nil && st.State == vmm.StateFrozen {
			return fmt.Errorf("machine %s is frozen: what is piped to its console would wait for it; continue it first ('sbuml continue %s')", machine, machine)
		}
	}
	// Attached, hold only the console: halt, freeze, continue and commit
	// work meanwhile from other shells.
	if err := m.ShareConsole(context.Background()); err != nil {
		return err
	}
	if isTerminal(os.Stdin) {
		restore, err := vmm.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return err
		}
		defer restore()
		fmt.Fprintf(os.Stderr, "attached to %s; Ctrl-] q detaches\r\n", machine)
		err = m.Attach(context.Background(), os.Stdin, os.Stdout)
	} else {
		// A script types lines; none is left half taken.
		err = m.Type(context.Background(), os.Stdin, os.Stdout)
	}
	if errors.Is(err, vmm.ErrConsoleClosed) {
		// Halted (or crashed) meanwhile: the session is over.
		fmt.Fprintf(os.Stderr, "\r\nconsole of %s closed: its QEMU exited\r\n", machine)
		return nil
	}
	return err
}

func doctorCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check what sbuml needs on this host, with fixes",
		Long: `Check what the commands need: QEMU and the accelerator (a warning when
machines run under TCG, saying why KVM was refused), tmpfs for guest RAM, the
agent images carry, the programs image builds, imports and exports run, and
the scrapbook (there, writable, with free space, and its default image). Each
problem comes with its fix. Exits 1 if a check failed; warnings do not fail.
Creates nothing: no scrapbook, no probe boot.`,
		Example: "  sbuml doctor\n  sbuml --scrapbook /srv/book doctor --json",
		Args:    cobra.NoArgs,
		RunE: withoutScrapbook(func(ctx context.Context, _ []string) ([]sbuml.DoctorCheck, error) {
			checks := sbuml.Doctor(ctx, scrapbookDir())
			for _, c := range checks {
				if !c.OK {
					return checks, errSilentFailure
				}
			}
			return checks, nil
		}, printDoctor),
	}
	addJSONFlag(c)
	return c
}

func printDoctor(checks []sbuml.DoctorCheck) {
	for _, c := range checks {
		fmt.Printf("%-4s %-9s %s\n", c.Status, c.Check, c.Info)
		if c.Fix != "" {
			fmt.Printf("     %-9s fix: %s\n", "", c.Fix)
		}
	}
}

// bootReport is what boot --json prints.
type bootReport struct {
	Name   string        `json:"name"`
	Dir    string        `json:"dir"`
	Config vmm.Config    `json:"config"`
	Ready  time.Duration `json:"ready_ns"`
}

// parseForwards reads --forward flags.
func parseForwards(args []string) ([]vmm.Forward, error) {
	var fwds []vmm.Forward
	for _, a := range args {
		f, err := vmm.ParseForward(a)
		if err != nil {
			return nil, err
		}
		fwds = append(fwds, f)
	}
	return fwds, nil
}

// printForwards says where a machine's forwarded ports are.
func printForwards(name string, n *vmm.Net) {
	if n == nil {
		return
	}
	for _, f := range n.Forwards {
		fmt.Printf("%s: %s:%d -> guest port %d\n", name, f.HostAddr, f.HostPort, f.GuestPort)
	}
}

// forwardsText shows forwards compactly: "127.0.0.1:41234->22".
func forwardsText(fwds []vmm.Forward) string {
	var parts []string
	for _, f := range fwds {
		parts = append(parts, fmt.Sprintf("%s:%d->%d", f.HostAddr, f.HostPort, f.GuestPort))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// machineDetail is the DETAIL column of ps.
func machineDetail(m sbuml.MachineInfo) string {
	var parts []string
	if m.Child > 0 {
		parts = append(parts, fmt.Sprintf("child %d", m.Child))
	}
	if m.Display != "" {
		parts = append(parts, "display "+m.Display)
	}
	if m.Autosnap > 0 {
		parts = append(parts, "autosnap "+m.Autosnap.String())
	}
	if m.Agent && !m.Keeper && m.State == "running" {
		parts = append(parts, "no keeper")
	}
	if m.Detail != "" {
		parts = append(parts, oneLine(m.Detail))
	}
	return strings.Join(parts, "; ")
}
