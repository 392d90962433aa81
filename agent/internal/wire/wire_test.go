package wire

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"strings"
	"testing"
)

func hello(s string) Frame { return Frame{Type: Hello, Payload: []byte(s)} }

// readAll returns every frame r yields until the end of its input,
// counting the corrupt frames it reported on the way.
func readAll(t testing.TB, r *Reader) (frames []Frame, corrupt int) {
	t.Helper()
	for {
		f, err := r.Next()
		switch {
		case errors.Is(err, ErrCorrupt):
			corrupt++
			continue
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return frames, corrupt
		case err != nil:
			t.Fatalf("Next: %v", err)
		}
		f.Payload = bytes.Clone(f.Payload)
		frames = append(frames, f)
	}
}

func TestRoundTrip(t *testing.T) {
	frames := []Frame{
		hello(`{"v":1}`),
		{Type: Msg, Payload: []byte(`{"op":"ping"}`)},
		{Type: Open, Session: 7, Payload: []byte(`{"kind":"exec"}`)},
		{Type: Data, Session: 7, Stream: 1, Payload: bytes.Repeat([]byte{0xf0, 'S', 'B', 'A'}, MaxPayload/4)},
		{Type: Data, Session: 7, Stream: 2, Payload: []byte{}},
		{Type: Close, Session: 7, Stream: 1, Payload: []byte{}},
		{Type: Window, Session: 1 << 31, Stream: 0, Payload: []byte{0, 0, 4, 0}},
	}
	var b []byte
	for _, f := range frames {
		b = Append(b, f)
	}
	got, corrupt := readAll(t, NewReader(bytes.NewReader(b)))
	if corrupt != 0 || !reflect.DeepEqual(got, frames) {
		t.Fatalf("read back %d frames (%d corrupt), want %d equal to those written", len(got), corrupt, len(frames))
	}
}

func TestAppendRejectsLongPayload(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Append of an oversized payload did not panic")
		}
	}()
	Append(nil, Frame{Type: Data, Payload: make([]byte, MaxPayload+1)})
}

// TestCorrupt damages one frame between two good ones: the reader reports
// it, skips to the next Hello, and ignores the non-Hello frames between.
func TestCorrupt(t *testing.T) {
	good := Frame{Type: Msg, Payload: []byte("before")}
	bad := Frame{Type: Data, Session: 3, Stream: 1, Payload: []byte("payload")}
	tests := []struct {
		name   string
		damage func(b []byte) // b is the encoded bad frame
		reason string
	}{
		{"magic", func(b []byte) { b[0] = 'x' }, "bad magic"},
		{"header checksum", func(b []byte) { b[9]++ }, "header checksum"},
		{"payload checksum", func(b []byte) { b[HeaderSize]++ }, "payload checksum"},
		{"reserved", func(b []byte) { b[6] = 1; reseal(b) }, "reserved"},
		{"length", func(b []byte) { b[14] = 1; reseal(b) }, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []byte
			in = Append(in, hello("one"))
			in = Append(in, good)
			frame := Append(nil, bad)
			tt.damage(frame)
			in = append(in, frame...)
			in = Append(in, good) // dropped: the reader waits for a Hello
			in = Append(in, hello("two"))
			in = Append(in, good)
			r := NewReader(bytes.NewReader(in))
			var got []string
			var errs []string
			for {
				f, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("Next: %v", err)
					}
					errs = append(errs, err.Error())
					continue
				}
				got = append(got, f.Type.String()+":"+string(f.Payload))
			}
			want := []string{"hello:one", "msg:before", "hello:two", "msg:before"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("frames %q, want %q", got, want)
			}
			if len(errs) != 1 || !strings.Contains(errs[0], tt.reason) {
				t.Errorf("errors %q, want one saying %q", errs, tt.reason)
			}
		})
	}
}

// reseal recomputes the header checksum of an encoded frame.
func reseal(b []byte) {
	h := b[:HeaderSize]
	crc := crc32Checksum(h[:20])
	h[20], h[21], h[22], h[23] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
}

// TestStalePartialFrame is the situation after a restore: the peer's
// reader holds the first half of a long frame, then a new connection
// begins with a preamble and a Hello.
func TestStalePartialFrame(t *testing.T) {
	long := Append(nil, Frame{Type: Data, Session: 1, Stream: 1, Payload: make([]byte, MaxPayload)})
	for _, cut := range []int{1, 3, HeaderSize - 1, HeaderSize, HeaderSize + 1, len(long) - 1} {
		var in []byte
		in = Append(in, hello("old"))
		in = append(in, long[:cut]...)
		in = AppendPreamble(in)
		in = Append(in, hello("new"))
		in = Append(in, Frame{Type: Msg, Payload: []byte("after")})
		frames, _ := readAll(t, NewReader(bytes.NewReader(in)))
		if n := len(frames); n < 2 || string(frames[n-2].Payload) != "new" || string(frames[n-1].Payload) != "after" {
			t.Errorf("cut at %d: frames %v, want to end with hello new and msg after", cut, frames)
		}
	}
}

