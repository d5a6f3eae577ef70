// Package config decodes feedgate's configuration file: the policy (which
// package rules compiles) and the settings around it, in typed sections:
// access, limits, TLS, upstream, log, inventory and PAC. Every problem is
// reported with FILE:LINE, as the policy's are.
//
// The file stays one file with the policy's keys and the settings' keys
// side by side, as operators write it; each section below says whether a
// reload applies it (see RestartOnly), so no list of restart-only settings
// is kept anywhere else.
package config

import (
	"fmt"
	"path"
	"reflect"

	"github.com/BurntSushi/toml"

	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/internal/lines"
)

// Config is a loaded configuration: the compiled policy and the settings.
// It is immutable once loaded.
type Config struct {
	// File is the configuration file's name as given to Load.
	File   string
	Policy *rules.Policy
	// Access says who may use the proxy and where it may connect
	// (reloads).
	Access Access
	// Limits bound the resources clients can hold (reloads).
	Limits Limits
	// TLS holds the tunnel settings of the [tls] table (reloads).
	TLS TLS
	// Intercept holds the interception CA and roots of [tls.intercept]
	// (restart only; which hosts are intercepted is policy).
	Intercept Intercept
	// Upstream is the parent proxy requests go through, if any (restart
	// only).
	Upstream Upstream
	// Log is the access log's format and file (restart only).
	Log Log
	// Inventory is the client inventory's size and state file (restart
	// only).
	Inventory Inventory
	// PAC are the proxy auto-config keys (reloads).
	PAC PAC
	// Transparent is the transparent listeners' setup (restart only).
	Transparent Transparent
	// TransparentVerify is transparent_verify, VerifyLog or VerifyStrict
	// (reloads).
	TransparentVerify string
}

// file is the TOML form of the settings: the keys of the configuration
// file that are not policy.
type file struct {
	AllowedClients []string `toml:"allowed_clients"`
	ConnectPorts   []any    `toml:"connect_ports"`
	HTTPPorts      []any    `toml:"http_ports"`
	DenyPrivate    bool     `toml:"deny_private"`

	Limits limitsFile `toml:"limits"`
	TLS    tlsFile    `toml:"tls"`

	UpstreamProxy         string `toml:"upstream_proxy"`
	UpstreamProxyAuthFile string `toml:"upstream_proxy_auth_file"`

	Log       logFile       `toml:"log"`
	Inventory inventoryFile `toml:"inventory"`
	PACProxy  string        `toml:"pac_proxy"`
	PACAll    bool          `toml:"pac_all"`

	Transparent       []string `toml:"transparent"`
	TransparentTProxy bool     `toml:"transparent_tproxy"`
	TransparentVerify string   `toml:"transparent_verify"`
	TransparentMark   int64    `toml:"transparent_mark"`
}

