package rules

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Target is a request target given on a command line: a host, host:port or
// URL, turned into the fields a Request needs.
type Target struct {
	Input string
	Host  string
	Port  int
	Path  string
}

// ParseTarget parses a host ("www.kaspersky.com", taken as a CONNECT to port
// 443, which is what update agents mostly do), a "host:port", or a URL
// ("http://host/path", with the scheme's default port). "host/path" without
// a scheme is read as http://host/path.
func ParseTarget(s string) (Target, error) {
	t := Target{Input: s}
	in := s
	if !strings.Contains(in, "://") && strings.Contains(in, "/") {
		in = "http://" + in
	}
	if strings.Contains(in, "://") {
		u, err := url.Parse(in)
		if err != nil {
			return t, fmt.Errorf("target %q: %w", s, err)
		}
		switch u.Scheme {
		case "http":
			t.Port = 80
		case "https":
			t.Port = 443
		default:
			return t, fmt.Errorf("target %q: unsupported scheme %q (want http or https)", s, u.Scheme)
		}
		t.Host, t.Path = u.Hostname(), u.Path
		if p := u.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || n > 65535 {
				return t, fmt.Errorf("target %q: invalid port %q", s, p)
			}
			t.Port = n
		}
		if t.Path == "" {
			t.Path = "/"
		}
	} else if h, p, err := net.SplitHostPort(in); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return t, fmt.Errorf("target %q: invalid port %q", s, p)
		}
		t.Host, t.Port = h, n
	} else {
		t.Host, t.Port = strings.Trim(in, "[]"), 443
	}
	if t.Host == "" {
		return t, fmt.Errorf("target %q: no host", s)
	}
	return t, nil
}

// ParseInstant parses an instant given on a command line: RFC 3339, or a
// local date-time or date in loc ("2024-09-29T00:00:00", "2024-09-29").
func ParseInstant(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want RFC 3339 such as 2024-09-28T23:59:55-04:00", s)
}
