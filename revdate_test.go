package sbuml

import (
	"testing"
	"time"
)

func TestParseRevDate(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, loc)
	tests := []struct {
		spec string
		want time.Time
	}{
		{"now", now},
		{"yesterday", now.AddDate(0, 0, -1)},
		{"10 minutes ago", now.Add(-10 * time.Minute)},
		{"1 minute ago", now.Add(-time.Minute)},
		{"10 min ago", now.Add(-10 * time.Minute)},
		{"2 hours 30 minutes ago", now.Add(-150 * time.Minute)},
		{"1 day, 2 hours ago", now.Add(-26 * time.Hour)},
		{"1.5 hours ago", now.Add(-90 * time.Minute)},
		{"3 weeks ago", now.Add(-21 * 24 * time.Hour)},
		{" 5 Seconds Ago ", now.Add(-5 * time.Second)},
		{"2026-12-06 10:00", time.Date(2026, 12, 6, 10, 0, 0, 0, loc)},
		{"2026-12-06T10:00:30", time.Date(2026, 12, 6, 10, 0, 30, 0, loc)},
		{"2026-12-05", time.Date(2026, 12, 5, 0, 0, 0, 0, loc)},
		{"2026-12-06T09:00:00Z", time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)},
		{"@1796000000", time.Unix(1796000000, 0)},
	}
	for _, tt := range tests {
		got, err := ParseRevDate(tt.spec, now)
		if err != nil {
			t.Errorf("%q: %v", tt.spec, err)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("%q = %v, want %v", tt.spec, got, tt.want)
		}
	}
	for _, bad := range []string{"", "soon", "ten minutes ago", "10 parsecs ago", "10 ago", "-1 hours ago", "2026-13-01", "@x"} {
		if _, err := ParseRevDate(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSplitAt(t *testing.T) {
	tests := []struct {
		rev, name, spec string
		ok              bool
	}{
		{"m1@{10 minutes ago}", "m1", "10 minutes ago", true},
		{"m1@{2026-12-06 10:00}", "m1", "2026-12-06 10:00", true},
		{"m1", "m1", "", false},
		{"m1@{x", "m1@{x", "", false},
	}
	for _, tt := range tests {
		name, spec, ok := splitAt(tt.rev)
		if name != tt.name || spec != tt.spec || ok != tt.ok {
			t.Errorf("splitAt(%q) = %q, %q, %v", tt.rev, name, spec, ok)
		}
	}
}