// Load reads the configuration in file: the settings here, the policy and
// the catalogs it names with rules.Load. Errors are a *rules.ConfigError
// listing every problem found, settings first; warnings come with a valid
// configuration.
func Load(src rules.Source, name string, opts rules.Options) (*Config, []rules.Problem, error) {
	data, err := src.ReadFile(name)
	if err != nil {
		// rules.Load reports an unreadable file as the policy loader
		// always has.
		_, warns, err := rules.Load(src, name, opts)
		return nil, warns, err
	}
	f := &fileCtx{name: name, lines: lines.Parse(string(data))}
	var sf file
	md, err := toml.Decode(string(data), &sf)
	if err != nil {
		line, msg := lines.DecodeError(string(data), err)
		return nil, nil, &rules.ConfigError{Problems: []rules.Problem{{File: name, Line: line, Message: msg}}}
	}
	decoded := map[string]bool{}
	for _, k := range md.Keys() {
		decoded[k.String()] = true
	}
	for _, k := range md.Undecoded() {
		delete(decoded, k.String())
	}
	opts.KnownKey = func(k []string) bool { return decoded[toml.Key(k).String()] }

	c := &Config{File: name}
	c.Access = f.parseAccess(&sf)
	c.Limits = f.parseLimits(sf.Limits)
	c.Upstream = f.parseUpstream(sf.UpstreamProxy, sf.UpstreamProxyAuthFile)
	c.TLS = f.parseTLS(sf.TLS)
	c.Log = f.parseLog(sf.Log)
	c.Inventory = f.parseInventory(sf.Inventory)
	c.PAC = f.parsePAC(sf.PACProxy, sf.PACAll)
	c.Transparent, c.TransparentVerify = f.parseTransparent(&sf)
	p, warns, perr := rules.Load(src, name, opts)
	if p != nil {
		c.Policy = p
		c.Intercept = f.parseIntercept(sf.TLS.Intercept, len(p.InterceptHosts) > 0)
	}

	var errs []rules.Problem
	for _, pr := range f.problems {
		if pr.Warning {
			warns = append(warns, pr)
		} else {
			errs = append(errs, pr)
		}
	}
	if ce, ok := perr.(*rules.ConfigError); ok {
		errs = append(errs, ce.Problems...)
	} else if perr != nil {
		return nil, warns, fmt.Errorf("%s: %w", name, perr)
	}
	if len(errs) > 0 {
		return nil, warns, &rules.ConfigError{Problems: errs}
	}
	return c, warns, nil
}

// fileCtx collects the settings' problems with their lines.
type fileCtx struct {
	name     string
	lines    lines.Index
	problems []rules.Problem
}

func (f *fileCtx) errorf(key, format string, args ...any) {
	f.problems = append(f.problems, rules.Problem{File: f.name, Line: f.lines.Line(key), Key: key, Message: fmt.Sprintf(format, args...)})
}

// resolvePath resolves a file named in the configuration: a relative name
// is relative to the configuration file's directory, as catalogs are. ""
// stays "".
func (f *fileCtx) resolvePath(name string) string {
	if name == "" || path.IsAbs(name) {
		return name
	}
	return path.Join(path.Dir(f.name), name)
}

// section is one part of the configuration, and whether a reload applies
// it: a section that does not reload is read once, when feedgate starts,
// because what it configures (a listener's companion, a file, the CA) is
// built then.
type section struct {
	name    string
	reloads bool
	same    func(a, b *Config) bool
}

// sections lists every part of the configuration. A new section must be
// added here, saying whether it reloads.
func sections() []section {
	eq := func(get func(*Config) any) func(a, b *Config) bool {
		return func(a, b *Config) bool { return reflect.DeepEqual(get(a), get(b)) }
	}
	return []section{
		{"policy", true, func(a, b *Config) bool { return a.Policy == b.Policy }},
		{"access", true, eq(func(c *Config) any { return c.Access })},
		{"[limits]", true, eq(func(c *Config) any { return c.Limits })},
		{"[tls]", true, eq(func(c *Config) any { return c.TLS })},
		{"[tls.intercept] CA and roots", false, eq(func(c *Config) any { return c.Intercept })},
		{"upstream_proxy", false, func(a, b *Config) bool { return a.Upstream.equal(b.Upstream) }},
		{"[log]", false, eq(func(c *Config) any { return c.Log })},
		{"[inventory]", false, eq(func(c *Config) any { return c.Inventory })},
		{"pac_proxy, pac_all", true, eq(func(c *Config) any { return c.PAC })},
		{"transparent, transparent_tproxy, transparent_mark", false, eq(func(c *Config) any { return c.Transparent })},
		{"transparent_verify", true, eq(func(c *Config) any { return c.TransparentVerify })},
	}
}

// RestartOnly names the sections that differ between the configuration
// feedgate started with and a reloaded one but that a reload does not
// apply: they keep their values from the start until a restart.
func RestartOnly(started, reloaded *Config) []string {
	var out []string
	for _, s := range sections() {
		if !s.reloads && !s.same(started, reloaded) {
			out = append(out, s.name)
		}
	}
	return out
}
