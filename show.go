package sbuml

import (
	"context"
	"fmt"
	"path"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
)

// ShowResult describes one snapshot and everything in its tree.
type ShowResult struct {
	LogEntry
	Tree  objects.ID  `json:"tree"`
	Files []ShowEntry `json:"files"`
}

// ShowEntry is one path in a snapshot's tree.
type ShowEntry struct {
	Path string     `json:"path"`
	Kind string     `json:"kind"`
	Mode uint32     `json:"mode"`
	Size uint64     `json:"size"`
	ID   objects.ID `json:"id"`
	// For files: how the stream was cut and what it holds.
	Chunking  string `json:"chunking,omitempty"`
	Chunks    int    `json:"chunks,omitempty"`
	HoleBytes uint64 `json:"hole_bytes,omitempty"`
}

// Show describes snapshot rev: its log entry (with the bytes it added to
// its history) and every path in its tree.
func (s *Scrapbook) Show(ctx context.Context, rev string) (*ShowResult, error) {
	id, err := s.Resolve(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	entries, err := s.Log(ctx, LogOptions{Revs: []string{id.String()}, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return nil, fmt.Errorf("show: %w", err)
	}
	res := &ShowResult{LogEntry: entries[0], Tree: sn.Tree, Files: []ShowEntry{}}
	var walk func(dir string, tree objects.ID) error
	walk = func(dir string, tree objects.ID) error {
		t, err := objects.LoadTree(ctx, s.Objects, tree)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			se := ShowEntry{Path: path.Join(dir, e.Name), Kind: e.Kind.String(), Mode: e.Mode, Size: e.Size, ID: e.ID}
			switch e.Kind {
			case objects.EntryFile:
				st, err := objects.LoadStream(ctx, s.Objects, e.ID)
				if err != nil {
					return err
				}
				se.Chunking = stream.ParamsOf(st).Chunking.String()
				if err := stream.Leaves(ctx, s.Objects, st, func(l stream.Leaf) error {
					if l.ID.IsZero() {
						se.HoleBytes += l.Length
					} else {
						se.Chunks++
					}
					return nil
				}); err != nil {
					return err
				}
			case objects.EntryDir:
				res.Files = append(res.Files, se)
				if err := walk(se.Path, e.ID); err != nil {
					return err
				}
				continue
			}
			res.Files = append(res.Files, se)
		}
		return nil
	}
	if err := walk("", sn.Tree); err != nil {
		return nil, fmt.Errorf("show %s: %w", id.Short(), err)
	}
	return res, nil
}
