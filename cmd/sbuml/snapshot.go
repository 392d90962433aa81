package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
	"github.com/sbuml/sbuml/vmm"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(commitCmd(), checkoutCmd(), rewindCmd(), branchCmd(), tagCmd())
}

func commitCmd() *cobra.Command {
	var opts sbuml.CommitOptions
	c := &cobra.Command{
		Use:     "commit NAME|DIR",
		Aliases: []string{"save"},
		Short:   "Save the complete running state of a machine as a snapshot",
		Long: `Save the complete state of a running machine (vCPUs, devices, RAM, disks),
captured at one instant, as a snapshot whose parent is the machine's previous
snapshot (SBUML's sbumlsave). -f leaves the machine frozen afterwards, -f -c
freezes and continues it; with neither, the guest is frozen only for the
capture. The machine's branch (default: its name) moves to the snapshot.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			progress, clear := storeProgress("storing")
			opts.OnProgress = progress
			res, err := s.Commit(ctx, args[0], opts)
			clear()
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			fmt.Printf("%s %s\n", res.ID, strings.TrimPrefix(res.Branch, "refs/heads/"))
			guest := "left frozen"
			switch {
			case res.Downtime > 0:
				guest = fmt.Sprintf("downtime %.0f ms", float64(res.Downtime.Microseconds())/1000)
			case res.Running:
				guest = "continued"
			}
			fmt.Printf("  %s, %s logical, %s added (%d new objects), %.2fs in all\n",
				guest, humanBytes(res.LogicalBytes), humanBytes(res.Stats.NewBytes),
				res.Stats.NewObjects, res.Duration.Seconds())
			return nil
		},
	}
	c.Flags().BoolVarP(&opts.Freeze, "freeze", "f", false, "freeze the machine first and leave it frozen (unless -c)")
	c.Flags().BoolVarP(&opts.Continue, "continue", "c", false, "continue the machine after saving")
	c.Flags().StringVarP(&opts.Message, "message", "m", "", "snapshot message")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch to add the snapshot to (default: the machine's)")
	c.Flags().BoolVar(&opts.Force, "force", false, "move the branch even if its tip is not this machine's last snapshot")
	addJSONFlag(c)
	return c
}

func checkoutCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	c := &cobra.Command{
		Use:     "checkout SNAPSHOT NEWMACHINE",
		Aliases: []string{"restore"},
		Short:   "Bring a machine snapshot back as a new running machine",
		Long: `Create NEWMACHINE from a machine snapshot (SBUML's sbumlrestore) and, with -c,
let it carry on from the instant it was saved. SNAPSHOT is an ID or unique
prefix, a branch, a tag, BRANCH~N, a directory made by 'sbuml export', or a
snapshot elsewhere: URL#SNAPSHOT (a published or served scrapbook) or a .sbuml
link file, of which only the objects this scrapbook lacks are downloaded.
Any number of machines may be checked out from one snapshot at once.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			opts.Progress = progressWriter()
			announceLink(args[0])
			res, err := checkoutWithBar(ctx, s, args[0], args[1], opts)
			if err != nil {
				return err
			}
			return printCheckout(res)
		},
	}
	checkoutFlags(c, &opts)
	return c
}

func checkoutFlags(c *cobra.Command, opts *sbuml.CheckoutOptions) {
	c.Flags().BoolVarP(&opts.Continue, "continue", "c", false, "continue the machine once restored")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch for the machine's commits (default: its name)")
	c.Flags().BoolVar(&opts.RAMInDir, "ram-in-dir", false, "keep guest RAM in the machine directory instead of /dev/shm")
	netFlags(c, opts)
	addJSONFlag(c)
}

// netFlags adds --net and --forward to a command that checks out.
func netFlags(c *cobra.Command, opts *sbuml.CheckoutOptions) {
	c.Flags().StringVar(&opts.Net, "net", "", "the network the snapshot's machine has: user or none (a saved machine keeps its hardware)")
	c.Flags().Var((*forwardsFlag)(&opts.Forwards), "forward", "forward a host TCP port to the guest, [HOSTADDR:]HOSTPORT:GUESTPORT (repeatable; default: the snapshot's forwards, on free host ports)")
}

// forwardsFlag collects --forward flags.
type forwardsFlag []vmm.Forward

func (f *forwardsFlag) String() string { return forwardsText(*f) }
func (f *forwardsFlag) Type() string   { return "forward" }
func (f *forwardsFlag) Set(v string) error {
	fwd, err := vmm.ParseForward(v)
	if err != nil {
		return err
	}
	*f = append(*f, fwd)
	return nil
}

// checkoutWithBar checks out rev as machine, showing a progress bar on a
// terminal and a summary line while a snapshot elsewhere downloads.
func checkoutWithBar(ctx context.Context, s *sbuml.Scrapbook, rev, machine string, opts sbuml.CheckoutOptions) (*sbuml.CheckoutResult, error) {
	bar := newProgressBar(os.Stderr)
	opts.OnTransfer = bar.update
	res, err := s.Checkout(ctx, rev, machine, opts)
	bar.clear()
	if err == nil && res.Fetched != nil && !flagJSON {
		fmt.Fprintln(os.Stderr, res.Fetched.Summary("received"))
	}
	return res, err
}

