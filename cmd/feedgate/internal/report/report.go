package report

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/feedgate/feedgate/proxy/evidence"
	"github.com/feedgate/feedgate/rules"
)

// Options configure a report.
type Options struct {
	// Policy classifies and decides the lines of Squid logs, and names
	// the cut-offs and the timezone of the days.
	Policy *rules.Policy
	// From and Until bound the records read, [From, Until); zero is
	// unbounded.
	From, Until time.Time
	// Verifiers verify the evidence log behind feedgate inputs; nil
	// verifies nothing.
	Verifiers note.Verifiers
	// TopHosts is how many vendor hosts the report lists (0: 20; less
	// than 0: all).
	TopHosts int
}

// defaultTopHosts is TopHosts when Options leave it zero.
const defaultTopHosts = 20

// maxMalformed is how many malformed lines the report names.
const maxMalformed = 20

// maxLine bounds a line; a longer one is malformed. It is the evidence
// log's own bound.
const maxLine = 16 << 20

// Action names as the report counts them: the policy's three, and
// rejected for a request refused before or without a decision.
const (
	actionAllow    = "allow"
	actionLog      = "log"
	actionBlock    = "block"
	actionRejected = "rejected"
)

// Report accumulates inputs into a Result. It is not safe for concurrent
// use.
type Report struct {
	opts        Options
	loc         *time.Location
	from, until int64 // Unix nanoseconds, [from, until)

	// strs interns the few distinct strings of the records (vendors,
	// categories, actions, rules, signatures, instances, dates); clients
	// and hosts, of which there may be many, have their own tables.
	strs    interner
	clientT interner
	hostT   interner
	// caches of the last value of each field, which usually repeats.
	cVendor, cCategory, cAction, cRule, cSig, cInstance, cClient, cHost fieldCache

	classes   map[[2]int32]int32
	classList []classInfo
	lastClass struct {
		key [2]int32
		id  int32
		ok  bool
	}
	none int32 // the id of "none"

	day dayCache

	days     map[dayKey]*dayAgg
	lastDay  dayKey
	lastDayA *dayAgg
	clients  map[pairKey]*clientAgg
	hosts    map[pairKey]*hostAgg // vendor hosts
	sigHosts map[pairKey]*hostAgg // hosts on which a signature matched
	// hostClients holds (host aggregate, client) pairs seen, to count
	// each host's distinct clients.
	hostClients map[pairKey]struct{}
	nextHostID  int32

	cutoffs []*cutoffAgg

	records, skipped int64
	first, last      int64 // the records' time span, Unix nanoseconds
	malformed        Malformed
	inputs           []*inputAgg

	checker    *evidence.Checker
	verifyErr  error
	unverified []string

	jl jsonLine
	sl squidLine
}

// interner maps strings to small ids.
type interner struct {
	ids  map[string]int32
	list []string
}

func (in *interner) id(b []byte) int32 {
	if id, ok := in.ids[string(b)]; ok {
		return id
	}
	if in.ids == nil {
		in.ids = map[string]int32{}
	}
	s := string(b)
	id := int32(len(in.list))
	in.ids[s] = id
	in.list = append(in.list, s)
	return id
}

func (in *interner) idString(s string) int32 {
	if id, ok := in.ids[s]; ok {
		return id
	}
	return in.id([]byte(s))
}

// fieldCache remembers the last value of one field and its id.
type fieldCache struct {
	s  string
	id int32
	ok bool
}

func (c *fieldCache) get(in *interner, b []byte) int32 {
	if c.ok && string(b) == c.s {
		return c.id
	}
	c.id = in.id(b)
	c.s, c.ok = in.list[c.id], true
	return c.id
}

// classInfo is one vendor/category pair of the records.
type classInfo struct {
	vendor, category int32
	isVendor         bool  // vendor is not "none"
	cutoffs          []int // indices into Report.cutoffs
}

// dayCache is the day of the last record: most records fall on the same
// day as the one before them.
type dayCache struct {
	start, end int64 // [start, end) in Unix nanoseconds
	id         int32 // the date's string id
}

type dayKey struct{ day, class, action int32 }

type dayAgg struct{ requests, sent, received int64 }

// pairKey is a pair of ids: (client, class), (host, class), or (host
// aggregate, client).
type pairKey struct{ a, b int32 }

type clientAgg struct {
	first, last      int64
	requests         int64
	lastAction, rule int32
}

type hostAgg struct {
	id                         int32
	requests, allowed, clients int64
	sig                        int32 // -1: none
	sigAt                      int64
}

