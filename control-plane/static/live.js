// Live updates over Server-Sent Events, shared by the status pages and the console.
// Plain JavaScript, no framework, no build step, nothing loaded from elsewhere.
//
// crosscheckLive(url, handlers, indicator): opens an EventSource on `url` (same origin) and
// calls handlers[eventName](data) with the parsed JSON of each event. The browser reconnects
// by itself and resumes with Last-Event-ID; a `reset` event (the server could not resume:
// history trimmed, or the page changed) reloads the page. `indicator`, when given, is an
// element whose data-state says whether the stream is open.
(function () {
  "use strict";
  function crosscheckLive(url, handlers, indicator) {
    if (!window.EventSource) {
      return null;
    }
    var source = new EventSource(url);
    function mark(state, text) {
      if (indicator) {
        indicator.setAttribute("data-state", state);
        indicator.textContent = text;
      }
    }
    source.onopen = function () { mark("open", "Live"); };
    source.onerror = function () { mark("closed", "Reconnecting…"); };
    source.addEventListener("reset", function () {
      source.close();
      window.location.reload();
    });
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        var data;
        try {
          data = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        handlers[name](data);
      });
    });
    return source;
  }
  window.crosscheckLive = crosscheckLive;
})();
