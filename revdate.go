package sbuml

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// splitAt splits "m1@{10 minutes ago}" into "m1" and "10 minutes ago". ok
// is false for a revision without an @{...} suffix.
func splitAt(rev string) (name, spec string, ok bool) {
	i := strings.LastIndex(rev, "@{")
	if i < 0 || !strings.HasSuffix(rev, "}") {
		return rev, "", false
	}
	return rev[:i], rev[i+2 : len(rev)-1], true
}

// ParseRevDate reads the date in a NAME@{DATE} revision, as git reads
// reflog dates: "now", "yesterday", "N UNITS ago" (second, minute, hour,
// day, week, month = 30 days, year = 365 days; singular, plural or
// abbreviated: "10 min ago", "2 hours ago"), an absolute local time
// "2026-12-06", "2026-12-06 10:00", "2026-12-06 10:00:30" (a T may replace
// the space), RFC 3339 with a zone, or "@UNIXSECONDS".
func ParseRevDate(spec string, now time.Time) (time.Time, error) {
	s := strings.TrimSpace(strings.ToLower(spec))
	switch s {
	case "now":
		return now, nil
	case "yesterday":
		return now.AddDate(0, 0, -1), nil
	}
	if secs, ok := strings.CutPrefix(s, "@"); ok {
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad date %q: @ must be followed by seconds since 1970", spec)
		}
		return time.Unix(n, 0), nil
	}
	if ago, ok := strings.CutSuffix(s, " ago"); ok {
		return parseAgo(spec, ago, now)
	}
	if t, err := time.Parse(time.RFC3339, strings.ToUpper(s)); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02t15:04:05", "2006-01-02 15:04", "2006-01-02t15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad date %q: want \"10 minutes ago\", \"2026-12-06 10:00\", \"yesterday\", \"now\" or \"@SECONDS\"", spec)
}

// units are the "N UNITS ago" units, by their accepted spellings.
var units = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
	"month": 30 * 24 * time.Hour, "months": 30 * 24 * time.Hour,
	"y": 365 * 24 * time.Hour, "year": 365 * 24 * time.Hour, "years": 365 * 24 * time.Hour,
}

// parseAgo reads "10 minutes" and "1 hour 30 minutes" (of "... ago").
func parseAgo(spec, s string, now time.Time) (time.Time, error) {
	fields := strings.Fields(strings.ReplaceAll(s, ",", " "))
	if len(fields) == 0 || len(fields)%2 != 0 {
		return time.Time{}, fmt.Errorf("bad date %q: want a number and a unit before \"ago\", like \"10 minutes ago\"", spec)
	}
	var d time.Duration
	for i := 0; i < len(fields); i += 2 {
		n, err := strconv.ParseFloat(fields[i], 64)
		unit, known := units[fields[i+1]]
		if err != nil || n < 0 || !known {
			return time.Time{}, fmt.Errorf("bad date %q: %q %q is not a count and a unit (seconds, minutes, hours, days, weeks, months, years)", spec, fields[i], fields[i+1])
		}
		d += time.Duration(n * float64(unit))
	}
	return now.Add(-d), nil
}

// resolveAt resolves NAME@{DATE}: the last snapshot of machine or branch
// name taken at or before the date. A machine's snapshots are its
// branch's first-parent history, its automatic snapshots
// (refs/autosnap/NAME/...) and the snapshot it continues from.
func (s *Scrapbook) resolveAt(ctx context.Context, name, spec string) (objects.ID, error) {
	at, err := ParseRevDate(spec, time.Now())
	if err != nil {
		return objects.Zero, fmt.Errorf("resolve %s@{%s}: %w", name, spec, err)
	}
	cands, err := s.snapshotsOf(ctx, name)
	if err != nil {
		return objects.Zero, fmt.Errorf("resolve %s@{%s}: %w", name, spec, err)
	}
	if len(cands) == 0 {
		return objects.Zero, fmt.Errorf("resolve %s@{%s}: %q is no machine or branch with snapshots", name, spec, name)
	}
	var best objects.ID
	var bestTime, oldest time.Time
	for id, t := range cands {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
		if !t.After(at) && (best.IsZero() || t.After(bestTime) || t.Equal(bestTime) && id.String() > best.String()) {
			best, bestTime = id, t
		}
	}
	if best.IsZero() {
		return objects.Zero, fmt.Errorf("resolve %s@{%s}: no snapshot of %s at or before %s (the oldest is from %s)",
			name, spec, name, at.Local().Format("2006-01-02 15:04:05"), oldest.Local().Format("2006-01-02 15:04:05"))
	}
	return best, nil
}

// snapshotsOf returns the snapshots of a machine or branch with their
// times (see resolveAt).
func (s *Scrapbook) snapshotsOf(ctx context.Context, name string) (map[objects.ID]time.Time, error) {
	var starts []objects.ID
	if id, err := s.tip("refs/heads/" + name); err != nil {
		return nil, err
	} else if !id.IsZero() {
		starts = append(starts, id)
	}
	if ValidateMachineName(name) == nil {
		if h, err := readHead(filepath.Join(s.MachinesDir(), name)); err == nil && !h.Snapshot.IsZero() {
			starts = append(starts, h.Snapshot)
		}
	}
	out := map[objects.ID]time.Time{}
	for _, id := range starts {
		// First parents only: a merged-in line is another machine's.
		for !id.IsZero() {
			if _, seen := out[id]; seen {
				break
			}
			sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
			if err != nil {
				return nil, err
			}
			out[id] = sn.Time
			id = objects.Zero
			if len(sn.Parents) > 0 {
				id = sn.Parents[0]
			}
		}
	}
	_, autos, err := s.autosnaps(ctx, name)
	if err != nil {
		return nil, err
	}
	for _, id := range autos {
		if _, seen := out[id]; seen {
			continue
		}
		sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
		if err != nil {
			return nil, err
		}
		out[id] = sn.Time
	}
	return out, nil
}
