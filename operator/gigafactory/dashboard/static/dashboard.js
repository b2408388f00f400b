// Live updates of a dashboard page: one event stream says when what the page shows changed; the page
// then fetches its own <main> again (rendered and escaped by the server) and swaps it in. No polling.
"use strict";
(function () {
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const topics = document.body.dataset.topics || "";
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, {headers: {"Gigafactory-Fragment": "1"}, cache: "no-store"});
      if (response.ok || response.status === 404) {
        const fresh = document.createElement("template");  // inert: nothing in it runs or loads
        fresh.innerHTML = await response.text();
        // Keep a filter form someone is typing in.
        const form = document.activeElement && document.activeElement.closest("main form");
        const replaced = form && fresh.content.querySelector("form.filters");
        if (replaced) replaced.replaceWith(form);
        main.replaceChildren(fresh.content);
        document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || "0") + 1);
      }
    } catch (error) {
      live.textContent = "offline";
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const source = new EventSource("/events?topics=" + encodeURIComponent(topics));
  source.addEventListener("ready", function () {
    live.textContent = "live";
    live.className = "live on";
    refresh();  // whatever changed between the page load and the stream
  });
  source.addEventListener("change", refresh);
  source.onerror = function () {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
})();
