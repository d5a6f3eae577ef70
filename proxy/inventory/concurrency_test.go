package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feedgate/feedgate/rules"
)

const (
	workers = 8
	perWork = 1000
)

// TestConcurrentRecord records from 8 goroutines while readers snapshot,
// scrape, read as /api/v1/clients does, and save, and checks that no
// request is lost.
func TestConcurrentRecord(t *testing.T) {
	inv := mustNew(t, Options{StateFile: filepath.Join(t.TempDir(), "inventory.json")})
	reg := prometheus.NewRegistry()
	reg.MustRegister(inv.Collector())

	ctx, stop := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	for _, read := range []func(){
		func() { inv.Snapshot(Filter{Category: "update"}) },
		func() {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		},
		func() { inv.SnapshotWithEvictions(Filter{Since: inv.Now().Add(-time.Hour)}) },
		func() {
			if err := inv.Save(); err != nil {
				t.Error(err)
			}
		},
	} {
		readers.Go(func() {
			for ctx.Err() == nil {
				read()
			}
		})
	}

	var writers sync.WaitGroup
	for w := range workers {
		writers.Go(func() {
			own := netip.AddrFrom4([4]byte{10, 0, 0, byte(w + 1)})
			for i := range perWork {
				// Half on the goroutine's own client, alternating two
				// categories; half on one client all goroutines share.
				if i%2 == 0 {
					inv.Record(own, "kaspersky", []string{"update", "licensing"}[i/2%2], "allow", "default")
				} else {
					inv.Record(one, "kaspersky", "update", "block", "cutoff")
				}
			}
		})
	}
	writers.Wait()
	stop()
	readers.Wait()

	got := inv.Snapshot(Filter{})
	if len(got) != 2*workers+1 {
		t.Errorf("%d entries; want %d", len(got), 2*workers+1)
	}
	var total uint64
	for _, e := range got {
		total += e.Requests
		want := uint64(perWork / 4)
		if e.Client == one {
			want = workers * perWork / 2
		}
		if e.Requests != want {
			t.Errorf("%s %s: %d requests; want %d", e.Client, e.Category, e.Requests, want)
		}
	}
	if total != workers*perWork {
		t.Errorf("%d requests in all; want %d", total, workers*perWork)
	}
	checkList(t, inv)
}

// TestConcurrentEviction churns a small inventory from 8 goroutines and
// checks that the map and the recency list still agree.
func TestConcurrentEviction(t *testing.T) {
	const max = 16
	inv := mustNew(t, Options{MaxEntries: max})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWork {
				inv.Record(netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)}), "kaspersky", "update", "allow", "default")
			}
		})
	}
	wg.Wait()
	if n := inv.Len(); n != max {
		t.Errorf("Len() = %d; want %d", n, max)
	}
	if n := inv.Evictions(); n != workers*perWork-max {
		t.Errorf("Evictions() = %d; want %d", n, workers*perWork-max)
	}
	checkList(t, inv)
}

// checkList checks the recency list against the map: every node linked
// both ways, in map, and LastSeen not increasing along the list.
func checkList(t *testing.T, inv *Inventory) {
	t.Helper()
	inv.mu.Lock()
	defer inv.mu.Unlock()
	n, count := inv.root.next, 0
	for ; n != &inv.root; n = n.next {
		count++
		if n.next.prev != n {
			t.Fatalf("node %s: next.prev is not the node", n.Client)
		}
		if inv.entries[n.key()] != n {
			t.Fatalf("node %s is not in the map", n.Client)
		}
		if n.next != &inv.root && n.next.LastSeen.After(n.LastSeen) {
			t.Errorf("node %s (%s) is before a more recent one (%s)", n.Client, n.LastSeen, n.next.LastSeen)
		}
		if count > len(inv.entries) {
			t.Fatal("the list is longer than the map: a cycle?")
		}
	}
	if count != len(inv.entries) {
		t.Errorf("the list has %d nodes, the map %d", count, len(inv.entries))
	}
}