type cutoffAgg struct {
	rule                      *rules.Rule
	from, until               int64
	vendor                    string
	categories                []string
	requests, blocked, allowd int64
	fromSquid                 int64
	allowedBy                 map[int32]int64
}

// inputAgg is one input's InputInfo as it is read.
type inputAgg struct {
	InputInfo
	instances []int32
	lastInst  int32
}

// New returns an empty report.
func New(opts Options) (*Report, error) {
	if opts.Policy == nil {
		return nil, errors.New("report: no policy")
	}
	if !opts.From.IsZero() && !opts.Until.IsZero() && !opts.Until.After(opts.From) {
		return nil, fmt.Errorf("report: until (%s) is not after from (%s)", opts.Until.Format(time.RFC3339), opts.From.Format(time.RFC3339))
	}
	if opts.TopHosts == 0 {
		opts.TopHosts = defaultTopHosts
	}
	r := &Report{
		opts: opts, loc: opts.Policy.Location, from: math.MinInt64, until: math.MaxInt64,
		classes: map[[2]int32]int32{}, days: map[dayKey]*dayAgg{}, clients: map[pairKey]*clientAgg{},
		hosts: map[pairKey]*hostAgg{}, sigHosts: map[pairKey]*hostAgg{}, hostClients: map[pairKey]struct{}{},
		first: math.MaxInt64, last: math.MinInt64,
		malformed: Malformed{First: []string{}},
	}
	if r.loc == nil {
		r.loc = time.UTC
	}
	if !opts.From.IsZero() {
		r.from = opts.From.UnixNano()
	}
	if !opts.Until.IsZero() {
		r.until = opts.Until.UnixNano()
	}
	r.none = r.strs.idString(rules.NoVendor)
	r.day = dayCache{start: 1, end: 0} // empty: the first record fills it
	if opts.Verifiers != nil {
		r.checker = evidence.NewChecker(opts.Verifiers)
	}
	for _, rule := range opts.Policy.Rules {
		// A cut-off is a dated block of a vendor's classes. Host rules
		// and rules for every class are not: the statement is about a
		// vendor's categories.
		if rule.Action != rules.Block || rule.From.IsZero() || rule.Vendor() == "" {
			continue
		}
		c := &cutoffAgg{rule: rule, from: rule.From.UnixNano(), until: math.MaxInt64, vendor: rule.Vendor(),
			categories: slices.Clone(rule.Categories()), allowedBy: map[int32]int64{}}
		if !rule.Until.IsZero() {
			c.until = rule.Until.UnixNano()
		}
		r.cutoffs = append(r.cutoffs, c)
	}
	return r, nil
}

// Add reads one input, line by line, to its end. Each line is a feedgate
// JSON record (or an evidence checkpoint), or a line of Squid's native
// access.log, told apart line by line. A Squid line is classified and
// decided with the policy at the line's own time: its vendor, category,
// rule and action in the report are what feedgate would have answered,
// not what Squid did. A line that is neither is counted as malformed,
// with its position, and the input goes on.
//
// With Verifiers, every line of an input whose first line is not a Squid
// line goes through the evidence checker, in the order of the Add calls:
// give each instance's files oldest first.
//
// Add returns an error only when r fails.
func (r *Report) Add(name string, in io.Reader) error {
	ia := &inputAgg{InputInfo: InputInfo{Name: name, Format: "empty"}, lastInst: -1}
	r.inputs = append(r.inputs, ia)
	br := bufio.NewReaderSize(in, 256<<10)
	verify := false // this input's lines go to the checker
	decided := false
	firstBlank := 0 // the first blank line before the format is known
	var long []byte
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: gather it, up to maxLine.
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				if len(long) <= maxLine {
					long = append(long, line...)
				}
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: line %d: %w", name, n, err)
		}
		if len(line) == 0 && err == io.EOF {
			break
		}
		newline := len(line) > 0 && line[len(line)-1] == '\n'
		if newline {
			line = line[:len(line)-1]
		}
		ia.Lines++
		if !decided && blank(line) && firstBlank == 0 {
			firstBlank = n
		}
		if !decided && !blank(line) {
			decided = true
			if line[0] == '{' {
				ia.Format = "feedgate"
			} else if scanSquid(line, &r.sl) == nil {
				ia.Format = "squid"
			} else {
				ia.Format = "feedgate"
			}
			verify = r.checker != nil && ia.Format == "feedgate"
			if verify && firstBlank > 0 && r.verifyErr == nil {
				// The checker sees every line of a feedgate log, the
				// blank ones read before it was known to be one too.
				r.verifyErr = r.checker.Line(evidence.Position{File: name, Line: firstBlank}, nil)
			}
			if r.checker != nil && ia.Format == "squid" {
				r.unverified = append(r.unverified, name)
			}
		}
		if verify && r.verifyErr == nil {
			at := evidence.Position{File: name, Line: n}
			switch {
			case len(line) > maxLine:
				r.verifyErr = &evidence.Problem{Position: at, Msg: fmt.Sprintf("line longer than %d bytes", maxLine)}
			case !newline:
				r.verifyErr = &evidence.Problem{Position: at, Msg: "the last line has no newline: the file was cut mid-line"}
			default:
				r.verifyErr = r.checker.Line(at, line)
			}
		}
		switch {
		case len(line) > maxLine:
			r.bad(name, n, fmt.Sprintf("line longer than %d bytes", maxLine))
		case blank(line):
		case line[0] == '{':
			r.jsonLine(ia, name, n, line)
		default:
			r.squidLine(ia, name, n, line)
		}
		if err == io.EOF {
			break
		}
	}
	return nil
}

