package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/feedgate/feedgate/rules/internal/lines"
)

// Problem is one finding about a configuration file.
type Problem struct {
	File    string
	Line    int    // 0 when no line is known
	Key     string // key path such as "rule[2].until", used when Line is 0
	Message string
	Warning bool
}

func (p Problem) String() string {
	msg := p.Message
	if p.Warning {
		msg = "warning: " + msg
	}
	switch {
	case p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, msg)
	case p.Key != "":
		return fmt.Sprintf("%s: %s: %s", p.File, p.Key, msg)
	}
	return fmt.Sprintf("%s: %s", p.File, msg)
}

// ConfigError is returned by Load for a configuration with errors. Every
// problem found is listed, not only the first.
type ConfigError struct{ Problems []Problem }

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Source reads configuration files. Names are slash-separated; relative
// catalog names in a policy are resolved against the policy's directory.
type Source interface {
	ReadFile(name string) ([]byte, error)
}

// Dir reads files from the operating system, names as given.
type Dir struct{}

// ReadFile implements Source.
func (Dir) ReadFile(name string) ([]byte, error) { return os.ReadFile(filepath.FromSlash(name)) }

// FS reads files from an fs.FS (such as the embedded default policy).
type FS struct{ FS fs.FS }

// ReadFile implements Source.
func (f FS) ReadFile(name string) ([]byte, error) { return fs.ReadFile(f.FS, path.Clean(name)) }

// BuiltinPrefix marks a catalog path in a policy file that is read from the
// built-in catalogs, e.g. "builtin:catalog/kaspersky.toml".
const BuiltinPrefix = "builtin:"

// Options configure Load.
type Options struct {
	// Builtin serves catalog paths that start with BuiltinPrefix. Nil
	// means such paths are an error.
	Builtin Source
	// KnownKey reports keys of the policy file that are not policy but
	// that the caller decodes itself (the configuration's sections, see
	// rules/config): they are not reported as unknown. Nil means every key
	// that is not policy is unknown.
	KnownKey func(key []string) bool
}

// Load reads, validates and compiles the policy in file and the catalogs it
// names. Errors are a *ConfigError; warnings (for example a rule that can
// never match) are returned with a valid policy.
func Load(src Source, file string, opts Options) (*Policy, []Problem, error) {
	l := &loader{src: src, opts: opts}
	p := l.load(file)
	var errs, warns []Problem
	for _, pr := range l.problems {
		if pr.Warning {
			warns = append(warns, pr)
		} else {
			errs = append(errs, pr)
		}
	}
	if len(errs) > 0 {
		return nil, warns, &ConfigError{Problems: errs}
	}
	p.compile()
	return p, warns, nil
}

type loader struct {
	src      Source
	opts     Options
	problems []Problem
}

type fileCtx struct {
	l     *loader
	name  string
	lines lines.Index
	md    toml.MetaData // keeps the file's key order, which maps lose
}

func (f *fileCtx) errorf(key, format string, args ...any) {
	f.l.problems = append(f.l.problems, Problem{File: f.name, Line: f.lines.Line(key), Key: key, Message: fmt.Sprintf(format, args...)})
}

func (f *fileCtx) warnf(key, format string, args ...any) {
	f.l.problems = append(f.l.problems, Problem{File: f.name, Line: f.lines.Line(key), Key: key, Message: fmt.Sprintf(format, args...), Warning: true})
}

// policyFile is the TOML form of a policy.
type policyFile struct {
	Name          string     `toml:"name"`
	Description   string     `toml:"description"`
	Timezone      string     `toml:"timezone"`
	Mode          string     `toml:"mode"`
	DefaultAction string     `toml:"default_action"`
	Catalogs      []string   `toml:"catalogs"`
	Rules         []ruleFile `toml:"rule"`

	Clients map[string][]string `toml:"clients"`
	TLS     tlsFile             `toml:"tls"`
}

