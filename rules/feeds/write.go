package feeds

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// Format is an output format for a list of names.
type Format string

// The formats Write produces. Each is a list of names that some other
// enforcement point reads: a firewall, a DNS server or a proxy. None can
// carry a port or a path, and each has its own idea of a wildcard; Write
// documents in the file's header what it could not express.
const (
	// EDL is a plain list, one entry per line, as firewalls fetch it: a
	// Palo Alto external dynamic list of type domain, a FortiGate external
	// resource (domain name), a Check Point custom intelligence feed. An
	// exact host is written as is, "*.suffix" as is, a domain as two lines
	// "example.com" and "*.example.com". PAN-OS accepts '*' only as a whole
	// leading label, so a label wildcard ("dnl-*.geo.kaspersky.com") is
	// written as its parent "*.geo.kaspersky.com" when every name below the
	// parent gets the list's action, and skipped otherwise.
	//
	// The header is '#' comment lines. PAN-OS documents comments for IP
	// lists only; for domain lists it drops lines that are not domains, and
	// every header line holds spaces, so none can be read as a name. Note
	// that PAN-OS also treats a plain entry as matching the names below it
	// ("^name" is its exact form, which other firewalls do not read), so an
	// exact host may match more there than here.
	EDL Format = "edl"
	// Hosts is a hosts file: "0.0.0.0 name" for exact hosts and the apex of
	// domains. A hosts file has no wildcards, so everything else is skipped,
	// and it can only sinkhole a name: Write refuses any action but block.
	Hosts Format = "hosts"
	// Dnsmasq is a dnsmasq configuration file. A blocked name is
	// "address=/name/0.0.0.0" and "address=/name/::"; an allowed or logged
	// name is "server=/name/#", dnsmasq's "resolve as usual", which exempts
	// it from a block of a shorter name. dnsmasq's /name/ matches the name
	// and every name below it: "*.suffix" is written /suffix/ and also
	// matches the suffix itself, and an exact host also matches the names
	// below it. Label wildcards are widened as for EDL, or skipped.
	Dnsmasq Format = "dnsmasq"
	// RPZ is a zone file for a DNS response policy zone (BIND, Unbound,
	// PowerDNS, Knot Resolver), meant to be loaded as zone "rpz.feedgate.".
	// Owner names are relative to the zone. A blocked name is
	// "name CNAME ." (NXDOMAIN); an allowed or logged one is
	// "name CNAME rpz-passthru." (answered as usual, not rewritten by any
	// later policy zone, and logged by BIND). A domain is "name" and
	// "*.name", "*.suffix" is itself; label wildcards are widened as for
	// EDL, or skipped. The SOA serial is the instant in Unix seconds.
	RPZ Format = "rpz"
	// Squid is a file of dstdomain ACL entries: an exact host as is, a
	// domain as ".domain" (Squid's leading dot: the name and every name
	// below it) and "*.suffix" as ".suffix", which also matches the suffix
	// itself. Squid refuses a list holding both "example.com" and
	// ".example.com" and warns about names below a listed ".domain", so
	// entries that a dot entry covers are left out.
	Squid Format = "squid"
)

// Formats returns every format, in the order of this package's constants.
func Formats() []Format { return []Format{EDL, Hosts, Dnsmasq, RPZ, Squid} }

// ParseFormat parses a format name such as "edl".
func ParseFormat(s string) (Format, error) {
	names := make([]string, 0, len(Formats()))
	for _, f := range Formats() {
		if string(f) == s {
			return f, nil
		}
		names = append(names, string(f))
	}
	return "", fmt.Errorf("unknown format %q (known: %s)", s, strings.Join(names, ", "))
}

// PACContentType is the media type of a proxy auto-config file.
const PACContentType = "application/x-ns-proxy-autoconfig"

// ContentType returns the media type to serve a list in format f with.
// Every list format is plain text: firewalls and DNS tooling fetch it as
// such, and none registers a type of its own.
func ContentType(Format) string { return "text/plain; charset=utf-8" }

// UnsupportedError is returned by Write for a format that cannot express
// an action at all.
type UnsupportedError struct {
	Format Format
	Action rules.Action
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("format %s cannot express action %s: a hosts file can only sinkhole names (block)", e.Format, e.Action)
}