func blank(b []byte) bool { return skipSpace(b, 0) == len(b) }

// bad counts a malformed line.
func (r *Report) bad(name string, n int, why string) {
	r.malformed.Count++
	if len(r.malformed.First) < maxMalformed {
		r.malformed.First = append(r.malformed.First, fmt.Sprintf("%s:%d: %s", name, n, why))
	}
}

// entry is one record, as the aggregations take it.
type entry struct {
	t                           int64
	vendor, category            []byte
	action, rule, sig, instance []byte
	client, host                []byte
	bySig                       bool
	sent, received              int64
	squid                       bool
}

func (r *Report) jsonLine(ia *inputAgg, name string, n int, line []byte) {
	l := &r.jl
	if err := scanJSON(line, l); err != nil {
		r.bad(name, n, "a line starting with { that is not a JSON object: "+err.Error())
		return
	}
	switch string(l.msg) {
	case "request":
	case "checkpoint":
		// The checker reads checkpoints; they are no request.
		return
	default:
		r.bad(name, n, fmt.Sprintf("a JSON object that is not a decision record (msg %q)", truncate(l.msg, 40)))
		return
	}
	t, ok := parseTime(l.time)
	if !ok {
		r.bad(name, n, fmt.Sprintf("a decision record without a valid time (%q)", truncate(l.time, 40)))
		return
	}
	e := entry{t: t, vendor: l.vendor, category: l.category, action: l.action, rule: l.rule,
		sig: l.signature, instance: l.instance, client: l.client, host: l.host,
		bySig: string(l.match) == rules.MatchSignature, sent: l.sent, received: l.received}
	if len(e.action) == 0 {
		if len(l.rejected) == 0 {
			r.bad(name, n, "a decision record without an action")
			return
		}
		// Refused by an access rule or limit, before or without a
		// decision.
		e.action = []byte(actionRejected)
	}
	if len(e.vendor) == 0 {
		e.vendor = []byte(rules.NoVendor)
	}
	if len(e.category) == 0 {
		e.category = []byte(rules.NoVendor)
	}
	r.add(ia, &e)
}

// squidLine adds a line of Squid's access.log. Squid does not know the
// policy, so the line is classified and decided with it at the line's
// own time: the report's action for it is what feedgate would have done.
func (r *Report) squidLine(ia *inputAgg, name string, n int, line []byte) {
	s := &r.sl
	if err := scanSquid(line, s); err != nil {
		r.bad(name, n, err.Error())
		return
	}
	if s.t < r.from || s.t >= r.until {
		r.skipped++
		return
	}
	client, _ := netip.ParseAddr(string(s.client))
	req := rules.Request{Host: string(s.host), Port: s.port, Client: client.Unmap(), Time: time.Unix(0, s.t)}
	if !s.connect {
		req.Method, req.Path = string(s.method), string(s.path)
	}
	d := r.opts.Policy.Decide(req)
	e := entry{t: s.t, client: s.client, host: s.host, received: s.bytes, squid: true}
	if d.Invalid {
		// feedgate refuses a request it cannot read (400).
		e.vendor, e.category, e.action, e.rule = []byte(rules.NoVendor), []byte(rules.NoVendor), []byte(actionRejected), nil
	} else {
		e.vendor, e.category = []byte(d.Vendor), []byte(d.Category)
		e.action, e.rule = []byte(d.Action.String()), []byte(d.RuleName)
		e.sig, e.bySig = []byte(d.Signature), d.MatchedBy() == rules.MatchSignature
	}
	r.add(ia, &e)
}

