package proxy

// White-box tests of the unexported error classification, header hygiene
// and pre-rendered block responses.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/rules"
)

// timeoutErr is a net.Error that says it is a timeout.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "fake timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestUpstreamReason(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: err}}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"dns-not-found", &net.DNSError{Err: "no such host", Name: "nx.example.test", IsNotFound: true}, metrics.ReasonDNS},
		{"dns-wrapped", fmt.Errorf("resolve nx.example.test: %w", &net.DNSError{Err: "server misbehaving", Name: "nx.example.test"}), metrics.ReasonDNS},
		{"dns-timeout", &net.DNSError{Err: "i/o timeout", Name: "slow.example.test", IsTimeout: true}, metrics.ReasonTimeout},
		{"refused", opErr(syscall.ECONNREFUSED), metrics.ReasonRefused},
		{"refused-wrapped", fmt.Errorf("proxy: %w", opErr(syscall.ECONNREFUSED)), metrics.ReasonRefused},
		{"deadline", context.DeadlineExceeded, metrics.ReasonTimeout},
		{"deadline-wrapped", fmt.Errorf("dial: %w", context.DeadlineExceeded), metrics.ReasonTimeout},
		{"os-deadline", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, metrics.ReasonTimeout},
		{"net-error-timeout", timeoutErr{}, metrics.ReasonTimeout},
		{"reset", opErr(syscall.ECONNRESET), metrics.ReasonReset},
		{"broken-pipe", &net.OpError{Op: "write", Net: "tcp", Err: &os.SyscallError{Syscall: "write", Err: syscall.EPIPE}}, metrics.ReasonReset},
		{"eof", io.EOF, metrics.ReasonOther},
		// A body cut short: the upstream went away mid-response.
		{"unexpected-eof", io.ErrUnexpectedEOF, metrics.ReasonReset},
		{"canceled", context.Canceled, metrics.ReasonOther},
		{"plain", errors.New("something else"), metrics.ReasonOther},
		{"unreachable", opErr(syscall.ENETUNREACH), metrics.ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := upstreamReason(tt.err); got != tt.want {
				t.Errorf("upstreamReason(%v) = %q; want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestUpstreamStatusAndMessage(t *testing.T) {
	tests := []struct {
		reason     string
		wantStatus int
		wantMsg    string
	}{
		{metrics.ReasonDNS, 502, "could not be resolved"},
		{metrics.ReasonRefused, 502, "refused the connection"},
		{metrics.ReasonTimeout, 504, "did not answer in time"},
		{metrics.ReasonReset, 502, "reset the connection"},
		{metrics.ReasonOther, 502, "could not be reached"},
		{"unknown-reason", 502, "could not be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			if got := upstreamStatus(tt.reason); got != tt.wantStatus {
				t.Errorf("upstreamStatus(%q) = %d; want %d", tt.reason, got, tt.wantStatus)
			}
			if got := upstreamMessage(tt.reason); !strings.Contains(got, tt.wantMsg) {
				t.Errorf("upstreamMessage(%q) = %q; want it to contain %q", tt.reason, got, tt.wantMsg)
			}
		})
	}
	// Every reason the metric knows has its own message.
	seen := map[string]string{}
	for _, r := range metrics.UpstreamReasons() {
		m := upstreamMessage(r)
		if prev, dup := seen[m]; dup {
			t.Errorf("reasons %q and %q share the message %q", prev, r, m)
		}
		seen[m] = r
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	tests := []struct {
		name     string
		in       http.Header
		wantGone []string
		wantKept map[string]string
	}{
		{
			name: "standard-and-named",
			in: http.Header{
				"Connection":          {"keep-alive, X-Fake-Hop", "X-Other-Hop"},
				"X-Fake-Hop":          {"1"},
				"X-Other-Hop":         {"1"},
				"Proxy-Connection":    {"keep-alive"},
				"Proxy-Authorization": {"Basic dXNlcjpwYXNz"},
				"Proxy-Authenticate":  {"Basic"},
				"Keep-Alive":          {"timeout=5"},
				"Te":                  {"trailers"},
				"Trailer":             {"X-Sum"},
				"Transfer-Encoding":   {"chunked"},
				"Upgrade":             {"h2c"},
				"X-End-To-End":        {"kept"},
				"Authorization":       {"Bearer end-to-end"},
			},
			wantGone: []string{"Connection", "X-Fake-Hop", "X-Other-Hop", "Proxy-Connection", "Proxy-Authorization",
				"Proxy-Authenticate", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade"},
			wantKept: map[string]string{"X-End-To-End": "kept", "Authorization": "Bearer end-to-end"},
		},
		{
			name: "websocket-upgrade-kept",
			in: http.Header{
				"Connection":          {"Upgrade"},
				"Upgrade":             {"websocket"},
				"Proxy-Authorization": {"Basic dXNlcjpwYXNz"},
				"Sec-Websocket-Key":   {"dGhlIHNhbXBsZSBub25jZQ=="},
			},
			wantGone: []string{"Proxy-Authorization"},
			wantKept: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			removeHopHeaders(h)
			for _, k := range tt.wantGone {
				if v, ok := h[k]; ok {
					t.Errorf("%s = %q after removeHopHeaders; want it removed", k, v)
				}
			}
			for k, v := range tt.wantKept {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q after removeHopHeaders; want %q", k, got, v)
				}
			}
		})
	}
}

