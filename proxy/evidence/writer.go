package evidence

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/feedgate/feedgate/proxy/internal/atomicfile"
)

// Options configure a Writer.
type Options struct {
	// Instance names this writer's chain; every replica of a fleet has
	// its own.
	Instance string
	Signer   note.Signer
	// Every and Interval say when a checkpoint is written: after Every
	// records, and Interval after the first record it does not cover yet;
	// one is always written at Close.
	Every    int
	Interval time.Duration
	// LogFile is the decision log's file, and StateFile where the chain
	// is kept across restarts (the tree's right edge and how far the log
	// file was signed).
	LogFile, StateFile string
	// Now is the wall clock of the checkpoints; nil means time.Now.
	Now      func() time.Time
	ErrorLog *slog.Logger
}

// Writer seals each record line written to it (one whole line per Write,
// as log/slog handlers write) and writes checkpoints between them. It is
// safe for concurrent use. The lines go to out in the order their seq
// numbers say.
type Writer struct {
	opts Options
	out  io.Writer

	mu     sync.Mutex
	tree   *Tree
	cps    uint64 // checkpoints written to the chain
	since  int    // records after the last checkpoint
	offset int64  // bytes of the log file, as far as this writer wrote them
	buf    []byte
	closed bool

	// saves hands the state to the goroutine that writes the state file,
	// so that its fsync does not hold up the records; the newest state
	// replaces one not written yet.
	saves   chan state
	saveErr error // the last save's, read under mu

	done chan struct{}
	wg   sync.WaitGroup
}

// state is the state file.
type state struct {
	Instance    string   `json:"instance"`
	TreeSize    uint64   `json:"tree_size"`
	Checkpoints uint64   `json:"checkpoints"`
	Stack       []string `json:"stack"`
	// Offset is the log file's length after the last checkpoint.
	Offset int64 `json:"offset"`
}

// flusher is the buffered writer in front of the log file.
type flusher interface{ Flush() error }

// NewWriter continues the chain that opts.StateFile describes, or starts
// one, writing to out, which appends to opts.LogFile. Records that a
// previous run wrote after its last checkpoint (it crashed) are read back
// from the log file and signed by a checkpoint now.
func NewWriter(out io.Writer, opts Options) (*Writer, error) {
	if opts.Signer == nil {
		return nil, errors.New("evidence: no signer")
	}
	if opts.Every <= 0 {
		opts.Every = 1000
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = slog.New(slog.DiscardHandler)
	}
	w := &Writer{opts: opts, out: out, tree: &Tree{}, done: make(chan struct{}), saves: make(chan state, 1)}
	if err := w.load(); err != nil {
		return nil, err
	}
	if w.since > 0 {
		if err := w.checkpointLocked(); err != nil {
			return nil, err
		}
	}
	w.wg.Add(2)
	go w.tick()
	go w.saveLoop()
	return w, nil
}

// load reads the state file and the log file's unsigned tail.
func (w *Writer) load() error {
	size := int64(0)
	if fi, err := os.Stat(w.opts.LogFile); err == nil {
		size = fi.Size()
	}
	w.offset = size
	data, err := os.ReadFile(w.opts.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("evidence: state file: %w", err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("evidence: state file %s: %w", w.opts.StateFile, err)
	}
	if st.Instance != w.opts.Instance {
		w.opts.ErrorLog.Warn("evidence: the state file is another instance's chain; starting a new chain",
			"state_file", w.opts.StateFile, "state_instance", st.Instance, "instance", w.opts.Instance)
		return nil
	}
	stack := make([]tlog.Hash, len(st.Stack))
	for i, s := range st.Stack {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != len(tlog.Hash{}) {
			return fmt.Errorf("evidence: state file %s: stack hash %d is not a hash", w.opts.StateFile, i)
		}
		copy(stack[i][:], b)
	}
	if w.tree, err = NewTree(st.TreeSize, stack); err != nil {
		return fmt.Errorf("evidence: state file %s: %w", w.opts.StateFile, err)
	}
	w.cps = st.Checkpoints
	if size < st.Offset {
		w.opts.ErrorLog.Warn("evidence: the log file is shorter than when it was last signed (rotated or cut while feedgate was down); the chain goes on in it",
			"file", w.opts.LogFile, "signed_length", st.Offset, "length", size)
		return nil
	}
	return w.absorb(st.Offset)
}

// absorb adds the sealed records of the log file after offset to the
// tree: the records a previous run wrote after its last checkpoint.
func (w *Writer) absorb(offset int64) error {
	f, err := os.Open(w.opts.LogFile)
	if err != nil {
		return fmt.Errorf("evidence: reading back the log's unsigned tail: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("evidence: reading back the log's unsigned tail: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		leaf, stated, ok := Unseal(line)
		r, ok2 := parseRecord(leaf)
		if !ok || !ok2 || r.instance != w.opts.Instance || r.seq != w.tree.Size() || r.checkpoints != w.cps || tlog.RecordHash(leaf) != stated {
			// A torn last line of a crash, or not this chain's: the
			// verifier reports it where it is.
			w.opts.ErrorLog.Warn("evidence: a line of the log's unsigned tail is not the chain's next record; the chain goes on without it",
				"file", w.opts.LogFile, "offset", offset)
			return nil
		}
		w.tree.Append(stated)
		w.since++
		offset += int64(len(line)) + 1
	}
	return nil
}

// sealedFields are the fields Seal adds to a record.
type sealedFields struct {
	instance         string
	seq, checkpoints uint64
}

// parseRecord reads the fields Seal added from a record's leaf.
func parseRecord(leaf []byte) (sealedFields, bool) {
	var r struct {
		Instance    *string `json:"instance"`
		Seq         *uint64 `json:"seq"`
		Checkpoints *uint64 `json:"checkpoints"`
	}
	if json.Unmarshal(leaf, &r) != nil || r.Instance == nil || r.Seq == nil || r.Checkpoints == nil {
		return sealedFields{}, false
	}
	return sealedFields{*r.Instance, *r.Seq, *r.Checkpoints}, true
}

// Write seals p, one record line, and writes it.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	sealed, leaf, err := Seal(p, w.opts.Instance, w.tree.Size(), w.cps, w.buf)
	w.buf = sealed
	if err != nil {
		return 0, err
	}
	if _, err := w.out.Write(sealed); err != nil {
		return 0, err
	}
	w.tree.Append(leaf)
	w.offset += int64(len(sealed))
	w.since++
	if w.since >= w.opts.Every {
		if err := w.checkpointLocked(); err != nil {
			w.opts.ErrorLog.Error("evidence: checkpoint", "error", err)
		}
	}
	return len(p), nil
}

// Checkpoint writes a checkpoint now if a record is not covered by one,
// as before the log file is rotated.
func (w *Writer) Checkpoint() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.since == 0 {
		return nil
	}
	return w.checkpointLocked()
}

