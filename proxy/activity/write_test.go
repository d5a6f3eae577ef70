package activity_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/activity"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestConcurrent writes from several goroutines while others read, and
// checks that no record is lost (run it with -race).
func TestConcurrent(t *testing.T) {
	const (
		writers = 8
		each    = 1000
	)
	a := activity.New(activity.Options{Decisions: 100})
	start := hm("12:00")
	now := start.Add(10 * time.Minute)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a.Hour(now)
				a.Day(now)
				a.Latest(activity.Filter{Host: "kaspersky"}, 10)
			}
		})
	}
	actions := []string{"allow", "log", "block", "rejected:limit"}
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				at := start.Add(time.Duration(w*each+i) * time.Millisecond * 70)
				r := mk("12:00", actions[i%len(actions)], func(r *accesslog.Record) { r.Time = at })
				if i%3 == 0 {
					r.Mode = accesslog.ModeTransparent
				}
				if err := a.Write(r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	hour := buckets(t, a.Hour(now), now, time.Minute, 60)
	if len(hour) != 10 {
		t.Errorf("%d minutes with traffic; want 10: %q", len(hour), hour)
	}
	for _, tr := range []activity.Traffic{a.Hour(now), a.Day(now)} {
		var allowed, flagged, blocked, rejected uint64
		for _, b := range tr.Buckets {
			allowed, flagged, blocked, rejected = allowed+b.Allowed, flagged+b.Flagged, blocked+b.Blocked, rejected+b.Rejected
		}
		quarter := uint64(writers * each / 4)
		if allowed != quarter || flagged != quarter || blocked != quarter || rejected != quarter {
			t.Errorf("%s: allowed %d, flagged %d, blocked %d, rejected %d; want %d each", tr.Step, allowed, flagged, blocked, rejected, quarter)
		}
		if want := uint64(writers * ((each + 2) / 3)); tr.Transparent != want || tr.Explicit != writers*each-want {
			t.Errorf("%s: transparent %d, explicit %d; want %d and %d", tr.Step, tr.Transparent, tr.Explicit, want, writers*each-want)
		}
	}
	if n := len(a.Latest(activity.Filter{}, 0)); n != 100 {
		t.Errorf("%d decisions kept; want 100", n)
	}
}

// TestWriteAllocs holds Write, which runs on the request path, to no
// allocation once the rings are warm: counting, keeping a decision, and
// turning the rings in steady state.
func TestWriteAllocs(t *testing.T) {
	a := activity.New(activity.Options{})
	allowed := mk("12:00", "allow")
	blocked := mk("12:00", "block", kind(accesslog.KindConnect))
	rejected := mk("12:00", "rejected:limit", transparent)
	write(t, a, allowed, blocked, rejected)
	for _, tc := range []struct {
		name string
		r    *accesslog.Record
	}{
		{"allowed", allowed},
		{"blocked", blocked},
		{"rejected", rejected},
		{"neither decided nor refused", mk("12:00", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { a.Write(tc.r) }); n != 0 {
				t.Errorf("%v allocations per Write; want 0", n)
			}
		})
	}
	t.Run("rings turning", func(t *testing.T) {
		// A day and more of one record a minute sizes every slot's map.
		r := mk("12:00", "block")
		for range 25 * 60 {
			r.Time = r.Time.Add(time.Minute)
			write(t, a, r)
		}
		if n := testing.AllocsPerRun(3*24*60, func() {
			r.Time = r.Time.Add(time.Minute)
			a.Write(r)
		}); n != 0 {
			t.Errorf("%v allocations per Write; want 0", n)
		}
	})
}

// TestJSON pins what the status page reads: the shape of a day's window
// and of the latest decisions, in testdata/status.golden.json.
func TestJSON(t *testing.T) {
	a := activity.New(activity.Options{Decisions: 3})
	write(t, a,
		mk("01:10", "allow"),
		mk("11:59:59", "log", kind(accesslog.KindConnect), client("::ffff:10.0.0.2"), func(r *accesslog.Record) {
			r.Method, r.Port, r.Path, r.Status = "CONNECT", 443, "", 200
		}),
		mk("12:00", "block", transparent, host("kav-mirror.corp.example"), func(r *accesslog.Record) {
			r.Decision.Pattern, r.Decision.Signature = "", "bases-tree"
		}),
		mk("12:00:01", "allow", class("none", "none"), kind(accesslog.KindTransparent), func(r *accesslog.Record) {
			r.Mode, r.Method, r.Host, r.Port, r.Decision.RuleName = accesslog.ModeTransparent, "", "www.example.org", 443, "default"
		}),
		mk("12:30", "rejected:client", client("2001:db8::7")),
		mk("12:31", "block"),
	)
	now := hm("12:31:30")
	got, err := json.MarshalIndent(map[string]any{
		"day":    a.Day(now),
		"latest": a.Latest(activity.Filter{}, 0),
		"none":   a.Latest(activity.Filter{Host: "absent"}, 0),
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "status.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("JSON differs from %s (go test -run TestJSON -update rewrites it):\n%s", path, got)
	}
}

// BenchmarkWrite is the cost Write adds to every request: a counted
// record, one also kept as a decision, and every core writing at once.
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		r    *accesslog.Record
	}{
		{"allowed", mk("12:00", "allow")},
		{"blocked", mk("12:00", "block")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := activity.New(activity.Options{})
			b.ReportAllocs()
			for b.Loop() {
				a.Write(bc.r)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		a := activity.New(activity.Options{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := mk("12:00", "allow")
			blocked := mk("12:00", "block")
			for i := 0; pb.Next(); i++ {
				if i%16 == 0 {
					a.Write(blocked)
				} else {
					a.Write(r)
				}
			}
		})
	})
}
