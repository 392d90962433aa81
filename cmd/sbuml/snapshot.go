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
		Example: `  sbuml commit m1 -m "before the upgrade"
  sbuml commit m1 -f
  sbuml commit m1 -b experiment`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.CommitResult, error) {
			bar := newStoreBar("storing")
			opts.OnProgress = bar.update
			res, err := s.Commit(ctx, args[0], opts)
			bar.done()
			return res, err
		}, printCommit),
	}
	c.Flags().BoolVarP(&opts.Freeze, "freeze", "f", false, "freeze the machine first and leave it frozen (unless -c)")
	c.Flags().BoolVarP(&opts.Continue, "continue", "c", false, "continue the machine after saving")
	c.Flags().StringVarP(&opts.Message, "message", "m", "", "snapshot message")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch to add the snapshot to (default: the machine's)")
	c.Flags().BoolVar(&opts.Force, "force", false, "move the branch even if its tip is not this machine's last snapshot")
	completeFlag(c, "branch", completeBranches)
	addJSONFlag(c)
	return c
}

func printCommit(res *sbuml.CommitResult) {
	fmt.Printf("%s %s\n", res.ID, shortRef(res.Branch))
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
}

func checkoutCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	var spare bool
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
		Example: `  sbuml checkout m1 m2 -c
  sbuml checkout m1~2 old -c
  sbuml checkout https://book.example.org/#demo demo -c`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeArgs(completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.CheckoutResult, error) {
			announceLink(args[0])
			res, err := checkoutWithBar(ctx, s, args[0], args[1], opts)
			if err == nil && spare {
				startNextSpare(ctx, s, res, opts.Accel)
			}
			return res, err
		}, printCheckout),
	}
	checkoutFlags(c, &opts)
	c.Flags().BoolVar(&spare, "spare", false, "once the machine runs, start a spare like it for the next checkout (see 'sbuml spare')")
	return c
}

// startNextSpare starts a spare shaped like the machine just checked out
// (res), for the next checkout. The machine runs already: a failure is
// only reported.
func startNextSpare(ctx context.Context, s *sbuml.Scrapbook, res *sbuml.CheckoutResult, accel string) {
	if res.Snapshot.IsZero() {
		fmt.Fprintln(os.Stderr, "sbuml: checkout --spare: an exported snapshot has no shape to keep a spare for")
		return
	}
	if _, err := s.StartSpares(ctx, res.Snapshot.String(), 1, sbuml.SpareOptions{Accel: accel}); err != nil {
		fmt.Fprintf(os.Stderr, "sbuml: checkout --spare: %v\n", err)
	}
}

func checkoutFlags(c *cobra.Command, opts *sbuml.CheckoutOptions) {
	c.Flags().BoolVarP(&opts.Continue, "continue", "c", false, "continue the machine once restored")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch for the machine's commits (default: its name)")
	c.Flags().BoolVar(&opts.RAMInDir, "ram-in-dir", false, "keep guest RAM in the machine directory instead of /dev/shm")
	completeWords(c, "accel", "auto", "kvm", "tcg")
	completeFlag(c, "branch", completeBranches)
	netFlags(c, opts)
	addJSONFlag(c)
}

// netFlags adds --net and --forward to a command that checks out.
func netFlags(c *cobra.Command, opts *sbuml.CheckoutOptions) {
	c.Flags().StringVar(&opts.Net, "net", "", "the network the snapshot's machine has: user or none (a saved machine keeps its hardware)")
	c.Flags().Var((*forwardsFlag)(&opts.Forwards), "forward", "forward a host TCP port to the guest, [HOSTADDR:]HOSTPORT:GUESTPORT (repeatable; default: the snapshot's forwards, on free host ports)")
	completeWords(c, "net", "user", "none")
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
// terminal while the snapshot's files are written and, for a snapshot
// elsewhere, downloaded, then a summary line of the download.
func checkoutWithBar(ctx context.Context, s *sbuml.Scrapbook, rev, machine string, opts sbuml.CheckoutOptions) (*sbuml.CheckoutResult, error) {
	bar := newStoreBar("restoring")
	opts.OnTransfer, opts.OnProgress = bar.transfer, bar.update
	opts.Progress = progressWriter()
	res, err := s.Checkout(ctx, rev, machine, opts)
	bar.done()
	if err == nil {
		summarize(res.Fetched, "received")
	}
	return res, err
}

func printCheckout(res *sbuml.CheckoutResult) {
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
}

func rewindCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	c := &cobra.Command{
		Use:   "rewind MACHINE SNAPSHOT",
		Short: "Replace a machine in place with a snapshot",
		Long: `Halt MACHINE and bring it back under the same name from SNAPSHOT, running if it
was running. Its next commit has SNAPSHOT as parent; if its branch has moved
on since, commit with --branch NEW (or --force).`,
		Example: `  sbuml rewind m1 m1~1
  sbuml rewind m1 'm1@{10 minutes ago}'`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeArgs(completeMachines, completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.CheckoutResult, error) {
			bar := newStoreBar("restoring")
			opts.OnProgress = bar.update
			opts.Progress = progressWriter()
			res, err := s.Rewind(ctx, args[0], args[1], opts)
			bar.done()
			return res, err
		}, printCheckout),
	}
	checkoutFlags(c, &opts)
	return c
}

