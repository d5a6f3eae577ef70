package testutil

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2024, 9, 1, 12, 0, 0, 0, time.UTC)

// fired returns a timer function and a channel that receives once it ran.
func fired() (func(), chan struct{}) {
	ch := make(chan struct{})
	return func() { close(ch) }, ch
}

func waitFired(t *testing.T, what string, ch chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not fire", what)
	}
}

func TestClockMovesOnlyWhenTold(t *testing.T) {
	c := NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v; want %v", got, t0)
	}
	c.Advance(time.Hour)
	if got, want := c.Now(), t0.Add(time.Hour); !got.Equal(want) {
		t.Errorf("after Advance(1h): Now = %v; want %v", got, want)
	}
	c.Set(t0.Add(-time.Hour))
	if got, want := c.Now(), t0.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("after Set back: Now = %v; want %v", got, want)
	}
	var zero Clock
	if !zero.Now().IsZero() {
		t.Errorf("zero Clock: Now = %v; want the zero time", zero.Now())
	}
}

func TestClockTimers(t *testing.T) {
	c := NewClock(t0)
	f1, ch1 := fired()
	c.AfterFunc(time.Minute, f1)
	f2, ch2 := fired()
	c.AfterFunc(time.Hour, f2)
	stopped := c.AfterFunc(time.Minute, func() { t.Error("a stopped timer fired") })
	if n := c.Timers(); n != 3 {
		t.Fatalf("Timers = %d; want 3", n)
	}
	if !stopped() {
		t.Error("stop of a waiting timer = false; want true")
	}
	if stopped() {
		t.Error("second stop = true; want false")
	}

	c.Advance(59 * time.Second)
	if n := c.Timers(); n != 2 {
		t.Fatalf("a second early: Timers = %d; want 2", n)
	}
	c.Advance(time.Second)
	waitFired(t, "the one-minute timer (Advance)", ch1)
	c.Set(t0.Add(2 * time.Hour))
	waitFired(t, "the one-hour timer (Set)", ch2)
	if n := c.Timers(); n != 0 {
		t.Errorf("Timers = %d; want 0", n)
	}

	f3, ch3 := fired()
	if c.AfterFunc(0, f3)() {
		t.Error("stop of a timer for d <= 0 = true; it has fired")
	}
	waitFired(t, "a timer for 0", ch3)
}

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = io.WriteString(&b, "line\n")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != 800 {
		t.Errorf("%d lines; want 800", n)
	}
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(c, c)
	})
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "ping" {
			t.Errorf("connection %d: echoed %q, %v; want ping", i, got, err)
		}
	}
}

func TestParseDestinations(t *testing.T) {
	got, err := parseDestinations(strings.NewReader("# comment\n\n 10.0.0.1 | allow | private \nfe80::1%eth0|link-local|link-local\n"), "t.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []DestinationCase{
		{netip.MustParseAddr("10.0.0.1"), "10.0.0.1", [2]string{"allow", "private"}},
		{netip.MustParseAddr("fe80::1%eth0"), "fe80::1%eth0", [2]string{"link-local", "link-local"}},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	for _, tc := range []struct{ text, errHas string }{
		{"10.0.0.1 | allow\n", "t.txt:1: want address | off | on"},
		{"# x\nnot-an-address | allow | allow\n", "t.txt:2: "},
		{"# only comments\n", "t.txt has no cases"},
	} {
		if _, err := parseDestinations(strings.NewReader(tc.text), "t.txt"); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("parseDestinations(%q) error %v; want it to contain %q", tc.text, err, tc.errHas)
		}
	}
}

func TestResolver(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	r := &Resolver{Addrs: map[string][]netip.Addr{"a.example.test": {a}}, Hang: map[string]bool{"slow.example.test": true}}
	if got, err := r.LookupNetIP(context.Background(), "ip", "a.example.test"); err != nil || len(got) != 1 || got[0] != a {
		t.Errorf("a.example.test: %v, %v; want [%v]", got, err, a)
	}
	if _, err := r.LookupNetIP(context.Background(), "ip", "b.example.test"); err == nil || !strings.Contains(err.Error(), FakeDNSText) {
		t.Errorf("b.example.test: error %v; want one with %q", err, FakeDNSText)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := r.LookupNetIP(ctx, "ip", "slow.example.test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow.example.test: error %v; want the context's", err)
	}
	if got, want := r.Lookups(), []string{"a.example.test", "b.example.test", "slow.example.test"}; !slices.Equal(got, want) {
		t.Errorf("Lookups = %v; want %v", got, want)
	}
}

func TestDialRecorder(t *testing.T) {
	var d DialRecorder
	for _, addr := range []string{"192.0.2.1:80", "[2001:db8::1]:443"} {
		if c, err := d.Dial(context.Background(), "tcp", addr); c != nil || !errors.Is(err, ErrRecorded) {
			t.Errorf("Dial(%s) = %v, %v; want nil, ErrRecorded", addr, c, err)
		}
	}
	if got, want := d.Dialed(), []string{"192.0.2.1:80", "[2001:db8::1]:443"}; !slices.Equal(got, want) {
		t.Errorf("Dialed = %v; want %v", got, want)
	}
}

func TestRawUpstreamAndClosedPort(t *testing.T) {
	u := NewRawUpstream(t, func(c *net.TCPConn) { _, _ = io.WriteString(c, "hi") })
	for range 2 {
		c, err := net.Dial("tcp", u.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(WaitLimit))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "hi" {
			t.Errorf("read %q, %v; want hi", got, err)
		}
	}
	if n := u.Conns(); n != 2 {
		t.Errorf("Conns = %d; want 2", n)
	}
	if c, err := net.Dial("tcp", ClosedPort(t)); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dialing ClosedPort: %v; want connection refused", err)
	}
}
