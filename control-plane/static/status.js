// Status page: applies live events in place. The page is complete without this script; it only
// keeps it current. Plain JavaScript, no framework, no build step, nothing from elsewhere.
// Text is only ever set with textContent: nothing received is parsed as markup.
(function () {
  "use strict";

  function utc(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) {
      return "";
    }
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) +
      " " + two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + " UTC";
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = text;
    }
    return node;
  }

  function time(iso) {
    var node = el("time", null, utc(iso));
    node.setAttribute("datetime", iso);
    return node;
  }

  function setState(container, state, text, icon) {
    container.className = container.className.replace(/\bs-[a-z_]+/g, "").trim() + " s-" + state;
    var iconNode = container.querySelector(".icon");
    var textNode = container.querySelector(".text");
    if (iconNode) { iconNode.textContent = icon; }
    if (textNode) { textNode.textContent = text; }
  }

  function onComponent(data) {
    var item = document.getElementById("component-" + data.component);
    if (item) {
      item.setAttribute("data-state", data.state);
      var badge = item.querySelector(".state");
      if (badge) {
        setState(badge, data.state, data.state_text, data.icon);
      }
    }
    var banner = document.getElementById("overall");
    if (banner) {
      setState(banner, data.overall, data.overall_text, data.overall_icon);
      var updated = banner.querySelector(".updated");
      if (updated) {
        updated.textContent = "as of " + utc(data.at);
        updated.setAttribute("datetime", data.at);
      }
    }
  }

  function incidentNode(data) {
    var node = document.getElementById("incident-" + data.incident);
    if (node) {
      return node;
    }
    var list = document.getElementById("active-incidents");
    if (!list) {
      return null;
    }
    node = el("li", "incident active");
    node.id = "incident-" + data.incident;
    node.appendChild(el("h3", "title", data.title || (data.component_name + " unavailable")));
    var meta = el("p", "meta", data.component_name + " · opened ");
    meta.appendChild(time(data.at));
    node.appendChild(meta);
    node.appendChild(el("ol", "updates"));
    list.insertBefore(node, list.firstChild);
    var none = document.getElementById("no-active");
    if (none) {
      none.hidden = true;
    }
    return node;
  }

  function onIncident(data) {
    var node = incidentNode(data);
    if (node && !data.active) {
      var meta = node.querySelector(".meta");
      if (meta) {
        meta.appendChild(document.createTextNode(" · recovered "));
        meta.appendChild(time(data.at));
      }
    }
  }

  function onUpdate(data) {
    var node = incidentNode(data);
    if (!node) {
      return;
    }
    var list = node.querySelector(".updates");
    if (!list) {
      list = el("ol", "updates");
      node.appendChild(list);
    }
    var item = el("li", "update");
    item.appendChild(el("span", "status", data.status));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(time(data.at));
    item.appendChild(el("p", "message", data.message));
    list.insertBefore(item, list.firstChild);
  }

  // The day cells of each bar: arrow keys move between days (one cell per bar is in the tab order).
  function bars() {
    document.addEventListener("keydown", function (event) {
      var cell = event.target;
      if (!cell || !cell.parentNode || !cell.parentNode.classList || !cell.parentNode.classList.contains("bar")) {
        return;
      }
      var cells = cell.parentNode.children;
      var index = Array.prototype.indexOf.call(cells, cell);
      var next = index;
      if (event.key === "ArrowLeft") { next = Math.max(0, index - 1); }
      else if (event.key === "ArrowRight") { next = Math.min(cells.length - 1, index + 1); }
      else if (event.key === "Home") { next = 0; }
      else if (event.key === "End") { next = cells.length - 1; }
      else { return; }
      event.preventDefault();
      cell.setAttribute("tabindex", "-1");
      cells[next].setAttribute("tabindex", "0");
      cells[next].focus();
    });
  }

  function start() {
    bars();
    var root = document.getElementById("status-root");
    if (!root || !window.crosscheckLive) {
      return;
    }
    window.crosscheckLive(root.getAttribute("data-events"), {
      component: onComponent,
      incident: onIncident,
      incident_update: onUpdate
    }, document.getElementById("live"));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
