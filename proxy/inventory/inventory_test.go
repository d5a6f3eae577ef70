package inventory

import (
	"net/netip"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

type rec struct {
	advance                                time.Duration // before recording
	client, vendor, category, action, rule string
}

func play(inv *Inventory, clock *testutil.Clock, recs []rec) {
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

var (
	one = addr("127.0.0.1")
	two = addr("127.0.0.2")
	t1  = t0.Add(time.Minute)
	t2  = t0.Add(2 * time.Minute)
	t3  = t0.Add(3 * time.Minute)

	// The entries twoClients leaves, in Snapshot order.
	oneLicensing = Entry{one, "kaspersky", "licensing", t3, t3, 1, "allow", "default", "host", "", "", nil}
	twoUpdate    = Entry{two, "kaspersky", "update", t3, t3, 1, "block", "updates-cutoff", "host", "", "", nil}
	oneUpdate    = Entry{one, "kaspersky", "update", t0, t2, 2, "block", "updates-cutoff", "host", "", "", nil}
	twoLicensing = Entry{two, "kaspersky", "licensing", t1, t1, 1, "log", "flag-licensing", "host", "", "", nil}
)

func TestRecordSnapshot(t *testing.T) {
	clock := testutil.NewClock(t0)
	inv := mustNew(t, Options{Now: clock.Now})
	play(inv, clock, twoClients)

	for _, tc := range []struct {
		name   string
		filter Filter
		want   []Entry
	}{
		{"all", Filter{}, []Entry{oneLicensing, twoUpdate, oneUpdate, twoLicensing}},
		{"vendor", Filter{Vendor: "kaspersky"}, []Entry{oneLicensing, twoUpdate, oneUpdate, twoLicensing}},
		{"other vendor", Filter{Vendor: "drweb"}, []Entry{}},
		{"category", Filter{Category: "update"}, []Entry{twoUpdate, oneUpdate}},
		{"vendor and category", Filter{Vendor: "kaspersky", Category: "licensing"}, []Entry{oneLicensing, twoLicensing}},
		{"since is inclusive", Filter{Since: t2}, []Entry{oneLicensing, twoUpdate, oneUpdate}},
		{"since", Filter{Since: t2.Add(time.Nanosecond)}, []Entry{oneLicensing, twoUpdate}},
		{"since and category", Filter{Category: "licensing", Since: t1}, []Entry{oneLicensing, twoLicensing}},
		{"since in the future", Filter{Since: t3.Add(time.Hour)}, []Entry{}},
		{"client", Filter{Client: two}, []Entry{twoUpdate, twoLicensing}},
		{"client mapped", Filter{Client: netip.AddrFrom16(two.As16())}, []Entry{twoUpdate, twoLicensing}},
		{"unknown client", Filter{Client: addr("127.0.0.3")}, []Entry{}},
		{"last action", Filter{Action: "block"}, []Entry{twoUpdate, oneUpdate}},
		{"client and last action", Filter{Client: one, Action: "allow"}, []Entry{oneLicensing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := inv.Snapshot(tc.filter)
			if got == nil {
				t.Error("Snapshot returned nil; want an empty slice, which encodes as []")
			}
			if d := sameEntries(got, tc.want); d != "" {
				t.Error(d)
			}
		})
	}
	if n := inv.Len(); n != 4 {
		t.Errorf("Len() = %d; want 4", n)
	}
	if n := inv.Evictions(); n != 0 {
		t.Errorf("Evictions() = %d; want 0", n)
	}
}

// TestSnapshotIsACopy checks that callers cannot change the inventory
// through a snapshot.
func TestSnapshotIsACopy(t *testing.T) {
	clock := testutil.NewClock(t0)
	inv := mustNew(t, Options{Now: clock.Now})
	play(inv, clock, twoClients)
	s := inv.Snapshot(Filter{})
	s[0].Requests = 99
	if got := inv.Snapshot(Filter{})[0].Requests; got != 1 {
		t.Errorf("Requests after changing a snapshot = %d; want 1", got)
	}
}

func TestRecordIgnores(t *testing.T) {
	for _, tc := range []struct {
		name             string
		client           netip.Addr
		vendor, category string
	}{
		{"non-vendor traffic", one, "none", "none"},
		{"no vendor", one, "", "update"},
		{"no client address", netip.Addr{}, "kaspersky", "update"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := mustNew(t, Options{})
			inv.Record(tc.client, tc.vendor, tc.category, "allow", "default")
			if n := inv.Len(); n != 0 {
				t.Errorf("Len() = %d; want 0: %+v", n, inv.Snapshot(Filter{}))
			}
		})
	}
}

// TestRecordUnmapsClients checks that an IPv4 client is one entry whether
// it reached an IPv4 or a dual-stack socket.
func TestRecordUnmapsClients(t *testing.T) {
	inv := mustNew(t, Options{})
	inv.Record(addr("::ffff:127.0.0.1"), "kaspersky", "update", "allow", "default")
	inv.Record(one, "kaspersky", "update", "allow", "default")
	got := inv.Snapshot(Filter{})
	if len(got) != 1 || got[0].Client != one || got[0].Requests != 2 {
		t.Errorf("Snapshot = %+v; want one entry for %s with 2 requests", got, one)
	}
}

func TestMaxEntries(t *testing.T) {
	a, b, c := addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")
	for _, tc := range []struct {
		name   string
		order  []netip.Addr // recorded one second apart
		remain []netip.Addr // in Snapshot order
	}{
		{"oldest is evicted", []netip.Addr{a, b, c}, []netip.Addr{c, b}},
		{"a touched entry is kept", []netip.Addr{a, b, a, c}, []netip.Addr{c, a}},
		{"a touch between two newer", []netip.Addr{a, b, c, b}, []netip.Addr{b, c}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := testutil.NewClock(t0)
			inv := mustNew(t, Options{MaxEntries: 2, Now: clock.Now})
			for _, cl := range tc.order {
				clock.Advance(time.Second)
				inv.Record(cl, "kaspersky", "update", "allow", "default")
			}
			var got []netip.Addr
			for _, e := range inv.Snapshot(Filter{}) {
				got = append(got, e.Client)
			}
			if len(got) != len(tc.remain) || got[0] != tc.remain[0] || got[1] != tc.remain[1] {
				t.Errorf("clients = %v; want %v", got, tc.remain)
			}
			if n := inv.Evictions(); n != 1 {
				t.Errorf("Evictions() = %d; want 1", n)
			}
			if n := inv.Len(); n != 2 {
				t.Errorf("Len() = %d; want 2", n)
			}
		})
	}
}

