// feedgate status page: the countdowns tick, and the page reloads itself
// when one reaches zero (the server then shows the new action) and, with
// auto-refresh on, every data-refresh seconds. Everything else works
// without JavaScript.
"use strict";
(function () {
  var loaded = performance.now();
  var reloading = false;

  function reloadSoon(ms) {
    if (reloading) { return; }
    reloading = true;
    window.setTimeout(function () { window.location.reload(); }, ms);
  }

  function text(s) {
    if (s <= 0) { return "now"; }
    s = Math.ceil(s);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d > 0) { return d + "d " + h + "h " + m + "m"; }
    if (h > 0) { return h + "h " + m + "m " + r + "s"; }
    if (m > 0) { return m + "m " + r + "s"; }
    return r + "s";
  }

  function tick() {
    var elapsed = (performance.now() - loaded) / 1000;
    var due = false;
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var left = parseFloat(el.dataset.seconds) - elapsed;
      el.textContent = text(left);
      if (left <= 0) {
        el.classList.add("due");
        due = true;
      }
    });
    // The policy clock may run a moment behind this one: give the server
    // a second past the instant before asking it again.
    if (due) { reloadSoon(1000); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 250);
    var every = parseInt(document.body.dataset.refresh || "0", 10);
    if (every > 0) {
      window.setInterval(function () {
        // Do not reload under someone typing a filter.
        var a = document.activeElement;
        if (a && (a.tagName === "INPUT" || a.tagName === "SELECT")) { return; }
        reloadSoon(0);
      }, every * 1000);
    }
  });
})();
