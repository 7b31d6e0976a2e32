// The records console's one script: the idle logoff (docs/adr/0010-records-console.md), the
// print button on letters, and an import's progress.
// The server ends a session after the same idle time whatever this script does; this only
// warns two minutes before, and clears the screen when it happens, so that patient data does
// not stay on an unattended screen. Any key or click here counts as use only once the page is
// reloaded (the server sees requests, not keys), which "Stay signed in" does.
(function () {
  "use strict";
  // A letter's print button (the page works without it: the browser's own Print does the same).
  var printers = document.querySelectorAll("button[data-print]");
  for (var i = 0; i < printers.length; i++) {
    printers[i].addEventListener("click", function () {
      window.print();
    });
  }
  // An import's page: its progress asked for every second until it is finished, then the
  // page shown again with what it came to. These requests do not count as use.
  var job = document.getElementById("job");
  if (job && job.dataset.jobStatus && !job.dataset.finished) {
    var bar = document.getElementById("job-progress");
    var state = document.getElementById("job-state");
    var poll = function () {
      fetch(job.dataset.jobStatus, { credentials: "same-origin" })
        .then(function (r) {
          return r.ok ? r.json() : null;
        })
        .then(function (p) {
          if (!p) {
            return;
          }
          if (p.phase === "done" || p.phase === "failed") {
            window.location.reload();
            return;
          }
          if (bar) {
            bar.max = Math.max(p.total, 1);
            bar.value = p.done;
          }
          if (state) {
            state.textContent =
              (p.phase === "checking" ? "Checking " : "Writing ") + p.done + " of " + p.total;
          }
          setTimeout(poll, 1000);
        })
        .catch(function () {
          setTimeout(poll, 5000);
        });
    };
    setTimeout(poll, 1000);
  }
  var idle = Number(document.body.dataset.idleSeconds || 0);
  if (!idle) {
    return;
  }
  var warning = document.getElementById("idle-warning");
  var warnAt = Math.max(idle - 120, idle / 2) * 1000;
  if (warning) {
    setTimeout(function () {
      warning.hidden = false;
    }, warnAt);
  }
  setTimeout(function () {
    var form = document.getElementById("sign-out");
    var reason = document.getElementById("sign-out-reason");
    if (form && reason) {
      reason.value = "idle";
      form.submit();
    } else {
      window.location.assign("/console/sign-in?ended=idle");
    }
  }, idle * 1000);
})();
