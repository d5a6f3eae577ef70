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

// defaultMaxEntries bounds memory when the caller does not: about 25 MB of
// entries, far more clients than a site behind one proxy has.
const defaultMaxEntries = 100000

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
	inv.record(Key{Client: client, Vendor: vendor, Category: category, Match: rules.MatchHost}, action, rule, "")
}

// RecordDecision notes one decided request to host, as Record, with what
// classified it: a request a signature classified is an entry of its own
// per host.
func (inv *Inventory) RecordDecision(client netip.Addr, host string, d *rules.Decision) {
	k := Key{Client: client, Vendor: d.Vendor, Category: d.Category, Match: d.MatchedBy()}
	if k.Match == rules.MatchSignature {
		// One host is one entry however the clients spell it.
		k.Host = host
		if h, err := rules.CanonicalHost(host); err == nil {
			k.Host = h
		}
	}
	inv.record(k, d.Action.String(), d.RuleName, d.Signature)
}

func (inv *Inventory) record(k Key, action, rule, signature string) {
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
		inv.moveToFront(n)
		return
	}
	var n *node
	if len(inv.entries) >= inv.max {
		n = inv.root.prev
		inv.unlink(n)
		delete(inv.entries, n.key())
		inv.evictions++
		// Reusing the evicted node keeps a full inventory from allocating
		// for every new client.
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
	}
	inv.entries[k] = n
	inv.pushFront(n)
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
	// allocator: at the default cap the copy is 14 MB. Entries recorded
	// in between just grow the slice.
	out := make([]Entry, 0, inv.Len())
	inv.mu.Lock()
	for n := inv.root.next; n != &inv.root; n = n.next {
		if f.match(&n.Entry) {
			out = append(out, n.Entry)
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
