package activity_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/rules"
)

// TestLatestKeeps checks which records are kept as decisions, and what of
// each.
func TestLatestKeeps(t *testing.T) {
	edt := time.FixedZone("EDT", -4*3600)
	for _, tc := range []struct {
		name string
		rec  *accesslog.Record
		want []activity.Decision // nil: not kept
	}{
		{"allowed is not kept", mk("12:00", "allow"), nil},
		{"neither decided nor refused is not kept", mk("12:00", ""), nil},
		{"blocked request", mk("12:00", "block", func(r *accesslog.Record) { r.Time = r.Time.In(edt) }),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.1"), Kind: "http", Method: "GET",
				Host: "dnl-01.geo.kaspersky.com", Port: 80, Path: "/bases/av/kdb/i386/kdb-i386-0607g.xml",
				Vendor: "kaspersky", Category: "update", Match: "host", Rule: "updates-cutoff", Action: "block", Status: 403}}},
		{"flagged tunnel has no path", mk("12:00", "log", kind(accesslog.KindConnect), client("::ffff:10.0.0.2"), func(r *accesslog.Record) {
			r.Method, r.Port, r.Status = "CONNECT", 443, 200
			r.Decision.RuleName, r.Decision.Reported = "flag-all", true
		}),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.2"), Kind: "connect", Method: "CONNECT",
				Host: "dnl-01.geo.kaspersky.com", Port: 443,
				Vendor: "kaspersky", Category: "update", Match: "host", Rule: "flag-all", Action: "log", Status: 200}}},
		{"signature on a mirror, transparent", mk("12:00", "block", transparent, host("kav-mirror.corp.example"), func(r *accesslog.Record) {
			r.Decision.Pattern, r.Decision.Signature = "", "bases-tree"
		}),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.1"), Kind: "http", Mode: "transparent", Method: "GET",
				Host: "kav-mirror.corp.example", Port: 80, Path: "/bases/av/kdb/i386/kdb-i386-0607g.xml",
				Vendor: "kaspersky", Category: "update", Match: "signature", Signature: "bases-tree", Rule: "updates-cutoff", Action: "block", Status: 403}}},
		{"refused before a decision", mk("12:00", "rejected:client", kind(accesslog.KindConnect), func(r *accesslog.Record) {
			r.Method, r.Port, r.Path = "CONNECT", 443, "/not/a/tunnel's"
		}),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.1"), Kind: "connect", Method: "CONNECT",
				Host: "dnl-01.geo.kaspersky.com", Port: 443, Action: "rejected", Rejected: "client", Status: 403}}},
		{"refused after an allow", mk("12:00", "allow", func(r *accesslog.Record) { r.Rejected, r.Status = "destination", 403 }),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.1"), Kind: "http", Method: "GET",
				Host: "dnl-01.geo.kaspersky.com", Port: 80, Path: "/bases/av/kdb/i386/kdb-i386-0607g.xml",
				Vendor: "kaspersky", Category: "update", Match: "host", Rule: "updates-cutoff", Action: "rejected", Rejected: "destination", Status: 403}}},
		{"invalid host, refused with its decision unset", mk("12:00", "rejected:invalid", host("bad_host"), func(r *accesslog.Record) {
			r.Decision = rules.Decision{Vendor: "none", Category: "none", RuleName: "default", Invalid: true}
			r.Status = 400
		}),
			[]activity.Decision{{Time: hm("12:00"), Client: netip.MustParseAddr("10.0.0.1"), Kind: "http", Method: "GET",
				Host: "bad_host", Port: 80, Path: "/bases/av/kdb/i386/kdb-i386-0607g.xml", Action: "rejected", Rejected: "invalid", Status: 400}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := activity.New(activity.Options{})
			write(t, a, tc.rec)
			got := a.Latest(activity.Filter{}, 0)
			if tc.want == nil {
				tc.want = []activity.Decision{}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Latest =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestLatestDoesNotKeepTheRecord checks that a decision is a copy: a sink
// must not keep the record it was given.
func TestLatestDoesNotKeepTheRecord(t *testing.T) {
	a := activity.New(activity.Options{})
	r := mk("12:00", "block")
	write(t, a, r)
	r.Host, r.Decision.RuleName = "changed.example", "changed"
	if d := a.Latest(activity.Filter{}, 0)[0]; d.Host != "dnl-01.geo.kaspersky.com" || d.Rule != "updates-cutoff" {
		t.Errorf("after the record changed, its decision is %+v", d)
	}
}

func TestLatestFilters(t *testing.T) {
	a := activity.New(activity.Options{})
	write(t, a,
		mk("12:00", "block", client("10.0.0.1"), host("dnl-01.geo.kaspersky.com")),
		mk("12:01", "log", client("::ffff:10.0.0.2"), host("KAV-Mirror.Corp.Example")),
		mk("12:02", "rejected:client", client("2001:db8::7"), host("ksn.kaspersky.com")),
		mk("12:03", "allow", client("10.0.0.1"), host("dnl-02.geo.kaspersky.com")),
		mk("12:04", "block", client("10.0.0.2"), host("kav-mirror.corp.example")),
		mk("12:05", "log", client("10.0.0.1"), host("ksn.kaspersky.com")),
	)
	for _, tc := range []struct {
		name  string
		f     activity.Filter
		limit int
		want  []string // minutes of the decisions, newest first
	}{
		{"all", activity.Filter{}, 0, []string{"12:05", "12:04", "12:02", "12:01", "12:00"}},
		{"limit", activity.Filter{}, 2, []string{"12:05", "12:04"}},
		{"limit over what is kept", activity.Filter{}, 10, []string{"12:05", "12:04", "12:02", "12:01", "12:00"}},
		{"negative limit is no limit", activity.Filter{}, -1, []string{"12:05", "12:04", "12:02", "12:01", "12:00"}},
		{"client", activity.Filter{Client: netip.MustParseAddr("10.0.0.1")}, 0, []string{"12:05", "12:00"}},
		{"client recorded mapped", activity.Filter{Client: netip.MustParseAddr("10.0.0.2")}, 0, []string{"12:04", "12:01"}},
		{"client asked mapped", activity.Filter{Client: netip.MustParseAddr("::ffff:10.0.0.2")}, 0, []string{"12:04", "12:01"}},
		{"IPv6 client", activity.Filter{Client: netip.MustParseAddr("2001:db8::7")}, 0, []string{"12:02"}},
		{"client never seen", activity.Filter{Client: netip.MustParseAddr("10.0.0.9")}, 0, []string{}},
		{"host substring", activity.Filter{Host: "mirror"}, 0, []string{"12:04", "12:01"}},
		{"host in another case", activity.Filter{Host: "KAV-MIRROR.corp"}, 0, []string{"12:04", "12:01"}},
		{"host whole", activity.Filter{Host: "ksn.kaspersky.com"}, 0, []string{"12:05", "12:02"}},
		{"host suffix", activity.Filter{Host: "kaspersky.com"}, 0, []string{"12:05", "12:02", "12:00"}},
		{"host of an allowed request only", activity.Filter{Host: "dnl-02"}, 0, []string{}},
		{"action block", activity.Filter{Action: "block"}, 0, []string{"12:04", "12:00"}},
		{"action log", activity.Filter{Action: "log"}, 0, []string{"12:05", "12:01"}},
		{"action rejected", activity.Filter{Action: "rejected"}, 0, []string{"12:02"}},
		{"action allow is never kept", activity.Filter{Action: "allow"}, 0, []string{}},
		{"client and host", activity.Filter{Client: netip.MustParseAddr("10.0.0.1"), Host: "ksn"}, 0, []string{"12:05"}},
		{"client and action", activity.Filter{Client: netip.MustParseAddr("10.0.0.2"), Action: "log"}, 0, []string{"12:01"}},
		{"limit counts matches", activity.Filter{Host: "kaspersky.com"}, 2, []string{"12:05", "12:02"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := a.Latest(tc.f, tc.limit)
			if got == nil {
				t.Fatal("Latest returned nil; want an empty slice, which encodes as []")
			}
			minutes := []string{}
			for _, d := range got {
				minutes = append(minutes, d.Time.Format("15:04"))
			}
			if !slices.Equal(minutes, tc.want) {
				t.Errorf("Latest(%+v, %d) = %q; want %q", tc.f, tc.limit, minutes, tc.want)
			}
		})
	}
}

// TestLatestRing checks that the ring keeps the newest decisions, within
// its bound, however often it wrapped.
func TestLatestRing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		decisions int
		writes    int
		keep      int
	}{
		{"empty", 3, 0, 0},
		{"not full", 3, 2, 2},
		{"full", 3, 3, 3},
		{"wrapped", 3, 5, 3},
		{"wrapped twice and more", 3, 10, 3},
		{"one", 1, 4, 1},
		{"default bound", 0, 1005, 1000},
		{"negative is the default", -1, 1001, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := activity.New(activity.Options{Decisions: tc.decisions})
			start := hm("12:00")
			for i := range tc.writes {
				write(t, a, mk("12:00", "block", func(r *accesslog.Record) { r.Time = start.Add(time.Duration(i) * time.Second) }))
			}
			got := a.Latest(activity.Filter{}, 0)
			if len(got) != tc.keep {
				t.Fatalf("%d decisions kept; want %d", len(got), tc.keep)
			}
			for i, d := range got {
				if want := start.Add(time.Duration(tc.writes-1-i) * time.Second); !d.Time.Equal(want) {
					t.Fatalf("decision %d is of %s; want %s (newest first)", i, d.Time, want)
				}
			}
			if tc.keep > 1 {
				if got := a.Latest(activity.Filter{}, tc.keep-1); len(got) != tc.keep-1 || !got[0].Time.Equal(start.Add(time.Duration(tc.writes-1)*time.Second)) {
					t.Errorf("Latest with limit %d: %d decisions from %s", tc.keep-1, len(got), got[0].Time)
				}
			}
		})
	}
}

func ExampleActivity_Latest() {
	a := activity.New(activity.Options{Decisions: 100})
	a.Write(&accesslog.Record{
		Time:     time.Date(2024, 10, 1, 4, 0, 0, 0, time.UTC),
		Kind:     accesslog.KindConnect,
		Client:   netip.MustParseAddr("10.1.2.3"),
		Method:   "CONNECT",
		Host:     "dnl-01.geo.kaspersky.com",
		Port:     443,
		Decided:  true,
		Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Pattern: "*.geo.kaspersky.com", RuleName: "updates-cutoff", Action: rules.Block},
		Status:   403,
	})
	for _, d := range a.Latest(activity.Filter{Host: "kaspersky"}, 10) {
		fmt.Println(d.Time.Format(time.RFC3339), d.Client, d.Host, d.Vendor, d.Category, d.Rule, d.Action)
	}
	// Output: 2024-10-01T04:00:00Z 10.1.2.3 dnl-01.geo.kaspersky.com kaspersky update updates-cutoff block
}
