package inventory

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

func TestCollector(t *testing.T) {
	clock := testutil.NewClock(t0.Add(-time.Hour))
	inv := mustNew(t, Options{Now: clock.Now, MaxEntries: 6})
	play(inv, clock, []rec{
		// Evicted by the seventh entry.
		{0, "10.0.0.99", "kaspersky", "update", "allow", "default"},
		// Seen only more than 24 hours before the scrapes.
		{time.Hour, "10.0.0.9", "kaspersky", "ksn", "allow", "default"},
		{0, "127.0.0.5", "kaspersky", "update", "allow", "default"},
		// Seen exactly 24 hours before the first scrape.
		{2 * time.Hour, "127.0.0.1", "kaspersky", "update", "allow", "default"},
		{0, "127.0.0.1", "kaspersky", "licensing", "log", "flag"},
		{0, "127.0.0.2", "kaspersky", "update", "block", "cutoff"},
		{0, "127.0.0.2", "kaspersky", "update", "block", "cutoff"},
		{0, "127.0.0.1", "drweb", "update", "allow", "default"},
	})
	c := inv.Collector()
	const tail = `
# HELP feedgate_inventory_entries Entries (client, vendor, category) in the client inventory.
# TYPE feedgate_inventory_entries gauge
feedgate_inventory_entries 6
# HELP feedgate_inventory_evictions_total Client inventory entries dropped to stay within the entry limit.
# TYPE feedgate_inventory_evictions_total counter
feedgate_inventory_evictions_total 1
`
	for _, tc := range []struct {
		name string
		at   time.Time
		want string
	}{
		{"24 hours is within", t0.Add(26 * time.Hour), `
# HELP feedgate_clients Distinct clients that used a vendor category in the last 24 hours.
# TYPE feedgate_clients gauge
feedgate_clients{category="licensing",vendor="kaspersky"} 1
feedgate_clients{category="ksn",vendor="kaspersky"} 0
feedgate_clients{category="update",vendor="drweb"} 1
feedgate_clients{category="update",vendor="kaspersky"} 2
`},
		{"older than 24 hours", t0.Add(26*time.Hour + time.Nanosecond), `
# HELP feedgate_clients Distinct clients that used a vendor category in the last 24 hours.
# TYPE feedgate_clients gauge
feedgate_clients{category="licensing",vendor="kaspersky"} 0
feedgate_clients{category="ksn",vendor="kaspersky"} 0
feedgate_clients{category="update",vendor="drweb"} 0
feedgate_clients{category="update",vendor="kaspersky"} 0
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(tc.at)
			if err := promtestutil.CollectAndCompare(c, strings.NewReader(tc.want+tail)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCollectorEmpty(t *testing.T) {
	const want = `
# HELP feedgate_inventory_entries Entries (client, vendor, category) in the client inventory.
# TYPE feedgate_inventory_entries gauge
feedgate_inventory_entries 0
# HELP feedgate_inventory_evictions_total Client inventory entries dropped to stay within the entry limit.
# TYPE feedgate_inventory_evictions_total counter
feedgate_inventory_evictions_total 0
`
	if err := promtestutil.CollectAndCompare(mustNew(t, Options{}).Collector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestCollectorRegistry registers the collector as the proxy will, on a
// pedantic registry (which checks metrics against their descriptions), and
// lints the exposition.
func TestCollectorRegistry(t *testing.T) {
	inv := mustNew(t, Options{})
	inv.Record(addr("192.0.2.10"), "kaspersky", "update", "allow", "default")
	inv.Record(addr("2001:db8::10"), "kaspersky", "licensing", "block", "cutoff")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(inv.Collector())
	problems, err := promtestutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if n := lp.GetName(); n != "vendor" && n != "category" {
					t.Errorf("%s has label %s; want vendor and category only", mf.GetName(), n)
				}
				if v := lp.GetValue(); strings.Contains(v, "192.0.2.10") || strings.Contains(v, "2001:db8::10") {
					t.Errorf("%s has a client address in label %s=%q", mf.GetName(), lp.GetName(), v)
				}
			}
		}
	}
	want := "feedgate_clients feedgate_inventory_entries feedgate_inventory_evictions_total"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("metrics %s; want %s", got, want)
	}
}

// TestCollectorBadLabel checks that a label value Prometheus refuses fails
// the scrape with an error instead of panicking.
func TestCollectorBadLabel(t *testing.T) {
	inv := mustNew(t, Options{})
	inv.Record(one, "kaspersky\xff", "update", "allow", "default")
	reg := prometheus.NewRegistry()
	reg.MustRegister(inv.Collector())
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("Gather: %v; want an error about UTF-8", err)
	}
}
