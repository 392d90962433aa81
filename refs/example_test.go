package refs_test

import (
	"errors"
	"fmt"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

func Example() {
	s := refs.New(memfs.New()) // osfs.New(scrapbookDir) on disk
	first := objects.Sum([]byte("first snapshot"))
	second := objects.Sum([]byte("second snapshot"))

	// HEAD names the current branch, which does not exist until the
	// first update through HEAD creates it.
	if err := s.SetSymbolic("HEAD", "refs/heads/main"); err != nil {
		panic(err)
	}
	if err := s.Update("HEAD", objects.Zero, first, "save: first"); err != nil {
		panic(err)
	}

	// Two writers both read first and try to move the branch on; the
	// second one loses and must read again.
	fmt.Println(s.Update("refs/heads/main", first, second, "save: second"))
	err := s.Update("refs/heads/main", first, second, "save: second again")
	fmt.Println(errors.Is(err, refs.ErrConflict))

	head, _ := s.Get("HEAD")
	fmt.Println(head == second)
	log, _ := s.Reflog("refs/heads/main")
	for _, e := range log {
		fmt.Printf("%s -> %s %s\n", e.Old.Short(), e.New.Short(), e.Why)
	}
	// Output:
	// <nil>
	// true
	// true
	// 000000000000 -> 29dd27f496e5 save: first
	// 29dd27f496e5 -> 477400f963f3 save: second
}
