package activity

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Count is the requests of one vendor, category and action in a window.
type Count struct {
	Vendor   string `json:"vendor"`
	Category string `json:"category"`
	Action   string `json:"action"` // "allow" | "log" | "block" | "rejected"
	Requests uint64 `json:"requests"`
}

// Bucket is one step of a window.
type Bucket struct {
	Start    time.Time `json:"start"`
	Allowed  uint64    `json:"allowed"`
	Flagged  uint64    `json:"flagged"`
	Blocked  uint64    `json:"blocked"`
	Rejected uint64    `json:"rejected"`
	// Explicit counts the records not from the transparent listener,
	// Transparent those from it (Record.Mode ModeTransparent or Kind
	// KindTransparent); together they are the four counts above.
	Explicit    uint64 `json:"explicit"`
	Transparent uint64 `json:"transparent"`
}

// Traffic is a window of counts ending at Until.
type Traffic struct {
	// From is the start of the first bucket, Until the now the window was
	// asked for: the last bucket is the one that holds Until.
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
	Step  string    `json:"step"` // "1m" or "1h"
	// Buckets are oldest first; every step of the window is present,
	// empty ones too.
	Buckets []Bucket `json:"buckets"`
	// Totals are over the window, sorted by vendor, category and action;
	// never nil.
	Totals      []Count `json:"totals"`
	Explicit    uint64  `json:"explicit"`
	Transparent uint64  `json:"transparent"`
}

// Hour returns the last hour before now in minute buckets (60). Now is
// read on the clock of Record.Time, the wall clock.
func (a *Activity) Hour(now time.Time) Traffic {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.minutes.window(now, "1m")
}

// Day returns the last 24 hours before now in hour buckets (24), whole
// hours of UTC.
func (a *Activity) Day(now time.Time) Traffic {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hours.window(now, "1h")
}

// countKey is one line of a bucket's counts. Its strings are the
// policy's (vendor, category) and constants (action), so that keeping
// them in a map retains nothing of a request.
type countKey struct{ vendor, category, action string }

type counter uint8

const (
	counterAllowed counter = iota
	counterFlagged
	counterBlocked
	counterRejected
)

// slot is one bucket of a ring.
type slot struct {
	// step is the bucket's number: its start in Unix seconds divided by
	// the ring's step. used is false until the slot is first written.
	step   int64
	used   bool
	counts map[countKey]uint64
	// byCounter is indexed by counter.
	byCounter             [4]uint64
	explicit, transparent uint64
}

// ring is the buckets of the last len(slots) steps. A bucket is found by
// its step number modulo the ring's length; a slot holding an older step
// is reset when a newer step needs it, so that a gap in the traffic costs
// nothing and reading only ever trusts a slot whose step is the one it
// asks for.
type ring struct {
	step  int64 // seconds
	slots []slot
	// newest is the newest step written, valid once written is set.
	newest  int64
	written bool
}

func newRing(step int64, n int) ring {
	r := ring{step: step, slots: make([]slot, n)}
	for i := range r.slots {
		r.slots[i].counts = make(map[countKey]uint64)
	}
	return r
}

// stepOf is the number of the step that holds the Unix second sec,
// rounding down for times before 1970 too.
func (r *ring) stepOf(sec int64) int64 {
	q := sec / r.step
	if sec%r.step < 0 {
		q--
	}
	return q
}

func (r *ring) slotOf(step int64) *slot {
	n := int64(len(r.slots))
	return &r.slots[(step%n+n)%n]
}

// add counts one record in the bucket of the Unix second sec. A record
// older than the ring's window, as its newest step has it, is dropped: its
// slot belongs to a newer step now. One in a step after the newest starts
// that step's bucket.
func (r *ring) add(sec int64, k countKey, c counter, transparent bool) {
	step := r.stepOf(sec)
	switch {
	case !r.written || step > r.newest:
		r.newest, r.written = step, true
	case step <= r.newest-int64(len(r.slots)):
		return
	}
	s := r.slotOf(step)
	if !s.used || s.step != step {
		// Clearing keeps the map's room, so that a ring in steady state
		// does not allocate when it turns.
		clear(s.counts)
		s.byCounter = [4]uint64{}
		s.explicit, s.transparent = 0, 0
		s.step, s.used = step, true
	}
	s.counts[k]++
	s.byCounter[c]++
	if transparent {
		s.transparent++
	} else {
		s.explicit++
	}
}

// window returns the buckets of the len(slots) steps that end with the one
// holding now. It reads the ring only: asking for a time before the newest
// step (a clock stepped back) shows what the ring still holds of that
// window, and never moves it.
func (r *ring) window(now time.Time, stepName string) Traffic {
	n := int64(len(r.slots))
	last := r.stepOf(now.Unix())
	first := last - n + 1
	t := Traffic{
		From:    time.Unix(first*r.step, 0).UTC(),
		Until:   now.UTC(),
		Step:    stepName,
		Buckets: make([]Bucket, 0, n),
	}
	totals := make(map[countKey]uint64)
	for step := first; step <= last; step++ {
		b := Bucket{Start: time.Unix(step*r.step, 0).UTC()}
		if s := r.slotOf(step); s.used && s.step == step {
			b.Allowed, b.Flagged = s.byCounter[counterAllowed], s.byCounter[counterFlagged]
			b.Blocked, b.Rejected = s.byCounter[counterBlocked], s.byCounter[counterRejected]
			b.Explicit, b.Transparent = s.explicit, s.transparent
			for k, v := range s.counts {
				totals[k] += v
			}
		}
		t.Explicit += b.Explicit
		t.Transparent += b.Transparent
		t.Buckets = append(t.Buckets, b)
	}
	t.Totals = make([]Count, 0, len(totals))
	for k, v := range totals {
		t.Totals = append(t.Totals, Count{Vendor: k.vendor, Category: k.category, Action: k.action, Requests: v})
	}
	slices.SortFunc(t.Totals, func(a, b Count) int {
		return cmp.Or(strings.Compare(a.Vendor, b.Vendor), strings.Compare(a.Category, b.Category),
			strings.Compare(a.Action, b.Action))
	})
	return t
}
