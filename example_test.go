package sbuml_test

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/sbuml/sbuml"
)

// Keep a directory of notes in a scrapbook: import it, change it, import
// it again, and list the history.
func Example() {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "sbuml-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	s, err := sbuml.Init(filepath.Join(work, "scrapbook"))
	if err != nil {
		log.Fatal(err)
	}
	notes := filepath.Join(work, "notes")
	if err := os.CopyFS(notes, os.DirFS("testdata/scrapbook/notes")); err != nil {
		log.Fatal(err)
	}
	first, err := s.Import(ctx, notes, sbuml.SnapshotOptions{Message: "notes as found"})
	if err != nil {
		log.Fatal(err)
	}
	// Each file is a chunk, an index node and a stream; then two trees
	// and the snapshot.
	fmt.Printf("first import: %d bytes in %d new objects\n", first.LogicalBytes, first.Stats.NewObjects)

	done := []byte("Done: the scrapbook holds every step.\n")
	if err := os.WriteFile(filepath.Join(notes, "2024", "03-done.txt"), done, 0o644); err != nil {
		log.Fatal(err)
	}
	second, err := s.Import(ctx, notes, sbuml.SnapshotOptions{Message: "add 03-done.txt"})
	if err != nil {
		log.Fatal(err)
	}
	// New: the file's chunk, index node and stream, the two trees above
	// it, and the snapshot. The other files are not stored again.
	fmt.Printf("second import: %d bytes in %d new objects\n", second.LogicalBytes, second.Stats.NewObjects)
	fmt.Println("its parent is the first:", second.Parent == first.ID)

	history, err := s.Log(ctx, sbuml.LogOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range history {
		fmt.Printf("%-16s %d bytes, %d parent(s), refs %v\n", e.Message, e.LogicalBytes, len(e.Parents), e.Refs)
	}
	// Output:
	// first import: 280 bytes in 12 new objects
	// second import: 318 bytes in 6 new objects
	// its parent is the first: true
	// add 03-done.txt  318 bytes, 1 parent(s), refs [refs/heads/main]
	// notes as found   280 bytes, 0 parent(s), refs []
}

// Write the files of a snapshot back into a directory.
func ExampleScrapbook_Export() {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "sbuml-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	s, err := sbuml.Init(filepath.Join(work, "scrapbook"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := s.Import(ctx, "testdata/scrapbook/notes", sbuml.SnapshotOptions{}); err != nil {
		log.Fatal(err)
	}

	out := filepath.Join(work, "restored")
	if _, err := s.Export(ctx, "main", out); err != nil {
		log.Fatal(err)
	}
	err = filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == out {
			return err
		}
		rel, _ := filepath.Rel(out, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			fmt.Printf("%s/\n", rel)
		} else {
			fmt.Printf("%s %d bytes\n", rel, info.Size())
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 2024/
	// 2024/01-start.txt 64 bytes
	// 2024/02-progress.txt 93 bytes
	// README.txt 123 bytes
}