// TestRecordHitAllocs holds Record on the request path to zero allocations
// for a client already recorded, with the real clock, and RecordDecision
// for a host already in the entry's hosts.
func TestRecordHitAllocs(t *testing.T) {
	inv := mustNew(t, Options{})
	inv.Record(one, "kaspersky", "update", "allow", "default")
	byHost := decision("update", rules.MatchHost, "", "block")
	bySignature := decision("update", rules.MatchSignature, "bases-tree", "block")
	inv.RecordDecision(one, "kav-mirror.corp.example", bySignature)
	inv.RecordDecision(one, "s08.upd.kaspersky.com", byHost)
	inv.RecordDecision(one, "s07.upd.kaspersky.com", byHost)
	alternate := 0
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"same", func() { inv.Record(one, "kaspersky", "update", "allow", "default") }},
		{"new action and rule", func() { inv.Record(one, "kaspersky", "update", "block", "cutoff") }},
		{"IPv4-mapped", func() { inv.Record(addr("::ffff:127.0.0.1"), "kaspersky", "update", "allow", "default") }},
		{"ignored", func() { inv.Record(one, "none", "none", "allow", "default") }},
		{"decision by host", func() { inv.RecordDecision(one, "s07.upd.kaspersky.com", byHost) }},
		{"decision by host, two hosts in turn", func() {
			alternate++
			inv.RecordDecision(one, []string{"s07.upd.kaspersky.com", "s08.upd.kaspersky.com"}[alternate%2], byHost)
		}},
		{"decision by host, with a trailing dot", func() { inv.RecordDecision(one, "s07.upd.kaspersky.com.", byHost) }},
		{"decision by signature", func() { inv.RecordDecision(one, "kav-mirror.corp.example", bySignature) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
				t.Errorf("%v allocations per Record; want 0", n)
			}
		})
	}
}

func BenchmarkRecordHit(b *testing.B) {
	inv := mustNew(b, Options{})
	inv.Record(one, "kaspersky", "update", "allow", "default")
	b.ReportAllocs()
	for b.Loop() {
		inv.Record(one, "kaspersky", "update", "allow", "default")
	}
}

// BenchmarkRecordHitFull records hits spread over a full inventory at the
// default cap, so that entries are rarely in cache, as with many clients.
func BenchmarkRecordHitFull(b *testing.B) {
	inv := mustNew(b, Options{})
	for i := range defaultMaxEntries {
		inv.Record(clientN(i), "kaspersky", "update", "allow", "default")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// A stride that is prime to the cap visits every entry in an
		// order unrelated to the recency list's.
		i = (i + 7919) % defaultMaxEntries
		inv.Record(clientN(i), "kaspersky", "update", "allow", "default")
	}
	if n := inv.Evictions(); n != 0 {
		b.Fatalf("%d evictions: not all hits", n)
	}
}

// BenchmarkRecordHitParallel shows what the single mutex costs when every
// core records at once.
func BenchmarkRecordHitParallel(b *testing.B) {
	inv := mustNew(b, Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			inv.Record(netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 64)}), "kaspersky", "update", "allow", "default")
		}
	})
}

// clientN returns a distinct client address for each i below 1<<24.
func clientN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func BenchmarkRecordNew(b *testing.B) {
	b.Run("below-cap", func(b *testing.B) {
		// A fresh inventory every defaultMaxEntries iterations, so that
		// every Record inserts and none evicts.
		var inv *Inventory
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i%defaultMaxEntries == 0 {
				b.StopTimer()
				inv = mustNew(b, Options{})
				b.StartTimer()
			}
			inv.Record(clientN(i%defaultMaxEntries), "kaspersky", "update", "allow", "default")
			i++
		}
	})
	b.Run("at-cap", func(b *testing.B) {
		// Full from the start: every Record evicts the oldest entry.
		inv := mustNew(b, Options{})
		for i := range defaultMaxEntries {
			inv.Record(clientN(i), "kaspersky", "update", "allow", "default")
		}
		b.ReportAllocs()
		i := defaultMaxEntries
		for b.Loop() {
			inv.Record(clientN(i%(1<<24)), "kaspersky", "update", "allow", "default")
			i++
		}
	})
}

// BenchmarkReaders times the readers that hold the lock over the whole
// inventory, at the default cap: Record waits for them.
func BenchmarkReaders(b *testing.B) {
	inv := mustNew(b, Options{})
	for i := range defaultMaxEntries {
		inv.Record(clientN(i), "kaspersky", []string{"update", "licensing", "ksn"}[i%3], "allow", "default")
	}
	c := inv.Collector()
	for _, bc := range []struct {
		name string
		f    func()
	}{
		{"snapshot", func() { inv.Snapshot(Filter{}) }},
		{"collect", func() {
			ch := make(chan prometheus.Metric, 16)
			go func() { c.Collect(ch); close(ch) }()
			for range ch {
			}
		}},
	} {
		b.Run(fmt.Sprintf("%s-%d", bc.name, defaultMaxEntries), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.f()
			}
		})
	}
}
