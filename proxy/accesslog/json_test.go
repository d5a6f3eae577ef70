package accesslog_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/proxy/accesslog"
	"github.com/feedgate/feedgate/rules"
)

// slogLine is the line the JSON sink wrote while it went through
// log/slog's JSON handler: the reference its own encoding must match byte
// for byte, so that nothing reading the log sees the change.
func slogLine(t testing.TB, r *accesslog.Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, nil)
	level := slog.LevelInfo
	if r.Flagged() {
		level = slog.LevelWarn
	}
	sr := slog.NewRecord(r.Time, level, "request", 0)
	sr.AddAttrs(slogAttrs(r)...)
	if err := h.Handle(context.Background(), sr); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// slogAttrs is the record's fields as the slog-based sink passed them.
func slogAttrs(r *accesslog.Record) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("kind", r.Kind),
		slog.String("client", addrString(r.Client)),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.Int("port", r.Port),
	}
	if r.HasPath() {
		attrs = append(attrs, slog.String("path", r.Path))
	}
	if r.Decided {
		d := &r.Decision
		attrs = append(attrs,
			slog.String("vendor", d.Vendor),
			slog.String("category", d.Category),
		)
		if m := d.MatchedBy(); m != "" {
			attrs = append(attrs, slog.String("match", m))
			if d.Signature != "" {
				attrs = append(attrs, slog.String("signature", d.Signature))
			}
		}
		attrs = append(attrs,
			slog.String("rule", d.RuleName),
			slog.String("action", d.Action.String()),
			slog.Bool("flagged", d.Action == rules.Log),
		)
		if d.Reported {
			attrs = append(attrs, slog.Bool("report_only", true))
		}
		if d.ClientGroup != "" {
			attrs = append(attrs, slog.String("client_group", d.ClientGroup))
		}
	}
	if r.Rejected != "" {
		attrs = append(attrs, slog.String("rejected", r.Rejected))
	}
	attrs = append(attrs,
		slog.Int("status", r.Status),
		slog.Int64("bytes_sent", r.Sent),
		slog.Int64("bytes_received", r.Received),
		slog.Float64("duration_seconds", r.Duration.Seconds()),
		slog.String("policy", r.Policy),
	)
	if r.SNIResult != "" {
		attrs = append(attrs, slog.String("sni", r.SNI), slog.String("sni_result", r.SNIResult))
	}
	if r.SNIRetry != "" {
		attrs = append(attrs, slog.String("sni_retry", r.SNIRetry))
	}
	if r.Closed != "" {
		attrs = append(attrs, slog.String("closed", r.Closed))
	}
	if r.CutRule != "" {
		attrs = append(attrs, slog.String("cut_rule", r.CutRule))
	}
	if r.Error != "" {
		attrs = append(attrs, slog.String("error", r.Error))
	}
	if r.Mode != "" {
		var dst string
		if r.OriginalDst.IsValid() {
			dst = r.OriginalDst.String()
		}
		attrs = append(attrs, slog.String("mode", r.Mode), slog.String("original_dst", dst))
		if r.HostVerify != "" {
			attrs = append(attrs, slog.String("host_verify", r.HostVerify))
		}
	}
	return attrs
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// writes records each call to Write, to check that a record is one call.
type writes struct{ calls [][]byte }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, bytes.Clone(p))
	return len(p), nil
}

// checkMatchesSlog writes r with the JSON sink and fails unless that is
// one call to the writer with the bytes slog wrote.
func checkMatchesSlog(t *testing.T, r *accesslog.Record) {
	t.Helper()
	want := slogLine(t, r)
	var w writes
	j := accesslog.NewJSON(&w)
	// Twice, so that the second line is encoded into a used buffer.
	for range 2 {
		w.calls = nil
		if err := j.Write(r); err != nil {
			t.Fatal(err)
		}
		if len(w.calls) != 1 {
			t.Fatalf("%d calls to Write for one record; want 1", len(w.calls))
		}
		if got := w.calls[0]; !bytes.Equal(got, want) {
			t.Fatalf("line differs from slog's\n got %q\nwant %q", got, want)
		}
	}
}