type ruleFile struct {
	Name       string   `toml:"name"`
	Reason     string   `toml:"reason"`
	Vendor     string   `toml:"vendor"`
	Categories []string `toml:"categories"`
	Hosts      []string `toml:"hosts"`
	Action     string   `toml:"action"`
	From       any      `toml:"from"`
	Until      any      `toml:"until"`
	Clients    []string `toml:"clients"`
	NotClients []string `toml:"not_clients"`
}

// catalogFile is the TOML form of a vendor catalog.
type catalogFile struct {
	Vendor      string      `toml:"vendor"`
	Version     string      `toml:"version"`
	Description string      `toml:"description"`
	Categories  []string    `toml:"categories"`
	Fallback    string      `toml:"fallback"`
	Domains     []string    `toml:"domains"`
	Entries     []entryFile `toml:"entry"`
	Signatures  []sigFile   `toml:"signature"`
}

// sigFile is the TOML form of a catalog signature.
type sigFile struct {
	Name     string   `toml:"name"`
	Category string   `toml:"category"`
	Paths    []string `toml:"paths"`
	Methods  []string `toml:"methods"`
	Ports    []string `toml:"ports"`
}

type entryFile struct {
	Category string   `toml:"category"`
	Hosts    []string `toml:"hosts"`
	Ports    []string `toml:"ports"`
	Paths    []string `toml:"paths"`
}