func printCheckout(res *sbuml.CheckoutResult) error {
	if flagJSON {
		return printJSON(res)
	}
	state := "frozen (sbuml continue " + res.Machine + " starts it)"
	if res.Running {
		state = "running"
	}
	from := "exported snapshot"
	if !res.Snapshot.IsZero() {
		from = res.Snapshot.Short()
	}
	child := ""
	if res.Child > 0 {
		child = fmt.Sprintf(" (child %d of its ckpt())", res.Child)
	}
	took := "checkout to running"
	if !res.Running {
		took = "checkout"
	}
	fmt.Printf("%s %s from %s%s, %s %.0f ms\n", res.Machine, state, from, child, took, float64(res.Duration.Microseconds())/1000)
	for _, f := range res.Forwards {
		fmt.Printf("%s: %s:%d -> guest port %d\n", res.Machine, f.HostAddr, f.HostPort, f.GuestPort)
	}
	return nil
}

func rewindCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	c := &cobra.Command{
		Use:   "rewind MACHINE SNAPSHOT",
		Short: "Replace a machine in place with a snapshot",
		Long: `Halt MACHINE and bring it back under the same name from SNAPSHOT, running if it
was running. Its next commit has SNAPSHOT as parent; if its branch has moved
on since, commit with --branch NEW (or --force).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			opts.Progress = progressWriter()
			res, err := s.Rewind(ctx, args[0], args[1], opts)
			if err != nil {
				return err
			}
			return printCheckout(res)
		},
	}
	checkoutFlags(c, &opts)
	return c
}

// refCmd makes the branch and tag commands, which differ only in namespace.
func refCmd(use, kind, plural, prefix string) *cobra.Command {
	var del, force bool
	c := &cobra.Command{
		Use:   use + " [NAME [SNAPSHOT]]",
		Short: "List, create or delete " + plural,
		Long: fmt.Sprintf("With no NAME, list %[2]s. With NAME, create %[1]s NAME at SNAPSHOT (default HEAD);\n"+
			"a name that would hide HEAD or snapshot IDs (four or more hex digits) needs --force.\n"+
			"With -d, delete %[1]s NAME (its snapshots stay in the scrapbook until sbuml gc); the\n"+
			"current branch needs --force.", kind, plural),
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx := context.Background()
			if len(args) == 0 {
				all, err := s.Refs.List(prefix)
				if err != nil {
					return err
				}
				if flagJSON {
					type row struct {
						Name string     `json:"name"`
						ID   objects.ID `json:"id"`
					}
					rows := []row{}
					for _, r := range all {
						rows = append(rows, row{strings.TrimPrefix(r.Name, prefix), r.ID})
					}
					return printJSON(rows)
				}
				for _, r := range all {
					fmt.Printf("%s %s\n", r.ID.Short(), quoteName(strings.TrimPrefix(r.Name, prefix)))
				}
				return nil
			}
			if err := refs.ValidateShortName(args[0]); err != nil {
				return err
			}
			name := prefix + args[0]
			opts := sbuml.RefOptions{Force: force}
			if del {
				opts.Why = kind + " -d"
				old, err := s.DeleteRef(name, opts)
				if err != nil {
					return err
				}
				fmt.Printf("deleted %s %s (was %s)\n", kind, args[0], old.Short())
				return nil
			}
			rev := "HEAD"
			if len(args) == 2 {
				rev = args[1]
			}
			id, err := s.CreateRef(ctx, name, rev, opts)
			if err != nil {
				if errors.Is(err, refs.ErrConflict) {
					return fmt.Errorf("%s %s already exists", kind, args[0])
				}
				return err
			}
			fmt.Printf("%s %s at %s\n", kind, args[0], id.Short())
			return nil
		},
	}
	c.Flags().BoolVarP(&del, "delete", "d", false, "delete the "+kind)
	c.Flags().BoolVarP(&force, "force", "f", false, "create a "+kind+" whose name hides HEAD or snapshot IDs, or delete the current branch")
	addJSONFlag(c)
	return c
}

func branchCmd() *cobra.Command { return refCmd("branch", "branch", "branches", "refs/heads/") }
func tagCmd() *cobra.Command    { return refCmd("tag", "tag", "tags", "refs/tags/") }

func openCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	c := &cobra.Command{
		Use:   "open LINK [NEWMACHINE]",
		Short: "Download a snapshot from a web page link and run it",
		Long: `Fetch the snapshot a .sbuml link file (or URL#SNAPSHOT) names, downloading only
the objects this scrapbook lacks, and check it out as a running machine (SBUML's
browser helper). NEWMACHINE defaults to the link's file name. A browser hands
.sbuml files to this command once docs/sbuml.desktop and docs/sbuml-mime.xml
are installed (see docs/transport.md).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			name := ""
			if len(args) == 2 {
				name = args[1]
			} else if name, err = s.FreeMachineName(linkBaseName(args[0])); err != nil {
				return err
			}
			opts.Continue = true
			opts.Progress = progressWriter()
			announceLink(args[0])
			res, err := checkoutWithBar(ctx, s, args[0], name, opts)
			if err != nil {
				return err
			}
			return printCheckout(res)
		},
	}
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto")
	netFlags(c, &opts)
	addJSONFlag(c)
	return c
}

// linkBaseName suggests a machine name for a link: its file name without
// the extension, or "web".
func linkBaseName(link string) string {
	base := link
	if i := strings.LastIndexAny(base, "/#"); i >= 0 {
		base = base[i+1:]
	}
	base = strings.TrimSuffix(base, sbuml.LinkExtension)
	if sbuml.ValidateMachineName(base) != nil || len(base) > 40 {
		return "web"
	}
	return base
}

func init() { rootCmd.AddCommand(openCmd()) }
