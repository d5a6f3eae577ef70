package accesslog_test

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/proxy/internal/testutil"
	"github.com/feedgate/feedgate/rules"
)

// squidRec is the part of a decision record that the Squid line shows.
type squidRec struct {
	kind, client, method, host, path    string
	action, rejected, closed, errReason string
	port, status, bytes                 int64
	seconds                             float64
}

func defaultSquidRec() squidRec {
	return squidRec{kind: "http", client: "10.1.2.3", method: "GET", port: 80, status: 200, bytes: 1234, seconds: 0.456}
}

// squidTime is every test record's time: 1727582400.123.
var squidTime = time.Unix(1727582400, 123e6)

// record is the typed record the proxy would hand to the sink. A client
// that is no address is unknown (the zero netip.Addr), and a duration is
// clamped into what a time.Duration holds, as any real one is.
func (r squidRec) record() *accesslog.Record {
	client, _ := netip.ParseAddr(r.client)
	rec := &accesslog.Record{
		Time: squidTime, Kind: r.kind, Client: client, Method: r.method, Host: r.host, Port: int(r.port),
		Rejected: r.rejected, Status: int(r.status), Sent: 99, Received: r.bytes,
		Duration: durationOf(r.seconds), Policy: "default", Closed: r.closed, Error: r.errReason,
	}
	if !tunnelKind(r.kind) {
		// The fuzzer's kinds other than the tunnels' are logged as
		// plain HTTP, with their path.
		rec.Path = r.path
	}
	if a, ok := rules.ParseAction(r.action); ok {
		rec.Decided, rec.Decision.Action = true, a
	}
	if tunnelKind(r.kind) {
		rec.SNI, rec.SNIResult = r.host+" sni\n", "mismatch"
	}
	return rec
}

func durationOf(seconds float64) time.Duration {
	switch ns := seconds * 1e9; {
	case !(ns > 0):
		return 0
	case ns >= math.MaxInt64:
		return math.MaxInt64
	default:
		return time.Duration(ns)
	}
}

// line runs the record through a Squid sink and returns what it wrote.
func (r squidRec) line(tb testing.TB) string {
	tb.Helper()
	var buf bytes.Buffer
	if err := accesslog.NewSquid(&buf).Write(r.record()); err != nil {
		tb.Fatalf("Write: %v", err)
	}
	return buf.String()
}

func unescape(tb testing.TB, field string) string {
	tb.Helper()
	s, err := url.PathUnescape(field)
	if err != nil {
		tb.Fatalf("field %.200q does not unescape: %v", field, err)
	}
	return s
}

// splitSquidURL takes a logged URL apart: the unescaped host, the port
// as written ("" if none), and the unescaped path.
func splitSquidURL(tb testing.TB, kind, field string) (host, port, path string) {
	tb.Helper()
	authority := field
	if !tunnelKind(kind) {
		_, rest, ok := strings.Cut(field, "://")
		if !ok {
			tb.Fatalf("URL %.200q has no scheme", field)
		}
		authority = rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			authority, path = rest[:i], unescape(tb, rest[i:])
		}
	}
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			tb.Fatalf("URL %.200q: no ] after [", field)
		}
		host, port = authority[1:end], strings.TrimPrefix(authority[end+1:], ":")
	} else {
		host, port, _ = strings.Cut(authority, ":")
	}
	return unescape(tb, host), port, path
}

