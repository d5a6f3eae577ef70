package activity_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/activity"
)

// TestCounts checks what a record counts as: its decision's vendor,
// category and action, "rejected" for a refusal whatever was decided, and
// transparent for both kinds of record of the transparent listener.
func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rec     *accesslog.Record
		totals  []activity.Count
		buckets []string
	}{
		{"allowed", mk("12:00", "allow"),
			[]activity.Count{{"kaspersky", "update", "allow", 1}}, []string{"12:00 allowed=1 explicit=1"}},
		{"flagged tunnel", mk("12:00", "log", kind(accesslog.KindConnect), class("kaspersky", "licensing")),
			[]activity.Count{{"kaspersky", "licensing", "log", 1}}, []string{"12:00 flagged=1 explicit=1"}},
		{"blocked inside an intercepted tunnel", mk("12:00", "block", kind(accesslog.KindMITM)),
			[]activity.Count{{"kaspersky", "update", "block", 1}}, []string{"12:00 blocked=1 explicit=1"}},
		{"transparent tunnel", mk("12:00", "block", kind(accesslog.KindTransparent)),
			[]activity.Count{{"kaspersky", "update", "block", 1}}, []string{"12:00 blocked=1 transparent=1"}},
		{"transparent HTTP", mk("12:00", "allow", transparent),
			[]activity.Count{{"kaspersky", "update", "allow", 1}}, []string{"12:00 allowed=1 transparent=1"}},
		{"unclassified", mk("12:00", "allow", class("none", "none")),
			[]activity.Count{{"none", "none", "allow", 1}}, []string{"12:00 allowed=1 explicit=1"}},
		{"decided without a vendor", mk("12:00", "allow", class("", "")),
			[]activity.Count{{"none", "none", "allow", 1}}, []string{"12:00 allowed=1 explicit=1"}},
		{"refused before a decision", mk("12:00", "rejected:client"),
			[]activity.Count{{"none", "none", "rejected", 1}}, []string{"12:00 rejected=1 explicit=1"}},
		{"refused after a decision", mk("12:00", "allow", func(r *accesslog.Record) { r.Rejected = "destination" }),
			[]activity.Count{{"kaspersky", "update", "rejected", 1}}, []string{"12:00 rejected=1 explicit=1"}},
		{"refused transparent", mk("12:00", "rejected:limit", transparent),
			[]activity.Count{{"none", "none", "rejected", 1}}, []string{"12:00 rejected=1 transparent=1"}},
		// A refusal's decision, if any, is not a decision to count.
		{"refused with a decision left unset", mk("12:00", "rejected:invalid", class("kaspersky", "update")),
			[]activity.Count{{"none", "none", "rejected", 1}}, []string{"12:00 rejected=1 explicit=1"}},
		{"neither decided nor refused", mk("12:00", ""), []activity.Count{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := activity.New(activity.Options{})
			write(t, a, tc.rec)
			now := hm("12:00:30")
			for _, w := range []struct {
				tr   activity.Traffic
				step time.Duration
				n    int
			}{{a.Hour(now), time.Minute, 60}, {a.Day(now), time.Hour, 24}} {
				if got := buckets(t, w.tr, now, w.step, w.n); !slices.Equal(got, tc.buckets) {
					t.Errorf("%s buckets = %q; want %q", w.tr.Step, got, tc.buckets)
				}
				if !reflect.DeepEqual(w.tr.Totals, tc.totals) {
					t.Errorf("%s totals = %+v; want %+v", w.tr.Step, w.tr.Totals, tc.totals)
				}
			}
		})
	}
}

func TestTotalsSorted(t *testing.T) {
	a := activity.New(activity.Options{})
	write(t, a,
		mk("12:00", "block"),
		mk("12:01", "rejected:port"),
		mk("12:02", "allow", class("none", "none")),
		mk("12:03", "log", class("kaspersky", "ksn")),
		mk("12:04", "allow"),
		mk("12:05", "allow", class("drweb", "update")),
		mk("12:06", "block"),
		mk("12:07", "allow", func(r *accesslog.Record) { r.Rejected = "destination" }),
	)
	want := []activity.Count{
		{"drweb", "update", "allow", 1},
		{"kaspersky", "ksn", "log", 1},
		{"kaspersky", "update", "allow", 1},
		{"kaspersky", "update", "block", 2},
		{"kaspersky", "update", "rejected", 1},
		{"none", "none", "allow", 1},
		{"none", "none", "rejected", 1},
	}
	now := hm("12:30")
	if got := a.Hour(now).Totals; !reflect.DeepEqual(got, want) {
		t.Errorf("hour totals = %+v; want %+v", got, want)
	}
	if got := a.Day(now).Totals; !reflect.DeepEqual(got, want) {
		t.Errorf("day totals = %+v; want %+v", got, want)
	}
}

