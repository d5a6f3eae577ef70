package evidence

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Input is one log file to verify, decompressed, in the order the files
// were written.
type Input struct {
	Name string
	R    io.Reader
}

// Position is a line of an input.
type Position struct {
	File string
	Line int
}

func (p Position) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Problem is the first thing that does not verify, and where.
type Problem struct {
	Position
	Msg string
}

func (p *Problem) Error() string { return p.Position.String() + ": " + p.Msg }

// Chain is what verified of one instance's chain.
type Chain struct {
	Instance string
	// Records is the number of records; Signed how many of them the
	// last checkpoint covers, and Last that checkpoint (zero if none)
	// and where it is.
	Records uint64
	Signed  uint64
	Last    Checkpoint
	LastAt  Position
	// End is the chain's last line.
	End Position
}

// Result is what verified: every instance's chain, in the order they
// first appear, and the totals.
type Result struct {
	Records, Checkpoints int
	Chains               []*Chain
}

// UnsignedTail returns the chains whose last records no checkpoint
// covers: a log cut short, or one whose writer is still running or
// crashed.
func (r *Result) UnsignedTail() []*Chain {
	var out []*Chain
	for _, c := range r.Chains {
		if c.Records > c.Signed {
			out = append(out, c)
		}
	}
	return out
}

// maxLine bounds a line of the log.
const maxLine = 16 << 20

// Verify checks the records, their chain and the checkpoints of inputs
// with verifiers. It returns a *Problem naming the first line that was
// altered, inserted, removed (the line after the gap) or reordered, or a
// checkpoint that does not verify; what verified up to there is in the
// Result either way.
func Verify(inputs []Input, verifiers note.Verifiers) (*Result, error) {
	c := NewChecker(verifiers)
	for _, in := range inputs {
		br := bufio.NewReaderSize(in.R, 64<<10)
		for n := 1; ; n++ {
			line, err := readLine(br)
			if err == io.EOF && len(line) == 0 {
				break
			}
			at := Position{in.Name, n}
			if err == io.EOF {
				return c.Result(), &Problem{at, "the last line has no newline: the file was cut mid-line"}
			}
			if err != nil {
				return c.Result(), &Problem{at, err.Error()}
			}
			if err := c.Line(at, line); err != nil {
				return c.Result(), err
			}
		}
	}
	return c.Result(), nil
}

// Checker verifies a log line by line, for readers that read the lines
// anyway (feedgate report). Verify is a Checker over whole files.
type Checker struct{ v *verifier }

// NewChecker returns a Checker that verifies checkpoints with verifiers.
func NewChecker(verifiers note.Verifiers) *Checker {
	return &Checker{&verifier{verifiers: verifiers, chains: map[string]*chainState{}, res: &Result{}}}
}

// Line checks the next line of the log (without its newline), at at. It
// returns a *Problem if the line does not verify; the Checker must not be
// used after that.
func (c *Checker) Line(at Position, line []byte) error { return c.v.line(at, line) }

// Result returns what verified so far.
func (c *Checker) Result() *Result { return c.v.res }

// readLine reads a line without its newline; io.EOF with a non-empty
// line means the input ended without one.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		part, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, part...)
			if len(long) > maxLine {
				return nil, fmt.Errorf("line longer than %d bytes", maxLine)
			}
			continue
		}
		if long != nil {
			part = append(long, part...)
		}
		if err != nil {
			return part, err
		}
		return part[:len(part)-1], nil
	}
}

type chainState struct {
	*Chain
	tree        *Tree
	checkpoints uint64
}

type verifier struct {
	verifiers note.Verifiers
	chains    map[string]*chainState
	res       *Result
}

func (v *verifier) chain(instance string) *chainState {
	c := v.chains[instance]
	if c == nil {
		c = &chainState{Chain: &Chain{Instance: instance}, tree: &Tree{}}
		v.chains[instance] = c
		v.res.Chains = append(v.res.Chains, c.Chain)
	}
	return c
}

