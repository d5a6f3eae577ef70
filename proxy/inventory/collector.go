package inventory

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// activeWindow is how recently a client must have been seen to count in
// feedgate_clients.
const activeWindow = 24 * time.Hour

// collector computes the inventory metrics at scrape time, so that the
// request path does no metric work and a client ages out of the window
// without anything being recorded.
type collector struct {
	inv                         *Inventory
	clients, evictions, entries *prometheus.Desc
}

// Collector exports feedgate_clients{vendor,category}, the distinct clients
// seen within the last 24 hours, plus feedgate_inventory_evictions_total
// and feedgate_inventory_entries. Labels are vendor and category only,
// never a client: addresses would make one series per machine. A vendor
// category whose clients are all older than 24 hours, but still in the
// inventory, reports 0 rather than vanishing, so that "migrated" can be
// told from "no data".
func (inv *Inventory) Collector() prometheus.Collector {
	return &collector{
		inv: inv,
		clients: prometheus.NewDesc("feedgate_clients",
			"Distinct clients that used a vendor category in the last 24 hours.",
			[]string{"vendor", "category"}, nil),
		evictions: prometheus.NewDesc("feedgate_inventory_evictions_total",
			"Client inventory entries dropped to stay within the entry limit.",
			nil, nil),
		entries: prometheus.NewDesc("feedgate_inventory_entries",
			"Entries (client, vendor, category) in the client inventory.",
			nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.clients
	ch <- c.evictions
	ch <- c.entries
}

type vendorCategory struct{ vendor, category string }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	inv := c.inv
	// Entries are keyed by client, vendor and category, so each entry is
	// a distinct client of its vendor category: counting entries counts
	// clients, and a client of two categories counts once in each.
	inv.mu.Lock()
	cutoff := inv.stamp().Add(-activeWindow)
	counts := make(map[vendorCategory]int)
	for n := inv.root.next; n != &inv.root; n = n.next {
		k := vendorCategory{n.Vendor, n.Category}
		if !n.LastSeen.Before(cutoff) {
			counts[k]++
		} else if _, ok := counts[k]; !ok {
			counts[k] = 0
		}
	}
	entries, evictions := len(inv.entries), inv.evictions
	inv.mu.Unlock()

	for k, n := range counts {
		// NewConstMetric, not the Must form: a label value that is not
		// UTF-8 would panic in a scrape, taking the proxy down with it.
		m, err := prometheus.NewConstMetric(c.clients, prometheus.GaugeValue, float64(n), k.vendor, k.category)
		if err != nil {
			m = prometheus.NewInvalidMetric(c.clients, err)
		}
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(evictions))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(entries))
}