// Write writes the list of vendor's names that get action at t in format f,
// after a comment header (see the format constants for what each format
// makes of each kind of pattern). It writes nothing if it fails before
// writing.
//
// The header names the generator, the policy, the vendor's catalog and its
// version, the action, the instant (RFC 3339 in the policy's timezone) and
// the format, and then says what the list does not express exactly:
//   - skipped: patterns whose names get the action but that the format
//     cannot write (entries with ports or paths, wildcards where the format
//     has none);
//   - widened: label wildcards written as their parent's "*." pattern;
//   - exceptions (dnsmasq, rpz): names below an entry that the policy
//     decides otherwise and that therefore carry a record of their own
//     action, so that each file enforces the policy on its own;
//   - over-matched: names an entry matches that the policy decides
//     otherwise and that the format cannot exempt. For EDL and Squid, which
//     have no exceptions, the enforcement point must match those names with
//     their own list first (for the default policy: the allow list before
//     the block list);
//   - signatures: the vendor's catalog signatures, which recognise its
//     traffic on any host by the URL path (internal update mirrors). No
//     name can carry them, so such requests are decided only where they
//     pass through feedgate.
//
// Which patterns are listed is List's answer.
func Write(w io.Writer, f Format, p *rules.Policy, vendor string, action rules.Action, at time.Time) error {
	if _, err := ParseFormat(string(f)); err != nil {
		return err
	}
	if err := checkArgs(p, vendor, action); err != nil {
		return err
	}
	if f == Hosts && action != rules.Block {
		return &UnsupportedError{Format: f, Action: action}
	}
	s, err := newSnapshot(p, at)
	if err != nil {
		return err
	}
	doc, err := build(s, f, vendor, action)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	doc.render(&b)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write %s list for %s/%s: %w", f, vendor, action, err)
	}
	return nil
}

// record is one thing a list file says: a pattern and the action for it.
type record struct {
	native rules.HostPattern // as written: exact or suffix (or domain for dnsmasq and squid)
	eff    rules.HostPattern // the names the format matches with it
	key    string
	action rules.Action
	from   string // the item it writes, for notes
}

// document is a list being built.
type document struct {
	s       *snapshot
	f       Format
	vendor  string
	action  rules.Action
	records []record // the list's own entries, then exceptions
	entries int      // len(records) before the exceptions
	listed  int      // items written
	skipped []string
	widened []string
	over    []string
	sigs    []rules.Signature // the vendor's signatures
}

// natives turns an item into the patterns the format writes for it, or
// says why it cannot.
func (doc *document) natives(it Item) (out []rules.HostPattern, skip string) {
	q := it.Pattern
	if doc.f == Hosts {
		switch q.Kind {
		case rules.PatternExact:
			return []rules.HostPattern{q}, ""
		case rules.PatternDomain:
			doc.skipped = append(doc.skipped, fmt.Sprintf("*.%s: a hosts file has no wildcards; only %s itself is listed", q.Key, q.Key))
			return []rules.HostPattern{{Kind: rules.PatternExact, Key: q.Key}}, ""
		}
		return nil, "a hosts file has no wildcards"
	}
	if q.Kind == rules.PatternLabel {
		if !doc.s.uniformBelow(q.Key, doc.vendor, doc.action) {
			return nil, fmt.Sprintf("%s cannot match part of a label, and not every name below %s is %s", doc.f, q.Key, doc.action)
		}
		w := rules.HostPattern{Kind: rules.PatternSuffix, Key: q.Key}
		doc.widened = append(doc.widened, fmt.Sprintf("%s as %s", q, w))
		q = w
	}
	if q.Kind == rules.PatternDomain && (doc.f == EDL || doc.f == RPZ) {
		return []rules.HostPattern{{Kind: rules.PatternExact, Key: q.Key}, {Kind: rules.PatternSuffix, Key: q.Key}}, ""
	}
	return []rules.HostPattern{q}, ""
}

// uniformBelow reports whether every name below key gets action and
// belongs to vendor, on every port and path.
func (s *snapshot) uniformBelow(key, vendor string, action rules.Action) bool {
	w := rules.HostPattern{Kind: rules.PatternSuffix, Key: key}
	d, err := s.decide(w, 0, "")
	if err != nil || d.Vendor != vendor || d.Action != action {
		return false
	}
	for _, list := range [][]region{s.regions, s.refined} {
		for _, r := range list {
			if w.Covers(r.pat) && (r.d.Vendor != vendor || r.d.Action != action) {
				return false
			}
		}
	}
	return true
}

