package rules

import (
	"math"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Action is what the proxy does with a request.
type Action uint8

const (
	// Allow forwards the request.
	Allow Action = iota
	// Log forwards the request and flags its decision record.
	Log
	// Block answers 403 and never contacts the upstream.
	Block
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Log:
		return "log"
	case Block:
		return "block"
	}
	return "invalid"
}

// ParseAction parses "allow", "log" or "block".
func ParseAction(s string) (Action, bool) {
	for _, a := range AllActions() {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}

// AllActions returns every action, least strict first.
func AllActions() []Action { return []Action{Allow, Log, Block} }

// NoVendor is the vendor and category reported for traffic that matches no
// catalog entry, and DefaultRule the rule name reported when no rule matched.
const (
	NoVendor    = "none"
	DefaultRule = "default"
)

// Class is one vendor/category pair. Class 0 of every policy is the
// none/none class of unclassified traffic.
type Class struct {
	Vendor   string
	Category string
}

// Request is what a decision is made about.
type Request struct {
	// Host is the host name or IP literal as the client sent it: any case,
	// optionally with one trailing dot or IPv6 brackets, Unicode or
	// punycode. A host without a canonical form (see CanonicalHost) makes
	// the decision Invalid.
	Host string
	// Port is the destination port; 0 means unknown.
	Port int
	// Path is the URL path of a plain-HTTP request, "" for a tunnel:
	// decoded (url.URL.Path) or not, in any form; it is normalised before
	// it is matched (see NormalizePath). A path without a normal form
	// makes the decision Invalid.
	Path string
	// Method is the request's method ("GET"), "" for a tunnel or when
	// unknown; it matters only to signatures that name methods, which
	// never match an unknown method.
	Method string
	// Client is the client's address; the zero value means unknown.
	Client netip.Addr
	// Time is the instant the decision is made for.
	Time time.Time
}

// Decision is the policy's answer for one request.
type Decision struct {
	Class    int // index into Policy.Classes
	Vendor   string
	Category string
	// Pattern is the catalog pattern that classified the host ("" if none).
	Pattern string
	// Signature is the name of the catalog signature that classified the
	// request by its path ("" if none); see MatchedBy.
	Signature string
	// Rule is the index of the deciding rule in Policy.Rules, -1 for the
	// default action; RuleName is its name, or "default".
	Rule     int
	RuleName string
	// Action is the action in force. In report mode a block is reported here
	// as Log and Reported is set.
	Action   Action
	Reported bool
	// ClientGroup is the most specific client group of the request's
	// client (see Policy.ClientGroup), "" if it is in none.
	ClientGroup string
	// Invalid is set when the request's host has no canonical form
	// (CanonicalHost fails) or its path no normal form (NormalizePath
	// fails): the policy cannot tell what the request is, because
	// resolvers and origins may read it in ways the catalog does not. A
	// proxy must refuse such a request (400) and never forward it. The
	// other fields are still filled in, as for the request with its path
	// left out (an invalid host is unclassified), so that a caller that
	// ignores Invalid is no worse off than with a tunnel to that host.
	Invalid bool
}

// What classified a request, as MatchedBy reports it.
const (
	MatchHost      = "host"
	MatchSignature = "signature"
)

// MatchedBy reports what classified the request: MatchHost for a catalog
// host pattern or domain, MatchSignature for a signature on its path, ""
// if nothing did (vendor none).
func (d *Decision) MatchedBy() string {
	switch {
	case d.Signature != "":
		return MatchSignature
	case d.Pattern != "":
		return MatchHost
	}
	return ""
}

// Rule is one compiled policy rule.
type Rule struct {
	Name   string
	Action Action
	// From and Until bound the half-open window [From, Until); a zero value
	// means unbounded on that side.
	From, Until time.Time
	Reason      string
	// Line is the rule's line in its file, for messages; 0 if unknown.
	Line int

	from, until int64 // UnixNano, with math.MinInt64/MaxInt64 for unbounded
	// all: no vendor, category or host selector, so the rule selects
	// every class and host; its client conditions still apply.
	all        bool
	classes    []bool
	hosts      *hostMatcher // the rule's own host list, for rules without a bit
	hostBit    uint64       // the rule's bit in the catalog walk, 0 if none
	hostList   []HostPattern
	vendor     string
	categories []string
	// Client conditions as group bits (see Policy.clientGroups): the
	// client must be in one of clients (if any) and in none of notClients.
	clients, notClients         uint64
	clientNames, notClientNames []string
}

// Vendor returns the vendor the rule selects, or "".
func (r *Rule) Vendor() string { return r.vendor }

// Categories returns the categories the rule selects (all of the vendor's if
// it names a vendor without categories).
func (r *Rule) Categories() []string { return r.categories }

// Hosts returns the host patterns the rule selects, as written.
func (r *Rule) Hosts() []string {
	out := make([]string, len(r.hostList))
	for i, p := range r.hostList {
		out[i] = p.String()
	}
	return out
}

// Clients returns the client groups the rule is limited to, as written; nil
// if it applies to every client.
func (r *Rule) Clients() []string { return r.clientNames }

// NotClients returns the client groups the rule excludes, as written.
func (r *Rule) NotClients() []string { return r.notClientNames }

func (r *Rule) active(t int64) bool { return t >= r.from && t < r.until }

// selectsHost reports whether the rule's host list selects a request whose
// host (hs or hb, whichever is set; neither for a class-only question)
// matched the host lists of the rules in hostRules.
func (r *Rule) selectsHost(hs string, hb []byte, hostRules uint64) bool {
	switch {
	case r.hostBit != 0:
		return hostRules&r.hostBit != 0
	case r.hosts == nil:
		return false
	case hb != nil:
		t, _ := match(r.hosts, hb, 0, "")
		return t != nil
	case hs != "":
		t, _ := match(r.hosts, hs, 0, "")
		return t != nil
	}
	return false
}

// Mode is enforce or report.
type Mode uint8

const (
	// Enforce applies actions as written.
	Enforce Mode = iota
	// Report turns every block into log: a dry run before enforcing.
	Report
)

func (m Mode) String() string {
	if m == Report {
		return "report"
	}
	return "enforce"
}

// CatalogInfo describes one loaded catalog.
type CatalogInfo struct {
	Vendor      string
	Version     string
	Description string
	File        string
	Categories  []string
}

// Policy is a compiled, immutable policy: catalogs, rules and the timeline.
// It is safe for concurrent use.
type Policy struct {
	Name          string
	File          string
	Location      *time.Location
	Mode          Mode
	DefaultAction Action
	Classes       []Class
	Catalogs      []CatalogInfo
	Rules         []*Rule
	// ClientGroups are the groups of the [clients] table, in file order.
	ClientGroups []ClientGroup
	// TunnelWithoutSNI ([tls] tunnel_without_sni) is the least strict
	// action for a tunnel whose ClientHello carries no server name, or
	// that is not TLS at all: such a tunnel cannot be checked against the
	// host it claims, so an operator may flag or refuse it. The default is
	// Log: a CONNECT to an IP literal without a name is the typical way
	// around a host policy, and must at least show up; block would break
	// the TLS clients that rightly send no name to an address.
	TunnelWithoutSNI Action
	// InterceptHosts ([tls.intercept] hosts) are the host patterns whose
	// TLS is terminated so that their requests are decided with their
	// paths, as written; see Intercepts. The CA that makes it possible is
	// configuration, not policy.
	InterceptHosts []string
	// Signatures are the catalogs' signatures, in catalog order: the first
	// that matches a request classifies it (see Decide).
	Signatures []Signature

	catalog     *hostMatcher
	sigs        *sigMatcher  // nil without signatures
	intercept   *hostMatcher // nil when nothing is intercepted
	clientNets  []clientNet  // every group's prefixes, in file order
	transitions []int64      // sorted, unique instants where some rule window opens or closes
	// classRules lists, per class, the rules that can select a request of
	// that class, in policy order, so that a decision skips the others.
	classRules [][]classRule
}

// classRule is a rule that can select a class: always (byHost false), or
// only for the hosts its host list matches.
type classRule struct {
	rule   *Rule
	index  int
	byHost bool
}

// compile builds the lookup structures of a loaded policy. The policy must
// not change afterwards.
func (p *Policy) compile() {
	p.catalog.freeze()
	if p.intercept != nil {
		p.intercept.freeze()
	}
	for _, r := range p.Rules {
		if r.hosts != nil {
			r.hosts.freeze()
		}
	}
	p.classRules = make([][]classRule, len(p.Classes))
	for c := range p.Classes {
		for i, r := range p.Rules {
			switch {
			case r.all || r.classes[c]:
				p.classRules[c] = append(p.classRules[c], classRule{rule: r, index: i})
			case r.hostBit != 0 || r.hosts != nil:
				p.classRules[c] = append(p.classRules[c], classRule{rule: r, index: i, byHost: true})
			}
		}
	}
}

// Decide returns the decision for req. It reads no clock: req.Time is the
// instant decided for. It does not allocate for ASCII host names and paths
// in normal form; it allocates to normalise any other path.
func (p *Policy) Decide(req Request) (d Decision) {
	// The check is here, not only in clientGroups, so that a policy
	// without groups pays no call.
	var groups uint64
	var group string
	if len(p.clientNets) > 0 {
		groups, group = p.clientGroups(req.Client)
	}
	// The usual request has a canonical host and a path in normal form,
	// and needs no buffer; a buffer declared here would be zeroed on
	// every call.
	h := strings.TrimSuffix(req.Host, ".")
	path := req.Path
	if h != "" && len(h) <= maxNameLen {
		switch p.decideHashed(&d, &req, h, path, false, groups, group) {
		case hashedDone:
			return d
		case hashedPathNotNormal:
			n, err := normalizePath(path)
			if err != nil {
				break
			}
			if p.decideHashed(&d, &req, h, n, true, groups, group) == hashedDone {
				return d
			}
		}
		// A host canonicalHost may have to rewrite or refuse, or one
		// the hashed walk cannot take (too many labels, a hash
		// collision), or a path without a normal form.
	}
	normal, hits := scanPath(path, p.sigIndex())
	if !normal {
		n, err := normalizePath(path)
		if err != nil {
			d = p.decideRewritten(req, "", sigHits{}, groups, group)
			d.Invalid = true
			return d
		}
		path = n
		hits = scanNormal(path, p.sigIndex())
	}
	return p.decideRewritten(req, path, hits, groups, group)
}

// What decideHashed did.
const (
	hashedDone          = iota // d is the decision
	hashedHostNotHashed        // the hashed walk cannot take the host
	hashedPathNotNormal        // the path must be normalised first
)

// decideHashed decides req, with host h (req.Host without its trailing
// dot) and path (normalised already if normalized), by the hashed walk,
// unless the walk cannot take h or path is not in normal form; it says
// which. The host is matched before
// the path is checked, so that the same pass looks for signatures only
// where no host entry decides.
func (p *Policy) decideHashed(d *Decision, req *Request, h, path string, normalized bool, groups uint64, group string) int {
	t, hostRules, st := matchHashed(p.catalog, h, req.Port, path, true)
	if st != walkOK {
		return hashedHostNotHashed
	}
	ix := p.sigIndex()
	if t != nil && !t.fallback {
		ix = nil
	}
	normal, hits := scan(path, ix, normalized)
	if !normal {
		return hashedPathNotNormal
	}
	class, pattern, sig := p.classOf(t, hits, req.Method, req.Port, path)
	p.decideAt(d, class, h, nil, hostRules, groups, req.Time.UnixNano())
	d.Pattern, d.Signature, d.ClientGroup = pattern, sig, group
	return hashedDone
}

// sigIndex is the signatures' index, nil without signatures.
func (p *Policy) sigIndex() *sigIndex {
	if p.sigs == nil {
		return nil
	}
	return &p.sigs.idx
}

// classOf applies the precedence of a catalog host match t (nil if none)
// and the signatures whose literals hits has (see scanPath) for a request
// with method,
// port and path (normal form): a host entry wins, because it names the
// host and the catalog's author classified that host's traffic; a
// signature wins over a domain's fallback, which is only a guess for a
// host no entry names, and over no match at all.
func (p *Policy) classOf(t *target, hits sigHits, method string, port int, path string) (class int, pattern, sig string) {
	if p.sigs != nil && (t == nil || t.fallback) && (hits.any() || p.sigs.always) {
		if s := p.sigs.match(hits, method, port, path); s != nil {
			return int(s.class), "", s.name
		}
	}
	if t == nil {
		return 0, "", ""
	}
	return int(t.class), t.pattern, ""
}

// decideRewritten decides for a host that must go through canonicalHost,
// with path and what scanPath found in it, from a client in groups
// whose most specific one is group.
func (p *Policy) decideRewritten(req Request, path string, hits sigHits, groups uint64, group string) (d Decision) {
	var buf hostBuf
	hs, hb, t, hostRules, ok := p.classify(&buf, req.Host, req.Port, path)
	class, pattern, sig := 0, "", ""
	if ok {
		class, pattern, sig = p.classOf(t, hits, req.Method, req.Port, path)
	}
	p.decideAt(&d, class, hs, hb, hostRules, groups, req.Time.UnixNano())
	d.Pattern, d.Signature, d.ClientGroup, d.Invalid = pattern, sig, group, !ok
	return d
}

// classify canonicalises host (into buf if it must be rewritten; see
// canonicalHost), finds its catalog target for port and path (nil if
// none), and the bits of the rules whose host lists match it; ok is false
// if the host has no canonical form. It returns separate values, not a
// struct, so that escape analysis keeps buf on the caller's stack.
func (p *Policy) classify(buf *hostBuf, host string, port int, path string) (hs string, hb []byte, t *target, hostRules uint64, ok bool) {
	hs, hb, err := canonicalHost(buf, host)
	if err != nil {
		return "", nil, nil, 0, false
	}
	if hb != nil {
		t, hostRules = match(p.catalog, hb, port, path)
	} else {
		t, hostRules = match(p.catalog, hs, port, path)
	}
	return hs, hb, t, hostRules, true
}

// decideAt fills d, all but its Pattern and ClientGroup, for a classified
// request from a client in groups at t; d must be zero. It writes into d
// rather than returning a Decision to save a copy of the struct on the
// request path.
func (p *Policy) decideAt(d *Decision, class int, hs string, hb []byte, hostRules, groups uint64, t int64) {
	cl := &p.Classes[class]
	d.Class, d.Vendor, d.Category = class, cl.Vendor, cl.Category
	d.Rule, d.RuleName, d.Action = -1, DefaultRule, p.DefaultAction
	for _, cr := range p.classRules[class] {
		r := cr.rule
		if r.active(t) && r.selectsClient(groups) && (!cr.byHost || r.selectsHost(hs, hb, hostRules)) {
			d.Rule, d.RuleName, d.Action = cr.index, r.Name, r.Action
			break
		}
	}
	d.Action, d.Reported = p.effective(d.Action)
}

// effective returns the action in force for a rule's (or the default)
// action a, and whether report mode turned it from block into log. It is
// the one place report mode applies: Decide, DecideTunnel's
// tunnel_without_sni floor, the timelines and the list of series all go
// through it.
func (p *Policy) effective(a Action) (Action, bool) {
	if p.Mode == Report && a == Block {
		return Log, true
	}
	return a, false
}

// Effective returns the action in force for a rule's (or the default)
// action a: a block in report mode is a log, as Decide reports it.
func (p *Policy) Effective(a Action) Action {
	e, _ := p.effective(a)
	return e
}

// classAt is the decision for a class alone (no host) at t, for a client in
// no group: rules limited by clients do not apply, rules with only
// not_clients do. Metrics gauges are per class, not per client.
func (p *Policy) classAt(class int, t int64) Decision {
	var d Decision
	p.decideAt(&d, class, "", nil, 0, 0, t)
	return d
}

// Change is a point on the timeline where an answer changes.
type Change struct {
	At       time.Time
	Rule     int
	RuleName string
	Action   Action
}

// Explanation is a decision with its place on the timeline.
type Explanation struct {
	Decision
	// Since is when the current answer took effect (zero: it always held).
	Since time.Time
	// Next is the next change of the answer, nil if it never changes again.
	Next *Change
}

// Explain decides req and also reports since when the answer has held and
// when it next changes.
func (p *Policy) Explain(req Request) Explanation {
	var buf hostBuf
	path, pathOK := requestPath(req.Path)
	hits := scanNormal(path, p.sigIndex())
	hs, hb, t, hostRules, hostOK := p.classify(&buf, req.Host, req.Port, path)
	class, pattern, sig := 0, "", ""
	if hostOK {
		class, pattern, sig = p.classOf(t, hits, req.Method, req.Port, path)
	}
	groups, group := p.clientGroups(req.Client)
	at := func(t int64) Decision {
		var d Decision
		p.decideAt(&d, class, hs, hb, hostRules, groups, t)
		return d
	}
	now := req.Time.UnixNano()
	d := at(now)
	d.Pattern, d.Signature, d.ClientGroup, d.Invalid = pattern, sig, group, !pathOK || !hostOK
	e := Explanation{Decision: d}
	same := func(o Decision) bool { return o.Rule == d.Rule && o.Action == d.Action }
	// Walk back over the transitions: the answer took effect at the latest one
	// where the answer just before it was different.
	i := sort.Search(len(p.transitions), func(i int) bool { return p.transitions[i] > now })
	for j := i - 1; j >= 0; j-- {
		if !same(at(p.transitions[j] - 1)) {
			e.Since = p.timeOf(p.transitions[j])
			break
		}
	}
	for _, t := range p.transitions[i:] {
		if o := at(t); !same(o) {
			e.Next = &Change{At: p.timeOf(t), Rule: o.Rule, RuleName: o.RuleName, Action: o.Action}
			break
		}
	}
	return e
}

// NextTransition returns the first instant after t at which any rule window
// opens or closes, and false if there is none. Schedulers wake up then.
func (p *Policy) NextTransition(t time.Time) (time.Time, bool) {
	n := t.UnixNano()
	i := sort.Search(len(p.transitions), func(i int) bool { return p.transitions[i] > n })
	if i == len(p.transitions) {
		return time.Time{}, false
	}
	return p.timeOf(p.transitions[i]), true
}

func (p *Policy) timeOf(ns int64) time.Time { return time.Unix(0, ns).In(p.Location) }

// Segment is one window of a class timeline in which the answer holds.
type Segment struct {
	From, Until time.Time // zero: unbounded
	Rule        int
	RuleName    string
	Action      Action
}

// ClassTimeline returns, for a class, the windows of the answer that category
// rules give (rules selecting explicit hosts are not included: they depend on
// the host). The answers are those for a client in no client group: rules
// limited by clients are left out, rules with only not_clients count.
// Adjacent windows with the same answer are merged.
func (p *Policy) ClassTimeline(class int) []Segment {
	var segs []Segment
	at := func(t int64) Decision { return p.classAt(class, t) }
	d := at(math.MinInt64)
	cur := Segment{Rule: d.Rule, RuleName: d.RuleName, Action: d.Action}
	for _, t := range p.transitions {
		o := at(t)
		if o.Rule == cur.Rule && o.Action == cur.Action {
			continue
		}
		cur.Until = p.timeOf(t)
		segs = append(segs, cur)
		cur = Segment{From: p.timeOf(t), Rule: o.Rule, RuleName: o.RuleName, Action: o.Action}
	}
	return append(segs, cur)
}

// ClassState is the answer for one class at an instant, for metrics.
type ClassState struct {
	Class  Class
	Action Action
	// Next is when the class's answer next changes; zero if never.
	Next time.Time
}

// ClassStates returns the answer in force at t for every vendor class
// (class 0, unclassified traffic, is included as none/none), for a client
// in no client group, as ClassTimeline.
func (p *Policy) ClassStates(t time.Time) []ClassState {
	out := make([]ClassState, len(p.Classes))
	now := t.UnixNano()
	i := sort.Search(len(p.transitions), func(i int) bool { return p.transitions[i] > now })
	for c := range p.Classes {
		d := p.classAt(c, now)
		out[c] = ClassState{Class: p.Classes[c], Action: d.Action}
		for _, tr := range p.transitions[i:] {
			if o := p.classAt(c, tr); o.Rule != d.Rule || o.Action != d.Action {
				out[c].Next = p.timeOf(tr)
				break
			}
		}
	}
	return out
}
