package inventory

import (
	"fmt"
	"slices"
	"testing"

	"github.com/feedgate/feedgate/rules"
)

// recent is what Hosts keeps of hosts recorded in order.
func recent(hosts []string) []string {
	r := slices.Clone(hosts)
	slices.Reverse(r)
	return r[:min(len(r), maxHosts)]
}

// TestHosts checks the hosts an entry keeps: canonical, distinct, most
// recent first, at most 8.
func TestHosts(t *testing.T) {
	many := func(n int) []string {
		var hs []string
		for i := range n {
			hs = append(hs, fmt.Sprintf("h%d.example", i))
		}
		return hs
	}
	for _, tc := range []struct {
		name  string
		hosts []string // recorded in order, for one client, by a host match
		want  []string
	}{
		{"one", []string{"s07.upd.kaspersky.com"}, []string{"s07.upd.kaspersky.com"}},
		{"most recent first", []string{"a.example", "b.example", "c.example"}, []string{"c.example", "b.example", "a.example"}},
		{"a repeat moves to the front", []string{"a.example", "b.example", "c.example", "a.example"}, []string{"a.example", "c.example", "b.example"}},
		{"a repeat at the front stays", []string{"a.example", "b.example", "b.example"}, []string{"b.example", "a.example"}},
		{"canonical form", []string{"DNL-01.Geo.Kaspersky.COM."}, []string{"dnl-01.geo.kaspersky.com"}},
		{"spellings of one host are one", []string{"a.example", "b.example", "A.EXAMPLE", "a.example."}, []string{"a.example", "b.example"}},
		{"IPv6 literal", []string{"[2001:DB8::1]", "2001:db8::1"}, []string{"2001:db8::1"}},
		{"Unicode name", []string{"bücher.example"}, []string{"xn--bcher-kva.example"}},
		{"no canonical form: as given", []string{"bad host!", "a.example", "bad host!"}, []string{"bad host!", "a.example"}},
		{"no host", []string{""}, nil},
		{"eight", many(8), recent(many(8))},
		{"the oldest drops out", many(11), recent(many(11))},
		{"a repeat of the oldest when full", append(many(8), "h0.example"), append([]string{"h0.example"}, recent(many(8))[:7]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := mustNew(t, Options{})
			d := decision("update", rules.MatchHost, "", "block")
			for _, h := range tc.hosts {
				inv.RecordDecision(one, h, d)
			}
			// Record names no host: the hosts stay.
			inv.Record(one, "kaspersky", "update", "allow", "default")
			got := inv.Snapshot(Filter{})
			if len(got) != 1 {
				t.Fatalf("%d entries; want 1: %+v", len(got), got)
			}
			if !slices.Equal(got[0].Hosts, tc.want) {
				t.Errorf("Hosts = %q; want %q", got[0].Hosts, tc.want)
			}
		})
	}
}

// TestHostsPerEntry checks that each entry keeps the hosts of its own
// requests, and a signature's entry its one host.
func TestHostsPerEntry(t *testing.T) {
	inv := mustNew(t, Options{})
	for _, r := range []struct {
		client, host string
		d            *rules.Decision
	}{
		{"10.0.0.1", "s07.upd.kaspersky.com", decision("update", rules.MatchHost, "", "block")},
		{"10.0.0.1", "ksn-a.kaspersky.com", decision("ksn", rules.MatchHost, "", "log")},
		{"::ffff:10.0.0.1", "s08.upd.kaspersky.com", decision("update", rules.MatchHost, "", "block")},
		{"10.0.0.2", "s07.upd.kaspersky.com", decision("update", rules.MatchHost, "", "block")},
		{"10.0.0.1", "KAV-MIRROR.corp.example", decision("update", rules.MatchSignature, "bases-tree", "block")},
		{"10.0.0.1", "kav-mirror.corp.example.", decision("update", rules.MatchSignature, "update-index", "block")},
		{"10.0.0.1", "192.0.2.10", decision("update", rules.MatchSignature, "update-index", "block")},
	} {
		inv.RecordDecision(addr(r.client), r.host, r.d)
	}
	got := map[string][]string{}
	for _, e := range inv.Snapshot(Filter{}) {
		got[fmt.Sprintf("%s %s %s %s", e.Client, e.Category, e.Match, e.Host)] = e.Hosts
	}
	want := map[string][]string{
		"10.0.0.1 update host ":                             {"s08.upd.kaspersky.com", "s07.upd.kaspersky.com"},
		"10.0.0.1 ksn host ":                                {"ksn-a.kaspersky.com"},
		"10.0.0.2 update host ":                             {"s07.upd.kaspersky.com"},
		"10.0.0.1 update signature kav-mirror.corp.example": {"kav-mirror.corp.example"},
		"10.0.0.1 update signature 192.0.2.10":              {"192.0.2.10"},
	}
	if len(got) != len(want) {
		t.Errorf("entries %q; want %q", got, want)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: Hosts = %q; want %q", k, got[k], w)
		}
	}
}