// eff returns the names the format matches when it writes n.
func (f Format) eff(n rules.HostPattern) rules.HostPattern {
	switch {
	case f == Dnsmasq, f == Squid && n.Kind != rules.PatternExact:
		return rules.HostPattern{Kind: rules.PatternDomain, Key: n.Key}
	}
	return n
}

// key returns the part of a written line that names the pattern: two
// records with one key cannot both be in a file.
func (f Format) key(n rules.HostPattern) string {
	switch f {
	case Dnsmasq:
		return n.Key
	case Squid:
		if n.Kind == rules.PatternExact {
			return n.Key
		}
		return "." + n.Key
	}
	return n.String()
}

// outcome returns what the format makes of an action. dnsmasq and RPZ
// records either sinkhole a name or let it resolve, so allow and log are
// one outcome there; the other formats are lists whose consumer applies the
// list's action, so every action is its own.
func (f Format) outcome(a rules.Action) rules.Action {
	if f.inBand() && a != rules.Block {
		return rules.Allow
	}
	return a
}

// inBand reports whether the format can exempt a name below an entry with a
// record of its own.
func (f Format) inBand() bool { return f == Dnsmasq || f == RPZ }

func build(s *snapshot, f Format, vendor string, action rules.Action) (*document, error) {
	doc := &document{s: s, f: f, vendor: vendor, action: action, sigs: signaturesOf(s.p, vendor)}
	for _, it := range s.items(vendor, action) {
		ns, skip := doc.natives(it)
		if skip != "" {
			doc.skipped = append(doc.skipped, fmt.Sprintf("%s: %s", it.Pattern, skip))
			continue
		}
		doc.listed++
		for _, n := range ns {
			doc.records = append(doc.records, record{native: n, eff: f.eff(n), key: f.key(n), action: action, from: it.Pattern.String()})
		}
	}
	for _, it := range s.refinedItems(vendor, action) {
		what := "path " + it.Path
		if it.Ports != "" {
			what = "ports " + it.Ports
		}
		note := fmt.Sprintf("%s %s (%s, %s): a name cannot carry a port or path", it.Pattern, what, it.Category, it.Rule)
		// Its names may be listed anyway, on every port and path.
		if rec := doc.deciding(it.Pattern); rec != nil && rec.action == action {
			note += "; " + rec.from + " lists all its names"
		}
		doc.skipped = append(doc.skipped, note)
	}
	sort.Strings(doc.skipped)
	doc.entries = len(doc.records)
	if err := doc.except(); err != nil {
		return nil, err
	}
	return doc, nil
}

// analysed returns the regions to check the list against: every region of
// the snapshot, and for formats that match more than a record's pattern
// (dnsmasq's /name/ and Squid's .name), the extra names as regions of
// their own, so that a different answer for them is caught.
func (doc *document) analysed() ([]region, error) {
	regions := slices.Clone(doc.s.regions)
	have := map[rules.HostPattern]bool{}
	for _, r := range regions {
		have[r.pat] = true
	}
	for _, rec := range doc.records {
		if rec.eff == rec.native {
			continue
		}
		var extra rules.HostPattern
		switch rec.native.Kind {
		case rules.PatternSuffix: // the suffix itself
			extra = rules.HostPattern{Kind: rules.PatternExact, Key: rec.native.Key}
		case rules.PatternExact: // the names below the host
			extra = rules.HostPattern{Kind: rules.PatternSuffix, Key: rec.native.Key}
		default:
			continue
		}
		if have[extra] {
			continue
		}
		have[extra] = true
		d, err := doc.s.decide(extra, 0, "")
		if err != nil {
			return nil, err
		}
		regions = append(regions, region{pat: extra, d: d})
	}
	sort.SliceStable(regions, func(i, j int) bool { return generalFirst(regions[i].pat, regions[j].pat) })
	return regions, nil
}

