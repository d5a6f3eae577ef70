package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// httpResult is one round of plain-HTTP load.
type httpResult struct {
	rps      float64
	p50, p99 time.Duration
	errors   int64
	// all counts the requests of the warm-up as well, to divide the CPU
	// time of the whole round by.
	all int64
}

// request returns the bytes of one GET for path, in absolute form for an
// explicit proxy and origin form for the origin itself (which a
// transparent proxy stands in for).
func request(c *contender, port int, path string, close bool) []byte {
	host := c.host + ":" + strconv.Itoa(port)
	target := path
	if c.explicit() {
		target = "http://" + host + path
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: feedgate-bench\r\n", target, host)
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// connect opens a connection for a request to the origin's port: to the
// proxy, or to the origin.
func (c *contender) connect(port int) (net.Conn, error) {
	addr := c.proxy
	if !c.explicit() {
		addr = net.JoinHostPort(c.origin, strconv.Itoa(port))
	}
	if c.dial != nil {
		return c.dial(addr)
	}
	return net.Dial("tcp", addr)
}

// readResponse reads one HTTP/1.1 response and discards its body. It
// handles Content-Length, chunked and read-to-close bodies, and reports
// whether the server will close the connection after it.
func readResponse(br *bufio.Reader) (status int, closing bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 {
		return 0, false, fmt.Errorf("short status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	closing = bytes.HasPrefix(line, []byte("HTTP/1.0"))
	length, chunked := int64(-1), false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.ParseInt(string(value), 10, 64)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")), bytes.EqualFold(name, []byte("Proxy-Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case status == 204 || status == 304 || status/100 == 1:
	case chunked:
		for {
			line, err = br.ReadSlice('\n')
			if err != nil {
				return 0, false, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 64)
			if err != nil {
				return 0, false, fmt.Errorf("bad chunk size %q", line)
			}
			if _, err := br.Discard(int(size) + 2); err != nil {
				return 0, false, err
			}
			if size == 0 {
				break
			}
		}
	case length >= 0:
		if _, err := br.Discard(int(length)); err != nil {
			return 0, false, err
		}
	default:
		if _, err := io.Copy(io.Discard, br); err != nil {
			return 0, false, err
		}
		closing = true
	}
	return status, closing, nil
}

// keepAlive runs conns connections, each sending requests one after the
// other on one keep-alive connection, for d (after a warm-up of d/5).
func keepAlive(c *contender, port int, conns int, d time.Duration) httpResult {
	return runHTTP(c, conns, d, nil, func(_ int, record func(time.Duration), stop *atomic.Bool, errs *atomic.Int64) {
		sendOnConns(c, port, stop, errs, record, func(send func(t0 time.Time) (keep bool)) {
			for !stop.Load() && send(time.Now()) {
			}
		})
	})
}

// fixedRate runs conns keep-alive connections that together send rate
// requests/s, for d (after a warm-up of d/5). A request's latency counts
// from the time it was due, not from when it was sent: a proxy that
// stalls delays the requests queued behind the stall, and they count it
// too (wrk2's correction for coordinated omission). A contender that
// cannot keep up shows as requests/s below the rate.
func fixedRate(c *contender, port int, conns int, rate float64, d time.Duration) httpResult {
	due := make([]chan time.Time, conns)
	for i := range due {
		due[i] = make(chan time.Time, dueBacklog)
	}
	begin := func(stop *atomic.Bool, errs *atomic.Int64) {
		go func() {
			// The thread that precisePacer locks and tunes ends with
			// this goroutine.
			pace(time.Now(), rate, due, stop, errs, precisePacer())
		}()
	}
	return runHTTP(c, conns, d, begin, func(i int, record func(time.Duration), stop *atomic.Bool, errs *atomic.Int64) {
		sendOnConns(c, port, stop, errs, record, func(send func(t0 time.Time) (keep bool)) {
			for t0 := range due[i] {
				if stop.Load() || !send(t0) {
					return
				}
			}
		})
	})
}

// sendOnConns runs requests on keep-alive connections to the contender
// until stop: it opens a connection and runs loop with a send on it,
// which writes one request, reads its response, records its latency from
// t0 and reports whether the connection can take another; when loop
// returns, the connection closes and, unless stop, the next one opens. A
// failed request counts as an error.
func sendOnConns(c *contender, port int, stop *atomic.Bool, errs *atomic.Int64, record func(time.Duration), loop func(send func(t0 time.Time) (keep bool))) {
	req := request(c, port, "/small", false)
	for !stop.Load() {
		conn, err := c.connect(port)
		if err != nil {
			errs.Add(1)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		br := bufio.NewReaderSize(conn, 16<<10)
		loop(func(t0 time.Time) (keep bool) {
			var status int
			var closing bool
			_, err := conn.Write(req)
			if err == nil {
				status, closing, err = readResponse(br)
			}
			if err == nil && status != 200 {
				err = fmt.Errorf("status %d", status)
			}
			if err != nil {
				if !stop.Load() {
					errs.Add(1)
				}
				return false
			}
			record(time.Since(t0))
			return !closing
		})
		conn.Close()
	}
}

// newConnections runs conns workers that each open a new connection per
// request (Connection: close), for d.
func newConnections(c *contender, port int, conns int, d time.Duration) httpResult {
	return runHTTP(c, conns, d, nil, func(_ int, record func(time.Duration), stop *atomic.Bool, errs *atomic.Int64) {
		req := request(c, port, "/small", true)
		br := bufio.NewReaderSize(nil, 16<<10)
		for !stop.Load() {
			t0 := time.Now()
			conn, err := c.connect(port)
			if err != nil {
				errs.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			br.Reset(conn)
			_, err = conn.Write(req)
			var status int
			if err == nil {
				status, _, err = readResponse(br)
			}
			conn.Close()
			if err != nil || status != 200 {
				if !stop.Load() {
					errs.Add(1)
				}
				continue
			}
			record(time.Since(t0))
		}
	})
}

// runHTTP runs workers for a warm-up of d/5 and then for d, and summarises
// the latencies recorded in the measured part. begin, unless nil, is
// called first with the flag that stops the workers and their error count.
func runHTTP(c *contender, workers int, d time.Duration, begin func(stop *atomic.Bool, errs *atomic.Int64), work func(i int, record func(time.Duration), stop *atomic.Bool, errs *atomic.Int64)) httpResult {
	var stop, measuring atomic.Bool
	var errs, all atomic.Int64
	lats := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	if begin != nil {
		begin(&stop, &errs)
	}
	for i := range workers {
		lats[i] = make([]time.Duration, 0, 1<<16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(i, func(l time.Duration) {
				all.Add(1)
				if measuring.Load() {
					lats[i] = append(lats[i], l)
				}
			}, &stop, &errs)
		}()
	}
	time.Sleep(d / 5)
	errs.Store(0)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(d)
	measuring.Store(false)
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	var lat []time.Duration
	for _, l := range lats {
		lat = append(lat, l...)
	}
	slices.Sort(lat)
	r := httpResult{rps: float64(len(lat)) / elapsed.Seconds(), errors: errs.Load(), all: all.Load()}
	if len(lat) > 0 {
		r.p50 = lat[len(lat)*50/100]
		r.p99 = lat[len(lat)*99/100]
	}
	return r
}

// download is one bulk transfer through a contender: its rate in MB/s
// (10^6 bytes), and for a TLS download the negotiated version and cipher.
type download struct {
	mbps   float64
	cipher string
}

// tlsThroughput downloads size bytes of TLS application data through a
// CONNECT tunnel (or directly, or through a transparent proxy) from the
// origin's TLS source, as a client of an HTTPS server does: the handshake
// with the bench's server name first, then the stream.
func tlsThroughput(c *contender, ports originPorts, size int64) (download, error) {
	conn, br, err := openTunnel(c, ports.TLSSource)
	if err != nil {
		return download{}, err
	}
	defer conn.Close()
	start := time.Now()
	tc := tls.Client(tunnelConn(conn, br), &tls.Config{ServerName: benchHost, InsecureSkipVerify: true})
	conn.SetDeadline(start.Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		return download{}, fmt.Errorf("TLS handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})
	buf := make([]byte, 256<<10)
	var got int64
	for got < size {
		n, err := tc.Read(buf)
		got += int64(n)
		if err != nil {
			return download{}, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	st := tc.ConnectionState()
	return download{
		mbps:   float64(got) / time.Since(start).Seconds() / 1e6,
		cipher: tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite),
	}, nil
}

// rawThroughput downloads size bytes through a CONNECT tunnel (or
// directly, or through a transparent proxy) from the origin's raw source,
// after a ClientHello: the tunnel's cost without the TLS of its ends.
func rawThroughput(c *contender, ports originPorts, size int64) (download, error) {
	conn, br, err := openTunnel(c, ports.Source)
	if err != nil {
		return download{}, err
	}
	defer conn.Close()
	// A TLS client speaks first: its ClientHello goes through feedgate's
	// SNI check, and the source streams once it has it.
	start := time.Now()
	if _, err := conn.Write(benchHello); err != nil {
		return download{}, fmt.Errorf("sending the ClientHello: %w", err)
	}
	buf := make([]byte, 256<<10)
	var got int64
	if n := br.Buffered(); n > 0 {
		br.Discard(n)
		got += int64(n)
	}
	for got < size {
		n, err := conn.Read(buf)
		got += int64(n)
		if err != nil {
			return download{}, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	return download{mbps: float64(got) / time.Since(start).Seconds() / 1e6}, nil
}

// benchHelloName is the server name in benchHello, which no rule selects.
const benchHelloName = "bench.example.test"

// benchHello is a real ClientHello of Go's crypto/tls, sent first on every
// download tunnel.
var benchHello = func() []byte {
	c, peer := net.Pipe()
	go func() {
		_ = tls.Client(c, &tls.Config{ServerName: benchHelloName, InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 16<<10)
	n, _ := peer.Read(buf) // crypto/tls writes its ClientHello in one write
	_ = c.Close()
	_ = peer.Close()
	return buf[:n]
}()

// openTunnel connects to port on the origin through the contender: a
// CONNECT through an explicit proxy, or a plain connection (direct, or
// redirected to a transparent proxy).
func openTunnel(c *contender, port int) (net.Conn, *bufio.Reader, error) {
	conn, err := c.connect(port)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	if !c.explicit() {
		return conn, br, nil
	}
	target := c.host + ":" + strconv.Itoa(port)
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	// A CONNECT reply has no body: read the status line and headers only.
	line, err := br.ReadSlice('\n')
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if len(line) < 12 || string(line[9:12]) != "200" {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNECT %s: %q", target, bytes.TrimSpace(line))
	}
	for {
		if line, err = br.ReadSlice('\n'); err != nil {
			conn.Close()
			return nil, nil, err
		}
		if len(line) <= 2 {
			break
		}
	}
	return conn, br, nil
}

// tunnelConn is conn, read through br if the proxy sent more than its
// reply to the CONNECT.
func tunnelConn(conn net.Conn, br *bufio.Reader) net.Conn {
	if br.Buffered() == 0 {
		return conn
	}
	return bufferedConn{conn, br}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// tunnelResult is the cost of idle tunnels held open through a proxy.
type tunnelResult struct {
	bytesPerTunnel      float64
	goroutinesPerTunnel float64 // NaN if the proxy does not report it
	// What the same tunnels cost the client (this process) and the
	// origin, which the contender's figure must not include.
	clientBytesPerTunnel, originBytesPerTunnel float64
}

// idleTunnels opens n tunnels to the origin's TLS port through the proxy,
// completes a TLS handshake through each, leaves them idle for settle, and
// measures the proxy's resident memory (and goroutines) per tunnel. It
// waits settle before it starts as well, for a contender just started.
func idleTunnels(c *contender, ports originPorts, n int, settle time.Duration) (tunnelResult, error) {
	// The client's own garbage is collected before each reading, so that
	// its collector does not run while the contender's memory is read.
	wait := func() { runtime.GC(); time.Sleep(settle) }
	wait()
	self, origin := []int{os.Getpid()}, []int{c.originPid}
	rss0, self0, origin0 := rssBytes(c.pids()), rssBytes(self), rssBytes(origin)
	g0, gerr := goroutines(c)
	conns := make([]net.Conn, n)
	defer func() {
		for _, cn := range conns {
			if cn != nil {
				cn.Close()
			}
		}
	}()
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				conn, br, err := openTunnel(c, ports.TLS)
				if err == nil {
					tc := tls.Client(tunnelConn(conn, br), &tls.Config{ServerName: benchHost, InsecureSkipVerify: true})
					conn.SetDeadline(time.Now().Add(30 * time.Second))
					if err = tc.Handshake(); err == nil {
						conn.SetDeadline(time.Time{})
						conns[i] = tc
						continue
					}
					conn.Close()
				}
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("tunnel %d: %w", i, err)
				}
				mu.Unlock()
				return
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return tunnelResult{}, firstErr
	}
	wait()
	rss1, self1, origin1 := rssBytes(c.pids()), rssBytes(self), rssBytes(origin)
	r := tunnelResult{
		bytesPerTunnel:       float64(rss1-rss0) / float64(n),
		goroutinesPerTunnel:  nan(),
		clientBytesPerTunnel: float64(self1-self0) / float64(n),
		originBytesPerTunnel: float64(origin1-origin0) / float64(n),
	}
	if g1, err := goroutines(c); err == nil && gerr == nil {
		r.goroutinesPerTunnel = (g1 - g0) / float64(n)
	}
	return r, nil
}

func goroutines(c *contender) (float64, error) {
	if c.goroutines == nil {
		return 0, errors.New("no goroutine count")
	}
	return c.goroutines()
}
