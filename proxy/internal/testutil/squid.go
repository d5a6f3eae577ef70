// Package testutil holds helpers shared by the tests of the proxy's
// packages.
package testutil

import (
	"regexp"
	"strings"
	"testing"
)

// squidStrict is Squid's native access.log line (logformat squid:
// %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt) with each
// field narrowed to what it may hold: the time in seconds with three
// decimals; the elapsed milliseconds right-aligned in six columns; the
// client address or "-"; the result code and a three-digit status; the
// byte count; the method, an RFC 9110 token; the URL (absolute, or
// host:port for a CONNECT, or "-"); the user; the hierarchy code and
// peer; and the content type. Every field is printable ASCII without
// spaces, and the line ends at its only newline.
var squidStrict = regexp.MustCompile(`^` +
	`(\d+)\.(\d{3})` +
	` ( {5}\d| {4}\d{2}| {3}\d{3}| {2}\d{4}| \d{5}|[1-9]\d{5,})` +
	` (-|\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f:.]*:[0-9a-f:.]*(?:%25(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+)?)` +
	` ([A-Z_]+)/(\d{3})` +
	` (\d+)` +
	" ([!#$%&'*+.^_`|~0-9A-Za-z-]+)" +
	` (-|https?://[!-~]+|[!-~]+:-?\d+)` +
	` ([!-~]+)` +
	` ([A-Z_]+)/([!-~]+)` +
	` ([!-~]+)` +
	"\n$")

// Submatch indexes of the fields in CheckSquidLine's result.
const (
	SqClient = 4
	SqMethod = 8
	SqURL    = 9
	SqUser   = 10
	SqHier   = 11
	SqPeer   = 12
	SqType   = 13
)

// MaxSquidField is the handler's bound on a field built from request data
// (Squid's MAX_URL).
const MaxSquidField = 8192

// escapes is a %XX escape as the handler writes it: upper-case hex.
var escapes = regexp.MustCompile(`%[0-9A-F]{2}`)

// CheckSquidLine checks that line is one line of Squid's native format
// with exactly its 10 fields, and returns squidStrict's submatches.
func CheckSquidLine(tb testing.TB, line string) []string {
	tb.Helper()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		tb.Fatalf("not exactly one line: %.300q", line)
	}
	for i := 0; i < len(line)-1; i++ {
		if c := line[i]; c < ' ' || c > '~' {
			tb.Fatalf("byte %#02x at %d is not printable ASCII: %.300q", c, i, line)
		}
	}
	if f := strings.Fields(line); len(f) != 10 {
		tb.Fatalf("%d whitespace-separated fields, want 10: %.300q", len(f), line)
	}
	m := squidStrict.FindStringSubmatch(line)
	if m == nil {
		tb.Fatalf("line does not match Squid's native format: %.300q", line)
	}
	for _, i := range []int{SqClient, SqMethod, SqURL, SqPeer} {
		// A '%' that starts no escape would make the field ambiguous.
		if rest := escapes.ReplaceAllString(m[i], ""); strings.Contains(rest, "%") {
			tb.Fatalf("field %q has a %% that starts no %%XX escape", m[i])
		}
		if len(m[i]) > MaxSquidField {
			tb.Fatalf("field of %d bytes, want at most %d: %.100q...", len(m[i]), MaxSquidField, m[i])
		}
	}
	if m[SqUser] != "-" || m[SqType] != "-" {
		tb.Fatalf("user %q and type %q, want - and -: %q", m[SqUser], m[SqType], line)
	}
	return m
}
