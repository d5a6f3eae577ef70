package main

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/admin"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
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
	started *config.Config // the configuration feedgate started with
	// last is the last load or reload, for the status page; it is read
	// without mu, which a reload holds while it loads.
	last atomic.Pointer[admin.ReloadStatus]
}

func newReloader(file, listen string, srv *proxy.Server, m *metrics.Metrics, log *slog.Logger, started *config.Config) *reloader {
	r := &reloader{file: file, listen: listen, srv: srv, m: m, log: log, started: started}
	now := time.Now()
	r.last.Store(&admin.ReloadStatus{At: now, Trigger: "start", Success: true, LastSuccess: now})
	return r
}

// status is the last load or reload.
func (r *reloader) status() admin.ReloadStatus { return *r.last.Load() }

// reload loads and applies the policy; trigger names what asked for it.
func (r *reloader) reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, warnings, err := loadConfig(r.file)
	if err == nil {
		err = checkOpenProxy(r.listen, c)
	}
	if err != nil {
		now := time.Now()
		r.m.ConfigReload(false, now)
		r.last.Store(&admin.ReloadStatus{At: now, Trigger: trigger, Error: problemText(warnings, err), LastSuccess: r.status().LastSuccess})
		r.log.Error("policy reload failed; the running policy stays in force", "trigger", trigger, "error", problemText(warnings, err))
		return err
	}
	for _, w := range warnings {
		r.log.Warn("policy warning", "problem", w.String())
	}
	if fixed := config.RestartOnly(r.started, c); len(fixed) > 0 {
		r.log.Warn("some changed settings take effect only after a restart", "settings", strings.Join(fixed, ", "))
	}
	r.srv.SetConfig(c)
	now := time.Now()
	r.m.ConfigReload(true, now)
	r.last.Store(&admin.ReloadStatus{At: now, Trigger: trigger, Success: true, LastSuccess: now})
	p := c.Policy
	r.log.Info("policy reloaded", "trigger", trigger, "policy", p.Name, "file", p.File, "mode", p.Mode.String())
	return nil
}

// problemText is the loader's problems, one per line, as check prints them.
func problemText(warnings []rules.Problem, err error) string {
	var b strings.Builder
	printProblems(&b, warnings, err)
	return strings.TrimSpace(b.String())
}
