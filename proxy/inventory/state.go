package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/atomicfile"
	"github.com/feedgate/feedgate/rules"
)

// stateVersion is the version of the state file format. A file with another
// version is refused rather than guessed at.
const stateVersion = 1

// state is the state file's content.
type state struct {
	Version int       `json:"version"`
	SavedAt time.Time `json:"saved_at"`
	Entries []Entry   `json:"entries"`
}

// load reads the state file into an empty inventory. Entries are installed
// only once the whole file has been checked, so that a corrupt file leaves
// the inventory empty rather than half loaded.
func (inv *Inventory) load() error {
	data, err := os.ReadFile(inv.stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		// The *PathError already names the file.
		return fmt.Errorf("inventory: loading state: %w", err)
	}
	entries, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("inventory: state file %s: %w", inv.stateFile, err)
	}
	sortEntries(entries)
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if len(entries) > inv.max {
		// Dropped entries are lost from the inventory just as evicted ones
		// are: the count tells operators it is incomplete.
		inv.evictions += uint64(len(entries) - inv.max)
		entries = entries[:inv.max]
	}
	for _, e := range entries {
		n := &node{Entry: e}
		inv.entries[e.key()] = n
		inv.pushBack(n)
	}
	return nil
}

// decodeState parses and checks a state file.
func decodeState(data []byte) ([]Entry, error) {
	// The version is read before the entries, so that a file from another
	// version is reported as such and not as whatever its entries fail on.
	var head struct {
		Version *int            `json:"version"`
		Entries json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	switch {
	case head.Version == nil:
		return nil, errors.New("no version field: not a feedgate inventory")
	case *head.Version != stateVersion:
		return nil, fmt.Errorf("unsupported version %d (want %d)", *head.Version, stateVersion)
	}
	var raws []json.RawMessage
	if len(head.Entries) > 0 {
		if err := json.Unmarshal(head.Entries, &raws); err != nil {
			return nil, fmt.Errorf("entries: %w", err)
		}
	}
	// Each entry is decoded alone so that an error can say which one.
	entries := make([]Entry, 0, len(raws))
	seen := make(map[Key]bool, len(raws))
	for i, raw := range raws {
		var e Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		// Record never stores these, so a file holding them was not
		// written by Save. (A LastSeen before FirstSeen is not checked:
		// a wall clock stepped back makes one.)
		switch {
		case !e.Client.IsValid():
			return nil, fmt.Errorf("entry %d: no client address", i)
		case e.Vendor == "" || e.Vendor == rules.NoVendor:
			return nil, fmt.Errorf("entry %d: client %s: vendor %q is not a vendor", i, e.Client, e.Vendor)
		}
		// As in Record: one machine is one entry.
		e.Client = e.Client.Unmap()
		// State files written before signatures have entries of host
		// matches only.
		if e.Match == "" {
			e.Match = rules.MatchHost
		}
		if e.Match != rules.MatchHost && e.Match != rules.MatchSignature {
			return nil, fmt.Errorf("entry %d: client %s: match %q: want %q or %q", i, e.Client, e.Match, rules.MatchHost, rules.MatchSignature)
		}
		if seen[e.key()] {
			return nil, fmt.Errorf("entry %d: duplicate entry for %s %s/%s (%s %s)", i, e.Client, e.Vendor, e.Category, e.Match, e.Host)
		}
		seen[e.key()] = true
		// State files written before hosts were kept have none; the host
		// of a signature's entry is its one. One written with more than
		// this build keeps (a later one's) keeps the most recent.
		if len(e.Hosts) == 0 && e.Host != "" {
			e.Hosts = []string{e.Host}
		}
		if len(e.Hosts) > maxHosts {
			e.Hosts = e.Hosts[:maxHosts]
		}
		// JSON times come back in a fixed zone; UTC makes them compare
		// and encode like the times Record stores.
		e.FirstSeen, e.LastSeen = e.FirstSeen.UTC(), e.LastSeen.UTC()
		entries = append(entries, e)
	}
	return entries, nil
}

// Save writes the state file atomically: a crash leaves either the old file
// or the new one, never a mix. It does nothing without a StateFile.
func (inv *Inventory) Save() error {
	if inv.stateFile == "" {
		return nil
	}
	inv.saveMu.Lock()
	defer inv.saveMu.Unlock()
	inv.mu.Lock()
	records := inv.records
	inv.mu.Unlock()
	entries := inv.Snapshot(Filter{})
	data, err := json.Marshal(state{Version: stateVersion, SavedAt: inv.stamp(), Entries: entries})
	if err != nil {
		return fmt.Errorf("inventory: encoding state: %w", err)
	}
	if err := atomicfile.Write(inv.stateFile, data, 0o600); err != nil {
		return fmt.Errorf("inventory: saving state: %w", err)
	}
	inv.mu.Lock()
	inv.saved = records
	inv.mu.Unlock()
	return nil
}

// unsaved reports whether anything was recorded since the last save.
func (inv *Inventory) unsaved() bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.records != inv.saved
}

// Run saves every interval until ctx is done, then saves once more, so that
// a shutdown loses nothing. Periodic saves are skipped while nothing was
// recorded; the last save is not. An interval <= 0 means saving only at the
// end. Errors go to onError, which may be nil.
func (inv *Inventory) Run(ctx context.Context, interval time.Duration, onError func(error)) {
	report := func(err error) {
		if err != nil && onError != nil {
			onError(err)
		}
	}
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				if inv.unsaved() {
					report(inv.Save())
				}
			}
		}
	} else {
		<-ctx.Done()
	}
	report(inv.Save())
}
