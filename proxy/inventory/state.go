package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

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
		if seen[e.key()] {
			return nil, fmt.Errorf("entry %d: duplicate entry for %s %s/%s", i, e.Client, e.Vendor, e.Category)
		}
		seen[e.key()] = true
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
	if err := writeFileAtomic(inv.stateFile, data); err != nil {
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

// writeFileAtomic replaces path with data via a temporary file in the same
// directory (a rename is atomic only within one file system), mode 0600
// because the file lists internal addresses.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := writeSyncClose(f, data); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// writeSyncClose writes data to f and closes it, reporting the first error.
func writeSyncClose(f *os.File, data []byte) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		// Without the fsync, a crash soon after the rename can leave an
		// empty file under the final name.
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename in dir durable. Windows does not support fsync on
// a directory; there the rename is as durable as the file system makes it.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
