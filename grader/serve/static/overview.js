// Overview: filters (name substring, status, assignment; counts the rows shown) and the re-rendering job's progress
// (the job runs in the server: this page only starts it and polls /api/render; leaving the page stops nothing).
(function () {
  "use strict";
  const name = document.getElementById("filter-name"), status = document.getElementById("filter-status");
  const assignment = document.getElementById("filter-assignment");
  const rows = Array.from(document.querySelectorAll("#students tbody tr"));
  const count = document.getElementById("shown-count");
  function apply() {
    const text = name.value.trim().toLowerCase(), st = status.value, as = assignment.value;
    let shown = 0;
    for (const r of rows) {
      const ok = r.dataset.student.toLowerCase().includes(text) && (!st || r.dataset.status === st)
        && (!as || r.dataset.assignment === as);
      r.hidden = !ok; shown += ok;
    }
    count.textContent = shown + " of " + rows.length + " shown";
  }
  name.addEventListener("input", apply); status.addEventListener("change", apply);
  assignment.addEventListener("change", apply); apply();

  const form = document.getElementById("render-form");
  const box = document.getElementById("render-progress"), bar = document.getElementById("render-bar");
  const text = document.getElementById("render-status"), button = document.getElementById("render-btn");
  const csrf = document.querySelector('meta[name="csrf"]').content;
  let timer = null;

  function show(s) {
    box.hidden = false;
    if (s.running) {
      button.disabled = true;
      if (s.total) { bar.max = s.total; bar.value = s.done; } else { bar.removeAttribute("value"); }
      text.textContent = "Re-rendering in the background" + (s.total ? `: ${s.done} / ${s.total}` : " (finding the changed reports)")
        + (s.current ? ` (${s.current})` : "") + "; you may leave this page.";
    } else {
      button.disabled = false;
      bar.max = 1; bar.value = 1;
      text.textContent = `Done: ${s.rendered.length} report(s) written` + (s.rendered.length ? ` (${s.rendered.join(", ")})` : "")
        + (s.failed.length ? `; FAILED: ${s.failed.join("; ")}` : "") + ". Reload the page to see the new state.";
      text.className = s.failed.length ? "error" : "";
    }
  }
  async function poll() {
    try {
      const r = await fetch(form.dataset.stateUrl, {credentials: "same-origin"});
      if (!r.ok) throw new Error("the server answered " + r.status);
      const s = await r.json();
      show(s);
      if (!s.running) { clearInterval(timer); timer = null; }
    } catch (e) {
      text.textContent = "Cannot reach the server (" + e.message + "); the job goes on there.";
    }
  }
  function follow() { if (!timer) timer = setInterval(poll, 1000); poll(); }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      const r = await fetch(form.action, {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: "{}"});
      const s = await r.json().catch(() => ({error: "the server answered " + r.status}));
      if (!r.ok) { box.hidden = false; text.textContent = s.error || "error " + r.status; text.className = "error"; button.disabled = false; return; }
      show(s);
      follow();
    } catch (err) {
      box.hidden = false; text.textContent = "Not started: the server cannot be reached (" + err.message + ")."; button.disabled = false;
    }
  });
  if (button.disabled) follow();  // a job started earlier (maybe by another TA) is still running
})();
