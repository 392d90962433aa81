package main

import (
	"context"
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

// initReport is what init reports.
type initReport struct {
	Dir string `json:"dir"`
}

func initCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "init [DIR]",
		Short:   "Create an empty scrapbook",
		Long:    "Create an empty scrapbook in DIR (default: --scrapbook, $SBUML_DIR, else ~/.sbuml).",
		Example: "  sbuml init\n  sbuml init /srv/scrapbook",
		Args:    cobra.MaximumNArgs(1),
		RunE: withoutScrapbook(func(_ context.Context, args []string) (initReport, error) {
			dir := scrapbookDir()
			if len(args) == 1 {
				dir = args[0]
			}
			s, err := sbuml.Init(dir)
			if err != nil {
				return initReport{}, err
			}
			defer s.Close()
			return initReport{Dir: s.Dir}, nil
		}, func(r initReport) { fmt.Printf("Initialized empty scrapbook in %s\n", r.Dir) }),
	}
	addJSONFlag(c)
	return c
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
		Example: `  sbuml import ./site -m "first"
  sbuml import ./site -b staging -m "try the new layout"`,
		Args: cobra.ExactArgs(1),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.Result, error) {
			if opts.Message == "" {
				opts.Message = "import " + args[0]
			}
			bar := newStoreBar("importing")
			opts.OnProgress = bar.update
			res, err := s.Import(ctx, args[0], opts)
			bar.done()
			return res, err
		}, printResult),
	}
	c.Flags().StringVarP(&opts.Message, "message", "m", "", "snapshot message")
	c.Flags().StringVarP(&opts.Branch, "branch", "b", "", "branch to add the snapshot to (default: current branch)")
	completeFlag(c, "branch", completeBranches)
	addJSONFlag(c)
	return c
}

func printResult(r *sbuml.Result) {
	fmt.Printf("%s %s\n", r.ID, strings.TrimPrefix(r.Branch, "refs/heads/"))
	fmt.Printf("  %s logical, %s new in %d objects (%s of new chunk data), %.2fs\n",
		humanBytes(r.LogicalBytes), humanBytes(r.Stats.NewBytes), r.Stats.NewObjects,
		humanBytes(r.Stats.NewChunkBytes), r.Duration.Seconds())
}

// exportReport is what export reports.
type exportReport struct {
	Snapshot objects.ID `json:"snapshot"`
	Dir      string     `json:"dir"`
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
		Example: `  sbuml export main ./site-copy
  sbuml export main~2 /tmp/old --keep-setuid`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeArgs(completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (exportReport, error) {
			bar := newStoreBar("exporting")
			opts.OnProgress = bar.update
			id, err := s.ExportWith(ctx, args[0], args[1], opts)
			bar.done()
			return exportReport{Snapshot: id, Dir: args[1]}, err
		}, func(r exportReport) { fmt.Printf("exported %s to %s\n", r.Snapshot.Short(), r.Dir) }),
	}
	c.Flags().BoolVar(&opts.KeepSetuid, "keep-setuid", false, "give files their stored setuid and setgid bits")
	addJSONFlag(c)
	return c
}

func logCmd() *cobra.Command {
	var opts sbuml.LogOptions
	var graph bool
	c := &cobra.Command{
		Use:   "log [REV...]",
		Short: "List snapshots, newest first",
		Long:  "List the snapshots reachable from REV (default HEAD; --all: every ref) with their time,\nmessage, logical size and the bytes each added to the scrapbook.",
		Example: `  sbuml log
  sbuml log --graph --all
  sbuml log -n 5 --json m1`,
		ValidArgsFunction: completeArgs(completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) ([]sbuml.LogEntry, error) {
			opts.Revs = args
			return s.Log(ctx, opts)
		}, func(entries []sbuml.LogEntry) { printLog(entries, graph) }),
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
				names[i] = quoteName(shortRef(r))
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
		Use:               "show SNAPSHOT",
		Short:             "Describe a snapshot and the files in it",
		Example:           "  sbuml show main\n  sbuml show m1~1 --json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeRevisions),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.ShowResult, error) {
			return s.Show(ctx, args[0])
		}, printShow),
	}
	addJSONFlag(c)
	return c
}

func printShow(r *sbuml.ShowResult) {
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
}

func fsckCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "fsck",
		Short:   "Verify every object and ref in the scrapbook",
		Long:    "Read back every object, check its hash and encoding and that everything it names is present;\ncheck that every ref names a present snapshot. Lists every problem; exits 1 if there is any.",
		Example: "  sbuml fsck\n  sbuml fsck --json",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, _ []string) (*sbuml.FsckReport, error) {
			r, err := s.Fsck(ctx)
			if err == nil && !r.OK() {
				err = errSilentFailure
			}
			return r, err
		}, printFsck),
	}
	addJSONFlag(c)
	return c
}

