package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// connCountingOrigin is an origin that counts the TCP connections it
// accepts, and can close every connection after its response.
type connCountingOrigin struct {
	*httptest.Server
	conns atomic.Int64
	close atomic.Bool
}

func newConnCountingOrigin(t *testing.T) *connCountingOrigin {
	o := &connCountingOrigin{}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	o.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.conns.Add(1)
		}
		if s == http.StateIdle && o.close.Load() {
			// Close idle connections behind the proxy's back, as
			// upstreams with short keep-alive timeouts do.
			c.Close()
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

func (o *connCountingOrigin) port() string {
	_, p, _ := net.SplitHostPort(o.Listener.Addr().String())
	return p
}

// TestUpstreamConnectionsAreReused sends requests from several client
// connections, some asking to close theirs: the proxy reuses one upstream
// connection for all of them, because Connection is hop-by-hop.
func TestUpstreamConnectionsAreReused(t *testing.T) {
	o := newConnCountingOrigin(t)
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:127.0.0.1:" + o.port()}})
	for i := range 10 {
		c := e.dial(t)
		closing := ""
		if i%2 == 0 {
			closing = "Connection: close\r\n"
		}
		fmt.Fprintf(c, "GET http://www.example.test/r%d HTTP/1.1\r\nHost: www.example.test\r\n%s\r\n", i, closing)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != fmt.Sprintf("ok /r%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if closing != "" && !resp.Close {
			t.Errorf("request %d asked to close the client connection; the response does not close it", i)
		}
		c.Close()
	}
	if n := o.conns.Load(); n != 1 {
		t.Errorf("origin accepted %d connections for 10 sequential requests; want 1 (reused)", n)
	}
}

// TestUpstreamClosedIdleConnectionIsRetried: an upstream that closes idle
// connections makes the pooled connection stale; the next request is
// retried once on a new connection and succeeds.
func TestUpstreamClosedIdleConnectionIsRetried(t *testing.T) {
	o := newConnCountingOrigin(t)
	o.close.Store(true)
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:127.0.0.1:" + o.port()}})
	client, _ := e.client(t, nil)
	for i := range 5 {
		resp, err := client.Get(fmt.Sprintf("http://www.example.test/again%d", i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok /again") {
			t.Fatalf("request %d: %d %q; want 200 from the origin", i, resp.StatusCode, body)
		}
	}
	if got := e.value(t, upstreamErrSeries("reset")) + e.value(t, upstreamErrSeries("other")); got != 0 {
		t.Errorf("retried stale connections were counted as %v upstream errors; want 0", got)
	}
}

// TestAbandonedDownloadIsNotDrained: a client that goes away in the middle
// of a long download frees the upstream connection too. The proxy must
// not read the rest of the body first (net/http's body Close does, to keep
// the connection), which for an update base could be a gigabyte fetched
// for nobody, with the exchange's record held back until it ends.
func TestAbandonedDownloadIsNotDrained(t *testing.T) {
	quit, gone := make(chan struct{}), make(chan struct{})
	line := []byte("chunk " + dripPad + "\n")
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(gone)
		rc := http.NewResponseController(w)
		for {
			if _, err := w.Write(line); err != nil || rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-quit:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(func() { close(quit); o.Close() })
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:" + hostPort(t, o.URL)}})
	c := e.dial(t)
	download(t, c, "http://www.example.test/stream", "www.example.test")
	c.Close()
	select {
	case <-gone:
	case <-time.After(testutil.WaitLimit):
		t.Fatalf("the origin still streams %v after the client went away: the proxy is draining the body", testutil.WaitLimit)
	}
	e.waitRecord(t, map[string]any{"host": "www.example.test", "path": "/stream"})
}

// TestInterimResponsesAreNotFinal: an upstream may send 1xx responses
// (103 Early Hints, an unasked-for 100 Continue) before the final one. The
// proxy must wait for the final response, and must not put the connection
// back in the pool with that response still unread: the next request sent
// on it would get the previous request's answer.
func TestInterimResponsesAreNotFinal(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(o.Close)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	e := newEnv(t, envConfig{resolve: []string{"www.example.test:80:127.0.0.1:" + port}})
	c := e.dial(t)
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 3 {
		fmt.Fprintf(c, "GET http://www.example.test/r%d HTTP/1.1\r\nHost: www.example.test\r\n\r\n", i)
		// A client skips interim responses, as net/http's does.
		var resp *http.Response
		for resp == nil || resp.StatusCode < 200 {
			var err error
			if resp, err = http.ReadResponse(br, nil); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != fmt.Sprintf("ok /r%d", i) {
			t.Fatalf("request %d: %d %q; want 200 %q", i, resp.StatusCode, body, fmt.Sprintf("ok /r%d", i))
		}
	}
}
