// Package retention decides which snapshots of a series to keep, with the
// semantics of restic's forget: keep the last N, the newest snapshot of
// each of the last N hours, days, weeks, months and years that have one,
// and everything within a duration of the newest snapshot. A snapshot kept
// by any rule is kept; the rest are removed.
package retention

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Policy says what to keep. Zero fields keep nothing by that rule; a
// Policy whose every field is zero keeps everything (see Empty).
type Policy struct {
	Last    int           `json:"keep_last,omitempty"`    // the N newest snapshots
	Hourly  int           `json:"keep_hourly,omitempty"`  // the newest of each of the last N hours with a snapshot
	Daily   int           `json:"keep_daily,omitempty"`   // ... days
	Weekly  int           `json:"keep_weekly,omitempty"`  // ... ISO weeks
	Monthly int           `json:"keep_monthly,omitempty"` // ... months
	Yearly  int           `json:"keep_yearly,omitempty"`  // ... years
	Within  time.Duration `json:"keep_within,omitempty"`  // everything at most this much older than the newest snapshot
}

// Empty reports whether the policy names no rule: then nothing is removed.
func (p Policy) Empty() bool { return p == Policy{} }

// Validate rejects negative counts and durations.
func (p Policy) Validate() error {
	for _, r := range p.rules() {
		if r.n < 0 {
			return fmt.Errorf("keep-%s %d: want a count of 0 or more", r.name, r.n)
		}
	}
	if p.Within < 0 {
		return fmt.Errorf("keep-within %v: want a duration of 0 or more", p.Within)
	}
	return nil
}

// String describes the policy as command-line flags would, e.g.
// "--keep-last 5 --keep-hourly 1".
func (p Policy) String() string {
	var parts []string
	for _, r := range p.rules() {
		if r.n > 0 {
			parts = append(parts, fmt.Sprintf("--keep-%s %d", r.name, r.n))
		}
	}
	if p.Within > 0 {
		parts = append(parts, "--keep-within "+p.Within.String())
	}
	if len(parts) == 0 {
		return "keep everything"
	}
	return strings.Join(parts, " ")
}

// rule is one of the counting rules: keep the newest snapshot of each of
// the last n buckets that hold one.
type rule struct {
	name   string
	n      int
	bucket func(time.Time) string
}

func (p Policy) rules() []rule {
	return []rule{
		{"last", p.Last, nil}, // every snapshot is a bucket of its own
		{"hourly", p.Hourly, func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{"daily", p.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time) string { return t.Format("2006") }},
	}
}

// Item is one snapshot of the series.
type Item struct {
	ID   string    // any identifier; returned as given
	Time time.Time // when the snapshot was taken
}

// Decision is the fate of one item.
type Decision struct {
	Item
	Keep bool
	// Reasons lists the rules that keep it, e.g. "last", "hourly",
	// "within"; empty for an item to remove.
	Reasons []string
}

// Apply decides, for every item, whether p keeps it. Buckets are taken in
// loc (hours and days are local ones, as restic's are); nil means
// time.Local. The decisions come newest first; items with equal times are
// ordered by ID, so the result does not depend on the input order.
func Apply(items []Item, p Policy, loc *time.Location) []Decision {
	if loc == nil {
		loc = time.Local
	}
	ds := make([]Decision, len(items))
	for i, it := range items {
		ds[i] = Decision{Item: it}
	}
	sort.SliceStable(ds, func(i, j int) bool {
		if !ds[i].Time.Equal(ds[j].Time) {
			return ds[i].Time.After(ds[j].Time)
		}
		return ds[i].ID > ds[j].ID
	})
	if p.Empty() {
		for i := range ds {
			ds[i].Keep, ds[i].Reasons = true, []string{"no policy"}
		}
		return ds
	}
	for _, r := range p.rules() {
		left, last := r.n, ""
		for i := range ds {
			if left == 0 {
				break
			}
			b := ds[i].ID // "last": each snapshot is its own bucket
			if r.bucket != nil {
				b = r.bucket(ds[i].Time.In(loc))
			}
			if i > 0 && b == last {
				continue
			}
			last = b
			ds[i].Reasons = append(ds[i].Reasons, r.name)
			left--
		}
	}
	if p.Within > 0 && len(ds) > 0 {
		cutoff := ds[0].Time.Add(-p.Within)
		for i := range ds {
			if !ds[i].Time.Before(cutoff) {
				ds[i].Reasons = append(ds[i].Reasons, "within")
			}
		}
	}
	for i := range ds {
		ds[i].Keep = len(ds[i].Reasons) > 0
	}
	return ds
}