// jsonEdgeStrings are strings whose escaping JSON encoders disagree on.
var jsonEdgeStrings = []string{
	"",
	`"quoted" \back\slash/`,
	"<script>&amp;</script>",
	"tab\there\nnew\rreturn\x00nul\x01\x1f\x7f",
	"\u2028line\u2029para\u2027\u202a",
	"invalid \xff\xfe utf-8 \xe2\x82 cut \xed\xa0\x80 surrogate",
	"\uFFFD replacement as such, \U0001F600 emoji, ümlaut, 日本",
	"\xc0\x80 overlong, trailing \xe2",
}

func TestJSONMatchesSlog(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 9, 29, 4, 0, 0, 0, time.UTC)
	client := netip.MustParseAddr("192.0.2.7")
	decided := rules.Decision{Vendor: "kaspersky", Category: "update", Pattern: "*.upd.kaspersky.com", RuleName: "updates-cutoff", Action: rules.Block}
	full := accesslog.Record{
		Time: time.Date(2025, 3, 30, 1, 59, 59, 999999999, time.FixedZone("CEST", 2*3600)), Kind: accesslog.KindHTTP,
		Client: netip.MustParseAddr("2001:db8::7"), Method: "GET", Host: "s07.upd.kaspersky.com", Port: 8080, Path: "/index/u0607g.xml",
		Decided: true, Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Pattern: "*.upd.kaspersky.com", Signature: "bases-tree",
			RuleName: "r", Action: rules.Log, Reported: true, ClientGroup: "lab"},
		Rejected: "limit", Status: 403, Sent: math.MaxInt64, Received: math.MinInt64, Duration: math.MaxInt64, Policy: "p",
		SNI: "ksn.kaspersky.com", SNIResult: "match", SNIRetry: "retry.example", Closed: "policy_change", CutRule: "cutoff", Error: "reset",
		Mode: accesslog.ModeTransparent, OriginalDst: netip.MustParseAddrPort("[2001:db8:2::20]:443"), HostVerify: "mismatch",
	}
	tests := map[string]accesslog.Record{
		"zero record": {},
		"allowed http request": {Time: at, Kind: accesslog.KindHTTP, Client: client, Method: "GET", Host: "www.example.test", Port: 80, Path: "/",
			Decided: true, Decision: rules.Decision{Vendor: "none", Category: "none", RuleName: "default"}, Status: 200, Policy: "p"},
		"every field": full,
		"signature match": {Time: at, Kind: accesslog.KindMITM, Client: client, Method: "GET", Host: "kav-mirror.corp.example", Port: 443, Path: "/bases/av/kdb/i386/dailyc.kdc",
			Decided: true, Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Signature: "bases-tree", RuleName: "updates-cutoff", Action: rules.Block},
			Status: 403, Policy: "p"},
		"host match":                {Time: at, Kind: accesslog.KindConnect, Decided: true, Decision: decided, Status: 403},
		"action out of range":       {Time: at, Kind: accesslog.KindConnect, Decided: true, Decision: rules.Decision{Action: 200}},
		"refused before a decision": {Time: at, Kind: accesslog.KindConnect, Method: "CONNECT", Host: "a.example.test", Port: 25, Rejected: "port", Status: 403, Policy: "p"},
		"sni result without a name": {Time: at, Kind: accesslog.KindConnect, SNIResult: "missing"},
		"sni without a result":      {Time: at, Kind: accesslog.KindConnect, SNI: "not.checked"},
		"transparent without original destination": {Time: at, Kind: accesslog.KindTransparent, Client: client, Rejected: "invalid", Policy: "p",
			Mode: accesslog.ModeTransparent},
		"transparent to IPv4": {Time: at, Kind: accesslog.KindTransparent, Mode: accesslog.ModeTransparent,
			OriginalDst: netip.MustParseAddrPort("192.0.2.20:0"), HostVerify: "match"},
		"transparent to mapped IPv4 with a zone": {Time: at, Kind: accesslog.KindTransparent, Mode: accesslog.ModeTransparent,
			OriginalDst: netip.AddrPortFrom(netip.MustParseAddr("::ffff:192.0.2.20").WithZone(`e"th<0>`), 65535)},
		"host_verify without a mode":     {Time: at, HostVerify: "match", OriginalDst: netip.MustParseAddrPort("192.0.2.20:80")},
		"IPv6 client with a zone":        {Time: at, Client: netip.MustParseAddr("fe80::1%eth0\\\x01\xff")},
		"mapped IPv4 client":             {Time: at, Client: netip.MustParseAddr("::ffff:10.0.0.1")},
		"IPv4 client":                    {Time: at, Client: netip.MustParseAddr("255.255.255.255")},
		"negative numbers":               {Time: at, Port: -1, Status: -499, Sent: -1, Received: -2, Duration: -1500 * time.Millisecond},
		"huge numbers":                   {Time: at, Port: math.MaxInt, Status: math.MinInt, Sent: math.MaxInt64, Received: math.MaxInt64, Duration: math.MinInt64},
		"one nanosecond":                 {Time: at, Duration: 1},
		"minus one nanosecond":           {Time: at, Duration: -1},
		"just under a microsecond":       {Time: at, Duration: 999},
		"one microsecond":                {Time: at, Duration: time.Microsecond},
		"round seconds":                  {Time: at, Duration: 3 * time.Second},
		"long duration":                  {Time: at, Duration: 1e18 + 1},
		"nanoseconds in time":            {Time: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)},
		"trailing zero nanoseconds":      {Time: time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.UTC)},
		"negative zone":                  {Time: time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("", -(9*3600+30*60)))},
		"zone with seconds":              {Time: time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("LMT", 3600+23*60+17))},
		"local zone name without offset": {Time: time.Date(2024, 1, 2, 3, 4, 5, 6, time.FixedZone("XYZ", 0))},
		"monotonic clock reading":        {Time: time.Now()},
		"year 0":                         {Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
		"year 9999":                      {Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		"year 10000":                     {Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"year -1":                        {Time: time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC)},
		"year 10000 only in its zone":    {Time: time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).In(time.FixedZone("", 2*3600))},
		"zero time in a zone":            {Time: time.Time{}.In(time.FixedZone("", 3600)), Kind: accesslog.KindHTTP},
		"unix epoch":                     {Time: time.Unix(0, 0).UTC()},
	}
	for i, s := range jsonEdgeStrings {
		tests["strings "+string(rune('a'+i))] = accesslog.Record{
			Time: at, Kind: s, Client: client, Method: s, Host: s, Path: s,
			Decided: true, Decision: rules.Decision{Vendor: s, Category: s, Pattern: s, Signature: s, RuleName: s, ClientGroup: s},
			Rejected: s, Policy: s, SNI: s, SNIResult: s, SNIRetry: s, Closed: s, CutRule: s, Error: s, Mode: s, HostVerify: s,
		}
		mitm := full
		mitm.Kind, mitm.Host, mitm.Path, mitm.Method, mitm.SNI = accesslog.KindMITM, s, s, s, s
		tests["strings in a full record "+string(rune('a'+i))] = mitm
	}
	for name, r := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			checkMatchesSlog(t, &r)
		})
	}
}

