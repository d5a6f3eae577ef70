package testutil

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// WaitLimit bounds every wait in the tests of the proxy's packages. It only
// keeps a broken test from hanging; nothing asserts how long anything took.
const WaitLimit = 15 * time.Second

// FakeDNSText appears in Resolver's errors, so that tests can check that it
// never reaches a client.
const FakeDNSText = "fakedns-nxdomain"

// Resolver answers from a table, so that no test ever lets the system
// resolver run. Names listed in Hang block until the lookup's context is
// done; every other unknown name fails. Its maps must not change once it is
// in use.
type Resolver struct {
	Addrs map[string][]netip.Addr
	Hang  map[string]bool

	mu      sync.Mutex
	lookups []string
}

// LookupNetIP answers host from the table and records that it was asked.
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.lookups = append(r.lookups, host)
	r.mu.Unlock()
	if r.Hang[host] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if a, ok := r.Addrs[host]; ok {
		return a, nil
	}
	return nil, errors.New(FakeDNSText + " " + host)
}

// Lookups returns the names asked for so far, in order.
func (r *Resolver) Lookups() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lookups...)
}

// ErrRecorded is what DialRecorder.Dial returns for every address.
var ErrRecorded = errors.New("recorded, not dialed")

// DialRecorder records the addresses it is asked to dial and connects to
// none of them: destination tests never send a packet anywhere.
type DialRecorder struct {
	mu    sync.Mutex
	addrs []string
}

// Dial records addr and fails with ErrRecorded. It has the shape of
// upstream.Dialer's Dial.
func (d *DialRecorder) Dial(_ context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, addr)
	return nil, ErrRecorded
}

// Dialed returns the addresses Dial was asked for so far, in order.
func (d *DialRecorder) Dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// RawUpstream is a plain TCP listener on 127.0.0.1 that runs a handler for
// every connection it accepts, and counts them.
type RawUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
}

// NewRawUpstream listens on 127.0.0.1 and serves each connection with
// handle, under a deadline of twice WaitLimit, until the test ends (see
// Serve).
func NewRawUpstream(t testing.TB, handle func(c *net.TCPConn)) *RawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &RawUpstream{ln: ln}
	Serve(t, ln, func(c net.Conn) {
		u.mu.Lock()
		u.conns++
		u.mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(2 * WaitLimit))
		handle(c.(*net.TCPConn))
	})
	return u
}

// Addr returns the listener's address, 127.0.0.1:PORT.
func (u *RawUpstream) Addr() string { return u.ln.Addr().String() }

// Conns returns how many connections the upstream has accepted.
func (u *RawUpstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conns
}

// ClosedPort returns a 127.0.0.1 address that was listening a moment ago
// and no longer is: dialing it is refused.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
