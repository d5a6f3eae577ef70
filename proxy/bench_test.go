package proxy_test

import (
	"bufio"
	"fmt"
	"io"
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
