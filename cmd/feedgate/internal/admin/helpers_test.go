package admin

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/inventory"
)

// t0 is an arbitrary start for fake clocks, before the updates cut-off.
var t0 = time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a wall clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustNew(t testing.TB, opts inventory.Options) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return inv
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

type rec struct {
	advance                                time.Duration // before recording
	client, vendor, category, action, rule string
}

func play(inv *inventory.Inventory, clock *fakeClock, recs []rec) {
	for _, r := range recs {
		clock.Advance(r.advance)
		inv.Record(addr(r.client), r.vendor, r.category, r.action, r.rule)
	}
}

// twoClients is a short history of two clients using two Kaspersky
// categories, ending with a tie on LastSeen.
var twoClients = []rec{
	{0, "127.0.0.1", "kaspersky", "update", "allow", "kaspersky-updates"},
	{time.Minute, "127.0.0.2", "kaspersky", "licensing", "log", "flag-licensing"},
	{time.Minute, "127.0.0.1", "kaspersky", "update", "block", "updates-cutoff"},
	{time.Minute, "127.0.0.2", "kaspersky", "update", "block", "updates-cutoff"},
	{0, "127.0.0.1", "kaspersky", "licensing", "allow", "default"},
}

// entry is a Kaspersky inventory entry.
func entry(client, category string, first, last time.Time, requests uint64, action, rule string) inventory.Entry {
	return inventory.Entry{Client: addr(client), Vendor: "kaspersky", Category: category,
		FirstSeen: first, LastSeen: last, Requests: requests, LastAction: action, LastRule: rule}
}

var (
	one = addr("127.0.0.1")
	t2  = t0.Add(2 * time.Minute)
	t3  = t0.Add(3 * time.Minute)

	// The entries twoClients leaves, in Snapshot order, but for
	// 127.0.0.2's licensing, which TestClientsHandler evicts.
	oneLicensing = entry("127.0.0.1", "licensing", t3, t3, 1, "allow", "default")
	twoUpdate    = entry("127.0.0.2", "update", t3, t3, 1, "block", "updates-cutoff")
	oneUpdate    = entry("127.0.0.1", "update", t0, t2, 2, "block", "updates-cutoff")
)

// sameEntries reports the differences between two entry lists, comparing
// times with Equal so that a monotonic reading or zone does not matter.
func sameEntries(got, want []inventory.Entry) string {
	var b strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&b, "got %d entries, want %d\n", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Client != w.Client || g.Vendor != w.Vendor || g.Category != w.Category ||
			!g.FirstSeen.Equal(w.FirstSeen) || !g.LastSeen.Equal(w.LastSeen) ||
			g.Requests != w.Requests || g.LastAction != w.LastAction || g.LastRule != w.LastRule {
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

func fmtEntry(e inventory.Entry) string {
	return fmt.Sprintf("%s %s/%s first=%s last=%s n=%d %s/%s", e.Client, e.Vendor, e.Category,
		e.FirstSeen.Format(time.RFC3339Nano), e.LastSeen.Format(time.RFC3339Nano), e.Requests, e.LastAction, e.LastRule)
}
