// The Fluxo dashboard's only script: confirmations, the counts, and live refresh.
// Every page works without it, but for the counts and the refresh.
(function () {
  "use strict";

  // Forms with data-confirm ask before they act.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  function fillCounts() {
    var box = document.querySelector("[data-counts]");
    if (!box) { return; }
    fetch(box.getAttribute("data-counts"), { credentials: "same-origin" })
      .then(function (reply) { return reply.ok ? reply.json() : null; })
      .then(function (counts) {
        if (!counts) { return; }
        Object.keys(counts).forEach(function (status) {
          var cell = box.querySelector('[data-count="' + status + '"]');
          if (cell) { cell.textContent = Number(counts[status]).toLocaleString("en-US"); }
        });
        box.setAttribute("data-loaded", "1");
      })
      .catch(function () { /* the next change tries again */ });
  }

  var region = document.getElementById("live");
  var state = document.getElementById("live-state");
  var busy = false;
  var again = false;

  // Fetch the part of the page that shows data, and put it in place, keeping what the
  // user is typing (fields marked data-keep) and where the focus is.
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    // The page's own address, unless it names another (after a refused action the
    // address is the form's, which only takes POST).
    var url = new URL(region.getAttribute("data-refresh") || window.location.href, window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), { credentials: "same-origin" })
      .then(function (reply) { return reply.ok ? reply.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var kept = {};
        region.querySelectorAll("[data-keep]").forEach(function (field) {
          kept[field.name] = field.value;
        });
        var focused = document.activeElement && document.activeElement.name;
        var scrolls = {};
        region.querySelectorAll(".scroll").forEach(function (box, i) { scrolls[i] = box.scrollTop; });
        region.innerHTML = html;
        region.querySelectorAll("[data-keep]").forEach(function (field) {
          if (Object.prototype.hasOwnProperty.call(kept, field.name)) { field.value = kept[field.name]; }
          if (field.name === focused) { field.focus(); }
        });
        region.querySelectorAll(".scroll").forEach(function (box, i) {
          if (scrolls[i] !== undefined) { box.scrollTop = scrolls[i]; }
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () {
        busy = false;
        fillCounts();
        if (again) { again = false; refresh(); }
      });
  }

  if (region && region.getAttribute("data-live") && window.EventSource) {
    var source = new EventSource(region.getAttribute("data-live"));
    source.addEventListener("open", function () {
      state.hidden = false;
      state.textContent = "live";
      state.className = "live-state on";
    });
    source.addEventListener("error", function () {
      state.hidden = false;
      state.textContent = "reconnecting";
      state.className = "live-state off";
    });
    source.addEventListener("change", refresh);
  }
  fillCounts();
  // The counts change with runs the page does not show: read them again now and then.
  window.setInterval(function () {
    if (document.visibilityState === "visible") { fillCounts(); }
  }, 15000);
})();
