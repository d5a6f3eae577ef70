// Package inventory keeps track of which internal clients still talk to
// which vendor endpoints, so that operators can find and migrate those
// machines before a vendor's cut-off.
//
// The proxy calls Record for every decided request, so Record is built to be
// cheap: one mutex, one map lookup and a few pointer moves, with no
// allocation for a client already known. Memory is bounded by
// Options.MaxEntries; beyond it the least recently seen entry is evicted.
package inventory

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// defaultMaxEntries bounds memory when the caller does not: about 35 MB of
// entries, 50 MB with a host or two each, far more clients than a site
// behind one proxy has.
const defaultMaxEntries = 100000

// maxHosts bounds Entry.Hosts: enough to show where a client goes, while
// an entry stays a few hundred bytes.
const maxHosts = 8

// Key identifies one inventory entry.
type Key struct {
	Client           netip.Addr
	Vendor, Category string
	// Match is what classified the requests (rules.MatchHost or
	// rules.MatchSignature), and Host the host of requests a signature
	// classified ("" for the others): a signature finds the vendor's
	// traffic on hosts that are not the vendor's, and the host is then
	// what an operator has to find, an internal mirror for instance.
	Match, Host string
}

// Entry is one client's use of one vendor category.
type Entry struct {
	Client     netip.Addr `json:"client"`
	Vendor     string     `json:"vendor"`
	Category   string     `json:"category"`
	FirstSeen  time.Time  `json:"first_seen"`
	LastSeen   time.Time  `json:"last_seen"`
	Requests   uint64     `json:"requests"`
	LastAction string     `json:"last_action"` // "allow" | "log" | "block"
	LastRule   string     `json:"last_rule"`
	// Match is "host" or "signature" (see Key), Host the host of a
	// signature's requests, and Signature the name of the signature
	// that classified the last of them.
	Match     string `json:"match"`
	Host      string `json:"host,omitempty"`
	Signature string `json:"signature,omitempty"`
	// Hosts are the distinct hosts the entry's requests went to, in
	// canonical form (as given if it has none), most recent first, at most
	// 8: the oldest drops out. An entry of a signature has its one Host.
	// Entries recorded without a host (Record) have none.
	Hosts []string `json:"hosts,omitempty"`
}

func (e *Entry) key() Key {
	return Key{Client: e.Client, Vendor: e.Vendor, Category: e.Category, Match: e.Match, Host: e.Host}
}

// Options configures an Inventory.
type Options struct {
	MaxEntries int              // cap; <= 0 means 100000
	Now        func() time.Time // wall clock (NOT the policy clock); nil means time.Now
	StateFile  string           // "" means no persistence
}

// Filter selects entries for Snapshot. Zero fields select everything.
type Filter struct {
	Vendor, Category string
	Match            string    // "host" or "signature"
	Since            time.Time // zero: no bound; otherwise LastSeen >= Since
	// Client selects one machine's entries (compared unmapped, as they
	// are kept); the zero Addr selects every client.
	Client netip.Addr
	// Action selects entries whose last action is this ("allow", "log",
	// "block").
	Action string
}

func (f *Filter) match(e *Entry) bool {
	return (f.Vendor == "" || e.Vendor == f.Vendor) &&
		(f.Category == "" || e.Category == f.Category) &&
		(f.Match == "" || e.Match == f.Match) &&
		(f.Since.IsZero() || !e.LastSeen.Before(f.Since)) &&
		(!f.Client.IsValid() || e.Client == f.Client.Unmap()) &&
		(f.Action == "" || e.LastAction == f.Action)
}

// node is an entry on the recency list. The list is intrusive so that a hit
// moves pointers instead of allocating a list element.
type node struct {
	Entry
	prev, next *node
}

// Inventory records which clients use which vendor categories. It is safe
// for concurrent use.
type Inventory struct {
	now       func() time.Time
	max       int
	stateFile string

	// saveMu serialises Save, so that a slow save of an older snapshot
	// cannot rename its file over a newer one.
	saveMu sync.Mutex

	mu      sync.Mutex
	entries map[Key]*node
	// root is the sentinel of the recency list: root.next is the most
	// recently seen entry, root.prev the eviction candidate.
	root      node
	evictions uint64
	// records counts recorded requests, and saved is its
	// value at the last successful save: Run skips saves that would
	// rewrite the same entries.
	records, saved uint64
}

