package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/feedgate/feedgate/cmd/feedgate/internal/report"
	"github.com/feedgate/feedgate/rules"
)

// runReport runs feedgate report: it reads decision logs (feedgate's JSON
// records or Squid's access.log, plain or gzip, "-" for stdin) and writes
// the report. It exits 0 when the report is written, malformed lines and
// all; 1 when an input cannot be read, or when -key was given and the
// evidence did not verify (the report, which says so, is written first);
// 2 for a usage error.
func runReport(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("report", stderr)
	configFile := fs.String("config", "", "policy `FILE` (default: the built-in policy): its catalogs classify Squid lines, its rules decide them and name the cut-offs, its timezone makes the days")
	fromFlag := fs.String("from", "", "read records from `TIME` on (RFC 3339, or a date or date-time in the policy's timezone)")
	untilFlag := fs.String("until", "", "read records before `TIME` (as -from)")
	format := fs.String("format", "html", "`FORMAT` of the report: html, json or csv")
	out := fs.String("o", "", "write the report to `FILE` (for csv a directory, which gets one FILE per table); default standard output")
	keyFile := fs.String("key", "", "verify the evidence log with the verifier key `FILE` (verifier.key from feedgate evidence keygen)")
	top := fs.Int("top", 20, "list the `N` vendor hosts with the most requests")
	files, ok := parseInterspersed(fs, args)
	if !ok {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "feedgate report: "+format+"\n", a...)
		return 2
	}
	if len(files) == 0 {
		return usageErr("name at least one log FILE (plain or .gz, - for standard input), each instance's files oldest first")
	}
	switch *format {
	case "json", "csv", "html":
	default:
		return usageErr("-format %q: want html, json or csv", *format)
	}
	if *top < 1 {
		return usageErr("-top %d: want at least 1", *top)
	}
	stdins := 0
	for _, f := range files {
		if f == "-" {
			stdins++
		}
	}
	if stdins > 1 {
		return usageErr("standard input (-) can be read once")
	}

	c, warnings, err := loadConfig(*configFile)
	if err != nil {
		printProblems(stderr, warnings, err)
		return 1
	}
	p := c.Policy
	opts := report.Options{Policy: p, TopHosts: *top}
	for _, f := range []struct {
		name, value string
		dst         *time.Time
	}{{"-from", *fromFlag, &opts.From}, {"-until", *untilFlag, &opts.Until}} {
		if f.value == "" {
			continue
		}
		if *f.dst, err = rules.ParseInstant(f.value, p.Location); err != nil {
			return usageErr("%s: %v", f.name, err)
		}
	}
	if *keyFile != "" {
		if opts.Verifiers, err = readVerifier(*keyFile); err != nil {
			return usageErr("%v", err)
		}
	}
	rep, err := report.New(opts)
	if err != nil {
		return usageErr("%v", err)
	}

	// Every input is checked before any is read, so that a missing file
	// stops the report at once rather than after an hour of reading; each
	// is then opened in turn, so that a thousand rotated files do not
	// hold a thousand buffers.
	for _, name := range files {
		if name == "-" {
			continue
		}
		in, err := openReportInput(name, nil)
		if err != nil {
			fmt.Fprintf(stderr, "feedgate report: %v\n", err)
			return 1
		}
		in.close()
	}
	for _, name := range files {
		in, err := openReportInput(name, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "feedgate report: %v\n", err)
			return 1
		}
		err = rep.Add(in.name, in.r)
		in.close()
		if err != nil {
			fmt.Fprintf(stderr, "feedgate report: %v\n", err)
			return 1
		}
	}
	res := rep.Result()

	if err := writeReport(res, *format, *out, stdout); err != nil {
		fmt.Fprintf(stderr, "feedgate report: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "feedgate report: %s from %s, %s outside -from/-until, %s",
		countOf(res.Records, "record"), countOf(int64(len(res.Inputs)), "input"), countOf(res.Skipped, "record"), countOf(res.Malformed.Count, "malformed line"))
	if len(res.Malformed.First) > 0 {
		fmt.Fprintf(stderr, " (the first at %s)", strings.SplitN(res.Malformed.First[0], ": ", 2)[0])
	}
	fmt.Fprintf(stderr, "\n")
	if res.Verification.Checked {
		fmt.Fprintf(stderr, "feedgate report: %s\n", res.Verification.Summary)
		if !res.Verification.OK {
			return 1
		}
	}
	return 0
}

func countOf(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// writeReport writes the report in format to out (a file, or for csv a
// directory), or to stdout when out is "".
func writeReport(res *report.Result, format, out string, stdout io.Writer) error {
	if format == "csv" && out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		for _, t := range report.Tables() {
			if err := writeFile(filepath.Join(out, t+".csv"), func(w io.Writer) error { return report.WriteCSVTable(w, res, t) }); err != nil {
				return err
			}
		}
		return nil
	}
	write := func(w io.Writer) error {
		switch format {
		case "json":
			return report.WriteJSON(w, res)
		case "csv":
			return report.WriteCSV(w, res)
		}
		return report.WriteHTML(w, res)
	}
	if out == "" {
		bw := bufio.NewWriter(stdout)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	return writeFile(out, write)
}

// writeFile writes path through a temporary file renamed into place, so
// that a report is never seen half written.
func writeFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriter(tmp)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// reportInput is an opened input of feedgate report.
type reportInput struct {
	name  string
	r     io.Reader
	close func()
}

// openReportInput opens a log, "-" being stdin (named so in the report),
// decompressing it when it starts with gzip's magic bytes.
func openReportInput(name string, stdin io.Reader) (reportInput, error) {
	src, closeFn, shown := stdin, func() {}, "stdin"
	if name != "-" {
		shown = name
		f, err := os.Open(name)
		if err != nil {
			return reportInput{}, err
		}
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return reportInput{}, fmt.Errorf("%s is a directory", name)
		}
		src, closeFn = f, func() { f.Close() }
	}
	// The report reads with a buffer of this size too, so it uses this
	// one rather than copying through another.
	br := bufio.NewReaderSize(src, 256<<10)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			closeFn()
			return reportInput{}, fmt.Errorf("%s: %w", name, err)
		}
		return reportInput{name: shown, r: zr, close: func() { zr.Close(); closeFn() }}, nil
	} else if err != nil && !errors.Is(err, io.EOF) {
		closeFn()
		return reportInput{}, fmt.Errorf("%s: %w", name, err)
	}
	return reportInput{name: shown, r: br, close: closeFn}, nil
}