// decode parses one TOML file into v, reporting syntax errors with their
// line and unknown keys (typos) by line or key path.
func (l *loader) decode(name string, v any) (*fileCtx, bool) {
	var data []byte
	var err error
	if strings.HasPrefix(name, BuiltinPrefix) {
		if l.opts.Builtin == nil {
			err = errors.New("no built-in catalogs in this context")
		} else {
			data, err = l.opts.Builtin.ReadFile(strings.TrimPrefix(name, BuiltinPrefix))
		}
	} else {
		data, err = l.src.ReadFile(name)
	}
	f := &fileCtx{l: l, name: name, lines: lines.Index{}}
	if err != nil {
		l.problems = append(l.problems, Problem{File: name, Message: fmt.Sprintf("cannot read: %v", unwrapPathError(err))})
		return f, false
	}
	f.lines = lines.Parse(string(data))
	md, err := toml.Decode(string(data), v)
	if err != nil {
		line, msg := lines.DecodeError(string(data), err)
		l.problems = append(l.problems, Problem{File: name, Line: line, Message: msg})
		return f, false
	}
	f.md = md
	claimed := map[string]bool{}
	for _, k := range md.Undecoded() {
		if l.opts.KnownKey != nil && l.opts.KnownKey(k) {
			continue
		}
		f.errorf(lines.KeyPath(k, f.lines, claimed), "unknown key %q", k[len(k)-1])
	}
	return f, true
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (l *loader) load(file string) *Policy {
	var pf policyFile
	f, ok := l.decode(file, &pf)
	if !ok {
		return nil
	}
	p := &Policy{Name: pf.Name, File: file, Classes: []Class{{NoVendor, NoVendor}}, catalog: newHostMatcher()}
	if p.Name == "" {
		p.Name = strings.TrimSuffix(path.Base(file), path.Ext(file))
	}

	tz := pf.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil || tz == "Local" {
		f.errorf("timezone", "unknown timezone %q: want an IANA name such as \"America/New_York\" or \"UTC\"", pf.Timezone)
		loc = time.UTC
	}
	p.Location = loc

	switch pf.Mode {
	case "", "enforce":
		p.Mode = Enforce
	case "report":
		p.Mode = Report
	default:
		f.errorf("mode", "unknown mode %q: want \"enforce\" or \"report\"", pf.Mode)
	}
	p.DefaultAction = Allow
	if pf.DefaultAction != "" {
		a, ok := ParseAction(pf.DefaultAction)
		if !ok {
			f.errorf("default_action", "unknown action %q: want allow, log or block", pf.DefaultAction)
		}
		p.DefaultAction = a
	}

	f.parseTLS(p, pf.TLS)
	var groupIndex map[string]int
	p.ClientGroups, p.clientNets, groupIndex = f.parseClientGroups(pf.Clients)

	// Catalogs.
	vendors := map[string][]string{} // vendor → categories
	domainOwner := map[string]string{}
	for i, c := range pf.Catalogs {
		name := c
		if !strings.HasPrefix(c, BuiltinPrefix) && !path.IsAbs(c) {
			name = path.Join(path.Dir(file), c)
		}
		info, ok := l.loadCatalog(p, name, vendors, domainOwner)
		if !ok {
			if len(l.problems) == 0 {
				f.errorf("catalogs", "catalog %d (%q) could not be loaded", i+1, c)
			}
			continue
		}
		p.Catalogs = append(p.Catalogs, info)
	}

	// Rules.
	seen := map[string]int{}
	transitions := map[int64]bool{}
	for i, rf := range pf.Rules {
		key := fmt.Sprintf("rule[%d]", i)
		r := &Rule{Name: rf.Name, Reason: rf.Reason, Line: f.lines.Line(key), from: math.MinInt64, until: math.MaxInt64}
		switch {
		case rf.Name == "":
			f.errorf(key, "rule %d has no name", i+1)
		case rf.Name == DefaultRule || rf.Name == NoVendor:
			f.errorf(key+".name", "rule name %q is reserved", rf.Name)
		case !validName(rf.Name):
			// Names travel in a response header and as a metric label.
			f.errorf(key+".name", "rule name %q: use letters, digits, '.', '_' and '-'", rf.Name)
		default:
			if prev, dup := seen[rf.Name]; dup {
				f.errorf(key+".name", "duplicate rule name %q (first used at line %d)", rf.Name, prev)
			} else {
				seen[rf.Name] = r.Line
			}
		}
		a, ok := ParseAction(rf.Action)
		switch {
		case rf.Action == "":
			f.errorf(key, "rule %q has no action: want allow, log or block", rf.Name)
		case !ok:
			f.errorf(key+".action", "unknown action %q: want allow, log or block", rf.Action)
		}
		r.Action = a

		if rf.Vendor != "" {
			cats, known := vendors[rf.Vendor]
			if !known {
				f.errorf(key+".vendor", "unknown vendor %q%s", rf.Vendor, knownList(" (known: %s)", sortedKeys(vendors)))
			}
			r.vendor = rf.Vendor
			if len(rf.Categories) == 0 {
				r.categories = cats
			}
			for _, c := range rf.Categories {
				if known && !slices.Contains(cats, c) {
					f.errorf(key+".categories", "unknown category %q for vendor %q (known: %s)", c, rf.Vendor, strings.Join(cats, ", "))
					continue
				}
				r.categories = append(r.categories, c)
			}
		} else if len(rf.Categories) > 0 {
			f.errorf(key+".categories", "categories need a vendor: add vendor = \"...\"")
		}
		for j, h := range rf.Hosts {
			hp, err := parseHostPattern(h)
			if err != nil {
				f.errorf(key+".hosts", "%v", err)
				continue
			}
			if r.hosts == nil {
				r.hosts = newHostMatcher()
			}
			if !r.hosts.add(hp, target{}) {
				f.errorf(key+".hosts", "host pattern %q listed twice (entry %d)", h, j+1)
			}
			r.hostList = append(r.hostList, hp)
		}
		r.all = rf.Vendor == "" && len(rf.Hosts) == 0 && len(rf.Categories) == 0
		f.parseRuleClients(r, key, &rf, groupIndex)

		from, okF := f.instant(key+".from", rf.From, loc)
		until, okU := f.instant(key+".until", rf.Until, loc)
		if okF && !from.IsZero() {
			r.From, r.from = from, from.UnixNano()
		}
		if okU && !until.IsZero() {
			r.Until, r.until = until, until.UnixNano()
		}
		if !r.From.IsZero() && !r.Until.IsZero() && !r.Until.After(r.From) {
			f.errorf(key+".until", "until (%s) is not after from (%s)", r.Until.Format(time.RFC3339), r.From.Format(time.RFC3339))
		}
		if !r.From.IsZero() {
			transitions[r.from] = true
		}
		if !r.Until.IsZero() {
			transitions[r.until] = true
		}
		p.Rules = append(p.Rules, r)
	}

	// Give the first 64 host-selecting rules a bit in the catalog walk, so
	// that one walk over a host finds its class and its host rules; any
	// further ones match with their own matcher.
	nbits := 0
	for _, r := range p.Rules {
		if len(r.hostList) == 0 || nbits == 64 {
			continue
		}
		r.hostBit = 1 << nbits
		nbits++
		for _, hp := range r.hostList {
			p.catalog.addRule(hp, r.hostBit)
		}
	}
	// Resolve each rule's class set now that every catalog is known.
	for _, r := range p.Rules {
		r.classes = make([]bool, len(p.Classes))
		for c, cl := range p.Classes {
			r.classes[c] = r.vendor != "" && cl.Vendor == r.vendor && slices.Contains(r.categories, cl.Category)
		}
	}
	for t := range transitions {
		p.transitions = append(p.transitions, t)
	}
	sort.Slice(p.transitions, func(i, j int) bool { return p.transitions[i] < p.transitions[j] })

	// Shadowing is judged on what the rules select, which is only known
	// for a valid policy.
	if !hasErrors(l.problems) {
		l.checkShadowed(f, p)
	}
	return p
}

// instant converts a TOML date-time value. Offset date-times are absolute;
// local date-times and dates are wall-clock times in the policy's timezone.
// Strings in RFC 3339 form are accepted as well.
func (f *fileCtx) instant(key string, v any, loc *time.Location) (time.Time, bool) {
	switch t := v.(type) {
	case nil:
		return time.Time{}, true
	case time.Time:
		switch t.Location().String() {
		case "datetime-local", "date-local":
			lt := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc)
			if lt.Hour() != t.Hour() || lt.Minute() != t.Minute() || lt.Day() != t.Day() {
				// time.Date moves a wall-clock time that a DST change
				// skips to an unspecified side of the gap; refuse it
				// rather than guess.
				f.errorf(key, "%s does not exist in %s (the clocks skip it at a daylight-saving change): write an offset date-time or another time",
					t.Format("2006-01-02T15:04:05"), loc)
				return time.Time{}, false
			}
			return lt, true
		case "time-local":
			f.errorf(key, "a time of day without a date is not an instant: write a date-time such as 2024-09-29T00:00:00")
			return time.Time{}, false
		}
		return t, true
	case string:
		if ts, err := time.Parse(time.RFC3339, t); err == nil {
			return ts, true
		}
		if ts, err := time.ParseInLocation("2006-01-02T15:04:05", t, loc); err == nil {
			return ts, true
		}
		f.errorf(key, "invalid date-time %q: want a TOML date-time such as 2024-09-29T00:00:00 (policy timezone) or 2024-09-29T00:00:00-04:00", t)
	default:
		f.errorf(key, "invalid date-time of type %T: want a TOML date-time such as 2024-09-29T00:00:00", v)
	}
	return time.Time{}, false
}

