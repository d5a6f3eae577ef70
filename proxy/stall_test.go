package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/testutil"
)

// TestStalledUpstreamBody: an upstream that sends headers and part of the
// body and then stalls does not hold the client past the idle timeout.
func TestStalledUpstreamBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := testutil.NewRawUpstream(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		select { // stall, until the test ends
		case <-release:
		case <-time.After(testutil.WaitLimit):
		}
	})
	cfg := policyWith(t, "[limits]\ntunnel_idle_timeout = \"1s\"")
	cfg.resolve = []string{"www.example.test:80:" + up.Addr()}
	e := newEnv(t, cfg)
	before := e.snapshot(t, upstreamErrSeries("timeout"))

	c := e.dial(t)
	fmt.Fprint(c, "GET http://www.example.test/stall HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if string(body) != "0123456789" || err == nil {
		t.Errorf("read %q, %v; want the 10 bytes sent and then an error for the missing 90", body, err)
	}
	rec := e.waitRecord(t, map[string]any{"host": "www.example.test", "error": "timeout"})
	if d := rec["duration_seconds"].(float64); d > 10 {
		t.Errorf("the stalled response took %.1fs; want about the 1s idle timeout", d)
	}
	e.checkDeltas(t, before, delta{upstreamErrSeries("timeout"), 1})
}

// TestUpstreamTLSFailures: feedgate speaks TLS itself for absolute https://
// requests; an upstream it cannot verify, or one that does not speak TLS,
// is a 502 that says so.
func TestUpstreamTLSFailures(t *testing.T) {
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer untrusted.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	e := newEnv(t, envConfig{resolve: []string{
		"untrusted.example.test:443:" + untrusted.Listener.Addr().String(),
		"plain.example.test:443:" + plain.Listener.Addr().String(),
	}})
	for host, want := range map[string]string{
		"untrusted.example.test": "TLS certificate could not be verified",
		"plain.example.test":     "did not speak TLS",
	} {
		before := e.snapshot(t, upstreamErrSeries("other"))
		resp := rawRequest(t, e, "GET https://"+host+"/ HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 502 || !strings.Contains(string(body), want) || resp.Header.Get("X-Feedgate-Error") != "other" {
			t.Errorf("%s: %d %q (X-Feedgate-Error %q); want 502 saying %q", host, resp.StatusCode, body, resp.Header.Get("X-Feedgate-Error"), want)
		}
		e.checkDeltas(t, before, delta{upstreamErrSeries("other"), 1})
	}
}
