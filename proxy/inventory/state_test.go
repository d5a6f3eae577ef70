package inventory

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// checkStateDir checks that dir holds only the state file, with mode 0600:
// no temporary file is left behind.
func checkStateDir(t *testing.T, path string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if de.Name() != filepath.Base(path) {
			t.Errorf("stray file %s next to the state file", de.Name())
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("state file mode = %#o; want 0600", m)
	}
}

func TestLoadStateFile(t *testing.T) {
	var (
		e7 = Entry{addr("10.1.0.7"), "kaspersky", "update", mustTime(t, "2024-08-20T08:00:00Z"), mustTime(t, "2024-09-01T12:00:00Z"), 1200, "allow", "kaspersky-updates", "host", "", "", nil}
		// Its times are written at -04:00: 12:05Z sorts after e7.
		e15 = Entry{addr("2001:db8::15"), "kaspersky", "update", mustTime(t, "2024-09-01T10:00:00Z"), mustTime(t, "2024-09-01T12:05:00Z"), 40, "block", "updates-cutoff", "host", "", "", nil}
		e9  = Entry{addr("10.1.0.9"), "kaspersky", "licensing", mustTime(t, "2024-08-30T09:00:00Z"), mustTime(t, "2024-08-31T17:30:00Z"), 3, "log", "flag-licensing", "host", "", "", nil}
		// Written IPv4-mapped; loaded as Record would have stored it.
		e12 = Entry{addr("10.1.0.12"), "kaspersky", "ksn", mustTime(t, "2024-07-01T00:00:00Z"), mustTime(t, "2024-07-02T00:00:00Z"), 1, "allow", "default", "host", "", "", nil}
	)
	// The same file with hosts, the one written before them aside.
	var (
		h7 = Entry{addr("10.1.0.7"), "kaspersky", "update", mustTime(t, "2024-08-20T08:00:00Z"), mustTime(t, "2024-09-01T12:00:00Z"), 1200, "allow", "kaspersky-updates", "host", "", "",
			[]string{"s07.upd.kaspersky.com", "dnl-01.geo.kaspersky.com"}}
		h7mirror = Entry{addr("10.1.0.7"), "kaspersky", "update", mustTime(t, "2024-08-21T08:00:00Z"), mustTime(t, "2024-09-01T11:00:00Z"), 17, "allow", "kaspersky-updates", "signature", "kav-mirror.corp.example", "bases-tree",
			[]string{"kav-mirror.corp.example"}}
		h12 = Entry{addr("10.1.0.12"), "kaspersky", "ksn", mustTime(t, "2024-07-01T00:00:00Z"), mustTime(t, "2024-07-02T00:00:00Z"), 90, "allow", "default", "host", "", "",
			[]string{"ksn-a.kaspersky.com", "ksn-b.kaspersky.com", "ksn-c.kaspersky.com", "ksn-d.kaspersky.com", "ksn-e.kaspersky.com", "ksn-f.kaspersky.com", "ksn-g.kaspersky.com", "ksn-h.kaspersky.com"}}
	)
	for _, tc := range []struct {
		name      string
		file      string
		max       int
		want      []Entry
		evictions uint64
	}{
		{"all", "state-v1.json", 0, []Entry{e15, e7, e9, e12}, 0},
		{"cap keeps the most recent", "state-v1.json", 2, []Entry{e15, e7}, 2},
		{"cap equal to the file", "state-v1.json", 4, []Entry{e15, e7, e9, e12}, 0},
		{"hosts", "state-hosts.json", 0, []Entry{h7, h7mirror, e9, h12}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := mustNew(t, Options{MaxEntries: tc.max, StateFile: filepath.Join("testdata", tc.file)})
			if d := sameEntries(inv.Snapshot(Filter{}), tc.want); d != "" {
				t.Error(d)
			}
			if n := inv.Evictions(); n != tc.evictions {
				t.Errorf("Evictions() = %d; want %d", n, tc.evictions)
			}
		})
	}
}