// New builds an inventory and, if opts.StateFile exists, loads it. A
// missing file is not an error. A file that cannot be read or decoded is,
// and the error names the file; New then still returns an empty, usable
// inventory, so that the caller can decide to start anyway (whose next Save
// replaces the file). Entries beyond MaxEntries in the file are dropped
// oldest first, and counted as evictions.
func New(opts Options) (*Inventory, error) {
	inv := &Inventory{now: opts.Now, max: opts.MaxEntries, stateFile: opts.StateFile}
	if inv.now == nil {
		inv.now = time.Now
	}
	if inv.max <= 0 {
		inv.max = defaultMaxEntries
	}
	inv.entries = make(map[Key]*node)
	inv.root.next, inv.root.prev = &inv.root, &inv.root
	if inv.stateFile != "" {
		if err := inv.load(); err != nil {
			return inv, err
		}
	}
	return inv, nil
}

// stamp reads the clock. UTC drops the monotonic reading, so that live
// entries and entries loaded from a state file compare alike, and every
// timestamp is written in one zone.
func (inv *Inventory) stamp() time.Time { return inv.now().UTC() }

// Now reads the inventory's clock as it stamps entries (in UTC, without a
// monotonic reading), so that a caller can filter and date a snapshot on
// the entries' own clock.
func (inv *Inventory) Now() time.Time { return inv.stamp() }

// Record notes one request that a catalog host pattern classified. Only
// vendor traffic is recorded: vendor "" or "none" is ignored, and so is
// an invalid client address, which names no machine to migrate. It is
// safe for concurrent use and allocates nothing for a key already
// recorded.
func (inv *Inventory) Record(client netip.Addr, vendor, category, action, rule string) {
	inv.record(Key{Client: client, Vendor: vendor, Category: category, Match: rules.MatchHost}, action, rule, "", "", false)
}

// RecordDecision notes one decided request to host, as Record, with what
// classified it, and the host in the entry's Hosts: a request a signature
// classified is an entry of its own per host. It allocates nothing for a
// key already recorded whose Hosts has the host as given.
func (inv *Inventory) RecordDecision(client netip.Addr, host string, d *rules.Decision) {
	k := Key{Client: client, Vendor: d.Vendor, Category: d.Category, Match: d.MatchedBy()}
	canonical := false
	if k.Match == rules.MatchSignature {
		// One host is one entry however the clients spell it.
		if h, err := rules.CanonicalHost(host); err == nil {
			host, canonical = h, true
		}
		k.Host = host
	}
	inv.record(k, d.Action.String(), d.RuleName, d.Signature, host, canonical)
}

// record notes one request of k; host ("" for none) goes to the entry's
// Hosts, canonicalised unless canonical says it already is.
func (inv *Inventory) record(k Key, action, rule, signature, host string, canonical bool) {
	if k.Vendor == "" || k.Vendor == rules.NoVendor || !k.Client.IsValid() {
		return
	}
	// A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; one
	// machine must be one entry whichever socket it came in on.
	k.Client = k.Client.Unmap()

	inv.mu.Lock()
	defer inv.mu.Unlock()
	// The clock is read under the lock so that the recency list stays in
	// LastSeen order even when goroutines race.
	now := inv.stamp()
	inv.records++
	if n, ok := inv.entries[k]; ok {
		n.LastSeen = now
		n.Requests++
		n.LastAction = action
		n.LastRule = rule
		n.Signature = signature
		n.noteHost(host, canonical)
		inv.moveToFront(n)
		return
	}
	var n *node
	var hosts []string
	if len(inv.entries) >= inv.max {
		n = inv.root.prev
		inv.unlink(n)
		delete(inv.entries, n.key())
		inv.evictions++
		// Reusing the evicted node, and the room of its hosts, keeps a
		// full inventory from allocating for every new client. Snapshots
		// hold copies of the hosts, never this array.
		hosts = n.Hosts[:0]
		clear(n.Hosts[:cap(n.Hosts)])
		*n = node{}
	} else {
		n = new(node)
	}
	n.Entry = Entry{
		Client:     k.Client,
		Vendor:     k.Vendor,
		Category:   k.Category,
		FirstSeen:  now,
		LastSeen:   now,
		Requests:   1,
		LastAction: action,
		LastRule:   rule,
		Match:      k.Match,
		Host:       k.Host,
		Signature:  signature,
		Hosts:      hosts,
	}
	n.noteHost(host, canonical)
	inv.entries[k] = n
	inv.pushFront(n)
}