// Reopened tells the writer that the log file was reopened and is size
// bytes long: the chain goes on in it.
func (w *Writer) Reopened(size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.offset = size
	w.queueSaveLocked()
}

// checkpointLocked signs the tree, writes the checkpoint, makes the log
// file hold everything before it, and saves the state.
func (w *Writer) checkpointLocked() error {
	c := Checkpoint{Instance: w.opts.Instance, Number: w.cps, Size: w.tree.Size(), Root: w.tree.Root(), Time: w.opts.Now()}
	signed, err := c.Sign(w.opts.Signer)
	if err != nil {
		return err
	}
	line := CheckpointLine(c, signed)
	if _, err := w.out.Write(line); err != nil {
		return fmt.Errorf("evidence: writing checkpoint: %w", err)
	}
	w.offset += int64(len(line))
	w.since = 0
	w.cps++
	// The state says how far the file is signed: it must be there.
	if f, ok := w.out.(flusher); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("evidence: flushing the log: %w", err)
		}
	}
	w.queueSaveLocked()
	return nil
}

// stateLocked is the chain's state now.
func (w *Writer) stateLocked() state {
	st := state{Instance: w.opts.Instance, TreeSize: w.tree.Size(), Checkpoints: w.cps, Offset: w.offset}
	for _, h := range w.tree.stack {
		st.Stack = append(st.Stack, base64.StdEncoding.EncodeToString(h[:]))
	}
	return st
}

// queueSaveLocked hands the state to saveLoop, replacing a state it has
// not written yet.
func (w *Writer) queueSaveLocked() {
	st := w.stateLocked()
	for {
		select {
		case w.saves <- st:
			return
		default:
		}
		select {
		case <-w.saves:
		default:
		}
	}
}

func (w *Writer) saveLoop() {
	defer w.wg.Done()
	for {
		select {
		case st := <-w.saves:
			w.save(st)
		case <-w.done:
			select {
			case st := <-w.saves:
				w.save(st)
			default:
			}
			return
		}
	}
}

func (w *Writer) save(st state) {
	data, err := json.Marshal(st)
	if err == nil {
		err = atomicfile.Write(w.opts.StateFile, append(data, '\n'), 0o600)
	}
	if err != nil {
		err = fmt.Errorf("evidence: saving state: %w", err)
		w.opts.ErrorLog.Error("evidence: saving state", "error", err)
	}
	w.mu.Lock()
	w.saveErr = err
	w.mu.Unlock()
}

func (w *Writer) tick() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := w.Checkpoint(); err != nil {
				w.opts.ErrorLog.Error("evidence: checkpoint", "error", err)
			}
		case <-w.done:
			return
		}
	}
}

// stop stops the writer as a crash would: no last checkpoint.
func (w *Writer) stop() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	close(w.done)
	w.wg.Wait()
}

// Close writes a last checkpoint, saves the state and stops. Later
// writes fail.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	var err error
	if w.since > 0 {
		err = w.checkpointLocked()
	}
	w.closed = true
	w.mu.Unlock()
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(err, w.saveErr)
}
