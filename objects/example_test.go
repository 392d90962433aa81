package objects_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/go-git/go-billy/v5/memfs"

	"github.com/sbuml/sbuml/objects"
)

// Save a symlink target and a tree naming it, then load the tree back and
// follow its entry. Save seals (compresses when worthwhile) and stores;
// the loaders unseal, verify the ID and decode.
func Example() {
	ctx := context.Background()
	store := objects.NewLoose(memfs.New(), "objects", "")

	target, _, err := objects.Save(ctx, store, objects.EncodeChunk([]byte("disk.img")))
	if err != nil {
		log.Fatal(err)
	}
	tree := &objects.Tree{Entries: []objects.TreeEntry{
		{Name: "latest", Kind: objects.EntrySymlink, Mode: 0o777, Size: 8, ID: target},
	}}
	treeID, _, err := objects.Save(ctx, store, tree.Encode())
	if err != nil {
		log.Fatal(err)
	}

	loaded, err := objects.LoadTree(ctx, store, treeID)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range loaded.Entries {
		link, err := objects.LoadChunk(ctx, store, e.ID)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s -> %s\n", e.Kind, e.Name, link)
	}
	fmt.Println("tree", treeID.Short())
	// Output:
	// symlink latest -> disk.img
	// tree 718803ae177d
}

// Seal keeps incompressible encodings as they are and compresses the
// rest; Unseal reverses either and checks the content against the ID.
func ExampleSeal() {
	text := objects.EncodeChunk(bytes.Repeat([]byte("kernel: all good\n"), 1000))
	stored := objects.Seal(text, nil)
	fmt.Println("stored in under a tenth:", len(stored) < len(text)/10)

	enc, err := objects.Unseal(objects.Sum(text), stored)
	fmt.Println(bytes.Equal(enc, text), err)

	stored[len(stored)/2] ^= 1
	_, err = objects.Unseal(objects.Sum(text), stored)
	fmt.Println(errors.Is(err, objects.ErrCorrupt))
	// Output:
	// stored in under a tenth: true
	// true <nil>
	// true
}
