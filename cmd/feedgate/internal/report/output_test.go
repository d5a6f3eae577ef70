package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
)

// TestWriteJSON: the keys the issue names are there, with the fields of
// their rows.
func TestWriteJSON(t *testing.T) {
	t.Parallel()
	res := run(t, Options{Policy: builtinPolicy(t)}, "feedgate.log", "squid.log")
	var b bytes.Buffer
	if err := WriteJSON(&b, res); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, k := range []string{"records", "days", "clients", "hosts", "signature_hosts", "cutoffs", "verification", "malformed", "inputs"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no key %q", k)
		}
	}
	if m["records"] != float64(21) {
		t.Errorf("records = %v; want 21", m["records"])
	}
	rowKeys := map[string][]string{
		"days":    {"date", "vendor", "category", "action", "requests"},
		"clients": {"client", "vendor", "category", "first_seen", "last_seen", "requests"},
		"cutoffs": {"rule", "at", "vendor", "categories", "requests", "blocked", "allowed", "allowed_by", "covered", "statement"},
	}
	for table, keys := range rowKeys {
		rows, _ := m[table].([]any)
		if len(rows) == 0 {
			t.Errorf("%s: no rows", table)
			continue
		}
		for _, k := range keys {
			if _, ok := rows[0].(map[string]any)[k]; !ok {
				t.Errorf("%s rows have no %q: %v", table, k, rows[0])
			}
		}
	}
	// An empty report has empty lists, not nulls.
	r, _ := New(Options{Policy: builtinPolicy(t)})
	b.Reset()
	WriteJSON(&b, r.Result())
	for _, k := range []string{`"days": []`, `"clients": []`, `"hosts": []`, `"signature_hosts": []`, `"first": []`, `"chains": []`} {
		if !strings.Contains(b.String(), k) {
			t.Errorf("an empty report has no %s:\n%s", k, b.String())
		}
	}
}

// TestWriteCSV: every table, under its "# table:" line, parses as CSV
// with its header and a row per row of the result.
func TestWriteCSV(t *testing.T) {
	t.Parallel()
	res := run(t, Options{Policy: builtinPolicy(t)}, "feedgate.log", "squid.log")
	var b bytes.Buffer
	if err := WriteCSV(&b, res); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(b.String(), "\n\n")
	if len(parts) != len(Tables()) {
		t.Fatalf("%d tables; want %d:\n%s", len(parts), len(Tables()), b.String())
	}
	rows := map[string]int{"days": len(res.Days), "clients": len(res.Clients), "hosts": len(res.Hosts),
		"signature_hosts": len(res.SignatureHosts), "cutoffs": len(res.Cutoffs)}
	for i, part := range parts {
		name := Tables()[i]
		head, body, _ := strings.Cut(part, "\n")
		if head != "# table: "+name {
			t.Errorf("table %d starts with %q; want # table: %s", i, head, name)
		}
		recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(recs) != rows[name]+1 {
			t.Errorf("%s: %d rows; want a header and %d", name, len(recs), rows[name])
		}
	}
	if !strings.Contains(b.String(), "updates-cutoff,2024-09-29T00:00:00-04:00,,kaspersky,update licensing ksn telemetry portal store web,11,8,3,sales-cutoff-flag=1 threat-intel-exempt=2,3,true,") {
		t.Errorf("no updates-cutoff row as expected:\n%s", b.String())
	}
	if err := WriteCSVTable(&b, res, "nope"); err == nil {
		t.Error("WriteCSVTable of an unknown table: no error")
	}
}