// TestSnapshotHostsAreCopies checks that a snapshot's hosts share nothing
// with the inventory: changing them changes no entry, and later records
// change no earlier snapshot.
func TestSnapshotHostsAreCopies(t *testing.T) {
	inv := mustNew(t, Options{MaxEntries: 2})
	d := decision("update", rules.MatchHost, "", "block")
	inv.RecordDecision(one, "a.example", d)
	inv.RecordDecision(one, "b.example", d)
	inv.RecordDecision(two, "c.example", d)
	before := inv.Snapshot(Filter{})
	want := []string{"c.example", "b.example", "a.example"}
	flat := func(es []Entry) []string {
		var hs []string
		for _, e := range es {
			hs = append(hs, e.Hosts...)
		}
		return hs
	}
	if got := flat(before); !slices.Equal(got, want) {
		t.Fatalf("hosts = %q; want %q", got, want)
	}

	// A caller changes its snapshot, and appends to an entry's hosts,
	// which must not run into the next entry's.
	s := inv.Snapshot(Filter{})
	s[0].Hosts[0] = "changed.example"
	s[0].Hosts = append(s[0].Hosts, "appended.example")
	s[1].Hosts[1] = "changed.example"
	if got := flat(s[1:]); !slices.Equal(got, []string{"b.example", "changed.example"}) {
		t.Errorf("after an append to the first entry's hosts, the second's are %q", got)
	}
	if got := flat(inv.Snapshot(Filter{})); !slices.Equal(got, want) {
		t.Errorf("after a snapshot was changed, hosts = %q; want %q", got, want)
	}

	// Later records: a move, a new host, and an eviction whose node is
	// reused.
	inv.RecordDecision(one, "a.example", d)
	inv.RecordDecision(two, "d.example", d)
	inv.RecordDecision(addr("127.0.0.3"), "e.example", d)
	if got := flat(before); !slices.Equal(got, want) {
		t.Errorf("after later records, an earlier snapshot's hosts are %q; want %q", got, want)
	}
	if got := flat(inv.Snapshot(Filter{})); !slices.Equal(got, []string{"e.example", "d.example", "c.example"}) {
		t.Errorf("after an eviction, hosts = %q; want the new entry's own", got)
	}
}

// TestNewHostAllocs holds a new host to one allocation per entry: the
// room for all its hosts, made with the first.
func TestNewHostAllocs(t *testing.T) {
	const runs = 100
	inv := mustNew(t, Options{})
	d := decision("update", rules.MatchHost, "", "block")
	hosts := make([]string, 2*maxHosts)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.example", i)
	}
	for i := range runs + 1 {
		inv.Record(clientN(i), "kaspersky", "update", "allow", "default")
	}
	i := 0
	if n := testing.AllocsPerRun(runs, func() {
		for _, h := range hosts {
			inv.RecordDecision(clientN(i), h, d)
		}
		i++
	}); n != 1 {
		t.Errorf("%v allocations for %d new hosts of an entry; want 1", n, len(hosts))
	}
}