// except finds the names that a record matches but the policy decides
// otherwise. Formats with exceptions get a record for each, most general
// first, so that a name below an exception is checked against it; the
// others, and names no record can exempt, get a note. An exception's own
// extra names (dnsmasq) are checked in turn, until nothing changes: each
// region gets at most one record or one note, so this ends.
func (doc *document) except() error {
	owner := map[string]rules.Action{}
	for _, rec := range doc.records {
		owner[rec.key] = rec.action
	}
	noted := map[rules.HostPattern]bool{}
	for {
		regions, err := doc.analysed()
		if err != nil {
			return err
		}
		added := false
		for _, r := range regions {
			rec := doc.deciding(r.pat)
			if rec == nil || doc.f.outcome(rec.action) == doc.f.outcome(r.d.Action) || noted[r.pat] {
				continue
			}
			why := fmt.Sprintf("%s: %s (%s/%s, %s), matched by %s", r.pat, r.d.Action, r.d.Vendor, r.d.Category, r.d.RuleName, rec.from)
			key := doc.f.key(r.pat)
			a, taken := owner[key]
			switch {
			case !doc.f.inBand():
			case r.pat.Kind == rules.PatternLabel:
				why += "; a label wildcard cannot be exempted"
			case taken && doc.f.outcome(a) == doc.f.outcome(r.d.Action):
				continue // its own line says so already
			case taken:
				why += fmt.Sprintf("; the %s line for %s has another action", doc.f, key)
			default:
				owner[key] = r.d.Action
				doc.records = append(doc.records, record{native: r.pat, eff: doc.f.eff(r.pat), key: key, action: r.d.Action, from: r.pat.String()})
				added = true
				continue
			}
			noted[r.pat] = true
			doc.over = append(doc.over, why)
		}
		if !added {
			return nil
		}
	}
}

// deciding returns the record that decides the names of q in the format:
// the most specific record whose names cover q's, or nil.
func (doc *document) deciding(q rules.HostPattern) *record {
	var best *record
	for i := range doc.records {
		rec := &doc.records[i]
		if !rec.eff.Covers(q) {
			continue
		}
		if best == nil || moreSpecific(rec.eff, best.eff) {
			best = rec
		}
	}
	return best
}

// moreSpecific reports whether a takes precedence over b where both match a
// name: an exact name beats a wildcard (RPZ), and a longer name beats a
// shorter one (RPZ wildcards, dnsmasq domains).
func moreSpecific(a, b rules.HostPattern) bool {
	if (a.Kind == rules.PatternExact) != (b.Kind == rules.PatternExact) {
		return a.Kind == rules.PatternExact
	}
	return labels(a.Key) > labels(b.Key)
}

// labels counts the labels of a name.
func labels(name string) int { return strings.Count(name, ".") + 1 }

// generalFirst orders patterns so that a pattern comes before every
// pattern it covers.
func generalFirst(a, b rules.HostPattern) bool {
	if la, lb := labels(a.Key), labels(b.Key); la != lb {
		return la < lb
	}
	rank := func(k rules.PatternKind) int {
		switch k {
		case rules.PatternDomain:
			return 0
		case rules.PatternSuffix:
			return 1
		case rules.PatternLabel:
			return 2
		}
		return 3
	}
	if ra, rb := rank(a.Kind), rank(b.Kind); ra != rb {
		return ra < rb
	}
	return a.String() < b.String()
}

// dnsLess orders patterns as a zone lists names: by labels from the right,
// a name before the names below it.
func dnsLess(a, b rules.HostPattern) bool {
	la, lb := reversed(a.String()), reversed(b.String())
	if c := slices.Compare(la, lb); c != 0 {
		return c < 0
	}
	return a.Kind > b.Kind // a domain before the exact name it shares a key with
}

func reversed(name string) []string {
	l := strings.Split(name, ".")
	slices.Reverse(l)
	return l
}

// comment returns the format's comment marker.
func (f Format) comment() string {
	if f == RPZ {
		return ";"
	}
	return "#"
}

// serial is the SOA serial for an instant: its Unix time in seconds, which
// grows with the instant and fits the 32-bit serial until 2106.
func serial(t time.Time) uint32 {
	switch u := t.Unix(); {
	case u < 1:
		return 1
	case u > math.MaxUint32:
		return math.MaxUint32
	default:
		return uint32(u)
	}
}

