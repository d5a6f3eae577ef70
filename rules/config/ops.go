package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Log is the [log] table: the access log's format and where it goes.
type Log struct {
	// Format is LogJSON (the decision record) or LogSquid (Squid's native
	// access.log line).
	Format string
	// File is the access log's path; "" means standard output. SIGUSR1
	// reopens it (for logrotate).
	File string
	// Evidence, when set ([log] evidence_key), makes the log
	// tamper-evident (see proxy/evidence).
	Evidence *Evidence
}

// Evidence is the tamper-evident log's settings.
type Evidence struct {
	// KeyFile is the signer key (feedgate evidence keygen), relative to
	// the configuration file. It is read when feedgate starts.
	KeyFile string
	// Instance names this feedgate's chain: every replica has its own.
	Instance string
	// CheckpointEvery and CheckpointInterval say when a signed
	// checkpoint is written: after that many records, and that long
	// after the first record the last one does not cover.
	CheckpointEvery    int
	CheckpointInterval time.Duration
}

// Evidence defaults.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second
)

// StateFile is where the evidence chain is kept across restarts: next to
// the log file.
func (l Log) StateFile() string { return l.File + ".evidence" }

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
	Format             string        `toml:"format"`
	File               string        `toml:"file"`
	EvidenceKey        string        `toml:"evidence_key"`
	Instance           string        `toml:"instance"`
	CheckpointEvery    int           `toml:"checkpoint_every"`
	CheckpointInterval time.Duration `toml:"checkpoint_interval"`
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
	if lf.EvidenceKey == "" {
		for _, k := range []struct {
			key string
			set bool
		}{{"instance", lf.Instance != ""}, {"checkpoint_every", lf.CheckpointEvery != 0}, {"checkpoint_interval", lf.CheckpointInterval != 0}} {
			if k.set {
				f.errorf("log."+k.key, "%s is set without evidence_key: it only configures the tamper-evident log", k.key)
			}
		}
		return l
	}
	e := &Evidence{KeyFile: f.resolvePath(lf.EvidenceKey), Instance: lf.Instance,
		CheckpointEvery: DefaultCheckpointEvery, CheckpointInterval: DefaultCheckpointInterval}
	switch {
	case l.File == "":
		f.errorf("log.evidence_key", "evidence_key needs [log] file: the evidence chain is kept in a file, next to its state")
	case l.Format != LogJSON:
		f.errorf("log.evidence_key", "evidence_key needs format = \"json\": a Squid line has no room for the fields that seal a record")
	}
	if e.Instance == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			f.errorf("log.instance", "no instance name, and the host name cannot be read: set instance")
		}
		e.Instance = h
	}
	if strings.ContainsAny(e.Instance, "\n\r") || !utf8.ValidString(e.Instance) {
		f.errorf("log.instance", "instance %q: one line of text, please", e.Instance)
	}
	e.CheckpointEvery = f.optionalCount("log", "checkpoint_every", lf.CheckpointEvery, e.CheckpointEvery)
	e.CheckpointInterval = f.optionalDuration("log", "checkpoint_interval", lf.CheckpointInterval, 100*time.Millisecond, "100ms", e.CheckpointInterval)
	if _, err := ReadSigner(e.KeyFile); err != nil {
		f.errorf("log.evidence_key", "%v", err)
	}
	l.Evidence = e
	return l
}

// ReadSigner reads a signer key written by feedgate evidence keygen.
func ReadSigner(file string) (note.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("evidence key: %w", err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("evidence key %s: not a signer key (feedgate evidence keygen writes one): %w", file, err)
	}
	return s, nil
}

func (f *fileCtx) parseInventory(inf inventoryFile) Inventory {
	s := Inventory{MaxClients: DefaultMaxClients, StateFile: f.resolvePath(inf.StateFile), SaveInterval: DefaultSaveInterval}
	s.MaxClients = f.optionalCount("inventory", "max_clients", inf.MaxClients, s.MaxClients)
	s.SaveInterval = f.optionalDuration("inventory", "save_interval", inf.SaveInterval, time.Second, `a second: write a duration such as "1m"`, s.SaveInterval)
	return s
}

// optionalCount is key of table: v when set (positive), def when 0; a
// negative v is an error.
func (f *fileCtx) optionalCount(table, key string, v, def int) int {
	switch {
	case v < 0:
		f.errorf(table+"."+key, "%s must not be negative", key)
	case v > 0:
		return v
	}
	return def
}

// optionalDuration is key of table: v when set, def when 0; a negative v,
// or one shorter than min (minText in the message), is an error.
func (f *fileCtx) optionalDuration(table, key string, v, min time.Duration, minText string, def time.Duration) time.Duration {
	switch {
	case v < 0:
		f.errorf(table+"."+key, "%s must not be negative", key)
	case v > 0 && v < min:
		f.errorf(table+"."+key, "%s %s is shorter than %s", key, v, minText)
	case v > 0:
		return v
	}
	return def
}

func (f *fileCtx) parsePAC(proxy string, all bool) PAC {
	if proxy != "" && !ValidPACProxy(proxy) {
		f.errorf("pac_proxy", "pac_proxy %q: want host:port, the address clients use to reach this proxy", proxy)
	}
	return PAC{Proxy: proxy, All: all}
}

// ValidPACProxy reports whether s can be a PAC file's proxy address:
// host:port, with a host and a port from 1 to 65535.
func ValidPACProxy(s string) bool {
	host, port, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(port)
	return err == nil && host != "" && perr == nil && n >= 1 && n <= 65535
}
