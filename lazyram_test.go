package sbuml

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// TestStorePagesBeforeTable reads every page of a RAM stream from
// storePages before its table of all pages is built (through the index
// nodes above each page: the table is only built for Data) and after,
// and checks both against the RAM.
func TestStorePagesBeforeTable(t *testing.T) {
	const n = 2048 // 8 MiB: several index nodes
	ram := make([]byte, n*vmm.PageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for p := range n {
		if p%3 != 0 { // every third page a hole
			for i := p * vmm.PageSize; i < (p+1)*vmm.PageSize; i += 8 {
				ram[i] = byte(rng.Uint32())
			}
		}
	}
	s, err := Init(filepath.Join(t.TempDir(), "book"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	id, _, err := saver.SaveStream(ctx, bytes.NewReader(ram), RAMParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, wait := range []bool{false, true} {
		sp, err := newStorePages(ctx, s.Objects, id, int64(len(ram)))
		if err != nil {
			t.Fatal(err)
		}
		if wait {
			sp.buildTable()
			<-sp.ready
		}
		buf := make([]byte, vmm.PageSize)
		for p := range n {
			want := ram[p*vmm.PageSize : (p+1)*vmm.PageSize]
			zero, err := sp.ReadPage(uint64(p*vmm.PageSize), buf)
			if err != nil {
				t.Fatal(err)
			}
			if zero != (p%3 == 0) || (!zero && !bytes.Equal(buf, want)) {
				t.Fatalf("table built %v: page %d read wrong (zero %v)", wait, p, zero)
			}
		}
	}
}
