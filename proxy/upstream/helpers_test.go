package upstream_test

// Minimal copies of the proxy tests' helpers (proxy/helpers_test.go and
// proxy/access_test.go) that the tests of this package need: a table
// resolver, a dial step that only records, and loopback listeners.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests. It only keeps a broken test
// from hanging; nothing asserts how long anything took.
const waitLimit = 15 * time.Second

// fakeResolver answers from a table. Names listed in hang block until the
// lookup's context is done; every other unknown name fails. Its maps must
// not change once it is in use.
type fakeResolver struct {
	addrs map[string][]netip.Addr
	hang  map[string]bool

	mu      sync.Mutex
	lookups []string
}

func (r *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.lookups = append(r.lookups, host)
	r.mu.Unlock()
	if r.hang[host] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if a, ok := r.addrs[host]; ok {
		return a, nil
	}
	return nil, errors.New("fakedns-nxdomain " + host)
}

func (r *fakeResolver) Lookups() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lookups...)
}

// recordingDial records the addresses it is asked to dial and connects to
// none of them: destination tests never send a packet anywhere.
type recordingDial struct {
	mu    sync.Mutex
	addrs []string
}

var errRecorded = errors.New("recorded, not dialed")

func (d *recordingDial) dial(_ context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, addr)
	return nil, errRecorded
}

func (d *recordingDial) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// rawUpstream is a plain TCP listener on 127.0.0.1 running handle for every
// accepted connection.
type rawUpstream struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newRawUpstream(t *testing.T, handle func(c *net.TCPConn)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(2 * waitLimit))
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		u.wg.Wait()
	})
	return u
}

func (u *rawUpstream) Addr() string { return u.ln.Addr().String() }

// closedPort returns a 127.0.0.1 address that was listening a moment ago
// and no longer is: dialing it is refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
