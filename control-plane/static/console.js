// The console's live updates: applies the tenant's events (see the `live` module for their
// fields) in place, through crosscheckLive (live.js). Plain JavaScript, no framework, no build
// step, nothing from another origin, no markup built from text; every page reads fully without
// it. The stream's address is the footer's data-live-url (empty: no live updates on this page).
(function () {
  "use strict";
  var indicator = document.getElementById("live-status");
  var url = indicator && indicator.getAttribute("data-live-url");
  if (!url || !window.crosscheckLive) {
    return;
  }
  // key (CSS class), icon, label: the same as the server renders (pages.rs, Badge).
  var DOMAIN = {
    up: ["up", "\u2714", "Up"],
    down: ["down", "\u2716", "Down"],
    unknown: ["unknown", "?", "Unknown"],
    paused: ["paused", "\u23f8", "Paused"]
  };
  var INCIDENT = {
    open: ["down", "\u2716", "Open"],
    acknowledged: ["acked", "\u270b", "Acknowledged"],
    resolved: ["up", "\u2714", "Resolved"]
  };

  function time(at) {
    return String(at).replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC");
  }

  function each(selector, root, fn) {
    var found = (root || document).querySelectorAll(selector);
    for (var i = 0; i < found.length; i++) {
      fn(found[i]);
    }
  }

  function attr(name, value) {
    return "[" + name + "=\"" + String(value).replace(/["\\]/g, "") + "\"]";
  }

  function badge(element, b) {
    var big = element.classList.contains("big");
    element.className = "state s-" + b[0] + (big ? " big" : "");
    each(".icon", element, function (icon) { icon.textContent = b[1]; });
    each(".label", element, function (label) { label.textContent = b[2]; });
  }

  function flash(element) {
    var row = element.closest("tr") || element;
    row.classList.remove("flash-row");
    void row.offsetWidth;
    row.classList.add("flash-row");
  }

  var handlers = {
    state: function (e) {
      var b = DOMAIN[e.state] || DOMAIN.unknown;
      each(attr("data-domain", e.domain), null, function (scope) {
        each("[data-field=state]", scope, function (el) { badge(el, b); flash(el); });
        each("[data-field=since]", scope, function (el) { el.textContent = time(e.at); });
        each("[data-field=reason]", scope, function (el) {
          el.textContent = "changed to " + b[2].toLowerCase() + " at " + time(e.at) + " (reload for the details)";
        });
      });
    },
    monitoring: function (e) {
      var b = e.state === "paused" ? DOMAIN.paused : DOMAIN.unknown;
      each(attr("data-domain", e.domain), null, function (scope) {
        each("[data-field=state]", scope, function (el) { badge(el, b); flash(el); });
      });
    },
    result: function (e) {
      each(attr("data-domain", e.domain), null, function (scope) {
        each(attr("data-region", e.region), scope, function (cell) {
          var failing = e.ok === false;
          var what = failing ? (e.error_kind || (e.status_code ? "status " + e.status_code : "failed")) : "passed";
          cell.className = "region r-" + (failing ? "failing" : "ok");
          cell.setAttribute("title", what + " at " + time(e.at));
          each(".icon", cell, function (icon) { icon.textContent = failing ? "\u2716" : "\u2714"; });
          each(".standing", cell, function (s) { s.textContent = failing ? "failing" : "passing"; });
          each(".detail", cell, function (d) { d.textContent = what + " at " + time(e.at); });
        });
      });
    },
    incident: function (e) {
      var b = INCIDENT[e.state];
      if (!b) {
        return;
      }
      each(attr("data-incident", e.incident), null, function (scope) {
        each("[data-field=incident-state]", scope, function (el) { badge(el, b); flash(el); });
        if (e.state !== "open") {
          each("form[action$=\"/ack\"]", scope, function (form) { form.remove(); });
        }
      });
    },
    incident_update: function (e) {
      var list = document.getElementById("updates");
      var scope = document.querySelector(attr("data-incident", e.incident));
      if (!list || !scope) {
        return;
      }
      var item = document.createElement("li");
      var status = document.createElement("span");
      status.className = "update-status";
      status.textContent = e.state;
      var at = document.createElement("time");
      at.textContent = time(e.at);
      var message = document.createElement("p");
      message.textContent = e.message || "";
      item.appendChild(status);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(at);
      item.appendChild(message);
      list.appendChild(item);
      var none = document.getElementById("no-updates");
      if (none) {
        none.remove();
      }
    }
  };
  window.crosscheckLive(url, handlers, indicator);
})();
