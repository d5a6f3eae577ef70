package main

// End-to-end tests of the tamper-evident decision log (issue 15): the real
// binary writes it, across a rotation (SIGUSR1) and a restart, and
// feedgate verify checks it, plain and gzipped, and finds an edit.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// verifyCmd runs feedgate verify and returns its exit code and output.
func verifyCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"verify"}, args...)...).CombinedOutput()
	return exitCode(err), string(out)
}

func TestEvidenceLogAcrossRotationAndRestart(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	if out, err := exec.Command(binary, "evidence", "keygen", "-dir", filepath.Join(dir, "keys"), "-name", "gw-e2e").CombinedOutput(); err != nil {
		t.Fatalf("feedgate evidence keygen: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "evidence", "keygen", "-dir", filepath.Join(dir, "keys")).CombinedOutput(); err == nil {
		t.Errorf("a second keygen into the same directory succeeded; want a refusal\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "keys", "signer.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signer.key: %v, %v; want mode 0600", fi, err)
	}
	policy := filepath.Join(dir, "policy.toml")
	text := reloadPolicy("2024-09-29T00:00:00") + `
[log]
file = "decisions.log"
evidence_key = "keys/signer.key"
instance = "gw-e2e"
checkpoint_every = 4
`
	if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "decisions.log")
	verifier := filepath.Join(dir, "keys", "verifier.key")
	requests := func(inst *instance, n int) {
		t.Helper()
		for i := range n {
			host := "www.example.test"
			if i%2 == 1 {
				host = "s01.upd.kaspersky.com"
			}
			curl(t, nil, "-x", "http://"+inst.Proxy, "http://"+host+"/")
		}
	}

	inst := f.start(t, betweenCuts, "-config", policy)
	requests(inst, 6)
	waitFile(t, logPath, 6)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := inst.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFile(t, logPath, 0)
	requests(inst, 3)
	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}
	inst = f.start(t, afterUpdates, "-config", policy)
	requests(inst, 5)
	if err := inst.stop(); err != nil {
		t.Fatal(err)
	}

	code, out := verifyCmd(t, "-key", verifier, logPath+".1", logPath)
	if code != 0 || !strings.Contains(out, "OK: 14 records") || !strings.Contains(out, "instance gw-e2e: 14 records, signed tree head 14") {
		t.Fatalf("verify: exit %d\n%s\nwant 0 and 14 signed records", code, out)
	}
	// Every record says where it stands in the chain.
	first, _ := os.ReadFile(logPath + ".1")
	if !strings.Contains(string(first), `"instance":"gw-e2e","seq":0,"checkpoints":0,"leaf_hash":"`) {
		t.Errorf("the first record has no seal: %q", strings.SplitN(string(first), "\n", 2)[0])
	}

	// A rotated file gzipped by logrotate verifies as well.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(first)
	zw.Close()
	if err := os.WriteFile(logPath+".1.gz", gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := verifyCmd(t, "-key", verifier, logPath+".1.gz", logPath); code != 0 {
		t.Errorf("verify with a gzipped file: exit %d\n%s", code, out)
	}
	// Out of order, or without the first file, the chain does not verify.
	if code, out := verifyCmd(t, "-key", verifier, logPath); code != 1 || !strings.Contains(out, "missing before this line") {
		t.Errorf("verify without the rotated file: exit %d\n%s\nwant 1: records missing", code, out)
	}

	// An edit of one record is found at its line.
	cur, _ := os.ReadFile(logPath)
	lines := strings.SplitAfter(string(cur), "\n")
	edited := 0
	for i, l := range lines {
		if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, `"action":"block"`) {
			lines[i] = strings.Replace(l, `"action":"block"`, `"action":"allow"`, 1)
			edited = i + 1
			break
		}
	}
	if edited == 0 {
		t.Fatalf("no blocked request in %s:\n%s", logPath, cur)
	}
	if err := os.WriteFile(logPath, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = verifyCmd(t, "-key", verifier, logPath+".1", logPath)
	if want := fmt.Sprintf("%s:%d: altered record", logPath, edited); code != 1 || !strings.Contains(out, want) {
		t.Errorf("verify after an edit: exit %d\n%s\nwant 1 naming %q", code, out, want)
	}
	// A wrong key.
	other := filepath.Join(dir, "other")
	exec.Command(binary, "evidence", "keygen", "-dir", other, "-name", "gw-e2e").Run()
	if code, out := verifyCmd(t, "-key", filepath.Join(other, "verifier.key"), logPath+".1"); code != 1 || !strings.Contains(out, "verifier key given") {
		t.Errorf("verify with another key: exit %d\n%s", code, out)
	}
}

// TestEvidenceConfigErrors: the evidence log's keys are checked when the
// configuration loads, with FILE:LINE.
func TestEvidenceConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ log, want string }{
		{"evidence_key = \"missing.key\"\nfile = \"d.log\"\n", "evidence key: open"},
		{"evidence_key = \"x.key\"\n", "evidence_key needs [log] file"},
		{"instance = \"gw1\"\n", "instance is set without evidence_key"},
		{"evidence_key = \"x.key\"\nfile = \"d.log\"\nformat = \"squid\"\n", "needs format = \"json\""},
	} {
		if err := os.WriteFile(filepath.Join(dir, "x.key"), []byte("not a key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		policy := filepath.Join(dir, "p.toml")
		if err := os.WriteFile(policy, []byte(reloadPolicy("2024-09-29T00:00:00")+"\n[log]\n"+tc.log), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(binary, "check", "-config", policy).CombinedOutput()
		if exitCode(err) != 1 || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "p.toml:1") {
			t.Errorf("[log] %q: exit %d\n%s\nwant 1 with %q at a line of p.toml", tc.log, exitCode(err), out, tc.want)
		}
	}
}
