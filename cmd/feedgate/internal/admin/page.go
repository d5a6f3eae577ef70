package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/feedgate/feedgate/proxy/activity"
	"github.com/feedgate/feedgate/proxy/inventory"
	"github.com/feedgate/feedgate/rules"
)

// The page is server-rendered from these templates; static holds its one
// style sheet and one small script, served from here so that the page
// loads nothing from elsewhere.
//
//go:embed web
var webFiles embed.FS

// pageClients bounds the inventory rows one page shows; the JSON API
// has them all.
const pageClients = 200

// pages are the status page's parsed templates. They are parsed once per
// handler, not per request, and never change after.
type pages struct {
	status, client *template.Template
}

func parsePages(loc func() *time.Location) pages {
	funcs := template.FuncMap{
		"tm": func(t time.Time) string {
			if t.IsZero() {
				return "–"
			}
			return t.In(loc()).Format("2006-01-02 15:04:05 MST")
		},
		"rfc":         func(t time.Time) string { return t.Format(time.RFC3339Nano) },
		"countdown":   countdown,
		"actionLabel": actionLabel,
	}
	parse := func(name string) *template.Template {
		return template.Must(template.New(name).Funcs(funcs).ParseFS(webFiles, "web/layout.html", "web/"+name))
	}
	return pages{status: parse("status.html"), client: parse("client.html")}
}

// actionLabel spells an action out, so that the page never relies on
// colour alone.
func actionLabel(a string) string {
	switch a {
	case "block":
		return "BLOCK"
	case "log":
		return "FLAG"
	case "allow":
		return "ALLOW"
	case "rejected":
		return "REJECTED"
	}
	return strings.ToUpper(a)
}

// countdown is the text of a countdown before the script takes over, so
// that the page also says it without JavaScript.
func countdown(seconds float64) string {
	s := int64(math.Ceil(seconds))
	if s <= 0 {
		return "now"
	}
	d, h, m, r := s/86400, s%86400/3600, s%3600/60, s%60
	switch {
	case d > 0:
		return fmt.Sprintf("%dd %dh %dm", d, h, m)
	case h > 0:
		return fmt.Sprintf("%dh %dm %ds", h, m, r)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, r)
	}
	return fmt.Sprintf("%ds", r)
}

// pageData is what the templates read.
type pageData struct {
	Title  string
	Status StatusReply
	// ClockSet says the policy clock is apart from the wall clock (-at).
	ClockSet                 bool
	Refresh                  bool
	RefreshURL, NoRefreshURL string
	Errors                   []string

	Hour, Day chart
	Totals    []totalRow

	CategoryOptions []string
	ClientActions   []string
	SinceOptions    []option
	ClientFilter    struct{ Category, Action, Since string }
	Clients         []inventory.Entry
	ClientsTotal    int

	DecisionActions []string
	DecisionFilter  struct{ Client, Host, Action string }
	Decisions       []activity.Decision

	// Keep are the other form's parameters, so that filtering one list
	// keeps the other's filter.
	Keep struct{ Clients, Decisions map[string]string }

	Client ClientReply
}

type option struct{ Value, Label string }

// totalRow is one vendor category and action's requests in the last hour
// and day.
type totalRow struct {
	Vendor, Category, Action string
	Hour, Day                uint64
}

// base fills what every page shows.
func (d Deps) base(r *http.Request, title string) pageData {
	p := pageData{Title: title, Status: d.status()}
	skew := p.Status.PolicyTime.Sub(p.Status.GeneratedAt)
	p.ClockSet = skew > time.Minute || skew < -time.Minute
	q := r.URL.Query()
	p.Refresh = q.Get("refresh") != "off"
	on, off := url.Values{}, url.Values{}
	for k, v := range q {
		if k != "refresh" {
			on[k], off[k] = v, v
		}
	}
	off.Set("refresh", "off")
	p.RefreshURL = r.URL.Path + "?" + on.Encode()
	p.NoRefreshURL = r.URL.Path + "?" + off.Encode()
	return p
}

