package config

import (
	"errors"
	"math"
	"net"
	"strconv"
)

// Transparent is the transparent listeners' setup: where they listen,
// whether they are TPROXY sockets, and the mark on feedgate's own upstream
// sockets. It is read at start only.
type Transparent struct {
	// Listen are the transparent listeners' addresses (transparent); the
	// -transparent flags add to them.
	Listen []string
	// TProxy makes them TPROXY sockets (transparent_tproxy): the local
	// address of a connection is its original destination.
	TProxy bool
	// Mark is set as SO_MARK on every upstream socket (transparent_mark)
	// so that the firewall can leave feedgate's own traffic alone; 0 sets
	// none.
	Mark int
}

// Host verification modes (transparent_verify): what to do when the name a
// transparent connection sent does not resolve to where it was going.
const (
	VerifyLog    = "log"
	VerifyStrict = "strict"
)

// parseTransparent validates the transparent_ keys.
func (f *fileCtx) parseTransparent(sf *file) (Transparent, string) {
	t := Transparent{TProxy: sf.TransparentTProxy}
	for _, a := range sf.Transparent {
		if err := checkListenAddr(a); err != nil {
			f.errorf("transparent", "transparent %q: %v", a, err)
			continue
		}
		t.Listen = append(t.Listen, a)
	}
	verify := VerifyLog
	switch sf.TransparentVerify {
	case "", VerifyLog:
	case VerifyStrict:
		verify = VerifyStrict
	default:
		f.errorf("transparent_verify", "unknown transparent_verify %q: want %q or %q", sf.TransparentVerify, VerifyLog, VerifyStrict)
	}
	switch m := sf.TransparentMark; {
	case m < 0 || m > math.MaxUint32:
		f.errorf("transparent_mark", "transparent_mark %d: want 0 (none) to %d", m, uint32(math.MaxUint32))
	default:
		t.Mark = int(m)
	}
	return t, verify
}

// checkListenAddr checks a listen address: host:port with a numeric port
// and, if the host is given, an IP address (a listener binds addresses,
// and a name would be resolved behind the operator's back).
func checkListenAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New(`want IP:PORT, such as "0.0.0.0:3129" or "[::]:3129"`)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New(`want IP:PORT, such as "0.0.0.0:3129" or "[::]:3129"`)
	}
	if host != "" && net.ParseIP(host) == nil {
		return errors.New(`want IP:PORT, such as "0.0.0.0:3129" or "[::]:3129"`)
	}
	return nil
}