func TestScanSkipsGarbage(t *testing.T) {
	var in []byte
	in = append(in, "garbage "+Magic+" more garbage"...)
	in = Append(in, Frame{Type: Msg, Payload: []byte("not a hello")})
	in = Append(in, Frame{Type: Hello, Payload: make([]byte, MaxHello+1)}) // too long for a Hello
	in = Append(in, hello("hi"))
	r := NewReader(bytes.NewReader(in))
	f, err := r.Next()
	if err != nil || f.Type != Hello || string(f.Payload) != "hi" {
		t.Fatalf("Next = %v %q, %v", f.Type, f.Payload, err)
	}
	skipped := in[:len(in)-HeaderSize-2]
	want := int64(len(skipped) - bytes.Count(skipped, []byte{0}))
	if n := r.Skipped(); n != want {
		t.Errorf("Skipped = %d, want %d", n, want)
	}
	if n := r.Skipped(); n != 0 {
		t.Errorf("Skipped again = %d, want 0", n)
	}
}

// oneByteReader hands out one byte per Read, the worst case for fill.
type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestShortReads(t *testing.T) {
	var in []byte
	in = append(in, "junk"...)
	in = Append(in, hello("h"))
	for i := 0; i < 5; i++ {
		in = Append(in, Frame{Type: Data, Session: 1, Payload: bytes.Repeat([]byte{byte(i)}, MaxPayload-i)})
	}
	frames, corrupt := readAll(t, NewReader(&oneByteReader{in}))
	if corrupt != 0 || len(frames) != 6 {
		t.Fatalf("%d frames, %d corrupt; want 6, 0", len(frames), corrupt)
	}
	for i, f := range frames[1:] {
		if len(f.Payload) != MaxPayload-i || f.Payload[0] != byte(i) {
			t.Errorf("frame %d: %d bytes starting %d", i+1, len(f.Payload), f.Payload[0])
		}
	}
}

// TestPadding: zeros between frames are skipped and not counted as
// discarded, in step and while scanning.
func TestPadding(t *testing.T) {
	var in []byte
	in = AppendPreamble(in)
	in = append(in, "xy"...)
	in = AppendPreamble(in)
	in = Append(in, hello("h"))
	in = AppendPreamble(in)
	in = Append(in, Frame{Type: Msg, Payload: []byte("m")})
	in = append(in, 0, 0, 0)
	r := NewReader(bytes.NewReader(in))
	frames, corrupt := readAll(t, r)
	if corrupt != 0 || len(frames) != 2 || string(frames[1].Payload) != "m" {
		t.Fatalf("frames %v, %d corrupt", frames, corrupt)
	}
	if n := r.Skipped(); n != 2 {
		t.Errorf("Skipped = %d, want the 2 bytes that were not padding", n)
	}
}

func TestEOFInsideFrame(t *testing.T) {
	in := Append(nil, hello("h"))
	in = append(in, Append(nil, Frame{Type: Msg, Payload: []byte("cut")})[:10]...)
	r := NewReader(bytes.NewReader(in))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("Next at a frame cut short: %v, want io.ErrUnexpectedEOF", err)
	}
}

// FuzzReader feeds arbitrary bytes, then a preamble and a known
// conversation: the reader must neither panic nor return an oversized
// frame, and must end with exactly the known frames.
func FuzzReader(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte(Magic))
	f.Add(Append(nil, hello("x")))
	f.Add(Append(nil, Frame{Type: Data, Payload: make([]byte, 100)})[:50])
	f.Add(append(Append(nil, hello("x")), Append(nil, Frame{Type: Open, Session: 2})[:HeaderSize]...))
	want := []Frame{hello("fuzz-hello"), {Type: Msg, Payload: []byte("m")}, {Type: Data, Session: 9, Stream: 1, Payload: []byte("d")}}
	var tail []byte
	tail = AppendPreamble(tail)
	for _, w := range want {
		tail = Append(tail, w)
	}
	f.Fuzz(func(t *testing.T, garbage []byte) {
		frames, _ := readAll(t, NewReader(bytes.NewReader(append(bytes.Clone(garbage), tail...))))
		for _, fr := range frames {
			if len(fr.Payload) > MaxPayload {
				t.Fatalf("frame of %d bytes", len(fr.Payload))
			}
		}
		if len(frames) < len(want) || !reflect.DeepEqual(frames[len(frames)-len(want):], want) {
			t.Fatalf("frames do not end with the conversation after the preamble: %v", frames)
		}
	})
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// BenchmarkReader decodes full data frames: what the guest does for every
// byte copied in. Run it in a guest to see the cost under TCG.
func BenchmarkReader(b *testing.B) {
	frame := Append(nil, Frame{Type: Data, Session: 1, Payload: make([]byte, MaxPayload)})
	var in []byte
	in = Append(in, hello("h"))
	for len(in) < 8<<20 {
		in = append(in, frame...)
	}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r := NewReader(bytes.NewReader(in))
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}

// BenchmarkAppend encodes full data frames.
func BenchmarkAppend(b *testing.B) {
	payload := make([]byte, MaxPayload)
	buf := make([]byte, 0, HeaderSize+MaxPayload)
	b.SetBytes(MaxPayload)
	for b.Loop() {
		buf = Append(buf[:0], Frame{Type: Data, Session: 1, Payload: payload})
	}
}
