package ui_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sbuml/sbuml/ui"
)

// TestLayout runs the graph's layout (graph.js, in Chromium) on small
// histories: which lane each snapshot gets, and which lane each edge runs
// down.
func TestLayout(t *testing.T) {
	s := importSnapshots(t, 1)
	base := serve(t, s.Dir, "", ui.Options{})
	ctx := browser(t, 2*time.Minute)
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	type node struct {
		ID      string   `json:"id"`
		Parents []string `json:"parents"`
	}
	for _, tc := range []struct {
		name  string
		nodes []node // newest first, as log lists them
		lanes []int
		edges []string // from>to@lane
	}{
		{"a line", []node{{"c", []string{"b"}}, {"b", []string{"a"}}, {"a", nil}}, []int{0, 0, 0}, []string{"0>1@0", "1>2@0"}},
		{"a fork", []node{{"b2", []string{"a"}}, {"b1", []string{"a"}}, {"a", nil}}, []int{0, 1, 0}, []string{"0>2@0", "1>2@1"}},
		{"a merge", []node{{"m", []string{"x", "y"}}, {"y", []string{"r"}}, {"x", []string{"r"}}, {"r", nil}}, []int{0, 1, 0, 0}, []string{"0>2@0", "0>1@1", "1>3@1", "2>3@0"}},
		{"two histories", []node{{"b", []string{"a"}}, {"y", []string{"x"}}, {"a", nil}, {"x", nil}}, []int{0, 1, 0, 1}, []string{"0>2@0", "1>3@1"}},
		{"a parent above its child", []node{{"p", nil}, {"c", []string{"p"}}}, []int{0, 0}, []string{"1>0@0"}},
		{"a parent not listed", []node{{"c", []string{"gone"}}}, []int{0}, nil},
	} {
		in, _ := json.Marshal(tc.nodes)
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`import("/graph.js").then(g => {
			const l = g.layout(%s);
			return JSON.stringify({lanes: l.nodes.map(n => n.lane), edges: l.edges.map(e => e.from + ">" + e.to + "@" + e.lane)});
		})`, in), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Lanes []int
			Edges []string
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Lanes, tc.lanes) || strings.Join(got.Edges, " ") != strings.Join(tc.edges, " ") {
			t.Errorf("%s: lanes %v, edges %v; want lanes %v, edges %v", tc.name, got.Lanes, got.Edges, tc.lanes, tc.edges)
		}
	}
}