// refReport is what branch and tag report of a ref they list, create or
// delete: its full name and the snapshot it names (named, for a deleted
// one).
type refReport struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
	// Action is "created" or "deleted"; empty in a listing.
	Action string `json:"action,omitempty"`
}

// refCmd makes the branch and tag commands, which differ only in namespace.
func refCmd(use, kind, plural, prefix string, names completer) *cobra.Command {
	var del, force bool
	c := &cobra.Command{
		Use:   use + " [NAME [SNAPSHOT]]",
		Short: "List, create or delete " + plural,
		Long: fmt.Sprintf("With no NAME, list %[2]s. With NAME, create %[1]s NAME at SNAPSHOT (default HEAD);\n"+
			"a name that would hide HEAD or snapshot IDs (four or more hex digits) needs --force.\n"+
			"With -d, delete %[1]s NAME (its snapshots stay in the scrapbook until sbuml gc); the\n"+
			"current branch needs --force.", kind, plural),
		Example:           fmt.Sprintf("  sbuml %[1]s\n  sbuml %[1]s stable m1~1\n  sbuml %[1]s -d stable", use),
		Args:              cobra.MaximumNArgs(2),
		ValidArgsFunction: completeArgs(names, completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) ([]refReport, error) {
			if len(args) == 0 {
				return listRefs(s, prefix)
			}
			if err := refs.ValidateShortName(args[0]); err != nil {
				return nil, err
			}
			name := prefix + args[0]
			opts := sbuml.RefOptions{Force: force}
			if del {
				opts.Why = kind + " -d"
				old, err := s.DeleteRef(name, opts)
				return []refReport{{name, old, "deleted"}}, err
			}
			rev := "HEAD"
			if len(args) == 2 {
				rev = args[1]
			}
			id, err := s.CreateRef(ctx, name, rev, opts)
			if errors.Is(err, refs.ErrConflict) {
				return nil, fmt.Errorf("%s %s already exists", kind, args[0])
			}
			return []refReport{{name, id, "created"}}, err
		}, func(rs []refReport) { printRefs(rs, kind, prefix) }),
	}
	c.Flags().BoolVarP(&del, "delete", "d", false, "delete the "+kind)
	c.Flags().BoolVarP(&force, "force", "f", false, "create a "+kind+" whose name hides HEAD or snapshot IDs, or delete the current branch")
	addJSONFlag(c)
	return c
}

// listRefs lists the refs under prefix.
func listRefs(s *sbuml.Scrapbook, prefix string) ([]refReport, error) {
	all, err := s.Refs.List(prefix)
	if err != nil {
		return nil, err
	}
	rows := make([]refReport, 0, len(all))
	for _, r := range all {
		rows = append(rows, refReport{Name: r.Name, ID: r.ID})
	}
	return rows, nil
}

func printRefs(rs []refReport, kind, prefix string) {
	for _, r := range rs {
		short := strings.TrimPrefix(r.Name, prefix)
		switch r.Action {
		case "created":
			fmt.Printf("%s %s at %s\n", kind, short, r.ID.Short())
		case "deleted":
			fmt.Printf("deleted %s %s (was %s)\n", kind, short, r.ID.Short())
		default:
			fmt.Printf("%s %s\n", r.ID.Short(), quoteName(short))
		}
	}
}

func branchCmd() *cobra.Command {
	return refCmd("branch", "branch", "branches", "refs/heads/", completeBranches)
}

func tagCmd() *cobra.Command { return refCmd("tag", "tag", "tags", "refs/tags/", completeTags) }

func openCmd() *cobra.Command {
	var opts sbuml.CheckoutOptions
	c := &cobra.Command{
		Use:   "open LINK [NEWMACHINE]",
		Short: "Download a snapshot from a web page link and run it",
		Long: `Fetch the snapshot a .sbuml link file (or URL#SNAPSHOT) names, downloading only
the objects this scrapbook lacks, and check it out as a running machine (SBUML's
browser helper). NEWMACHINE defaults to the link's file name. A browser hands
.sbuml files to this command once docs/sbuml.desktop and docs/sbuml-mime.xml
are installed ('make install' does it; see docs/transport.md).`,
		Example: `  sbuml open ~/Downloads/demo.sbuml
  sbuml open https://book.example.org/#demo mine`,
		Args: cobra.RangeArgs(1, 2),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.CheckoutResult, error) {
			name := ""
			if len(args) == 2 {
				name = args[1]
			} else {
				var err error
				if name, err = s.FreeMachineName(linkBaseName(args[0])); err != nil {
					return nil, err
				}
			}
			opts.Continue = true
			announceLink(args[0])
			return checkoutWithBar(ctx, s, args[0], name, opts)
		}, printCheckout),
	}
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto")
	completeWords(c, "accel", "auto", "kvm", "tcg")
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
