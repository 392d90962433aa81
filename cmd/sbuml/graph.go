package main

import (
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
)

// drawGraph prefixes log lines with a column graph of parent links, in the
// manner of git log --graph: each column is a line of history waiting for
// its next snapshot. Where lines of history fork from one snapshot, a
// connector line joins them ("|/"); where a history ends and an unrelated
// one starts in the same column, a blank graph line separates them, so
// that neither looks like the other's parent.
func drawGraph(entries []sbuml.LogEntry, lines []string) []string {
	var cols []objects.ID // the snapshot each column waits for
	out := make([]string, 0, len(lines))
	ended := -1 // column whose history ended on the previous line
	for i, e := range entries {
		at := -1
		var joining []int
		for c, id := range cols {
			if id == e.ID {
				if at < 0 {
					at = c
				} else {
					joining = append(joining, c)
				}
			}
		}
		if len(joining) > 0 {
			out = append(out, joinLine(cols, at, joining))
			for _, c := range joining {
				cols[c] = objects.Zero
			}
			cols = trimColumns(cols)
		}
		if at < 0 {
			// Not awaited: the tip of a history of its own, in the first
			// free column.
			for c, id := range cols {
				if id.IsZero() {
					at = c
					break
				}
			}
			if at < 0 {
				at = len(cols)
				cols = append(cols, objects.Zero)
			}
			cols[at] = e.ID
			if at == ended {
				out = append(out, strings.TrimRight(rowOf(cols, at, ' '), " "))
			}
		}
		out = append(out, rowOf(cols, at, '*')+lines[i])
		// The column now waits for the first parent; other parents get new columns.
		ended = -1
		if len(e.Parents) == 0 {
			cols[at] = objects.Zero
			ended = at
		} else {
			cols[at] = e.Parents[0]
			for _, p := range e.Parents[1:] {
				cols = append(cols, p)
			}
		}
		cols = trimColumns(cols)
	}
	return out
}

// trimColumns drops the free columns at the right.
func trimColumns(cols []objects.ID) []objects.ID {
	for len(cols) > 0 && cols[len(cols)-1].IsZero() {
		cols = cols[:len(cols)-1]
	}
	return cols
}

// rowOf draws one graph row: mark in column at, '|' in the columns
// waiting for a snapshot, blanks elsewhere.
func rowOf(cols []objects.ID, at int, mark byte) string {
	var b strings.Builder
	for c, id := range cols {
		switch {
		case c == at:
			b.WriteByte(mark)
		case id.IsZero():
			b.WriteByte(' ')
		default:
			b.WriteByte('|')
		}
		b.WriteByte(' ')
	}
	return b.String()
}

// joinLine draws the columns in joining folding into column at: a '/'
// leaning from each towards the column on its left.
func joinLine(cols []objects.ID, at int, joining []int) string {
	row := []byte(rowOf(cols, at, '|'))
	for _, c := range joining {
		row[2*c] = ' '
		row[2*c-1] = '/'
	}
	return strings.TrimRight(string(row), " ")
}
