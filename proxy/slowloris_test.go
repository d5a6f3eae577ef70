package proxy_test

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Slow-loris parameters. Each connection sends one byte of a request
// header every 200-500 ms and never finishes it; the proxy's
// ReadHeaderTimeout (10 s) must close every one of them, and must not let
// them starve a normal client meanwhile.
const (
	slowlorisConns    = 300
	slowlorisMinGap   = 200 * time.Millisecond
	slowlorisMaxGap   = 500 * time.Millisecond
	slowlorisLiveness = 5 * time.Second  // a normal request completes within this (a hang guard, not a benchmark)
	slowlorisHardStop = 20 * time.Second // from the first dial: every trickler gives up by then
)

// slowlorisHeader is the start of the header each connection trickles; it
// then continues with an endless X-Slow value, so the blank line that ends
// a header never comes.
const slowlorisHeader = "GET http://www.example.test/ HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: slowloris\r\nX-Slow: "

// slowlorisConn is one trickling connection's outcome.
type slowlorisConn struct {
	opened, closed time.Time // closed is zero if the server never closed it
	sent           int       // header bytes written
	reply          []byte    // anything the server wrote back
	how            error     // the error that showed the close
}

// TestSlowloris: 300 connections trickle a request header one byte at a
// time. While they do, normal requests through the proxy succeed promptly;
// then every trickling connection is closed by the server, no sooner than
// its ReadHeaderTimeout and not much later, and none of them produced a
// decision record or a request to the origin.
func TestSlowloris(t *testing.T) {
	checkNoGoroutineLeak(t)
	o := newOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{resolveTo("www.example.test", 80, hostPort(t, o.URL))}})
	headerTimeout := e.hs.ReadHeaderTimeout
	if headerTimeout != 10*time.Second {
		t.Errorf("proxy ReadHeaderTimeout = %v; docs/security.md documents 10s", headerTimeout)
	}
	c, _ := e.client(t, nil)

	start := time.Now()
	hardStop := start.Add(slowlorisHardStop)
	results := make([]slowlorisConn, slowlorisConns)
	var (
		wg          sync.WaitGroup
		closedCount atomic.Int64
	)
	for i := range slowlorisConns {
		// Taken before the dial, so that it precedes the server's
		// accept, where its header deadline starts.
		results[i].opened = time.Now()
		conn, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("opening slow connection %d: %v", i, err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			slowlorisTrickle(conn, &results[i], hardStop, rand.New(rand.NewPCG(uint64(i), 0x5105)))
			if !results[i].closed.IsZero() {
				closedCount.Add(1)
			}
		}()
	}
	opened := time.Since(start)
	t.Logf("opened %d trickling connections in %v", slowlorisConns, opened.Round(time.Millisecond))

	// Normal requests while the header timeout is still far away for
	// every trickler: early, midway, and towards the end.
	var normal int
	for _, at := range []time.Duration{time.Second, 4 * time.Second, 7 * time.Second} {
		time.Sleep(time.Until(start.Add(at)))
		if n := closedCount.Load(); n != 0 {
			t.Errorf("%d trickling connections were already closed %v in; the slow-loris is not in effect", n, at)
		}
		t0 := time.Now()
		resp, body := get(t, c, "http://www.example.test/hello")
		took := time.Since(t0)
		normal++
		if resp.StatusCode != 200 || body != "hello from origin\n" {
			t.Errorf("normal request %v in: got %d %q; want 200 %q", at, resp.StatusCode, body, "hello from origin\n")
		}
		if took > slowlorisLiveness {
			t.Errorf("normal request %v in took %v with %d trickling connections; want under %v", at, took, slowlorisConns, slowlorisLiveness)
		}
		t.Logf("normal request %v in: %d in %v", at, resp.StatusCode, took.Round(time.Millisecond))
	}

	wg.Wait()
	var (
		stillOpen, early, late int
		minLife, maxLife       time.Duration
	)
	for i, r := range results {
		if r.closed.IsZero() {
			stillOpen++
			if stillOpen <= 3 {
				t.Errorf("slow connection %d: still open %v after it was opened (sent %d header bytes); want it closed by the %v ReadHeaderTimeout",
					i, time.Since(r.opened).Round(time.Millisecond), r.sent, headerTimeout)
			}
			continue
		}
		life := r.closed.Sub(r.opened)
		if minLife == 0 || life < minLife {
			minLife = life
		}
		maxLife = max(maxLife, life)
		// The server's deadline starts when it accepts, after opened;
		// a close that the client notices within 5 s of the deadline is
		// the header timeout.
		switch {
		case life < headerTimeout:
			early++
			if early <= 3 {
				t.Errorf("slow connection %d: closed after %v (%v, replied %q); want no sooner than the %v ReadHeaderTimeout",
					i, life.Round(time.Millisecond), r.how, r.reply, headerTimeout)
			}
		case life > headerTimeout+5*time.Second:
			late++
			if late <= 3 {
				t.Errorf("slow connection %d: closed only after %v; want about %v", i, life.Round(time.Millisecond), headerTimeout)
			}
		}
		if len(r.reply) > 0 && !strings.HasPrefix(string(r.reply), "HTTP/1.1 4") {
			t.Errorf("slow connection %d: the server wrote %q; want nothing or a 4xx (net/http answers a header cut off by its timeout with 400)", i, r.reply)
		}
	}
	t.Logf("%d connections closed after %v to %v; %d still open, %d early, %d late; total %v",
		slowlorisConns-stillOpen, minLife.Round(time.Millisecond), maxLife.Round(time.Millisecond),
		stillOpen, early, late, time.Since(start).Round(time.Millisecond))

	// Only the normal requests were decided and forwarded.
	e.waitIdle(t)
	if recs := e.records(t); len(recs) != normal {
		t.Errorf("decision records = %d; want %d (one per normal request, none for unfinished headers)", len(recs), normal)
	}
	if got := o.Hits(); got != normal {
		t.Errorf("origin saw %d requests; want %d", got, normal)
	}
}

// slowlorisTrickle writes slowlorisHeader (and then an endless header value) one
// byte at a time, waiting 200-500 ms between bytes by reading with a
// deadline, until the server closes the connection or hardStop.
func slowlorisTrickle(conn net.Conn, r *slowlorisConn, hardStop time.Time, rng *rand.Rand) {
	buf := make([]byte, 512)
	for time.Now().Before(hardStop) {
		b := byte('a')
		if r.sent < len(slowlorisHeader) {
			b = slowlorisHeader[r.sent]
		}
		if _, err := conn.Write([]byte{b}); err != nil {
			r.closed, r.how = time.Now(), err
			return
		}
		r.sent++
		gap := slowlorisMinGap + time.Duration(rng.Int64N(int64(slowlorisMaxGap-slowlorisMinGap)))
		_ = conn.SetReadDeadline(slowlorisMin(time.Now().Add(gap), hardStop))
		for {
			n, err := conn.Read(buf)
			r.reply = append(r.reply, buf[:n]...)
			if err == nil {
				continue // the server said something; keep reading until it closes
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // the gap is over: send the next byte
			}
			// EOF or a reset: the server closed the connection.
			r.closed, r.how = time.Now(), err
			return
		}
	}
}

func slowlorisMin(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
