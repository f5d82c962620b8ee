// Shows when the page loaded and how many entries /files/ lists, using the
// JSON form of the directory listing that khttpd-front serves itself.
(function () {
  "use strict";
  var loaded = document.getElementById("loaded");
  if (loaded) {
    loaded.textContent = "at " + new Date().toLocaleTimeString();
  }
  var out = document.getElementById("listing");
  if (!out || !window.fetch) {
    return;
  }
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
})();
