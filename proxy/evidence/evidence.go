// Package evidence makes the decision log tamper-evident: every record
// line is a leaf of an append-only Merkle tree (RFC 6962 hashing, as
// golang.org/x/mod/sumdb/tlog computes it), and signed checkpoints (tree
// size and root hash, signed with Ed25519 in the golang.org/x/mod/sumdb/note
// format) are written into the log between the records. A verifier with
// the public key can then tell whether a record was altered, inserted,
// removed or reordered, and where.
//
// A record line is sealed by the writer: the JSON object the decision log
// wrote gets "instance", "seq" (its leaf index) and "checkpoints" (how
// many checkpoints precede it, so that a checkpoint cannot be removed or
// repeated unseen), and then "leaf_hash", the leaf's hash, as its last
// field. The leaf is the line without
// "leaf_hash": a record edited in place no longer matches its own
// leaf_hash, which names its line; one edited together with its
// leaf_hash no longer matches the next signed checkpoint.
package evidence

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Tree is the right edge of an RFC 6962 Merkle tree: the roots of its
// complete subtrees, largest first, which is all that appending and the
// root hash need. It holds log2(size) hashes whatever the size.
type Tree struct {
	size  uint64
	stack []tlog.Hash
}

// NewTree returns the tree of size leaves whose complete subtrees have the
// roots in stack, largest first (as Stack returns them).
func NewTree(size uint64, stack []tlog.Hash) (*Tree, error) {
	n := 0
	for s := size; s > 0; s &= s - 1 {
		n++
	}
	if n != len(stack) {
		return nil, fmt.Errorf("evidence: a tree of %d leaves has %d complete subtrees, not %d", size, n, len(stack))
	}
	return &Tree{size: size, stack: append([]tlog.Hash(nil), stack...)}, nil
}

// Size returns the number of leaves.
func (t *Tree) Size() uint64 { return t.size }

// Stack returns the roots of the complete subtrees, largest first.
func (t *Tree) Stack() []tlog.Hash { return append([]tlog.Hash(nil), t.stack...) }

// Append adds a leaf hash.
func (t *Tree) Append(leaf tlog.Hash) {
	h := leaf
	// Each trailing 1 bit of the size is a complete subtree of the same
	// height as the one being carried: merge them.
	for s := t.size; s&1 == 1; s >>= 1 {
		h = tlog.NodeHash(t.stack[len(t.stack)-1], h)
		t.stack = t.stack[:len(t.stack)-1]
	}
	t.stack = append(t.stack, h)
	t.size++
}

// Root returns the tree's root hash (RFC 6962 MTH). The empty tree's is
// the hash of the empty string.
func (t *Tree) Root() tlog.Hash {
	if len(t.stack) == 0 {
		return emptyRoot
	}
	r := t.stack[len(t.stack)-1]
	for i := len(t.stack) - 2; i >= 0; i-- {
		r = tlog.NodeHash(t.stack[i], r)
	}
	return r
}

// emptyRoot is SHA-256 of the empty string, RFC 6962's MTH({}).
var emptyRoot = tlog.Hash{
	0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
	0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
}

// leafField is how the sealed line's last field starts.
const leafField = `,"leaf_hash":"`

// Seal turns a record line (a JSON object, with or without its newline)
// into the sealed line for leaf seq of instance, after checkpoints
// checkpoints: it returns the line with "instance", "seq", "checkpoints"
// and "leaf_hash" added, and the leaf's hash.
func Seal(line []byte, instance string, seq, checkpoints uint64, buf []byte) ([]byte, tlog.Hash, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return buf, tlog.Hash{}, errors.New("evidence: a record line must be a JSON object")
	}
	b := append(buf[:0], line[:len(line)-1]...)
	if len(line) > 2 {
		b = append(b, ',')
	}
	b = append(b, `"instance":`...)
	b = strconv.AppendQuote(b, instance)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"checkpoints":`...)
	b = strconv.AppendUint(b, checkpoints, 10)
	b = append(b, '}')
	leaf := tlog.RecordHash(b)
	b = b[:len(b)-1]
	b = append(b, leafField...)
	b = base64.StdEncoding.AppendEncode(b, leaf[:])
	b = append(b, "\"}\n"...)
	return b, leaf, nil
}

// Unseal returns the leaf of a sealed line (without its newline) and the
// leaf hash the line states; ok is false if the line is not sealed.
func Unseal(line []byte) (leaf []byte, stated tlog.Hash, ok bool) {
	i := bytes.LastIndex(line, []byte(leafField))
	// The field and the closing `"}` must not overlap: `,"leaf_hash":"}`
	// is no sealed line.
	if i < 0 || !bytes.HasSuffix(line, []byte(`"}`)) || i+len(leafField) > len(line)-2 {
		return nil, tlog.Hash{}, false
	}
	enc := line[i+len(leafField) : len(line)-2]
	var h tlog.Hash
	// Decode writes as much as the input would decode to, which for 44
	// characters without their padding is 33 bytes: decode into room
	// for that, then take exactly a hash.
	if len(enc) != base64.StdEncoding.EncodedLen(len(h)) {
		return nil, tlog.Hash{}, false
	}
	var buf [48]byte
	if n, err := base64.StdEncoding.Decode(buf[:], enc); err != nil || n != len(h) {
		return nil, tlog.Hash{}, false
	}
	copy(h[:], buf[:len(h)])
	leaf = append(line[:i:i], '}')
	return leaf, h, true
}