// TestEvictedEntryStartsOver checks that a client evicted and seen again
// is a new entry, not the old one revived with its old counts.
func TestEvictedEntryStartsOver(t *testing.T) {
	clock := testutil.NewClock(t0)
	inv := mustNew(t, Options{MaxEntries: 1, Now: clock.Now})
	inv.Record(one, "kaspersky", "update", "allow", "default")
	inv.Record(one, "kaspersky", "update", "allow", "default")
	clock.Advance(time.Minute)
	inv.Record(two, "kaspersky", "update", "block", "cutoff")
	clock.Advance(time.Minute)
	inv.Record(one, "kaspersky", "update", "log", "flag")
	want := []Entry{{one, "kaspersky", "update", t2, t2, 1, "log", "flag", "host", "", "", nil}}
	if d := sameEntries(inv.Snapshot(Filter{}), want); d != "" {
		t.Error(d)
	}
	if n := inv.Evictions(); n != 2 {
		t.Errorf("Evictions() = %d; want 2", n)
	}
}

// TestNowDefaults checks that a nil clock means the wall clock and that
// recorded times carry no monotonic reading, as times loaded from a state
// file do not.
func TestNowDefaults(t *testing.T) {
	inv := mustNew(t, Options{})
	before := time.Now().Add(-time.Second)
	inv.Record(one, "kaspersky", "update", "allow", "default")
	e := inv.Snapshot(Filter{})[0]
	if e.LastSeen.Before(before) || e.LastSeen.After(time.Now().Add(time.Second)) {
		t.Errorf("LastSeen = %s; want about now", e.LastSeen)
	}
	if e.LastSeen != e.LastSeen.Round(0) || e.LastSeen.Location() != time.UTC {
		t.Errorf("LastSeen = %#v; want UTC without a monotonic reading", e.LastSeen)
	}
}
