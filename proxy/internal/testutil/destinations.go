package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// DestinationCase is one line of the destination table,
// proxy/upstream/testdata/destinations.txt, which a Router-level test in
// proxy/upstream and an end-to-end test in proxy both run.
type DestinationCase struct {
	Addr netip.Addr
	Text string    // the address as written
	Want [2]string // verdict with deny_private off, on: "allow" or a reason
}

// DestinationCases reads the destination table at path (relative to the
// test's package directory) and fails the test if it is malformed or empty.
func DestinationCases(t testing.TB, path string) []DestinationCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases, err := parseDestinations(f, path)
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// parseDestinations reads lines "address | off | on"; blank lines and lines
// that start with # are skipped.
func parseDestinations(r io.Reader, name string) ([]DestinationCase, error) {
	var cases []DestinationCase
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "|")
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want address | off | on, got %q", name, n, line)
		}
		text := strings.TrimSpace(fields[0])
		addr, err := netip.ParseAddr(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		cases = append(cases, DestinationCase{Addr: addr, Text: text,
			Want: [2]string{strings.TrimSpace(fields[1]), strings.TrimSpace(fields[2])}})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("%s has no cases", name)
	}
	return cases, nil
}