// TestWindows checks which records a window holds: bucket boundaries to
// the nanosecond, the window's edges, gaps in the traffic, records ahead
// of the newest bucket and a clock that steps back.
func TestWindows(t *testing.T) {
	for _, tc := range []struct {
		name string
		recs []*accesslog.Record
		now  string
		hour []string
		day  []string
	}{
		{
			name: "minute boundaries",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("12:00:59.999999999", "allow"), mk("12:01", "block")},
			now:  "12:01:30",
			hour: []string{"12:00 allowed=2 explicit=2", "12:01 blocked=1 explicit=1"},
			day:  []string{"12:00 allowed=2 blocked=1 explicit=3"},
		},
		{
			name: "hour boundaries",
			recs: []*accesslog.Record{mk("12:59:59.999999999", "allow"), mk("13:00", "log")},
			now:  "13:00",
			hour: []string{"12:59 allowed=1 explicit=1", "13:00 flagged=1 explicit=1"},
			day:  []string{"12:00 allowed=1 explicit=1", "13:00 flagged=1 explicit=1"},
		},
		{
			name: "the first minute of the window is in",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("12:01", "allow")},
			now:  "12:59:59.999999999",
			hour: []string{"12:00 allowed=1 explicit=1", "12:01 allowed=1 explicit=1"},
			day:  []string{"12:00 allowed=2 explicit=2"},
		},
		{
			name: "a minute later it is out",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("12:01", "allow")},
			now:  "13:00",
			hour: []string{"12:01 allowed=1 explicit=1"},
			day:  []string{"12:00 allowed=2 explicit=2"},
		},
		{
			name: "the first hour of the day is in",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("13:00", "block")},
			now:  "+1 11:59:59",
			hour: nil,
			day:  []string{"12:00 allowed=1 explicit=1", "13:00 blocked=1 explicit=1"},
		},
		{
			name: "an hour later it is out",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("13:00", "block")},
			now:  "+1 12:00",
			hour: nil,
			day:  []string{"13:00 blocked=1 explicit=1"},
		},
		{
			name: "now at the start of a minute",
			recs: []*accesslog.Record{mk("12:05", "allow")},
			now:  "12:05",
			hour: []string{"12:05 allowed=1 explicit=1"},
			day:  []string{"12:00 allowed=1 explicit=1"},
		},
		{
			name: "a record after now is not shown",
			recs: []*accesslog.Record{mk("12:05", "allow"), mk("12:06", "block")},
			now:  "12:05:59.999999999",
			hour: []string{"12:05 allowed=1 explicit=1"},
			day:  []string{"12:00 allowed=1 blocked=1 explicit=2"},
		},
		{
			name: "a record ahead starts a new bucket, a late one goes to its own",
			recs: []*accesslog.Record{mk("12:00:30", "allow"), mk("12:01:10", "block"), mk("12:00:50", "log")},
			now:  "12:01:10",
			hour: []string{"12:00 allowed=1 flagged=1 explicit=2", "12:01 blocked=1 explicit=1"},
			day:  []string{"12:00 allowed=1 flagged=1 blocked=1 explicit=3"},
		},
		{
			name: "gap of hours",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("12:59", "log"), mk("15:30", "block")},
			now:  "15:30",
			hour: []string{"15:30 blocked=1 explicit=1"},
			day:  []string{"12:00 allowed=1 flagged=1 explicit=2", "15:00 blocked=1 explicit=1"},
		},
		{
			name: "gap of a day",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("+1 12:30", "block")},
			now:  "+1 12:30",
			hour: []string{"+1 12:30 blocked=1 explicit=1"},
			day:  []string{"+1 12:00 blocked=1 explicit=1"},
		},
		{
			name: "the slot of a minute an hour ago is reused",
			recs: []*accesslog.Record{mk("12:00", "allow"), mk("12:00:10", "allow"), mk("13:00", "block")},
			now:  "13:00",
			hour: []string{"13:00 blocked=1 explicit=1"},
			day:  []string{"12:00 allowed=2 explicit=2", "13:00 blocked=1 explicit=1"},
		},
		{
			name: "a record older than the window is dropped",
			recs: []*accesslog.Record{mk("13:00", "allow"), mk("12:00", "block"), mk("12:00:30", "log")},
			now:  "13:00",
			hour: []string{"13:00 allowed=1 explicit=1"},
			day:  []string{"12:00 flagged=1 blocked=1 explicit=2", "13:00 allowed=1 explicit=1"},
		},
		{
			name: "a record older than the day is dropped",
			recs: []*accesslog.Record{mk("+1 12:00", "allow"), mk("12:59", "block")},
			now:  "+1 12:00",
			hour: []string{"+1 12:00 allowed=1 explicit=1"},
			day:  []string{"+1 12:00 allowed=1 explicit=1"},
		},
		{
			name: "clock stepped back within the window",
			recs: []*accesslog.Record{mk("12:30", "allow"), mk("12:10", "block"), mk("12:10:30", "log")},
			now:  "12:10:30",
			hour: []string{"12:10 flagged=1 blocked=1 explicit=2"},
			day:  []string{"12:00 allowed=1 flagged=1 blocked=1 explicit=3"},
		},
		{
			name: "clock stepped back beyond the window",
			recs: []*accesslog.Record{mk("12:30", "allow"), mk("11:20", "block")},
			now:  "11:20",
			hour: nil,
			day:  []string{"11:00 blocked=1 explicit=1"},
		},
		{
			name: "asked for a time long after the traffic",
			recs: []*accesslog.Record{mk("12:00", "allow")},
			now:  "+1 20:00",
			hour: nil,
			day:  nil,
		},
		{
			name: "asked for a time long before the traffic",
			recs: []*accesslog.Record{mk("+1 12:00", "allow")},
			now:  "01:00",
			hour: nil,
			day:  nil,
		},
		{
			name: "records in another zone",
			recs: []*accesslog.Record{mk("12:00", "allow", func(r *accesslog.Record) { r.Time = r.Time.In(time.FixedZone("EDT", -4*3600)) })},
			now:  "12:00",
			hour: []string{"12:00 allowed=1 explicit=1"},
			day:  []string{"12:00 allowed=1 explicit=1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := activity.New(activity.Options{})
			write(t, a, tc.recs...)
			now := hm(tc.now)
			if got := buckets(t, a.Hour(now), now, time.Minute, 60); !slices.Equal(got, tc.hour) {
				t.Errorf("hour = %q; want %q", got, tc.hour)
			}
			if got := buckets(t, a.Day(now), now, time.Hour, 24); !slices.Equal(got, tc.day) {
				t.Errorf("day = %q; want %q", got, tc.day)
			}
		})
	}
}