// statusPage serves GET /: the status page.
func statusPage(d Deps, t pages) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := d.base(r, "feedgate status: "+d.policy().Name)
		q, err := query(r)
		if err != nil {
			p.Errors = append(p.Errors, err.Error())
			q = url.Values{}
		}
		now := d.wall()
		hour, day := d.Activity.Hour(now), d.Activity.Day(now)
		clock := func(t time.Time) string { return t.In(d.policy().Location).Format("15:04") }
		p.Hour = newChart("Last hour, per minute", "minute", hour, clock, 15)
		p.Day = newChart("Last day, per hour", "hour", day, clock, 6)
		p.Totals = totals(hour.Totals, day.Totals)

		pol := d.policy()
		for i, c := range pol.Classes {
			if i > 0 {
				p.CategoryOptions = append(p.CategoryOptions, c.Vendor+"/"+c.Category)
			}
		}
		p.ClientActions = []string{"block", "log", "allow"}
		p.SinceOptions = []option{{"", "any time"}, {"1h", "the last hour"}, {"24h", "the last day"}, {"168h", "the last week"}, {"720h", "the last 30 days"}}
		p.DecisionActions = []string{"block", "log", "rejected"}
		p.Keep.Clients = map[string]string{}
		p.Keep.Decisions = map[string]string{}
		for _, k := range []string{"d_client", "d_host", "d_action", "refresh"} {
			if v := q.Get(k); v != "" {
				p.Keep.Clients[k] = v
			}
		}
		for _, k := range []string{"c_category", "c_action", "c_since", "refresh"} {
			if v := q.Get(k); v != "" {
				p.Keep.Decisions[k] = v
			}
		}

		p.ClientFilter.Category, p.ClientFilter.Action, p.ClientFilter.Since = q.Get("c_category"), q.Get("c_action"), q.Get("c_since")
		cq := url.Values{"action": {p.ClientFilter.Action}, "since": {p.ClientFilter.Since}}
		var cerr error
		if vendor, category, ok := strings.Cut(p.ClientFilter.Category, "/"); ok {
			cq.Set("vendor", vendor)
			cq.Set("category", category)
		} else if p.ClientFilter.Category != "" {
			cerr = fmt.Errorf("c_category %q: want vendor/category", p.ClientFilter.Category)
		}
		var cf inventory.Filter
		if cerr == nil {
			cf, cerr = clientsFilter(cq, d.Inventory.Now())
		}
		if cerr != nil {
			p.Errors = append(p.Errors, "Clients filter: "+cerr.Error())
		} else {
			p.Clients = d.Inventory.Snapshot(cf)
			p.ClientsTotal = len(p.Clients)
			p.Clients = p.Clients[:min(len(p.Clients), pageClients)]
		}

		p.DecisionFilter.Client, p.DecisionFilter.Host, p.DecisionFilter.Action = q.Get("d_client"), q.Get("d_host"), q.Get("d_action")
		if f, limit, err := decisionsQuery(q, "d_"); err != nil {
			p.Errors = append(p.Errors, "Decisions filter: "+err.Error())
		} else {
			p.Decisions = d.Activity.Latest(f, limit)
		}
		status := http.StatusOK
		if len(p.Errors) > 0 {
			status = http.StatusBadRequest
		}
		render(w, r, status, t.status, p)
	}
}

// clientPage serves GET /clients/{client}: one client's drill-down.
func clientPage(d Deps, t pages) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		addr, err := netip.ParseAddr(r.PathValue("client"))
		if err != nil {
			http.Error(w, fmt.Sprintf("client %q: want an IP address", r.PathValue("client")), http.StatusBadRequest)
			return
		}
		p := d.base(r, "feedgate client "+addr.Unmap().String())
		p.Client = d.client(addr)
		render(w, r, http.StatusOK, t.client, p)
	}
}

// render executes t into a buffer first, so that a template error is a
// clean 500 rather than half a page.
func render(w http.ResponseWriter, r *http.Request, status int, t *template.Template, data pageData) {
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, t.Name(), data); err != nil {
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}

// staticHandler serves the page's style sheet and script.
func staticHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A new build may change them; a page load is rare enough.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
}

// totals joins the hour's and the day's counts by vendor, category and
// action, busiest first, vendor traffic before unclassified traffic.
func totals(hour, day []activity.Count) []totalRow {
	type key struct{ v, c, a string }
	idx := map[key]int{}
	var rows []totalRow
	add := func(c activity.Count, isDay bool) {
		k := key{c.Vendor, c.Category, c.Action}
		i, ok := idx[k]
		if !ok {
			i = len(rows)
			idx[k] = i
			rows = append(rows, totalRow{Vendor: c.Vendor, Category: c.Category, Action: c.Action})
		}
		if isDay {
			rows[i].Day += c.Requests
		} else {
			rows[i].Hour += c.Requests
		}
	}
	for _, c := range hour {
		add(c, false)
	}
	for _, c := range day {
		add(c, true)
	}
	slices.SortStableFunc(rows, func(a, b totalRow) int {
		if an, bn := a.Vendor == rules.NoVendor, b.Vendor == rules.NoVendor; an != bn {
			if an {
				return 1
			}
			return -1
		}
		if a.Day != b.Day {
			if a.Day > b.Day {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Vendor+"/"+a.Category+"/"+a.Action, b.Vendor+"/"+b.Category+"/"+b.Action)
	})
	return rows
}