func TestRenderBlocks(t *testing.T) {
	p, _, err := rules.Load(rules.FS{FS: configs.Files()}, configs.DefaultPolicy, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := renderBlocks(p)
	if len(blocks) != len(p.Rules)+1 {
		t.Fatalf("renderBlocks gave %d rows; want %d (default + one per rule)", len(blocks), len(p.Rules)+1)
	}
	for i := -1; i < len(p.Rules); i++ {
		row := blocks[i+1]
		isBlock := p.DefaultAction == rules.Block
		name := rules.DefaultRule
		if i >= 0 {
			isBlock, name = p.Rules[i].Action == rules.Block, p.Rules[i].Name
		}
		if !isBlock {
			if row != nil {
				t.Errorf("rule %q does not block but has rendered 403s", name)
			}
			continue
		}
		if len(row) != len(p.Classes) {
			t.Fatalf("rule %q: %d rendered classes; want %d", name, len(row), len(p.Classes))
		}
		for c, b := range row {
			cl := p.Classes[c]
			head, body, ok := strings.Cut(string(b.connect), "\r\n\r\n")
			if !ok || body != string(b.body) {
				t.Errorf("rule %q class %v: CONNECT reply does not end with the body", name, cl)
			}
			for _, want := range []string{
				"HTTP/1.1 403 Forbidden\r\n", "\r\nConnection: close", "\r\nX-Feedgate-Rule: " + name,
				fmt.Sprintf("\r\nContent-Length: %d", len(b.body)),
			} {
				if !strings.Contains(head+"\r\n", want) {
					t.Errorf("rule %q class %v: CONNECT reply head %q lacks %q", name, cl, head, want)
				}
			}
			for _, want := range []string{"vendor:   " + cl.Vendor + "\n", "category: " + cl.Category + "\n", "rule:     " + name + "\n", "since:    "} {
				if !strings.Contains(string(b.body), want) {
					t.Errorf("rule %q class %v: body %q lacks %q", name, cl, b.body, want)
				}
			}
		}
	}
	// The updates cut-off is shown in the policy's timezone.
	for i, r := range p.Rules {
		if r.Name == "updates-cutoff" {
			if body := string(blocks[i+1][1].body); !strings.Contains(body, "since:    2024-09-29T00:00:00-04:00\n") {
				t.Errorf("updates-cutoff body %q lacks the EDT cut-off", body)
			}
			if want := time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC); !r.From.Equal(want) {
				t.Errorf("updates-cutoff from = %v; want %v", r.From, want)
			}
		}
	}
}
