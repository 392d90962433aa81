package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(initCmd(), importCmd(), exportCmd(), logCmd(), showCmd(), fsckCmd(), duCmd(), gcCmd(), catObjectCmd())
}

func initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init [DIR]",
		Short: "Create an empty scrapbook",
		Long:  "Create an empty scrapbook in DIR (default: --scrapbook, $SBUML_DIR, else ~/.sbuml).",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := scrapbookDir()
			if len(args) == 1 {
				dir = args[0]
			}
			s, err := sbuml.Init(dir)
			if err != nil {
				return err
			}
			fmt.Printf("Initialized empty scrapbook in %s\n", s.Dir)
			return nil
		},
	}
}

func importCmd() *cobra.Command {
	var opts sbuml.SnapshotOptions
	c := &cobra.Command{
		Use:     "import DIR",
		Aliases: []string{"makedelta"},
		Short:   "Store a directory as a new snapshot",
		Long: `Store the files of DIR as a new snapshot on a branch (default: the current
branch), whose previous tip becomes its parent. Data already in the scrapbook
is not stored again, so importing a changed copy adds only the changes
(SBUML's sbumlmakedelta, deduplicated against every snapshot at once).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			defer s.Close() // a failed import leaves no unfinished pack behind
			if opts.Message == "" {
				opts.Message = "import " + args[0]
			}
			ctx, stop := interruptible()
			defer stop()
			progress, clear := storeProgress("importing")
			opts.OnProgress = progress
			res, err := s.Import(ctx, args[0], opts)
			clear()
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			printResult(res)
			return nil
		},
	}
	c.Flags().StringVarP(&opts.Message, "message", "m", "", "snapshot message")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch to add the snapshot to (default: current branch)")
	addJSONFlag(c)
	return c
}

func printResult(r *sbuml.Result) {
	fmt.Printf("%s %s\n", r.ID, strings.TrimPrefix(r.Branch, "refs/heads/"))
	fmt.Printf("  %s logical, %s new in %d objects (%s of new chunk data), %.2fs\n",
		humanBytes(r.LogicalBytes), humanBytes(r.Stats.NewBytes), r.Stats.NewObjects,
		humanBytes(r.Stats.NewChunkBytes), r.Duration.Seconds())
}

func exportCmd() *cobra.Command {
	var opts sbuml.ExportOptions
	c := &cobra.Command{
		Use:     "export SNAPSHOT DIR",
		Aliases: []string{"expanddelta"},
		Short:   "Write the files of a snapshot into a directory",
		Long: `Write the files of SNAPSHOT into DIR (which must not exist or be empty), byte
for byte, with holes left as holes (SBUML's sbumlexpanddelta), and with their
permission bits, but setuid and setgid only with --keep-setuid: a snapshot
may come from anywhere. Interrupted or failed, it removes what it wrote.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			id, err := s.ExportWith(ctx, args[0], args[1], opts)
			if err != nil {
				return err
			}
			fmt.Printf("exported %s to %s\n", id.Short(), args[1])
			return nil
		},
	}
	c.Flags().BoolVar(&opts.KeepSetuid, "keep-setuid", false, "give files their stored setuid and setgid bits")
	return c
}

func logCmd() *cobra.Command {
	var opts sbuml.LogOptions
	var graph bool
	c := &cobra.Command{
		Use:   "log [REV...]",
		Short: "List snapshots, newest first",
		Long:  "List the snapshots reachable from REV (default HEAD; --all: every ref) with their time,\nmessage, logical size and the bytes each added to the scrapbook.",
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			opts.Revs = args
			entries, err := s.Log(context.Background(), opts)
			if err != nil {
				return err
			}
			if flagJSON {
				if entries == nil {
					entries = []sbuml.LogEntry{}
				}
				return printJSON(entries)
			}
			printLog(entries, graph)
			return nil
		},
	}
	c.Flags().BoolVar(&opts.All, "all", false, "start from every ref")
	c.Flags().IntVarP(&opts.Limit, "limit", "n", 0, "show at most N snapshots")
	c.Flags().BoolVar(&graph, "graph", false, "draw the parent graph")
	addJSONFlag(c)
	return c
}

