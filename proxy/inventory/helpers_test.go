package inventory

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// t0 is an arbitrary start for fake clocks, before the updates cut-off.
var t0 = time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)

func mustNew(t testing.TB, opts Options) *Inventory {
	t.Helper()
	inv, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return inv
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// sameEntries reports the differences between two entry lists, comparing
// times with Equal so that a monotonic reading or zone does not matter.
func sameEntries(got, want []Entry) string {
	var b strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&b, "got %d entries, want %d\n", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Client != w.Client || g.Vendor != w.Vendor || g.Category != w.Category ||
			!g.FirstSeen.Equal(w.FirstSeen) || !g.LastSeen.Equal(w.LastSeen) ||
			g.Requests != w.Requests || g.LastAction != w.LastAction || g.LastRule != w.LastRule ||
			g.Match != w.Match || g.Host != w.Host || g.Signature != w.Signature || !slices.Equal(g.Hosts, w.Hosts) {
			fmt.Fprintf(&b, "entry %d:\n got  %s\n want %s\n", i, fmtEntry(g), fmtEntry(w))
		}
	}
	for i := len(want); i < len(got); i++ {
		fmt.Fprintf(&b, "extra entry %d: %s\n", i, fmtEntry(got[i]))
	}
	for i := len(got); i < len(want); i++ {
		fmt.Fprintf(&b, "missing entry %d: %s\n", i, fmtEntry(want[i]))
	}
	return b.String()
}

func fmtEntry(e Entry) string {
	return fmt.Sprintf("%s %s/%s first=%s last=%s n=%d %s/%s match=%s host=%q signature=%q hosts=%q", e.Client, e.Vendor, e.Category,
		e.FirstSeen.Format(time.RFC3339Nano), e.LastSeen.Format(time.RFC3339Nano), e.Requests, e.LastAction, e.LastRule,
		e.Match, e.Host, e.Signature, e.Hosts)
}