// Checkpoint is a signed tree head: the log of instance had size records,
// whose tree has root, at time. Number counts the instance's checkpoints
// from 0.
type Checkpoint struct {
	Instance string
	Number   uint64
	Size     uint64
	Root     tlog.Hash
	Time     time.Time
}

// checkpointOrigin is the first line of a checkpoint's text.
const checkpointOrigin = "feedgate decision log v1"

// Text is the checkpoint as the text a note signs.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%s\n%d\n%d\n%s\n%s\n", checkpointOrigin, c.Instance, c.Number, c.Size,
		base64.StdEncoding.EncodeToString(c.Root[:]), c.Time.UTC().Format(time.RFC3339Nano))
}

// parseCheckpointText is Text's inverse.
func parseCheckpointText(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 7 || lines[6] != "" || lines[0] != checkpointOrigin {
		return Checkpoint{}, errors.New("not a feedgate checkpoint")
	}
	c := Checkpoint{Instance: lines[1]}
	var err error
	if c.Number, err = strconv.ParseUint(lines[2], 10, 64); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint number: %w", err)
	}
	if c.Size, err = strconv.ParseUint(lines[3], 10, 64); err != nil {
		return Checkpoint{}, fmt.Errorf("tree size: %w", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[4])
	if err != nil || len(root) != len(c.Root) {
		return Checkpoint{}, errors.New("root hash is not 32 bytes of base64")
	}
	copy(c.Root[:], root)
	if c.Time, err = time.Parse(time.RFC3339Nano, lines[5]); err != nil {
		return Checkpoint{}, fmt.Errorf("time: %w", err)
	}
	return c, nil
}

// Sign signs the checkpoint, returning the signed note.
func (c Checkpoint) Sign(signer note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: c.Text()}, signer)
	if err != nil {
		return nil, fmt.Errorf("evidence: signing checkpoint: %w", err)
	}
	return msg, nil
}

// OpenCheckpoint verifies a signed checkpoint note with verifiers and
// parses it.
func OpenCheckpoint(msg []byte, verifiers note.Verifiers) (Checkpoint, error) {
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	return parseCheckpointText(n.Text)
}

// CheckpointLine renders a signed checkpoint as a line of the decision
// log. The line is a function of the note alone, so that a verifier can
// tell any edit of it.
func CheckpointLine(c Checkpoint, signed []byte) []byte {
	b := []byte(`{"time":`)
	b = strconv.AppendQuote(b, c.Time.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"level":"INFO","msg":"checkpoint","instance":`...)
	b = strconv.AppendQuote(b, c.Instance)
	b = append(b, `,"checkpoint":`...)
	b = strconv.AppendUint(b, c.Number, 10)
	b = append(b, `,"tree_size":`...)
	b = strconv.AppendUint(b, c.Size, 10)
	b = append(b, `,"root_hash":"`...)
	b = base64.StdEncoding.AppendEncode(b, c.Root[:])
	b = append(b, `","note":`...)
	b = strconv.AppendQuote(b, string(signed))
	return append(b, "}\n"...)
}

// GenerateKey makes a signer key and its verifier key, in the note
// formats, named name.
func GenerateKey(name string) (signer, verifier string, err error) {
	s, v, err := note.GenerateKey(nil, name)
	if err != nil {
		return "", "", fmt.Errorf("evidence: generating key %q: %w", name, err)
	}
	return s, v, nil
}
