// prompttap inspector: small progressive enhancements. Every page works without this file.
// Never builds markup from captured data: text goes in with textContent; the only HTML inserted
// (live-tail rows) is rendered and escaped by the server.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Copy buttons: <button data-copy="element-id">
  // navigator.clipboard exists only in secure contexts (https or localhost): an inspector reached as
  // http://host:8788 falls back to execCommand, and failing that selects the text for Ctrl+C.
  function copyFallback(target) {
    var area = document.createElement("textarea");
    area.value = target.textContent;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    if (!ok) window.getSelection().selectAllChildren(target);
    return ok;
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var label = button.textContent;
    var show = function (text) {
      button.textContent = text;
      setTimeout(function () { button.textContent = label; }, 1200);
    };
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      var fallback = function () { show(copyFallback(target) ? "Copied" : "Press Ctrl+C"); };
      if (!navigator.clipboard || !navigator.clipboard.writeText) { fallback(); return; }
      navigator.clipboard.writeText(target.textContent).then(function () { show("Copied"); }, fallback);
    });
  });

  // Confirmations: <form data-confirm="question">
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // Live tail on the captures list (first page only): poll for rows stored since the cursor.
  var table = document.getElementById("captures");
  var live = document.getElementById("live-tail");
  if (table && table.getAttribute("data-tail-url") && live) {
    var cursor = table.getAttribute("data-tail") || "";
    var body = document.getElementById("capture-rows");
    var busy = false;
    var poll = function () {
      if (busy || !live.checked || document.hidden) return;
      busy = true;
      var url = new URL(table.getAttribute("data-tail-url"), window.location.href);
      if (cursor) url.searchParams.set("tail", cursor);
      fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (!r.ok) throw new Error(String(r.status));
          var next = r.headers.get("X-Tail");
          if (next) cursor = next;
          return r.text();
        })
        .then(function (html) {
          var tpl = document.createElement("template");
          tpl.innerHTML = html;
          tpl.content.querySelectorAll("tr[data-id]").forEach(function (row) {
            var old = body.querySelector('tr[data-id="' + row.getAttribute("data-id") + '"]');
            if (old) { old.replaceWith(row); return; }
            row.classList.add("new");
            var at = row.getAttribute("data-started-at");
            var before = Array.prototype.find.call(body.querySelectorAll("tr[data-id]"), function (r) {
              return r.getAttribute("data-started-at") < at;
            });
            body.insertBefore(row, before || null);
          });
          var empty = document.querySelector('[data-testid="no-captures"]');
          if (empty && body.querySelector("tr")) empty.remove();
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    };
    setInterval(poll, 2000);
  }

  // "Compare with…": fill the picker from the compare-candidates API when it exists.
  var compare = document.getElementById("compare-form");
  if (compare) {
    var picker = document.getElementById("compare-picker");
    var idField = document.getElementById("compare-id");
    fetch(compare.getAttribute("data-candidates-url"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        var items = Array.isArray(data) ? data : (data && (data.items || data.candidates)) || [];
        if (!items.length) return;
        var byId = {};
        var first = document.createElement("option");
        first.value = "";
        first.textContent = "pick a capture…";
        picker.appendChild(first);
        items.forEach(function (item) {
          if (!item || !item.id) return;
          byId[item.id] = item;
          var option = document.createElement("option");
          option.value = item.id;
          var when = String(item.started_at || "").slice(0, 19).replace("T", " ");
          var words = String(item.last_user || "").slice(0, 60);
          option.textContent = [item.relation || item.label, when, item.model, words].filter(Boolean).join(" · ");
          picker.appendChild(option);
        });
        picker.hidden = false;
        picker.disabled = false;
        picker.addEventListener("change", function () { if (picker.value) idField.value = picker.value; });
        // A picked capture opens its diff_url, which reads older (A) -> newer (B) whichever page you
        // started from; the form itself always puts this capture as A (kept for typed ids).
        compare.addEventListener("submit", function (event) {
          var item = byId[idField.value.trim()];
          var url = item && String(item.diff_url || "");
          if (url && url.indexOf("/diff?") === 0) { event.preventDefault(); window.location.href = url; }
        });
      })
      .catch(function () {});
  }

  // Replay: post through the JSON API, then open the diff with the original.
  var replay = document.getElementById("replay-form");
  if (replay && window.fetch) {
    var status = document.getElementById("replay-status");
    var head = document.getElementById("capture-head");
    var original = head ? head.getAttribute("data-capture-id") : "";
    replay.addEventListener("submit", function (event) {
      event.preventDefault();
      var known = {};
      document.querySelectorAll("[data-replay-id]").forEach(function (el) { known[el.getAttribute("data-replay-id")] = true; });
      var changes = {};
      var model = document.getElementById("replay-model").value.trim();
      var temperature = document.getElementById("replay-temperature").value.trim();
      if (model) changes.model = model;
      if (temperature) changes.temperature = Number(temperature);
      if (document.getElementById("replay-change-system").checked) {
        changes.system_prompt = document.getElementById("replay-system").value;
      }
      status.textContent = "Replaying…";
      fetch(replay.getAttribute("data-api-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken(), Accept: "application/json" },
        body: JSON.stringify(changes),
      })
        .then(function (r) { return r.json().then(function (data) { return { status: r.status, data: data }; }); })
        .then(function (res) {
          if (res.status === 200 && res.data.diff_url) { window.location.href = res.data.diff_url; return; }
          if (res.status === 202) { status.textContent = "Sent; waiting for the capture…"; waitFor(res.data.poll_url, known, 60); return; }
          status.textContent = (res.data && res.data.detail) ? String(res.data.detail) : "Replay failed (" + res.status + ")";
        })
        .catch(function (err) { status.textContent = "Replay failed: " + err; });
    });
    var waitFor = function (url, known, tries) {
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var fresh = (data.items || []).filter(function (item) { return !known[item.id]; });
          if (fresh.length) { window.location.href = "/diff?a=" + encodeURIComponent(original) + "&b=" + encodeURIComponent(fresh[0].id); return; }
          if (tries > 0) setTimeout(function () { waitFor(url, known, tries - 1); }, 1000);
          else status.textContent = "The replay was sent but its capture has not arrived yet; reload later.";
        });
    };
  }
})();
