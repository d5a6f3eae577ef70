package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is a headless Debian Chromium driven over the DevTools protocol,
// with everything the page reports kept: console errors and warnings,
// uncaught exceptions, Content-Security-Policy violations and JavaScript
// dialogs (an alert is what a successful injection would show).
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

// csp reports every Content-Security-Policy violation as a console error,
// on every document the browser loads: Chromium also logs them itself, but
// the event carries the directive and the blocked URL.
const cspReporter = `document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI + " at " + e.sourceFile + ":" + e.lineNumber);
});`

// newBrowser starts Chromium for the test. It can reach loopback only:
// every host name resolves to nothing, no proxy is used, and the
// background services that call home are off.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	exe := tool(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // CI runs as root
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first Do starts the browser and attaches the tab (it enables
	// the Runtime domain); then the log, and the CSP reporter on every
	// document from now on.
	err := chromedp.Do(ctx)
	if err == nil {
		_, err = chromedp.Call(ctx, log.Enable, cdp.Empty{})
	}
	if err == nil {
		_, err = chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspReporter})
	}
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

func (b *browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				if a.Value != nil {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			b.problem("console %s: %s", ev.Type, strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		b.problem("uncaught exception at %s:%d: %s", d.URL, d.LineNumber, text)
	case *log.EventEntryAdded:
		if e := ev.Entry; e.Level == log.EntryLevelError || e.Level == log.EntryLevelWarning {
			b.problem("browser log %s (%s): %s %s", e.Level, e.Source, e.Text, e.URL)
		}
	case *page.EventJavascriptDialogOpening:
		b.problem("JavaScript %s dialog opened: %q", ev.Type, ev.Message)
		go func() {
			// Leave the page usable; the dialog is already a failure. The
			// listener runs in the tab's loop, which a command would block.
			_, _ = chromedp.Call(b.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}()
	}
}

func (b *browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// takeProblems returns what the pages reported since the last call.
func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// noProblems fails the test if any page reported a problem since the last
// call; what names the moment.
func (b *browser) noProblems(what string) {
	b.t.Helper()
	for _, p := range b.takeProblems() {
		b.t.Errorf("%s: %s", what, p)
	}
}

// run runs actions with a deadline.
func (b *browser) run(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// must is run that fails the test on an error.
func (b *browser) must(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.run(30*time.Second, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// value runs one action that returns a value, failing the test on an error.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return value(b, "evaluating "+expr, chromedp.Evaluate[T](expr))
}

// text is the rendered text of the first element sel selects.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return value(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
}

// screenshot writes a PNG of the whole page as a test artifact: under
// $FEEDGATE_ARTIFACTS if set (bash .ci/run sets it), else in the test's
// temporary directory, and logs where.
func (b *browser) screenshot(name string) string {
	b.t.Helper()
	png := value(b, "screenshot", chromedp.FullScreenshot(100))
	dir := os.Getenv("FEEDGATE_ARTIFACTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		b.t.Fatalf("screenshot %s is not a PNG (%d bytes)", file, len(png))
	}
	b.t.Logf("screenshot: %s (%d bytes)", file, len(png))
	return file
}