func (doc *document) render(b *bytes.Buffer) {
	c := doc.f.comment()
	line := func(format string, args ...any) { fmt.Fprintf(b, c+" "+format+"\n", args...) }
	list := func(items []string) {
		for _, s := range items {
			line("  %s", s)
		}
	}
	p := doc.s.p
	line("Generated by feedgate; regenerate it rather than edit it.")
	if p.Mode == rules.Report {
		line("policy: %s (report mode: blocks are logged, not enforced)", p.Name)
	} else {
		line("policy: %s", p.Name)
	}
	for _, cat := range p.Catalogs {
		if cat.Vendor == doc.vendor {
			line("catalog: %s %s", cat.Vendor, cat.Version)
		}
	}
	line("action: %s", doc.action)
	line("at: %s", doc.s.at.In(p.Location).Format(time.RFC3339))
	line("format: %s", doc.f)
	line("listed: %s", plural(doc.listed, "pattern"))
	line("skipped: %s this format cannot express", plural(len(doc.skipped), "pattern"))
	list(doc.skipped)
	if len(doc.widened) > 0 {
		line("widened: %s, written as their parent's wildcard (every name below it is %s):", plural(len(doc.widened), "label wildcard"), doc.action)
		list(doc.widened)
	}
	if ex := len(doc.records) - doc.entries; ex > 0 {
		line("exceptions: %s below entries that the policy decides otherwise, with a record of their own at the end", plural(ex, "name"))
	}
	if len(doc.over) > 0 {
		hint := "this format cannot exempt them"
		if !doc.f.inBand() {
			hint += "; match them with the list of their own action first"
		}
		line("over-matched: %s that an entry matches but the policy decides otherwise (%s):", plural(len(doc.over), "name"), hint)
		list(doc.over)
	}
	if len(doc.sigs) > 0 {
		// Each line holds spaces, as every header line must (see EDL).
		line("signatures: %s of catalog %s %s its traffic on any host by the URL path (internal update mirrors); a name list cannot carry a path, so such requests are decided only where they pass through feedgate:", plural(len(doc.sigs), "path signature"), doc.vendor, agree(len(doc.sigs), "recognises", "recognise"))
		for _, sig := range doc.sigs {
			line("  %s (category %s)", sig.Name, sig.Category)
		}
	}
	switch doc.f {
	case Dnsmasq:
		line("note: /name/ matches name itself and every name below it.")
	case Squid:
		line("note: .name matches name itself and every name below it.")
	case RPZ:
		line("zone: rpz.feedgate. (owner names are relative to the zone)")
		fmt.Fprintf(b, "$TTL 300\n@ IN SOA localhost. hostmaster.localhost. %d 3600 600 604800 300\n@ IN NS localhost.\n", serial(doc.s.at))
	}
	entries, exceptions := doc.records[:doc.entries], doc.records[doc.entries:]
	if doc.f == Squid {
		entries = squidCompact(entries)
	}
	doc.lines(b, entries)
	if len(exceptions) > 0 {
		line("exceptions")
		doc.lines(b, exceptions)
	}
}

// signaturesOf returns the signatures of vendor's catalog, in catalog order.
func signaturesOf(p *rules.Policy, vendor string) []rules.Signature {
	var out []rules.Signature
	for _, sig := range p.Signatures {
		if sig.Vendor == vendor {
			out = append(out, sig)
		}
	}
	return out
}

// agree returns the verb form that agrees with n things.
func agree(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// plural returns "1 name" or "2 names".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// lines writes records in DNS order, each key once.
func (doc *document) lines(b *bytes.Buffer, recs []record) {
	recs = slices.Clone(recs)
	sort.SliceStable(recs, func(i, j int) bool { return dnsLess(recs[i].native, recs[j].native) })
	seen := map[string]bool{}
	for _, rec := range recs {
		if seen[rec.key] {
			continue
		}
		seen[rec.key] = true
		switch doc.f {
		case Hosts:
			fmt.Fprintf(b, "0.0.0.0 %s\n", rec.key)
		case Dnsmasq:
			if rec.action == rules.Block {
				fmt.Fprintf(b, "address=/%s/0.0.0.0\naddress=/%s/::\n", rec.key, rec.key)
			} else {
				fmt.Fprintf(b, "server=/%s/#\n", rec.key)
			}
		case RPZ:
			target := "."
			if rec.action != rules.Block {
				target = "rpz-passthru."
			}
			fmt.Fprintf(b, "%s CNAME %s\n", rec.key, target)
		default:
			fmt.Fprintf(b, "%s\n", rec.key)
		}
	}
}

// squidCompact drops the entries that a dot entry covers: Squid refuses
// "example.com" next to ".example.com" and warns about "a.example.com" or
// ".a.example.com" next to it.
func squidCompact(recs []record) []record {
	var dots []string
	for _, rec := range recs {
		if rec.eff.Kind == rules.PatternDomain {
			dots = append(dots, rec.eff.Key)
		}
	}
	var out []record
	for _, rec := range recs {
		covered := false
		for _, d := range dots {
			dot := rules.HostPattern{Kind: rules.PatternDomain, Key: d}
			if rec.eff == dot {
				continue // itself
			}
			if dot.Matches(rec.eff.Key) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, rec)
		}
	}
	return out
}