func (l *loader) loadCatalog(p *Policy, name string, vendors map[string][]string, domainOwner map[string]string) (CatalogInfo, bool) {
	var cf catalogFile
	f, ok := l.decode(name, &cf)
	if !ok {
		return CatalogInfo{}, false
	}
	before := len(l.problems)
	switch {
	case cf.Vendor == "":
		f.errorf("vendor", "catalog has no vendor name")
		return CatalogInfo{}, false
	case cf.Vendor == NoVendor:
		f.errorf("vendor", "vendor name %q is reserved", cf.Vendor)
	case vendors[cf.Vendor] != nil:
		f.errorf("vendor", "vendor %q is defined by two catalogs", cf.Vendor)
		return CatalogInfo{}, false
	}
	if len(cf.Categories) == 0 {
		f.errorf("categories", "catalog declares no categories")
	}
	classOf := map[string]int32{}
	for _, c := range cf.Categories {
		if err := checkLabelChars(c); err != nil || c == "" || c == NoVendor {
			f.errorf("categories", "invalid category name %q", c)
			continue
		}
		if _, dup := classOf[c]; dup {
			f.errorf("categories", "category %q listed twice", c)
			continue
		}
		classOf[c] = int32(len(p.Classes))
		p.Classes = append(p.Classes, Class{Vendor: cf.Vendor, Category: c})
	}
	vendors[cf.Vendor] = append([]string(nil), cf.Categories...)

	if len(cf.Domains) > 0 {
		fc, ok := classOf[cf.Fallback]
		if !ok {
			f.errorf("fallback", "fallback category %q is not one of the catalog's categories", cf.Fallback)
		}
		for _, d := range cf.Domains {
			dp, err := parseDomain(d)
			if err != nil {
				f.errorf("domains", "%v", err)
				continue
			}
			if owner, dup := domainOwner[d]; dup {
				f.errorf("domains", "domain %q already belongs to vendor %q", d, owner)
				continue
			}
			domainOwner[d] = cf.Vendor
			p.catalog.add(dp, target{class: fc, fallback: true})
		}
	}

	for i, e := range cf.Entries {
		key := fmt.Sprintf("entry[%d]", i)
		cl, ok := classOf[e.Category]
		if !ok {
			f.errorf(key+".category", "unknown category %q (declared: %s)", e.Category, strings.Join(cf.Categories, ", "))
			continue
		}
		if len(e.Hosts) == 0 {
			f.errorf(key, "entry has no hosts")
		}
		ports := []PortRange{{}}
		if len(e.Ports) > 0 {
			ports = ports[:0]
			for _, s := range e.Ports {
				pr, err := ParsePortRange(s)
				if err != nil {
					f.errorf(key+".ports", "%v", err)
					continue
				}
				ports = append(ports, pr)
			}
		}
		paths := []string{""}
		if len(e.Paths) > 0 {
			paths = paths[:0]
			for _, s := range e.Paths {
				pa, err := parseCatalogPath(s)
				if err != nil {
					f.errorf(key+".paths", "%v", err)
					continue
				}
				paths = append(paths, pa)
			}
		}
		for _, h := range e.Hosts {
			hp, err := parseHostPattern(h)
			if err != nil {
				f.errorf(key+".hosts", "%v", err)
				continue
			}
			for _, pr := range ports {
				for _, pa := range paths {
					if !p.catalog.add(hp, target{class: cl, ports: pr, path: pa}) {
						f.errorf(key+".hosts", "host pattern %q is already in the catalog with the same ports and paths", h)
					}
				}
			}
		}
	}
	f.loadSignatures(p, cf, classOf)
	if len(l.problems) > before && hasErrors(l.problems[before:]) {
		return CatalogInfo{}, false
	}
	return CatalogInfo{Vendor: cf.Vendor, Version: cf.Version, Description: cf.Description, File: name, Categories: vendors[cf.Vendor]}, true
}

