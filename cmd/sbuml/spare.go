package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
)

func init() {
	rootCmd.AddCommand(spareCmd())
}

func spareCmd() *cobra.Command {
	var (
		count      int
		list, stop bool
		all        bool
		opts       sbuml.SpareOptions
	)
	c := &cobra.Command{
		Use:   "spare SNAPSHOT [--count N] | --list | --stop (--all | SHAPE)",
		Short: "Start QEMUs ahead of need, for fast checkouts",
		Long: `Start spare QEMUs shaped like SNAPSHOT's machine (its memory, CPUs, disks,
kernel, network card...), waiting for a device state. A later checkout of any
snapshot of that shape claims a spare instead of starting QEMU, which saves
QEMU's start-up time. Spares keep their RAM (empty) and a QEMU until claimed or
stopped: --list shows them, --stop stops those of a shape or --all of them
('sbuml halt --all' stops them too).`,
		Example: `  sbuml spare m1 --count 2
  sbuml spare --list
  sbuml spare --stop --all`,
		ValidArgsFunction: completeArgs(completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) ([]vmm.SpareInfo, error) {
			switch {
			case list && !stop && len(args) == 0:
				return s.Spares()
			case stop && !list && all == (len(args) == 0) && len(args) <= 1:
				key := ""
				if len(args) == 1 {
					key = args[0]
				}
				return stopSpares(ctx, s, key)
			case !list && !stop && !all && len(args) == 1 && count > 0:
				return s.StartSpares(ctx, args[0], count, opts)
			}
			return nil, usagef("spare: give SNAPSHOT [--count N], or --list, or --stop with --all or a SHAPE")
		}, printSpares),
	}
	c.Flags().IntVar(&count, "count", 1, "how many spares to start")
	c.Flags().BoolVar(&list, "list", false, "list the spares")
	c.Flags().BoolVar(&stop, "stop", false, "stop the spares of SHAPE (a key --list shows), or --all")
	c.Flags().BoolVar(&all, "all", false, "with --stop: stop every spare")
	c.Flags().StringVar(&opts.Accel, "accel", "auto", "accelerator: kvm, tcg or auto, as the checkouts will ask")
	completeWords(c, "accel", "auto", "kvm", "tcg")
	addJSONFlag(c)
	return c
}

// stopSpares stops the spares of shape key (all for "") and reports them
// as listed before, no longer alive.
func stopSpares(ctx context.Context, s *sbuml.Scrapbook, key string) ([]vmm.SpareInfo, error) {
	before, err := s.Spares()
	if err != nil {
		return nil, err
	}
	dirs, err := s.StopSpares(context.WithoutCancel(ctx), key)
	stopped := []vmm.SpareInfo{}
	for _, in := range before {
		for _, d := range dirs {
			if d == in.Dir {
				in.Alive, in.PID = false, 0
				stopped = append(stopped, in)
			}
		}
	}
	return stopped, err
}

func printSpares(infos []vmm.SpareInfo) {
	for _, in := range infos {
		state := "waiting"
		if !in.Alive {
			state = "gone"
		}
		sh := in.Shape
		fmt.Printf("%s  %-7s %s RAM, %d CPU%s, %d disk%s, %s, up %s  %s\n", in.Key, state, humanBytes(sh.Memory),
			sh.CPUs, pluralS(sh.CPUs), len(sh.DiskSizes), pluralS(len(sh.DiskSizes)), sh.Accel,
			time.Since(in.Started).Truncate(time.Second), filepath.Base(in.Dir))
	}
}