// FuzzJSONMatchesSlog: whatever the record holds, the JSON sink writes
// what slog wrote.
func FuzzJSONMatchesSlog(f *testing.F) {
	for _, s := range jsonEdgeStrings {
		f.Add(s, "192.0.2.7", s, s, s, int64(80), true, s, s, "", s, uint8(1), true, s, s, int64(200), int64(1), int64(2), int64(12345678), s, s, s, s, s, s, s, s, "[::1]:443", s,
			int64(1727582400), int64(123456789), int64(7200), false)
	}
	f.Add("http", "fe80::1%eth0", "GET", "www.example.test", "/", int64(-1), false, "", "", "*.example.test", "", uint8(0), false, "", "", int64(0),
		int64(0), int64(0), int64(-1), "", "", "", "", "", "", "", "", "", "", int64(-62135596800), int64(0), int64(0), true)
	f.Add("http", "", "", "", "", int64(0), true, "", "", "", "", uint8(2), false, "", "", int64(0),
		int64(0), int64(0), int64(999), "", "", "x", "", "", "", "", "transparent", "bogus", "", int64(253402300800), int64(0), int64(-60), false)
	f.Fuzz(func(t *testing.T, kind, client, method, host, path string, port int64,
		decided bool, vendor, category, pattern, signature string, action uint8, reported bool, group, rejected string,
		status, sent, received, duration int64, policy, sni, sniResult, sniRetry, closed, cutRule, errClass, mode, dst, hostVerify string,
		unix, nsec, zone int64, zeroTime bool) {
		r := accesslog.Record{
			Time: time.Unix(unix, nsec).In(time.FixedZone("", int(zone%(100*3600)))),
			Kind: kind, Method: method, Host: host, Port: int(port), Path: path,
			Decided: decided, Decision: rules.Decision{Vendor: vendor, Category: category, Pattern: pattern, Signature: signature,
				RuleName: policy, Action: rules.Action(action), Reported: reported, ClientGroup: group},
			Rejected: rejected, Status: int(status), Sent: sent, Received: received, Duration: time.Duration(duration),
			Policy: policy, SNI: sni, SNIResult: sniResult, SNIRetry: sniRetry, Closed: closed, CutRule: cutRule, Error: errClass,
			Mode: mode, HostVerify: hostVerify,
		}
		if zeroTime {
			r.Time = time.Time{}
		}
		// Invalid addresses stay the zero value, as the proxy leaves them.
		r.Client, _ = netip.ParseAddr(client)
		r.OriginalDst, _ = netip.ParseAddrPort(dst)
		checkMatchesSlog(t, &r)
	})
}

