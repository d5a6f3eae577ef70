package report

import (
	"bytes"
	"errors"
)

// squidLine is one line of Squid's native access.log (logformat squid):
//
//	time.ms elapsed client code/status bytes method URL user hierarchy/peer type
//
// as slices of the line.
type squidLine struct {
	t      int64 // Unix nanoseconds
	client []byte
	method []byte
	bytes  int64 // what went to the client
	// host, port and path are the URL's target: a CONNECT's host:port,
	// or an absolute URL's host, port (the scheme's if none) and path
	// without the query.
	host    []byte
	port    int
	path    []byte
	connect bool
}

// scanSquid parses a Squid access.log line. The reasons it gives are for
// a line that is not one, so they say what the line lacks.
func scanSquid(line []byte, s *squidLine) error {
	var f [10][]byte
	n := 0
	for i := 0; i < len(line) && n < len(f); {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if j > i {
			f[n] = line[i:j]
			n++
		}
		i = j
	}
	if n < len(f) {
		return errors.New("neither a JSON record nor a Squid access.log line (fewer than 10 fields)")
	}
	*s = squidLine{}
	sec, frac, ok := bytes.Cut(f[0], []byte("."))
	if !ok || len(sec) == 0 || len(sec) > 12 || len(frac) != 3 || !allDigits(sec) || !allDigits(frac) {
		return errors.New("neither a JSON record nor a Squid access.log line (no time.ms first)")
	}
	s.t = parseInt(sec)*1e9 + parseInt(frac)*1e6
	code, status, ok := bytes.Cut(f[3], []byte("/"))
	if !allDigits(f[1]) || !ok || len(code) == 0 || len(status) != 3 || !allDigits(status) || !allDigits(f[4]) {
		return errors.New("neither a JSON record nor a Squid access.log line (no elapsed, code/status and bytes)")
	}
	s.client, s.bytes, s.method = f[2], parseInt(f[4]), f[5]
	if err := s.target(f[6]); err != nil {
		return err
	}
	return nil
}

// target reads the URL field.
func (s *squidLine) target(u []byte) error {
	if string(s.method) == "CONNECT" {
		host, port, ok := splitHostPort(u)
		if !ok {
			return errors.New("squid line: a CONNECT whose target is not host:port")
		}
		s.host, s.port, s.connect = host, port, true
		return nil
	}
	scheme, rest, ok := bytes.Cut(u, []byte("://"))
	if !ok {
		// Squid logs requests it could not parse as error:...
		return errors.New("squid line without a target URL (" + string(truncate(u, 40)) + ")")
	}
	end := len(rest)
	if k := bytes.IndexAny(rest, "/?#"); k >= 0 {
		end = k
	}
	auth := rest[:end]
	if at := bytes.LastIndexByte(auth, '@'); at >= 0 {
		auth = auth[at+1:]
	}
	defPort := 0
	switch string(bytes.ToLower(scheme)) {
	case "http":
		defPort = 80
	case "https":
		defPort = 443
	case "ftp":
		defPort = 21
	}
	host, port := auth, defPort
	if h, p, ok := splitHostPort(auth); ok {
		host, port = h, p
	} else if len(auth) > 1 && auth[0] == '[' && auth[len(auth)-1] == ']' {
		host = auth[1 : len(auth)-1]
	}
	if len(host) == 0 {
		return errors.New("squid line: a URL without a host")
	}
	path := rest[end:]
	if k := bytes.IndexAny(path, "?#"); k >= 0 {
		path = path[:k]
	}
	if len(path) == 0 {
		path = []byte("/")
	}
	s.host, s.port, s.path = host, port, path
	return nil
}

// splitHostPort splits host:port or [v6]:port with a decimal port.
func splitHostPort(b []byte) (host []byte, port int, ok bool) {
	i := bytes.LastIndexByte(b, ':')
	if i < 0 || i == len(b)-1 || !allDigits(b[i+1:]) || len(b)-i-1 > 5 {
		return nil, 0, false
	}
	host = b[:i]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	} else if bytes.IndexByte(host, ':') >= 0 {
		return nil, 0, false
	}
	port = int(parseInt(b[i+1:]))
	if len(host) == 0 || port > 65535 {
		return nil, 0, false
	}
	return host, port, true
}

func allDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
