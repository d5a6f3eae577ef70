package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/proxy/intercept"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
	"github.com/feedgate/feedgate/rules/feeds"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `usage:
  feedgate [run] [-config FILE] [-listen ADDR] [-admin ADDR] [-web.config.file FILE] [-admin.insecure] [-at TIME] [-resolve HOST:PORT:ADDR ...] [-admin.enable-reload]
  feedgate check [-config FILE] [-export LIST]
  feedgate explain [-config FILE] [-at TIME] [-client IP] [-method M] [-json] TARGET ...
  feedgate ca init -dir DIR [-org NAME]
  feedgate evidence keygen -dir DIR [-name NAME]
  feedgate verify -key VERIFIER [-allow-tail] FILE...
  feedgate report [-config FILE] [-from TIME] [-until TIME] [-format html|json|csv] [-o FILE] [-key VERIFIER] [-top N] FILE...
  feedgate clients [-admin URL] [-vendor V] [-category C] [-match host|signature] [-since TIME]
  feedgate export -format edl|hosts|dnsmasq|rpz|squid [-config FILE] [-vendor V] [-action A] [-at TIME]
  feedgate export -format pac [-config FILE] [-proxy HOST:PORT]
  feedgate version

Without -config, feedgate uses its built-in policy (the US 2024 Kaspersky timeline).
`

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runProxy(args, stdout, stderr, nil)
	case "check":
		return runCheck(args, stdout, stderr)
	case "explain":
		return runExplain(args, stdout, stderr)
	case "ca":
		return runCA(args, stdout, stderr)
	case "evidence":
		return runEvidence(args, stdout, stderr)
	case "verify":
		return runVerify(args, stdout, stderr)
	case "report":
		return runReport(args, os.Stdin, stdout, stderr)
	case "clients":
		return runClients(args, stdout, stderr)
	case "export":
		return runExport(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "feedgate %s (%s)\n", buildVersion(), runtime.Version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "feedgate: unknown command %q\n%s", cmd, usage)
	return 2
}

// loadConfig loads the configuration in file, or the built-in one when
// file is "".
func loadConfig(file string) (*config.Config, []rules.Problem, error) {
	builtin := rules.FS{FS: configs.Files()}
	if file == "" {
		c, warnings, err := config.Load(builtin, configs.DefaultPolicy, rules.Options{Builtin: builtin})
		if c != nil {
			c.File = "built-in " + c.File
			c.Policy.File = c.File
		}
		return c, warnings, err
	}
	return config.Load(rules.Dir{}, file, rules.Options{Builtin: builtin})
}

// printProblems writes problems one per line and reports whether any is an
// error.
func printProblems(w io.Writer, problems []rules.Problem, err error) {
	for _, p := range problems {
		fmt.Fprintln(w, p.String())
	}
	var ce *rules.ConfigError
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintln(w, p.String())
		}
	} else if err != nil {
		fmt.Fprintln(w, err)
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("feedgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	config := fs.String("config", "", "policy `FILE` (default: the built-in policy)")
	exportList := fs.String("export", "", "warn about what the comma-separated exports in `LIST` (edl, hosts, dnsmasq, rpz, squid, pac) cannot carry")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "feedgate check: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	exports, err := parseExports(*exportList)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate check: -export: %v\n", err)
		return 2
	}
	c, warnings, err := loadConfig(*config)
	printProblems(stderr, warnings, err)
	if err != nil {
		return 1
	}
	// A configuration that sets pac_proxy serves a PAC file, whether or
	// not -export names it.
	byConfig := c.PAC.Proxy != "" && !slices.Contains(exports, pacExport)
	if byConfig {
		exports = append(exports, pacExport)
	}
	sigFile := func(f string) string { return f }
	if *config == "" {
		sigFile = func(f string) string { return "built-in " + f }
	}
	printProblems(stderr, exportWarnings(c, exports, byConfig, sigFile), nil)
	p := c.Policy
	printTimeline(stdout, p)
	return 0
}

// pacExport is the name -export gives the PAC file, beside the list
// formats of package feeds.
const pacExport = "pac"

