package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/feedgate/feedgate/proxy/evidence"
)

// runEvidence runs feedgate evidence keygen.
func runEvidence(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprintf(stderr, "feedgate evidence: want \"feedgate evidence keygen -dir DIR\"\n%s", usage)
		return 2
	}
	fs := newFlagSet("evidence keygen", stderr)
	dir := fs.String("dir", "", "write signer.key and verifier.key into `DIR` (created if missing; existing files are never overwritten)")
	name := fs.String("name", "", "the key's `NAME`, as checkpoints name their signer (default feedgate-HOSTNAME)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "feedgate evidence keygen: -dir DIR is required, and nothing else")
		return 2
	}
	if *name == "" {
		h, _ := os.Hostname()
		*name = "feedgate-" + strings.Map(func(r rune) rune {
			if r <= ' ' || r == '+' || r > '~' {
				return '-'
			}
			return r
		}, h)
	}
	signer, verifier, err := evidence.GenerateKey(*name)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate evidence keygen: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(stderr, "feedgate evidence keygen: %v\n", err)
		return 1
	}
	signerFile, verifierFile := filepath.Join(*dir, "signer.key"), filepath.Join(*dir, "verifier.key")
	for _, f := range []string{signerFile, verifierFile} {
		if _, err := os.Lstat(f); err == nil {
			fmt.Fprintf(stderr, "feedgate evidence keygen: %s exists; not overwriting a key that may have signed logs\n", f)
			return 1
		}
	}
	if err := writeNew(signerFile, signer+"\n", 0o600); err != nil {
		fmt.Fprintf(stderr, "feedgate evidence keygen: %v\n", err)
		return 1
	}
	if err := writeNew(verifierFile, verifier+"\n", 0o644); err != nil {
		fmt.Fprintf(stderr, "feedgate evidence keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s (keep it on the gateway, readable by feedgate only) and %s (keep it off the gateway: it verifies the logs)\n", signerFile, verifierFile)
	fmt.Fprintf(stdout, "use it in the configuration:\n\n[log]\nfile = \"/var/log/feedgate/decisions.log\"\nevidence_key = %q\n", signerFile)
	return 0
}

// writeNew writes a file that must not exist yet.
func writeNew(path, text string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runVerify runs feedgate verify.
func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", stderr)
	keyFile := fs.String("key", "", "the verifier key `FILE` (verifier.key from feedgate evidence keygen)")
	allowTail := fs.Bool("allow-tail", false, "accept records after the last checkpoint (a log whose feedgate is still running)")
	files, ok := parseInterspersed(fs, args)
	if !ok {
		return 2
	}
	if *keyFile == "" || len(files) == 0 {
		fmt.Fprintln(stderr, "feedgate verify: -key VERIFIER and at least one log FILE are required (in the order they were written: the oldest rotated file first)")
		return 2
	}
	verifiers, err := readVerifier(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "feedgate verify: %v\n", err)
		return 2
	}
	var inputs []evidence.Input
	for _, name := range files {
		in, err := openReportInput(name, os.Stdin)
		if err != nil {
			fmt.Fprintf(stderr, "feedgate verify: %v\n", err)
			return 1
		}
		defer in.close()
		inputs = append(inputs, evidence.Input{Name: in.name, R: in.r})
	}
	res, err := evidence.Verify(inputs, verifiers)
	if err != nil {
		var p *evidence.Problem
		if errors.As(err, &p) {
			fmt.Fprintf(stdout, "%s\nFAILED: %d records and %d checkpoints verified before it\n", p, res.Records, res.Checkpoints)
		} else {
			fmt.Fprintf(stderr, "feedgate verify: %v\n", err)
		}
		return 1
	}
	status := 0
	for _, c := range res.Chains {
		head := "no checkpoint"
		if c.Signed > 0 {
			head = fmt.Sprintf("signed tree head %d at %s (%s, %s)", c.Last.Size, c.Last.Time.Format("2006-01-02T15:04:05Z07:00"), c.LastAt, rootString(c.Last))
		}
		fmt.Fprintf(stdout, "instance %s: %d records, %s\n", c.Instance, c.Records, head)
		if c.Records > c.Signed {
			fmt.Fprintf(stdout, "instance %s: unsigned tail: records %d to %d after the last checkpoint, up to %s: the log was cut, or its feedgate is still running or crashed\n",
				c.Instance, c.Signed, c.Records-1, c.End)
			if !*allowTail {
				status = 1
			}
		}
	}
	verdict := "OK"
	if status != 0 {
		verdict = "FAILED"
	}
	fmt.Fprintf(stdout, "%s: %d records, %d checkpoints, %d instances\n", verdict, res.Records, res.Checkpoints, len(res.Chains))
	return status
}

func rootString(c evidence.Checkpoint) string {
	return fmt.Sprintf("root %x", c.Root[:8])
}

// readVerifier reads a verifier key written by feedgate evidence keygen.
func readVerifier(file string) (note.Verifiers, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("-key: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("-key: %s: not a verifier key: %w", file, err)
	}
	return note.VerifierList(v), nil
}

// parseInterspersed parses fs's flags from args, which may come before or
// after the other arguments, and returns those; ok is false on a flag
// error, which fs has reported.
func parseInterspersed(fs *flag.FlagSet, args []string) (rest []string, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return rest, true
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