func printFsck(r *sbuml.FsckReport) {
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

func duCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "du",
		Short:   "Show how much the scrapbook stores and how well it dedupes",
		Example: "  sbuml du\n  sbuml du --json",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, _ []string) (*sbuml.DuReport, error) {
			return s.Du(ctx)
		}, printDu),
	}
	addJSONFlag(c)
	return c
}

func printDu(r *sbuml.DuReport) {
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
}

func gcCmd() *cobra.Command {
	var opts sbuml.GcOptions
	c := &cobra.Command{
		Use:   "gc",
		Short: "Remove objects no snapshot needs and merge small packs",
		Long: `Remove the objects that no ref (branch, tag, image, remote-tracking ref, HEAD)
and no machine of the scrapbook reaches, such as the snapshots of a deleted
branch, and merge the small packs that commits leave into one. Snapshots
reachable only from reflogs go too. Refuses to run while another sbuml process
uses the scrapbook (including sbuml serve); commits, imports and the like wait
up to 10 s for it to end. Killed at any moment, it loses nothing. With
--dry-run it prints its plan and changes nothing.`,
		Example: "  sbuml branch -d old && sbuml gc\n  sbuml gc --dry-run",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, _ []string) (*sbuml.GcReport, error) {
			bar := newBar()
			opts.OnProgress = func(p sbuml.GcProgress) {
				if p.Phase == "copying" {
					bar.update("gc: copying", p.Copied, p.Total, unitBytes)
				} else {
					bar.update("gc: marking", p.Marked, 0, unitObjects)
				}
			}
			r, err := s.Gc(ctx, opts)
			bar.done()
			return r, err
		}, printGc),
	}
	c.Flags().BoolVarP(&opts.DryRun, "dry-run", "n", false, "print what gc would keep and remove (its plan), remove nothing")
	addJSONFlag(c)
	return c
}

func printGc(r *sbuml.GcReport) {
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
}

func catObjectCmd() *cobra.Command {
	var raw bool
	c := &cobra.Command{
		Use:     "cat-object ID",
		Short:   "Print one object (plumbing)",
		Long:    "Print a stored object, decoded (--json for structure), or with --raw its canonical encoding. ID may be a unique prefix.",
		Example: "  sbuml cat-object 3fa9c2 --json\n  sbuml cat-object 3fa9c2 --raw | xxd | head",
		Args:    cobra.ExactArgs(1),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*objectReport, error) {
			if raw && flagJSON {
				return nil, usagef("cat-object: --raw and --json exclude each other")
			}
			id, err := s.ObjectID(ctx, args[0])
			if err != nil {
				return nil, err
			}
			enc, err := objects.Load(ctx, s.Objects, id)
			if err != nil {
				return nil, err
			}
			return decodeObject(id, enc, raw)
		}, (*objectReport).print),
	}
	c.Flags().BoolVar(&raw, "raw", false, "write the canonical encoding")
	addJSONFlag(c)
	return c
}

// objectReport is what cat-object reports: an object decoded.
type objectReport struct {
	ID   objects.ID `json:"id"`
	Kind string     `json:"kind"`
	// Object is the decoded object; a chunk is its length.
	Object any `json:"object"`

	enc  []byte // the canonical encoding, for --raw
	data []byte // a chunk's bytes
	raw  bool
}

// chunkInfo is a chunk in cat-object --json: its bytes are no JSON.
type chunkInfo struct {
	Length int `json:"length"`
}

func decodeObject(id objects.ID, enc []byte, raw bool) (*objectReport, error) {
	k, _ := objects.KindOf(enc)
	r := &objectReport{ID: id, Kind: k.String(), enc: enc, raw: raw}
	var err error
	switch k {
	case objects.KindChunk:
		r.data, err = objects.DecodeChunk(enc)
		r.Object = chunkInfo{Length: len(r.data)}
	case objects.KindIndex:
		if objects.VersionOf(enc) == objects.VersionPatch {
			r.Object, err = objects.DecodePatch(enc)
			break
		}
		r.Object, err = objects.DecodeIndex(enc)
	case objects.KindStream:
		r.Object, err = objects.DecodeStream(enc)
	case objects.KindTree:
		r.Object, err = objects.DecodeTree(enc)
	case objects.KindSnapshot:
		r.Object, err = objects.DecodeSnapshot(enc)
	}
	return r, err
}

// print writes the object as text: its canonical encoding with --raw, a
// chunk's bytes, else its kind, ID and decoded form.
func (r *objectReport) print() {
	switch {
	case r.raw:
		os.Stdout.Write(r.enc)
	case r.Kind == objects.KindChunk.String():
		os.Stdout.Write(r.data)
	default:
		fmt.Printf("%s %s\n", r.Kind, r.ID)
		printJSON(r.Object)
	}
}
