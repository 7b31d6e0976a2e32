// The records console's one script: the idle logoff (docs/adr/0010-records-console.md), and
// the print button on letters.
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
