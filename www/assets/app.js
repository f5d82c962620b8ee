// The start page's live parts: when the page loaded, how many entries /files/
// lists (the JSON form of the listing khttpd-front serves itself), and for each
// row of the "Who answered?" table the X-Khttpd-Route header of a HEAD request.
(function () {
  "use strict";
  var loaded = document.getElementById("loaded");
  if (loaded) {
    loaded.textContent = "at " + new Date().toLocaleTimeString();
  }
  if (!window.fetch) {
    return;
  }

  var out = document.getElementById("listing");
  if (out) {
    fetch("/files/", { headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (entries) {
        out.textContent = "/files/ lists " + entries.length + " entries (fetched as JSON).";
      })
      .catch(function (e) {
        out.textContent = "Could not fetch /files/ as JSON: " + e.message;
      });
  }

  var rows = document.querySelectorAll("#routes tr[data-path]");
  Array.prototype.forEach.call(rows, function (row) {
    var cell = row.querySelector(".route");
    if (!cell) { return; }
    fetch(row.getAttribute("data-path"), { method: "HEAD", cache: "no-store" })
      .then(function (r) {
        var route = r.headers.get("X-Khttpd-Route");
        if (!route) {
          cell.textContent = "? (" + r.status + "; start with --route-header)";
          return;
        }
        cell.textContent = route + " (" + r.status + ")";
        cell.className = "route " + route +
          (route === row.getAttribute("data-expect") ? "" : " unexpected");
      })
      .catch(function (e) {
        cell.textContent = "failed: " + e.message;
      });
  });
})();
