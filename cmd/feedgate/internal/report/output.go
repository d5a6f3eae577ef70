package report

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WriteJSON writes the report as one indented JSON object.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("report: writing JSON: %w", err)
	}
	return nil
}

// Tables returns the names of the CSV tables, in the order WriteCSV
// writes them.
func Tables() []string {
	return []string{"days", "clients", "hosts", "signature_hosts", "cutoffs"}
}

// WriteCSV writes every table to w, each preceded by a "# table: NAME"
// line and followed by a blank line.
func WriteCSV(w io.Writer, r *Result) error {
	for i, t := range Tables() {
		if i > 0 {
			if _, err := io.WriteString(w, "\n"); err != nil {
				return fmt.Errorf("report: writing CSV: %w", err)
			}
		}
		if _, err := fmt.Fprintf(w, "# table: %s\n", t); err != nil {
			return fmt.Errorf("report: writing CSV: %w", err)
		}
		if err := WriteCSVTable(w, r, t); err != nil {
			return err
		}
	}
	return nil
}

// WriteCSVTable writes one table (one of Tables) as CSV with a header
// row. Times are RFC 3339 in the policy's timezone.
func WriteCSVTable(w io.Writer, r *Result, table string) error {
	cw := csv.NewWriter(w)
	i64 := func(n int64) string { return strconv.FormatInt(n, 10) }
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339)
	}
	var rows [][]string
	switch table {
	case "days":
		rows = append(rows, []string{"date", "vendor", "category", "action", "requests", "bytes_sent", "bytes_received"})
		for _, d := range r.Days {
			rows = append(rows, []string{d.Date, d.Vendor, d.Category, d.Action, i64(d.Requests), i64(d.BytesSent), i64(d.BytesReceived)})
		}
	case "clients":
		rows = append(rows, []string{"client", "vendor", "category", "first_seen", "last_seen", "requests", "last_action", "last_rule"})
		for _, c := range r.Clients {
			rows = append(rows, []string{c.Client, c.Vendor, c.Category, ts(c.FirstSeen), ts(c.LastSeen), i64(c.Requests), c.LastAction, c.LastRule})
		}
	case "hosts", "signature_hosts":
		hosts := r.Hosts
		if table == "signature_hosts" {
			hosts = r.SignatureHosts
		}
		rows = append(rows, []string{"host", "vendor", "category", "signature", "requests", "allowed", "clients"})
		for _, h := range hosts {
			rows = append(rows, []string{h.Host, h.Vendor, h.Category, h.Signature, i64(h.Requests), i64(h.Allowed), i64(h.Clients)})
		}
	case "cutoffs":
		rows = append(rows, []string{"rule", "at", "until", "vendor", "categories", "requests", "blocked", "allowed", "allowed_by", "from_squid", "covered", "statement"})
		for _, c := range r.Cutoffs {
			by := slices.SortedFunc(maps.Keys(c.AllowedBy), func(a, b string) int { return cmp.Compare(a, b) })
			for i, name := range by {
				by[i] = name + "=" + i64(c.AllowedBy[name])
			}
			rows = append(rows, []string{c.Rule, ts(c.At), ts(c.Until), c.Vendor, strings.Join(c.Category, " "), i64(c.Requests), i64(c.Blocked),
				i64(c.Allowed), strings.Join(by, " "), i64(c.FromSquid), strconv.FormatBool(c.Covered), c.Statement})
		}
	default:
		return fmt.Errorf("report: no table %q (want one of %s)", table, strings.Join(Tables(), ", "))
	}
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("report: writing CSV table %s: %w", table, err)
	}
	return nil
}