// add counts one record in every table.
func (r *Report) add(ia *inputAgg, e *entry) {
	if e.t < r.from || e.t >= r.until {
		r.skipped++
		return
	}
	r.records++
	ia.Records++
	r.first, r.last = min(r.first, e.t), max(r.last, e.t)
	if len(e.instance) > 0 {
		inst := r.cInstance.get(&r.strs, e.instance)
		if inst != ia.lastInst {
			ia.lastInst = inst
			if !slices.Contains(ia.instances, inst) {
				ia.instances = append(ia.instances, inst)
			}
		}
	}
	class := r.class(r.cVendor.get(&r.strs, e.vendor), r.cCategory.get(&r.strs, e.category))
	action := r.cAction.get(&r.strs, e.action)
	k := dayKey{r.dayOf(e.t), class, action}
	da := r.lastDayA
	if da == nil || k != r.lastDay {
		da = r.days[k]
		if da == nil {
			da = &dayAgg{}
			r.days[k] = da
		}
		r.lastDay, r.lastDayA = k, da
	}
	da.requests++
	da.sent += e.sent
	da.received += e.received

	ci := &r.classList[class]
	if !ci.isVendor {
		return
	}
	rule := r.cRule.get(&r.strs, e.rule)
	actionName := r.strs.list[action]
	letThrough := actionName == actionAllow || actionName == actionLog

	client := r.cClient.get(&r.clientT, e.client)
	ca := r.clients[pairKey{client, class}]
	if ca == nil {
		ca = &clientAgg{first: e.t, last: e.t, lastAction: action, rule: rule}
		r.clients[pairKey{client, class}] = ca
	}
	ca.requests++
	ca.first = min(ca.first, e.t)
	if e.t >= ca.last {
		ca.last, ca.lastAction, ca.rule = e.t, action, rule
	}

	table := r.hosts
	if e.bySig {
		table = r.sigHosts
	}
	host := r.cHost.get(&r.hostT, e.host)
	ha := table[pairKey{host, class}]
	if ha == nil {
		ha = &hostAgg{id: r.nextHostID, sig: -1}
		r.nextHostID++
		table[pairKey{host, class}] = ha
	}
	ha.requests++
	if letThrough {
		ha.allowed++
	}
	if e.bySig && e.t >= ha.sigAt {
		ha.sig, ha.sigAt = r.cSig.get(&r.strs, e.sig), e.t
	}
	if _, ok := r.hostClients[pairKey{ha.id, client}]; !ok {
		r.hostClients[pairKey{ha.id, client}] = struct{}{}
		ha.clients++
	}

	for _, i := range ci.cutoffs {
		c := r.cutoffs[i]
		if e.t < c.from || e.t >= c.until {
			continue
		}
		c.requests++
		if e.squid {
			c.fromSquid++
		}
		switch {
		case letThrough:
			c.allowd++
			c.allowedBy[rule]++
		case actionName == actionBlock:
			c.blocked++
		}
	}
}

// class returns the id of a vendor/category pair.
func (r *Report) class(vendor, category int32) int32 {
	key := [2]int32{vendor, category}
	if r.lastClass.ok && r.lastClass.key == key {
		return r.lastClass.id
	}
	id, ok := r.classes[key]
	if !ok {
		id = int32(len(r.classList))
		ci := classInfo{vendor: vendor, category: category, isVendor: vendor != r.none}
		v, cat := r.strs.list[vendor], r.strs.list[category]
		for i, c := range r.cutoffs {
			if c.vendor == v && slices.Contains(c.categories, cat) {
				ci.cutoffs = append(ci.cutoffs, i)
			}
		}
		r.classList = append(r.classList, ci)
		r.classes[key] = id
	}
	r.lastClass.key, r.lastClass.id, r.lastClass.ok = key, id, true
	return id
}

// dayOf returns the id of the date of t in the policy's timezone. Days
// run from local midnight to local midnight, so a day of a daylight
// saving change has 23 or 25 hours.
func (r *Report) dayOf(t int64) int32 {
	if t >= r.day.start && t < r.day.end {
		return r.day.id
	}
	lt := time.Unix(0, t).In(r.loc)
	y, m, d := lt.Date()
	id := r.strs.idString(lt.Format(time.DateOnly))
	start := time.Date(y, m, d, 0, 0, 0, 0, r.loc).UnixNano()
	end := time.Date(y, m, d+1, 0, 0, 0, 0, r.loc).UnixNano()
	if start <= t && t < end {
		r.day = dayCache{start: start, end: end, id: id}
	}
	return id
}
