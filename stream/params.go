package stream

import (
	"fmt"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// Params says how a stream is cut into chunks and how wide its index
// nodes are. Both are recorded in the stream object.
type Params struct {
	Chunking chunker.Params
	// Fanout is the average number of entries per index node, a power of
	// two. Nodes are cut at content-defined points and hold at most
	// 4*Fanout entries.
	Fanout uint32
}

// Files is the parameter set for files and disks: FastCDC with 64 KiB
// average chunks.
var Files = Params{Chunking: chunker.Default, Fanout: 64}

// Validate checks p.
func (p Params) Validate() error {
	if err := p.Chunking.Validate(); err != nil {
		return err
	}
	if p.Fanout < 2 || p.Fanout > 1<<16 || p.Fanout&(p.Fanout-1) != 0 {
		return fmt.Errorf("index fanout %d is not a power of two between 2 and 65536", p.Fanout)
	}
	return nil
}

func (p Params) chunking() objects.Chunking {
	c := p.Chunking
	return objects.Chunking{Algorithm: uint8(c.Kind), Min: c.Min, Avg: c.Avg, Max: c.Max}
}

// ParamsOf returns the parameters recorded in a stream object.
func ParamsOf(s *objects.Stream) Params {
	c := s.Chunking
	return Params{
		Chunking: chunker.Params{Kind: chunker.Kind(c.Algorithm), Min: c.Min, Avg: c.Avg, Max: c.Max},
		Fanout:   s.Fanout,
	}
}
