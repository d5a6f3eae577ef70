package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
)

// ClientsReply is the body of GET /api/v1/clients, which feedgate clients
// reads.
type ClientsReply struct {
	Clients     []inventory.Entry `json:"clients"`
	Count       int               `json:"count"` // len(Clients): entries after filtering
	Evictions   uint64            `json:"evictions"`
	GeneratedAt time.Time         `json:"generated_at"`
}

type errorReply struct {
	Error string `json:"error"`
}

// clientsHandler serves GET /api/v1/clients: the inventory as JSON
// {"clients":[...], "count":N, "evictions":E, "generated_at":...}, filtered
// by the query parameters vendor, category, match ("host", or "signature"
// for the requests a catalog signature found on hosts that are not the
// vendor's), action (the last action: allow, log or block), client (an IP
// address) and since (RFC 3339, or a Go duration such as "24h" meaning
// that long before now), as the status page filters it. The handler does
// not look at the path: the caller mounts it where it belongs.
func clientsHandler(inv *inventory.Inventory) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, r, http.StatusMethodNotAllowed, errorReply{fmt.Sprintf("method %s not allowed: use GET", r.Method)})
			return
		}
		q, err := query(r)
		var f inventory.Filter
		now := inv.Now()
		if err == nil {
			f, err = clientsFilter(q, now)
		}
		if err != nil {
			writeJSON(w, r, http.StatusBadRequest, errorReply{err.Error()})
			return
		}
		clients, evictions := inv.SnapshotWithEvictions(f)
		writeJSON(w, r, http.StatusOK, ClientsReply{
			Clients:     clients,
			Count:       len(clients),
			Evictions:   evictions,
			GeneratedAt: now,
		})
	}
}

// clientsFilter reads an inventory filter from q: vendor, category, match
// ("host" or "signature"), action (the last action), client (an IP
// address) and since. The API and the status page read it alike.
func clientsFilter(q url.Values, now time.Time) (inventory.Filter, error) {
	f := inventory.Filter{Vendor: q.Get("vendor"), Category: q.Get("category"), Match: q.Get("match"), Action: q.Get("action")}
	if f.Match != "" && f.Match != rules.MatchHost && f.Match != rules.MatchSignature {
		return f, fmt.Errorf("match %q: want %q or %q", f.Match, rules.MatchHost, rules.MatchSignature)
	}
	switch f.Action {
	case "", "allow", "log", "block":
	default:
		return f, fmt.Errorf("action %q: want allow, log or block (the last action)", f.Action)
	}
	if s := q.Get("client"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return f, fmt.Errorf("client %q: want an IP address", s)
		}
		f.Client = a
	}
	if s := q.Get("since"); s != "" {
		var err error
		if f.Since, err = parseSince(s, now); err != nil {
			return f, err
		}
	}
	return f, nil
}

// parseSince parses the since parameter: an RFC 3339 time, or a duration
// back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time such as 2024-09-29T00:00:00Z or a duration such as 24h", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("since %q: a duration back from now cannot be negative", s)
	}
	return now.Add(-d), nil
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Entries hold only strings, numbers, addresses and times; this
		// is a bug, and the client should still get JSON.
		status = http.StatusInternalServerError
		body = []byte(`{"error":"encoding the response failed"}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		// An error means the client went away; there is no one to tell.
		_, _ = w.Write(body)
	}
}