// checkRoundTrip checks that the line's escaped fields decode back to the
// record's values. A field cut at testutil.MaxSquidField decodes to a prefix of what
// the record held.
func checkRoundTrip(tb testing.TB, r squidRec, m []string) {
	tb.Helper()
	if r.method == "" {
		if m[testutil.SqMethod] != "-" {
			tb.Errorf("empty method logged as %q, want -", m[testutil.SqMethod])
		}
	} else if got := unescape(tb, m[testutil.SqMethod]); !decodesTo(nearCap(m[testutil.SqMethod]), got, r.method) {
		tb.Errorf("method decodes to %.100q, want %.100q", got, r.method)
	}

	if a, err := netip.ParseAddr(r.client); err != nil {
		if m[testutil.SqClient] != "-" {
			tb.Errorf("client %.100q is no address but is logged as %.100q, want -", r.client, m[testutil.SqClient])
		}
	} else if got := unescape(tb, m[testutil.SqClient]); !decodesTo(nearCap(m[testutil.SqClient]), got, a.String()) {
		tb.Errorf("client decodes to %.100q, want %.100q", got, a)
	}

	if m[testutil.SqHier] == "HIER_DIRECT" && r.host != "" {
		want := r.host
		if a, err := netip.ParseAddr(r.host); err == nil {
			want = a.String()
		}
		if got := unescape(tb, m[testutil.SqPeer]); !decodesTo(nearCap(m[testutil.SqPeer]), got, want) {
			tb.Errorf("peer decodes to %.100q, want %.100q", got, want)
		}
	}

	if r.host == "" {
		if m[testutil.SqURL] != "-" {
			tb.Errorf("URL without a host is %q, want -", m[testutil.SqURL])
		}
		return
	}
	wantPort, wantPath := strconv.FormatInt(r.port, 10), slashed(r.path)
	switch {
	case tunnelKind(r.kind):
		wantPath = ""
	case r.kind == "mitm" && r.port == 443, r.kind != "mitm" && r.port == 80:
		wantPort = ""
	}
	got, cut := unescape(tb, m[testutil.SqURL]), nearCap(m[testutil.SqURL])
	if !cut {
		// The whole URL decodes to the URL built from the record's
		// values unescaped.
		want := r.host
		if a, err := netip.ParseAddr(r.host); err == nil && a.Is6() {
			want = "[" + want + "]"
		}
		if wantPort != "" {
			want += ":" + wantPort
		}
		switch r.kind {
		case "connect", "transparent":
		case "mitm":
			want = "https://" + want + wantPath
		default:
			want = "http://" + want + wantPath
		}
		if got != want {
			tb.Errorf("URL decodes to %q, want %q", got, want)
		}
	}
	// A parser that splits the URL before it decodes the parts finds the
	// record's host, port and path; a cut host or path is a prefix of
	// the record's, and the port is never cut.
	gotHost, gotPort, gotPath := splitSquidURL(tb, r.kind, m[testutil.SqURL])
	if !decodesTo(cut, gotHost, r.host) || gotPort != wantPort || !decodesTo(cut, gotPath, wantPath) {
		tb.Errorf("URL %.200q splits into host %.100q, port %q, path %.100q; want %.100q, %q, %.100q",
			m[testutil.SqURL], gotHost, gotPort, gotPath, r.host, wantPort, wantPath)
	}
}

// nearCap reports whether a field is long enough that the handler may
// have cut it.
func nearCap(field string) bool { return len(field) >= testutil.MaxSquidField-32 }

// decodesTo reports whether decoded is want, or a prefix of it if the
// field was cut.
func decodesTo(cut bool, decoded, want string) bool {
	if cut {
		return strings.HasPrefix(want, decoded)
	}
	return decoded == want
}

// slashed is the path as the URL must show it: a path must start with a
// slash after a host.
func slashed(p string) string {
	if p != "" && p[0] != '/' {
		return "/" + p
	}
	return p
}

type squidCase struct {
	name string
	rec  squidRec
	want string
}

// readSquidCases reads testdata/squidlog/hostile.txt (its header says how).
func readSquidCases(tb testing.TB) []squidCase {
	tb.Helper()
	data, err := os.ReadFile("testdata/squidlog/hostile.txt")
	if err != nil {
		tb.Fatal(err)
	}
	var cases []squidCase
	var c *squidCase
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" {
			c = nil
			continue
		}
		if c == nil {
			cases = append(cases, squidCase{rec: defaultSquidRec()})
			c = &cases[len(cases)-1]
		}
		key, val, _ := strings.Cut(line, " ")
		if strings.HasPrefix(val, `"`) || strings.HasPrefix(val, "`") {
			if val, err = strconv.Unquote(val); err != nil {
				tb.Fatalf("hostile.txt:%d: %v", n, err)
			}
		}
		if err := c.set(key, val); err != nil {
			tb.Fatalf("hostile.txt:%d: %v", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return cases
}

func (c *squidCase) set(key, val string) error {
	var err error
	r := &c.rec
	switch key {
	case "name":
		c.name = val
	case "want":
		c.want = val
	case "kind":
		r.kind = val
	case "client":
		r.client = val
	case "method":
		r.method = val
	case "host":
		r.host = val
	case "path":
		r.path = val
	case "action":
		r.action = val
	case "rejected":
		r.rejected = val
	case "closed":
		r.closed = val
	case "error":
		r.errReason = val
	case "port":
		r.port, err = strconv.ParseInt(val, 10, 64)
	case "status":
		r.status, err = strconv.ParseInt(val, 10, 64)
	case "bytes":
		r.bytes, err = strconv.ParseInt(val, 10, 64)
	case "seconds":
		r.seconds, err = strconv.ParseFloat(val, 64)
	default:
		err = fmt.Errorf("unknown key %q", key)
	}
	return err
}

// TestSquidHostile: each hostile record of testdata/squidlog/hostile.txt
// gives exactly the line written there, which is one line of Squid's
// format whose fields decode back to the record's values.
func TestSquidHostile(t *testing.T) {
	t.Parallel()
	cases := readSquidCases(t)
	if len(cases) < 40 {
		t.Fatalf("read %d cases from hostile.txt; the file is cut short", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			line := c.rec.line(t)
			m := testutil.CheckSquidLine(t, line)
			if got := strings.TrimSuffix(line, "\n"); got != c.want {
				t.Errorf("line\n got %s\nwant %s", got, c.want)
			}
			checkRoundTrip(t, c.rec, m)
		})
	}
}