// TestRotation runs the rings round several times with a record every
// minute, and checks that each window holds exactly its own steps.
func TestRotation(t *testing.T) {
	a := activity.New(activity.Options{})
	start := hm("00:00")
	for m := range 3 * 24 * 60 {
		now := start.Add(time.Duration(m) * time.Minute)
		write(t, a, mk("00:00", "allow", func(r *accesslog.Record) { r.Time = now.Add(59 * time.Second) }))
		if m%97 != 0 && m%60 != 0 {
			continue
		}
		hour := a.Hour(now)
		buckets(t, hour, now, time.Minute, 60)
		for i, b := range hour.Buckets {
			want := uint64(0)
			if !b.Start.Before(start) {
				want = 1
			}
			if b.Allowed != want {
				t.Fatalf("at %s: minute bucket %d (%s) has %d requests; want %d", now, i, b.Start, b.Allowed, want)
			}
		}
		d := a.Day(now)
		buckets(t, d, now, time.Hour, 24)
		for i, b := range d.Buckets {
			want := uint64(60)
			switch {
			case b.Start.Before(start):
				want = 0
			case i == len(d.Buckets)-1:
				want = uint64(now.Minute() + 1)
			}
			if b.Allowed != want {
				t.Fatalf("at %s: hour bucket %d (%s) has %d requests; want %d", now, i, b.Start, b.Allowed, want)
			}
		}
	}
}

// TestExtremeTimes checks that windows around any time, records from
// before 1970 included, are framed right and never panic.
func TestExtremeTimes(t *testing.T) {
	a := activity.New(activity.Options{})
	write(t, a,
		mk("00:00", "allow", func(r *accesslog.Record) { r.Time = time.Unix(-90, 0) }),
		mk("00:00", "block", func(r *accesslog.Record) { r.Time = time.Unix(-1, 999999999) }),
		mk("00:00", "log", func(r *accesslog.Record) { r.Time = time.Unix(0, 0) }),
	)
	now := time.Unix(30, 0).UTC()
	hour := a.Hour(now)
	buckets(t, hour, now, time.Minute, 60)
	var got []string
	for _, b := range hour.Buckets {
		if b.Explicit != 0 {
			got = append(got, fmt.Sprintf("%s %d", b.Start.Format(time.DateTime), b.Explicit))
		}
	}
	want := []string{"1969-12-31 23:58:00 1", "1969-12-31 23:59:00 1", "1970-01-01 00:00:00 1"}
	if !slices.Equal(got, want) {
		t.Errorf("buckets around 1970 = %q; want %q", got, want)
	}
	for _, now := range []time.Time{{}, time.Unix(0, 0).UTC(), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)} {
		buckets(t, a.Hour(now), now, time.Minute, 60)
		buckets(t, a.Day(now), now, time.Hour, 24)
	}
	// A record from year 1 does not break the rings for today's.
	write(t, a, mk("12:00", "allow", func(r *accesslog.Record) { r.Time = time.Time{} }), mk("12:00", "allow"))
	if got := buckets(t, a.Hour(hm("12:00")), hm("12:00"), time.Minute, 60); !slices.Equal(got, []string{"12:00 allowed=1 explicit=1"}) {
		t.Errorf("after a record of year 1: %q", got)
	}
}
