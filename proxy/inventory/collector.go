package inventory

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/feedgate/feedgate/rules"
)

// activeWindow is how recently a client must have been seen to count in
// feedgate_clients.
const activeWindow = 24 * time.Hour

// collector computes the inventory metrics at scrape time, so that the
// request path does no metric work and a client ages out of the window
// without anything being recorded.
type collector struct {
	inv                                *Inventory
	clients, hosts, evictions, entries *prometheus.Desc
}

// Collector exports feedgate_clients{vendor,category}, the distinct clients
// seen within the last 24 hours, feedgate_signature_hosts{vendor,category},
// the distinct hosts on which a catalog signature found the vendor's
// traffic within the last 24 hours (internal mirrors, which no host
// pattern names), plus feedgate_inventory_evictions_total and
// feedgate_inventory_entries. Labels are vendor and category only,
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
		hosts: prometheus.NewDesc("feedgate_signature_hosts",
			"Distinct hosts on which a catalog signature recognised a vendor category in the last 24 hours.",
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
	ch <- c.hosts
	ch <- c.evictions
	ch <- c.entries
}

type vendorCategory struct{ vendor, category string }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	inv := c.inv
	// A client has an entry per vendor category for the vendor's own
	// hosts, and one more per host a signature found it on: clients and
	// hosts are counted distinct. Host-match entries are distinct clients
	// already, so only signature entries need a set (and they are few),
	// so that a scrape of a large inventory allocates little.
	type clientKey struct {
		vc     vendorCategory
		client netip.Addr
	}
	type hostKey struct {
		vc   vendorCategory
		host string
	}
	inv.mu.Lock()
	cutoff := inv.stamp().Add(-activeWindow)
	counts := make(map[vendorCategory]int)
	hostCounts := make(map[vendorCategory]int)
	var sigClients map[clientKey]bool
	var hosts map[hostKey]bool
	for n := inv.root.next; n != &inv.root; n = n.next {
		k := vendorCategory{n.Vendor, n.Category}
		recent := !n.LastSeen.Before(cutoff)
		if _, ok := counts[k]; !ok {
			counts[k] = 0
		}
		if n.Match != rules.MatchSignature {
			if recent {
				counts[k]++
			}
			continue
		}
		if _, ok := hostCounts[k]; !ok {
			hostCounts[k] = 0
		}
		if !recent {
			continue
		}
		if sigClients == nil {
			sigClients, hosts = map[clientKey]bool{}, map[hostKey]bool{}
		}
		own, ok := inv.entries[Key{Client: n.Client, Vendor: n.Vendor, Category: n.Category, Match: rules.MatchHost}]
		counted := ok && !own.LastSeen.Before(cutoff) // by its host-match entry
		if ck := (clientKey{k, n.Client}); !counted && !sigClients[ck] {
			sigClients[ck] = true
			counts[k]++
		}
		if hk := (hostKey{k, n.Host}); !hosts[hk] {
			hosts[hk] = true
			hostCounts[k]++
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
	for k, n := range hostCounts {
		m, err := prometheus.NewConstMetric(c.hosts, prometheus.GaugeValue, float64(n), k.vendor, k.category)
		if err != nil {
			m = prometheus.NewInvalidMetric(c.hosts, err)
		}
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(evictions))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(entries))
}
