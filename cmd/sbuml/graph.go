package main

import (
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

// drawGraph prefixes log lines with a column graph of parent links, in the
// manner of git log --graph: each column is a line of history waiting for
// its next snapshot.
func drawGraph(entries []sbuml.LogEntry, lines []string) []string {
	var cols []objects.ID // the snapshot each column waits for
	out := make([]string, 0, len(lines))
	for i, e := range entries {
		at := -1
		for c, id := range cols {
			if id == e.ID {
				if at < 0 {
					at = c
				} else {
					cols[c] = objects.Zero // merged into at
				}
			}
		}
		if at < 0 {
			at = len(cols)
			cols = append(cols, e.ID)
		}
		var b strings.Builder
		for c, id := range cols {
			switch {
			case c == at:
				b.WriteString("* ")
			case id.IsZero():
				b.WriteString("  ")
			default:
				b.WriteString("| ")
			}
		}
		out = append(out, b.String()+lines[i])
		// The column now waits for the first parent; other parents get new columns.
		if len(e.Parents) == 0 {
			cols[at] = objects.Zero
		} else {
			cols[at] = e.Parents[0]
			for _, p := range e.Parents[1:] {
				cols = append(cols, p)
			}
		}
		for len(cols) > 0 && cols[len(cols)-1].IsZero() {
			cols = cols[:len(cols)-1]
		}
	}
	return out
}