// TestLoadedHostsCarryOn checks that the hosts of a loaded entry take new
// ones as a recorded entry's do, the oldest dropping out.
func TestLoadedHostsCarryOn(t *testing.T) {
	inv := mustNew(t, Options{StateFile: filepath.Join("testdata", "state-hosts.json")})
	d := &rules.Decision{Vendor: "kaspersky", Category: "ksn", Pattern: "ksn-*.kaspersky.com", RuleName: "default"}
	inv.RecordDecision(addr("10.1.0.12"), "ksn-c.kaspersky.com", d)
	inv.RecordDecision(addr("10.1.0.12"), "KSN-Z.kaspersky.com", d)
	d.Category = "update"
	inv.RecordDecision(addr("10.1.0.7"), "s08.upd.kaspersky.com", d)
	got := map[string][]string{}
	for _, e := range inv.Snapshot(Filter{Match: rules.MatchHost}) {
		got[e.Client.String()+" "+e.Category] = e.Hosts
	}
	want := map[string][]string{
		"10.1.0.12 ksn":      {"ksn-z.kaspersky.com", "ksn-c.kaspersky.com", "ksn-a.kaspersky.com", "ksn-b.kaspersky.com", "ksn-d.kaspersky.com", "ksn-e.kaspersky.com", "ksn-f.kaspersky.com", "ksn-g.kaspersky.com"},
		"10.1.0.7 update":    {"s08.upd.kaspersky.com", "s07.upd.kaspersky.com", "dnl-01.geo.kaspersky.com"},
		"10.1.0.9 licensing": nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hosts after more records:\n got  %q\n want %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	inv := mustNew(t, Options{StateFile: filepath.Join(t.TempDir(), "absent.json")})
	if n := inv.Len(); n != 0 {
		t.Errorf("Len() = %d; want 0", n)
	}
}

func TestLoadCorruptFile(t *testing.T) {
	for _, tc := range []struct {
		file, want string
	}{
		{"truncated.json", "unexpected end of JSON input"},
		{"empty.json", "unexpected end of JSON input"},
		{"trailing-garbage.json", "invalid character"},
		{"version-2.json", "unsupported version 2"},
		{"no-version.json", "no version field"},
		{"bad-client.json", "entry 1: ParseAddr"},
		{"empty-client.json", "entry 0: no client address"},
		{"no-vendor.json", `entry 0: client 10.1.0.7: vendor "none" is not a vendor`},
		{"duplicate.json", "entry 1: duplicate entry for 10.1.0.7 kaspersky/update"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			inv, err := New(Options{StateFile: path})
			if err == nil {
				t.Fatalf("New loaded %s: %+v", path, inv.Snapshot(Filter{}))
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want it to contain %q", err, tc.want)
			}
			// The caller may start anyway: the inventory is empty, not
			// half loaded, and usable.
			if inv == nil {
				t.Fatal("New returned a nil inventory with its error")
			}
			if n := inv.Len(); n != 0 {
				t.Errorf("Len() = %d after a failed load; want 0", n)
			}
			inv.Record(one, "kaspersky", "update", "allow", "default")
			if n := inv.Len(); n != 1 {
				t.Errorf("Len() = %d after Record; want 1", n)
			}
		})
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	// A directory where the file should be: not "missing", so an error.
	path := t.TempDir()
	_, err := New(Options{StateFile: path})
	if err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("New with a directory as state file: %v; want an error naming %s", err, path)
	}
}

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.json")
	clock := testutil.NewClock(t0)
	inv := mustNew(t, Options{StateFile: path, Now: clock.Now})
	play(inv, clock, twoClients)
	if err := inv.Save(); err != nil {
		t.Fatal(err)
	}
	checkStateDir(t, path)

	for _, tc := range []struct {
		name      string
		max       int
		want      []Entry
		evictions uint64
	}{
		{"same", 0, inv.Snapshot(Filter{}), 0},
		{"smaller cap keeps the most recent", 3, []Entry{oneLicensing, twoUpdate, oneUpdate}, 1},
		{"cap of one", 1, []Entry{oneLicensing}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mustNew(t, Options{StateFile: path, MaxEntries: tc.max, Now: clock.Now})
			if d := sameEntries(got.Snapshot(Filter{}), tc.want); d != "" {
				t.Error(d)
			}
			if n := got.Evictions(); n != tc.evictions {
				t.Errorf("Evictions() = %d; want %d", n, tc.evictions)
			}
		})
	}

	t.Run("loaded entries carry on", func(t *testing.T) {
		clock := testutil.NewClock(t3.Add(time.Hour))
		got := mustNew(t, Options{StateFile: path, MaxEntries: 4, Now: clock.Now})
		got.Record(one, "kaspersky", "update", "allow", "reopened")
		// The least recently seen loaded entry is the one evicted.
		got.Record(addr("127.0.0.3"), "kaspersky", "update", "allow", "default")
		now := clock.Now()
		want := []Entry{
			{one, "kaspersky", "update", t0, now, 3, "allow", "reopened", "host", "", "", nil},
			{addr("127.0.0.3"), "kaspersky", "update", now, now, 1, "allow", "default", "host", "", "", nil},
			oneLicensing,
			twoUpdate,
		}
		if d := sameEntries(got.Snapshot(Filter{}), want); d != "" {
			t.Error(d)
		}
	})
}

func TestSaveReplacesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.json")
	if err := os.WriteFile(path, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := New(Options{StateFile: path})
	if err == nil {
		t.Fatal("New loaded a corrupt file")
	}
	inv.Record(one, "kaspersky", "update", "allow", "default")
	if err := inv.Save(); err != nil {
		t.Fatal(err)
	}
	checkStateDir(t, path)
	if n := mustNew(t, Options{StateFile: path}).Len(); n != 1 {
		t.Errorf("Len() after reload = %d; want 1", n)
	}
}

func TestSaveErrors(t *testing.T) {
	t.Run("no state file", func(t *testing.T) {
		inv := mustNew(t, Options{})
		inv.Record(one, "kaspersky", "update", "allow", "default")
		if err := inv.Save(); err != nil {
			t.Errorf("Save without a state file: %v", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent", "inventory.json")
		inv := mustNew(t, Options{StateFile: path})
		err := inv.Save()
		if err == nil || !strings.Contains(err.Error(), filepath.Dir(path)) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Save into a missing directory: %v; want ErrNotExist naming the directory", err)
		}
	})
}

func TestRun(t *testing.T) {
	t.Run("cancelled context saves once", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "inventory.json")
		inv := mustNew(t, Options{StateFile: path})
		inv.Record(one, "kaspersky", "update", "allow", "default")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		inv.Run(ctx, time.Hour, func(err error) { t.Error(err) })
		checkStateDir(t, path)
		if n := mustNew(t, Options{StateFile: path}).Len(); n != 1 {
			t.Errorf("Len() after reload = %d; want 1", n)
		}
	})
	t.Run("saves at the end without an interval", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "inventory.json")
		inv := mustNew(t, Options{StateFile: path})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			inv.Run(ctx, 0, func(err error) { t.Error(err) })
			close(done)
		}()
		inv.Record(one, "kaspersky", "update", "allow", "default")
		cancel()
		<-done
		if n := mustNew(t, Options{StateFile: path}).Len(); n != 1 {
			t.Errorf("Len() after reload = %d; want 1", n)
		}
	})
	t.Run("saves every interval", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "inventory.json")
		inv := mustNew(t, Options{StateFile: path})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			inv.Run(ctx, time.Millisecond, func(err error) { t.Error(err) })
			close(done)
		}()
		defer func() { cancel(); <-done }()
		inv.Record(one, "kaspersky", "update", "allow", "default")
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(path); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no periodic save within 10s")
			}
		}
	})
	t.Run("errors go to onError", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent", "inventory.json")
		inv := mustNew(t, Options{StateFile: path})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var mu sync.Mutex
		var errs []error
		inv.Run(ctx, time.Hour, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		})
		if len(errs) != 1 || !errors.Is(errs[0], os.ErrNotExist) {
			t.Errorf("onError got %v; want one ErrNotExist", errs)
		}
		// A nil onError is allowed.
		inv.Run(ctx, time.Hour, nil)
	})
}
