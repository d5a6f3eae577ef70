package accesslog

import (
	"io"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/feedgate/feedgate/rules"
)

// JSON writes each record as one JSON object per line: "time", "level"
// (INFO, or WARN if Flagged), "msg" ("request"), then the record's fields
// (see docs/decision-log.md).
//
// The lines are byte for byte what log/slog's JSON handler wrote for the
// same record, which this sink went through until its attributes and
// handler showed in CPU profiles of a busy proxy: the log's readers see
// no change. json_test.go keeps the slog encoding as the reference the
// sink is tested against.
type JSON struct {
	mu sync.Mutex
	w  io.Writer
	// line is the buffer records are encoded into, under mu, so that a
	// record costs no allocation (a sync.Pool would allocate under the
	// race detector, which drops pooled items at random, and encoding
	// takes a fraction of what the write under the same lock takes).
	line []byte
}

// NewJSON writes JSON lines to w.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// maxKeptLine is the largest line buffer kept for reuse: a record with a
// huge path does not keep its buffer alive.
const maxKeptLine = 64 << 10

// Write implements Sink. Each record is one call to the underlying
// writer, as it was with slog.
func (j *JSON) Write(r *Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	line := appendJSONLine(j.line[:0], r)
	_, err := j.w.Write(line)
	if cap(line) <= maxKeptLine {
		j.line = line
	}
	return err
}