// noteHost puts host first in the entry's Hosts. A host already there, as
// given or in canonical form, only moves, so that a client's usual hosts
// cost no allocation: the given form is looked for first, because
// canonicalising may allocate (upper case, IDNA) and most clients send
// the canonical form. The room for maxHosts is allocated once per entry,
// with its first host.
func (n *node) noteHost(host string, canonical bool) {
	if host == "" {
		return
	}
	i := slices.Index(n.Hosts, host)
	if i < 0 && !canonical {
		if h, err := rules.CanonicalHost(host); err == nil && h != host {
			host = h
			i = slices.Index(n.Hosts, host)
		}
	}
	switch {
	case i >= 0:
	case len(n.Hosts) < maxHosts:
		if len(n.Hosts) == cap(n.Hosts) {
			// Entries loaded from a state file have no room to spare.
			n.Hosts = append(make([]string, 0, maxHosts), n.Hosts...)
		}
		n.Hosts = append(n.Hosts, "")
		i = len(n.Hosts) - 1
	default:
		// The least recently used host drops out.
		i = len(n.Hosts) - 1
	}
	copy(n.Hosts[1:i+1], n.Hosts[:i])
	n.Hosts[0] = host
}

// Snapshot returns copies of the entries matching f, sorted by LastSeen
// descending (ties: client, vendor, category ascending). The slice is never
// nil, so that it encodes as a JSON array.
func (inv *Inventory) Snapshot(f Filter) []Entry {
	out, _ := inv.SnapshotWithEvictions(f)
	return out
}

// SnapshotWithEvictions is Snapshot that also returns the eviction count
// read under the same lock, so that callers reporting both report one
// moment.
func (inv *Inventory) SnapshotWithEvictions(f Filter) ([]Entry, uint64) {
	// Allocating before taking the lock keeps Record from waiting on the
	// allocator: at the default cap the copy is 22 MB. Entries recorded
	// in between just grow the slice.
	out := make([]Entry, 0, inv.Len())
	// The entries' hosts are copied into one array, so that a snapshot
	// shares none with the nodes, which later records change, and costs a
	// few allocations rather than one per entry. Each entry's slice is
	// capped at its length, so that appending to one cannot write over the
	// next.
	var hosts []string
	inv.mu.Lock()
	for n := inv.root.next; n != &inv.root; n = n.next {
		if f.match(&n.Entry) {
			e := n.Entry
			if len(n.Hosts) > 0 {
				start := len(hosts)
				hosts = append(hosts, n.Hosts...)
				e.Hosts = hosts[start:len(hosts):len(hosts)]
			}
			out = append(out, e)
		}
	}
	evictions := inv.evictions
	inv.mu.Unlock()
	// Sorting outside the lock keeps Record waiting only for the copy. The
	// list is already in recency order, but a wall clock can step back.
	sortEntries(out)
	return out, evictions
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		if c := a.Client.Compare(b.Client); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.Vendor, b.Vendor), strings.Compare(a.Category, b.Category),
			strings.Compare(a.Match, b.Match), strings.Compare(a.Host, b.Host))
	})
}

// Len returns the number of entries.
func (inv *Inventory) Len() int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return len(inv.entries)
}

// Evictions returns how many entries were dropped to stay within
// MaxEntries since the inventory was built.
func (inv *Inventory) Evictions() uint64 {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.evictions
}

func (inv *Inventory) unlink(n *node) {
	n.prev.next = n.next
	n.next.prev = n.prev
	n.prev, n.next = nil, nil
}

func (inv *Inventory) pushFront(n *node) {
	n.prev = &inv.root
	n.next = inv.root.next
	inv.root.next.prev = n
	inv.root.next = n
}

func (inv *Inventory) pushBack(n *node) {
	n.next = &inv.root
	n.prev = inv.root.prev
	inv.root.prev.next = n
	inv.root.prev = n
}

func (inv *Inventory) moveToFront(n *node) {
	if inv.root.next == n {
		return
	}
	inv.unlink(n)
	inv.pushFront(n)
}