func (v *verifier) line(at Position, line []byte) error {
	if bytes.Contains(line, []byte(`"msg":"checkpoint"`)) && !bytes.Contains(line, []byte(leafField)) {
		return v.checkpoint(at, line)
	}
	leaf, stated, ok := Unseal(line)
	if !ok {
		return &Problem{at, "not a sealed record or a checkpoint (no leaf_hash): inserted, or altered"}
	}
	if tlog.RecordHash(leaf) != stated {
		return &Problem{at, "altered record: it does not match its leaf_hash"}
	}
	r, ok := parseRecord(leaf)
	if !ok {
		return &Problem{at, "altered record: no instance, seq or checkpoints"}
	}
	seq, instance := r.seq, r.instance
	c := v.chain(instance)
	switch want := c.tree.Size(); {
	case seq < want:
		return &Problem{at, fmt.Sprintf("record %d of instance %q again, or out of order: the next is %d", seq, instance, want)}
	case seq > want:
		return &Problem{at, fmt.Sprintf("records %d to %d of instance %q are missing before this line: removed", want, seq-1, instance)}
	case r.checkpoints < c.checkpoints:
		return &Problem{at, fmt.Sprintf("record %d of instance %q follows %d checkpoints, but %d precede this line: out of order, or a checkpoint was inserted", seq, instance, r.checkpoints, c.checkpoints)}
	case r.checkpoints > c.checkpoints:
		return &Problem{at, fmt.Sprintf("record %d of instance %q follows %d checkpoints, but %d precede this line: a checkpoint was removed", seq, instance, r.checkpoints, c.checkpoints)}
	}
	c.tree.Append(stated)
	c.Records++
	c.End = at
	v.res.Records++
	return nil
}

func (v *verifier) checkpoint(at Position, line []byte) error {
	var f struct {
		Note string `json:"note"`
	}
	if err := json.Unmarshal(line, &f); err != nil || f.Note == "" {
		return &Problem{at, "altered checkpoint: it is not a checkpoint line"}
	}
	cp, err := OpenCheckpoint([]byte(f.Note), v.verifiers)
	if err != nil {
		var unknown *note.UnknownVerifierError
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &unknown):
			return &Problem{at, fmt.Sprintf("checkpoint signed by %s, which is not the verifier key given", unknown.Name)}
		case errors.As(err, &unverified):
			return &Problem{at, "checkpoint not signed by the verifier key given (another key of the same name, or a forged signature)"}
		}
		return &Problem{at, "checkpoint does not verify: " + err.Error()}
	}
	if want := CheckpointLine(cp, []byte(f.Note)); !bytes.Equal(want[:len(want)-1], line) {
		return &Problem{at, "altered checkpoint: its fields do not match its signed note"}
	}
	c := v.chain(cp.Instance)
	if cp.Number != c.checkpoints {
		return &Problem{at, fmt.Sprintf("checkpoint %d of instance %q where checkpoint %d is due: repeated, reordered, or one was removed", cp.Number, cp.Instance, c.checkpoints)}
	}
	if cp.Size != c.tree.Size() {
		return &Problem{at, fmt.Sprintf("checkpoint of instance %q signs %d records, but %d precede it: records were removed or inserted", cp.Instance, cp.Size, c.tree.Size())}
	}
	if cp.Root != c.tree.Root() {
		from := "the chain's start"
		if c.Signed > 0 {
			from = "the checkpoint at " + c.LastAt.String()
		}
		return &Problem{at, fmt.Sprintf("the records of instance %q since %s do not match this signed tree head: one was altered together with its leaf_hash", cp.Instance, from)}
	}
	c.Signed, c.Last, c.LastAt, c.End = cp.Size, cp, at, at
	c.checkpoints++
	v.res.Checkpoints++
	return nil
}