// TestSquidEveryByte puts each of the 256 byte values into each string
// field, alone and around ordinary text.
func TestSquidEveryByte(t *testing.T) {
	t.Parallel()
	for b := 0; b < 256; b++ {
		c := string([]byte{byte(b)})
		for _, kind := range []string{"http", "mitm", "connect", "transparent"} {
			for _, v := range []string{c, "a" + c + "b", c + c} {
				for field, r := range map[string]squidRec{
					"host":        {host: v},
					"ipv6 zone":   {host: "fe80::1%" + v},
					"path":        {host: "h", path: v},
					"method":      {host: "h", method: v},
					"client":      {host: "h", client: v},
					"client zone": {host: "h", client: "fe80::1%" + v},
					"error":       {host: "h", errReason: v, status: 502},
				} {
					r.kind, r.port, r.seconds = kind, 443, 1.5
					if r.status == 0 {
						r.status = 200
					}
					line := r.line(t)
					m := testutil.CheckSquidLine(t, line)
					if t.Failed() {
						t.Fatalf("byte %#02x in %s of a %s record", b, field, kind)
					}
					checkRoundTrip(t, r, m)
					if t.Failed() {
						t.Fatalf("byte %#02x in %s of a %s record: %q", b, field, kind, line)
					}
				}
			}
		}
	}
}

// TestSquidLongFields: a field built from a huge host, path or method is
// cut at Squid's MAX_URL, never inside an escape, so the line stays short
// enough for syslog relays to carry whole.
func TestSquidLongFields(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("\r\n x%", 200_000)
	for name, r := range map[string]squidRec{
		"path":           {host: "www.example.test", path: "/" + huge},
		"path, shifted":  {host: "www.example.test", path: "/ab" + huge},
		"plain path":     {host: "www.example.test", path: "/" + strings.Repeat("a", 1<<20)},
		"host":           {host: huge, path: "/"},
		"IPv6 zone":      {host: "fe80::1%" + huge, path: "/"},
		"CONNECT host":   {kind: "connect", host: huge},
		"method":         {host: "h", method: huge},
		"client zone":    {host: "h", client: "fe80::1%" + huge},
		"every field":    {host: "fe80::1%" + huge, path: huge, method: huge, client: "fe80::1%" + huge},
		"tunnel to zone": {kind: "connect", host: "fe80::1%" + huge, method: huge, client: "fe80::1%" + huge},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if r.kind == "" {
				r.kind = "http"
			}
			r.port, r.status = 8080, 200
			if r.client == "" {
				r.client = "10.1.2.3"
			}
			line := r.line(t)
			m := testutil.CheckSquidLine(t, line)
			checkRoundTrip(t, r, m)
			if !nearCap(m[testutil.SqURL]) && !nearCap(m[testutil.SqMethod]) && !nearCap(m[testutil.SqClient]) {
				t.Errorf("no field was cut: %.300q", line)
			}
			if len(line) > 4*testutil.MaxSquidField+200 {
				t.Errorf("line of %d bytes", len(line))
			}
		})
	}
}

// FuzzSquidLine: whatever the record's strings and numbers, the handler
// writes exactly one line of Squid's format, with 10 fields that decode
// back to the record's values.
func FuzzSquidLine(f *testing.F) {
	for _, c := range readSquidCases(f) {
		r := c.rec
		f.Add(r.kind, r.host, r.path, r.method, r.client, r.errReason, r.port, r.status, r.bytes, r.seconds)
	}
	f.Add("connect", "fe80::1%eth0 x", "", "CONNECT", "fe80::2%lo", "", int64(443), int64(200), int64(0), 0.0)
	f.Add("mitm", "[::1]:80", "a b", "G T", "::1", "x\ny", int64(-1), int64(499), int64(-1), math.Inf(-1))
	f.Fuzz(func(t *testing.T, kind, host, path, method, client, errReason string, port, status, nbytes int64, seconds float64) {
		r := squidRec{kind: kind, host: host, path: path, method: method, client: client, errReason: errReason,
			port: port, status: status, bytes: nbytes, seconds: seconds}
		// Any kind but connect and mitm is logged as plain HTTP.
		checkRoundTrip(t, r, testutil.CheckSquidLine(t, r.line(t)))
	})
}

// BenchmarkSquidHandler is one ordinary line: the sink runs once per
// request.
func BenchmarkSquidHandler(b *testing.B) {
	h := accesslog.NewSquid(discard{})
	rec := &accesslog.Record{
		Time: squidTime, Kind: "http", Client: netip.MustParseAddr("10.1.2.3"), Method: "GET",
		Host: "www.example.test", Port: 80, Path: "/bases/av.kdc", Decided: true, Status: 200,
		Received: 48213, Duration: 12 * time.Millisecond, Policy: "default",
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// tunnelKind reports the kinds whose URL is host:port: CONNECT tunnels
// and the transparent listener's.
func tunnelKind(kind string) bool {
	return kind == accesslog.KindConnect || kind == accesslog.KindTransparent
}