// loadSignatures compiles the catalog's signatures into p.
func (f *fileCtx) loadSignatures(p *Policy, cf catalogFile, classOf map[string]int32) {
	names := map[string]int{}
	for i, sf := range cf.Signatures {
		key := fmt.Sprintf("signature[%d]", i)
		line := f.lines.Line(key)
		switch {
		case sf.Name == "":
			f.errorf(key, "signature %d has no name", i+1)
		case !validName(sf.Name):
			// Names travel in the decision log and the inventory.
			f.errorf(key+".name", "signature name %q: use letters, digits, '.', '_' and '-'", sf.Name)
		default:
			if prev, dup := names[sf.Name]; dup {
				f.errorf(key+".name", "duplicate signature name %q (first used at line %d)", sf.Name, prev)
			}
			names[sf.Name] = line
		}
		cl, ok := classOf[sf.Category]
		if !ok {
			f.errorf(key+".category", "unknown category %q (declared: %s)", sf.Category, strings.Join(cf.Categories, ", "))
		}
		if len(sf.Paths) == 0 {
			f.errorf(key, "signature %q has no paths", sf.Name)
		}
		cs := compiledSig{class: cl, name: sf.Name}
		for _, m := range sf.Methods {
			if !validMethod(m) {
				f.errorf(key+".methods", "method %q: want an HTTP method as sent, such as \"GET\" (methods are case-sensitive)", m)
			}
			cs.methods = append(cs.methods, m)
		}
		for _, s := range sf.Ports {
			pr, err := ParsePortRange(s)
			if err != nil {
				f.errorf(key+".ports", "%v", err)
				continue
			}
			cs.ports = append(cs.ports, pr)
		}
		var toks [][]sigTok
		var texts []string
		seen := map[string]bool{}
		for _, s := range sf.Paths {
			t, err := parseSigPattern(s)
			switch {
			case err != nil:
				f.errorf(key+".paths", "%v", err)
				continue
			case seen[s]:
				f.errorf(key+".paths", "path pattern %q listed twice", s)
				continue
			}
			seen[s] = true
			toks = append(toks, t)
			texts = append(texts, s)
		}
		if p.sigs == nil {
			p.sigs = &sigMatcher{}
		}
		si := int32(len(p.sigs.sigs))
		p.sigs.sigs = append(p.sigs.sigs, cs)
		for i, t := range toks {
			p.sigs.add(si, texts[i], t)
		}
		p.Signatures = append(p.Signatures, Signature{
			Vendor: cf.Vendor, Category: sf.Category, Name: sf.Name,
			Paths: sf.Paths, Methods: sf.Methods, Ports: sf.Ports,
			File: f.name, Line: line,
		})
	}
}

