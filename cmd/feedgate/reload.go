package main

import (
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/rules"
)

// reloader re-reads the policy file and swaps the compiled policy in at
// once. A file that does not load, or that would make feedgate an open
// proxy, leaves the running policy in force: the error (with FILE:LINE) is
// logged and counted, and nothing else changes.
type reloader struct {
	mu      sync.Mutex
	file    string // -config; "" for the built-in policy
	listen  string
	srv     *proxy.Server
	m       *metrics.Metrics
	log     *slog.Logger
	started *rules.Policy // the policy feedgate started with
}

// reload loads and applies the policy; trigger names what asked for it.
func (r *reloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, warnings, err := loadPolicy(r.file)
	if err == nil {
		err = checkOpenProxy(r.listen, p)
	}
	if err != nil {
		r.m.ConfigReload(false, time.Now())
		r.log.Error("policy reload failed; the running policy stays in force", "trigger", trigger, "error", problemText(warnings, err))
		return err
	}
	for _, w := range warnings {
		r.log.Warn("policy warning", "problem", w.String())
	}
	if fixed := restartOnly(r.started, p); len(fixed) > 0 {
		r.log.Warn("some changed settings take effect only after a restart", "settings", strings.Join(fixed, ", "))
	}
	r.srv.SetPolicy(p)
	r.m.ConfigReload(true, time.Now())
	r.log.Info("policy reloaded", "trigger", trigger, "policy", p.Name, "file", p.File, "mode", p.Mode.String())
	return nil
}

// problemText is the loader's problems, one per line, as check prints them.
func problemText(warnings []rules.Problem, err error) string {
	var b strings.Builder
	printProblems(&b, warnings, err)
	return strings.TrimSpace(b.String())
}

// restartOnly names the settings that differ between the policy feedgate
// started with and p, and that are read only at start: the listeners'
// companions (access log, inventory), the interception CA and roots, and
// the parent proxy.
func restartOnly(started, p *rules.Policy) []string {
	var out []string
	if started.Log != p.Log {
		out = append(out, "[log]")
	}
	if started.Inventory != p.Inventory {
		out = append(out, "[inventory]")
	}
	si, pi := started.TLS.Intercept, p.TLS.Intercept
	if si.CACert != pi.CACert || si.CAKey != pi.CAKey || !reflect.DeepEqual(si.UpstreamCA, pi.UpstreamCA) ||
		(len(si.Hosts) == 0) != (len(pi.Hosts) == 0) {
		out = append(out, "[tls.intercept] CA and roots")
	}
	su, pu := started.Upstream, p.Upstream
	if su.FromEnv != pu.FromEnv || su.AuthFile != pu.AuthFile || (su.URL == nil) != (pu.URL == nil) || su.URL != nil && su.URL.String() != pu.URL.String() {
		out = append(out, "upstream_proxy")
	}
	return out
}