// benchRecord is an ordinary decided request, as the proxy logs one per
// request.
func benchRecord() *accesslog.Record {
	return &accesslog.Record{
		Time: time.Date(2024, 9, 29, 4, 0, 0, 123456789, time.UTC), Kind: accesslog.KindHTTP,
		Client: netip.MustParseAddr("10.1.2.3"), Method: "GET", Host: "www.example.test", Port: 80,
		Path: "/bases/av/kdb/i386/dailyc.kdc", Decided: true,
		Decision: rules.Decision{Vendor: "kaspersky", Category: "update", Pattern: "*.upd.kaspersky.com", RuleName: "updates-cutoff", Action: rules.Allow},
		Status:   200, Sent: 312, Received: 48213, Duration: 12345678 * time.Nanosecond, Policy: "default",
	}
}

// TestJSONAllocs: a record costs the JSON sink no allocation once its
// buffer pool is warm.
func TestJSONAllocs(t *testing.T) {
	j := accesslog.NewJSON(io.Discard)
	recs := []*accesslog.Record{benchRecord(), {}, {
		Time: time.Now(), Kind: accesslog.KindTransparent, Client: netip.MustParseAddr("fe80::1%eth0"), Host: strings.Repeat("\xff<\u2028\"", 100),
		Mode: accesslog.ModeTransparent, OriginalDst: netip.MustParseAddrPort("[fe80::2%eth1]:443"), SNIResult: "match", SNI: "a\tb",
	}}
	for _, r := range recs {
		if n := testing.AllocsPerRun(1000, func() { j.Write(r) }); n != 0 {
			t.Errorf("%v allocations per Write of %+v; want 0", n, r)
		}
	}
}

// BenchmarkJSONWrite is one ordinary record: the sink runs once per
// request.
func BenchmarkJSONWrite(b *testing.B) {
	j := accesslog.NewJSON(io.Discard)
	rec := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		if err := j.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
}
