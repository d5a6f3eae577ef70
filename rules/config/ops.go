package config

import (
	"net"
	"strconv"
	"time"
)

// Log is the [log] table: the access log's format and where it goes.
type Log struct {
	// Format is LogJSON (the decision record) or LogSquid (Squid's native
	// access.log line).
	Format string
	// File is the access log's path; "" means standard output. SIGUSR1
	// reopens it (for logrotate).
	File string
}

// Access log formats.
const (
	LogJSON  = "json"
	LogSquid = "squid"
)

// Inventory is the [inventory] table: the record of which clients
// still talk to a vendor.
type Inventory struct {
	// MaxClients caps the entries (client × vendor × category); the least
	// recently seen is evicted beyond it.
	MaxClients int
	// StateFile keeps the inventory across restarts; "" keeps it in
	// memory only.
	StateFile string
	// SaveInterval is how often the state file is written (and always at
	// shutdown).
	SaveInterval time.Duration
}

// Inventory defaults.
const (
	DefaultMaxClients   = 100000
	DefaultSaveInterval = time.Minute
)

// PAC are the proxy auto-config keys.
type PAC struct {
	// Proxy is the proxy address clients are told to use, host:port; ""
	// means the proxy listener's own address when that is not a wildcard.
	Proxy string
	// All sends every host through the proxy, not only the vendors'.
	All bool
}

type logFile struct {
	Format string `toml:"format"`
	File   string `toml:"file"`
}

type inventoryFile struct {
	MaxClients   int           `toml:"max_clients"`
	StateFile    string        `toml:"state_file"`
	SaveInterval time.Duration `toml:"save_interval"`
}

func (f *fileCtx) parseLog(lf logFile) Log {
	l := Log{Format: LogJSON, File: f.resolvePath(lf.File)}
	switch lf.Format {
	case "", LogJSON:
	case LogSquid:
		l.Format = LogSquid
	default:
		f.errorf("log.format", "unknown log format %q: want \"json\" or \"squid\"", lf.Format)
	}
	return l
}

func (f *fileCtx) parseInventory(inf inventoryFile) Inventory {
	s := Inventory{MaxClients: DefaultMaxClients, StateFile: f.resolvePath(inf.StateFile), SaveInterval: DefaultSaveInterval}
	switch {
	case inf.MaxClients < 0:
		f.errorf("inventory.max_clients", "max_clients must not be negative")
	case inf.MaxClients > 0:
		s.MaxClients = inf.MaxClients
	}
	switch {
	case inf.SaveInterval < 0:
		f.errorf("inventory.save_interval", "save_interval must not be negative")
	case inf.SaveInterval > 0 && inf.SaveInterval < time.Second:
		f.errorf("inventory.save_interval", "save_interval %s is shorter than a second: write a duration such as \"1m\"", inf.SaveInterval)
	case inf.SaveInterval > 0:
		s.SaveInterval = inf.SaveInterval
	}
	return s
}

func (f *fileCtx) parsePAC(proxy string, all bool) PAC {
	if proxy != "" {
		host, port, err := net.SplitHostPort(proxy)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			f.errorf("pac_proxy", "pac_proxy %q: want host:port, the address clients use to reach this proxy", proxy)
		}
	}
	return PAC{Proxy: proxy, All: all}
}