// parseExports parses check's -export list: list formats and "pac", each
// once, in the order given.
func parseExports(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name != pacExport {
			if _, err := feeds.ParseFormat(name); err != nil {
				return nil, fmt.Errorf("unknown export %q (known: edl, hosts, dnsmasq, rpz, squid, pac)", name)
			}
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// sigEffect is a class whose signatures change what its requests get: at
// some time the class's answer differs from unclassified traffic's, so a
// request on a host that no catalog names is decided by its path.
type sigEffect struct {
	class rules.Class
	sigs  []rules.Signature
	diffs []string // "block instead of allow (from ...)"
}

// signatureEffects returns the classes with signatures whose answer
// differs, at some time, from the answer for unclassified traffic (vendor
// none, class 0), for a client in no client group, in class order.
func signatureEffects(p *rules.Policy) []sigEffect {
	var out []sigEffect
	none := p.ClassTimeline(0)
	for c, cl := range p.Classes {
		if c == 0 {
			continue
		}
		e := sigEffect{class: cl}
		for _, sig := range p.Signatures {
			if sig.Vendor == cl.Vendor && sig.Category == cl.Category {
				e.sigs = append(e.sigs, sig)
			}
		}
		if len(e.sigs) == 0 {
			continue
		}
		e.diffs = timelineDiffs(p.ClassTimeline(c), none, p.Location)
		if len(e.diffs) > 0 {
			out = append(out, e)
		}
	}
	return out
}

// timelineDiffs compares two timelines over the union of their windows
// and describes, in time order, each window in which a's action differs
// from b's.
func timelineDiffs(a, b []rules.Segment, loc *time.Location) []string {
	var cuts []time.Time // every window start but the first, unbounded one
	for _, segs := range [][]rules.Segment{a, b} {
		for _, s := range segs {
			if !s.From.IsZero() {
				cuts = append(cuts, s.From)
			}
		}
	}
	slices.SortFunc(cuts, time.Time.Compare)
	cuts = slices.CompactFunc(cuts, time.Time.Equal)
	// Window i runs from starts[i] (zero: unbounded) to the next start.
	starts := append([]time.Time{{}}, cuts...)
	var out []string
	var from time.Time
	var cur [2]rules.Action
	open := false
	flush := func(until time.Time) {
		if open {
			out = append(out, fmt.Sprintf("%s instead of %s (%s)", cur[0], cur[1], window(from, until, loc)))
			open = false
		}
	}
	for _, t := range starts {
		pair := [2]rules.Action{actionAt(a, t), actionAt(b, t)}
		if open && pair == cur {
			continue
		}
		flush(t)
		if pair[0] != pair[1] {
			from, cur, open = t, pair, true
		}
	}
	flush(time.Time{})
	return out
}

// actionAt is the action of the window of segs that holds t; the zero t
// is the beginning of time, in the first window.
func actionAt(segs []rules.Segment, t time.Time) rules.Action {
	for _, s := range segs {
		if (s.From.IsZero() || !t.Before(s.From)) && (s.Until.IsZero() || t.Before(s.Until)) {
			return s.Action
		}
	}
	return segs[0].Action
}

// enforcer names what enforces a list in format f.
func enforcer(f feeds.Format) string {
	switch f {
	case feeds.EDL:
		return "a firewall"
	case feeds.Hosts:
		return "a machine"
	case feeds.Squid:
		return "a Squid"
	}
	return "a resolver"
}

// exportWarnings warns, for each export that cannot carry signatures (every
// list format, and a PAC file without pac_all), about each class whose
// answer depends on them. byConfig says that pac_proxy chose the PAC file.
func exportWarnings(c *config.Config, exports []string, byConfig bool, sigFile func(string) string) []rules.Problem {
	if len(exports) == 0 {
		return nil
	}
	effects := signatureEffects(c.Policy)
	var out []rules.Problem
	for _, x := range exports {
		if x == pacExport && c.PAC.All {
			continue
		}
		label := "export " + x
		if x == pacExport && byConfig {
			label += " (pac_proxy is set)"
		}
		for _, e := range effects {
			sigs := make([]string, len(e.sigs))
			for i, sig := range e.sigs {
				sigs[i] = fmt.Sprintf("%s at %s:%d", sig.Name, sigFile(sig.File), sig.Line)
			}
			verb := "classify"
			if len(e.sigs) == 1 {
				verb = "classifies"
			}
			what := fmt.Sprintf("%s: %s (%s) %s requests on any host by their path as %s/%s, which then get %s; ",
				label, plural(len(e.sigs), "signature"), strings.Join(sigs, ", "), verb, e.class.Vendor, e.class.Category, strings.Join(e.diffs, " and "))
			if x == pacExport {
				what += "a PAC file sees host names only, so clients that follow it reach hosts no catalog names DIRECT, and internal mirrors are never checked; set pac_all = true"
			} else {
				what += fmt.Sprintf("the %s list holds names only, so %s that enforces it never checks these paths: internal mirrors are decided only where their traffic passes through feedgate (the proxy port or the transparent listener)", x, enforcer(feeds.Format(x)))
			}
			out = append(out, rules.Problem{File: c.File, Message: what, Warning: true})
		}
	}
	return out
}

// plural returns "1 name" or "2 names".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func fmtTime(t time.Time, loc *time.Location) string {
	return t.In(loc).Format(time.RFC3339)
}

// printTimeline prints, for each vendor and category, the action in force in
// each dated window.
func printTimeline(w io.Writer, p *rules.Policy) {
	fmt.Fprintf(w, "policy %q (%s): OK\n", p.Name, p.File)
	fmt.Fprintf(w, "timezone %s, mode %s, default action %s\n", p.Location, p.Mode, p.DefaultAction)
	for _, c := range p.Catalogs {
		fmt.Fprintf(w, "catalog %s version %s (%s)\n", c.Vendor, c.Version, c.File)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for c, cl := range p.Classes {
		if c == 0 {
			continue
		}
		fmt.Fprintf(tw, "\n%s/%s\n", cl.Vendor, cl.Category)
		for _, seg := range p.ClassTimeline(c) {
			fmt.Fprintf(tw, "  %s\t%s\trule %s\n", window(seg.From, seg.Until, p.Location), seg.Action, seg.RuleName)
		}
	}
	tw.Flush()
	var hostRules []*rules.Rule
	for _, r := range p.Rules {
		if len(r.Hosts()) > 0 {
			hostRules = append(hostRules, r)
		}
	}
	if len(hostRules) > 0 {
		fmt.Fprintf(w, "\nhost rules (apply to the hosts named, before later rules):\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, r := range hostRules {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Name, window(r.From, r.Until, p.Location), r.Action, strings.Join(r.Hosts(), ", "))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nother traffic (vendor none): %s\n", p.DefaultAction)
}

func window(from, until time.Time, loc *time.Location) string {
	switch {
	case from.IsZero() && until.IsZero():
		return "always"
	case from.IsZero():
		return "before " + fmtTime(until, loc)
	case until.IsZero():
		return "from " + fmtTime(from, loc)
	}
	return fmtTime(from, loc) + " to " + fmtTime(until, loc)
}

// explainJSON is one line of explain -json output.
type explainJSON struct {
	Target      string   `json:"target"`
	Host        string   `json:"host"`
	Port        int      `json:"port"`
	Path        string   `json:"path,omitempty"`
	Invalid     string   `json:"invalid,omitempty"`
	Client      string   `json:"client,omitempty"`
	ClientGroup string   `json:"client_group,omitempty"`
	At          string   `json:"at"`
	Policy      string   `json:"policy"`
	Vendor      string   `json:"vendor"`
	Category    string   `json:"category"`
	Pattern     string   `json:"pattern"`
	Match       string   `json:"match,omitempty"`
	Signature   *sigJSON `json:"signature,omitempty"`
	Rule        string   `json:"rule"`
	Action      string   `json:"action"`
	ReportOnly  bool     `json:"report_only"`
	Reason      string   `json:"reason"`
	Since       *string  `json:"since"`
	NextChange  *string  `json:"next_change"`
	NextAction  *string  `json:"next_action"`
	NextRule    *string  `json:"next_rule"`
}

// sigJSON is the catalog signature that classified an explained request.
type sigJSON struct {
	Name    string `json:"name"`
	Pattern string `json:"pattern"` // the path pattern that matched, as written
	Defined string `json:"defined"` // FILE:LINE
}

// explainSignature returns the signature that classified e (for a
// request with path), nil if none did.
func explainSignature(p *rules.Policy, e rules.Explanation, path string) *sigJSON {
	if e.Signature == "" {
		return nil
	}
	out := &sigJSON{Name: e.Signature, Pattern: p.SignaturePattern(e.Decision, path)}
	for _, s := range p.Signatures {
		if s.Vendor == e.Vendor && s.Name == e.Signature {
			out.Defined = fmt.Sprintf("%s:%d", s.File, s.Line)
		}
	}
	return out
}

func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain", stderr)
	config := fs.String("config", "", "policy `FILE` (default: the built-in policy)")
	at := fs.String("at", "", "explain at this `TIME` (RFC 3339; default: now)")
	asJSON := fs.Bool("json", false, "print one JSON object per target per line")
	clientIP := fs.String("client", "", "explain for a request from this client `IP` (for rules with clients or not_clients)")
	method := fs.String("method", "GET", "the `METHOD` of a URL target (for catalog signatures that name methods)")
	targets, ok := parseInterspersed(fs, args)
	if !ok {
		return 2
	}
	if len(targets) == 0 {
		fmt.Fprintln(stderr, "feedgate explain: name at least one TARGET (host, host:port or URL)")
		return 2
	}
	p, now, loadStatus := policyAt("explain", *config, *at, stderr)
	if p == nil {
		return loadStatus
	}
	var client netip.Addr
	if *clientIP != "" {
		var err error
		if client, err = netip.ParseAddr(*clientIP); err != nil {
			fmt.Fprintf(stderr, "feedgate explain: -client: %v\n", err)
			return 2
		}
		client = client.Unmap()
	}
	status := 0
	enc := json.NewEncoder(stdout)
	for _, s := range targets {
		t, err := rules.ParseTarget(s)
		if err != nil {
			fmt.Fprintf(stderr, "feedgate explain: %v\n", err)
			status = 1
			continue
		}
		req := rules.Request{Host: t.Host, Port: t.Port, Path: t.Path, Client: client, Time: now}
		if t.Path != "" {
			req.Method = *method
		}
		e := p.Explain(req)
		sig := explainSignature(p, e, t.Path)
		// The proxy decides and logs the path as origins read it, and
		// refuses with 400 what it cannot read; explain says the same.
		invalid := ""
		if _, err := rules.CanonicalHost(t.Host); err != nil {
			invalid = err.Error()
		} else if t.Path != "" {
			if n, err := rules.NormalizePath(t.Path); err != nil {
				invalid = err.Error()
			} else {
				t.Path = n
			}
		}
		if invalid == "" && e.Invalid {
			invalid = "the policy cannot read this request"
		}
		if invalid != "" && !*asJSON {
			fmt.Fprintf(stdout, "%s: refused with 400 before any rule: %s\n", s, invalid)
			continue
		}
		reason := ""
		if e.Rule >= 0 {
			reason = p.Rules[e.Rule].Reason
		}
		if *asJSON {
			out := explainJSON{
				Target: s, Host: t.Host, Port: t.Port, Path: t.Path, Invalid: invalid, At: fmtTime(now, p.Location), Policy: p.Name,
				Vendor: e.Vendor, Category: e.Category, Pattern: e.Pattern, Match: e.MatchedBy(), Signature: sig, Rule: e.RuleName,
				Action: e.Action.String(), ReportOnly: e.Reported, Reason: reason,
				Client: *clientIP, ClientGroup: e.ClientGroup,
			}
			if !e.Since.IsZero() {
				s := fmtTime(e.Since, p.Location)
				out.Since = &s
			}
			if e.Next != nil {
				at, action, rule := fmtTime(e.Next.At, p.Location), e.Next.Action.String(), e.Next.RuleName
				out.NextChange, out.NextAction, out.NextRule = &at, &action, &rule
			}
			if err := enc.Encode(out); err != nil {
				fmt.Fprintf(stderr, "feedgate explain: %v\n", err)
				return 1
			}
			continue
		}
		printExplanation(stdout, p, t, now, client, e, sig, reason)
	}
	return status
}

func printExplanation(w io.Writer, p *rules.Policy, t rules.Target, now time.Time, client netip.Addr, e rules.Explanation, sig *sigJSON, reason string) {
	where := fmt.Sprintf("port %d", t.Port)
	if t.Path != "" {
		where += ", path " + t.Path
	}
	if client.IsValid() {
		where += ", client " + client.String()
	}
	fmt.Fprintf(w, "%s (%s) at %s\n", t.Input, where, fmtTime(now, p.Location))
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	if client.IsValid() || len(p.ClientGroups) > 0 {
		group := e.ClientGroup
		if group == "" {
			group = "none"
		}
		fmt.Fprintf(tw, "  client group:\t%s\n", group)
	}
	fmt.Fprintf(tw, "  vendor:\t%s\n", e.Vendor)
	cat := e.Category
	switch {
	case e.Pattern != "":
		cat += " (catalog pattern " + e.Pattern + ")"
	case sig != nil:
		// The host is not the vendor's: the path is, wherever it is
		// served (an internal update mirror, say).
		cat += fmt.Sprintf(" (catalog signature %s, path pattern %s, %s)", sig.Name, sig.Pattern, sig.Defined)
	}
	fmt.Fprintf(tw, "  category:\t%s\n", cat)
	fmt.Fprintf(tw, "  rule:\t%s\n", e.RuleName)
	if reason != "" {
		fmt.Fprintf(tw, "  reason:\t%s\n", reason)
	}
	action := e.Action.String()
	if e.Reported {
		action += " (block, reported only: mode is report)"
	}
	if !e.Since.IsZero() {
		action += " since " + fmtTime(e.Since, p.Location)
	}
	fmt.Fprintf(tw, "  action:\t%s\n", action)
	if e.Next != nil {
		fmt.Fprintf(tw, "  next change:\t%s: %s (rule %s)\n", fmtTime(e.Next.At, p.Location), e.Next.Action, e.Next.RuleName)
	} else {
		fmt.Fprintf(tw, "  next change:\tnone\n")
	}
	tw.Flush()
}

func runCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "init" {
		fmt.Fprintf(stderr, "feedgate ca: want \"feedgate ca init -dir DIR\"\n%s", usage)
		return 2
	}
	fs := newFlagSet("ca init", stderr)
	dir := fs.String("dir", "", "write ca.crt and ca.key into `DIR` (created if missing; existing files are never overwritten)")
	org := fs.String("org", "", "organisation `NAME` in the CA's subject (default feedgate)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "feedgate ca init: -dir DIR is required, and nothing else")
		return 2
	}
	certFile, keyFile, err := intercept.CreateCA(*dir, *org, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "feedgate ca init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s (give it to clients to trust) and %s (keep it secret)\n", certFile, keyFile)
	fmt.Fprintf(stdout, "use them in the policy:\n\n[tls.intercept]\nhosts = [\"...\"]\nca_cert = %q\nca_key = %q\n", certFile, keyFile)
	return 0
}

// policyAt loads the policy of the offline commands (explain, export) and
// the instant they answer for (-at, or now). When either fails it says
// why on stderr and returns a nil policy and the exit status.
func policyAt(cmd, file, at string, stderr io.Writer) (*rules.Policy, time.Time, int) {
	c, warnings, err := loadConfig(file)
	if err != nil {
		printProblems(stderr, warnings, err)
		return nil, time.Time{}, 1
	}
	now, err := instantOrNow(at, c.Policy.Location)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate %s: -at: %v\n", cmd, err)
		return nil, time.Time{}, 2
	}
	return c.Policy, now, 0
}

// instantOrNow parses an -at flag in the policy's timezone; "" is now.
func instantOrNow(at string, loc *time.Location) (time.Time, error) {
	if at == "" {
		return time.Now(), nil
	}
	return rules.ParseInstant(at, loc)
}
