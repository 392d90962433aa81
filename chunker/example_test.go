package chunker_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"

	"github.com/sbuml/sbuml/chunker"
)

// Chunking a sparse stream: 1 MiB of random data between two zero runs.
// All-zero chunks are the ones a store keeps as holes.
func ExampleChunker() {
	data := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{}).Read(data)
	stream := io.MultiReader(
		bytes.NewReader(make([]byte, 600<<10)),
		bytes.NewReader(data),
		bytes.NewReader(make([]byte, 300<<10)))

	c, err := chunker.New(stream, chunker.Default)
	if err != nil {
		log.Fatal(err)
	}
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(len(chunk), chunker.IsZero(chunk))
	}
	// Output:
	// 262144 true
	// 262144 true
	// 98507 false
	// 66726 false
	// 97317 false
	// 76604 false
	// 76666 false
	// 87906 false
	// 85320 false
	// 89041 false
	// 79065 false
	// 82535 false
	// 88777 false
	// 26902 false
	// 84027 false
	// 26055 false
	// 38573 false
	// 262144 false
	// 79723 true
}

// Cutting data that is already in memory.
func ExampleParams_Cut() {
	data := make([]byte, 10000)
	rand.NewChaCha8([32]byte{1}).Read(data)
	p := chunker.Params{Kind: chunker.FastCDC, Min: 512, Avg: 2048, Max: 8192}
	for len(data) > 0 {
		n := p.Cut(data)
		fmt.Print(n, " ")
		data = data[n:]
	}
	fmt.Println()
	// Output: 2159 2447 2536 2845 13
}
