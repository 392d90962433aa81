// Package stream turns large byte streams (files, disks, RAM images) into
// stream objects and back.
//
// Writing: a Saver cuts a reader (a regular file is mapped, not read) into
// chunks (package chunker), hashes, seals and stores them on a pool of
// workers or on the goroutine that cut them, and builds the stream's index
// tree as the chunks come back in order. All-zero chunks become holes and
// cost nothing. Index nodes are cut at content-defined points (an entry
// ends a node when its ID matches the fanout mask), so changing one chunk
// of a large stream rewrites only the nodes on its path to the root.
// SaveStreamFrom stores a new version of a stream (a machine's RAM at its
// next snapshot) as the old stream's tree and a patch node listing the
// chunks that differ, when that is much smaller than a tree of its own.
//
// Reading: Extract writes a stream into a file, leaving holes as holes;
// Copy writes it to any io.Writer in order; Leaves lists its chunks and
// holes, with a patch merged in.
package stream