// validMethod reports whether m is an HTTP method token in upper case,
// the form every client sends the standard methods in.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range []byte(m) {
		if !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkShadowed warns about rules that can never decide anything because an
// earlier rule's window and selector both contain theirs.
func (l *loader) checkShadowed(f *fileCtx, p *Policy) {
	for j, rj := range p.Rules {
		for i := 0; i < j; i++ {
			ri := p.Rules[i]
			if ri.from <= rj.from && ri.until >= rj.until && covers(p, ri, rj) {
				f.warnf(fmt.Sprintf("rule[%d]", j), "rule %q can never match: rule %q (line %d) always matches first", rj.Name, ri.Name, ri.Line)
				break
			}
		}
	}
}

// covers reports whether every request that b selects is also selected by a.
// It may answer false when a does cover b, never true when it does not.
func covers(p *Policy, a, b *Rule) bool {
	if !coversClients(a, b) {
		return false
	}
	if a.all {
		return true
	}
	if b.all {
		return false
	}
	for c := range p.Classes {
		if b.classes[c] && !a.classes[c] {
			return false
		}
	}
	for _, hp := range b.hostList {
		if !coversHost(p, a, hp) {
			return false
		}
	}
	return true
}

func coversHost(p *Policy, a *Rule, hp HostPattern) bool {
	switch hp.Kind {
	case PatternExact:
		host := []byte(hp.Key)
		if a.hosts != nil {
			if t, _ := match(a.hosts, host, 0, ""); t != nil {
				return true
			}
		}
		// The host is covered by a's categories only if it lands in a
		// selected class whatever the port and path.
		if c, ok := p.catalog.uniformClass(host); ok {
			return a.classes[c]
		}
		return false
	case PatternSuffix:
		for _, ap := range a.hostList {
			if ap.Kind == PatternSuffix && (ap.Key == hp.Key || strings.HasSuffix(hp.Key, "."+ap.Key)) {
				return true
			}
		}
	}
	return false
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

func hasErrors(ps []Problem) bool {
	for _, p := range ps {
		if !p.Warning {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func knownList(format string, names []string) string {
	if len(names) == 0 {
		return " (no catalog defines a vendor)"
	}
	return fmt.Sprintf(format, strings.Join(names, ", "))
}
