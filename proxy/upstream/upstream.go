// Package upstream is everything that connects feedgate to the next hop:
// the dialer (with -resolve overrides and the destination policy), the
// parent proxy (upstream_proxy), and the pool of plain-HTTP upstream
// connections. It knows nothing of clients, decisions or records; the
// proxy core asks it for connections and round trips.
package upstream
