package retention

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// series returns n items taken every step, the first at start, named
// by their index.
func series(start time.Time, step time.Duration, n int) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{ID: fmt.Sprintf("s%02d", i), Time: start.Add(time.Duration(i) * step)}
	}
	return items
}

func kept(ds []Decision) []string {
	var ids []string
	for _, d := range ds {
		if d.Keep {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

func TestApply(t *testing.T) {
	start := time.Date(2026, 12, 6, 9, 40, 0, 0, time.UTC)
	tests := []struct {
		name  string
		items []Item
		p     Policy
		want  []string
	}{
		{"empty policy keeps all", series(start, time.Minute, 3), Policy{}, []string{"s02", "s01", "s00"}},
		{"last 2", series(start, time.Minute, 5), Policy{Last: 2}, []string{"s04", "s03"}},
		{"last more than there are", series(start, time.Minute, 2), Policy{Last: 9}, []string{"s01", "s00"}},
		// Every 30 s for 10 minutes: keep-hourly 1 keeps the newest,
		// which keep-last keeps anyway.
		{"every 30s for 10 min, last 5 hourly 1", series(start, 30*time.Second, 20), Policy{Last: 5, Hourly: 1},
			[]string{"s19", "s18", "s17", "s16", "s15"}},
		// Every 15 minutes from 09:40: hours 09 (s00, s01), 10 (s02-s05), 11 (s06-s09).
		{"hourly 2", series(start, 15*time.Minute, 10), Policy{Hourly: 2}, []string{"s09", "s05"}},
		{"hourly 9 stops at the series' hours", series(start, 15*time.Minute, 10), Policy{Hourly: 9}, []string{"s09", "s05", "s01"}},
		{"last 1 and hourly 3 overlap", series(start, 15*time.Minute, 10), Policy{Last: 1, Hourly: 3}, []string{"s09", "s05", "s01"}},
		{"daily 2 over three days", series(start, 12*time.Hour, 6), Policy{Daily: 2}, []string{"s05", "s03"}},
		{"within 20 minutes of the newest", series(start, 10*time.Minute, 5), Policy{Within: 20 * time.Minute}, []string{"s04", "s03", "s02"}},
		// Daily from Sunday 6 December 2026: s07 is the Sunday ending the week before s09's.
		{"weekly 2", series(start, 24*time.Hour, 10), Policy{Weekly: 2}, []string{"s09", "s07"}},
		{"monthly and yearly", series(start, 20*24*time.Hour, 4), Policy{Monthly: 1, Yearly: 2}, []string{"s03", "s01"}},
		{"no items", nil, Policy{Last: 3}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kept(Apply(tt.items, tt.p, time.UTC))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

func TestApplyOrderAndReasons(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	items := series(start, time.Hour, 3)
	items[0], items[2] = items[2], items[0] // order of input must not matter
	ds := Apply(items, Policy{Last: 1, Hourly: 2}, time.UTC)
	want := []Decision{
		{Item: Item{"s02", start.Add(2 * time.Hour)}, Keep: true, Reasons: []string{"last", "hourly"}},
		{Item: Item{"s01", start.Add(time.Hour)}, Keep: true, Reasons: []string{"hourly"}},
		{Item: Item{"s00", start}},
	}
	if !reflect.DeepEqual(ds, want) {
		t.Errorf("got %+v\nwant %+v", ds, want)
	}
}

func TestValidateAndString(t *testing.T) {
	if err := (Policy{Last: -1}).Validate(); err == nil {
		t.Error("negative count accepted")
	}
	if err := (Policy{Within: -time.Second}).Validate(); err == nil {
		t.Error("negative duration accepted")
	}
	if got, want := (Policy{Last: 5, Hourly: 1, Within: time.Hour}).String(), "--keep-last 5 --keep-hourly 1 --keep-within 1h0m0s"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}
