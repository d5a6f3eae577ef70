package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// discardWriter is a reusable ResponseWriter for the in-process benchmark.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

// ReadFrom copies without a per-call buffer, as net/http's response writer
// does with its pooled buffers.
func (w *discardWriter) ReadFrom(r io.Reader) (int64, error) {
	var buf [512]byte
	var n int64
	for {
		m, err := r.Read(buf[:])
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// BenchmarkBlockedHTTP measures the 403 path of a plain-HTTP request:
// decide, count, render the pre-built reply, write the decision record.
func BenchmarkBlockedHTTP(b *testing.B) {
	e := newEnv(b, envConfig{now: afterCutoffs, logTo: io.Discard})
	req, err := http.NewRequest("GET", "http://s01.upd.kaspersky.com/bases/av/kdb/i386/base.kdc", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.RemoteAddr = "127.0.0.1:40000"
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		e.srv.ServeHTTP(w, req)
	}
	if w.status != http.StatusForbidden {
		b.Fatalf("status %d; want 403", w.status)
	}
}

// BenchmarkBlockedConnect measures a refused CONNECT end to end over
// loopback: connect, send the CONNECT, read the whole 403 and the close.
func BenchmarkBlockedConnect(b *testing.B) {
	e := newEnv(b, envConfig{now: afterCutoffs, logTo: io.Discard})
	b.ReportAllocs()
	for b.Loop() {
		c := e.dial(b)
		fmt.Fprint(c, "CONNECT s01.upd.kaspersky.com:443 HTTP/1.1\r\nHost: s01.upd.kaspersky.com:443\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusForbidden {
			b.Fatalf("CONNECT: %v %v; want 403", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		c.Close()
	}
}

// BenchmarkAllowedHTTP measures the forward path in process: decide, count,
// forward over a pooled upstream connection to a loopback origin, copy the
// response, write the decision record.
func BenchmarkAllowedHTTP(b *testing.B) {
	o := newOrigin(b)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	e := newEnv(b, envConfig{now: afterCutoffs, logTo: io.Discard, resolve: []string{"www.example.test:80:127.0.0.1:" + port}})
	proto, err := http.NewRequest("GET", "http://www.example.test/hello", nil)
	if err != nil {
		b.Fatal(err)
	}
	proto.RemoteAddr = "127.0.0.1:40000"
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		// The proxy edits the request's headers (hop-by-hop, Via), as it
		// may with a request it owns: give it a fresh one each time (its
		// copy is counted in the allocations).
		req := *proto
		req.Header = http.Header{}
		e.srv.ServeHTTP(w, &req)
	}
	if w.status != http.StatusOK {
		b.Fatalf("status %d; want 200", w.status)
	}
}

// BenchmarkNewConnection measures an allowed plain-HTTP request on a
// connection of its own, as feedgate-bench's new-connection load sends
// it: the proxy port's accept, the front end's connection set-up, the
// request, the pooled round trip to a loopback origin, the response and
// the close.
func BenchmarkNewConnection(b *testing.B) {
	o := newOrigin(b)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	e := newEnv(b, envConfig{now: afterCutoffs, logTo: io.Discard, resolve: []string{"www.example.test:80:127.0.0.1:" + port}})
	req := []byte("GET http://www.example.test/hello HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for err == nil && n < len(buf) {
			var m int
			m, err = c.Read(buf[n:])
			n += m
		}
		c.Close()
		if err != io.EOF || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 ")) {
			b.Fatalf("response %q, %v; want a 200 and the connection closed", buf[:n], err)
		}
	}
}
