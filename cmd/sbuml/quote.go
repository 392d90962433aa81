package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Text from snapshots (messages, file names, labels) and from remotes is
// printed with the characters that could drive a terminal escaped, as git
// escapes them: control characters (ESC starts the sequences that move
// the cursor, retitle the window or rewrite what was printed before),
// DEL, the C1 controls, bytes that are not UTF-8, and the characters that
// reorder text (the bidirectional overrides of "Trojan Source").

// needsEscape reports whether r must be escaped; newlines only if
// escapeNewline.
func needsEscape(r rune, escapeNewline bool) bool {
	switch {
	case r == '\n':
		return escapeNewline
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// escapeRune appends the escaped form of r to b.
func escapeRune(b *strings.Builder, r rune) {
	switch r {
	case '\n':
		b.WriteString(`\n`)
	case '\t':
		b.WriteString(`\t`)
	case '\r':
		b.WriteString(`\r`)
	default:
		if r < 0x80 {
			fmt.Fprintf(b, `\x%02x`, r)
		} else {
			fmt.Fprintf(b, `\u%04x`, r)
		}
	}
}

// escapeText returns s with what needsEscape names escaped in place,
// newlines too unless multiline. It is for messages, which stay
// readable: nothing else changes.
func escapeText(s string, multiline bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || needsEscape(r, !multiline) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case needsEscape(r, !multiline):
			escapeRune(&b, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// quoteName returns a name (a path, a ref, a label) as it is if nothing
// in it needs escaping, else in double quotes with those characters, and
// the quotes and backslashes within, escaped, so that it cannot be
// mistaken for a name that holds the escapes literally.
func quoteName(s string) string {
	if escapeText(s, false) == s {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case needsEscape(r, true):
			escapeRune(&b, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}
