package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"
)

// jsonLine is what the report reads of one feedgate JSON line: the values
// of the top-level keys it needs, as slices of the line (or of dec, for a
// string that had escapes). Everything else is skipped unread.
type jsonLine struct {
	time, msg, client, host, vendor, category, match, signature, rule, action, instance, rejected []byte
	sent, received                                                                                int64
	// dec holds the decoded strings of values that had escapes; it is
	// reused from line to line.
	dec []byte
}

var (
	errNotObject = errors.New("not a JSON object")
	errSyntax    = errors.New("JSON syntax error")
)

// scanJSON reads the top-level "key":value pairs of line into l. It
// allocates nothing unless a wanted string has an escape: decision
// records are written by one writer in one shape, and decoding each into
// a map or struct with encoding/json would cost several times the rest of
// the report (feedgate report reads millions of them).
func scanJSON(line []byte, l *jsonLine) error {
	*l = jsonLine{dec: l.dec[:0]}
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return errNotObject
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return trailing(line, i+1)
	}
	for {
		if i >= len(line) || line[i] != '"' {
			return errSyntax
		}
		kEnd, kEsc, ok := stringEnd(line, i+1)
		if !ok {
			return errSyntax
		}
		key := line[i+1 : kEnd]
		if kEsc {
			// No key of a record has an escape; such a key is none
			// of the wanted ones, so its value is skipped.
			key = nil
		}
		i = skipSpace(line, kEnd+1)
		if i >= len(line) || line[i] != ':' {
			return errSyntax
		}
		i = skipSpace(line, i+1)
		if i >= len(line) {
			return errSyntax
		}
		var err error
		if line[i] == '"' {
			end, esc, ok := stringEnd(line, i+1)
			if !ok {
				return errSyntax
			}
			if dst := l.stringField(key); dst != nil {
				v := line[i+1 : end]
				if esc {
					if v, err = l.unescape(line[i : end+1]); err != nil {
						return err
					}
				}
				*dst = v
			}
			i = end + 1
		} else {
			end, err := valueEnd(line, i)
			if err != nil {
				return err
			}
			switch string(key) {
			case "bytes_sent":
				l.sent = parseInt(line[i:end])
			case "bytes_received":
				l.received = parseInt(line[i:end])
			}
			i = end
		}
		i = skipSpace(line, i)
		if i >= len(line) {
			return errSyntax
		}
		switch line[i] {
		case ',':
			i = skipSpace(line, i+1)
		case '}':
			return trailing(line, i+1)
		default:
			return errSyntax
		}
	}
}

// stringField returns where the string value of key goes, nil for a key
// the report does not read.
func (l *jsonLine) stringField(key []byte) *[]byte {
	switch string(key) {
	case "time":
		return &l.time
	case "msg":
		return &l.msg
	case "client":
		return &l.client
	case "host":
		return &l.host
	case "vendor":
		return &l.vendor
	case "category":
		return &l.category
	case "match":
		return &l.match
	case "signature":
		return &l.signature
	case "rule":
		return &l.rule
	case "action":
		return &l.action
	case "instance":
		return &l.instance
	case "rejected":
		return &l.rejected
	}
	return nil
}

// unescape decodes the quoted JSON string q into l.dec and returns it.
// It is the rare path (a host or path with characters JSON escapes), so
// it may allocate.
func (l *jsonLine) unescape(q []byte) ([]byte, error) {
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return nil, errSyntax
	}
	start := len(l.dec)
	l.dec = append(l.dec, s...)
	// Earlier fields may point into dec: appending must not move them,
	// so a grown dec is a new array and the old one stays theirs.
	return l.dec[start:len(l.dec):len(l.dec)], nil
}

// trailing checks that only white space follows the object.
func trailing(line []byte, i int) error {
	if skipSpace(line, i) != len(line) {
		return errSyntax
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index of the quote that closes the string whose
// first byte is at i, and whether the string has an escape.
func stringEnd(b []byte, i int) (end int, esc, ok bool) {
	start := i
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return 0, false, false
		}
		end = i + q
		// The quote is escaped if an odd number of backslashes
		// precede it.
		n := 0
		for j := end - 1; j >= start && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return end, bytes.IndexByte(b[start:end], '\\') >= 0, true
		}
		i = end + 1
	}
}

// valueEnd returns the index just past the non-string value at i: a
// number or literal, or a nested object or array, which the report does
// not read but must step over.
func valueEnd(b []byte, i int) (int, error) {
	switch b[i] {
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			case '"':
				end, _, ok := stringEnd(b, j+1)
				if !ok {
					return 0, errSyntax
				}
				j = end
			}
		}
		return 0, errSyntax
	}
	j := i
	for j < len(b) {
		c := b[j]
		if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			break
		}
		j++
	}
	if j == i {
		return 0, errSyntax
	}
	return j, nil
}

// parseInt parses a non-negative decimal integer; anything else (a
// fraction, a sign, garbage) is 0, as a byte count the report cannot
// read.
func parseInt(b []byte) int64 {
	if len(b) == 0 || len(b) > 18 {
		return 0
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// parseTime parses an RFC 3339 time as the decision log writes it
// (2024-09-29T04:00:00.123456789Z or with an offset) into Unix
// nanoseconds, without time.Parse's generality: it is on the path of
// every record. Other forms fall back to time.Parse.
func parseTime(b []byte) (int64, bool) {
	// YYYY-MM-DDTHH:MM:SS is 19 bytes, then a fraction, then Z or ±hh:mm.
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return slowTime(b)
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 59 {
		return slowTime(b)
	}
	i := 19
	var nanos int64
	if b[i] == '.' {
		i++
		scale := int64(100000000)
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if scale > 0 {
				nanos += int64(b[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == start {
			return slowTime(b)
		}
	}
	var offset int64
	switch {
	case i == len(b)-1 && b[i] == 'Z':
	case i == len(b)-6 && (b[i] == '+' || b[i] == '-') && b[i+3] == ':':
		oh, ok1 := digits(b[i+1 : i+3])
		om, ok2 := digits(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return slowTime(b)
		}
		offset = int64(oh*3600 + om*60)
		if b[i] == '-' {
			offset = -offset
		}
	default:
		return slowTime(b)
	}
	if day > daysIn(month, year) {
		return slowTime(b)
	}
	secs := daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec) - offset
	return secs*1e9 + nanos, true
}

// slowTime is parseTime's general case.
func slowTime(b []byte) (int64, bool) {
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days from 1970-01-01 to the proleptic
// Gregorian date (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}
