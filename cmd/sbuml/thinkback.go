package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/retention"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	rootCmd.AddCommand(autosnapCmd())
}

// addKeepFlags adds restic forget's --keep-* flags, filling p.
func addKeepFlags(fs *pflag.FlagSet, p *retention.Policy) {
	fs.IntVar(&p.Last, "keep-last", 0, "keep the N newest automatic snapshots")
	fs.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest automatic snapshot of each of the last N hours that have one")
	fs.IntVar(&p.Daily, "keep-daily", 0, "... of each of the last N days")
	fs.IntVar(&p.Weekly, "keep-weekly", 0, "... of each of the last N weeks")
	fs.IntVar(&p.Monthly, "keep-monthly", 0, "... of each of the last N months")
	fs.IntVar(&p.Yearly, "keep-yearly", 0, "... of each of the last N years")
	fs.DurationVar(&p.Within, "keep-within", 0, "keep every automatic snapshot taken within this duration of the newest, e.g. 2h")
}

func autosnapCmd() *cobra.Command {
	var cfg sbuml.AutosnapConfig
	var stop, expire, dryRun bool
	var machine string // for the text report
	var c *cobra.Command
	c = &cobra.Command{
		Use:   "autosnap MACHINE [--every DURATION [--keep-... N]] | --stop | --expire",
		Short: "Take automatic snapshots of a running machine at intervals (thinkback)",
		Long: `Take automatic snapshots of a running machine at intervals, as DejaView's
thinkback daemon did. The machine's keeper (a background process that lives
as long as the machine runs) takes a live commit every DURATION, skips it when
the guest did nothing since the last one (no process started, no disk write,
programs ran for at most 0.5% of the interval; --always commits anyway), and expires old
automatic snapshots by the --keep-* rules, which mean what they mean for
restic forget. Expired snapshots are freed by the next 'sbuml gc'.

Automatic snapshots are not on the machine's branch: 'sbuml log --all' lists
them (marked auto), and MACHINE@{10 minutes ago} names the last snapshot of
the machine at or before a time, anywhere a snapshot is accepted:
  sbuml rewind m1 'm1@{10 minutes ago}'

With no flag, autosnap prints the machine's settings and what its keeper
last did. --stop turns it off; --expire applies the --keep-* rules once
(--dry-run: only say what would go).`,
		Example: `  sbuml autosnap m1 --every 30s --keep-last 5 --keep-hourly 24
  sbuml autosnap m1
  sbuml autosnap m1 --stop`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			machine = args[0]
			switch {
			case expire:
				return s.ExpireAutosnaps(ctx, machine, cfg.Keep, dryRun)
			case stop:
				if err := s.StopAutosnap(ctx, machine); err != nil {
					return nil, err
				}
			case c.Flags().Changed("every"):
				if err := s.SetAutosnap(ctx, machine, cfg); err != nil {
					return nil, err
				}
			}
			return s.Autosnap(ctx, machine)
		}, func(v any) { printAutosnap(machine, v, dryRun) }),
	}
	c.Flags().DurationVar(&cfg.Every, "every", 0, "interval between automatic snapshots, e.g. 30s, 10m")
	c.Flags().BoolVar(&cfg.Always, "always", false, "snapshot even a guest that did nothing since the last automatic snapshot")
	addKeepFlags(c.Flags(), &cfg.Keep)
	c.Flags().BoolVar(&stop, "stop", false, "turn automatic snapshots off")
	c.Flags().BoolVar(&expire, "expire", false, "apply the --keep-* rules to the automatic snapshots now")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "with --expire: only say which snapshots would be dropped")
	addJSONFlag(c)
	return c
}

// printAutosnap prints what autosnap reports: the decisions of --expire,
// else the machine's settings and what its keeper last did.
func printAutosnap(machine string, v any, dryRun bool) {
	switch v := v.(type) {
	case []sbuml.AutosnapDecision:
		printExpire(v, dryRun)
	case *sbuml.AutosnapState:
		printAutosnapState(machine, v)
	}
}

func printExpire(ds []sbuml.AutosnapDecision, dryRun bool) {
	verb := "drop"
	if dryRun {
		verb = "would drop"
	}
	for _, d := range ds {
		what := verb
		if d.Keep {
			what = "keep (" + strings.Join(d.Reasons, ", ") + ")"
		}
		fmt.Printf("%s %s  %s\n", d.ID.Short(), d.Time.Local().Format("2006-01-02 15:04:05"), what)
	}
}

func printAutosnapState(machine string, st *sbuml.AutosnapState) {
	if st.Config == nil {
		fmt.Printf("%s: automatic snapshots off\n", machine)
		return
	}
	running := "its keeper runs"
	if !st.Running {
		running = "its keeper is not running (the machine is not running?)"
	}
	fmt.Printf("%s: an automatic snapshot every %v, %s; %s\n", machine, st.Config.Every, st.Config.Keep, running)
	fmt.Printf("taken %d, skipped %d, expired %d", st.Taken, st.Skipped, st.Expired)
	if !st.LastTaken.IsZero() {
		fmt.Printf("; last %s at %s (%s ago, +%s, downtime %v)", st.LastSnapshot.Short(), st.LastTaken.Local().Format("15:04:05"),
			time.Since(st.LastTaken).Round(time.Second), humanBytes(st.LastAdded), st.LastDowntime.Round(time.Millisecond))
	}
	fmt.Println()
	if st.LastSkip != "" {
		fmt.Printf("last interval skipped: %s\n", st.LastSkip)
	}
	if st.LastError != "" {
		fmt.Printf("last error: %s\n", st.LastError)
	}
}
