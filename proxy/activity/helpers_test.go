package activity_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/rules"
)

// day is the date of the tests' clock readings, which hm completes.
var day = time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)

// hm reads "15:04", "15:04:05" or "15:04:05.999999999" on day, and
// "+1 15:04" on the day after.
func hm(s string) time.Time {
	d := day
	if rest, ok := strings.CutPrefix(s, "+1 "); ok {
		d, s = d.AddDate(0, 0, 1), rest
	}
	for _, layout := range []string{"15:04", "15:04:05", "15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return d.Add(t.Sub(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)))
		}
	}
	panic("hm: bad time " + s)
}

// mk builds a record at a time hm reads. action is "allow", "log" or
// "block" for a decided request of kaspersky/update, "rejected:REASON"
// for an undecided refusal, "" for a record neither decided nor refused;
// edits change the rest.
func mk(when, action string, edits ...func(*accesslog.Record)) *accesslog.Record {
	r := &accesslog.Record{
		Time:   hm(when),
		Kind:   accesslog.KindHTTP,
		Client: netip.MustParseAddr("10.0.0.1"),
		Method: "GET",
		Host:   "dnl-01.geo.kaspersky.com",
		Port:   80,
		Path:   "/bases/av/kdb/i386/kdb-i386-0607g.xml",
		Status: 200,
	}
	switch {
	case action == "":
	case strings.HasPrefix(action, "rejected:"):
		r.Rejected = strings.TrimPrefix(action, "rejected:")
		r.Status = 403
	default:
		a, ok := rules.ParseAction(action)
		if !ok {
			panic("mk: bad action " + action)
		}
		r.Decided = true
		r.Decision = rules.Decision{Class: 1, Vendor: "kaspersky", Category: "update",
			Pattern: "*.geo.kaspersky.com", Rule: 0, RuleName: "updates-cutoff", Action: a}
		if a == rules.Block {
			r.Status = 403
		}
	}
	for _, e := range edits {
		e(r)
	}
	return r
}

func class(vendor, category string) func(*accesslog.Record) {
	return func(r *accesslog.Record) { r.Decision.Vendor, r.Decision.Category = vendor, category }
}

func transparent(r *accesslog.Record) { r.Mode = accesslog.ModeTransparent }

func kind(k string) func(*accesslog.Record) {
	return func(r *accesslog.Record) { r.Kind = k }
}

func client(s string) func(*accesslog.Record) {
	return func(r *accesslog.Record) { r.Client = netip.MustParseAddr(s) }
}

func host(h string) func(*accesslog.Record) {
	return func(r *accesslog.Record) { r.Host = h }
}

func write(t testing.TB, a *activity.Activity, recs ...*accesslog.Record) {
	t.Helper()
	for _, r := range recs {
		if err := a.Write(r); err != nil {
			t.Fatalf("Write(%+v): %v", r, err)
		}
	}
}

// buckets checks the window's frame (every step present, in order, From
// the first bucket's start, Until now and in the last bucket) and returns
// its non-empty buckets as lines such as "12:00 allowed=2 explicit=2".
func buckets(t testing.TB, tr activity.Traffic, now time.Time, step time.Duration, n int) []string {
	t.Helper()
	if len(tr.Buckets) != n {
		t.Fatalf("%d buckets; want %d", len(tr.Buckets), n)
	}
	wantStep := map[time.Duration]string{time.Minute: "1m", time.Hour: "1h"}[step]
	if tr.Step != wantStep {
		t.Errorf("Step = %q; want %q", tr.Step, wantStep)
	}
	if !tr.Until.Equal(now) || tr.Until.Location() != time.UTC {
		t.Errorf("Until = %s; want %s in UTC", tr.Until, now)
	}
	if !tr.From.Equal(tr.Buckets[0].Start) {
		t.Errorf("From = %s; want the first bucket's start %s", tr.From, tr.Buckets[0].Start)
	}
	last := tr.Buckets[n-1].Start
	if now.Before(last) || !now.Before(last.Add(step)) {
		t.Errorf("last bucket starts at %s; want the one holding %s", last, now)
	}
	var out []string
	var explicit, transparent uint64
	for i, b := range tr.Buckets {
		if i > 0 && !b.Start.Equal(tr.Buckets[i-1].Start.Add(step)) {
			t.Errorf("bucket %d starts at %s, after %s", i, b.Start, tr.Buckets[i-1].Start)
		}
		if b.Start.Location() != time.UTC || !b.Start.Equal(b.Start.Truncate(step)) {
			t.Errorf("bucket %d starts at %s; want a whole step in UTC", i, b.Start)
		}
		if b.Allowed+b.Flagged+b.Blocked+b.Rejected != b.Explicit+b.Transparent {
			t.Errorf("bucket %s: %+v: actions and listeners do not add up", b.Start, b)
		}
		explicit += b.Explicit
		transparent += b.Transparent
		var fields []string
		for _, f := range []struct {
			name string
			n    uint64
		}{
			{"allowed", b.Allowed}, {"flagged", b.Flagged}, {"blocked", b.Blocked}, {"rejected", b.Rejected},
			{"explicit", b.Explicit}, {"transparent", b.Transparent},
		} {
			if f.n != 0 {
				fields = append(fields, fmt.Sprintf("%s=%d", f.name, f.n))
			}
		}
		if fields != nil {
			label := b.Start.Format("15:04")
			if b.Start.Day() != day.Day() {
				label = "+1 " + label
			}
			out = append(out, label+" "+strings.Join(fields, " "))
		}
	}
	if tr.Explicit != explicit || tr.Transparent != transparent {
		t.Errorf("window explicit=%d transparent=%d; its buckets add up to %d and %d", tr.Explicit, tr.Transparent, explicit, transparent)
	}
	if tr.Totals == nil {
		t.Error("Totals is nil; want an empty slice, which encodes as []")
	}
	var total uint64
	for _, c := range tr.Totals {
		total += c.Requests
	}
	if total != explicit+transparent {
		t.Errorf("Totals add up to %d; the buckets to %d", total, explicit+transparent)
	}
	return out
}