func printLog(entries []sbuml.LogEntry, graph bool) {
	lines := make([]string, len(entries))
	for i, e := range entries {
		refs := ""
		if len(e.Refs) > 0 {
			names := make([]string, len(e.Refs))
			for i, r := range e.Refs {
				names[i] = quoteName(r)
			}
			refs = " (" + strings.Join(names, ", ") + ")"
		}
		machine := ""
		if m := e.Labels["machine"]; m != "" && e.Auto {
			machine = " [" + quoteName(m) + ", auto]"
		} else if m != "" {
			machine = " [" + quoteName(m) + "]"
		}
		lines[i] = fmt.Sprintf("%s %s%s%s %s  %s logical, +%s",
			e.ID.Short(), e.Time.Local().Format("2006-01-02 15:04:05"), refs, machine,
			subject(e.Message), humanBytes(e.LogicalBytes), humanBytes(e.AddedBytes))
	}
	if graph {
		lines = drawGraph(entries, lines)
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

// subject is the first line of a snapshot's message, escaped for a
// terminal.
func subject(message string) string {
	line, _, _ := strings.Cut(message, "\n")
	return escapeText(line, false)
}

func showCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "show SNAPSHOT",
		Short: "Describe a snapshot and the files in it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			r, err := s.Show(context.Background(), args[0])
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(r)
			}
			fmt.Printf("snapshot %s\n", r.ID)
			for _, p := range r.Parents {
				fmt.Printf("parent   %s\n", p)
			}
			fmt.Printf("tree     %s\n", r.Tree)
			fmt.Printf("author   %s@%s\n", quoteName(r.Author), quoteName(r.Host))
			fmt.Printf("date     %s\n", r.Time.Local().Format(time.RFC1123))
			for k, v := range r.Labels {
				fmt.Printf("label    %s=%s\n", quoteName(k), quoteName(v))
			}
			fmt.Printf("size     %s logical, %s added to its history\n\n", humanBytes(r.LogicalBytes), humanBytes(r.AddedBytes))
			fmt.Printf("    %s\n\n", strings.ReplaceAll(escapeText(r.Message, true), "\n", "\n    "))
			for _, f := range r.Files {
				extra := ""
				if f.Kind == "file" {
					extra = fmt.Sprintf("  %d chunks, %s holes, %s", f.Chunks, humanBytes(f.HoleBytes), f.Chunking)
				}
				fmt.Printf("%-7s %04o %10s  %s  %s%s\n", f.Kind, f.Mode, humanBytes(f.Size), f.ID.Short(), quoteName(f.Path), extra)
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

func fsckCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "fsck",
		Short: "Verify every object and ref in the scrapbook",
		Long:  "Read back every object, check its hash and encoding and that everything it names is present;\ncheck that every ref names a present snapshot. Lists every problem; exits 1 if there is any.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			r, err := s.Fsck(context.Background())
			if err != nil {
				return err
			}
			if flagJSON {
				if err := printJSON(r); err != nil {
					return err
				}
			} else {
				for _, p := range r.Problems {
					fmt.Println(escapeText(p.String(), false))
				}
				for _, l := range r.StaleLocks {
					fmt.Printf("%s: stale lock left by a killed writer; the next update removes it\n", quoteName(l))
				}
				if r.Leftovers > 0 {
					fmt.Printf("%d unfinished pack file%s (%s) left by killed or running writers; sbuml gc removes them\n", r.Leftovers, pluralS(r.Leftovers), humanBytes(r.LeftoverBytes))
				}
				fmt.Printf("checked %d objects (%s) and %d refs: %d problems\n", r.Objects, humanBytes(r.Bytes), r.Refs, len(r.Problems))
			}
			if !r.OK() {
				return errSilentFailure
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

// errSilentFailure makes sbuml exit 1 without printing another line,
// for commands that already reported what is wrong.
var errSilentFailure = errors.New("")

func duCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "du",
		Short: "Show how much the scrapbook stores and how well it dedupes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			r, err := s.Du(context.Background())
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(r)
			}
			for _, sn := range r.Snapshots {
				fmt.Printf("%s %s %10s logical %10s added  %s\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"),
					humanBytes(sn.LogicalBytes), humanBytes(sn.AddedBytes), subject(sn.Message))
			}
			fmt.Printf("%d snapshots, %s logical, %s of unique chunks, %s stored in %d objects\n",
				len(r.Snapshots), humanBytes(r.LogicalBytes), humanBytes(r.UniqueChunkBytes), humanBytes(r.StoredBytes), r.Objects)
			fmt.Printf("dedup %.2fx, compression %.2fx\n", r.DedupRatio, r.CompressionRatio)
			if r.UnreferencedObjects > 0 {
				fmt.Printf("%s in %d objects that no ref or machine needs (sbuml gc frees them)\n", humanBytes(r.UnreferencedBytes), r.UnreferencedObjects)
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

func gcCmd() *cobra.Command {
	var dryRun bool
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove objects no snapshot needs and merge small packs",
		Long: `Remove the objects that no ref (branch, tag, image, remote-tracking ref, HEAD)
and no machine of the scrapbook reaches, such as the snapshots of a deleted
branch, and merge the small packs that commits leave into one. Snapshots
reachable only from reflogs go too. Refuses to run while another sbuml process
uses the scrapbook (including sbuml serve); commits, imports and the like wait
up to 10 s for it to end. Killed at any moment, it loses nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			opts := sbuml.GcOptions{DryRun: dryRun}
			clear := func() {}
			if isTerminal(os.Stderr) {
				opts.OnProgress = func(p sbuml.GcProgress) {
					line := fmt.Sprintf("gc: marking, %d objects reached", p.Marked)
					if p.Phase == "copying" {
						line = fmt.Sprintf("gc: copying what is kept, %s of %s", humanBytes(p.Copied), humanBytes(p.Total))
					}
					fmt.Fprintf(os.Stderr, "\r\x1b[K%s", line)
				}
				clear = func() { fmt.Fprint(os.Stderr, "\r\x1b[K") }
			}
			ctx, stop := interruptible()
			defer stop()
			r, err := s.Gc(ctx, opts)
			clear()
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(r)
			}
			for _, sn := range r.Snapshots {
				fmt.Printf("would remove %s %s  %s\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"), subject(sn.Message))
			}
			verb, freed := "removed", fmt.Sprintf("%s freed", humanBytes(r.FileBytesBefore-r.FileBytesAfter))
			if r.DryRun {
				verb, freed = "would remove", fmt.Sprintf("about %s to free", humanBytes(r.RemovedBytes))
			}
			fmt.Printf("gc: kept %d objects (%s) reachable from %d snapshot%s, %s %d (%s); packs %d -> %d; %s in %s\n",
				r.Kept, humanBytes(r.KeptBytes), r.Roots, pluralS(r.Roots), verb, r.Removed, humanBytes(r.RemovedBytes),
				r.PacksBefore, r.PacksAfter, freed, r.Duration.Round(time.Millisecond))
			return nil
		},
	}
	c.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "say what would be removed, remove nothing")
	addJSONFlag(c)
	return c
}

func catObjectCmd() *cobra.Command {
	var raw bool
	c := &cobra.Command{
		Use:   "cat-object ID",
		Short: "Print one object (plumbing)",
		Long:  "Print a stored object, decoded (--json for structure), or with --raw its canonical encoding. ID may be a unique prefix.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx := context.Background()
			id, err := s.ObjectID(ctx, args[0])
			if err != nil {
				return err
			}
			enc, err := objects.Load(ctx, s.Objects, id)
			if err != nil {
				return err
			}
			if raw {
				_, err := os.Stdout.Write(enc)
				return err
			}
			return printObject(id, enc)
		},
	}
	c.Flags().BoolVar(&raw, "raw", false, "write the canonical encoding")
	addJSONFlag(c)
	return c
}

func printObject(id objects.ID, enc []byte) error {
	k, _ := objects.KindOf(enc)
	var v any
	var err error
	switch k {
	case objects.KindChunk:
		data, _ := objects.DecodeChunk(enc)
		if !flagJSON {
			_, err = os.Stdout.Write(data)
			return err
		}
		v = map[string]any{"length": len(data)}
	case objects.KindIndex:
		v, err = objects.DecodeIndex(enc)
	case objects.KindStream:
		v, err = objects.DecodeStream(enc)
	case objects.KindTree:
		v, err = objects.DecodeTree(enc)
	case objects.KindSnapshot:
		v, err = objects.DecodeSnapshot(enc)
	}
	if err != nil {
		return err
	}
	if flagJSON {
		return printJSON(map[string]any{"id": id, "kind": k.String(), "object": v})
	}
	fmt.Printf("%s %s\n", k, id)
	return printJSON(v)
}
