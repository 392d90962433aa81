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

// signalContext is cancelled by Ctrl-C.
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
	c := &cobra.Command{
		Use:   "boot NAME|DIR",
		Short: "Create a machine from a base image and start it",
		Long: `Create a machine from a base image and start it (SBUML's sbumlboot). A machine
is a name, kept under the scrapbook's machines/ directory, or a directory of
your choosing (any argument with a '/'). It is a plain directory: du -s shows
its resources. The default image is built from Debian packages on first use.
Returns once the guest's shell is ready.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			opts.Memory, opts.DiskSize = int64(memory), int64(disk)
			opts.Progress = progressWriter()
			if opts.Forwards, err = parseForwards(forwards); err != nil {
				return err
			}
			if cmd.Flags().Changed("autosnap") {
				opts.Autosnap = &autosnap
			}
			start := time.Now()
			m, err := s.Boot(ctx, args[0], opts)
			if m != nil {
				m.Close()
			}
			if err != nil {
				return err
			}
			cfg := m.Config()
			if flagJSON {
				return printJSON(bootReport{Name: cfg.Name, Dir: m.Dir(), Config: cfg, Ready: time.Since(start)})
			}
			fmt.Printf("%s running: %s RAM, %d CPU%s, %s, ready in %.1fs\n", cfg.Name, humanBytes(cfg.Memory), cfg.CPUs, pluralS(cfg.CPUs), cfg.Accel, time.Since(start).Seconds())
			printForwards(cfg.Name, cfg.Net)
			return nil
		},
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
	return c
}

func haltCmd() *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "halt NAME|DIR... | --all",
		Short: "Stop machines and delete their resources",
		Long:  "Stop machines and delete their resources (SBUML's sbumlhalt): QEMU, guest RAM and the machine directory.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return fmt.Errorf("halt: name machines or give --all")
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx := context.Background()
			if all {
				names, err := s.HaltAll(ctx)
				for _, n := range names {
					fmt.Printf("%s halted\n", n)
				}
				return err
			}
			for _, a := range args {
				if err := s.Halt(ctx, a); err != nil {
					return err
				}
				fmt.Printf("%s halted\n", a)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "halt every machine")
	return c
}

func freezeCmd() *cobra.Command {
	return stateCmd("freeze", "Stop a machine's CPUs so its state does not change", "frozen", (*sbuml.Scrapbook).Freeze)
}

func continueCmd() *cobra.Command {
	return stateCmd("continue", "Resume a frozen machine", "running", (*sbuml.Scrapbook).Continue)
}

// stateCmd makes a command that changes one machine's run state.
func stateCmd(use, short, done string, change func(*sbuml.Scrapbook, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME|DIR",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			if err := change(s, context.Background(), args[0]); err != nil {
				return err
			}
			fmt.Printf("%s %s\n", args[0], done)
			return nil
		},
	}
}

func psCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ps",
		Short: "List machines with their state, memory, uptime and accelerator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ms, err := s.Machines(context.Background())
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(ms)
			}
			fmt.Printf("%-16s %-8s %9s %4s %-5s %10s  %-28s %s\n", "NAME", "STATE", "MEMORY", "CPUS", "ACCEL", "UPTIME", "FORWARDS", "DETAIL")
			for _, m := range ms {
				up := ""
				if m.Uptime > 0 {
					up = m.Uptime.Truncate(time.Second).String()
				}
				fmt.Printf("%-16s %-8s %9s %4d %-5s %10s  %-28s %s\n", m.Name, m.State, humanBytes(m.Memory), m.CPUs, m.Accel, up, forwardsText(m.Forwards), machineDetail(m))
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

func consoleCmd() *cobra.Command {
	var tail bool
	c := &cobra.Command{
		Use:   "console NAME|DIR",
		Short: "Attach to a machine's serial console (Ctrl-] then q detaches)",
		Long: `Attach the terminal to the machine's serial console. Type Ctrl-] then q to
detach (Ctrl-] twice sends a literal Ctrl-]). With --tail, print what the
console has shown so far and return.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			if tail {
				dir, err := s.MachineDir(args[0])
				if err != nil {
					return err
				}
				f, err := os.Open(filepath.Join(dir, vmm.ConsoleLog))
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("no machine %s (see 'sbuml ps')", args[0])
				}
				if err != nil {
					return fmt.Errorf("console %s: %w", args[0], err)
				}
				defer f.Close()
				_, err = io.Copy(os.Stdout, f)
				return err
			}
			m, err := s.OpenMachine(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			// Typed from a pipe into a frozen guest, the input would
			// wait for it: say so at once.
			if !isTerminal(os.Stdin) {
				if st, err := m.Status(context.Background()); err == nil && st.State == vmm.StateFrozen {
					return fmt.Errorf("machine %s is frozen: what is piped to its console would wait for it; continue it first ('sbuml continue %s')", args[0], args[0])
				}
			}
			// Attached, hold only the console: halt, freeze, continue
			// and commit work meanwhile from other shells.
			if err := m.ShareConsole(context.Background()); err != nil {
				return err
			}
			if isTerminal(os.Stdin) {
				restore, err := vmm.MakeRaw(int(os.Stdin.Fd()))
				if err != nil {
					return err
				}
				defer restore()
				fmt.Fprintf(os.Stderr, "attached to %s; Ctrl-] q detaches\r\n", args[0])
				err = m.Attach(context.Background(), os.Stdin, os.Stdout)
			} else {
				// A script types lines; none is left half taken.
				err = m.Type(context.Background(), os.Stdin, os.Stdout)
			}
			if errors.Is(err, vmm.ErrConsoleClosed) {
				// Halted (or crashed) meanwhile: the session is over.
				fmt.Fprintf(os.Stderr, "\r\nconsole of %s closed: its QEMU exited\r\n", args[0])
				return nil
			}
			return err
		},
	}
	c.Flags().BoolVar(&tail, "tail", false, "print the console log and return")
	return c
}

func doctorCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check what sbuml needs on this host, with fixes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			checks, err := doctor(context.Background())
			if err != nil {
				return err
			}
			bad := 0
			for _, c := range checks {
				if !c.OK {
					bad++
				}
			}
			if flagJSON {
				if err := printJSON(checks); err != nil {
					return err
				}
			} else {
				for _, c := range checks {
					mark := "ok  "
					if !c.OK {
						mark = "FAIL"
					}
					fmt.Printf("%s %-9s %s\n", mark, c.Check, c.Info)
					if c.Fix != "" {
						fmt.Printf("     %-9s fix: %s\n", "", c.Fix)
					}
				}
			}
			if bad > 0 {
				return errSilentFailure
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
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

// doctor runs the host checks on the scrapbook the flags name. Where
// there is none, it says so as a failed check, and runs the others on an
// empty scrapbook made for the purpose and removed again: only init and
// clone make scrapbooks.
func doctor(ctx context.Context) ([]sbuml.DoctorCheck, error) {
	s, err := openScrapbook()
	if err == nil {
		return s.Doctor(ctx), nil
	}
	if !errors.Is(err, sbuml.ErrNotScrapbook) {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "sbuml-doctor-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if s, err = sbuml.Init(tmp); err != nil {
		return nil, err
	}
	dir, _ := filepath.Abs(scrapbookDir())
	missing := sbuml.DoctorCheck{Check: "scrapbook", Info: "no scrapbook at " + dir, Fix: "sbuml init " + dir}
	return append([]sbuml.DoctorCheck{missing}, s.Doctor(ctx)...), nil
}