// appendJSONLine appends the record's line, newline included. Fields that
// do not apply are left out.
func appendJSONLine(b []byte, r *Record) []byte {
	b = append(b, '{')
	// slog leaves out a zero time, and the separator with it.
	if !r.Time.IsZero() {
		b = append(b, `"time":`...)
		b = appendJSONTime(b, r.Time)
		b = append(b, ',')
	}
	if r.Flagged() {
		b = append(b, `"level":"WARN"`...)
	} else {
		b = append(b, `"level":"INFO"`...)
	}
	b = append(b, `,"msg":"request","kind":`...)
	b = appendJSONString(b, r.Kind)
	b = append(b, `,"client":`...)
	b = appendJSONAddr(b, r.Client)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, r.Host)
	b = append(b, `,"port":`...)
	b = strconv.AppendInt(b, int64(r.Port), 10)
	if r.HasPath() {
		b = append(b, `,"path":`...)
		b = appendJSONString(b, r.Path)
	}
	if r.Decided {
		d := &r.Decision
		b = append(b, `,"vendor":`...)
		b = appendJSONString(b, d.Vendor)
		b = append(b, `,"category":`...)
		b = appendJSONString(b, d.Category)
		// What classified the request: a catalog host pattern, or a
		// signature on its path, which also finds the hosts that are not
		// the vendor's (internal update mirrors).
		if m := d.MatchedBy(); m != "" {
			b = append(b, `,"match":`...)
			b = appendJSONString(b, m)
			if d.Signature != "" {
				b = append(b, `,"signature":`...)
				b = appendJSONString(b, d.Signature)
			}
		}
		b = append(b, `,"rule":`...)
		b = appendJSONString(b, d.RuleName)
		b = append(b, `,"action":`...)
		b = appendJSONString(b, d.Action.String())
		b = append(b, `,"flagged":`...)
		b = strconv.AppendBool(b, d.Action == rules.Log)
		if d.Reported {
			b = append(b, `,"report_only":true`...)
		}
		if d.ClientGroup != "" {
			b = append(b, `,"client_group":`...)
			b = appendJSONString(b, d.ClientGroup)
		}
	}
	if r.Rejected != "" {
		b = append(b, `,"rejected":`...)
		b = appendJSONString(b, r.Rejected)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"bytes_sent":`...)
	b = strconv.AppendInt(b, r.Sent, 10)
	b = append(b, `,"bytes_received":`...)
	b = strconv.AppendInt(b, r.Received, 10)
	b = append(b, `,"duration_seconds":`...)
	b = appendJSONFloat(b, r.Duration.Seconds())
	b = append(b, `,"policy":`...)
	b = appendJSONString(b, r.Policy)
	if r.SNIResult != "" {
		b = append(b, `,"sni":`...)
		b = appendJSONString(b, r.SNI)
		b = append(b, `,"sni_result":`...)
		b = appendJSONString(b, r.SNIResult)
	}
	if r.SNIRetry != "" {
		b = append(b, `,"sni_retry":`...)
		b = appendJSONString(b, r.SNIRetry)
	}
	if r.Closed != "" {
		b = append(b, `,"closed":`...)
		b = appendJSONString(b, r.Closed)
	}
	if r.CutRule != "" {
		b = append(b, `,"cut_rule":`...)
		b = appendJSONString(b, r.CutRule)
	}
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, r.Error)
	}
	if r.Mode != "" {
		b = append(b, `,"mode":`...)
		b = appendJSONString(b, r.Mode)
		b = append(b, `,"original_dst":`...)
		b = appendJSONAddrPort(b, r.OriginalDst)
		if r.HostVerify != "" {
			b = append(b, `,"host_verify":`...)
			b = appendJSONString(b, r.HostVerify)
		}
	}
	return append(b, "}\n"...)
}

// appendJSONTime appends t as slog does: RFC 3339 with nanoseconds, in
// t's zone. For a year RFC 3339 cannot write slog puts an error string
// before the time, which makes the line invalid JSON; a clock that far
// off is kept as slog logged it rather than made to look valid.
func appendJSONTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y >= 10000 {
		b = append(b, `"!ERROR:time.Time year outside of range [0,9999]"`...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONFloat appends f as encoding/json does, which is how slog
// writes floats: like ES6, with an exponent below 1e-6 and from 1e21.
// f is a duration in seconds, so never NaN or infinite, which JSON has
// no number for.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONAddr appends a's text as a JSON string, "" if a is not valid.
// Only an IPv6 zone can hold characters that need escaping.
func appendJSONAddr(b []byte, a netip.Addr) []byte {
	b = append(b, '"')
	b = appendJSONAddrText(b, a)
	return append(b, '"')
}

// appendJSONAddrPort appends ap's text as a JSON string, "" if ap is not
// valid (a connection to the transparent port itself), where
// AddrPort.String would write "invalid AddrPort".
func appendJSONAddrPort(b []byte, ap netip.AddrPort) []byte {
	b = append(b, '"')
	if a := ap.Addr(); a.IsValid() {
		if a.Is6() {
			b = append(b, '[')
			b = appendJSONAddrText(b, a)
			b = append(b, ']')
		} else {
			b = a.AppendTo(b)
		}
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	}
	return append(b, '"')
}

// appendJSONAddrText appends a's text, escaped for inside a JSON string.
func appendJSONAddrText(b []byte, a netip.Addr) []byte {
	zone := a.Zone()
	b = a.WithZone("").AppendTo(b)
	if zone != "" {
		b = append(b, '%')
		b = appendJSONEscaped(b, zone)
	}
	return b
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONEscaped(b, s)
	return append(b, '"')
}

// appendJSONEscaped appends s escaped as slog escapes strings (its
// appendEscapedJSONString, from encoding/json without HTML escaping): <, >
// and & as they are; control characters, quotes and backslashes escaped;
// each invalid UTF-8 byte as \ufffd; U+2028 and U+2029 escaped, for
// JavaScript's sake.
func appendJSONEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	// Most strings of a record are plain ASCII throughout.
	for i := plainPrefix(s); i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// plainPrefix returns the length of the longest prefix of s that a JSON
// string holds as it is: ASCII without control characters, quotes or
// backslashes. It tests eight bytes at a time with the "has a byte less
// than" test of Bit Twiddling Hacks: once no byte of x has its high bit
// set, subtracting n from every byte of x sets a high bit if and only if
// some byte is less than n (borrows only set more of them, above it).
// Where x has a quote, x^'"' has a byte less than 1; likewise for
// backslashes.
func plainPrefix(s string) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		if (x|(x-ones*' ')|((x^(ones*'"'))-ones)|((x^(ones*'\\'))-ones))&highs != 0 {
			break
		}
	}
	for i < len(s) && s[i] >= ' ' && s[i] < utf8.RuneSelf && s[i] != '"' && s[i] != '\\' {
		i++
	}
	return i
}
